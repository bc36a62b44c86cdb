import torch

from oppsig.store import open_run
from oppsig.training import model_at, train

def test_model_at_replays_exactly(tiny_cfg):
    """The model rebuilt at a step from a kept checkpoint equals the one training reached there."""

    long = train(tiny_cfg("name=long", steps=12), progress=False)  # checkpoints kept at 5 and 10
    short = train(tiny_cfg("name=short", steps=8), progress=False)
    model, _ = model_at(open_run(long.run_dir), 8)
    for p, q in zip(model.parameters(), short.model.parameters()):
        assert torch.equal(p, q)


def test_replay_of_a_run_whose_checkpoint_is_missing_is_a_clear_error(tiny_cfg):
    import shutil

    import pytest

    from oppsig.errors import StoreError

    res = train(tiny_cfg("name=nockpt", steps=8), progress=False)
    run = open_run(res.run_dir)
    for p in (run.path / "checkpoints").glob("step_*.pt"):
        p.unlink()
    kept_none = r"kept no checkpoint at or before step 6 \(no checkpoint is kept.*checkpoint_every"
    with pytest.raises(StoreError, match=kept_none):
        model_at(run, 6)
    shutil.rmtree(run.path / "checkpoints")
    with pytest.raises(StoreError, match="kept no checkpoint"):
        model_at(run, 6)


def test_replay_runs_on_the_runs_own_device_or_says_why_not(tiny_cfg):
    import json

    import pytest

    from oppsig.errors import StoreError
    from oppsig.training.replay import ReplayWarning, run_device

    res = train(tiny_cfg("name=dev", steps=8), progress=False)
    run = open_run(res.run_dir)
    assert run_device(run) == "cpu"
    meta = json.loads((run.path / "meta.json").read_text())
    meta["device"] = "cuda:7"  # as if trained on a GPU this machine does not have
    (run.path / "meta.json").write_text(json.dumps(meta))
    run = open_run(res.run_dir)
    with pytest.raises(StoreError, match="trained on cuda:7.*cannot be replayed exactly here.*device='cpu'"):
        model_at(run, 7)
    with pytest.warns(ReplayWarning, match="not bit-exact"):
        model, _ = model_at(run, 7, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
