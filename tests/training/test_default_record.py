"""The default record: full batch every step; mini-batch a budgeted probe subset plus the batch record."""

import json

import numpy as np
import pytest

from oppsig.config import load_config
from oppsig.errors import ConfigError
from oppsig.store import open_run
from oppsig.training import train


def test_minibatch_default_is_a_budgeted_probe_and_the_batch_record(tiny_cfg, capsys):
    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=16", steps=60)
    res = train(cfg, progress=True)
    assert "probe: " in capsys.readouterr().out  # the plan, printed at the start
    run = open_run(res.run_dir)
    saved = load_config(res.run_dir / "config.yaml", [])
    rec = saved.record
    assert rec.mode == "both" and rec.every >= 1 and 1 <= rec.probe_n < 128  # concrete, as chosen
    assert run.losses.shape == (len(range(0, 60, rec.every)), rec.probe_n)
    assert run.batches is not None and run.batches.n_examples == 128
    probe = json.loads((res.run_dir / "meta.json").read_text())["probe"]
    assert probe["n"] == rec.probe_n and probe["every"] == rec.every and probe["planned_share"] <= 0.1
    assert probe["measured_share"] > 0 and probe["probe_seconds"] > 0
    assert res.probe == probe


def test_full_batch_default_records_every_example_every_step(tiny_cfg):
    res = train(tiny_cfg(steps=4), progress=False)
    saved = load_config(res.run_dir / "config.yaml", [])
    assert (saved.record.every, saved.record.mode) == (1, "dense") and res.probe is None
    assert open_run(res.run_dir).losses.shape == (4, 128)


def test_probe_is_seeded_and_survives_a_resume_that_extends_the_run(tiny_cfg):
    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=16", steps=40)
    first = train(cfg, progress=False)
    ids = np.asarray(open_run(first.run_dir).index).copy()
    every = load_config(first.run_dir / "config.yaml", []).record.every
    # the same config with more steps would plan another probe; the resume keeps the run's own
    more = tiny_cfg("optim.name=sgd", "train.batch_size=16", steps=400)
    train(more, resume=True, progress=False)
    run = open_run(first.run_dir)
    assert np.array_equal(np.asarray(run.index), ids)
    assert load_config(first.run_dir / "config.yaml", []).record.every == every
    assert np.array_equal(run.steps, np.arange(0, 400, every))


def test_budget_is_validated():
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match="record.budget"):
            load_config(None, [f"record.budget={bad}"])


def test_batch_sharpness_is_switched_on_from_the_config(tiny_cfg):
    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=16", "curvature.batch_every=3", "curvature.batch_count=2",
                   steps=7)
    res = train(cfg, progress=False)
    m = open_run(res.run_dir).metrics
    due = np.isfinite(m["batch_sharpness"])
    assert m["step"][due].tolist() == [0, 3, 6] and (m["batch_sharpness"][due] > 0).all()
    assert (m["batch_sharpness"][due] <= m["batch_eig"][due] * (1 + 1e-4)).all()  # g'Hg/|g|^2 <= top eigenvalue
    with pytest.raises(ConfigError, match="curvature.batch_count"):
        tiny_cfg("curvature.batch_count=0")


def test_probe_holds_the_largest_inputs_whole_and_detection_weights_them_back(tiny_cfg):
    from oppsig.signals.run import weighted_total
    from oppsig.store.probe_plan import input_scores, probe_weights

    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=16", "record.probe_n=40", "record.every=3", steps=12)
    res = train(cfg, progress=False)
    run = open_run(res.run_dir)
    meta = json.loads((res.run_dir / "meta.json").read_text())
    outliers = np.asarray(meta["probe_outliers"])
    assert len(outliers) == 20 and np.isin(outliers, np.asarray(run.index)).all()
    from oppsig.data import build_datasets  # the run's own inputs, as it saw them

    train_set = build_datasets(load_config(res.run_dir / "config.yaml", []).data, seed=cfg.seed)[0]
    scores = input_scores(train_set.x)
    ids = train_set.index.numpy()
    assert set(outliers.tolist()) == set(ids[np.argsort(-scores)[:20]].tolist())
    L = np.asarray(run.losses, dtype=np.float64)
    w = probe_weights(np.asarray(run.index), outliers, 128)
    assert np.allclose(weighted_total(run), L @ w) and not np.allclose(L @ w, L.mean(1))
    cfg0 = tiny_cfg("optim.name=sgd", "train.batch_size=16", "record.probe_n=40", "record.every=3",
                    "record.probe_outliers=0", steps=3)
    uniform = train(cfg0, run_dir=res.run_dir.parent / "uniform", progress=False)
    assert "probe_outliers" not in json.loads((uniform.run_dir / "meta.json").read_text())
    assert weighted_total(open_run(uniform.run_dir)) is None
