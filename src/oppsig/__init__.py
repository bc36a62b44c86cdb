"""oppsig: find the training examples that destabilise neural-network optimisation, and show how.

Pipeline: record -> detect -> group -> pair -> explain -> verify -> report.

Public API:
    load_config, Config         run configuration (YAML + dotted overrides)
    train                       train and record a run
    Recorder, probe_losses      record per-example losses from your own loop
    open_run                    read a recorded run
    LiveAttribution             live spike attribution (Recorder(live=...), callbacks, oppsig train)
"""

from .config import Config, load_config
from .errors import OppsigError
from .store import Recorder, open_run, probe_losses
from .training import train
from .version import __version__

__all__ = ["__version__", "Config", "load_config", "OppsigError", "Recorder", "LiveAttribution", "open_run",
           "probe_losses", "train"]


def __getattr__(name: str):
    # imported on first use: the signals package (scipy, matplotlib) is not needed to train or record
    if name == "LiveAttribution":
        from .signals.live import LiveAttribution

        return LiveAttribution
    raise AttributeError(f"module 'oppsig' has no attribute {name!r}")
