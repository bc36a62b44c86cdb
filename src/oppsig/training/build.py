"""What a training run is made of, built once from a config: :func:`build_run` -> :class:`RunParts`.

The device and distributed context, the data (with this rank's share and the probe set), the model,
loss, optimiser and learning-rate schedule, the hooks, and what the record holds. Every part is known
when :class:`RunParts` is made; the loop (:mod:`oppsig.training.loop`) only reads them.

Example:
    >>> from oppsig.config import load_config
    >>> parts = build_run(load_config(None, ["data.n=64", "model.widths=[8]"]), TrainOptions(run_dir=None))
    >>> parts.device.type, parts.full_batch, parts.run_dir is None, len(parts.record_ids)
    ('cpu', True, True, 64)
    >>> parts.lr(0) == parts.cfg.optim.lr
    True
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import build_datasets
from ..data.base import ArrayDataset
from ..errors import ConfigError, StoreError
from ..losses import LossFn, get_loss
from ..models import build_from_config
from ..optim import build_optimizer, is_full_batch, lr_at
from ..store.probe_plan import ProbePlan, plan_probe
from ..store.format import CONFIG

PROBE_SEED_OFFSET = 7
"""A mini-batch run's probe subset is drawn with seed ``cfg.seed + PROBE_SEED_OFFSET``: a stream apart from the
one the data order and the model's initialisation use (``cfg.seed``)."""


