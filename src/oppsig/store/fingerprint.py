"""A content digest of the exact data a run trained on, written in ``meta.json`` and checked by every later reader.

:func:`data_fingerprint` hashes (sha256) a data set's inputs, labels and stable ids in its row order, in a fixed
layout: inputs as C-contiguous float32 (integer inputs, e.g. token ids, as int64), labels and ids as int64,
each preceded by its dtype and shape. One pixel, one label, one id or the order changed gives another digest;
the same data in the same order gives the same digest in any process, on any device, at any training precision.
It costs one pass over the bytes: measured 1.6 s for 50,000 CIFAR-10 images (600 MB as float32) and 0.25 s for
10,000, on one core of a shared 2-core machine.

A training run writes ``meta.json["fingerprint"]``: ``train`` (the training set, in its order) and, when the
dense record probes a sample of it, ``record`` (the probed examples in the record's column order).
:func:`check_fingerprint` compares a rebuilt data set with it: a mismatch raises :class:`DataMismatchError`
(one line naming both digests and the fix) unless the reader allows other data, in which case it returns what
differs so that every output can say so. A run without a fingerprint (written before them, or by a
:class:`~oppsig.store.Recorder`) is read as it is, with a warning that its data cannot be checked.

Example:
    >>> import torch
    >>> from oppsig.data import ArrayDataset
    >>> d = ArrayDataset(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([7, 8]), ("a", "b"))
    >>> fp = data_fingerprint(d)
    >>> fp["examples"], len(fp["sha256"])
    (2, 64)
    >>> check_fingerprint({"fingerprint": {"train": fp}}, d) is None
    True
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import DataMismatchError, OppsigWarning

__all__ = ["data_fingerprint", "run_fingerprint", "check_fingerprint", "check_run_data", "mismatch_text", "FIX"]

FIX = ("point $OPPSIG_DATA (or data.dir in the run's config.yaml) at the data the run trained on, "
       "or pass --allow-other-data")
SHORT = 12  # hex digits of a digest shown in messages


def _array(t: Any, dtype) -> np.ndarray:
    a = t.detach().cpu() if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t))
    return np.ascontiguousarray(a.to(dtype).numpy())


def data_fingerprint(dataset) -> dict:
    """The sha256 of ``dataset``'s inputs, labels and ids in its row order (layout: see the module docstring).

    Args:
        dataset: an :class:`~oppsig.data.ArrayDataset` (any device or floating dtype).

    Returns:
        ``{"sha256": hex digest, "examples": N}``.
    """
    x = dataset.x
    x_dtype = torch.float32 if (not isinstance(x, torch.Tensor) or x.is_floating_point()) else torch.int64
    h = hashlib.sha256(b"oppsig-data-fingerprint-v1")
    for name, a in (("x", _array(x, x_dtype)), ("y", _array(dataset.y, torch.int64)),
                    ("index", _array(dataset.index, torch.int64))):
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return {"sha256": h.hexdigest(), "examples": int(len(dataset))}


def mismatch_text(m: dict) -> str:
    """One line naming a data mismatch that a reader was allowed to go on with."""
    return (f"{m['what']} is not the data the run trained on (data fingerprint {m['found'][:SHORT]}, "
            f"the run's {m['expected'][:SHORT]}); results use other data (--allow-other-data)")


def check_fingerprint(meta: dict, dataset, allow_other_data: bool = False, what: str = "the data set",
                      key: str = "train") -> dict | None:
    """Check ``dataset`` against the fingerprint ``meta["fingerprint"][key]`` that the run wrote when it trained.

    Args:
        meta: the run's ``meta.json`` (``run.meta``).
        dataset: the rebuilt data set, in the order of the fingerprinted one.
        allow_other_data: go on when the data differ (the returned dict says how).
        what: names the data in the messages (e.g. ``"the training set of runs/x"``).
        key: ``train`` (the whole training set) or ``record`` (the probed examples, in the record's column order).

    Returns:
        None when the data match (or cannot be checked: then it warns with :class:`OppsigWarning`), else
        (only with ``allow_other_data``) ``{"what", "expected", "found", "examples"}``.

    Raises:
        DataMismatchError: when the data differ and ``allow_other_data`` is False.
    """
    want = ((meta or {}).get("fingerprint") or {}).get(key)
    if not want or "sha256" not in want:
        warnings.warn(f"{what}: the run records no data fingerprint (it predates them, or was written by a "
                      "Recorder), so oppsig cannot check that these are the data it trained on", OppsigWarning,
                      stacklevel=2)
        return None
    got = data_fingerprint(dataset)
    if got["sha256"] == want["sha256"]:
        return None
    if not allow_other_data:
        raise DataMismatchError(
            f"{what} is not the data the run trained on: data fingerprint {got['sha256'][:SHORT]} "
            f"({got['examples']} examples), the run's {want['sha256'][:SHORT]} ({want.get('examples')} examples); "
            f"{FIX}")
    return {"what": what, "expected": want["sha256"], "found": got["sha256"], "examples": got["examples"]}


def run_fingerprint(train_set, probe_set=None) -> dict:
    """What a training run writes as ``meta.json["fingerprint"]``: ``train``, and ``record`` when the dense record
    probes another set of examples (a seeded sample) than the training set in its order."""
    out = {"train": data_fingerprint(train_set)}
    if probe_set is not None and probe_set is not train_set:
        out["record"] = data_fingerprint(probe_set)
    return out


def check_run_data(run, dataset, allow_other_data: bool = False, key: str = "train") -> dict | None:
    """:func:`check_fingerprint` of ``dataset`` against the opened ``run``'s meta.json, named by the run's path."""
    what = {"train": "the training set", "record": "the recorded examples"}.get(key, key)
    return check_fingerprint(getattr(run, "meta", None) or {}, dataset, allow_other_data,
                             what=f"{what} read for {run.path}", key=key)
