"""The kept states of live attribution, the replay check's arithmetic and control, and the verdict."""

import numpy as np
import pytest
import torch

from oppsig.live.replay import control_ids, replay_check, verdict
from oppsig.live.states import StateRing
from oppsig.training.actions import restore_state, snapshot


def _model_opt(name="sgd"):
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) if name == "sgd" else \
        torch.optim.Adam(m.parameters(), lr=0.1)
    return m, opt


def _step(m, opt):
    opt.zero_grad()
    m(torch.ones(4, 3)).square().sum().backward()
    opt.step()


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_kept_state_restores_the_run_exactly(name):
    m, opt = _model_opt(name)
    ring = StateRing(3)
    after = {}
    for step in range(6):
        ring.keep(step, m, opt)
        _step(m, opt)
        after[step] = [p.detach().clone() for p in m.parameters()]
    assert ring.steps() == [3, 4, 5]
    m2, opt2 = _model_opt(name)
    for _ in range(2):  # loading the same state twice gives the same step: the slot is not changed by a replay
        restore_state(m2, opt2, ring.get(4))
        _step(m2, opt2)
        assert all(torch.equal(a, b) for a, b in zip(m2.parameters(), after[4]))
    with pytest.raises(KeyError, match="step 1 is not kept"):
        ring.get(1)
    ring.clear()
    assert ring.steps() == []


def test_control_has_the_named_size_and_class_mix_and_no_named_example():
    index = np.arange(100, 400)
    labels = np.repeat(np.arange(3), 100)
    named = np.concatenate([index[:10], index[100:130]])  # 10 of class 0, 30 of class 1
    c = control_ids(named, index, labels, seed=1)
    assert len(c) == 40 and not np.isin(c, named).any()
    lab = labels[np.searchsorted(index, c)]
    assert (lab == 0).sum() == 10 and (lab == 1).sum() == 30
    assert not np.array_equal(c, control_ids(named, index, labels, seed=2))


def test_verdicts():
    assert verdict(0.5, 0.8, 0.1)[0] == "data"
    assert verdict(0.5, 0.8, 0.5)[0] == "undetermined"  # the control removes as much: not the group
    assert verdict(0.5, 0.1, 0.0)[0] == "optimiser state"
    assert verdict(0.5, 0.35, 0.0)[0] == "undetermined"
    assert verdict(-0.1, 0.9, 0.0)[0] == "undetermined"
    # a control that makes the rise far larger: the replay is too sensitive to the batches to tell
    assert verdict(0.5, 0.6, -1.2)[0] == "undetermined" and "sensitive" in verdict(0.5, 0.6, -1.2)[1]
    assert verdict(0.5, 0.05, -0.5)[0] == "undetermined"
    assert verdict(0.5, 0.6, -0.15)[0] == "data"


class FakeReplayer:
    """Loss at the end of a replay: 1 + 0.1 per step, less 0.08 per step without example 7 (0.02 without 8)."""

    def scratch(self, model, optimizer):
        return model, optimizer

    def run(self, model, optimizer, start, stop, drop=None, how="zero"):
        drop = () if drop is None else set(np.asarray(drop).tolist())
        if start == 10:  # from the onset state
            self.end = 1.0
        self.end += (0.1 - 0.08 * (7 in drop) - 0.02 * (8 in drop)) * (stop - start)

    def losses(self, model, ids):
        return np.full(len(ids), self.end)


