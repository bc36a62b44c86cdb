"""Recording per-example losses from anyone's training loop.

The five-line diff on a plain PyTorch loop::

    rec = oppsig.Recorder("runs/mine", num_examples=len(train_set))      # 1
    for step, (idx, x, y) in enumerate(loader):
        out = model(x)
        losses = F.cross_entropy(out, y, reduction="none")              # 2: per-example
        losses.mean().backward(); opt.step(); opt.zero_grad()
        rec.log(step, idx, losses)                                       # 3
    rec.close()                                                          # 4

or, for every example at every k-th step, the probe helper::

    if step % 10 == 0:
        rec.log(step, *oppsig.probe_losses(model, train_set, loss_fn))
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from ..data.base import ArrayDataset
from ..errors import StoreError
from .fingerprint import run_fingerprint
from .format import CONFIG, META, atomic_write, environment
from .rundir import prepare_run_dir
from .writer import MetricsWriter, StoreWriter


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu").numpy()
    return np.asarray(a)


class Recorder:
    """Records per-example losses logged from your own loop into a run directory.

    Args:
        run_dir: where to write (see :mod:`oppsig.store`).
        num_examples: N; example ids are ``0..N-1`` unless ``index`` is given.
        index: the stable ids of the examples (N,), if not ``0..N-1``.
        every: keep only steps divisible by ``every``.
        config: any YAML-able dict describing the run (saved beside the record).
        overwrite: replace an existing run in ``run_dir``.
        dtype: ``"float32"`` or ``"float16"``.
        sparse: keep each logged loss as one ``(step, example, loss)`` entry of the
            sparse record (``run.batches``) instead of a dense row of N values:
            for logging each mini-batch's own losses, where a dense row would be
            mostly NaN. ``every`` still selects the steps.
        live: an object with ``bind(run_dir, index)``, ``observe(step, ids, losses)`` and
            ``flush()``, e.g. :class:`oppsig.LiveAttribution`: each logged batch goes through
            it, and a loss spike prints one line and appends an event to ``events.jsonl``
            within the same ``log`` call.
        dataset: the training set (an :class:`~oppsig.data.ArrayDataset`, or anything with ``x``, ``y`` and
            ``index`` tensors) whose data fingerprint meta.json records, so that later readers check they
            have the same data (:mod:`oppsig.store.fingerprint`); default: none, and readers warn that the
            data cannot be checked.

    Several ``log`` calls may fill parts of one step (one per mini-batch); a
    step's row is complete when a later step is logged or on :meth:`close`.
    Examples not logged at a step read as NaN.

    Example:
        >>> rec = Recorder(tmp_path / "run", num_examples=4)
        >>> rec.log(0, [0, 1, 2, 3], torch.tensor([.1, .2, .3, .4]))
        >>> rec.close()

    The run directory is locked from construction to :meth:`close` (a second
    writer gets :class:`~oppsig.errors.RunLockedError`).

    Raises:
        RunExistsError: ``run_dir`` already holds a run and ``overwrite`` is False.
        RunLockedError: another process is writing ``run_dir``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        num_examples: int | None = None,
        index=None,
        every: int = 1,
        config: dict | None = None,
        overwrite: bool = False,
        dtype: str = "float32",
        chunk_steps: int = 32,
        sparse: bool = False,
        live=None,
        dataset=None,
    ) -> None:
        if index is None:
            if num_examples is None or num_examples <= 0:
                raise StoreError(f"Recorder needs num_examples > 0 or an index array (got num_examples={num_examples})")
            index = np.arange(num_examples)
        if every <= 0:
            raise StoreError(f"Recorder every must be > 0 (got {every})")
        self._lock = prepare_run_dir(run_dir, overwrite)  # held until close()
        self.run_dir = self._lock.run_dir
        self.every = every
        try:
            if config is not None:
                import yaml

                atomic_write(self.run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
            meta = {**environment(), "writer": "Recorder"}
            if dataset is not None:
                meta["fingerprint"] = run_fingerprint(dataset)
            atomic_write(self.run_dir / META, json.dumps(meta, indent=1))
            self._w = StoreWriter(self.run_dir, _numpy(index), dtype=dtype, chunk_steps=chunk_steps,
                                  attrs={"config": config, "writer": "Recorder"})
            self._metrics = MetricsWriter(self.run_dir)
            self._batches = None
            if sparse:
                from .batches import BatchWriter

                self._batches = BatchWriter(self.run_dir, _numpy(index), dtype=dtype)
        except BaseException:
            self._lock.release()
            raise
        self._row = np.full(self._w.n, np.nan, dtype=self._w.dtype)
        self._row_correct = np.zeros(self._w.n, dtype=bool)
        self._step: int | None = None
        self.live = live
        if live is not None:
            live.bind(self.run_dir, _numpy(index))

    def log(self, step: int, indices, losses, correct=None):
        """Log per-example ``losses`` (B,) of the examples with ids ``indices`` (B,) at ``step``.

        Returns the live spike event of this step, if ``live`` is set and the step spikes, else None.
        """
        step = int(step)
        if step % self.every:
            return
        if self._batches is not None:
            ids = _numpy(indices).astype(np.int64).reshape(-1)
            self._batches.append(step, self._batches.columns(ids), _numpy(losses).reshape(-1),
                                 None if correct is None else _numpy(correct).reshape(-1))
        else:
            self._log_dense(step, indices, losses, correct)
        if self.live is not None:
            return self.live.observe(step, _numpy(indices).reshape(-1), _numpy(losses).reshape(-1))
        return None

    def _log_dense(self, step: int, indices, losses, correct) -> None:
        if self._step is not None and step != self._step:
            if step < self._step:
                raise StoreError(f"step {step} logged after step {self._step}: steps must increase")
            self._close_row()
        self._step = step
        cols = self._w.columns(_numpy(indices).astype(np.int64).reshape(-1))
        self._row[cols] = _numpy(losses).reshape(-1)
        if correct is not None:
            self._row_correct[cols] = _numpy(correct).reshape(-1)

    def log_metrics(self, step: int, **scalars: float) -> None:
        """Log scalars of ``step`` (loss, accuracy, lr, ...) into ``metrics.jsonl``.

        ``sharpness`` and ``threshold`` also go to ``live`` (shown in its spike messages).
        """
        if "sharpness" in scalars and hasattr(self.live, "set_sharpness"):
            self.live.set_sharpness(scalars["sharpness"], scalars.get("threshold"))
        self._metrics.write({"step": int(step), **{k: float(v) for k, v in scalars.items()}})

    def _close_row(self) -> None:
        self._w.append(self._step, self._row, self._row_correct)
        self._row = np.full(self._w.n, np.nan, dtype=self._w.dtype)
        self._row_correct = np.zeros(self._w.n, dtype=bool)
        self._step = None

    def flush(self) -> None:
        """Write every complete step to disk."""
        self._w.flush()
        if self._batches is not None:
            self._batches.flush()

    def close(self) -> None:
        """Complete the current step and write everything."""
        try:
            if self._step is not None:
                self._close_row()
            self._w.flush()
            if self._batches is not None:
                self._batches.flush()
            self._metrics.close()
            if self.live is not None:
                self.live.flush()
        finally:
            self._lock.release()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@torch.no_grad()
def probe_losses(
    model: nn.Module,
    data: ArrayDataset,
    loss_fn,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    return_logits: bool = False,
    per_token: bool = False,
):
    """Per-example losses of every example of ``data`` at the model's current parameters.

    The model is evaluated as it is (its train/eval mode is left unchanged). In
    train mode, BatchNorm uses the statistics of each physical batch of
    ``batch_size`` rows, as training does, but its running statistics are NOT
    updated (the forward runs on copies of the buffers). Dropout, if any, would
    make the probe random: evaluate such models in eval mode.

    Returns:
        ``(indices, losses, correct)``: int64 (N,) stable ids, float (N,), bool (N,)
        on the CPU; with ``return_logits`` also float (N, C). For sequence models
        (per-token losses (N, T)) each sequence's mean, or with ``per_token`` one
        entry per target token, id ``sequence_id * T + position``, shape (N*T,).
    """
    from torch.func import functional_call

    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    losses, correct, logits = [], [], []
    for _, x, y in data.batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = functional_call(model, {**params, **buffers}, (x,))
        lv, hit = loss_fn(out, y).float(), out.argmax(-1) == y
        if lv.dim() > 1 and not per_token:
            lv, hit = lv.flatten(1).mean(1), hit.flatten(1).float().mean(1) > 0.5
        losses.append(lv.reshape(-1).cpu())
        correct.append(hit.reshape(-1).cpu())
        if return_logits:
            logits.append(out.float().cpu())
    ids = data.index.cpu().numpy()
    if per_token and data.y.dim() > 1:
        t = data.y.shape[1]
        ids = (ids[:, None] * t + np.arange(t)[None, :]).reshape(-1)
    res = (ids, torch.cat(losses).numpy(), torch.cat(correct).numpy())
    if return_logits:
        res = res + (torch.cat(logits).numpy(),)
    return res
