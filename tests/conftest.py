import os
from pathlib import Path

import pytest
import torch

from oppsig.config import load_config
from oppsig.data import opposing_signals


def shared_data_dir() -> Path | None:
    d = os.environ.get("OPPSIG_DATA")
    if d and (Path(d) / "cifar10" / "cifar-10-batches-py" / "data_batch_1").exists():
        return Path(d)
    return None


requires_cifar = pytest.mark.skipif(shared_data_dir() is None, reason="CIFAR-10 not found under $OPPSIG_DATA")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config for a run that takes well under a second per step."""

    def make(*overrides, steps=20):
        return load_config(None, [
            "data.name=synthetic", "data.n=128", "model.widths=[16]", f"train.steps={steps}",
            "train.physical_batch_size=50", "optim.lr=0.05", f"out_dir={tmp_path / 'runs'}", "name=tiny",
            "record.chunk_steps=4", "train.checkpoint_every=5", *overrides,
        ])

    return make


@pytest.fixture
def tiny_data():
    return opposing_signals(n=128, seed=0)
