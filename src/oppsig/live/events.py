"""Spike events and the run's event log: :class:`SpikeEvent` (one line of ``<run>/events.jsonl``),
:class:`GroupInfo` and :func:`load_groups` (the known groups of an earlier ``oppsig detect``),
:func:`append_event`, :func:`read_events` and :func:`cut_events_after` (a resumed run's log)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from .text import describe_rows

EVENTS = "events.jsonl"


@dataclass
class GroupInfo:
    """A known group: its column positions in the record and its name in words."""

    id: Any
    cols: np.ndarray
    name: str
    opposite: Any = None  # id of the group it is paired with, if any


@dataclass
class SpikeEvent:
    """What :class:`LiveAttribution` says about one spike (one line of ``events.jsonl``)."""

    step: int
    loss: float
    baseline: float
    rise: float
    z: float
    onset_step: int | None
    examples: list[int]  # ids of the examples carrying most of the rise, largest first
    example_share: float  # their share of the net rise
    groups: list[dict] = field(default_factory=list)  # [{id, name, share, source, size}]
    sharpness: float | None = None
    threshold: float | None = None
    message: str = ""
    kind: str = "spike"
    replay: dict | None = None  # the replay check (:class:`~oppsig.live.replay.ReplayCheck`), when one ran
    verdict: str | None = None  # data | optimiser state | undetermined (from the replay)
    replay_note: str | None = None  # why there is no replay, where live.replay is on and none ran

    def to_json(self) -> dict:
        return asdict(self)


def load_groups(signals_json: str | os.PathLike, index: np.ndarray, dataset: dict | None = None) -> list[GroupInfo]:
    """Groups of an earlier ``oppsig detect`` (its ``signals.json``), mapped onto the record's columns.

    Members are matched by stable id, so the groups may come from another run
    on the same data. Paired groups (significant pairs first) know their opposite.
    ``dataset`` (``name``, ``n``, ``classes``, ``fingerprint``, each optional) describes
    the run's data, which the file's must fit (:func:`~oppsig.live.groups.check_groups_file`).

    Raises:
        ConfigError: the file comes from other data, or its groups hold examples the record lacks.
        DataFormatError: the file is not a signals file this version reads.
        FileNotFoundError: no such file.
    """
    from ..signals import read_signals_json
    from .groups import check_groups_file

    res = read_signals_json(signals_json)
    check_groups_file(res, signals_json, index, dataset)
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    pairs = sorted(res.pairs, key=lambda p: (not p.significant, -p.strength))
    opp: dict[int, int] = {}
    for p in pairs:
        opp.setdefault(p.a, p.b)
        opp.setdefault(p.b, p.a)
    out = []
    for g in res.groups:
        ids = np.asarray(g.ids, dtype=np.int64)
        pos = np.searchsorted(index[order], ids)
        ok = (pos < len(index)) & (index[order][np.minimum(pos, len(index) - 1)] == ids)
        cols = order[pos[ok]]
        out.append(GroupInfo(g.id, cols, describe_rows(dict(g.class_counts), g.shared), opp.get(g.id)))
    return out


def append_event(run_dir: str | os.PathLike | None, event: dict) -> None:
    """Append one event (a JSON object with ``kind`` and ``step``) to ``<run>/events.jsonl`` (None: nowhere)."""
    if run_dir is None:
        return
    with open(Path(run_dir) / EVENTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(event, default=_json_default) + "\n")


def _json_default(o):
    """numpy values as Python ones (floats keep NaN and inf, which ``read_events`` reads back); anything else is
    refused, so that no object is written as its string."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise DataFormatError(f"cannot write a {type(o).__name__} ({str(o)[:60]!r}) to {EVENTS}: an event holds only "
                          "numbers, strings, booleans, None, lists, dicts and numpy values")


def cut_events_after(run_dir: str | os.PathLike | None, step: int | None) -> int:
    """Keep the events of steps up to ``step`` (None: none) in ``<run>/events.jsonl``; the number dropped.

    A resumed run calls it with the last step its saved state has seen: the events a killed
    process wrote after its last checkpoint are written again when those steps are. A torn last
    line (a kill mid-write) is dropped too. The file is replaced atomically.
    """
    p = Path(run_dir) / EVENTS if run_dir is not None else None
    if p is None or not p.exists():
        return 0
    from ..store.format import atomic_write

    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    last = step if step is not None else -1
    keep = [ln for ln in lines if ln.endswith("\n") and _event_step(ln) <= last]
    if len(keep) < len(lines):
        atomic_write(p, "".join(keep))
    return len(lines) - len(keep)


def _event_step(line: str) -> float:
    """The step of an event line; infinity for a line that is not an event (dropped by any cut)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def read_events(run_dir: str | os.PathLike) -> list[dict]:
    """The events of a run (``events.jsonl``), oldest first; [] when there are none."""
    p = Path(run_dir) / EVENTS
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
