"""oppsig: find the training examples that destabilise neural-network optimisation, and show how.

Pipeline: record -> detect -> group -> pair -> explain -> verify -> report.

Public API:
    load_config, Config         run configuration (YAML + dotted overrides)
    train                       train and record a run
    Recorder, probe_losses      record per-example losses from your own loop
    open_run                    read a recorded run
"""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import OppsigError  # noqa: E402
from .store import Recorder, open_run, probe_losses  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["__version__", "Config", "load_config", "OppsigError", "Recorder", "open_run", "probe_losses", "train"]
