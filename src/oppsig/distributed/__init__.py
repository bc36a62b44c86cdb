"""torch.distributed glue: launch with torchrun, shard by example, gather by example index.

``torchrun --nproc-per-node N -m oppsig train CONFIG`` starts N processes; each
one trains on its contiguous shard of the training set (full-batch GD) or of
every mini-batch (SGD/Adam). The model is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel`, whose all-reduce averages
gradients over ranks; each rank therefore scales its summed loss by
``world / B`` (``B`` the global batch size), so that the averaged gradient is
exactly the gradient of the global mean loss. Per-example results are
gathered on every rank by position in the global data order (padding rows of
uneven shards are dropped), and only rank 0 writes the store, metrics and
checkpoints. Under someone else's launcher, :func:`current_context` reads the process group it started and
:func:`gather_by_id` gathers per-example values by their stable ids.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """This process started the process group (:func:`context_from_env`), so :meth:`close` tears it down."""

    def close(self) -> None:
        """Tear down the process group this context started, once training is over, as PyTorch asks of a process
        before it exits. Left to the interpreter's teardown, a rank of a finished two-rank CPU run was seen to abort
        now and then ("terminate called without an active exception", SIGABRT), and torchrun then reports the
        whole run as failed (docs/findings.md)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """The contiguous row range ``[lo, hi)`` of ``n`` rows that this rank owns."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def shards(self, n: int) -> list[tuple[int, int]]:
        """Every rank's row range of ``n`` rows, by rank."""
        return [replace(self, rank=r).shard(n) for r in range(self.world)]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (no-op when not distributed)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every rank's shard ``(hi - lo, ...)`` into the global ``(n, ...)`` (on every rank)."""
        if not self.enabled:
            return local
        sizes = [(r + 1) * n // self.world - r * n // self.world for r in range(self.world)]
        m = max(sizes)
        pad = torch.zeros((m,) + tuple(local.shape[1:]), dtype=local.dtype, device=local.device)
        pad[: local.shape[0]] = local
        out = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(out, pad)
        return torch.cat([o[:s] for o, s in zip(out, sizes)])  # padding dropped

    def broadcast_(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.enabled:
            dist.broadcast(t, src)
        return t


def context_from_env(device: str = "cpu") -> DistContext:
    """Initialise the process group from torchrun's environment (``WORLD_SIZE`` > 1), else a single-process context.

    A group this call starts is the context's to close (:meth:`DistContext.close`); one started before is left alone.

    Backend: NCCL when the device is CUDA, else gloo. Each rank uses ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world=world, local_rank=local, owns_group=owns)


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank's device: ``cuda:LOCAL_RANK`` for CUDA, else the given one."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def no_sync(model) -> object:
    """``model.no_sync()`` for a DDP model (skip the all-reduce of an intermediate physical batch), else a no-op."""
    return model.no_sync() if hasattr(model, "no_sync") else nullcontext()


def current_context() -> DistContext:
    """The context of a process group already started by someone else (e.g. Lightning, the Hugging Face Trainer):
    its rank and world size, or a single-process context without one."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(rank=dist.get_rank(), world=dist.get_world_size())
    return DistContext()


def gather_by_id(ids: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's ``(ids (b,), values (b,))``, concatenated on every rank, each id once.

    Distributed samplers pad the last batch with repeated examples: a repeated id
    keeps its first value. Without ``torch.distributed`` this is a copy to numpy.

    Example:
        >>> i, v = gather_by_id(torch.tensor([3, 1, 3]), torch.tensor([1.0, 2.0, 9.0]))
        >>> i.tolist(), v.tolist()
        ([3, 1], [1.0, 2.0])
    """
    ids = torch.as_tensor(ids).detach().reshape(-1).to(torch.int64)
    values = torch.as_tensor(values).detach().reshape(-1).to(torch.float32)
    world = current_context().world
    if world > 1:
        dev = values.device if dist.get_backend() == "nccl" else torch.device("cpu")
        ids, values = ids.to(dev), values.to(dev)
        n = torch.tensor([ids.numel()], device=dev)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        m = int(max(int(s) for s in sizes))
        pad_i = torch.full((m,), -1, dtype=torch.int64, device=dev)
        pad_v = torch.zeros(m, dtype=torch.float32, device=dev)
        pad_i[: ids.numel()], pad_v[: values.numel()] = ids, values
        all_i = [torch.empty_like(pad_i) for _ in range(world)]
        all_v = [torch.empty_like(pad_v) for _ in range(world)]
        dist.all_gather(all_i, pad_i)
        dist.all_gather(all_v, pad_v)
        ids = torch.cat([a[: int(s)] for a, s in zip(all_i, sizes)])
        values = torch.cat([a[: int(s)] for a, s in zip(all_v, sizes)])
    i, v = ids.cpu().numpy(), values.cpu().numpy()
    _, first = np.unique(i, return_index=True)
    first = np.sort(first)
    return i[first], v[first]


__all__ = ["DistContext", "context_from_env", "device_for", "no_sync", "exact_math", "current_context",
           "gather_by_id"]


class exact_math:
    """Context manager: full float32 matmuls (TF32 off) and no autocast, restoring the previous settings.

    Curvature measurements run inside it. TF32 keeps 10 mantissa bits (about 1e-3
    relative error per product), which is the size of the eigensolver's stopping
    tolerance: Lanczos would lose orthogonality and report residuals it cannot
    reach, and sharpness near 2/lr would be off by the same order. bf16 is worse
    (8 bits). Training may use either (``tf32`` / ``bf16`` in the config).
    """

    def __enter__(self):
        self._old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._ac = torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else None
        if self._ac is not None:
            self._ac.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ac is not None:
            self._ac.__exit__(*exc)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._old
