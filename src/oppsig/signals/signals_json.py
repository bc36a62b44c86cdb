"""The versioned ``signals.json`` file of a :class:`~oppsig.signals.result.SignalsResult`.

``write_signals_json(result, path)`` / ``read_signals_json(path)`` store and
load it as JSON with its ``format_version`` and the ``oppsig_version`` that
wrote it. Version 3 (written) nests each pair's ``coherence`` and ``anti_phase``
results; version 2 files (each pair's fields flat) are read into the same types.

Example:
    >>> r = SignalsResult(n_rows=10, n_examples=4)
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "signals.json")
    >>> _ = write_signals_json(r, p)
    >>> read_signals_json(p).n_examples
    4
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from ..store.format import atomic_write
from .result import FORMAT_VERSION, AntiPhase, Coherence, Group, Pair, Recurring, SignalsResult, Spike, Verification
from .result import pair_name

V2_COHERENCE = {"coherence": "statistic", "p_value": "p_value", "threshold": "threshold", "p_a": "p_a",
                "p_b": "p_b", "n_null": "n_null", "resolution": "resolution"}
"""Version 2's flat pair keys of :class:`Coherence`, and the field each one fills."""
V2_ANTI_PHASE = {"null_corr": "null_corr", "anti_phase_p": "p", "beyond_corr": "beyond_corr",
                 "null_beyond": "null_beyond", "leading_corr": "leading_corr", "weak": "weak"}
"""Version 2's flat pair keys of :class:`AntiPhase`, and the field each one fills."""


def _version() -> str:
    from ..version import __version__

    return __version__


def _clean(obj: Any) -> Any:
    """Turn numpy values and non-finite floats into plain JSON values (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def result_to_dict(result: SignalsResult) -> dict[str, Any]:
    """The JSON-ready dict of ``result`` (what :func:`write_signals_json` writes)."""
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "oppsig_version": result.oppsig_version or _version(),
    }
    for f in dataclasses.fields(result):
        if f.name in ("format_version", "oppsig_version"):
            continue
        v = getattr(result, f.name)
        if f.name == "groups":
            v = [_group_dict(g) for g in v]
        elif f.name == "pairs":
            v = [{"name": pair_name(i, p), **dataclasses.asdict(p)} for i, p in enumerate(v)]
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            v = [dataclasses.asdict(x) for x in v]
        out[f.name] = v
    return _clean(out)


def _group_dict(g: Group) -> dict[str, Any]:
    d = {f.name: getattr(g, f.name) for f in dataclasses.fields(g)}
    if g.direction is not None:
        d["direction_shape"] = list(g.direction.shape)
        d["direction"] = np.round(np.asarray(g.direction, dtype=np.float64).ravel(), 5)
    return d


def write_signals_json(result: SignalsResult, path: str | os.PathLike) -> Path:
    """Write ``result`` as ``signals.json`` (atomically: a temporary file, then a rename).

    Returns:
        The path written.

    Raises:
        OSError: when the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(result_to_dict(result), indent=1, allow_nan=False) + "\n")
    return path


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _build(cls, d: dict[str, Any]):
    """``cls(**d)`` keeping only known fields, with tuples for sequences and NaN for nulls."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, list):
            v = tuple(v)
        if v is None and f.type in ("float",):
            v = float("nan")
        kw[f.name] = v
    return cls(**kw)


def _no_nulls(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_nan(v) if v is None else v) for k, v in d.items()}


def _pair(d: dict[str, Any], version: int) -> Pair:
    """A :class:`Pair` from its JSON object: nested results (version 3) or flat keys (version 2 and before)."""
    p = _no_nulls(d)
    p["spike_rise_share"] = [_nan(v) for v in p.get("spike_rise_share", [])]
    if version >= 3:
        coherence = _build(Coherence, _no_nulls(p.pop("coherence", None) or {}))
        anti_phase = _build(AntiPhase, _no_nulls(p.pop("anti_phase", None) or {}))
    else:
        coherence = _build(Coherence, {new: p.pop(old) for old, new in V2_COHERENCE.items() if old in p})
        anti_phase = _build(AntiPhase, {new: p.pop(old) for old, new in V2_ANTI_PHASE.items() if old in p})
    return _build(Pair, {**p, "coherence": coherence, "anti_phase": anti_phase})


def result_from_dict(d: dict[str, Any]) -> SignalsResult:
    """Rebuild a :class:`SignalsResult` from :func:`result_to_dict`'s output.

    Raises:
        DataFormatError: for a missing or newer format version, or missing fields.
    """
    ver = d.get("format_version")
    if not isinstance(ver, int):
        raise DataFormatError(f"signals.json has no integer format_version (got {ver!r}); is this a signals file?")
    if ver > FORMAT_VERSION:
        raise DataFormatError(
            f"signals.json has format_version {ver}, newer than this oppsig reads ({FORMAT_VERSION}); upgrade oppsig"
        )
    try:
        groups = []
        for g in d.get("groups", []):
            g = dict(g)
            shape = g.pop("direction_shape", None)
            if g.get("direction") is not None:
                arr = np.asarray(g["direction"], dtype=np.float32)
                g["direction"] = arr.reshape(shape) if shape else arr
            for k in ("cohesion", "swing", "direction_norm", "direction_ratio", "projection_ratio"):
                g[k] = _nan(g.get(k))
            groups.append(_build(Group, g))
        pairs = tuple(_pair(p, ver) for p in d.get("pairs", []))
        rejected = tuple(_pair(p, ver) for p in d.get("rejected_pairs", []))
        spikes = [_build(Spike, s) for s in d.get("spikes", [])]
        recurring = [_build(Recurring, r) for r in d.get("recurring", [])]
        verifs = [_build(Verification, v) for v in d.get("verifications", [])]
        tl = d.get("total_loss", [])
        return SignalsResult(
            n_rows=int(d["n_rows"]),
            n_examples=int(d["n_examples"]),
            steps=np.asarray(d.get("steps", []), dtype=np.int64),
            total_loss=np.asarray([_nan(v) for v in tl], dtype=np.float64),
            spikes=tuple(spikes),
            recurring=tuple(recurring),
            groups=tuple(groups),
            pairs=pairs,
            rejected_pairs=rejected,
            verifications=tuple(verifs),
            config=dict(d.get("config", {})),
            dataset=dict(d.get("dataset", {})),
            top_share=_nan(d.get("top_share")),
            null_corr=_nan(d.get("null_corr")),
            test=dict(d.get("test", {})),
            timings=dict(d.get("timings", {})),
            format_version=ver,
            oppsig_version=str(d.get("oppsig_version", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"signals.json is malformed: {e}") from None


def read_signals_json(path: str | os.PathLike) -> SignalsResult:
    """Read a ``signals.json`` written by :func:`write_signals_json`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        DataFormatError: when it is not valid JSON or not a signals file this version reads.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise DataFormatError(f"{path} holds a JSON {type(d).__name__}, expected an object")
    return result_from_dict(d)
