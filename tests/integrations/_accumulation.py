"""What the gradient-accumulation tests of both callbacks check of a run, and the batch record as a matrix."""

import numpy as np
import torch

from oppsig import open_run


def batch_matrix(run) -> tuple[list[int], np.ndarray]:
    """The steps of a run's sparse batch record and its entries as a (steps, N) matrix, NaN where not recorded
    (each entry exactly once)."""
    step, col, loss, _ = run.batches.arrays()
    steps = sorted({int(s) for s in step})
    L = np.full((len(steps), run.batches.n_examples), np.nan, dtype=np.float32)
    row = {s: k for k, s in enumerate(steps)}
    for s, c, v in zip(step, col, loss):
        assert np.isnan(L[row[int(s)], c])  # one entry per example and step
        L[row[int(s)], c] = v
    return steps, L


def check_accumulated(run_dir, micro: list[tuple[int, torch.Tensor, torch.Tensor]], n_steps: int,
                      per_step: int) -> None:
    """Each update is one recorded step, and every micro-batch's examples are recorded once, under the step of the
    update they went into. ``micro``: (global step at the forward, ids, reference losses) of every training
    micro-batch."""
    run = open_run(run_dir)
    steps, L = batch_matrix(run)
    assert steps == list(range(n_steps))
    cols = {int(i): k for k, i in enumerate(run.batches.index)}
    seen = np.zeros(L.shape, dtype=int)
    for step, ids, ref in micro:
        c = [cols[int(i)] for i in ids]
        np.testing.assert_allclose(L[step, c], ref.numpy(), rtol=1e-5)  # under the step of its update
        seen[step, c] += 1
    assert (seen <= 1).all()  # recorded once
    np.testing.assert_array_equal(np.isfinite(L), seen == 1)  # and nothing else recorded
    assert (seen.sum(1) == per_step).all()
