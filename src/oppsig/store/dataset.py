"""The data set of a recorded run, rebuilt from its config and matched to its columns by stable id."""

from __future__ import annotations

from typing import Any

from ..errors import OppsigError, StoreError

__all__ = ["run_dataset", "run_dataset_or_reason"]


def run_dataset(run: Any, train_set: Any = None, index: Any = None):
    """The examples of ``run``'s columns, in column order.

    Args:
        run: a :class:`~oppsig.store.Run`.
        train_set: the run's training set when already built (``build_datasets(cfg.data)[0]``);
            default: rebuilt from the run's config.
        index: the stable ids to match instead of the dense record's columns (e.g. the
            sparse mini-batch record's ``run.batches.index``).

    Returns:
        An :class:`~oppsig.data.ArrayDataset` with one row per recorded column: the training set
        matched by stable id (a probe-set run recorded a subset), or, for a per-token record, one
        example per recorded target token (:func:`oppsig.data.text.token_examples`).

    Raises:
        StoreError: when the run has no oppsig config to rebuild its data from.
        DataFormatError: when the data set lacks examples of the run (or cannot be built: missing data).
    """
    cfg = run.config
    if train_set is None:
        if not hasattr(cfg, "data"):
            raise StoreError(f"{run.path} has no oppsig config to rebuild its data set from; pass the data set")
        from ..data import build_datasets

        train_set, _ = build_datasets(cfg.data, seed=getattr(cfg, "seed", 0))
    if index is not None:
        return train_set.by_ids(index)
    record = getattr(cfg, "record", None)
    if record is not None and getattr(record, "per_token", False) and train_set.y.dim() > 1:
        from ..data.text import token_examples

        return token_examples(train_set, run.index)
    return train_set.by_ids(run.index)


def run_dataset_or_reason(run: Any):
    """``(dataset, None)``: the run's examples in column order (for image grids and class columns), or
    ``(None, reason)`` when they cannot be shown (a run without an oppsig config, data moved or missing)."""
    if not hasattr(run.config, "data"):
        return None, "the run has no oppsig config; images are not available"
    try:
        return run_dataset(run), None
    except OppsigError as e:  # data moved or missing: the report still renders, and says why
        return None, f"images not shown: {e}"
