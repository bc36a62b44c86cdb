"""The Lightning callback, trained for real on CPU: the record against the module's own losses, probe, actions,
and (with CIFAR-10) a small CNN whose run goes through detect and report."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')

from oppsig import open_run  # noqa: E402
from oppsig.integrations.lightning import OppsigCallback  # noqa: E402
from oppsig.live import read_events  # noqa: E402

from ._accumulation import batch_matrix, check_accumulated  # noqa: E402


class Net(L.LightningModule):
    """A plain module: its training_step returns the per-example losses beside the loss it trains on."""

    def __init__(self, model, lr=0.05, spike_at=None, weigh=None):
        super().__init__()
        self.model, self.lr, self.spike_at, self.weigh = model, lr, spike_at, weigh
        self.seen, self.params = {}, {}

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        idx, x, y = batch
        self.params[self.global_step] = torch.cat([p.detach().flatten().clone() for p in self.parameters()])
        losses = F.cross_entropy(self(x), y, reduction="none")
        if self.global_step == self.spike_at:  # a planted spike: these losses really are trained on
            losses = losses * 8.0
        self.seen[self.global_step] = (idx.clone(), losses.detach().clone())
        w = self.weigh(idx) if self.weigh is not None else 1.0
        return {"loss": (losses * w).mean(), "per_example_loss": losses}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(ds, batch_size, shuffle=True):
    tds = torch.utils.data.TensorDataset(ds.index, ds.x, ds.y)
    return torch.utils.data.DataLoader(tds, batch_size=batch_size, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(0))


def _fit(module, cb, loader, steps):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, loader)
    return trainer


def _mlp(d, c, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 32), torch.nn.Tanh(), torch.nn.Linear(32, c))


def test_records_the_batches_own_losses(tiny_data, tmp_path):
    ds = tiny_data
    d = int(np.prod(ds.x.shape[1:]))
    net = Net(_mlp(d, 10))
    cb = OppsigCallback(tmp_path / "run", index=ds.index.numpy(), live=False)
    _fit(net, cb, _loader(ds, 32), steps=12)
    run = open_run(tmp_path / "run")
    steps, L_ = batch_matrix(run)  # mini-batches of 32 of 128: the sparse batch record
    assert steps == list(range(12))
    cols = {int(i): k for k, i in enumerate(run.batches.index)}
    for t, (idx, losses) in net.seen.items():
        row = np.full(len(cols), np.nan, dtype=np.float32)
        row[[cols[int(i)] for i in idx]] = losses.numpy()
        np.testing.assert_array_equal(L_[t], row)  # exactly the training forward's losses, by id
    assert "loss" in run.metrics and len(run.metrics["loss"]) == 12


def test_probe_every_k_steps(tiny_data, tmp_path):
    ds = tiny_data
    d = int(np.prod(ds.x.shape[1:]))
    cb = OppsigCallback(tmp_path / "run", index=ds.index.numpy(), live=False, probe=_loader(ds, 64, shuffle=False),
                        probe_every=5)
    _fit(Net(_mlp(d, 10)), cb, _loader(ds, 32), steps=11)
    run = open_run(tmp_path / "run")
    full = np.isfinite(np.asarray(run.losses[:])).all(1)
    assert [int(s) for s, f in zip(run.steps, full) if f] == [0, 5, 10]


@pytest.mark.parametrize("action", ["none", "skip_update", "rollback", "lower_lr"])
def test_actions_at_a_planted_spike(tiny_data, tmp_path, action):
    ds = tiny_data
    d = int(np.prod(ds.x.shape[1:]))
    spike = 24
    live = {"window": 11, "checkpoint_every": 10}
    if action != "none":
        live[action] = True
    if action == "lower_lr":
        live = {**live, "lower_lr": None, "lr_factor": 0.5, "lr_steps": 3}
        live.pop("lower_lr")
    net = Net(_mlp(d, 10), spike_at=spike)
    cb = OppsigCallback(tmp_path / "run", index=ds.index.numpy(), live=live)
    trainer = _fit(net, cb, _loader(ds, 128), steps=30)  # full batches: every example every step
    ev = read_events(tmp_path / "run")
    spikes = [e for e in ev if e["kind"] == "spike"]
    assert [e["step"] for e in spikes] == [spike]
    p = net.params
    if action == "none":
        assert not torch.equal(p[spike + 1], p[spike])
    if action == "skip_update":
        assert torch.equal(p[spike + 1], p[spike])
        assert any(e["kind"] == "skip_update" for e in ev)
    if action == "rollback":
        (rb,) = [e for e in ev if e["kind"] == "rollback"]
        assert rb["to_step"] == 20 and torch.equal(p[spike + 1], p[20])
    if action == "lower_lr":
        assert any(e["kind"] == "lower_lr" for e in ev)
        lrs = open_run(tmp_path / "run").metrics["lr"]
        assert list(lrs[spike : spike + 5]) == pytest.approx([0.05, 0.025, 0.025, 0.025, 0.05])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)


def test_downweight_through_weight_of(tiny_data, tmp_path):
    from oppsig.signals import Group, SignalsResult, write_signals_json

    ds = tiny_data
    ids = ds.index.numpy()
    d = int(np.prod(ds.x.shape[1:]))
    sig = write_signals_json(SignalsResult(n_rows=10, n_examples=len(ids), groups=(
        Group(3, tuple(range(len(ids))), tuple(ids.tolist()), class_counts={"x": len(ids)}),)), tmp_path / "s.json")
    cb = OppsigCallback(tmp_path / "run", index=ids, live={"window": 11, "groups": str(sig), "downweight_group": 3,
                                                           "downweight": 0.5})
    net = Net(_mlp(d, 10), spike_at=24, weigh=cb.weight_of)
    _fit(net, cb, _loader(ds, 128), steps=28)
    assert torch.equal(cb.weight_of(ids[:4]), torch.full((4,), 0.5))
    assert [e["step"] for e in read_events(tmp_path / "run") if e["kind"] == "downweight"] == [24]


def test_missing_per_example_losses_is_a_clear_error(tiny_data, tmp_path):
    from oppsig.errors import ConfigError

    class Plain(Net):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    ds = tiny_data
    cb = OppsigCallback(tmp_path / "run", index=ds.index.numpy())
    with pytest.raises(ConfigError, match="per_example_loss"):
        _fit(Plain(_mlp(int(np.prod(ds.x.shape[1:])), 10)), cb, _loader(ds, 32), steps=2)


def test_lightning_accumulate_grad_batches(tiny_data, tmp_path):
    micro = []

    class Micro(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            idx, x, y = batch
            losses = F.cross_entropy(self.model(x), y, reduction="none")
            micro.append((self.global_step, idx.clone(), losses.detach().clone()))
            return {"loss": losses.mean(), "per_example_loss": losses}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    ds = tiny_data
    torch.manual_seed(0)
    d = int(np.prod(ds.x.shape[1:]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ds.index, ds.x, ds.y), batch_size=16,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    cb = OppsigCallback(tmp_path / "run", index=ds.index.numpy(), live=False)
    # 128 examples, micro-batches of 16, 2 per update: 4 updates an epoch; 6 updates cross into the second epoch
    L.Trainer(max_steps=6, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[cb]).fit(Micro(model), loader)
    assert len(micro) == 12 and [s for s, _, _ in micro] == [t for t in range(6) for _ in range(2)]
    check_accumulated(tmp_path / "run", micro, n_steps=6, per_step=32)


@pytest.mark.slow
@pytest.mark.shared_data
def test_small_cnn_on_cifar_subset_then_detect_and_report(tmp_path):
    """A small CNN (8 and 16 channels) on 500 CIFAR-10 images, full-batch GD at lr 0.1 with live attribution and
    sharpness, then detect and report."""
    from oppsig.config import load_config
    from oppsig.data import build_datasets
    from oppsig.experiments.detect import detect_run
    from oppsig.models import build_from_config
    from oppsig.report import write_report

    cfg = load_config(None, ["data.name=cifar10", "data.n=500", "model.name=cnn", "model.channels=[8,16]",
                             "optim.lr=0.1", "train.steps=60", "name=lightning-cnn"])
    train_set, _ = build_datasets(cfg.data, seed=cfg.seed)
    torch.manual_seed(0)
    model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), 10, torch.device("cpu"), torch.float32)
    cb = OppsigCallback(tmp_path / "run", index=train_set.index.numpy(), labels=train_set.y.numpy(),
                        classes=train_set.classes, config=cfg.to_dict(),
                        sharpness_every=30, sharpness_batch=(train_set.x[:128], train_set.y[:128]))
    _fit(Net(model, lr=0.1), cb, _loader(train_set, 500), steps=cfg.train.steps)
    run = open_run(tmp_path / "run")
    assert run.losses.shape == (60, 500) and np.isfinite(np.asarray(run.losses[:])).all()
    assert np.isfinite(run.metrics["sharpness"]).sum() == 2
    res = detect_run(tmp_path / "run", verify=0, grids=False)
    assert len(res.groups) > 0
    html = write_report([str(tmp_path / "run")]).read_text()
    assert "group" in html.lower()
