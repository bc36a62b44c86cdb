"""oppsig: find the training examples that destabilise neural-network optimisation, and show how.

Pipeline: record -> detect -> group -> pair -> explain -> verify -> report.

Public API:
    load_config, Config         run configuration (YAML + dotted overrides)
    train                       train and record a run
    Recorder, probe_losses      record per-example losses from your own loop
    open_run                    read a recorded run
    find_signals                detect -> group -> pair -> explain on a loss matrix (any per-example record)
    detect_run                  the same on a recorded run, checked on the model, saved beside it (signals.json)
    write_report                the run's self-contained HTML report
    LiveAttribution             live spike attribution (Recorder(live=...), callbacks, oppsig train)
"""

from typing import TYPE_CHECKING

from .errors import OppsigError
from .version import __version__

if TYPE_CHECKING:
    from .config import Config, load_config
    from .live import LiveAttribution
    from .store import Recorder, open_run, probe_losses
    from .experiments.detect import detect_run
    from .report import write_report
    from .signals import find_signals
    from .training import train

__all__ = ["__version__", "Config", "load_config", "OppsigError", "Recorder", "LiveAttribution", "open_run",
           "probe_losses", "train", "find_signals", "detect_run", "write_report"]

#: subpackages reachable as attributes after ``import oppsig`` (``oppsig.report.plot_loss``), imported on first use
SUBPACKAGES = ("config", "curvature", "data", "distributed", "experiments", "integrations", "live", "losses", "models",
               "optim", "report", "signals", "store", "toy", "training")


def __getattr__(name: str):
    """The public API is imported on first use, so that ``import oppsig.cli.main`` (the command line) starts at once
    and a Ctrl-C while torch loads is handled by the CLI instead of ending in a traceback; the signals package
    (scipy, matplotlib) is not needed to train or record.

    >>> import oppsig
    >>> callable(oppsig.find_signals) and callable(oppsig.detect_run) and callable(oppsig.write_report)
    True
    >>> oppsig.report.plot_loss.__name__
    'plot_loss'
    """
    if name in ("Config", "load_config"):
        from . import config as mod
    elif name in ("Recorder", "open_run", "probe_losses"):
        from . import store as mod
    elif name == "train":
        from . import training as mod
    elif name == "find_signals":
        from . import signals as mod
    elif name == "detect_run":
        from .experiments import detect as mod
    elif name == "write_report":
        from . import report as mod
    elif name in SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    elif name == "LiveAttribution":
        from .live import attribution as mod
    else:
        raise AttributeError(f"module 'oppsig' has no attribute {name!r}")
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
