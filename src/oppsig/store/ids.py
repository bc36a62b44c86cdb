"""Positions of stable example ids: :class:`IdIndex`, the one lookup the record, live attribution and the replays
share.

Example:
    >>> ix = IdIndex(np.array([40, 10, 30]))
    >>> pos, found = ix.lookup([30, 40, 99])
    >>> pos[found].tolist(), found.tolist()
    ([2, 0], [True, True, False])
"""

from __future__ import annotations

import numpy as np


class IdIndex:
    """Sorted view of ``ids`` (N,) for finding the positions of any ids among them."""

    def __init__(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def __len__(self) -> int:
        return len(self.sorted)

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, found)`` of ``ids`` (n,): where each lies in the original order, and whether it is there at
        all (``positions`` is meaningless where ``found`` is False)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(self.sorted) == 0:
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(self.sorted, ids), len(self.sorted) - 1)
        return self.order[at], self.sorted[at] == ids
