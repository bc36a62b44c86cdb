"""What the Lightning and Hugging Face Trainer callbacks cost, against the same loops without them.

In one process, interleaved in rounds (median over rounds of the per-step time after a warm-up), on training
steps of 50 ms or more (the goal's setting: a callback's fixed cost per step weighs more on a smaller one):
- Lightning: oppsig's small CNN (conv 32-64, ReLU, max-pool) + CE, SGD with momentum on mini-batches of 128 of the
  first 5k CIFAR-10 images (synthetic when absent);
- Trainer: a 4-layer GPT-2 (128 wide, random init) on 64-character tinyshakespeare sequences (random tokens when
  absent), batches of 32.
Variants: no callback; ``OppsigCallback(..., budget=0)``: each batch's own losses recorded and live attribution on
(states kept for replay, the detector, the batches kept; goal <= 1.05x); the callback as shipped, with the
default probe planned within its budget (10% of training time) on top; and a probe set given by hand (Lightning
1,000 examples, Trainer 256, every 25 steps), whose cost is stated per probe example beside a training step's
cost per training example. No spike happens in these steps (``--check`` prints the events, if any).

    python benchmarks/bench_callbacks.py [--steps 120] [--rounds 3] [--threads 2]    # ~8 min idle, 2 threads
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _median_step(starts: list[float], skip: int = 5) -> float:
    return float(np.median(np.diff(np.asarray(starts))[skip:]))


def _probe_cost(starts: list[float], every: int = 25, skip: int = 5) -> float:
    """Median time of the steps that end with a probe minus that of the other steps."""
    d = np.diff(np.asarray(starts))
    steps = np.arange(len(d))
    probe = (steps % every == 0) & (steps >= skip)
    return float(np.median(d[probe]) - np.median(d[~probe & (steps >= skip)]))


class _Own:
    """Times the callback's own work per step (LiveRecord.after_update)."""

    def __init__(self, core):
        self.total, self.n, inner = 0.0, 0, core.after_update

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.total += time.perf_counter() - t
                self.n += 1

        core.after_update = timed

    def per_step(self) -> float:
        return self.total / max(self.n, 1)


# ----------------------------------------------------------------------------- Lightning
def lightning_round(train_set, steps: int, variant: str, out: Path) -> tuple[float, float, float]:
    import lightning.pytorch as L

    from oppsig.integrations.lightning import OppsigCallback
    from oppsig.models.cnn import CNN

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = CNN(tuple(train_set.x.shape[1:]), 10, channels=(32, 64))

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            idx, x, y = batch
            losses = F.cross_entropy(self(x), y, reduction="none")
            return {"loss": losses.mean(), "per_example_loss": losses}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)

    class Clock(L.Callback):
        def __init__(self):
            self.starts, self.probe = [], 0.0

        def on_train_batch_start(self, *a):
            self.starts.append(time.perf_counter())

    tds = torch.utils.data.TensorDataset(train_set.index, train_set.x, train_set.y)
    loader = torch.utils.data.DataLoader(tds, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    clock = Clock()
    cbs = [clock]
    if variant != "none":
        probe = None
        if variant == "probe":
            p = train_set.take(np.arange(1000))
            probe = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(p.index, p.x, p.y), batch_size=1000)
        cbs.append(OppsigCallback(out / f"lt-{variant}", index=train_set.index.numpy(), overwrite=True,
                                  probe=probe, probe_every=25 if probe is not None else 0,
                                  budget=0.0 if variant == "record" else 0.10))
    own = _Own(cbs[-1].core) if variant != "none" else None
    L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=cbs).fit(Net(), loader)
    return _median_step(clock.starts), _probe_cost(clock.starts), own.per_step() if own else 0.0


# ----------------------------------------------------------------------------- Trainer
def hf_round(x: torch.Tensor, steps: int, variant: str, out: Path) -> tuple[float, float, float]:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from oppsig.integrations.hf import OppsigCallback, with_ids

    class Seqs(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"input_ids": x[i], "labels": x[i]}

    class Clock(TrainerCallback):
        def __init__(self):
            self.starts = []

        def on_step_begin(self, *a, **k):
            self.starts.append(time.perf_counter())

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=int(x.max()) + 1, n_positions=x.shape[1], n_embd=128, n_layer=4,
                                       n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    clock = Clock()
    cbs = [clock]
    ds = with_ids(Seqs())
    if variant != "none":
        probe = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(256)), batch_size=256) \
            if variant == "probe" else None
        cbs.append(OppsigCallback(out / f"hf-{variant}", num_examples=len(x), overwrite=True, probe=probe,
                                  probe_every=25 if probe is not None else 0,
                                  budget=0.0 if variant == "record" else 0.10))
    own = _Own(cbs[-1].core) if variant != "none" else None
    args = TrainingArguments(output_dir=str(out / "hf"), max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True,
                             seed=0)
    Trainer(model=model, args=args, train_dataset=ds, callbacks=cbs).train()
    return _median_step(clock.starts), _probe_cost(clock.starts), own.per_step() if own else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from oppsig.config import load_config
    from oppsig.data import build_datasets
    from oppsig.data.cifar import find_cifar10
    from oppsig.errors import DataNotFoundError

    name = "cifar10" if find_cifar10() is not None else "synthetic"
    train_set, _ = build_datasets(load_config(None, [f"data.name={name}", "data.n=5000"]).data)
    try:
        text_cfg = load_config(None, ["data.name=text", "model.name=gpt", "data.n=2048", "data.block_size=64"])
        text, _ = build_datasets(text_cfg.data)
        tokens, tname = text.x.long(), "tinyshakespeare"
    except DataNotFoundError:  # the benchmark still runs, on random tokens, and says so
        tokens, tname = torch.randint(0, 65, (2048, 64), generator=torch.Generator().manual_seed(0)), "random tokens"
    out = Path(tempfile.mkdtemp())
    res: dict[str, dict[str, list]] = {"lightning": {}, "trainer": {}}
    for r in range(args.rounds):
        for v in ("none", "record", "default", "probe"):
            res["lightning"].setdefault(v, []).append(lightning_round(train_set, args.steps, v, out))
            res["trainer"].setdefault(v, []).append(hf_round(tokens, args.steps, v, out))
    print(f"data: {name} (5,000 images) for Lightning, {tname} ({len(tokens)} x {tokens.shape[1]}) for the Trainer; "
          f"{args.steps} steps x {args.rounds} rounds, {args.threads} threads")
    for fw, probe_n, batch in (("lightning", 1000, 128), ("trainer", 256, 32)):
        r = {v: np.asarray(res[fw][v]) for v in res[fw]}
        base = np.median(r["none"][:, 0])

        def ratio(v):  # per round: the rounds run under varying load
            return np.median(r[v][:, 0] / r["none"][:, 0]), ", ".join(f"{x:.3f}" for x in r[v][:, 0] / r["none"][:, 0])

        own = np.median(r["record"][:, 2])
        probe = np.median(r["probe"][:, 1]) / probe_n
        (rec, rec_rounds), (dflt, dflt_rounds) = ratio("record"), ratio("default")
        print(f"{fw:9s}: step {base * 1000:6.1f} ms without the callback; recording + live attribution {rec:.3f}x "
              f"(goal <= 1.05; per round {rec_rounds}), the callback's own work {own * 1000:.2f} ms per step "
              f"({own / base:.1%} of a step); as shipped, with the probe planned within 10% of training time, "
              f"{dflt:.3f}x (per round {dflt_rounds}); probe {probe * 1e6:.0f} us per probe example (training: "
              f"{base / batch * 1e6:.0f} us per example)")


if __name__ == "__main__":
    main()
