"""Synthetic per-example loss matrices with known structure, for the signals tests (one implementation:
:mod:`oppsig.signals.synthetic`, shared with the benchmarks)."""

from oppsig.signals.synthetic import eos_matrix, overlap_f1 as f1

__all__ = ["eos_matrix", "f1"]
