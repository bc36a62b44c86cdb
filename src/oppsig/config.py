"""Run configuration: frozen dataclasses loaded from YAML and validated when built.

A config is a YAML mapping with the sections below; every key is optional and
has a default. Unknown keys, wrong types and invalid values raise
:class:`~oppsig.errors.ConfigError` naming the key (``optim.lr``). Dotted
overrides such as ``optim.lr=0.05`` are applied before validation, their
values parsed as YAML scalars.

Example:
    >>> cfg = load_config(None, ["optim.lr=0.05", "train.steps=10"])
    >>> cfg.optim.lr, cfg.train.steps
    (0.05, 10)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic opposing-signals data set (see :mod:`oppsig.data.synthetic`)."""

    num_classes: int = 10
    magnitude: float = 3.0
    frequency: float = 0.1
    signal: float = 0.05
    pairs: tuple[tuple[str, int, int], ...] = (("bright_top", 0, 1), ("dark_border", 2, 3))

    def validate(self, key: str) -> None:
        check(self.num_classes >= 2, f"{key}.num_classes", "must be >= 2", self.num_classes)
        check(self.magnitude >= 0 and math.isfinite(self.magnitude), f"{key}.magnitude", "must be >= 0", self.magnitude)
        check(0 <= self.frequency <= 1, f"{key}.frequency", "must lie in [0, 1]", self.frequency)
        for p in self.pairs:
            check(len(p) == 3, f"{key}.pairs", "each pair is [feature, class_a, class_b]", p)


@dataclass(frozen=True)
class DataConfig:
    """Which data to train on."""

    name: str = "synthetic"  # synthetic | cifar10 | text
    dir: str | None = None  # else $OPPSIG_DATA, else ~/.cache/oppsig
    n: int | None = 5000  # first n examples (None: all)
    per_class: int | None = None  # n per class, drawn with the seed
    standardize: bool = True
    test_n: int | None = None  # also evaluate on the first test_n test examples (0/None: no test set)
    path: str | None = None  # text: the text file
    block_size: int = 64  # text: characters per example
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self, key: str) -> None:
        check(self.name in ("synthetic", "cifar10", "text"), f"{key}.name", "must be one of synthetic, cifar10, text", self.name)
        check(self.n is None or self.n > 0, f"{key}.n", "must be a positive number of examples", self.n)
        check(self.per_class is None or self.per_class > 0, f"{key}.per_class", "must be > 0", self.per_class)
        check(self.test_n is None or self.test_n >= 0, f"{key}.test_n", "must be >= 0", self.test_n)
        check(self.block_size > 0, f"{key}.block_size", "must be > 0", self.block_size)
        self.synthetic.validate(f"{key}.synthetic")


