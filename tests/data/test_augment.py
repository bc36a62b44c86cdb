"""Random crop and flip of the training mini-batches (``data.augment=crop_flip``): the transform on hand-made images,
its seeding by ``(seed, step)``, and what the records of an augmented run hold (the probe: clean inputs; the batch
record: the augmented training forward), through a resume and a replay."""

import numpy as np
import pytest
import torch

from oppsig.config import load_config
from oppsig.data.augment import PAD, augment, crop_flip, crop_flip_with, draws
from oppsig.errors import ConfigError
from oppsig.losses import get_loss
from oppsig.store import open_run
from oppsig.training import model_at, train
from oppsig.training.step import batch_rows

AUG_SGD = ("optim.name=sgd", "train.batch_size=32", "data.augment=crop_flip", "record.probe_n=128", "record.every=1")


def _image(n=1, c=3, h=6, w=5):
    """Distinct positive values everywhere (so a zero can only come from the padding)."""
    return torch.arange(1, n * c * h * w + 1, dtype=torch.float32).reshape(n, c, h, w)


def test_draws_are_a_pure_function_of_seed_and_step():
    x = torch.randn(64, 3, 32, 32)
    assert torch.equal(crop_flip(x, seed=3, step=7), crop_flip(x, seed=3, step=7))
    assert not torch.equal(crop_flip(x, seed=3, step=7), crop_flip(x, seed=3, step=8))
    assert not torch.equal(crop_flip(x, seed=3, step=7), crop_flip(x, seed=4, step=7))
    d = draws(4000, seed=0, step=0)
    assert d.dy.min() == 0 and d.dy.max() == 2 * PAD and d.dx.min() == 0 and d.dx.max() == 2 * PAD
    assert 0.45 < d.flip.float().mean() < 0.55


def test_shapes_and_dtype_are_kept():
    for shape in ((5, 3, 32, 32), (2, 1, 8, 12)):
        x = torch.randn(shape, dtype=torch.float64)
        y = crop_flip(x, seed=0, step=1)
        assert y.shape == x.shape and y.dtype == x.dtype
    assert augment("none", x, 0, 1) is x


def test_flip_mirrors_left_right_and_crop_shifts_with_zero_padding():
    x = _image()
    one = torch.ones(1, dtype=torch.long)
    same = crop_flip_with(x, PAD * one, PAD * one, torch.tensor([False]))
    assert torch.equal(same, x)  # the centred window, unflipped: the image itself
    flipped = crop_flip_with(x, PAD * one, PAD * one, torch.tensor([True]))
    assert torch.equal(flipped[..., :, 0], x[..., :, -1]) and torch.equal(flipped, x.flip(-1))
    # window at the padded image's top-left corner: the image moves down-right by PAD, zeros fill the top and left
    down_right = crop_flip_with(x, 0 * one, 0 * one, torch.tensor([False]), pad=2)
    assert torch.equal(down_right[..., 2:, 2:], x[..., :-2, :-2])
    assert (down_right[..., :2, :] == 0).all() and (down_right[..., :, :2] == 0).all()
    # window at the bottom-right corner, flipped: the image moves up-left, then is mirrored
    up_left = crop_flip_with(x, 4 * one, 4 * one, torch.tensor([True]), pad=2)
    assert torch.equal(up_left.flip(-1)[..., :-2, :-2], x[..., 2:, 2:])
    assert (up_left[..., -2:, :] == 0).all() and (up_left[..., :, :2] == 0).all()


def test_each_image_gets_its_own_draw():
    x = _image(n=200, h=8, w=8)
    d = draws(200, seed=5, step=2)
    y = crop_flip(x, seed=5, step=2)
    assert torch.equal(y, crop_flip_with(x, *d))
    for i in (0, 1, 199):
        one = crop_flip_with(x[i : i + 1], d.dy[i : i + 1], d.dx[i : i + 1], d.flip[i : i + 1])
        assert torch.equal(y[i : i + 1], one)


