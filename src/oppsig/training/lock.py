"""One writer per run directory: an advisory lock held for the whole run."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RunLockedError
from ..store.format import LOCK


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``; a second writer gets :class:`RunLockedError`."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = ""
            try:
                holder = f" (pid {self.path.read_text().strip()})"
            except OSError:
                pass
            raise RunLockedError(f"{self.path.parent} is being written by another process{holder}; "
                                 "wait for it to finish or use another run name") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
