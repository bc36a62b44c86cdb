"""oppsig where people train: callbacks for Lightning and the Hugging Face Trainer.

- :mod:`oppsig.integrations.lightning`: ``OppsigCallback``, a ``lightning.pytorch.Callback``
  (``pip install "oppsig[lightning]"``);
- :mod:`oppsig.integrations.hf`: ``OppsigCallback``, a ``transformers.TrainerCallback``
  (``pip install "oppsig[hf]"``), and ``with_ids``;
- :mod:`oppsig.integrations.record`: what both callbacks share (``LiveRecord``: the record and the
  live session of the run; the probe pass; the sharpness; the values they log at a spike);
- :mod:`oppsig.integrations.replay`: ``BatchReplayer``, the proof by replay of a spike from the batches a
  callback kept (approximate: the mean per-example loss of each batch, not the framework's whole step).

The framework modules import their framework; this package itself needs neither.
Each callback writes the run directory format of ``oppsig train``, so ``oppsig
detect``, ``oppsig report`` and :func:`oppsig.open_run` work on its runs unchanged.
The live hook of ``oppsig train`` is :class:`oppsig.live.LiveHook`.
"""

from .record import LiveRecord, live_config

__all__ = ["LiveRecord", "live_config"]