def test_non_image_data_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"data.augment=crop_flip needs image inputs .*set data.augment=none") as e:
        crop_flip(torch.randn(8, 16), seed=0, step=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'data.augment' crops and flips images; data.name=text") as e:
        load_config(None, ["data.name=text", "model.name=gpt", "data.augment=crop_flip"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'data.augment' must be none or crop_flip"):
        load_config(None, ["data.augment=cutout"])


def _batch_entries(run, step):
    s, col, loss, _ = run.batches.arrays()
    return col[s == step], loss[s == step]


def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny_cfg):
    full = train(tiny_cfg(*AUG_SGD, "name=full", steps=13), progress=False)
    train(tiny_cfg(*AUG_SGD, "name=part", steps=10), progress=False)  # checkpoint at 10
    res = train(tiny_cfg(*AUG_SGD, "name=part", steps=13), resume=True, progress=False)
    plain = train(tiny_cfg(*AUG_SGD[:-3], "record.probe_n=128", "record.every=1", "name=plain", steps=13),
                  progress=False)
    a, b, c = open_run(full.run_dir), open_run(res.run_dir), open_run(plain.run_dir)
    assert a.steps.tolist() == b.steps.tolist() == list(range(13))
    assert np.array_equal(np.asarray(a.losses), np.asarray(b.losses))  # bitwise (one thread)
    assert np.array_equal(a.batches.arrays()[2], b.batches.arrays()[2]) and a.batches.entries == 13 * 32
    for p, q in zip(full.model.parameters(), res.model.parameters()):
        assert torch.equal(p, q)
    # the same batches without augmentation train otherwise: the augmentation was applied
    assert np.array_equal(a.batches.arrays()[1], c.batches.arrays()[1])
    assert not np.allclose(a.batches.arrays()[2], c.batches.arrays()[2])


def test_replay_sees_the_same_augmented_batches(tiny_cfg):
    res = train(tiny_cfg(*AUG_SGD, "name=run", steps=10), progress=False)  # checkpoints kept at 0, 5, 10
    short = train(tiny_cfg(*AUG_SGD, "name=short", steps=8), progress=False)  # theta_8, trained straight
    replayed, _ = model_at(open_run(res.run_dir), 8)  # from the checkpoint of step 5
    for p, q in zip(short.model.parameters(), replayed.parameters()):
        assert torch.equal(p, q)


def test_probe_records_the_clean_inputs_and_the_batch_record_the_augmented_ones(tiny_cfg):
    cfg = tiny_cfg(*AUG_SGD, steps=8)
    res = train(cfg, progress=False)
    run = open_run(res.run_dir)
    model, data = model_at(run, 5)  # theta_5, from the kept checkpoint of step 5
    loss_fn = get_loss(cfg.train.loss)
    with torch.no_grad():
        clean = loss_fn(model(data.x), data.y)
        rows = batch_rows(5, len(data), 32, cfg.seed, "cpu")
        augmented = loss_fn(model(crop_flip(data.x[rows], cfg.seed, 5)), data.y[rows])
    probe = np.asarray(run.losses)[list(run.steps).index(5)]
    assert np.asarray(run.index).tolist() == data.index.tolist()
    np.testing.assert_allclose(probe, clean.numpy(), rtol=1e-5, atol=1e-6)
    col, batch = _batch_entries(run, 5)
    assert col.tolist() == rows.tolist()
    np.testing.assert_allclose(batch, augmented.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(batch - clean[rows].numpy()).max() > 1e-3  # the batch record is not the clean losses


def test_a_full_batch_run_records_the_augmented_training_forward(tiny_cfg):
    cfg = tiny_cfg("data.augment=crop_flip", steps=2)
    res = train(cfg, progress=False)
    run = open_run(res.run_dir)
    model, data = model_at(run, 1)  # theta_1, replayed from the checkpoint of step 0
    with torch.no_grad():
        want = get_loss(cfg.train.loss)(model(crop_flip(data.x, cfg.seed, 1)), data.y)
    np.testing.assert_allclose(np.asarray(run.losses)[1], want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [("--optim.name=gd",), ("--optim.name=sgd", "--train.batch_size=32")])
def test_two_ranks_see_the_augmented_batches_of_one(tmp_path, extra):
    from tests.distributed.test_ddp import launch

    extra = (*extra, "--data.augment=crop_flip", "--train.steps=6", "--record.every=1", "--record.probe_n=101")
    a, b = open_run(launch(tmp_path, "one", 1, extra)), open_run(launch(tmp_path, "two", 2, extra))
    assert np.allclose(np.asarray(a.losses), np.asarray(b.losses), atol=1e-5, rtol=0)
    if a.batches is not None:
        assert np.allclose(a.batches.arrays()[2], b.batches.arrays()[2], atol=1e-5, rtol=0)