def test_replay_check_shares_of_the_rise():
    m, opt = _model_opt()
    state = {"model": m.state_dict(), "optimizer": opt.state_dict()}
    chk = replay_check(FakeReplayer(), m, opt, state, 10, 15, np.array([7, 8]), [np.array([1, 2]), np.array([7, 3]),
                       np.array([4, 5])], np.arange(20), recorded=(1.0, 1.5),
                       alone={"rise": np.array([7]), "opposing": np.array([8])})
    assert chk.rise == pytest.approx(0.5) and chk.drift == pytest.approx(0.0)
    assert chk.removed == pytest.approx(1.0) and chk.dropped == 2
    assert chk.controls == pytest.approx((0.0, 0.8, 0.0)) and chk.removed_control == pytest.approx(0.0)  # median
    assert chk.removals == pytest.approx({"rise": 0.8, "opposing": 0.2})
    assert chk.verdict == "data" and chk.steps == 5
    # past the peak: the height is the largest loss within 2 steps of it (here 2 steps later, still rising)
    chk = replay_check(FakeReplayer(), m, opt, state, 10, 15, np.array([7, 8]), [np.array([1, 2])], np.arange(20),
                       recorded=(1.0, 1.5), around=2)
    assert chk.steps == 7 and chk.around == 2 and chk.rise == pytest.approx(0.7) and chk.drift == pytest.approx(0.0)
    assert "seconds" not in chk.to_json()


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_snapshot_restored_twice_gives_the_same_step(name):
    """torch's load_state_dict shares the optimiser's tensors with the dict it loads: restoring must copy them."""
    m, opt = _model_opt(name)
    _step(m, opt)  # momenta that are not zero
    snap = snapshot(m, opt)
    _step(m, opt)
    after = [p.detach().clone() for p in m.parameters()]
    for _ in range(2):
        restore_state(m, opt, snap)
        _step(m, opt)
        assert all(torch.equal(a, b) for a, b in zip(m.parameters(), after))


def test_replay_check_controls_that_drop_nothing_remove_nothing():
    """Every replay starts from the onset's state: one that drops no example is the run as trained."""
    from oppsig.config import load_config
    from oppsig.training import build_run
    from oppsig.training.build import TrainOptions
    from oppsig.training.rerun import StepReplayer

    cfg = load_config(None, ["data.n=96", "model.widths=[8]", "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0.9",
                             "train.batch_size=16", "train.steps=12", "threads=1", "record.enabled=false"])
    parts = build_run(cfg, TrainOptions(run_dir=None, progress=False))
    rp = StepReplayer(parts)
    model, opt = parts.model, parts.optimizer
    rp.run(model, opt, 0, 3)  # momentum built up before the onset
    onset_state, ids = snapshot(model, opt), parts.train_set.index.numpy()
    chk = replay_check(rp, model, opt, onset_state, 3, 8, ids[:10], [np.zeros(0, np.int64)] * 2, ids,
                       recorded=(0.0, 0.0))  # a recorded onset loss of 0: the rise is the replay's whole height
    assert chk.rise > 0 and chk.removed != 0.0
    assert chk.controls == (0.0, 0.0)


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_a_replayed_step_leaves_out_the_dropped_examples_gradients(how):
    """"zero": the update without the dropped examples' loss terms, the batch's sum still over its full size, so
    every other example's part is as trained; "mean": the mean over the examples left."""
    from oppsig.config import load_config
    from oppsig.training import build_run
    from oppsig.training.build import TrainOptions
    from oppsig.training.rerun import StepReplayer
    from oppsig.training.step import step_batch

    cfg = load_config(None, ["data.n=96", "model.widths=[8]", "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0",
                             "train.batch_size=16", "train.steps=2", "threads=1", "record.enabled=false"])
    parts = build_run(cfg, TrainOptions(run_dir=None, progress=False))
    rp = StepReplayer(parts)
    model, opt = rp.scratch(parts.model, parts.optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    rows = step_batch(parts, 0).rows
    ids = parts.train_set.index[rows].numpy()
    drop = ids[:5]
    rp.run(model, opt, 0, 1, drop=drop, how=how)
    x, y = parts.train_set.x[rows[5:]], parts.train_set.y[rows[5:]]
    ref = [p.detach().clone().requires_grad_(True) for p in before]
    out = torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], ref)), (x,))
    total = parts.loss_fn(out, y).sum() / (len(rows) if how == "zero" else len(rows) - 5)
    grads = torch.autograd.grad(total, ref)
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.5 * g, rtol=1e-5, atol=1e-6)
