"""StepReplayer: steps done again from a kept state reproduce the run exactly, and leave out what is dropped."""

import copy

import numpy as np
import pytest
import torch

from oppsig.config import load_config
from oppsig.training import batch_rows, build_run, train
from oppsig.training.build import TrainOptions
from oppsig.training.rerun import StepReplayer

BASE = ["data.n=96", "model.widths=[8]", "optim.name=sgd", "optim.lr=0.2", "optim.momentum=0.9",
        "train.batch_size=16", "threads=1", "record.enabled=false"]


def _parts(*extra, steps=6):
    cfg = load_config(None, [*BASE, f"train.steps={steps}", *extra])
    return build_run(cfg, TrainOptions(run_dir=None, progress=False))


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("extra", [[], ["data.augment=crop_flip"], ["optim.name=adamw", "optim.lr=0.01"]])
def test_replay_of_every_step_is_the_training_run(extra):
    parts = _parts(*extra)
    rp = StepReplayer(parts)
    model, opt = rp.scratch(parts.model, parts.optimizer)
    model.load_state_dict(parts.model.state_dict())  # theta_0, the optimiser empty
    rp.run(model, opt, 0, 6)
    res = train(parts.cfg, run_dir=None, progress=False)
    assert torch.equal(_flat(model), _flat(res.model))


def test_dropped_examples_leave_every_batch():
    parts = _parts("optim.momentum=0.0", steps=1)
    rp = StepReplayer(parts)
    batch = batch_rows(0, len(parts.train_set), 16, parts.cfg.seed, "cpu")
    drop = parts.train_set.index[batch[:5]].numpy()
    model, opt = rp.scratch(parts.model, parts.optimizer)
    ref = copy.deepcopy(parts.model)
    rp.run(model, opt, 0, 1, drop=drop, how="mean")
    # the same step by hand: the mean loss of the batch's other 11 rows (how="zero": tests/live/test_states_replay)
    keep = batch[5:]
    loss = parts.loss_fn(ref(parts.train_set.x[keep]), parts.train_set.y[keep]).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expect = torch.cat([(p - 0.2 * g).detach().flatten() for p, g in zip(ref.parameters(), grads)])
    assert torch.allclose(_flat(model), expect, atol=1e-6)
    assert not torch.allclose(_flat(model), _flat(parts.model))  # the training model is not touched


def test_losses_follow_the_ids_order():
    parts = _parts()
    rp = StepReplayer(parts)
    ids = parts.train_set.index.numpy()
    all_l = rp.losses(parts.model, ids)
    pick = ids[[7, 3, 50]]
    assert np.allclose(rp.losses(parts.model, pick), all_l[[7, 3, 50]], atol=1e-6)
