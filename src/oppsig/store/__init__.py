"""The per-example record: every example's loss at every recorded step, on disk.

A run directory holds::

    config.yaml      the resolved config (oppsig runs)
    meta.json        format version, oppsig/torch versions, code revision, device, data fingerprint
    metrics.jsonl    one JSON object of scalars per step (loss, accuracy, lr, sharpness, ...)
    store.zarr/      per-example arrays (zarr): loss[row, example], correct[row, example],
                     steps[row], index[example], optional logits[lrow, example, class]
    progress.json    how many rows are complete (readers never look past it)
    batch_progress.json  mini-batch runs: how many entries of store.zarr/batch/ (the sparse record) are complete
    checkpoints/     last.pt (model, optimiser, step, RNG), written atomically

Writers: :class:`StoreWriter` (used by the training loop) and :class:`Recorder`
(for anyone's own loop). Reader: :func:`open_run`, which checks the store against its
own bookkeeping (:mod:`~oppsig.store.integrity`). Run directories (one writer at a time,
an overwrite that removes only what oppsig wrote): :mod:`~oppsig.store.rundir`.
"""

from .batches import BatchRecord, BatchWriter
from .dataset import run_dataset
from .format import FORMAT_VERSION
from .reader import Run, open_run
from .recorder import Recorder, probe_losses
from .writer import MetricsWriter, StoreWriter

__all__ = ["BatchRecord", "BatchWriter", "FORMAT_VERSION", "Run", "open_run", "Recorder", "probe_losses", "StoreWriter",
           "MetricsWriter", "run_dataset"]