@dataclass(frozen=True)
class ModelConfig:
    """Which network (see :func:`oppsig.models.build_model`); unused fields are ignored by other models."""

    name: str = "mlp"  # mlp | cnn | vgg11 | resnet18 | gpt
    widths: tuple[int, ...] = (200, 200)  # mlp hidden widths
    activation: str = "tanh"  # tanh | relu | gelu
    batchnorm: bool = False  # vgg11 / resnet18 / cnn
    channels: tuple[int, ...] = (32, 64)  # cnn
    width: int = 64  # resnet18 base width
    n_layer: int = 2  # gpt
    n_head: int = 4
    n_embd: int = 128
    bias: bool = True

    def validate(self, key: str) -> None:
        check(all(w > 0 for w in self.widths), f"{key}.widths", "must be positive", self.widths)
        check(all(c > 0 for c in self.channels), f"{key}.channels", "must be positive", self.channels)
        check(self.width > 0, f"{key}.width", "must be > 0", self.width)
        check(self.n_layer > 0 and self.n_head > 0 and self.n_embd > 0, f"{key}.n_layer/n_head/n_embd", "must be > 0", None)
        check(self.n_embd % self.n_head == 0, f"{key}.n_embd", f"must be divisible by n_head={self.n_head}", self.n_embd)


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser; ``gd`` is full-batch gradient descent over the whole training set."""

    name: str = "gd"  # gd | sgd | adam | adamw | splitsgd | sam | signsgd
    lr: float = 0.05
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    split_threshold: float = 3.0  # splitsgd: |g| > threshold * rms takes the normalised step (inf: plain SGD)
    split_lr: float | None = None  # splitsgd: lr of the normalised side (None: lr)
    split_rule: str = "rms"  # splitsgd: rms | tensor
    rho: float = 0.05  # sam: radius of the ascent step
    sam_adaptive: bool = False  # sam: scale the ascent per coordinate by |w|

    def validate(self, key: str) -> None:
        names = ("gd", "sgd", "adam", "adamw", "splitsgd", "sam", "signsgd")
        check(self.name in names, f"{key}.name", f"must be one of {', '.join(names)}", self.name)
        check(self.split_threshold >= 0, f"{key}.split_threshold", "must be >= 0 (inf: plain SGD)", self.split_threshold)
        check(self.split_lr is None or (math.isfinite(self.split_lr) and self.split_lr > 0), f"{key}.split_lr",
               "must be > 0 or null", self.split_lr)
        check(self.split_rule in ("rms", "tensor"), f"{key}.split_rule", "must be rms or tensor", self.split_rule)
        check(math.isfinite(self.rho) and self.rho >= 0, f"{key}.rho", "must be >= 0", self.rho)
        check(math.isfinite(self.lr) and self.lr > 0, f"{key}.lr", "must be a positive finite number", self.lr)
        check(0 <= self.momentum < 1, f"{key}.momentum", "must lie in [0, 1)", self.momentum)
        check(0 <= self.dampening <= 1, f"{key}.dampening", "must lie in [0, 1]", self.dampening)
        check(not self.nesterov or (self.momentum > 0 and self.dampening == 0), f"{key}.nesterov",
               "needs momentum > 0 and dampening 0", self.nesterov)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}.betas", "must be two numbers in [0, 1)", self.betas)
        check(self.eps > 0, f"{key}.eps", "must be > 0", self.eps)
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0", self.weight_decay)
        check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0", self.warmup_steps)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    steps: int = 500
    loss: str = "ce"  # ce | mse
    batch_size: int = 128  # mini-batch size of sgd/adam (gd uses every example)
    physical_batch_size: int = 5000  # rows per forward/backward; gd accumulates over them
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: bool = True  # also keep checkpoints/step_NNNNNN.pt (to branch from before a spike)
    loss_goal: float | None = None  # stop once the training loss is below
    acc_goal: float | None = None  # stop once the training accuracy is at least
    eval_every: int = 0  # test-set evaluation interval (0: only at the end)

    def validate(self, key: str) -> None:
        check(self.steps > 0, f"{key}.steps", "must be > 0", self.steps)
        check(self.loss in ("ce", "mse"), f"{key}.loss", "must be ce or mse", self.loss)
        check(self.batch_size > 0, f"{key}.batch_size", "must be > 0", self.batch_size)
        check(self.physical_batch_size > 0, f"{key}.physical_batch_size", "must be > 0", self.physical_batch_size)
        check(self.checkpoint_every >= 0, f"{key}.checkpoint_every", "must be >= 0", self.checkpoint_every)
        check(self.eval_every >= 0, f"{key}.eval_every", "must be >= 0", self.eval_every)
        check(self.acc_goal is None or 0 < self.acc_goal <= 1, f"{key}.acc_goal", "must lie in (0, 1]", self.acc_goal)


@dataclass(frozen=True)
class RecordConfig:
    """The per-example record (see :mod:`oppsig.store`)."""

    enabled: bool = True
    every: int = 1  # record every k steps
    dtype: str = "float32"  # float32 | float16
    probe_n: int | None = None  # sgd/adam: probe on a seeded sample of this size (None: every training example)
    logits_every: int = 0  # also store logits every k steps (0: never)
    per_token: bool = False  # text: every target token of the probe sequences is one recorded example
    chunk_steps: int = 32  # rows per chunk and per flush
    # dense: loss[step, example] (full batch: the training forward; sgd/adam: a probe forward every `every` steps)
    # batch: sgd/adam: each example's loss from the training forward of its own mini-batch, at every step,
    #        kept sparse (store.zarr/batch, run.batches): no extra forward; both: the two records
    mode: str = "dense"

    def validate(self, key: str) -> None:
        check(self.every > 0, f"{key}.every", "must be > 0", self.every)
        check(self.dtype in ("float32", "float16"), f"{key}.dtype", "must be float32 or float16", self.dtype)
        check(self.probe_n is None or self.probe_n > 0, f"{key}.probe_n", "must be > 0", self.probe_n)
        check(self.logits_every >= 0, f"{key}.logits_every", "must be >= 0", self.logits_every)
        check(self.chunk_steps > 0, f"{key}.chunk_steps", "must be > 0", self.chunk_steps)
        check(self.mode in ("dense", "batch", "both"), f"{key}.mode", "must be dense, batch or both", self.mode)


@dataclass(frozen=True)
class CurvatureConfig:
    """Sharpness tracking during training (see :mod:`oppsig.curvature`)."""

    every: int = 0  # 0: off
    top_k: int = 1
    tol: float = 1e-3  # relative tolerance of the eigensolver (see criterion)
    criterion: str = "eigenvalue"  # eigenvalue: tol bounds each eigenvalue's error; residual: ||Hv - lv|| / |l|
    presample: float = 0.1  # cold solves start from the eigenvectors of this fraction of the n examples (0: random)
    cold_every: int = 10  # every k-th measurement starts cold, to catch a new top eigenvector (0: only the first)
    max_iter: int = 40  # Hessian-vector products per cold solve at most
    hvp: str = "auto"  # auto | rev_rev | fwd_rev
    layerwise: bool = False
    preconditioned: bool = False  # adam: also P^-1/2 H P^-1/2
    projection: bool = True  # each step's update projected on the top eigenvector
    physical_batch_size: int | None = None  # default: train.physical_batch_size
    n: int | None = None  # use the first n training examples (None: all)

    def validate(self, key: str) -> None:
        check(self.every >= 0, f"{key}.every", "must be >= 0", self.every)
        check(self.top_k > 0, f"{key}.top_k", "must be > 0", self.top_k)
        check(self.tol > 0, f"{key}.tol", "must be > 0", self.tol)
        check(self.criterion in ("eigenvalue", "residual"), f"{key}.criterion", "must be eigenvalue or residual",
               self.criterion)
        check(0 <= self.presample < 1, f"{key}.presample", "must lie in [0, 1)", self.presample)
        check(self.cold_every >= 0, f"{key}.cold_every", "must be >= 0", self.cold_every)
        check(self.max_iter > 0, f"{key}.max_iter", "must be > 0", self.max_iter)
        check(self.hvp in ("auto", "rev_rev", "fwd_rev"), f"{key}.hvp", "must be auto, rev_rev or fwd_rev", self.hvp)
        check(self.n is None or self.n > 0, f"{key}.n", "must be > 0", self.n)


@dataclass(frozen=True)
class LiveConfig:
    """Live spike attribution while training (see :mod:`oppsig.signals.live`); actions are off by default."""

    enabled: bool = False
    groups: str | None = None  # signals.json of an earlier `oppsig detect` (this or another run); None: online groups
    window: int = 31  # previous steps of the detector's baseline (median + trend)
    z: float = 4.0  # rise over the baseline in robust standard deviations
    min_rise: float = 0.2  # and at least this relative rise (0.2: 20 %)
    gap: int = 5  # quiet steps after a spike ends
    context: int = 12  # steps back searched for the spike's onset
    history: int = 24  # per-example loss rows kept (> context)
    max_share_examples: int = 200  # largest online group / list of examples carrying the rise
    tensorboard: bool = False  # also write events to <run>/tb
    skip_update: bool = False  # action: undo the update of a spiking step
    rollback: bool = False  # action: go back to the last checkpoint at or before the onset, skipping the batches since
    checkpoint_every: int = 100  # callbacks: keep an in-memory rollback point every k steps
    lr_factor: float = 1.0  # action: multiply the lr by this for lr_steps steps after a spike
    lr_steps: int = 0
    downweight_group: int | None = None  # action: weight this group of `groups` by `downweight` once it spikes
    downweight: float = 1.0

    def validate(self, key: str) -> None:
        check(self.window >= 3, f"{key}.window", "must be >= 3", self.window)
        check(self.z > 0, f"{key}.z", "must be > 0", self.z)
        check(self.min_rise >= 0, f"{key}.min_rise", "must be >= 0", self.min_rise)
        check(self.gap >= 0, f"{key}.gap", "must be >= 0", self.gap)
        check(self.context >= 1, f"{key}.context", "must be >= 1", self.context)
        check(self.history > self.context, f"{key}.history", f"must exceed live.context ({self.context})", self.history)
        check(self.max_share_examples >= 1, f"{key}.max_share_examples", "must be >= 1", self.max_share_examples)
        check(self.checkpoint_every >= 1, f"{key}.checkpoint_every", "must be >= 1", self.checkpoint_every)
        check(0 < self.lr_factor <= 1, f"{key}.lr_factor", "must lie in (0, 1]", self.lr_factor)
        check(self.lr_steps >= 0, f"{key}.lr_steps", "must be >= 0", self.lr_steps)
        check(0 <= self.downweight <= 1, f"{key}.downweight", "must lie in [0, 1]", self.downweight)
        check(self.downweight_group is None or self.groups is not None, f"{key}.downweight_group",
               "needs live.groups (the signals.json that names the group)", self.downweight_group)


@dataclass(frozen=True)
class Config:
    """A whole run."""

    name: str = "run"
    out_dir: str = "runs"  # the run directory is <out_dir>/<name>
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    dtype: str = "float32"  # float32 | float64
    threads: int | None = None  # torch CPU threads (None: torch's default)
    tf32: bool = False  # CUDA: TF32 matmuls in training (never in curvature measurements)
    bf16: bool = False  # CUDA: bfloat16 autocast in the training forward (never in curvature measurements)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    live: LiveConfig = field(default_factory=LiveConfig)

    def validate(self, key: str = "") -> None:
        check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
               "must be a non-empty name without '/'", self.name)
        check(self.dtype in ("float32", "float64"), "dtype", "must be float32 or float64", self.dtype)
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps",
               "device", "must be cpu, cuda, cuda:N, mps or auto", self.device)
        check(self.threads is None or self.threads > 0, "threads", "must be > 0", self.threads)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.validate(f.name)

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: list[str] | dict[str, Any]) -> "Config":
        """A copy with dotted overrides applied and validated."""
        d = self.to_dict()
        _apply_overrides(d, overrides)
        return from_dict(d)


# ----------------------------------------------------------------------------- helpers


def check(ok: bool, key: str, what: str, value: Any) -> None:
    """Raise :class:`ConfigError` ``config key '<key>' <what> (got <value>)`` unless ``ok``: every config's validator."""
    if not ok:
        raise ConfigError(f"config key '{key}' {what} (got {value!r})")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)} (got {value!r})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list (got {value!r})")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries (got {value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping (got {value!r})")
        return from_dict(value, tp, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string (got {value!r})")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def from_dict(d: dict, cls: type = Config, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a plain mapping, checking keys, types and values."""
    if not isinstance(d, dict):
        raise ConfigError(f"config{' key ' + repr(prefix) if prefix else ''} must be a mapping (got {type(d).__name__})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean '{(prefix + '.' if prefix else '') + close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[k] = _coerce(v, hints[k], key)
    obj = cls(**kwargs)
    if cls is Config:
        obj.validate()
    return obj


def _apply_overrides(d: dict, overrides: list[str] | dict[str, Any]) -> None:
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        parts = key.split(".")
        node = d
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override '{key}'")
            node = node[p]
        node[parts[-1]] = value  # an unknown last key is reported, with a suggestion, by from_dict


def _split_override(o: str) -> tuple[str, Any]:
    s = o[2:] if o.startswith("--") else o
    if "=" not in s:
        raise ConfigError(f"override {o!r} must look like key.sub=value (e.g. optim.lr=0.05)")
    k, v = s.split("=", 1)
    try:
        value = yaml.safe_load(v) if v != "" else None
    except yaml.YAMLError:
        value = v
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        value = float(value)
    return k.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides and validate.

    Raises:
        ConfigError: unknown keys, wrong types, invalid values, unreadable YAML.
    """
    d: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8 "
                              "(e.g. iconv -t utf-8)") from None
        except OSError as e:
            raise ConfigError(f"cannot read the config file {p}: {e.strerror or e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level (got {type(loaded).__name__})")
        d = loaded
    base = Config().to_dict()
    _deep_update(base, d)
    if overrides:
        _apply_overrides(base, overrides)
    return from_dict(base)


def _deep_update(base: dict, new: dict, prefix: str = "") -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v, f"{prefix}{k}.")
        else:
            base[k] = v
