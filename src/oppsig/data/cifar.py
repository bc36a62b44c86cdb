"""CIFAR-10 from the standard python-pickle layout, loaded safely.

The files are pickles, and a pickle can run arbitrary code when loaded. oppsig
therefore reads them through :class:`RestrictedUnpickler`, which builds only
dicts, lists, bytes, str, ints and numpy uint8 arrays; any other global a file
asks for (``os.system``, ``builtins.eval``, ...) is refused with
:class:`~oppsig.errors.UnsafePickleError` before anything runs.

Where the data is looked for, in order: the ``data_dir`` argument (CLI
``--data-dir``), ``$OPPSIG_DATA``, then ``~/.cache/oppsig``; in each, both
``<dir>/cifar-10-batches-py`` and ``<dir>/cifar10/cifar-10-batches-py``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, DataNotFoundError, UnsafePickleError
from .base import ArrayDataset, channel_stats, standardise, subset_rows

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
LAYOUT = "cifar-10-batches-py"

GET_DATA_HINT = (
    "get the python version of CIFAR-10 (cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it so that "
    "<DIR>/cifar-10-batches-py/data_batch_1 exists, and pass --data-dir DIR or set OPPSIG_DATA=DIR "
    "(or run `oppsig data download cifar10` on a machine with internet)"
)

# (module, name) pairs a CIFAR pickle may reference: numpy's array reconstruction only.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and numpy arrays.

    Raises:
        UnsafePickleError: when the stream references any other global.
    """

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return _resolve(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from a data file: only plain containers and numpy arrays are allowed "
            "(the file may be corrupt or malicious)"
        )


def _resolve(module: str, name: str):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:  # numpy 1 vs 2 location of _reconstruct
        mod = importlib.import_module(module.replace("numpy.core", "numpy._core"))
    return getattr(mod, name)