def resolve_device(name: str) -> torch.device:
    """The torch device of the config's ``device``.

    Raises:
        ConfigError: when the device is not available in this torch build or machine.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA device; "
                              "use --device=cpu (or --device=auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here; "
                              "use --device=cuda:0 (or --device=auto)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r}: MPS is not available here; use --device=cpu (or --device=auto)")
    return dev


@dataclass(frozen=True, eq=False)
class TrainOptions:
    """How to run a config: everything :func:`~oppsig.training.train` takes besides the config.

    Attributes:
        run_dir: where to record (default ``"auto"``: ``<out_dir>/<name>``; None: nothing is written).
        hooks: extra hooks (see :mod:`oppsig.training.hooks`).
        resume: continue the run in ``run_dir`` from its newest intact checkpoint.
        overwrite: replace an existing run in ``run_dir`` (only files oppsig wrote; see
            :func:`~oppsig.store.rundir.prepare_run_dir`).
        progress: show a progress bar.
        data: (train, test) data sets to use instead of building them from ``cfg.data``.
        branch_from: a checkpoint dict (see :func:`~oppsig.training.load_checkpoint`) to start from: its
            model, step and RNG state (and optimiser state when the optimiser is the same).
        example_weights: float (N,) weight of each training example in the loss (default all 1).
        resume_overrides: with ``resume``, the dotted keys set for this resume (``oppsig train --resume RUN
            --optim.lr=0.1``): their values in ``cfg`` are used even where they equal the first config's.
    """

    run_dir: str | Path | None = "auto"
    hooks: Sequence[Any] = ()
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    data: tuple[ArrayDataset, ArrayDataset | None] | None = None
    branch_from: dict | None = None
    example_weights: torch.Tensor | None = None
    resume_overrides: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class RunParts:
    """Everything one run is made of (see :func:`build_run`).

    Attributes:
        cfg, options: the run's config and :class:`TrainOptions`.
        run_dir: where the run is recorded (None: nothing is written).
        dist, device: the distributed context (one process without DDP) and this rank's device.
        writes: this process writes the run directory (it has one, and is rank 0).
        train_set, test_set: the data on ``device`` (``test_set`` may be None).
        model, forward_model: the network, and what the training forward calls (DDP's wrapper, or the model).
        optimizer, lr, loss_fn: the optimiser, the schedule ``lr(step)``, the per-example loss.
        hooks: the curvature hook (when ``curvature.every > 0``) first, then the options' hooks.
        full_batch: every step sees every example (gd, or a mini-batch that covers the data).
        full, local: ``(x, y, weights)`` of all examples and of this rank's share (the same without DDP);
            ``weights`` is None or the (N,) tensor that hooks may change in place.
        sync: ``sync(is_last)`` -> DDP's gradient-sync context of a physical batch (None without DDP).
        probe_set, probe_local: the examples the dense record probes (all of them, or a sample), and this
            rank's share.
        probe_outliers: the ids of the probe's outlier stratum (empty: none; see :func:`_probe_set`).
        per_token: one recorded example per target token (text with ``record.per_token``).
        probe_record: the dense record comes from a probe forward (else from the training forward).
        record_ids: the ids of the record's columns.
        dense_record, batch_record: which records are on (``record.mode``).
    """

    cfg: Config
    options: TrainOptions
    run_dir: Path | None
    dist: Any
    device: torch.device
    writes: bool
    train_set: ArrayDataset
    test_set: ArrayDataset | None
    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    lr: Callable[[int], float]
    loss_fn: LossFn
    hooks: tuple
    full_batch: bool
    full: tuple
    local: tuple
    sync: Callable[[bool], Any] | None
    probe_set: ArrayDataset
    probe_outliers: np.ndarray
    probe_local: ArrayDataset
    per_token: bool
    probe_record: bool
    record_ids: np.ndarray
    dense_record: bool
    batch_record: bool
    probe_plan: ProbePlan | None = None  # a mini-batch run's probe, as chosen from record.budget


def _run_dir(cfg: Config, rd) -> Path | None:
    return Path(cfg.out_dir) / cfg.name if rd == "auto" else (Path(rd) if rd else None)


def _data(cfg: Config, options: TrainOptions, device, dtype) -> tuple[ArrayDataset, ArrayDataset | None]:
    train_set, test_set = options.data if options.data is not None else build_datasets(cfg.data, seed=cfg.seed)
    if len(train_set) == 0:
        raise StoreError("the training set is empty; check data.n / data.per_class")
    return train_set.to(device, dtype), (test_set.to(device, dtype) if test_set is not None else None)


def forward_share(model: nn.Module, loss_fn, train_set: ArrayDataset, cfg: Config, dist=None,
                  rounds: int = 9, budget_s: float = 3.0) -> float:
    """What a probe forward costs per example over a training step per example, timed on a copy of ``model`` (the
    run's model, its buffers and optimiser are left as they are) as the run does both: the step runs forward and
    backward and steps a fresh optimiser of the run's kind, both in the run's precision (bfloat16 autocast under
    ``train.autocast=bf16``). The batch's augmentation is left out: timed on a few steps it made plans that
    overran the budget (docs/findings.md, augmentation and bf16), so under ``data.augment`` the plan errs below
    it.

    Timed in ``rounds`` (at least 3, fewer once ``budget_s`` seconds are spent) after one untimed call of each:
    three training steps in a row (their median), then a probe, as the run alternates them; the share is the
    ratio of the fastest probe to the fastest step (:func:`quiet_ratio`). Rounded up to the grid of
    :func:`~oppsig.store.probe_plan.quantize_share`; averaged over ranks so that every rank plans alike."""
    import time

    from ..store.probe_plan import quantize_share

    probe, train_step, p, b = share_calls(model, loss_fn, train_set, cfg)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    start = time.perf_counter()
    probe(), train_step()  # the first calls carry the allocations
    probe_s, step_s = [], []
    while len(probe_s) < max(rounds, 3) and (len(probe_s) < 3 or time.perf_counter() - start < budget_s):
        step_s.append(float(np.median([timed(train_step) for _ in range(3)])))  # steps in a row, as the run
        probe_s.append(timed(probe))  # after a step, as the run
    r = quiet_ratio(probe_s, step_s) * b / p
    if dist is not None and dist.enabled:
        r = float(dist.all_reduce_(torch.tensor([r], device=train_set.x.device)).item()) / dist.world
    return quantize_share(r)


def share_calls(model: nn.Module, loss_fn, train_set: ArrayDataset, cfg: Config):
    """What :func:`forward_share` times, on a copy of ``model`` with a fresh optimiser of the run's kind:
    ``(probe, train_step, p, b)``, a probe forward over ``p`` examples and a training step on a batch of ``b``, both
    in the run's precision."""
    import copy

    from ..store.probe_plan import MIN_EXAMPLES
    from ..store.recorder import probe_losses
    from .step import optimizer_step, precision

    m = copy.deepcopy(model)
    opt = build_optimizer(cfg.optim, [q for q in m.parameters() if q.requires_grad])
    b = min(cfg.train.batch_size, len(train_set))
    p = min(len(train_set), MIN_EXAMPLES, cfg.train.physical_batch_size)
    xb, yb = train_set.x[:b], train_set.y[:b]
    probe_set = train_set.take(np.arange(p))

    def backward():
        with precision(cfg, xb.device):
            loss = loss_fn(m(xb), yb).mean()
        loss.float().backward()

    def train_step():
        m.zero_grad(set_to_none=True)
        backward()
        optimizer_step(opt, backward)

    def probe():
        with precision(cfg, xb.device):
            probe_losses(m, probe_set, loss_fn, cfg.train.physical_batch_size)

    return probe, train_step, p, b


def quiet_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """``min(a) / min(b)``: the ratio of two costs from timings taken in turn. Load from other processes only
    lengthens a timing, so the fastest of several is the nearest to the cost on a quiet machine, and timing the two
    in turn gives each its chance of a quiet moment. (A median of the rounds' ratios moved more under load: of 25
    plans of fc-tanh SGD beside two busy processes on two cores, 13 against 19 landed on the same grid step.)

    Example:
        >>> quiet_ratio([5.0, 1.1, 1.0], [2.5, 2.0, 2.1])  # the first round ran under a burst of load
        0.5
    """
    return float(min(a)) / float(min(b))


def resolve_record(cfg: Config, num_examples: int, full_batch: bool,
                   share: float | None = None) -> tuple[Config, ProbePlan | None]:
    """``cfg`` with the record's automatic settings made concrete, and the probe plan of a mini-batch run.

    Full batch: ``record.every`` 1 and ``record.mode`` dense when left automatic. Mini-batch: ``mode`` both
    (text recorded per token: dense) and the probe's ``every`` and ``probe_n`` from ``record.budget``
    (:func:`~oppsig.store.probe_plan.plan_probe`, with the measured forward ``share`` when given; a value the
    config sets is kept). The concrete values are what config.yaml holds, so a resume probes the same examples at
    the same steps.
    """
    rec = cfg.record
    if full_batch:
        return cfg.replace({"record.every": rec.every or 1,
                            "record.mode": "dense" if rec.mode == "auto" else rec.mode}), None
    plan = plan_probe(num_examples, cfg.train.batch_size, cfg.train.steps, rec.budget, every=rec.every,
                      n=rec.probe_n, **({} if share is None else {"forward_share": share}))
    mode = ("dense" if rec.per_token else "both") if rec.mode == "auto" else rec.mode
    return cfg.replace({"record.every": plan.every, "record.probe_n": plan.n, "record.mode": mode}), plan


def _probe_set(cfg: Config, train_set: ArrayDataset, full_batch: bool) -> tuple[ArrayDataset, np.ndarray]:
    """The examples a mini-batch run probes (default all of them), and the ids of its outlier stratum: with
    ``record.probe_n`` < N, the ``record.probe_outliers`` share of them of largest input (real-valued inputs
    only) and a seeded sample of the rest (:func:`~oppsig.store.probe_plan.probe_examples`)."""
    from ..store.probe_plan import input_scores, probe_examples

    n, m = len(train_set), cfg.record.probe_n
    if full_batch or not m or m >= n:
        return train_set, np.zeros(0, dtype=np.int64)
    share = cfg.record.probe_outliers if train_set.x.is_floating_point() else 0.0
    scores = input_scores(train_set.x) if share > 0 else np.zeros(n)
    rows, top = probe_examples(scores, m, share, cfg.seed + PROBE_SEED_OFFSET)
    return train_set.take(rows), train_set.index.cpu().numpy()[top]


def _record_ids(probe_set: ArrayDataset, per_token: bool, tokens: int) -> np.ndarray:
    """The record's column ids: the examples' ids, or one id per target token (``id * T + t``)."""
    ids = probe_set.index.cpu().numpy()
    if per_token:
        ids = (ids[:, None] * tokens + np.arange(tokens)[None, :]).reshape(-1)
    return ids


def _check_curvature(cfg: Config, model: nn.Module) -> None:
    """Refuse curvature settings the measurement cannot meet, before the run directory is touched."""
    c = cfg.curvature
    k = min(c.top_k, sum(q.numel() for q in model.parameters()))
    if k > c.max_iter:
        raise ConfigError(f"curvature.top_k={c.top_k} needs at least {k} Hessian-vector products per solve but "
                          f"curvature.max_iter={c.max_iter}; pass --curvature.max_iter={k} (or more) or a smaller "
                          "--curvature.top_k")


def build_run(cfg: Config, options: TrainOptions | None = None) -> RunParts:
    """Build the parts of a run as ``cfg`` and ``options`` say (seeded: ``torch.manual_seed(cfg.seed)``).

    With ``options.resume``, the run is built with the settings in force at the run's end and the changes
    ``cfg`` asks for (see :mod:`oppsig.training.changes`).

    Raises:
        ConfigError: the device is not available, or a resume changes a setting that cannot change mid-run.
        StoreError: the training set is empty, or ``record.mode`` records mini-batches of a full-batch run.
        DataNotFoundError: the data set is not on disk.
    """
    from ..distributed import context_from_env, device_for

    options = options if options is not None else TrainOptions()
    run_dir = _run_dir(cfg, options.run_dir)
    if options.resume and run_dir is not None and (run_dir / CONFIG).is_file():
        from .changes import resumed_config

        # the settings in force at the run's end, with the asked changes
        cfg = resumed_config(run_dir, cfg, options.resume_overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = context_from_env(cfg.device)
    device = device_for(dist, resolve_device(cfg.device))
    if device.type == "cuda":  # training precision as asked; curvature always runs in full float32
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    train_set, test_set = _data(cfg, options, device, dtype)
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, device, dtype)
    model.train()
    forward_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    full_batch = is_full_batch(cfg.optim) or cfg.train.batch_size >= len(train_set)
    rec = cfg.record
    share = None
    if not full_batch and rec.enabled and rec.mode != "batch" and (rec.every is None or rec.probe_n is None):
        share = forward_share(model, get_loss(cfg.train.loss), train_set, cfg, dist)
    cfg, plan = resolve_record(cfg, len(train_set), full_batch, share)
    hooks = list(options.hooks)
    if cfg.curvature.every > 0:
        _check_curvature(cfg, model)
        from ..curvature.hook import CurvatureHook

        hooks.insert(0, CurvatureHook(cfg.curvature))
    if cfg.curvature.batch_every > 0:
        from ..curvature.batch_sharpness import BatchSharpnessHook

        c = cfg.curvature
        hooks.insert(1 if c.every > 0 else 0, BatchSharpnessHook(c.batch_every, c.batch_count, tol=c.tol,
                                                                 max_iter=c.max_iter, method=c.hvp))
    probe_set, probe_outliers = _probe_set(cfg, train_set, full_batch)
    per_token = cfg.record.per_token and train_set.y.dim() > 1
    rec = cfg.record
    batch_record = rec.enabled and rec.mode in ("batch", "both")  # each mini-batch's losses, no extra forward
    if batch_record and full_batch:
        raise StoreError(f"record.mode={rec.mode} records each mini-batch's losses, but this run trains on "
                         f"the full batch ({cfg.optim.name}); use record.mode=dense, which records every example "
                         "at every step from the training forward")
    x, y = train_set.x, train_set.y
    w = None if options.example_weights is None else options.example_weights.to(device, x.dtype)
    lo, hi = dist.shard(len(train_set))
    p_lo, p_hi = dist.shard(len(probe_set))
    return RunParts(
        cfg=cfg, options=options, run_dir=run_dir, dist=dist, device=device,
        writes=run_dir is not None and dist.is_main, train_set=train_set, test_set=test_set, model=model,
        forward_model=forward_model, optimizer=optimizer, lr=functools.partial(lr_at, cfg.optim),
        loss_fn=get_loss(cfg.train.loss), hooks=tuple(hooks), full_batch=full_batch, full=(x, y, w),
        local=(x[lo:hi], y[lo:hi], None if w is None else w[lo:hi]) if dist.enabled else (x, y, w),
        sync=(lambda last: nullcontext() if last else forward_model.no_sync()) if dist.enabled else None,
        probe_set=probe_set, probe_outliers=probe_outliers,
        probe_local=probe_set.take(np.arange(p_lo, p_hi)) if dist.enabled else probe_set,
        per_token=per_token, probe_record=not full_batch or per_token,
        record_ids=_record_ids(probe_set, per_token, y.shape[1] if per_token else 0),
        dense_record=rec.enabled and rec.mode in ("dense", "both"), batch_record=batch_record,
        probe_plan=plan if rec.enabled and rec.mode in ("dense", "both") else None,
    )
