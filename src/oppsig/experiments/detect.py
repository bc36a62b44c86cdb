"""Detection on a recorded run, with verification at the exact step of a spike.

:func:`detect_run` reads a run directory, finds the opposing signals
(:func:`~oppsig.signals.find_signals_in_run`), and checks the strongest pairs
on the model itself: it rebuilds the parameters at the onset of each pair's
largest spike by replaying training from the nearest earlier kept checkpoint
(full-batch GD is deterministic, so the replay is exact), measures the top
Hessian eigenvector there, and computes the groups' gradient cosine and their
alignment with it. It then writes ``signals.json`` and one image grid per
group (``signals/group_<id>.png``) into the run directory.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path


from ..errors import StoreError
from ..training.replay import model_at
from ..signals.api import find_signals_in_run, record_source
from ..signals.config import SignalsConfig
from ..report.grids import save_group_grids
from ..signals.result import SignalsResult, pair_name, write_signals_json
from ..signals.verify import verify_pair


def detect_run(run_dir: str | Path, config: SignalsConfig = SignalsConfig(), verify: int = 3, grids: bool = True,
               log=None, progress: bool = False, source: str = "auto", scheduler=None) -> SignalsResult:
    """Find, verify and save the opposing signals of a recorded run.

    Args:
        run_dir: the run directory.
        config: detection settings.
        verify: check this many of the strongest pairs on the model (0: none).
        grids: write one PNG image grid per group (image data only).
        log: a function taking progress messages (e.g. ``print``), or None.
        progress: show a progress bar over the steps replayed to reach a spike.
        source: which record to read: ``dense``, ``batch`` (the sparse mini-batch record,
            one row per epoch) or ``auto`` (see :func:`~oppsig.signals.find_signals_in_run`).
        scheduler: a Dask scheduler or ``distributed.Client`` for the passes over the dense record (None: here).

    Returns:
        The :class:`SignalsResult`, also written to ``<run_dir>/signals.json``.
    """
    from ..data import build_datasets
    from ..losses import get_loss
    from ..store import open_run, run_dataset

    say = log or (lambda *_: None)
    run = open_run(run_dir)
    cfg = run.config
    data = build_datasets(cfg.data, seed=cfg.seed) if hasattr(cfg, "data") else None  # built once, passed down
    source = record_source(run, source)
    batch_index = run.batches.index if source == "batch" and run.batches is not None else None
    examples = None if data is None else run_dataset(run, data[0], index=batch_index)
    if data is not None and examples.meta.get("unit") == "token":
        verify = 0  # gradient checks need whole sequences: not done per token
    t0 = time.perf_counter()
    if source == "batch" and batch_index is not None:
        say(f"searching the mini-batch record: {run.batches.entries} losses of {len(batch_index)} examples")
    else:
        say(f"searching {run.rows} steps x {len(run.index)} examples")
    res = find_signals_in_run(run, examples, config, source=source, scheduler=scheduler)
    say(f"found {len(res.groups)} groups and {len(res.pairs)} significant pairs in {time.perf_counter() - t0:.1f} s")
    t_verify = time.perf_counter()
    if verify and res.pairs and data is not None and run.checkpoint is not None:
        verifications = list(res.verifications)
        spikes = {s.row: s for s in res.spikes}
        groups = {g.id: g for g in res.groups}
        loss_fn = get_loss(cfg.train.loss)
        for i, pair in enumerate(res.pairs[:verify]):
            rows = [r for r in pair.spikes if r in spikes] or ([max(spikes, key=lambda r: spikes[r].height)] if spikes else [])
            step = int(spikes[rows[0]].onset_step) if rows else int(run.steps[len(run.steps) // 2])
            say(f"checking {pair_name(i, pair)} on the model at step {step} (replayed from the last kept checkpoint)")
            try:
                model, train_set = model_at(run, step, data, progress=progress)
            except StoreError as e:
                say(f"not verified: {e}")
                break
            eig = None
            try:
                from ..curvature import make_batches, sharpness

                n = min(cfg.curvature.n or len(train_set), len(train_set))
                er = sharpness(model, make_batches(train_set.x, train_set.y, cfg.train.physical_batch_size, n),
                               loss_fn, k=1, tol=1e-3, max_iter=40, criterion="residual")  # the vector is used
                eig = er.eigenvectors[:, 0]
            except Exception as e:  # the check still runs without the eigenvector
                say(f"top eigenvector not measured: {e}")
            v = verify_pair(model, examples, loss_fn, [groups[pair.a], groups[pair.b]], eig, step=step)
            verifications.append(v)
            say(f"{pair_name(i, pair)} at step {step}: gradient cosine {v.grad_cosine:.2f}")
        res = dataclasses.replace(res, verifications=tuple(verifications),
                                  timings={**res.timings, "verification": time.perf_counter() - t_verify})
    path = Path(run_dir)
    if grids and examples is not None and examples.raw is not None and res.groups:
        t_grids = time.perf_counter()
        say(f"drawing {len(res.groups)} group image grids")
        written = save_group_grids(res, examples, path / "signals")
        res = dataclasses.replace(res, timings={**res.timings, "grids": time.perf_counter() - t_grids})
        say(f"image grids: {path / 'signals'}/group_NN.png ({len(written)} files, one per group)")
    write_signals_json(res, path / "signals.json")
    return res
