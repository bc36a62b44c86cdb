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
