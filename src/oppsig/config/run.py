"""A whole run's config (:class:`Config`), built from a YAML file and dotted overrides (:func:`load_config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .analysis import LiveConfig
from .parse import apply_overrides, build, check, check_seed, deep_update, load_yaml, to_plain
from .sections import CurvatureConfig, DataConfig, ModelConfig, OptimConfig, RecordConfig, TrainConfig


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
        check_seed(self.seed, "seed")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.validate(f.name)
        check((self.model.name == "gpt") == (self.data.name == "text"), "model.name",
              "must be gpt for data.name=text (token sequences) and an image model for image data",
              f"{self.model.name} with data.name={self.data.name}")

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict:
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: list[str] | dict[str, Any]) -> "Config":
        """A copy with dotted overrides applied and validated."""
        d = self.to_dict()
        apply_overrides(d, overrides)
        return from_dict(d)


def from_dict(d: dict, cls: type = Config, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a plain mapping, checking keys, types and values (a whole :class:`Config`
    is also validated)."""
    obj = build(d, cls, prefix)
    if cls is Config:
        obj.validate()
    return obj


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides and validate.

    Raises:
        ConfigError: unknown keys, wrong types, invalid values, unreadable YAML.
    """
    d: dict = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(_directory_message(p))
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = load_yaml(p.read_text(encoding="utf-8"), str(p))
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
    deep_update(base, d)
    if overrides:
        apply_overrides(base, overrides)
    return from_dict(base)


def _directory_message(p: Path) -> str:
    """The error for a config path that is a folder: it says so and names the YAML files in it."""
    found = sorted(f.name for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
    if not found:
        return f"config {p} is a directory with no .yaml file in it; pass a YAML config file (see configs/)"
    shown = ", ".join(found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "")
    return f"config {p} is a directory, not a file; pass one of its YAML files, e.g. {p / found[0]} ({shown})"
