"""Spike events and the run's event log: :class:`SpikeEvent` (one line of ``<run>/events.jsonl``),
:class:`GroupInfo` and :func:`load_groups` (the known groups of an earlier ``oppsig detect``),
:func:`append_event` and :func:`read_events`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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

    def to_json(self) -> dict:
        return asdict(self)


def load_groups(signals_json: str | os.PathLike, index: np.ndarray) -> list[GroupInfo]:
    """Groups of an earlier ``oppsig detect`` (its ``signals.json``), mapped onto the record's columns.

    Members are matched by stable id, so the groups may come from another run
    on the same data. Paired groups (significant pairs first) know their opposite.

    Raises:
        DataFormatError: the file is not a signals file this version reads.
        FileNotFoundError: no such file.
    """
    from ..signals import read_signals_json

    res = read_signals_json(signals_json)
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
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_events(run_dir: str | os.PathLike) -> list[dict]:
    """The events of a run (``events.jsonl``), oldest first; [] when there are none."""
    p = Path(run_dir) / EVENTS
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
