"""One writer per run directory: the lock lives with the run directory in :mod:`oppsig.store.rundir`."""

from ..store.rundir import RunLock

__all__ = ["RunLock"]