def _check_plain(obj, where: str, depth: int = 0):
    """Accept only dict/list/bytes/str/int/uint8-ndarray trees."""
    if depth > 4:
        raise UnsafePickleError(f"{where}: nested too deeply for a CIFAR batch")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (bytes, str)):
                raise UnsafePickleError(f"{where}: dict key of type {type(k).__name__}")
            _check_plain(v, where, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_plain(v, where, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype != np.uint8:
            raise UnsafePickleError(f"{where}: array of dtype {obj.dtype}, only uint8 is allowed")
    elif not isinstance(obj, (bytes, str, int)) or isinstance(obj, bool):
        raise UnsafePickleError(f"{where}: object of type {type(obj).__name__} is not allowed")


def safe_load_pickle(path: str | os.PathLike) -> object:
    """Load a pickle file through :class:`RestrictedUnpickler` and check that it holds only plain data."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataFormatError(f"{path}: not a readable CIFAR batch ({e}); replace the file with a fresh copy") from None
    _check_plain(obj, str(path))
    return obj


def _get(d: dict, key: str, path: Path | None = None):
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise DataFormatError(f"{path or 'a CIFAR batch'}: lacks the key {key!r}; replace the file with a fresh copy")


def _labels(raw, p: Path) -> np.ndarray:
    """The labels of a batch as int64 (N,), or a :class:`DataFormatError` naming the file."""
    if not isinstance(raw, (list, np.ndarray)) or any(isinstance(v, (str, bytes)) for v in raw):
        raise DataFormatError(f"{p}: 'labels' must be a list of integers 0..9; replace the file with a fresh copy")
    try:
        return np.asarray(raw, dtype=np.int64).reshape(-1)
    except (OverflowError, ValueError, TypeError):
        raise DataFormatError(f"{p}: 'labels' must be integers 0..9 (found values that are not); "
                              "replace the file with a fresh copy") from None


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``cifar-10-batches-py``, in order."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    elif os.environ.get("OPPSIG_DATA"):
        roots.append(Path(os.environ["OPPSIG_DATA"]))
    roots.append(cache_dir())
    out = []
    for r in roots:
        r = r.expanduser()
        out += [r / LAYOUT, r / "cifar10" / LAYOUT]
        if r.name == LAYOUT:
            out.insert(0, r)
    return out


def cache_dir() -> Path:
    """oppsig's data cache, ``$XDG_CACHE_HOME/oppsig`` or ``~/.cache/oppsig``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oppsig"


def _holds_cifar10(d: Path) -> bool:
    return d.is_dir() and any((d / f).is_file() for f in TRAIN_FILES)


def find_cifar10(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding CIFAR-10 batches, or None."""
    return next((d for d in candidate_dirs(data_dir) if _holds_cifar10(d)), None)


def find_cifar10_in(data_dir: str | os.PathLike) -> Path | None:
    """The CIFAR-10 batch folder inside ``data_dir`` only (no fallback to ``$OPPSIG_DATA`` or the cache), or None."""
    r = Path(data_dir).expanduser()
    here = ([r] if r.name == LAYOUT else []) + [r / LAYOUT, r / "cifar10" / LAYOUT]
    return next((d for d in here if _holds_cifar10(d)), None)


def load_cifar10_arrays(
    data_dir: str | os.PathLike | None = None, train: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw CIFAR-10 arrays from whichever batch files are present.

    Returns:
        images uint8 (N, 3, 32, 32), labels int64 (N,), stable ids int64 (N,)
        (``10000 * (batch - 1) + row`` for training batches, the row for the test batch).

    Raises:
        DataNotFoundError: when no batch is found; the message says how to get the data.
        DataFormatError / UnsafePickleError: when a file is malformed or unsafe.
    """
    root = find_cifar10(data_dir)
    if root is None:
        looked = ", ".join(str(d) for d in candidate_dirs(data_dir)[:3])
        raise DataNotFoundError(f"CIFAR-10 not found (looked in {looked}); {GET_DATA_HINT}")
    files = TRAIN_FILES if train else TEST_FILES
    xs, ys, ids = [], [], []
    for bi, name in enumerate(files):
        p = root / name
        if not p.is_file():
            continue
        d = safe_load_pickle(p)
        if not isinstance(d, dict):
            raise DataFormatError(f"{p}: expected a dict, got {type(d).__name__}")
        data = _get(d, "data", p)
        labels = _labels(_get(d, "labels", p), p)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataFormatError(f"{p}: 'data' has shape {shape}, expected (N, 3072)")
        if len(labels) != data.shape[0]:
            raise DataFormatError(f"{p}: {len(labels)} labels for {data.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataFormatError(f"{p}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
        ids.append(np.arange(len(labels), dtype=np.int64) + (10000 * bi if train else 0))
    if not xs:
        split = "training" if train else "test"
        raise DataNotFoundError(f"no CIFAR-10 {split} batch in {root}; {GET_DATA_HINT}")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)


def cifar10(
    data_dir: str | os.PathLike | None = None,
    n: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    standardize: bool = True,
    train: bool = True,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ArrayDataset:
    """CIFAR-10 (or a subset) as an :class:`ArrayDataset`.

    Args:
        data_dir: folder holding ``cifar-10-batches-py`` (else ``$OPPSIG_DATA``, else the cache).
        n: keep the first ``n`` examples (after ``per_class`` sampling if given).
        per_class: keep ``per_class`` examples of each class, drawn with ``seed``.
        standardize: per-channel standardisation with statistics of this subset
            (or ``stats``, e.g. those of the training subset for the test set).

    Example (skipped as a doctest: it needs CIFAR-10 on disk):
        >>> ds = cifar10(n=5000)          # doctest: +SKIP
        >>> ds.x.shape, ds.index[:3]      # doctest: +SKIP
        (torch.Size([5000, 3, 32, 32]), tensor([0, 1, 2]))
    """
    images, labels, ids = load_cifar10_arrays(data_dir, train=train)
    rows = subset_rows(labels, n=n, per_class=per_class, seed=seed)
    raw = torch.from_numpy(np.ascontiguousarray(images[rows]))
    if standardize:
        mean, std = stats if stats is not None else channel_stats(raw)
        x = standardise(raw, mean, std)
        meta = {"mean": mean.tolist(), "std": std.tolist()}
    else:
        x = raw.to(torch.float32) / 255.0
        meta = {}
    return ArrayDataset(
        x=x,
        y=torch.from_numpy(labels[rows]),
        index=torch.from_numpy(ids[rows]),
        classes=CIFAR10_CLASSES,
        raw=raw,
        name=f"cifar10-{'train' if train else 'test'}-{len(rows)}",
        meta=meta,
    )


def download_cifar10(dest: str | os.PathLike | None = None, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download and unpack the official archive into ``dest`` (default: the cache), checking its MD5.

    A partial download is kept as ``<archive>.part`` and resumed with an HTTP range request.

    Raises:
        DataNotFoundError: when offline or the server cannot be reached.
        DataFormatError: when the checksum does not match (the file is removed).
    """
    dest = Path(dest) if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "cifar-10-python.tar.gz"
    part = archive.with_suffix(".gz.part")
    if not archive.exists():
        start = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r, open(part, "ab" if start else "wb") as f:
                if start and r.status != 206:  # server ignored the range: restart
                    f.truncate(0)
                    start = 0
                length = r.headers.get("Content-Length")
                got = 0
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    got += len(chunk)
                if length is not None and got < int(length):
                    raise http.client.IncompleteRead(b"", int(length) - got)
        except (OSError, http.client.HTTPException) as e:
            kept = part.stat().st_size if part.exists() else 0
            reason = getattr(e, "reason", None)
            if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) and not kept:
                if part.exists():
                    part.unlink()
                raise DataNotFoundError(f"cannot reach {url} to download CIFAR-10 (no network? {reason or e}); "
                                        f"{GET_DATA_HINT}") from None
            if not kept:
                if part.exists():
                    part.unlink()
                raise DataNotFoundError(f"the download of {url} failed ({reason or e}) before any byte arrived; "
                                        f"run it again later, or {GET_DATA_HINT}") from None
            raise DataNotFoundError(f"the download of {url} broke off ({reason or type(e).__name__}) after {kept} "
                                    f"bytes, kept in {part}; run it again to resume, or {GET_DATA_HINT}") from None
        part.replace(archive)
    h = hashlib.md5()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != md5:
        archive.unlink()
        raise DataFormatError(f"{archive}: MD5 {h.hexdigest()} != {md5}; the download was removed, run it again")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(LAYOUT + "/") and ".." not in m.name]
        for m in members:
            data = tar.extractfile(m).read()
            out = dest / m.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    return dest / LAYOUT


__all__ = [
    "CIFAR10_CLASSES",
    "RestrictedUnpickler",
    "safe_load_pickle",
    "find_cifar10",
    "load_cifar10_arrays",
    "cifar10",
    "download_cifar10",
    "cache_dir",
]
