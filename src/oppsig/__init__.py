"""oppsig: find the training examples that destabilise neural-network optimisation, and show how.

Pipeline: record -> detect -> group -> pair -> explain -> verify -> report.

Public API:
    load_config, Config         run configuration (YAML + dotted overrides)
    train                       train and record a run
    Recorder, probe_losses      record per-example losses from your own loop
    open_run                    read a recorded run
    LiveAttribution             live spike attribution (Recorder(live=...), callbacks, oppsig train)
"""

from typing import TYPE_CHECKING

from .errors import OppsigError
from .version import __version__

if TYPE_CHECKING:
    from .config import Config, load_config
    from .signals.live import LiveAttribution
    from .store import Recorder, open_run, probe_losses
    from .training import train

__all__ = ["__version__", "Config", "load_config", "OppsigError", "Recorder", "LiveAttribution", "open_run",
           "probe_losses", "train"]


def __getattr__(name: str):
    """The public API is imported on first use, so that ``import oppsig.cli.main`` (the command line) starts at once
    and a Ctrl-C while torch loads is handled by the CLI instead of ending in a traceback; the signals package
    (scipy, matplotlib) is not needed to train or record."""
    if name in ("Config", "load_config"):
        from . import config as mod
    elif name in ("Recorder", "open_run", "probe_losses"):
        from . import store as mod
    elif name == "train":
        from . import training as mod
    elif name == "LiveAttribution":
        from .signals import live as mod
    else:
        raise AttributeError(f"module 'oppsig' has no attribute {name!r}")
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
