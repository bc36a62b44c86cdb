"""oppsig: find the training examples that destabilise neural-network optimisation.

Pipeline: record -> detect -> group -> pair -> explain -> verify -> report.
"""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import OppsigError  # noqa: E402

__all__ = ["__version__", "Config", "load_config", "OppsigError"]
