"""Training as CIFAR-10 is usually trained: bfloat16 autocast (``train.autocast=bf16``) records float32 losses close
to a float32 run's; and detection still finds a planted pair under bf16 and under augmentation (``data.augment``).

Tolerance of bf16: it keeps 8 significant bits (about 2.4 decimal digits), so each logit carries a relative error
of a few 2**-8 of the largest: we allow |logit error| <= 1e-2 * max|logit| (about 3 significant digits). A
per-example cross-entropy moves by at most 2 * max|logit error| (its gradient in the logits has an l1 norm <= 2).
"""

import json

import numpy as np
import pytest
import torch

from oppsig.config import load_config
from oppsig.data.synthetic import PlantedPair, opposing_signals
from oppsig.errors import ConfigError
from oppsig.signals import find_signals_in_run
from oppsig.signals.synthetic import overlap_f1
from oppsig.store import open_run
from oppsig.training import train
from oppsig.training.build import TrainOptions, build_run
from oppsig.training.step import gradient, precision, step_batch

SGD = ("optim.name=sgd", "train.batch_size=32", "record.probe_n=128", "record.every=5")
LOGIT_DIGITS = 1e-2  # bf16 logits: about 3 significant digits of the largest


def _step0(tiny_cfg, *overrides):
    parts = build_run(tiny_cfg(*SGD, *overrides), TrainOptions(run_dir=None, progress=False))
    return parts, gradient(parts, step_batch(parts, 0), want_logits=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_bf16_step_records_float32_losses_within_bf16_precision(tiny_cfg, device):
    _, (l32, _, z32) = _step0(tiny_cfg, f"device={device}")
    parts, (l16, _, z16) = _step0(tiny_cfg, f"device={device}", "train.autocast=bf16")
    with precision(parts.cfg, parts.device):
        assert parts.model(parts.train_set.x[:4]).dtype == torch.bfloat16  # the forward runs in bf16
    assert l16.dtype == z16.dtype == torch.float32  # the losses are computed and kept in float32
    scale = float(z32.abs().max())
    assert 0 < float((z16 - z32).abs().max()) <= LOGIT_DIGITS * scale
    assert 0 < float((l16 - l32).abs().max()) <= 2 * LOGIT_DIGITS * scale


def test_a_bf16_run_records_float32_losses_close_to_float32_and_learns(tiny_cfg):
    runs = {}
    for prec in ("none", "bf16"):
        res = train(tiny_cfg(*SGD, f"train.autocast={prec}", f"name={prec}", steps=60), progress=False)
        runs[prec] = (open_run(res.run_dir), res.run_dir)
    (r32, _), (r16, d16) = runs["none"], runs["bf16"]
    s32, c32, l32, _ = r32.batches.arrays()
    s16, c16, l16, _ = r16.batches.arrays()
    assert l16.dtype == np.float32 and np.asarray(r16.losses).dtype == np.float32
    at0 = s16 == 0
    assert np.array_equal(c16[at0], c32[s32 == 0])  # the same batch at the same parameters
    diff = np.abs(l16[at0] - l32[s32 == 0])
    scale = float(_step0(tiny_cfg)[1][2].abs().max())  # the largest logit of step 0's batch
    assert 0 < diff.max() <= 2 * LOGIT_DIGITS * scale
    loss = [json.loads(line)["loss"] for line in (d16 / "metrics.jsonl").read_text().splitlines()]
    assert len(loss) == 60 and np.mean(loss[-10:]) < 0.8 * np.mean(loss[:10])


def test_autocast_is_validated():
    with pytest.raises(ConfigError, match="'train.autocast' must be none or bf16"):
        load_config(None, ["train.autocast=fp16"])


def test_the_probe_of_a_bf16_run_runs_under_the_same_autocast(tiny_cfg):
    res = train(tiny_cfg(*SGD, "train.autocast=bf16", "record.every=1", steps=1), progress=False)
    run = open_run(res.run_dir)
    parts = build_run(tiny_cfg(*SGD, "train.autocast=bf16"), TrainOptions(run_dir=None, progress=False))  # theta_0
    with torch.no_grad(), precision(parts.cfg, parts.device):
        want = parts.loss_fn(parts.model(parts.train_set.x).float(), parts.train_set.y)
    np.testing.assert_allclose(np.asarray(run.losses)[0], want.numpy(), rtol=1e-5, atol=1e-6)


# a few hundred synthetic images, one planted pair (bright_top on 25% of classes 0 and 1), SGD in batches of 100:
# about 4 s of training and 3 s of detection on one core
PLANTED = dict(n=400, num_classes=4, frequency=0.25, pairs=(PlantedPair("bright_top", 0, 1),), seed=0)
PLANTED_RUN = ("data.name=synthetic", "data.n=400", "model.widths=[32]", "train.steps=300", "optim.name=sgd",
               "train.batch_size=100", "optim.lr=0.2", "record.probe_n=400", "record.every=3",
               "train.checkpoint_every=0", "train.physical_batch_size=400")


@pytest.mark.parametrize("setting", ["data.augment=crop_flip", "train.autocast=bf16"])
def test_detection_finds_the_planted_pair(setting, tmp_path):
    ds = opposing_signals(**PLANTED)
    cfg = load_config(None, [*PLANTED_RUN, setting, f"out_dir={tmp_path}", "name=planted"])
    res = train(cfg, progress=False, data=(ds, None))
    found = find_signals_in_run(open_run(res.run_dir), dataset=ds)
    ids = ds.index.numpy()
    best = [max((overlap_f1(g.all_ids, ids[ds.groups == k]), g.id) for g in found.groups) for k in (0, 1)]
    reported = {frozenset((p.a, p.b)) for p in found.pairs}
    assert min(f for f, _ in best) >= 0.9, best
    assert frozenset(g for _, g in best) in reported, (best, reported)
