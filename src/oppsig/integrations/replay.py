"""Proof by replay in someone else's loop: :class:`BatchReplayer`, the replayer a framework callback hands its
live session, so that each spike's named groups are checked by replay (:class:`~oppsig.live.proof.SpikeProof`)
as under ``oppsig train``.

A callback cannot rerun the framework's training step, so it keeps what it sees: the last
``live.replay_window + 1`` training batches (inputs, targets and example ids, by reference where the framework
put them, on the training device: no copy), with the learning rate of every parameter group and the RNG state
at each step's start. From a kept state it replays an update as

    optimiser.zero_grad(); sum over the batch, less the dropped ids, of loss_fn(model(x), y), over the batch's
    size (``live.replay_drop="mean"``: over the examples left); backward;
    gradient clipping as the framework's settings say; optimiser.step() at the step's recorded learning rates

with the callback's per-example loss (the one its probe uses, cross-entropy by default), the dropout masks of
the step (its RNG state) and on a scratch copy of the model and optimiser. That is the user's step exactly when
the training step is that mean loss; it is an approximation otherwise, and each replayed event says so
(``replay.approximate``, ``replay.replays``): regularisers and auxiliary losses added in ``training_step`` /
``compute_loss``, a loss that weighs examples or tokens otherwise (a causal LM's token mean over the whole
batch), loss scaling, mixed precision and random draws outside the forward are not replayed. Schedules are, as
far as they act through the optimiser's param groups' ``lr``. ``replay.drift`` (the probe's mean loss after the
replay as trained against at the recorded parameters) measures how far off it is. Runs with gradient
accumulation or over several processes get no replayer: an update there is made of batches the callback does
not hold in one place. Memory: one copy of the model and optimiser state, and the kept batches (references)
while they take at most ``max_bytes`` (1 GiB) in all; larger ones (a full-batch run) are kept as ids and
loaded again from the data set when replayed.

:meth:`BatchReplayer.losses` measures examples by id: from the training set the callback reaches (the train
loader's map-style data set, whose items carry their ids), loaded through the loader's own ``collate_fn``; the
map from ids to items is read once, at the first spike. Without such a data set there is no replay (the
spike's probe must measure examples outside the kept batches).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..curvature.thresholds import unwrap
from ..store.ids import IdIndex

APPROXIMATE = ("the mean over each kept batch of the callback's per-example loss, at the step's lr, with the "
               "framework's gradient clipping; not regularisers, other losses, loss scaling or precision")
"""What a callback's replay redoes (an event's ``replay.replays``)."""


_COPIED = ("_parameters", "_buffers", "_modules")
"""The attributes of a module that a scratch copy copies (the rest it shares)."""


class ReplayUnavailable(RuntimeError):
    """A replay the replayer cannot do (a batch not kept, no data set to measure examples): the event says why."""


@dataclass
class _Kept:
    ids: np.ndarray  # (b,) example ids of the batch
    batch: Any  # what loss_of takes: (x, y) or a dict of model inputs; None: load it again by id
    lrs: list[float]
    rng: tuple


class ExampleSource:
    """The training set's examples by id: ``batches(ids)`` yields the collated batches of those examples, in the
    order of ``ids``, stripped of their ids.

    Args:
        dataset: a map-style data set whose items hold their example id at ``item[key]``.
        key: where an item (and a collated batch) holds its id (0 for ``(idx, x, y)``, ``"oppsig_id"``, ...).
        collate_fn: the train loader's ``collate_fn`` (None: torch's default).
        strip: a collated batch -> what the loss function takes (the batch without its ids).
    """

    def __init__(self, dataset, key, collate_fn=None, strip: Callable = lambda b: b, batch_size: int = 512) -> None:
        self.dataset, self.key, self.collate_fn, self.strip = dataset, key, collate_fn, strip
        self.batch_size = batch_size
        self._ids: IdIndex | None = None  # read once, at the first spike

    def positions(self, ids) -> np.ndarray:
        """The data set's positions of example ``ids``.

        Raises:
            ReplayUnavailable: an id is not in the data set.
        """
        if self._ids is None:
            self._ids = IdIndex(dataset_ids(self.dataset, self.key))
        pos, found = self._ids.lookup(ids)
        if not found.all():
            raise ReplayUnavailable("the train loader's data set lacks some recorded example ids")
        return pos

    def batches(self, ids):
        sub = torch.utils.data.Subset(self.dataset, self.positions(ids).tolist())
        for b in torch.utils.data.DataLoader(sub, batch_size=self.batch_size, shuffle=False,
                                             collate_fn=self.collate_fn):
            yield self.strip(b)


def dataset_ids(dataset, key) -> np.ndarray:
    """The example id of each item of a map-style ``dataset`` (read from ``item[key]``; a TensorDataset's or a
    Hugging Face data set's id column is read whole)."""
    if isinstance(dataset, torch.utils.data.TensorDataset) and isinstance(key, int):
        return dataset.tensors[key].detach().cpu().numpy().astype(np.int64).reshape(-1)
    if isinstance(key, str) and key in (getattr(dataset, "column_names", None) or ()):
        return np.asarray(dataset[key], dtype=np.int64).reshape(-1)
    return np.asarray([int(dataset[i][key]) for i in range(len(dataset))], dtype=np.int64)


def dataset_inputs(dataset, index: np.ndarray, key: int = 0) -> np.ndarray | None:
    """The floating-point inputs (N, ...) of a TensorDataset of ``(idx, x, ...)`` in the order of the record's
    ids ``index``, to extend a spike's groups by input direction; None for any other data set, integer inputs
    (token ids) or ids the data set lacks."""
    if not isinstance(dataset, torch.utils.data.TensorDataset) or len(dataset.tensors) < key + 2:
        return None
    x = dataset.tensors[key + 1]
    if not x.is_floating_point():
        return None
    pos, found = IdIndex(dataset_ids(dataset, key)).lookup(index)
    if not found.all():
        return None
    return x.detach().float().cpu().numpy()[pos]


def take(batch, keep: torch.Tensor, b: int):
    """The rows ``keep`` (a bool mask (b,)) of every tensor of ``batch`` (a tensor, tuple, list or dict) whose first
    dimension is the batch's ``b``; anything else as it is."""
    if torch.is_tensor(batch):
        return batch[keep.to(batch.device)] if batch.dim() and batch.shape[0] == b else batch
    if isinstance(batch, dict):
        return {k: take(v, keep, b) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(take(v, keep, b) for v in batch)
    return batch


def _rng_state(device: torch.device) -> tuple:
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


@contextlib.contextmanager
def _rng(device: torch.device, state: tuple | None):
    """The RNG at ``state`` (None: seeded with 0) inside, the run's own RNG untouched outside."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if state is None:
            torch.manual_seed(0)
        else:
            torch.set_rng_state(state[0])
            if state[1] is not None:
                torch.cuda.set_rng_state(state[1], device)
        yield


class BatchReplayer:
    """Replays a framework callback's last updates from the batches it kept (see the module docstring).

    Implements what :class:`~oppsig.live.proof.SpikeProof` needs: :meth:`scratch`, :meth:`run`, :meth:`losses`.

    Args:
        window: batches kept (``live.replay_window + 1``).
        loss_of: ``(model, batch) -> (B,)`` per-example losses of a kept (or looked-up) batch, with grad.
        source: the training set by id (:class:`ExampleSource`; None: :meth:`losses` raises ReplayUnavailable).
        clip: ``(value, "norm" | "value")``: the framework's gradient clipping (None: none).
        guard: a context manager factory entered around each replay and measurement (the callback's own
            forward hooks stay quiet in it).
        keep_out: objects the scratch copy shares rather than copies (the callback, when the model's hooks
            refer to it).
        max_bytes: the most the kept batches' tensors take together; beyond it (and with a ``source``) batches
            are kept as ids and loaded from the data set when replayed.

    Example:
        >>> m = nn.Linear(3, 2); opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> ce = lambda model, b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="none")
        >>> rp = BatchReplayer(4, ce)
        >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> rp.before_update(opt); rp.keep(0, np.arange(8), (x, y))
        >>> sm, so = rp.scratch(m, opt)
        >>> rp.run(sm, so, 0, 1, drop=np.arange(4))     # step 0 again, without examples 0..3
        >>> bool(torch.equal(sm.weight, m.weight))
        False
    """

    def __init__(self, window: int, loss_of: Callable, source: ExampleSource | None = None,
                 clip: tuple[float, str] | None = None, guard: Callable | None = None, keep_out=(),
                 max_bytes: int = 2**30) -> None:
        self.window, self.loss_of, self.source, self.clip = window, loss_of, source, clip
        self.max_bytes = max_bytes
        self.guard = guard or contextlib.nullcontext
        self.keep_out = tuple(keep_out)
        self.kept: dict[int, _Kept] = {}
        self.broken: str | None = None  # why a replay cannot be done (said in each event)
        self._rng_at: tuple | None = None
        self._lrs: list[float] = []
        self._scratch: tuple[nn.Module, torch.optim.Optimizer] | None = None

    # ------------------------------------------------------------------ while training
    def step_start(self, model: nn.Module) -> None:
        """At a step's start (before its forward): its RNG state, so that a replay draws the same dropout."""
        self._rng_at = _rng_state(_device(model))

    def before_update(self, optimizer) -> None:
        """Just before a step's update: the lr of each parameter group it uses (a live lr drop included)."""
        self._lrs = [float(g["lr"]) for g in optimizer.param_groups] if optimizer is not None else []

    def keep(self, step: int, ids, batch) -> None:
        """The batch of ``step`` (after its update): ``ids`` (b,), ``batch`` as ``loss_of`` takes it."""
        ids = ids.detach().cpu().numpy() if torch.is_tensor(ids) else np.asarray(ids)
        if self.source is not None and _nbytes(batch) * self.window > self.max_bytes:
            batch = None
        self.kept[int(step)] = _Kept(ids.astype(np.int64).reshape(-1), batch, self._lrs, self._rng_at)
        for s in [s for s in self.kept if s <= step - self.window]:
            del self.kept[s]

    # ------------------------------------------------------------------ the replayer interface
    def scratch(self, model: nn.Module, optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A copy of ``(model, optimizer)`` to replay on (made once, reused: load a state into it first).

        Only the modules, their parameters and buffers and the optimiser are copied; every other attribute of
        the user's modules (hooks, callables, references to the trainer or the data) is shared with the copy.

        Raises:
            ReplayUnavailable: the model cannot be copied.
        """
        if self._scratch is None:
            memo = {id(o): o for o in self.keep_out}
            for m in model.modules():
                memo.update({id(v): v for k, v in vars(m).items() if k not in _COPIED})
            try:
                with self.guard():
                    self._scratch = copy.deepcopy((model, unwrap(optimizer)), memo)
            except (TypeError, RuntimeError, AttributeError) as e:
                raise ReplayUnavailable(f"the model cannot be copied to replay on ({type(e).__name__}: "
                                        f"{str(e)[:80]})") from e
        return self._scratch

    def run(self, model: nn.Module, optimizer, start: int, stop: int, drop: np.ndarray | None = None,
            how: str = "zero") -> None:
        """The updates of steps ``start .. stop - 1`` on ``model``/``optimizer``, each on its kept batch without the
        examples of ids ``drop``: ``how="zero"`` their loss terms taken out of the batch's sum, still divided by the
        batch's full size; ``"mean"`` the mean loss over the rest.

        Raises:
            ReplayUnavailable: a step's batch is not kept, or the callback could not keep them.
        """
        if self.broken:
            raise ReplayUnavailable(self.broken)
        missing = [s for s in range(start, stop) if s not in self.kept]
        if missing:
            raise ReplayUnavailable(f"the batches of steps {missing[0]}..{missing[-1]} are not kept")
        drop = np.asarray(drop if drop is not None else [], dtype=np.int64)
        with self.guard():
            for step in range(start, stop):
                self._update(model, optimizer, self.kept[step], drop, how)
        optimizer.zero_grad(set_to_none=True)

    def _update(self, model: nn.Module, optimizer, k: _Kept, drop: np.ndarray, how: str) -> None:
        for g, lr in zip(optimizer.param_groups, k.lrs):
            g["lr"] = lr
        keep = ~np.isin(k.ids, drop)
        n = int(keep.sum())
        if n == 0:
            return
        denom = len(k.ids) if how == "zero" else n
        dev = _device(model)
        chunks = [take(k.batch, torch.as_tensor(keep), len(k.ids))] if k.batch is not None else \
            list(self.source.batches(k.ids[keep]))

        def closure():
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            with _rng(dev, k.rng):
                for c in chunks:  # the batch's loss sum over its divisor, chunk by chunk
                    lv = _per_example(self.loss_of(model, _to(c, dev)))
                    loss = lv.mean() if len(chunks) == 1 and len(lv) == denom else lv.sum() / denom
                    loss.backward()
                    total += float(loss)
            if self.clip is not None:
                value, how = self.clip
                params = [p for p in model.parameters() if p.grad is not None]
                if how == "value":
                    torch.nn.utils.clip_grad_value_(params, value)
                else:
                    torch.nn.utils.clip_grad_norm_(params, value)
            return torch.tensor(total)

        optimizer.step(closure)

    @torch.no_grad()
    def losses(self, model: nn.Module, ids) -> np.ndarray:
        """Per-example losses (n,) of examples ``ids`` at ``model``'s parameters, in the order of ``ids`` (the
        model's train/eval mode as it is; dropout drawn from a fixed seed, so that two states compare).

        Raises:
            ReplayUnavailable: no data set to look the examples up in.
        """
        if self.source is None:
            raise ReplayUnavailable("the train loader's data set is not reachable, so examples outside the kept "
                                    "batches cannot be measured")
        dev = _device(model)
        out = []
        with self.guard(), _rng(dev, None):
            for b in self.source.batches(ids):
                out.append(_per_example(self.loss_of(model, _to(b, dev))).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _per_example(lv: torch.Tensor) -> torch.Tensor:
    """(B,) from a loss of shape (B,) or (B, T, ...) (averaged over the rest)."""
    return lv.flatten(1).mean(1) if lv.dim() > 1 else lv.reshape(-1)


def _nbytes(batch) -> int:
    if torch.is_tensor(batch):
        return batch.numel() * batch.element_size()
    if isinstance(batch, dict):
        return sum(_nbytes(v) for v in batch.values())
    if isinstance(batch, (tuple, list)):
        return sum(_nbytes(v) for v in batch)
    return 0


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to(batch, dev: torch.device):
    if torch.is_tensor(batch):
        return batch.to(dev)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, dev) for v in batch)
    return batch


def completer(proof, no_replay: str | None):
    """The live attribution's ``enrich``: the proof by replay (``proof``, None: none), its entry marked as a
    callback's approximate replay, or the reason there is none in the event's message."""
    from ..live.text import format_message

    def enrich(ev) -> None:
        why = no_replay
        try:
            if proof is not None:
                proof(ev)
        except ReplayUnavailable as e:
            why = str(e)
        if ev.replay is not None:
            ev.replay.update(approximate=True, replays=APPROXIMATE)
        elif why:
            ev.replay_note = why
            ev.message = f"{format_message(ev)}; no replay ({why})"

    return enrich
