"""``live.groups`` from another run is checked against this run's data before the first step, and
``live.downweight_group`` against the file's groups."""

import numpy as np
import pytest
import torch

from oppsig.errors import ConfigError
from oppsig.live import LiveHook
from oppsig.signals import Group, SignalsResult, write_signals_json
from oppsig.training import train

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Steps:
    """The steps that ran."""

    def __init__(self):
        self.seen = []

    def on_step_start(self, state):
        self.seen.append(state.step)


def _signals(path, ids, **dataset):
    groups = (Group(0, tuple(range(10)), tuple(int(i) for i in ids[:10]), class_counts={"frog": 10}),
              Group(1, tuple(range(10, 20)), tuple(int(i) for i in ids[10:20]), class_counts={"truck": 10}))
    return write_signals_json(SignalsResult(n_rows=10, n_examples=len(ids), groups=groups, dataset=dataset), path)


def _start(tiny_cfg, tiny_data, *overrides):
    steps = Steps()
    cfg = tiny_cfg("live.enabled=true", *overrides, steps=4)
    res = train(cfg, hooks=[LiveHook(cfg.live, describe=False), steps], progress=False, data=(tiny_data, None),
                example_weights=torch.ones(len(tiny_data)))
    return res, steps


def _refused(tiny_cfg, tiny_data, *overrides, match):
    steps = Steps()
    cfg = tiny_cfg("live.enabled=true", *overrides, steps=4)
    with pytest.raises(ConfigError, match=match) as e:
        train(cfg, hooks=[LiveHook(cfg.live, describe=False), steps], progress=False, data=(tiny_data, None),
              example_weights=torch.ones(len(tiny_data)))
    assert steps.seen == []  # refused before any step ran
    assert "\n" not in str(e.value)
    return str(e.value)


def test_groups_of_another_data_set_are_refused_before_training(tiny_cfg, tiny_data, tmp_path):
    ids = tiny_data.index.numpy()
    sig = _signals(tmp_path / "signals.json", ids, name="cifar10-train-5000", classes=CIFAR)
    msg = _refused(tiny_cfg, tiny_data, f"live.groups={sig}", match="comes from other data")
    assert str(sig) in msg and "cifar10-train-5000" in msg and tiny_data.name in msg and "oppsig detect" in msg


def test_groups_with_other_classes_are_refused(tiny_cfg, tiny_data, tmp_path):
    sig = _signals(tmp_path / "signals.json", tiny_data.index.numpy(), classes=CIFAR)
    _refused(tiny_cfg, tiny_data, f"live.groups={sig}", match="classes airplane")


def test_groups_with_examples_the_run_lacks_are_refused(tiny_cfg, tiny_data, tmp_path):
    sig = _signals(tmp_path / "signals.json", np.arange(len(tiny_data)) + 10_000)
    _refused(tiny_cfg, tiny_data, f"live.groups={sig}", match="not examples of this run")


def test_an_unknown_downweight_group_is_refused_at_start_without_a_spike(tiny_cfg, tiny_data, tmp_path):
    sig = _signals(tmp_path / "signals.json", tiny_data.index.numpy())
    msg = _refused(tiny_cfg, tiny_data, f"live.groups={sig}", "live.downweight_group=99", match="downweight_group=99")
    assert "[0, 1]" in msg


def test_groups_of_the_same_data_are_used(tiny_cfg, tiny_data, tmp_path):
    sig = _signals(tmp_path / "signals.json", tiny_data.index.numpy(), name=tiny_data.name,
                   classes=list(tiny_data.classes))
    res, steps = _start(tiny_cfg, tiny_data, f"live.groups={sig}", "live.downweight_group=1")
    assert steps.seen == [0, 1, 2, 3] and res.next_step == 4


def test_fingerprints_decide_when_both_sides_have_one(tmp_path):
    from oppsig.live import check_groups_file

    def fp(train, record=None):
        return {"train": {"sha256": train, "examples": 3}, **({"record": {"sha256": record}} if record else {})}

    res = SignalsResult(n_rows=1, n_examples=3, groups=(Group(0, (0,), (5,)),),
                        dataset={"name": "x", "fingerprint": fp("a" * 64)})
    ids = np.array([5, 6, 7])
    check_groups_file(res, "s.json", ids, {"name": "other", "n": 3, "fingerprint": fp("a" * 64)})
    with pytest.raises(ConfigError, match="fingerprint differs"):
        check_groups_file(res, "s.json", ids, {"name": "x", "n": 3, "fingerprint": fp("b" * 64)})
    # a digest of the recorded sample alone decides nothing against another digest: the names do
    res = SignalsResult(n_rows=1, n_examples=3, groups=(Group(0, (0,), (5,)),),
                        dataset={"name": "x", "fingerprint": {"sha256": "c" * 64}})
    check_groups_file(res, "s.json", ids, {"name": "x", "fingerprint": fp("b" * 64)})
    with pytest.raises(ConfigError, match="data set x, not y"):
        check_groups_file(res, "s.json", ids, {"name": "y", "fingerprint": fp("b" * 64)})
    check_groups_file(res, "s.json", ids, {"name": "y", "fingerprint": fp("b" * 64, "c" * 64)})


def test_the_cli_prints_one_line(tiny_data, tmp_path, capsys):
    from oppsig.cli.main import main

    sig = _signals(tmp_path / "signals.json", np.arange(128), name="cifar10-train-5000", classes=CIFAR)
    rc = main(["train", "--no-progress", "--data.name=synthetic", "--data.n=128", "--model.widths=[8]",
               "--train.steps=3", f"--out-dir={tmp_path}", "--name=r", "--live.enabled=true",
               f"--live.groups={sig}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err[-1].startswith("error: live.groups ") and "comes from other data" in err[-1]
    assert not (tmp_path / "r" / "metrics.jsonl").exists() or (tmp_path / "r" / "metrics.jsonl").read_text() == ""
