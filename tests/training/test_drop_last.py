"""train.drop_last: every mini-batch full, the short last batch of an epoch left out (different examples each epoch)."""

import numpy as np
import torch

from oppsig.signals.run import epoch_length
from oppsig.store import open_run
from oppsig.training import batch_rows, train


def test_batch_rows_without_the_short_batch():
    n, b = 100, 32  # 3 full batches an epoch, 4 left over
    epochs = [torch.cat([batch_rows(e * 3 + k, n, b, seed=0, device="cpu", drop_last=True) for k in range(3)])
              for e in range(4)]
    for rows in epochs:
        assert len(rows) == 96 and len(set(rows.tolist())) == 96  # a permutation's first 96
    left_out = [set(range(n)) - set(r.tolist()) for r in epochs]
    assert len({frozenset(s) for s in left_out}) > 1  # not the same 4 every epoch
    assert [len(batch_rows(s, n, b, 0, "cpu")) for s in range(4)] == [32, 32, 32, 4]  # the default keeps it


def test_a_run_with_drop_last_trains_on_full_batches_and_detect_reads_its_epochs(tiny_cfg):
    sizes = []

    class Sizes:
        def on_step_end(self, state):
            sizes.append(len(state.per_example_loss))

    res = train(tiny_cfg("optim.name=sgd", "train.batch_size=48", "train.drop_last=true", steps=9), progress=False,
                hooks=[Sizes()])
    assert sizes == [48] * 9  # 128 examples: 2 full batches an epoch, the 32 left over dropped
    run = open_run(res.run_dir)
    assert epoch_length(run, run.batches) == 2
    steps, cols, _, _ = next(run.batches.blocks())
    assert np.bincount(np.asarray(steps) - np.asarray(steps).min()).max() == 48
