"""A resume that changes a setting records it (meta.json), keeps config.yaml the run's first config, and every
reader uses the settings in force at each step; settings that cannot change mid-run are refused. A finished run
is not resumed."""

import json

import numpy as np
import pytest
import torch
import yaml

from oppsig.config import load_config
from oppsig.errors import ConfigError, StoreError
from oppsig.store import open_run
from oppsig.training import train
from oppsig.training.checkpoint import load_checkpoint
from oppsig.training.replay import model_at


def _resume(run_dir, *overrides):
    cfg = load_config(run_dir / "config.yaml", list(overrides))
    return train(cfg, run_dir=run_dir, resume=True, progress=False)


@pytest.fixture
def changed_run(tiny_cfg):
    """12 steps at lr 0.05 (checkpoints kept every 4), then resumed at step 12 with lr 0.02 up to step 20."""
    res = train(tiny_cfg("train.checkpoint_every=4", steps=12), progress=False)
    _resume(res.run_dir, "optim.lr=0.02", "train.steps=20")
    return res.run_dir


def test_a_changed_lr_is_recorded_with_its_step(changed_run):
    meta = json.loads((changed_run / "meta.json").read_text())
    assert meta["config_changes"] == [{"step": 12, "changes": {"optim.lr": 0.02, "train.steps": 20}}]
    assert yaml.safe_load((changed_run / "config.yaml").read_text())["optim"]["lr"] == 0.05  # the first config
    run = open_run(changed_run)
    assert run.config_at(11).optim.lr == 0.05 and run.config_at(12).optim.lr == 0.02
    lr = run.metrics["lr"]
    assert lr[11] == pytest.approx(0.05) and lr[12] == pytest.approx(0.02) and len(lr) == 20


def test_a_plain_resume_keeps_the_settings_in_force(changed_run):
    _resume(changed_run, "train.steps=24")
    run = open_run(changed_run)
    assert run.metrics["lr"][20:].tolist() == pytest.approx([0.02] * 4)
    assert [c["changes"] for c in run.config_changes][-1] == {"train.steps": 24}


def test_replay_before_a_change_uses_the_lr_then(changed_run):
    """Steps 8..11 are replayed at lr 0.05 (as trained), not at the later 0.02: theta_12 matches its checkpoint."""
    kept = changed_run / "checkpoints" / "step_000012.pt"
    want = load_checkpoint(kept)["model"]
    kept.unlink()
    (changed_run / "checkpoints" / "last.pt").unlink()
    model, _ = model_at(open_run(changed_run), 12)
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_sharpness_threshold_uses_the_lr_in_force(changed_run):
    from oppsig.experiments.sharpness import run_curvature

    res = run_curvature(changed_run, steps=[8, 16], k=1, max_iter=10)
    assert [r.threshold for r in res] == pytest.approx([2 / 0.05, 2 / 0.02])


def test_the_report_names_the_change(changed_run):
    from oppsig.report.html import run_section

    html = run_section(open_run(changed_run), None, "run")
    assert "from step 12: optim.lr=0.02" in html


def test_an_edited_config_yaml_is_a_recorded_change(tiny_cfg):
    rd = train(tiny_cfg("train.checkpoint_every=4", steps=8), progress=False).run_dir
    d = yaml.safe_load((rd / "config.yaml").read_text())
    d["optim"]["lr"], d["train"]["steps"] = 0.03, 12
    (rd / "config.yaml").write_text(yaml.safe_dump(d))
    _resume(rd)
    assert open_run(rd).config_changes == [{"step": 8, "changes": {"optim.lr": 0.03, "train.steps": 12}}]
    assert yaml.safe_load((rd / "config.yaml").read_text())["optim"]["lr"] == 0.05


@pytest.mark.parametrize("override", ["model.widths=[8]", "seed=3", "optim.name=sgd", "data.n=64"])
def test_settings_that_cannot_change_are_refused_by_name(tiny_cfg, override):
    rd = train(tiny_cfg(steps=5), progress=False).run_dir
    before = (rd / "meta.json").read_bytes()
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}.*cannot change mid-run"):
        _resume(rd, override, "train.steps=10")
    assert (rd / "meta.json").read_bytes() == before


def test_resuming_a_finished_run_changes_nothing(tiny_cfg):
    rd = train(tiny_cfg(steps=5), progress=False).run_dir
    files = {p: p.read_bytes() for p in (rd / "meta.json", rd / "metrics.jsonl", rd / "config.yaml")}
    with pytest.raises(StoreError, match=r"already finished.*raise train.steps"):
        _resume(rd)
    assert all(p.read_bytes() == b for p, b in files.items())
    assert json.loads(files[rd / "meta.json"])["final"]["loss"] > 0


def test_a_finished_run_continues_when_steps_are_raised(tiny_cfg):
    rd = train(tiny_cfg(steps=5), progress=False).run_dir
    res = _resume(rd, "train.steps=8")
    assert res.next_step == 8 and np.isfinite(res.metrics["loss"])
    assert open_run(rd).config_changes == [{"step": 5, "changes": {"train.steps": 8}}]


def test_a_value_asked_for_again_is_used_even_where_it_is_the_first_one(changed_run, tmp_path, capsys):
    """`oppsig train --resume RUN --optim.lr=0.05` after an earlier change to 0.02 goes back to 0.05 (the first
    config's value); `--data-dir` is where the data are read from, not a change of the run."""
    from oppsig.cli.main import main

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["train", "--resume", str(changed_run), "--optim.lr=0.05", "--train.steps=24",
                 f"--data-dir={data_dir}", "--no-progress"]) == 0
    run = open_run(changed_run)
    assert run.metrics["lr"][20:].tolist() == pytest.approx([0.05] * 4)
    assert run.config_changes[-1] == {"step": 20, "changes": {"optim.lr": 0.05, "train.steps": 24}}
    assert run.config_at(23).optim.lr == 0.05 and run.config_at(19).optim.lr == 0.02
