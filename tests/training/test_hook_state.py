"""Hook state in checkpoints is keyed by hook name: a resume with another hook list gives each hook its own state."""

import pytest
import torch

from oppsig.errors import OppsigWarning
from oppsig.training import load_checkpoint, train
from oppsig.training.checkpoint import checkpoint_path, hook_names, load_hook_states


class Counter:
    """Counts the steps it saw; its state survives a resume."""

    name = "counter"

    def __init__(self) -> None:
        self.count, self.loaded = 0, None

    def on_step_end(self, state) -> None:
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.loaded = dict(d)
        self.count = d["count"]


def _cfg(tiny_cfg, curvature: bool, steps: int):
    return tiny_cfg(f"curvature.every={2 if curvature else 0}", "train.checkpoint_every=10", steps=steps)


@pytest.mark.parametrize("before, after", [(True, False), (False, True)])
def test_resume_with_curvature_switched_gives_each_hook_its_own_state(tiny_cfg, before, after):
    first = train(_cfg(tiny_cfg, before, 10), hooks=[Counter()], progress=False)
    saved = load_checkpoint(first.run_dir)["hooks"]
    counter = Counter()
    if before:  # the curvature hook's state has no hook now: ignored, with a warning that names it
        with pytest.warns(OppsigWarning, match="'CurvatureHook'"):
            res = train(_cfg(tiny_cfg, after, 13), run_dir=first.run_dir, resume=True, hooks=[counter],
                        progress=False)
    else:  # the curvature hook starts fresh (its first measurement is a cold solve)
        res = train(_cfg(tiny_cfg, after, 13), run_dir=first.run_dir, resume=True, hooks=[counter],
                    progress=False)
    assert counter.loaded == {"count": 10}
    assert res.next_step == 13 and counter.count == 13
    assert set(saved) == ({"CurvatureHook", "counter"} if before else {"counter"})
    assert load_checkpoint(res.run_dir)["hooks"]["counter"] == {"count": 13}


def test_checkpoints_keyed_by_position_still_load(tiny_cfg):
    first = train(_cfg(tiny_cfg, False, 10), hooks=[object(), Counter()], progress=False)
    p = checkpoint_path(first.run_dir)
    ckpt = torch.load(p, weights_only=True)
    ckpt["hooks"] = {"1": ckpt["hooks"]["counter"]}  # the positional format: "<index in the hook list>"
    torch.save(ckpt, p)
    counter = Counter()
    res = train(_cfg(tiny_cfg, False, 12), run_dir=first.run_dir, resume=True, hooks=[object(), counter],
                progress=False)
    assert counter.loaded == {"count": 10} and res.next_step == 12


def test_names_are_unique_and_unmatched_hooks_start_fresh():
    a, b, c = Counter(), Counter(), Counter()
    assert hook_names([a, object(), b]) == ["counter", "object", "counter#2"]
    load_hook_states([a, b, c], {"counter": {"count": 1}, "counter#2": {"count": 2}})
    assert (a.count, b.count, c.loaded) == (1, 2, None)
