"""What the gradient-accumulation tests of both callbacks check of a run."""

import numpy as np
import torch

from oppsig import open_run


def check_accumulated(run_dir, micro: list[tuple[int, torch.Tensor, torch.Tensor]], n_steps: int,
                      per_step: int) -> None:
    """Each update is one recorded step, and every micro-batch's examples are recorded once, under the step of the
    update they went into. ``micro``: (global step at the forward, ids, reference losses) of every training
    micro-batch."""
    run = open_run(run_dir)
    assert list(run.steps) == list(range(n_steps))
    L = np.asarray(run.losses[:])
    cols = {int(i): k for k, i in enumerate(run.index)}
    seen = np.zeros(L.shape, dtype=int)
    for step, ids, ref in micro:
        c = [cols[int(i)] for i in ids]
        np.testing.assert_allclose(L[step, c], ref.numpy(), rtol=1e-5)  # under the step of its update
        seen[step, c] += 1
    assert (seen <= 1).all()  # recorded once
    np.testing.assert_array_equal(np.isfinite(L), seen == 1)  # and nothing else recorded
    assert (seen.sum(1) == per_step).all()
