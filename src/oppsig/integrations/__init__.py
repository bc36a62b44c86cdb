"""oppsig where people train: callbacks for Lightning and the Hugging Face Trainer, and the live hook of ``oppsig train``.

- :mod:`oppsig.integrations.lightning`: ``OppsigCallback``, a ``lightning.pytorch.Callback``
  (``pip install "oppsig[lightning]"``);
- :mod:`oppsig.integrations.hf`: ``OppsigCallback``, a ``transformers.TrainerCallback``
  (``pip install "oppsig[hf]"``), and ``with_ids``;
- :mod:`oppsig.integrations.live_hook`: ``LiveHook``, live spike attribution and its
  actions in ``oppsig train``;
- :mod:`oppsig.integrations.core`: what the callbacks share (``LiveRecord``: record,
  live attribution, actions; ``gather_by_id``).

The framework modules import their framework; this package itself needs neither.
Each callback writes the run directory format of ``oppsig train``, so ``oppsig
detect``, ``oppsig report`` and :func:`oppsig.open_run` work on its runs unchanged.
"""

from .core import LiveRecord, gather_by_id, live_config
from .live_hook import LiveHook

__all__ = ["LiveRecord", "gather_by_id", "live_config", "LiveHook"]
