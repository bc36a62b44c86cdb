"""The sections of a run's config: data, model, optimiser, training, record and curvature settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .parse import check


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
    augment: str = "none"  # none | crop_flip: each training mini-batch's images (data.augment; the probe stays clean)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self, key: str) -> None:
        check(self.name in ("synthetic", "cifar10", "text"), f"{key}.name", "must be one of synthetic, cifar10, text",
              self.name)
        check(self.n is None or self.n > 0, f"{key}.n", "must be a positive number of examples", self.n)
        check(self.per_class is None or self.per_class > 0, f"{key}.per_class", "must be > 0", self.per_class)
        check(self.test_n is None or self.test_n >= 0, f"{key}.test_n", "must be >= 0", self.test_n)
        check(self.block_size > 0, f"{key}.block_size", "must be > 0", self.block_size)
        check(self.augment in ("none", "crop_flip"), f"{key}.augment", "must be none or crop_flip", self.augment)
        check(self.augment == "none" or self.name != "text", f"{key}.augment",
              "crops and flips images; data.name=text holds token sequences: set data.augment=none", self.augment)
        self.synthetic.validate(f"{key}.synthetic")


@dataclass(frozen=True)
class ModelConfig:
    """Which network (see :func:`oppsig.models.build_model`); unused fields are ignored by other models."""

    name: str = "mlp"  # mlp | cnn | vgg11 | resnet18 | vit | gpt
    widths: tuple[int, ...] = (200, 200)  # mlp hidden widths
    activation: str = "tanh"  # tanh | relu | gelu
    batchnorm: bool = False  # vgg11 / resnet18 / cnn
    channels: tuple[int, ...] = (32, 64)  # cnn, at width 64 (scaled by width / 64)
    width: int = 64  # every image network: cnn (channels x width/64), vgg11 / resnet18 first conv, vit embedding dim
    n_layer: int = 2  # gpt, vit
    n_head: int = 4  # gpt, vit
    n_embd: int = 128  # gpt (vit: width)
    bias: bool = True

    def validate(self, key: str) -> None:
        check(all(w > 0 for w in self.widths), f"{key}.widths", "must be positive", self.widths)
        check(all(c > 0 for c in self.channels), f"{key}.channels", "must be positive", self.channels)
        check(self.width > 0, f"{key}.width", "must be > 0", self.width)
        check(self.n_layer > 0 and self.n_head > 0 and self.n_embd > 0, f"{key}.n_layer/n_head/n_embd", "must be > 0",
              None)
        check(self.n_embd % self.n_head == 0, f"{key}.n_embd", f"must be divisible by n_head={self.n_head}",
              self.n_embd)
        check(self.name != "vit" or self.width % self.n_head == 0, f"{key}.width",
              f"must be divisible by n_head={self.n_head} for vit", self.width)


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
        check(self.split_threshold >= 0, f"{key}.split_threshold", "must be >= 0 (inf: plain SGD)",
              self.split_threshold)
        check(self.split_lr is None or (math.isfinite(self.split_lr) and self.split_lr > 0), f"{key}.split_lr",
               "must be > 0 or null", self.split_lr)
        check(self.split_rule in ("rms", "tensor"), f"{key}.split_rule", "must be rms or tensor", self.split_rule)
        check(math.isfinite(self.rho) and self.rho >= 0, f"{key}.rho", "must be >= 0", self.rho)
        check(math.isfinite(self.lr) and self.lr > 0, f"{key}.lr", "must be a positive finite number", self.lr)
        check(0 <= self.momentum < 1, f"{key}.momentum", "must lie in [0, 1)", self.momentum)
        check(0 <= self.dampening <= 1, f"{key}.dampening", "must lie in [0, 1]", self.dampening)
        check(not self.nesterov or (self.momentum > 0 and self.dampening == 0), f"{key}.nesterov",
               "needs momentum > 0 and dampening 0", self.nesterov)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{key}.betas",
              "must be two numbers in [0, 1)", self.betas)
        check(self.eps > 0, f"{key}.eps", "must be > 0", self.eps)
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0", self.weight_decay)
        check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0", self.warmup_steps)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    steps: int = 500
    loss: str = "ce"  # ce | mse
    batch_size: int = 128  # mini-batch size of sgd/adam (gd uses every example)
    drop_last: bool = False  # leave out each epoch's short last batch (its n % batch_size examples)
    physical_batch_size: int = 5000  # rows per forward/backward; gd accumulates over them
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: bool = True  # also keep checkpoints/step_NNNNNN.pt (to branch from before a spike)
    loss_goal: float | None = None  # stop once the training loss is below
    acc_goal: float | None = None  # stop once the training accuracy is at least
    eval_every: int = 0  # test-set evaluation interval (0: only at the end)
    autocast: str = "none"  # none | bf16: the training forward in bfloat16 autocast (CPU, CUDA); losses in float32

    def validate(self, key: str) -> None:
        check(self.steps > 0, f"{key}.steps", "must be > 0", self.steps)
        check(self.loss in ("ce", "mse"), f"{key}.loss", "must be ce or mse", self.loss)
        check(self.batch_size > 0, f"{key}.batch_size", "must be > 0", self.batch_size)
        check(self.physical_batch_size > 0, f"{key}.physical_batch_size", "must be > 0", self.physical_batch_size)
        check(self.checkpoint_every >= 0, f"{key}.checkpoint_every", "must be >= 0", self.checkpoint_every)
        check(self.eval_every >= 0, f"{key}.eval_every", "must be >= 0", self.eval_every)
        check(self.acc_goal is None or 0 < self.acc_goal <= 1, f"{key}.acc_goal", "must lie in (0, 1]", self.acc_goal)
        check(self.autocast in ("none", "bf16"), f"{key}.autocast", "must be none or bf16", self.autocast)


@dataclass(frozen=True)
class RecordConfig:
    """The per-example record (see :mod:`oppsig.store`)."""

    enabled: bool = True
    every: int | None = None  # record every k steps (None: full batch every step; mini-batch from the budget)
    dtype: str = "float32"  # float32 | float16
    probe_n: int | None = None  # mini-batch: probe a seeded sample of this size (None: from the budget)
    budget: float = 0.10  # mini-batch: the probe's cost at most, a share of training time (store.probe_plan)
    probe_outliers: float = 0.5  # mini-batch: share of the probe given to the largest inputs (store.probe_plan)
    logits_every: int = 0  # also store logits every k steps (0: never)
    per_token: bool = False  # text: every target token of the probe sequences is one recorded example
    chunk_steps: int = 32  # rows per chunk and per flush
    # dense: loss[step, example] (full batch: the training forward; sgd/adam: a probe forward every `every` steps)
    # batch: sgd/adam: each example's loss from the training forward of its own mini-batch, at every step,
    #        kept sparse (store.zarr/batch, run.batches): no extra forward; both: the two records
    # auto: full batch dense, mini-batch both (a probe within the budget, and every example in its batch)
    mode: str = "auto"

    def validate(self, key: str) -> None:
        check(self.every is None or self.every > 0, f"{key}.every", "must be > 0", self.every)
        check(0 < self.budget <= 1, f"{key}.budget", "must lie in (0, 1]", self.budget)
        check(self.dtype in ("float32", "float16"), f"{key}.dtype", "must be float32 or float16", self.dtype)
        check(self.probe_n is None or self.probe_n > 0, f"{key}.probe_n", "must be > 0", self.probe_n)
        check(0 <= self.probe_outliers <= 1, f"{key}.probe_outliers", "must lie in [0, 1]", self.probe_outliers)
        check(self.logits_every >= 0, f"{key}.logits_every", "must be >= 0", self.logits_every)
        check(self.chunk_steps > 0, f"{key}.chunk_steps", "must be > 0", self.chunk_steps)
        check(self.mode in ("auto", "dense", "batch", "both"), f"{key}.mode", "must be auto, dense, batch or both",
              self.mode)


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
    batch_every: int = 0  # mini-batch runs: the batch sharpness and mean top batch-Hessian eigenvalue (0: off)
    batch_count: int = 8  # sampled batches (the run's batch size) per such measurement
    schedule: str = "fixed"  # fixed: every `every` steps; adaptive: see oppsig.curvature.schedule
    min_every: int = 5  # adaptive: the grid of measured steps and the interval near the threshold
    max_every: int = 0  # adaptive: the longest interval (0: 8 x every)
    margin: float = 0.1  # adaptive: the band around the threshold, as a fraction of it, measured every min_every

    def validate(self, key: str) -> None:
        check(self.every >= 0, f"{key}.every", "must be >= 0", self.every)
        check(self.batch_every >= 0, f"{key}.batch_every", "must be >= 0", self.batch_every)
        check(self.batch_count >= 1, f"{key}.batch_count", "must be >= 1", self.batch_count)
        check(self.top_k > 0, f"{key}.top_k", "must be > 0", self.top_k)
        check(self.tol > 0, f"{key}.tol", "must be > 0", self.tol)
        check(self.criterion in ("eigenvalue", "residual"), f"{key}.criterion", "must be eigenvalue or residual",
               self.criterion)
        check(0 <= self.presample < 1, f"{key}.presample", "must lie in [0, 1)", self.presample)
        check(self.cold_every >= 0, f"{key}.cold_every", "must be >= 0", self.cold_every)
        check(self.max_iter > 0, f"{key}.max_iter", "must be > 0", self.max_iter)
        check(self.hvp in ("auto", "rev_rev", "fwd_rev"), f"{key}.hvp", "must be auto, rev_rev or fwd_rev", self.hvp)
        check(self.n is None or self.n > 0, f"{key}.n", "must be > 0", self.n)
        check(self.schedule in ("fixed", "adaptive"), f"{key}.schedule", "must be fixed or adaptive", self.schedule)
        check(self.min_every >= 1, f"{key}.min_every", "must be >= 1", self.min_every)
        check(self.max_every == 0 or self.max_every >= self.min_every, f"{key}.max_every",
              f"must be 0 (8 x every) or >= min_every ({self.min_every})", self.max_every)
        check(self.schedule != "adaptive" or self.every == 0 or (self.max_every or 8 * self.every) >= self.min_every,
              f"{key}.every", f"must be >= min_every / 8 ({self.min_every} / 8) under the adaptive schedule, or set "
              f"{key}.max_every", self.every)
        check(0 <= self.margin < 1, f"{key}.margin", "must lie in [0, 1)", self.margin)
