"""The versioned ``signals.json`` file of a :class:`~oppsig.signals.result.SignalsResult`.

``write_signals_json(result, path)`` / ``read_signals_json(path)`` store and
load it as strict JSON with its ``format_version`` and the ``oppsig_version``
that wrote it, and read back exactly what was written:

- non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"`` (``null`` is None); in the free-form dicts (``config``,
  ``dataset``, ``test``) those three strings read back as the floats, and
  sequences as lists;
- a value of another type (not a number, string, bool, None, list, tuple, dict
  with string keys or numpy array) is refused when writing, naming where it is;
- a key that is not a field of its record is refused when reading, naming it
  (the keys that files legitimately carry beside the fields, each pair's
  ``name`` and each group's ``direction_shape``, are the exceptions);
- each group's ``direction`` image is stored rounded to 5 decimals.

Version 4 (written) spells non-finite floats as above; version 3 wrote them as
``null`` (read as NaN in float fields, None where a field may be None) and
nests each pair's ``coherence`` and ``anti_phase`` results; version 2 files
(each pair's fields flat) are read into the same types.

Example:
    >>> r = SignalsResult(n_rows=10, n_examples=4, top_share=float("inf"))
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "signals.json")
    >>> _ = write_signals_json(r, p)
    >>> read_signals_json(p).top_share
    inf
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
from .result import (
    FORMAT_VERSION,
    AntiPhase,
    Coherence,
    Extension,
    Group,
    Pair,
    Recurring,
    SignalsResult,
    Spike,
    Verification,
)
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


NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
"""How non-finite floats are spelled in the file, and the float each spelling reads back as."""


def _float_text(f: float) -> str:
    return "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")


def _clean(obj: Any, where: str = "signals.json") -> Any:
    """``obj`` as plain strict-JSON values: numpy values as Python ones, non-finite floats as their spelling.

    Raises:
        DataFormatError: for a value of another type, or a dict key that is not a string (naming where).
    """
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        bad = next((k for k in obj if not isinstance(k, str)), None)
        if bad is not None:
            raise DataFormatError(f"cannot write {where}: key {bad!r} is a {type(bad).__name__}; "
                                  "only string keys read back as written")
        return {k: _clean(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist(), where)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else _float_text(f)
    raise DataFormatError(f"cannot write {where}: it holds a {type(obj).__name__} ({str(obj)[:60]!r}); "
                          "only numbers, strings, booleans, None, lists, dicts and numpy arrays can be written")


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
    if g.extension is not None:
        d["extension"] = dataclasses.asdict(g.extension)
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


def _float(v: Any, where: str, optional: bool = False) -> float | None:
    """A float field's value: a number, a non-finite spelling, or null (None where the field may be None; NaN,
    as version 3 wrote it, where it may not)."""
    if v is None:
        return None if optional else float("nan")
    if isinstance(v, str) and v in NON_FINITE:
        return NON_FINITE[v]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataFormatError(f"signals.json: {where} must be a number, got {v!r}")
    return float(v)


def _free(v: Any) -> Any:
    """A free-form value (``config``, ``dataset``, ``test``): non-finite spellings back to floats."""
    if isinstance(v, str):
        return NON_FINITE.get(v, v)
    if isinstance(v, dict):
        return {k: _free(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_free(x) for x in v]
    return v


RECORDS = {"Coherence": Coherence, "AntiPhase": AntiPhase, "Extension": Extension}


def _value(v: Any, t: str, where: str) -> Any:
    """The value of a field typed ``t`` (its annotation) from its JSON form."""
    if t in ("float", "float | None"):
        return _float(v, where, optional=t.endswith("None"))
    if v is None:
        return None
    if t == "str":  # a string field keeps its text, "NaN" and "Infinity" included
        return v
    if t == "tuple[float, ...]":
        return tuple(_float(x, f"{where}[{i}]") for i, x in enumerate(v))
    if t == "dict[str, float]":
        return {k: _float(x, f"{where}[{k!r}]") for k, x in v.items()}
    if t.removesuffix(" | None") in RECORDS:
        return _build(RECORDS[t.removesuffix(" | None")], v, where)
    if t.startswith("tuple["):
        return tuple(v)
    return _free(v)


def _build(cls, d: Any, where: str):
    """``cls(**d)`` with each field read by its type.

    Raises:
        DataFormatError: when ``d`` is not an object, or holds a key that is not a field of ``cls``.
    """
    if not isinstance(d, dict):
        raise DataFormatError(f"signals.json: {where} must be an object, got {type(d).__name__}")
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise DataFormatError(f"signals.json: {where} has unknown key {unknown[0]!r} (a {cls.__name__} has "
                              f"{', '.join(fields)}); it was written by another oppsig: read it with that version")
    return cls(**{k: _value(v, fields[k], f"{where}.{k}") for k, v in d.items()})


def _pair(d: dict[str, Any], version: int, where: str) -> Pair:
    """A :class:`Pair` from its JSON object: nested results (version 3 on) or flat keys (version 2 and before)."""
    p = dict(d)
    p.pop("name", None)  # written beside the fields: pair_name(rank, pair)
    if version < 3:
        p["coherence"] = {new: p.pop(old) for old, new in V2_COHERENCE.items() if old in p}
        p["anti_phase"] = {new: p.pop(old) for old, new in V2_ANTI_PHASE.items() if old in p}
    return _build(Pair, p, where)


def _group(d: dict[str, Any], where: str) -> Group:
    g = dict(d)
    shape = g.pop("direction_shape", None)  # written beside the fields
    if g.get("direction") is not None:
        arr = np.asarray([_float(v, f"{where}.direction") for v in g["direction"]], dtype=np.float32)
        g["direction"] = None
        out = _build(Group, g, where)
        return dataclasses.replace(out, direction=arr.reshape(shape) if shape else arr)
    return _build(Group, g, where)


def result_from_dict(d: dict[str, Any]) -> SignalsResult:
    """Rebuild a :class:`SignalsResult` from :func:`result_to_dict`'s output.

    Raises:
        DataFormatError: for a missing or newer format version, missing fields or an unknown key.
    """
    ver = d.get("format_version")
    if not isinstance(ver, int):
        raise DataFormatError(f"signals.json has no integer format_version (got {ver!r}); is this a signals file?")
    if ver > FORMAT_VERSION:
        raise DataFormatError(
            f"signals.json has format_version {ver}, newer than this oppsig reads ({FORMAT_VERSION}); upgrade oppsig"
        )
    readers = {
        "steps": lambda v, w: np.asarray(v, dtype=np.int64),
        "total_loss": lambda v, w: np.asarray([_float(x, w) for x in v], dtype=np.float64),
        "spikes": lambda v, w: tuple(_build(Spike, x, f"{w}[{i}]") for i, x in enumerate(v)),
        "recurring": lambda v, w: tuple(_build(Recurring, x, f"{w}[{i}]") for i, x in enumerate(v)),
        "groups": lambda v, w: tuple(_group(x, f"{w}[{i}]") for i, x in enumerate(v)),
        "pairs": lambda v, w: tuple(_pair(x, ver, f"{w}[{i}]") for i, x in enumerate(v)),
        "rejected_pairs": lambda v, w: tuple(_pair(x, ver, f"{w}[{i}]") for i, x in enumerate(v)),
        "verifications": lambda v, w: tuple(_build(Verification, x, f"{w}[{i}]") for i, x in enumerate(v)),
        "oppsig_version": lambda v, w: str(v),
    }
    fields = {f.name: f.type for f in dataclasses.fields(SignalsResult)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise DataFormatError(f"signals.json has unknown key {unknown[0]!r}; it was written by another oppsig: "
                              "read it with that version")
    try:
        kw = {k: (readers[k](v, k) if k in readers else _value(v, fields[k], k)) for k, v in d.items()}
        return SignalsResult(**kw)
    except DataFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
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
