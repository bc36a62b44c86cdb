"""The data set of a recorded run, rebuilt from its config and matched to its columns by stable id."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..errors import DataMismatchError, OppsigError, StoreError
from .fingerprint import check_run_data
from .labels import read_labels

__all__ = ["run_dataset", "run_dataset_or_reason", "data_mismatch", "record_dataset", "has_inputs", "NO_INPUTS"]


CHECK_KEY = "data_check"  # set on what run_dataset returns: {"run": its path, "mismatch": None or what differs}


def data_mismatch(dataset: Any) -> dict | None:
    """What differs between ``dataset`` (as :func:`run_dataset` returned it) and the data its run trained on: None
    when they match or were not checked, else :func:`~oppsig.store.fingerprint.check_fingerprint`'s dict."""
    return ((getattr(dataset, "meta", None) or {}).get(CHECK_KEY) or {}).get("mismatch")


def run_dataset(run: Any, train_set: Any = None, index: Any = None, allow_other_data: bool = False):
    """The examples of ``run``'s columns, in column order, checked against the data fingerprint the run wrote.

    Args:
        run: a :class:`~oppsig.store.Run`.
        train_set: the run's training set when already built (``build_datasets(cfg.data)[0]``);
            default: rebuilt from the run's config.
        index: the stable ids to match instead of the dense record's columns (e.g. the
            sparse mini-batch record's ``run.batches.index``).
        allow_other_data: go on when the data are not those the run trained on; the returned data set
            then says so (:func:`data_mismatch`).

    Returns:
        An :class:`~oppsig.data.ArrayDataset` with one row per recorded column: the training set
        matched by stable id (a probe-set run recorded a subset), or, for a per-token record, one
        example per recorded target token (:func:`oppsig.data.text.token_examples`).

    Raises:
        StoreError: when the run has no oppsig config to rebuild its data from.
        DataFormatError: when the data set lacks examples of the run (or cannot be built: missing data).
        DataMismatchError: when the data differ from those the run trained on (``meta.json``'s fingerprint)
            and ``allow_other_data`` is False. A run without a fingerprint warns that it cannot be checked.
    """
    cfg = run.config
    if train_set is None:
        if not hasattr(cfg, "data"):
            raise StoreError(f"{run.path} has no oppsig config to rebuild its data set from; pass the data set")
        from ..data import build_datasets

        train_set, _ = build_datasets(cfg.data, seed=getattr(cfg, "seed", 0))
    record = getattr(cfg, "record", None)
    per_token = record is not None and getattr(record, "per_token", False) and train_set.y.dim() > 1
    if index is not None:
        out = train_set.by_ids(index)
    elif per_token:
        from ..data.text import token_examples

        out = token_examples(train_set, run.index)
    else:
        out = train_set.by_ids(run.index)
    prior = (getattr(train_set, "meta", None) or {}).get(CHECK_KEY)
    if prior is not None and prior.get("run") == str(run.path):  # returned by this function for this run
        return out if out.meta.get(CHECK_KEY) == prior else replace(out, meta={**out.meta, CHECK_KEY: prior})
    fp = (getattr(run, "meta", None) or {}).get("fingerprint") or {}
    columns = index is None and not per_token and not getattr(run, "is_epoch_view", False)
    if columns and "record" in fp:  # a probe sample: its fingerprint is in the record's column order
        mismatch = check_run_data(run, out, allow_other_data, key="record")
    else:  # the examples the run trained on, in its order (a branch may have trained on a subset of the config's)
        mismatch = check_run_data(run, train_set if per_token else out, allow_other_data, key="train")
    return replace(out, meta={**out.meta, CHECK_KEY: {"run": str(run.path), "mismatch": mismatch}})


def run_dataset_or_reason(run: Any, allow_other_data: bool = False):
    """``(dataset, None)``: the run's examples in column order (for image grids and class columns), or
    ``(dataset or None, reason)`` when they cannot be shown (a run without an oppsig config, data moved or missing).
    A run without an oppsig config that stored its labels gets :func:`record_dataset` (classes, no images).

    Raises:
        DataMismatchError: when the data differ from those the run trained on and ``allow_other_data`` is False.
    """
    if not hasattr(run.config, "data"):
        reason = "images left out: the run has no oppsig config naming its inputs"
        try:
            return (record_dataset(run) if read_labels(run.path) is not None else None), reason
        except OppsigError as e:
            return None, f"{reason}; its stored labels were not used: {e}"
    try:
        return run_dataset(run, allow_other_data=allow_other_data), None
    except DataMismatchError:
        raise
    except OppsigError as e:  # data moved or missing: the report still renders, and says why
        return None, f"images not shown: {e}"


NO_INPUTS = ("explanations in words and image grids need the examples' inputs, which {run} does not name (no oppsig "
             "config): in Python pass the training set, oppsig.detect_run({run_q}, dataset=ArrayDataset(x, y, index, "
             "classes)) (oppsig.data.ArrayDataset, index: the example ids), or record the run with a config whose "
             "data section builds it (the callback's config=, or oppsig train)")
"""What detect and report say once about a run found from its record alone (format with ``run``, ``run_q``)."""


def has_inputs(dataset: Any) -> bool:
    """Whether ``dataset`` holds the examples' inputs (False for :func:`record_dataset`'s stand-in)."""
    return dataset is not None and (getattr(dataset, "meta", None) or {}).get("inputs", True) is not False


def record_dataset(run: Any, index: Any = None):
    """What the record alone tells of ``run``'s examples: their ids, and their labels and class names when the run
    stored them (``labels.npz``, :mod:`~oppsig.store.labels`), with no inputs.

    Detection reads it in place of the training set (groups and pairs come from the losses; groups are named by
    ids and classes); ``x`` is one zero feature per example and ``meta["inputs"]`` is False (:func:`has_inputs`).

    Args:
        run: a :class:`~oppsig.store.Run`.
        index: the stable ids of the columns read (default: the dense record's, ``run.index``).

    Raises:
        StoreError: when the run's stored labels lack some of its examples.

    Example:
        >>> from oppsig.store import Recorder, open_run
        >>> Recorder(tmp_path / "run", num_examples=3).close()
        >>> ds = record_dataset(open_run(tmp_path / "run"))
        >>> ds.index.tolist(), ds.classes, has_inputs(ds)
        ([0, 1, 2], ('unlabelled',), False)
    """
    from ..data import ArrayDataset

    ids = np.asarray(run.index if index is None else index, dtype=np.int64).reshape(-1)
    lab = read_labels(run.path)
    if lab is None:
        y, classes = np.zeros(len(ids), dtype=np.int64), ("unlabelled",)
    else:
        y = lab.of(ids)
        n_cls = int(y.max()) + 1 if len(y) else 1
        classes = lab.classes or tuple(f"class {c}" for c in range(n_cls))
    meta = {"inputs": False, CHECK_KEY: {"run": str(run.path), "mismatch": None}}
    return ArrayDataset(x=torch.zeros((len(ids), 1)), y=torch.as_tensor(y), index=torch.as_tensor(ids),
                        classes=classes, name="the record (no inputs)", meta=meta)
