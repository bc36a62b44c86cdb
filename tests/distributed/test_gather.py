"""Gathering per-example values by example id across ranks (two gloo processes), and without a group."""

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from oppsig.distributed import current_context, gather_by_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # a distributed sampler's shards: rank 1 is padded with a repeat of id 0 (and has one more row)
        ids = [torch.tensor([4, 2, 0]), torch.tensor([1, 3, 5, 0])][rank]
        vals = ids.float() * 10 + rank * 0.5
        i, v = gather_by_id(ids, vals)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"ids": i.tolist(), "vals": v.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_gather_by_id_across_two_ranks(tmp_path):
    out = str(tmp_path / "g")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in range(2))
    assert r0 == r1  # every rank holds the same gathered values (they run the same detector)
    assert r0["ids"] == [4, 2, 0, 1, 3, 5]  # each id once: the padding repeat of id 0 is dropped
    assert r0["vals"] == [40.0, 20.0, 0.0, 10.5, 30.5, 50.5]


def test_gather_by_id_without_distributed_is_a_copy():
    i, v = gather_by_id(torch.tensor([3, 1, 3]), torch.tensor([1.0, 2.0, 9.0]))
    assert i.tolist() == [3, 1] and v.tolist() == [1.0, 2.0]


def test_current_context_without_a_process_group():
    ctx = current_context()
    assert (ctx.rank, ctx.world, ctx.is_main) == (0, 1, True)
