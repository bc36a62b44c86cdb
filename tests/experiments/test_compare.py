import numpy as np
import pytest
import torch

from oppsig.experiments.compare import BranchSpec, compare, parse_branches
from oppsig.errors import ConfigError
from oppsig.store import open_run
from oppsig.training import load_checkpoint


class Capture:
    def __init__(self):
        self.params = None

    def on_train_start(self, state):
        self.params = {k: v.detach().clone() for k, v in state.model.state_dict().items()}


def test_branches_start_from_bitwise_identical_states(tiny_cfg, monkeypatch):
    import oppsig.training as T

    captured = []
    real = T.train

    def spy(cfg, *a, **k):
        c = Capture()
        k["hooks"] = list(k.get("hooks", ())) + [c]
        r = real(cfg, *a, **k)
        captured.append((cfg.name, c.params))
        return r

    monkeypatch.setattr(T, "train", spy)
    cfg = tiny_cfg(steps=10)
    res = compare(cfg, parse_branches("gd,adam,sgd"), branch_at=4, detect=False, report=False, progress=False,
                  log=lambda *_: None)
    base_ck = load_checkpoint(res.base)
    assert base_ck["step"] == 4
    branch_states = [p for name, p in captured if not name.endswith("-base")]
    assert len(branch_states) == 3
    for p in branch_states:
        for k, v in base_ck["model"].items():
            assert torch.equal(p[k], v), k
    # each branch records steps 4..9 only, every example each step for full-batch branches
    gd = open_run(res.branches["gd"])
    assert gd.steps.tolist() == list(range(4, 10))
    # the gd branch continues the base run exactly: same losses as an unbranched run
    full = T.train(tiny_cfg("name=full", steps=10), progress=False)
    assert np.array_equal(np.asarray(open_run(full.run_dir).losses)[4:], np.asarray(gd.losses))


def test_parse_branches():
    b = parse_branches("gd, adam:optim.lr=0.001;train.batch_size=64, sgd@fast:optim.lr=0.1")
    assert [x.name for x in b] == ["gd", "adam", "sgd"]
    assert b[1].overrides == ("optim.lr=0.001", "train.batch_size=64")
    assert b[2].run_name == "sgd-fast"
    with pytest.raises(ConfigError, match="valid: gd"):
        parse_branches("gd,lion")


def test_branch_at_must_be_inside(tiny_cfg):
    with pytest.raises(ConfigError, match="branch-at"):
        compare(tiny_cfg(steps=5), [BranchSpec("gd")], branch_at=5, progress=False)


def test_a_diverging_branch_is_kept_and_the_others_run(tiny_cfg):
    from oppsig.experiments.compare import comparison_table

    cfg = tiny_cfg("train.loss=mse", steps=12)
    res = compare(cfg, parse_branches("gd@boom:optim.lr=1e6,gd"), branch_at=4, detect=False, report=False,
                  progress=False, log=lambda *_: None)
    assert set(res.branches) == {"gd-boom", "gd"} and set(res.diverged) == {"gd-boom"}
    assert open_run(res.branches["gd"]).steps.tolist() == list(range(4, 12))
    rows, _ = comparison_table(res.branches)
    assert rows[0]["branch"].startswith("gd-boom (diverged at")


def test_table_fills_the_preconditioned_column_for_adam_and_no_threshold_for_sam(tiny_cfg):
    from oppsig.experiments.compare import comparison_table

    cfg = tiny_cfg("curvature.every=2", "curvature.n=64", steps=10)
    res = compare(cfg, parse_branches("gd,adam,sam"), branch_at=4, detect=False, report=False, progress=False,
                  log=lambda *_: None)
    rows = {r["branch"]: r for r in comparison_table(res.branches)[0]}
    assert rows["adam"]["precond/thr"] > 0 and rows["adam"]["sharp/thr"] == rows["adam"]["precond/thr"]
    assert rows["gd"]["sharp/thr"] > 0 and np.isnan(rows["gd"]["precond/thr"])
    assert np.isnan(rows["sam"]["sharp/thr"]) and np.isnan(rows["sam"]["precond/thr"])  # SAM: no threshold
    assert "threshold" not in open_run(res.branches["sam"]).metrics
    assert np.isfinite(open_run(res.branches["sam"]).metrics["sharpness"]).any()


def test_an_sgd_branch_probes_every_example_at_every_step():
    from oppsig.config import load_config
    from oppsig.experiments.compare import BRANCH_DEFAULTS
    from oppsig.training.build import TrainOptions, build_run

    cfg = load_config(None, ["data.n=300", "model.widths=[8]", "optim.name=sgd", *BRANCH_DEFAULTS["sgd"]])
    parts = build_run(cfg, TrainOptions(run_dir=None))
    assert len(parts.probe_set) == 300 and parts.cfg.record.every == 1  # as the GD run it branches from
