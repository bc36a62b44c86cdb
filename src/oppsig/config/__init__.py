"""Run configuration: frozen dataclasses loaded from YAML and validated when built.

A config is a YAML mapping with the sections below; every key is optional and
has a default. Unknown keys, wrong types and invalid values raise
:class:`~oppsig.errors.ConfigError` naming the key (``optim.lr``). Dotted
overrides such as ``optim.lr=0.05`` are applied before validation, their
values parsed as YAML scalars.

Modules: ``sections`` (data, model, optimiser, training, record, curvature), ``analysis`` (the opposing-signals
search and live attribution), ``run`` (the whole run's :class:`Config` and :func:`load_config`), ``parse`` (type
checks, conversions and overrides).

Example:
    >>> cfg = load_config(None, ["optim.lr=0.05", "train.steps=10"])
    >>> cfg.optim.lr, cfg.train.steps
    (0.05, 10)
"""

from .analysis import LiveConfig, SignalsConfig
from .parse import check
from .run import Config, from_dict, load_config
from .sections import (CurvatureConfig, DataConfig, ModelConfig, OptimConfig, RecordConfig, SyntheticConfig,
                       TrainConfig)

__all__ = ["Config", "CurvatureConfig", "DataConfig", "LiveConfig", "ModelConfig", "OptimConfig", "RecordConfig",
           "SignalsConfig", "SyntheticConfig", "TrainConfig", "check", "from_dict", "load_config"]
