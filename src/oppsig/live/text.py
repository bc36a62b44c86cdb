"""Spikes and groups in words: :func:`plural`, :func:`describe_rows` (a group), :func:`class_counts` (of some
rows), :func:`format_message` (the one line of a spike event)."""

from __future__ import annotations

import numpy as np


_SAME_PLURAL = frozenset({"deer", "sheep", "fish", "moose", "bison", "aircraft"})


def plural(name: str) -> str:
    """English plural of a class name (``frog`` -> ``frogs``, ``class`` -> ``classes``, ``deer`` -> ``deer``)."""
    if not name or not name[-1].isalpha() or name in _SAME_PLURAL:
        return name
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and len(name) > 1 and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def describe_rows(class_counts: dict[str, int], words: tuple[str, ...] | list[str] = (), max_words: int = 2) -> str:
    """A group in words: ``43 frogs, bright background`` or ``60 examples (frog 31, deer 20), dark``."""
    n = int(sum(class_counts.values()))
    items = sorted(class_counts.items(), key=lambda kv: -kv[1])
    if items and items[0][1] >= 0.7 * n:
        head = f"{n} {plural(str(items[0][0])) if n != 1 else items[0][0]}"
    elif items:
        head = f"{n} examples (" + ", ".join(f"{k} {v}" for k, v in items[:3]) + ")"
    else:
        head = f"{n} examples"
    return ", ".join([head, *list(words)[:max_words]])


def class_counts(labels: np.ndarray | None, classes, rows: np.ndarray) -> dict[str, int]:
    """``{class name: count}`` of ``rows`` (most common first); ``{"example": n}`` without classes."""
    if labels is None or len(rows) == 0:
        return {"example": len(rows)} if len(rows) else {}
    lab = np.asarray(labels)[rows]
    if lab.ndim > 1:  # sequences: no class per example
        return {"example": len(rows)}
    vals, counts = np.unique(lab, return_counts=True)
    names = list(classes) if classes is not None else None
    out = {}
    for v, c in sorted(zip(vals.tolist(), counts.tolist()), key=lambda t: -t[1]):
        out[names[v] if names and 0 <= v < len(names) else str(v)] = int(c)
    return out


def format_message(ev) -> str:
    """The one-line message of a spike event (a :class:`~oppsig.live.events.SpikeEvent`)."""
    parts = [f"step {ev.step}: loss {ev.rise * 100:+.0f}% over trend (z {ev.z:.1f})"]
    if ev.groups:
        g0 = ev.groups[0]
        txt = f"{g0['share'] * 100:.0f}% of the rise from {g0['label']} ({g0['name']})"
        if len(ev.groups) > 1:
            g1 = ev.groups[1]
            txt += f" vs {g1['label']} ({g1['name']})"
        parts.append(txt)
    elif ev.examples:
        parts.append(f"{ev.example_share * 100:.0f}% of the rise from {len(ev.examples)} examples "
                     f"(ids {', '.join(map(str, ev.examples[:5]))}{', ...' if len(ev.examples) > 5 else ''})")
    rp = getattr(ev, "replay", None)
    if rp and not rp["rise"] > 0:
        parts.append(f"replay {rp['start_step']}..{rp['peak_step']}: the probe's loss did not rise: {rp['verdict']}")
    elif rp:
        parts.append(f"replay {rp['start_step']}..{rp['peak_step']}: without the groups {rp['removed'] * 100:.0f}% "
                     f"of the rise removed (control {rp['removed_control'] * 100:.0f}%): {rp['verdict']}")
    if ev.sharpness is not None and ev.threshold is not None:
        parts.append(f"sharpness {ev.sharpness:.3g} / 2/lr {ev.threshold:.3g}")
    return "; ".join(parts)
