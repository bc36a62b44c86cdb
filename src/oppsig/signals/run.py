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
from .api import find_signals_in_run
from .config import SignalsConfig
from .plots import save_group_grids
from .result import SignalsResult, write_signals_json
from .verify import verify_pair


def model_at(run, step: int, data=None):
    """The run's model at parameters theta_step, replayed from the last kept checkpoint at or before ``step``.

    Returns:
        ``(model, train_set)``; the model is on the CPU in train mode.

    Raises:
        StoreError: when the run kept no checkpoint at or before ``step`` or was not trained by oppsig.
    """
    from ..train import load_checkpoint, train
    from ..train.checkpoint import list_checkpoints

    cfg = run.config
    if not hasattr(cfg, "data"):
        raise StoreError(f"{run.path} was not trained by oppsig train; cannot rebuild its model")
    kept = {s: p for s, p in list_checkpoints(run.path).items() if s <= step}
    if not kept:
        raise StoreError(f"{run.path} kept no checkpoint at or before step {step}")
    start = max(kept)
    ckpt = load_checkpoint(kept[start])
    if data is None:
        from ..data import build_datasets

        data = build_datasets(cfg.data, seed=cfg.seed)
    replay = cfg.replace([f"train.steps={max(step, start + 1)}", "record.enabled=false", "curvature.every=0",
                          "device=cpu", "train.checkpoint_every=0"])
    if step == start:  # no step to replay: load the checkpoint into a fresh model
        replay = cfg.replace(["train.steps=1", "record.enabled=false", "curvature.every=0", "device=cpu"])
        from ..models import build_from_config

        train_set = data[0]
        model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes)
        model.load_state_dict(ckpt["model"])
        return model, train_set
    res = train(replay, run_dir=None, progress=False, data=data, branch_from=ckpt)
    return res.model, data[0]


def detect_run(run_dir: str | Path, config: SignalsConfig = SignalsConfig(), verify: int = 3, grids: bool = True,
               log=None) -> SignalsResult:
    """Find, verify and save the opposing signals of a recorded run.

    Args:
        run_dir: the run directory.
        config: detection settings.
        verify: check this many of the strongest pairs on the model (0: none).
        grids: write one PNG image grid per group (image data only).
        log: a function taking progress messages (e.g. ``print``), or None.

    Returns:
        The :class:`SignalsResult`, also written to ``<run_dir>/signals.json``.
    """
    from ..data import build_datasets
    from ..losses import get_loss
    from ..store import open_run

    say = log or (lambda *_: None)
    run = open_run(run_dir)
    cfg = run.config
    data = build_datasets(cfg.data, seed=cfg.seed) if hasattr(cfg, "data") else None
    examples = None if data is None else data[0]
    per_token = data is not None and cfg.record.per_token and data[0].y.dim() > 1
    if per_token:  # one example per recorded target token, described in text terms
        from ..data.text import token_examples

        examples = token_examples(data[0], run.index)
        verify = 0  # gradient checks need whole sequences: not done per token
    t0 = time.perf_counter()
    say(f"searching {run.rows} steps x {len(run.index)} examples")
    res = find_signals_in_run(run, examples, config)
    say(f"found {len(res.groups)} groups and {len(res.pairs)} significant pairs in {time.perf_counter() - t0:.1f} s")
    if verify and res.pairs and data is not None and run.checkpoint is not None:
        verifications = list(res.verifications)
        spikes = {s.row: s for s in res.spikes}
        groups = {g.id: g for g in res.groups}
        loss_fn = get_loss(cfg.train.loss)
        for pair in res.pairs[:verify]:
            rows = [r for r in pair.spikes if r in spikes] or ([max(spikes, key=lambda r: spikes[r].height)] if spikes else [])
            step = int(spikes[rows[0]].onset_step) if rows else int(run.steps[len(run.steps) // 2])
            try:
                model, train_set = model_at(run, step, data)
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
            v = verify_pair(model, train_set, loss_fn, [groups[pair.a], groups[pair.b]], eig, step=step)
            verifications.append(v)
            say(f"pair {pair.a}/{pair.b} at step {step}: gradient cosine {v.grad_cosine:.2f}")
        res = dataclasses.replace(res, verifications=tuple(verifications))
    path = Path(run_dir)
    write_signals_json(res, path / "signals.json")
    if grids and data is not None and data[0].raw is not None and res.groups:
        train_set = data[0]
        save_group_grids(res, train_set, path / "signals")
    return res
