"""Run directories: one writer at a time, and an ``--overwrite`` that removes only what oppsig wrote.

A run directory belongs to the process that holds its lock (an exclusive
``flock`` on ``<run_dir>/.lock``, held for the whole run). :func:`prepare_run_dir`
takes that lock *before* it looks at or removes anything, so a run that another
process is writing is never touched.

What a run directory may hold is listed in :data:`RUN_MANIFEST`: the files the
writers, ``detect``, ``report`` and ``export`` put there. ``overwrite`` removes
exactly those, and inside its folders only the files it writes there, by name
(:data:`_OWN_FILES`: ``last.pt``/``step_NNNNNN.pt``, zarr metadata and chunks,
``group_NN.png``, TensorBoard event files); if the directory holds anything else
anywhere (a user's notes, a symbolic link, a folder oppsig does not write), it
refuses and names it, so that nothing of the user's is ever deleted. Links are
never followed.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from ..errors import RunExistsError, RunLockedError, StoreError
from .format import CHECKPOINTS, CONFIG, LOCK, META, METRICS, PROGRESS, STORE

# entries a run directory may hold: name -> "file" | "dir" (a folder of plain files and folders)
RUN_MANIFEST: dict[str, str] = {
    CONFIG: "file", META: "file", METRICS: "file", PROGRESS: "file", LOCK: "file",
    STORE: "dir", CHECKPOINTS: "dir",
    # written later by detect, report and export
    "signals.json": "file", "signals": "dir", "report.html": "file", "tb": "dir",
    "examples.csv": "file", "examples.parquet": "file", "events.jsonl": "file",  # events: live attribution
    "batch_progress.json": "file",  # the sparse mini-batch record's bookkeeping (store.zarr/batch)
    "labels.npz": "file",  # a callback's or Recorder's labels and class names (store.labels)
}
_TMP = re.compile(r"^\..+\.tmp$")  # an atomic write cut short (see format.atomic_write)

# the files oppsig writes inside its folders, by name (a folder below them holds the same kind of files)
_ZARR_FILE = re.compile(r"^(zarr\.json|\.zarray|\.zattrs|\.zgroup|\.zmetadata|\d+(\.\d+)*)$")
_OWN_FILES: dict[str, re.Pattern] = {
    CHECKPOINTS: re.compile(r"^(last\.pt|step_\d+\.pt)$"),
    "signals": re.compile(r"^group_\d+\.png$"),
    "tb": re.compile(r"^events\.out\.tfevents\..+$"),
    STORE: _ZARR_FILE,
}


def _own_inside(folder: str, path: Path, is_dir: bool) -> bool:
    """Whether ``path`` (below the run's folder ``folder``) is something oppsig writes there."""
    name = path.name
    if is_dir:
        if folder == STORE:  # an array or group (it holds zarr metadata), or a folder of chunks
            return name == "c" or name.isdigit() or any((path / m).is_file() for m in ("zarr.json", ".zarray",
                                                                                         ".zgroup"))
        return folder == "tb"  # TensorBoard writes a folder per tag of add_scalars
    return bool(_OWN_FILES[folder].match(name) or _TMP.match(name))


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``; a second writer gets :class:`RunLockedError`."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.run_dir, os.W_OK):  # the lock file may exist; the run's files could not
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise StoreError(_cannot_create(self.run_dir, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = ""
            try:
                holder = f" (pid {self.path.read_text().strip()})"
            except OSError:
                pass
            raise RunLockedError(f"{self.run_dir} is being written by another process{holder}; "
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


def _cannot_create(p: Path, e: OSError) -> str:
    """The message of a run directory that cannot be created or locked: what it is, and the fix."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = p if p.exists() else next((q for q in p.parents if q.exists()), p)
        fs = "on a read-only file system" if e.errno == errno.EROFS else "read-only for this user"
        return (f"cannot write the run directory {p}: {where} is {fs} ({e.strerror}); make it writable "
                f"(chmod u+w {where}) or choose another folder with --out-dir")
    return f"cannot create the run directory {p}: {e.strerror or e}; fix the cause or choose another --out-dir"


def start_over_command(run_dir: str | os.PathLike) -> str:
    """The command that starts the run in ``run_dir`` over from its saved config (replacing its record)."""
    p = Path(run_dir)
    return f"oppsig train {p / CONFIG} --out-dir={p.parent} --name={p.name} --overwrite"


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a recorded run (a store or a metrics file)."""
    p = Path(run_dir)
    return (p / STORE).exists() or (p / METRICS).exists()


def foreign_entries(run_dir: str | os.PathLike) -> list[str]:
    """What ``run_dir`` holds that oppsig does not write (relative paths; symbolic links anywhere count)."""
    p = Path(run_dir)
    out = []
    for child in sorted(p.iterdir()):
        kind = RUN_MANIFEST.get(child.name)
        st = child.lstat()
        if stat.S_ISLNK(st.st_mode):
            out.append(f"{child.name} (a symbolic link)")
        elif kind == "file" and stat.S_ISREG(st.st_mode) or _TMP.match(child.name) and stat.S_ISREG(st.st_mode):
            continue
        elif kind == "dir" and stat.S_ISDIR(st.st_mode):
            out += _foreign_inside(child, child.name, child.name)
        else:
            out.append(child.name)
    return out


def _foreign_inside(d: Path, rel: str, folder: str) -> list[str]:
    """What the run's folder ``d`` holds that oppsig does not write there (a foreign folder is not entered)."""
    out = []
    for root, dirs, files in os.walk(d, followlinks=False):
        for name in list(dirs) + files:
            q = Path(root) / name
            m = q.lstat().st_mode
            shown = os.path.join(rel, os.path.relpath(q, d))
            if stat.S_ISLNK(m):
                out.append(f"{shown} (a symbolic link)")
            elif not (stat.S_ISDIR(m) or stat.S_ISREG(m)) or not _own_inside(folder, q, stat.S_ISDIR(m)):
                out.append(shown)
                if name in dirs:
                    dirs.remove(name)
    return out


def _remove_own(run_dir: Path) -> None:
    """Remove the manifest entries of ``run_dir`` (never following links), keeping the lock file."""
    for child in sorted(run_dir.iterdir()):
        if child.name == LOCK:
            continue
        if stat.S_ISDIR(child.lstat().st_mode):
            for root, dirs, files in os.walk(child, topdown=False, followlinks=False):
                for f in files:
                    os.unlink(os.path.join(root, f))
                for d in dirs:
                    os.rmdir(os.path.join(root, d))
            os.rmdir(child)
        else:
            os.unlink(child)


def prepare_run_dir(run_dir: str | os.PathLike, overwrite: bool = False) -> RunLock:
    """Create ``run_dir`` and take its lock; with ``overwrite``, then remove the run it held.

    Returns the held :class:`RunLock` (release it when the run is done).

    Raises:
        RunExistsError: the directory already holds a run and ``overwrite`` is False, or it holds
            files oppsig did not write (nothing is removed then).
        RunLockedError: another process is writing the run (nothing is removed).
        StoreError: the directory cannot be created or cleared.
    """
    p = Path(run_dir)
    if p.is_symlink():
        raise StoreError(f"cannot use the run directory {p}: it is a symbolic link (to {os.readlink(p)}), and oppsig "
                         f"does not write through links; pass the real folder (--out-dir={p.resolve().parent} "
                         f"--name={p.resolve().name}) or remove the link")
    if p.exists() and not p.is_dir():
        raise StoreError(f"cannot create the run directory {p}: a file of that name exists; move it away or "
                         "choose another run name (--name)")
    if p.exists() and holds_run(p) and not overwrite:
        raise RunExistsError(f"{p} already holds a run; pass --overwrite (overwrite=True) to replace it, "
                             f"--resume to continue it, or choose another name")
    if p.exists() and overwrite:
        _refuse_foreign(p)
    lock = RunLock(p).acquire()
    try:
        if overwrite:
            _refuse_foreign(p)  # again, now that nobody else can be writing
            try:
                _remove_own(p)
            except OSError as e:
                raise StoreError(f"cannot clear the run directory {p}: {e.strerror or e}") from None
        elif holds_run(p):  # appeared between the check and the lock
            raise RunExistsError(f"{p} already holds a run; pass --overwrite to replace it or choose another name")
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse_foreign(p: Path) -> None:
    foreign = foreign_entries(p)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunExistsError(f"--overwrite refused: {p} holds {shown}, which oppsig did not write; "
                             "move them away or choose another run name (nothing was removed)")
