import os
from pathlib import Path

import pytest
import torch

from oppsig.config import load_config
from oppsig.data import opposing_signals


# what each shared data set needs under $OPPSIG_DATA (see README, Data)
SHARED_DATA = {
    "cifar10": Path("cifar10") / "cifar-10-batches-py" / "data_batch_1",
    "tinyshakespeare": Path("tinyshakespeare") / "input.txt",
}


def shared_data_dir(*names: str) -> Path | None:
    """$OPPSIG_DATA when it holds the data sets ``names`` (default CIFAR-10), else None."""
    d = os.environ.get("OPPSIG_DATA")
    if d and all((Path(d) / SHARED_DATA[n]).exists() for n in names or ("cifar10",)):
        return Path(d)
    return None


# the same as @pytest.mark.shared_data (kept for tests written against the older name)
requires_cifar = pytest.mark.shared_data


def pytest_configure(config):
    # declared in pyproject.toml as well: known here also when pytest runs without that file's settings
    config.addinivalue_line("markers", "cuda: exercises CUDA code paths; skipped without a CUDA device")


def pytest_runtest_setup(item):
    """Skip, with the reason, tests whose data or device this machine lacks.

    ``@pytest.mark.shared_data`` (CIFAR-10) or ``@pytest.mark.shared_data("tinyshakespeare")``: skipped
    unless $OPPSIG_DATA holds those data sets. ``@pytest.mark.cuda``: skipped without a CUDA device.
    """
    m = item.get_closest_marker("shared_data")
    if m is not None:
        names = tuple(m.args) or ("cifar10",)
        unknown = [n for n in names if n not in SHARED_DATA]
        if unknown:
            raise ValueError(f"shared_data marker names {unknown}; known: {sorted(SHARED_DATA)}")
        if shared_data_dir(*names) is None:
            where = ", ".join(f"$OPPSIG_DATA/{SHARED_DATA[n]}" for n in names)
            pytest.skip(f"needs {where} (set OPPSIG_DATA to the shared data folder)")
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False on this machine)")


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


ROOT = Path(__file__).resolve().parents[1]

# `oppsig train` overrides that shrink configs/synthetic-gd.yaml to a run of about a second
TINY_RUN = ["--no-progress", "--data.n=128", "--model.widths=[16]", "--train.physical_batch_size=128",
            "--train.checkpoint_every=6", "--curvature.every=8", "--record.chunk_steps=8"]


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory) -> Path:
    """One tiny run recorded through ``oppsig train configs/synthetic-gd.yaml``, shared by the whole session.

    24 full-batch GD steps of a 16-unit fc-tanh on 128 synthetic examples, sharpness every 8 steps,
    checkpoints kept every 6. Read-only: a test that writes into a run takes :func:`run_copy`.
    """
    from oppsig.cli.main import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("recorded")
    rc = main(["train", str(ROOT / "configs" / "synthetic-gd.yaml"), *TINY_RUN, "--train.steps=24",
               f"--out_dir={out}", "--name=tiny"])
    assert rc == 0
    return out / "tiny"


@pytest.fixture
def run_copy(recorded_run, tmp_path) -> Path:
    """A private copy of :func:`recorded_run` (``<tmp>/runs/tiny``) that a test may write into."""
    import shutil

    dst = tmp_path / "runs" / "tiny"
    shutil.copytree(recorded_run, dst)
    return dst
