"""What both callbacks share: the live argument, and LiveRecord's record and live session without a framework."""

import numpy as np
import pytest
import torch

from oppsig import open_run
from oppsig.config import LiveConfig
from oppsig.errors import ConfigError
from oppsig.integrations.record import LiveRecord, live_config
from oppsig.live import read_events


def test_live_config_from_the_callback_argument():
    assert live_config(True).enabled and not live_config(False).enabled
    c = live_config({"skip_update": True, "z": 5})
    assert c.enabled and c.skip_update and c.z == 5
    with pytest.raises(ConfigError, match="'live.skipupdate'; did you mean 'live.skip_update'"):
        live_config({"skipupdate": True})
    with pytest.raises(ConfigError, match="LiveConfig"):
        live_config("yes")
    assert live_config(LiveConfig(window=9)).window == 9


def test_live_record_rolls_back_to_its_snapshot(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = LiveRecord(tmp_path / "run", num_examples=4, print_fn=None,
                     live=LiveConfig(enabled=True, window=5, history=8, context=3, rollback=True, checkpoint_every=10))
    rec.start()
    params = {}
    for t in range(16):
        rec.before_update(t, model, opt)
        params[t] = model.weight.detach().clone()
        with torch.no_grad():
            model.weight += 1.0
        losses = np.full(4, 1.0 - 0.01 * t) if t < 15 else np.array([0.86, 0.86, 5.0, 0.86])
        rec.after_update(t, torch.arange(4), torch.as_tensor(losses), model, opt)
    rec.close()
    kinds = [(e["kind"], e["step"]) for e in read_events(tmp_path / "run")]
    assert kinds == [("spike", 15), ("rollback", 15)]
    assert torch.equal(model.weight, params[10])
    assert list(open_run(tmp_path / "run").steps) == list(range(16))
