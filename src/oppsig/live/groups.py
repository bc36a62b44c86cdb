"""Is a ``signals.json`` fit for live attribution of this run? :func:`check_groups_file`.

Live attribution names the groups of an earlier ``oppsig detect`` (``live.groups``); they must come from the
same data: the file's ``dataset`` (its name, classes and the data's fingerprint when both sides have one)
and its number of examples must fit the run's data, and every member id of its groups must be an example
of the run. Checked before the first step (:meth:`oppsig.live.LiveSession.start`).

Example:
    >>> import numpy as np
    >>> from oppsig.signals import Group, SignalsResult
    >>> res = SignalsResult(n_rows=4, n_examples=3, groups=(Group(0, (0, 1), (10, 11)),),
    ...                     dataset={"name": "synthetic-3", "classes": ["a", "b"]})
    >>> check_groups_file(res, "runs/a/signals.json", np.array([10, 11, 12]),
    ...                   {"name": "synthetic-3", "n": 3, "classes": ("a", "b")})
    >>> check_groups_file(res, "runs/a/signals.json", np.array([10, 11, 12]), {"name": "cifar10-train-3"})
    Traceback (most recent call last):
    ...
    oppsig.errors.ConfigError: live.groups runs/a/signals.json comes from other data (data set synthetic-3, ...
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError

FIX = ("pass the signals.json of an `oppsig detect` of a run on this data, or leave live.groups unset to "
       "estimate groups online")


def _differences(theirs: dict, n_theirs: int, ours: dict) -> list[str]:
    """What tells the file's data set (``theirs``, its ``n_theirs`` examples) from the run's (``ours``)."""
    same = _same_data(theirs.get("fingerprint"), ours.get("fingerprint"))
    if same is not None:
        return [] if same else ["its data fingerprint differs from the run's"]
    out = []
    if theirs.get("name") and ours.get("name") and theirs["name"] != ours["name"]:
        out.append(f"data set {theirs['name']}, not {ours['name']}")
    ca, cb = list(theirs.get("classes") or ()), list(ours.get("classes") or ())
    if ca and cb and ca != cb:
        out.append(f"classes {_few(ca)}, not {_few(cb)}")
    if ours.get("n") is not None and n_theirs > int(ours["n"]):
        out.append(f"{n_theirs} examples, more than the run's {ours['n']}")
    return out


def _digests(fp: Any) -> dict[str, str]:
    """``{role: sha256}`` of a data fingerprint: ``meta.json``'s ``{"train": {"sha256": ...}, "record": ...}``,
    one ``{"sha256": ...}`` (role ``data``), or a bare digest."""
    if isinstance(fp, str):
        return {"data": fp}
    if not isinstance(fp, dict):
        return {}
    if "sha256" in fp:
        return {"data": str(fp["sha256"])}
    return {str(k): str(v["sha256"]) for k, v in fp.items() if isinstance(v, dict) and "sha256" in v}


def _same_data(a: Any, b: Any) -> bool | None:
    """True / False when the fingerprints ``a`` and ``b`` decide whether the data are the same; None when they
    cannot (one is missing, or they digest different things: a record's sample and a whole training set)."""
    da, db = _digests(a), _digests(b)
    if not da or not db:
        return None
    common = sorted(set(da) & set(db) - {"data"})
    if common:
        return all(da[k] == db[k] for k in common)
    return True if set(da.values()) & set(db.values()) else None


def _few(xs: list) -> str:
    return ",".join(map(str, xs[:4])) + (",..." if len(xs) > 4 else "")


def check_groups_file(res, path: str | os.PathLike, index: np.ndarray, dataset: dict | None = None) -> None:
    """Refuse the groups of ``res`` (read from ``path``) when they do not fit the run.

    Args:
        res: the :class:`~oppsig.signals.SignalsResult` of ``path``.
        path: the file, named in the message.
        index: the run's example ids (N,).
        dataset: what the run knows of its data: ``name``, ``n``, ``classes``, ``fingerprint`` (each optional).

    Raises:
        ConfigError: one line naming the file, what differs, and the fix.
    """
    diff = _differences(dict(res.dataset or {}), int(res.n_examples), dict(dataset or {}))
    if diff:
        raise ConfigError(f"live.groups {path} comes from other data ({'; '.join(diff)}); {FIX}")
    own = np.sort(np.asarray(index, dtype=np.int64).reshape(-1))
    ids = np.unique(np.concatenate([np.asarray(g.ids, dtype=np.int64).reshape(-1) for g in res.groups] or
                                   [np.zeros(0, np.int64)]))
    pos = np.minimum(np.searchsorted(own, ids), max(len(own) - 1, 0))
    missing = ids[own[pos] != ids] if len(own) else ids
    if len(missing):
        raise ConfigError(f"live.groups {path}: {len(missing)} of its {len(ids)} group members are not examples "
                          f"of this run (ids {missing[:5].tolist()}); {FIX}")
