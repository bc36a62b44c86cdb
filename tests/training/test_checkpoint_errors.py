"""Only damage makes a resume pass over a checkpoint: out of memory, a missing device or a read error stops with
its own message (an older checkpoint would silently move the resume point back)."""

import errno

import pytest
import torch

from oppsig.errors import StoreError
from oppsig.training import checkpoint
from oppsig.training.checkpoint import newest_intact


def _load_raising(monkeypatch, exc):
    def fake(*a, **k):
        raise exc

    monkeypatch.setattr(checkpoint.torch, "load", fake)


@pytest.mark.parametrize("exc, says", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (RuntimeError("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False"),
     "onto cpu.*device this machine has"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error.*resume again"),
    (MemoryError(), "out of memory"),
])
def test_a_load_error_that_is_not_damage_stops_the_resume(run_copy, monkeypatch, exc, says):
    _load_raising(monkeypatch, exc)
    with pytest.raises(StoreError, match=says) as e:
        newest_intact(run_copy)
    assert "last.pt" in str(e.value) and "damaged" not in str(e.value)


def test_damage_still_moves_to_an_older_checkpoint(run_copy):
    last = run_copy / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.unlink()  # it is linked to step_000024.pt: cut a copy
    last.write_bytes(data[: len(data) // 2])
    (run_copy / "checkpoints" / "step_000024.pt").unlink()
    state, path, skipped = newest_intact(run_copy)
    assert path.name == "step_000018.pt" and skipped == ["last.pt is damaged"]


@pytest.mark.parametrize("exc", [RuntimeError("PytorchStreamReader failed reading zip archive"), EOFError(),
                                 KeyError(101), UnicodeDecodeError("utf-8", b"\x8d", 0, 1, "invalid start byte")])
def test_what_damage_raises_counts_as_damage(tmp_path, monkeypatch, exc):
    p = tmp_path / "x.pt"
    p.write_bytes(b"junk")
    _load_raising(monkeypatch, exc)
    with pytest.raises(StoreError, match="is damaged") as e:
        checkpoint.load_checkpoint(p)
    assert type(e.value) is checkpoint.DamagedCheckpointError  # not the error of a load that failed otherwise
