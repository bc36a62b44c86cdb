"""What both callbacks share: the live argument, and LiveRecord's record and live session without a framework."""

import numpy as np
import pytest
import torch

from oppsig import open_run
from oppsig.config import LiveConfig
from oppsig.errors import ConfigError
from oppsig.integrations.record import LiveRecord, live_config
from oppsig.live import read_events


def test_live_config_from_the_callback_argument():
    assert live_config(True).enabled and not live_config(False).enabled
    c = live_config({"skip_update": True, "z": 5})
    assert c.enabled and c.skip_update and c.z == 5
    with pytest.raises(ConfigError, match="'live.skipupdate'; did you mean 'live.skip_update'"):
        live_config({"skipupdate": True})
    with pytest.raises(ConfigError, match="LiveConfig"):
        live_config("yes")
    assert live_config(LiveConfig(window=9)).window == 9


def test_live_record_rolls_back_to_its_snapshot(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = LiveRecord(tmp_path / "run", num_examples=4, print_fn=None,
                     live=LiveConfig(enabled=True, window=5, history=8, context=3, rollback=True, checkpoint_every=10))
    rec.start()
    params = {}
    for t in range(16):
        rec.before_update(t, model, opt)
        params[t] = model.weight.detach().clone()
        with torch.no_grad():
            model.weight += 1.0
        losses = np.full(4, 1.0 - 0.01 * t) if t < 15 else np.array([0.86, 0.86, 5.0, 0.86])
        rec.after_update(t, torch.arange(4), torch.as_tensor(losses), model, opt)
    rec.close()
    kinds = [(e["kind"], e["step"]) for e in read_events(tmp_path / "run")]
    assert kinds == [("spike", 15), ("rollback", 15)]
    assert torch.equal(model.weight, params[10])
    assert list(open_run(tmp_path / "run").steps) == list(range(16))


def _record_planted(run_dir, overwrite=False):
    """A user's own run through LiveRecord (no oppsig config): 400 examples of oppsig's synthetic images, two
    planted anti-phase pairs in the losses, labels and class names given."""
    from oppsig.data import opposing_signals
    from oppsig.signals.synthetic import eos_matrix

    ds = opposing_signals(n=400, frequency=0.25, seed=0)
    g = ds.groups
    pairs = {k: (np.flatnonzero(g == 2 * k), np.flatnonzero(g == 2 * k + 1)) for k in (0, 1)}
    losses = eos_matrix(len(ds), 120, pairs, seed=1)
    rec = LiveRecord(run_dir, num_examples=len(ds), live=LiveConfig(enabled=False), labels=ds.y,
                     classes=ds.classes, overwrite=overwrite, print_fn=None)
    rec.start()
    for t, row in enumerate(losses):
        rec.after_update(t, ds.index, torch.as_tensor(row))
    rec.close()
    return ds, pairs


def test_labels_are_kept_with_the_run_and_an_overwrite_replaces_them(tmp_path):
    from oppsig.store.labels import read_labels

    ds, _ = _record_planted(tmp_path / "run")
    lab = read_labels(tmp_path / "run")
    assert lab.classes == tuple(ds.classes) and lab.of([5, 0]).tolist() == ds.y[[5, 0]].tolist()
    _record_planted(tmp_path / "run", overwrite=True)  # labels.npz is the run's own file
    assert read_labels(tmp_path / "run").labels.tolist() == ds.y.tolist()


def test_detect_and_report_a_run_without_config_then_with_its_data(tmp_path, capsys):
    from oppsig.cli.main import main
    from oppsig.experiments.detect import detect_run
    from oppsig.report.summary import load_signals

    ds, pairs = _record_planted(tmp_path / "run")
    run = str(tmp_path / "run")
    assert main(["detect", run]) == 0
    out = capsys.readouterr().out
    assert out.count("explanations in words and image grids need the examples' inputs") == 1
    assert f"oppsig.detect_run('{run}', dataset=ArrayDataset(x, y, index, classes))" in out
    sig = load_signals(run)
    assert sig.dataset["inputs"] is False and sig.groups
    g0 = sig.groups[0]
    assert f"  group {g0.id}: {', '.join(str(i) for i in g0.ids[:8])}" in out  # named by example ids
    planted = set(pairs[0][0].tolist())
    best = max(sig.groups, key=lambda gr: len(planted & set(gr.ids)))
    assert len(planted & set(best.ids)) >= 0.9 * len(planted)  # found from the losses, named by class
    assert set(best.class_counts) == {ds.classes[int(ds.y[pairs[0][0][0]])]}
    assert not list((tmp_path / "run").glob("signals/group_*.png"))
    assert main(["report", run]) == 0
    assert "images left out" in (tmp_path / "run" / "report.html").read_text()
    res = detect_run(run, dataset=ds, verify=0)  # with the inputs: explained as on any run, grids drawn
    assert res.dataset["inputs"] is True and len(res.pairs) >= 1
    assert len(list((tmp_path / "run").glob("signals/group_*.png"))) == len(res.groups)
