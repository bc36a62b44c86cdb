"""The process group: started by ``context_from_env`` under torchrun's environment, and torn down by the context
that started it (a gloo group left for the interpreter's exit can abort a rank with SIGABRT)."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from oppsig.distributed import context_from_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, started_before):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    if started_before:  # e.g. a framework that set up the group itself
        dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = context_from_env("cpu")
    total = ctx.all_reduce_(torch.ones(1)).item()
    ctx.close()
    seen = {"owns": ctx.owns_group, "sum": total, "still_up": dist.is_initialized()}
    if dist.is_initialized():
        dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(seen, f)


@pytest.mark.parametrize("started_before", [False, True])
def test_the_context_closes_only_the_group_it_started(tmp_path, started_before):
    out = str(tmp_path / "ctx")
    mp.spawn(_worker, args=(2, _free_port(), out, started_before), nprocs=2, join=True)
    for r in range(2):
        with open(f"{out}.{r}") as f:
            assert json.load(f) == {"owns": not started_before, "sum": 2.0, "still_up": started_before}


def test_a_single_process_context_owns_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = context_from_env("cpu")
    assert not ctx.enabled and not ctx.owns_group
    ctx.close()  # nothing to tear down
    assert not dist.is_initialized()


@pytest.mark.parametrize("args, code", [(["env"], 0), (["train", "--no-such-option=1"], 2)])
def test_a_torchrun_rank_exits_with_its_status_and_its_output(args, code):
    """Under torchrun (WORLD_SIZE > 1) ``python -m oppsig`` leaves by ``os._exit`` once the command is done: the
    exit status and everything printed (to pipes, so buffered) still come out."""
    import subprocess
    import sys

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "oppsig", *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == code
    if code == 0:
        assert "rank 1 of 2, local rank 1" in r.stdout
    else:
        assert r.stderr.strip() and "no-such-option" in r.stderr
