"""Detection on a recorded run, with verification at the exact step of a spike.

:func:`detect_run` reads a run directory, finds the opposing signals
(:func:`~oppsig.signals.find_signals_in_run`), and checks the strongest pairs
on the model itself (a pair whose groups' gradient cosine is not negative there is not
reported: :func:`~oppsig.signals.verify.with_verifications`): it rebuilds the parameters at the onset of each pair's
largest spike by replaying training from the nearest earlier kept checkpoint
on the run's own device and precision (:func:`~oppsig.training.replay.model_at`:
exact, or refused with the reason), measures the top Hessian eigenpair there
(with its error bound and convergence flag), and computes the groups' gradient
cosine and their alignment with the eigenvector. A check that cannot run (no
spike of the pair, no checkpoint before it, the run's device missing here, an
eigensolve error) is recorded as failed with its cause and printed, never
skipped silently. It then writes ``signals.json`` and one image grid per group
(``signals/group_<id>.png``) into the run directory.
"""

from __future__ import annotations

import dataclasses
import errno
import time
from pathlib import Path


from ..errors import OppsigError, StoreError
from ..training.replay import model_at
from ..signals.run import find_signals_in_run, record_source
from ..config import SignalsConfig
from ..report.grids import save_group_grids
from ..signals.text import verification_text
from ..signals.result import SignalsResult, Verification, pair_name
from ..signals.signals_json import write_signals_json
from ..signals.verify import verify_pair, with_verifications


def _verify_at_spike(run, data, examples, cfg, loss_fn, pair, groups, spikes, progress: bool = False) -> Verification:
    """Check ``pair`` at the onset of its largest spike; a check that cannot run is returned failed, with its cause."""
    from ..curvature import make_batches, sharpness

    rows = [r for r in pair.spikes if r in spikes]
    if not rows:
        return Verification.failed(pair.a, pair.b, "the pair has no loss spike to verify at")
    step = int(spikes[max(rows, key=lambda r: spikes[r].height)].onset_step)
    try:
        model, train_set = model_at(run, step, data, progress=progress)
    except StoreError as e:
        return Verification.failed(pair.a, pair.b, f"replay failed: {e}", step)
    n = min(cfg.curvature.n or len(train_set), len(train_set))
    eig, extra = None, {}
    try:
        er = sharpness(model, make_batches(train_set.x, train_set.y, cfg.train.physical_batch_size, n),
                       loss_fn, k=1, tol=1e-3, max_iter=60, criterion="residual")  # the vector is used
        eig = er.eigenvectors[:, 0]
        extra = {"sharpness": er.top, "sharpness_error": float(er.error_bounds[0]),
                 "eig_converged": bool(er.converged)}
    except OppsigError as e:  # e.g. a model whose products are not deterministic: the gradients are still checked
        extra = {"error": f"top Hessian eigenvector not measured: {e}"}
    v = verify_pair(model, examples, loss_fn, [groups[pair.a], groups[pair.b]], eig, step=step)
    return dataclasses.replace(v, **extra)


def detect_run(run_dir: str | Path, config: SignalsConfig = SignalsConfig(), verify: int = 3, grids: bool = True,
               log=None, progress: bool = False, source: str = "auto", scheduler=None,
               allow_other_data: bool = False, dataset=None) -> SignalsResult:
    """Find, verify and save the opposing signals of a recorded run.

    A run without an oppsig config (a callback's or the ``Recorder``'s, on a user's own data) is searched from its
    record alone when ``dataset`` is not given: groups and pairs come from the losses and are named by example ids
    and by the labels and class names the run stored; its pairs are tested by replication in time instead of the
    input test (:mod:`~oppsig.signals.replication`; ``Pair.tested_on == "record"``, no visible gate); explanations
    in words and image grids need the inputs, and ``log`` says once how to pass them
    (:data:`~oppsig.store.dataset.NO_INPUTS`); ``result.dataset["inputs"]`` is False.

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
        allow_other_data: go on when the rebuilt data are not those the run trained on (its data fingerprint);
            the result then says so in ``result.dataset["data_mismatch"]``.
        dataset: the run's training set (an :class:`~oppsig.data.ArrayDataset`: ``x``, ``y``, ``index`` holding
            the example ids the run recorded, ``classes``; ``raw`` uint8 images for grids), for a run whose config
            cannot rebuild it (default: rebuilt from the config, else none).

    Example:
        >>> from oppsig import Recorder
        >>> from oppsig.data import opposing_signals
        >>> ds = opposing_signals(n=64, seed=0)
        >>> rec = Recorder(tmp_path / "run", index=ds.index.numpy(), dataset=ds)
        >>> for t in range(12):
        ...     rec.log(t, ds.index, torch.rand(64) + 1)
        >>> rec.close()
        >>> detect_run(tmp_path / "run", dataset=ds).dataset["inputs"]
        True

    Returns:
        The :class:`SignalsResult`, also written to ``<run_dir>/signals.json``.

    Raises:
        DataMismatchError: when the rebuilt data differ from the run's and ``allow_other_data`` is False.
    """
    from ..data import build_datasets
    from ..losses import get_loss
    from ..store import open_run
    from ..store.dataset import NO_INPUTS, data_mismatch, has_inputs
    from ..store.fingerprint import check_run_data, mismatch_text

    say = log or (lambda *_: None)
    run = open_run(run_dir)
    cfg = run.config
    # built once, passed down; a data set given is used instead
    data = build_datasets(cfg.data, seed=cfg.seed) if hasattr(cfg, "data") and dataset is None else None
    source = record_source(run, source)
    batch_index = run.batches.index if source == "batch" and run.batches is not None else None
    train_set = dataset if dataset is not None else (None if data is None else data[0])
    if train_set is None:
        say(NO_INPUTS.format(run=run_dir, run_q=repr(str(run_dir))))
    searched, examples = _run_examples(run, train_set, source, allow_other_data)
    if verify and data is not None and examples.meta.get("unit") == "token":
        say("pairs not verified: gradient checks need whole sequences, and this run records tokens")
        verify = 0
    if verify and data is None:
        say("pairs not verified: the run has no oppsig config to rebuild its model from")
        verify = 0
    mismatch = data_mismatch(examples)
    if verify and examples.x is not data[0].x:  # the replay trains on the whole training set: check it too
        mismatch = check_run_data(run, data[0], allow_other_data) or mismatch
    if mismatch is not None:
        say(f"warning: {mismatch_text(mismatch)}")
    t0 = time.perf_counter()
    if source == "batch" and batch_index is not None:
        say(f"searching the mini-batch record: {run.batches.entries} losses of {len(batch_index)} examples")
    else:
        say(f"searching {run.rows} steps x {len(run.index)} examples")
    res = find_signals_in_run(run, searched, config, source=source, scheduler=scheduler)
    say(f"found {len(res.groups)} groups and {len(res.pairs)} significant pairs in {time.perf_counter() - t0:.1f} s")
    t_verify = time.perf_counter()
    if verify and res.pairs:
        verifications = []
        spikes = {s.row: s for s in res.spikes}
        groups = {g.id: g for g in res.groups}
        loss_fn = get_loss(cfg.train.loss)
        for i, pair in enumerate(res.pairs[:verify]):
            say(f"checking {pair_name(i, pair)} on the model at the onset of its largest spike "
                "(replayed from the last kept checkpoint)")
            v = _verify_at_spike(run, data, examples, cfg, loss_fn, pair, groups, spikes, progress)
            verifications.append(v)
            say(f"{pair_name(i, pair)}: {verification_text(v)}")
        n_before = len(res.pairs)
        res = with_verifications(res, verifications)  # a pair whose gradients do not point apart is dropped
        res = dataclasses.replace(res, timings={**res.timings, "verification": time.perf_counter() - t_verify})
        if len(res.pairs) < n_before:
            say(f"{n_before - len(res.pairs)} pair(s) not reported: their groups' gradient cosine is >= 0")
    if mismatch is not None:
        res = dataclasses.replace(res, dataset={**res.dataset, "data_mismatch": mismatch})
    res = dataclasses.replace(res, dataset={**res.dataset, "inputs": has_inputs(examples)})
    return _save(res, examples if grids else None, Path(run_dir), say)


def _run_examples(run, train_set, source: str, allow_other_data: bool):
    """``(searched, examples)``: the examples detection searches (every example of the mini-batch record when it
    reads it, or when the dense record probes a subset of them, so that groups can be extended to all; else the
    dense record's columns) and those of the record's columns (image grids, verification), both checked against
    the run's data fingerprint once. Without ``train_set``: what the record alone tells
    (:func:`~oppsig.store.dataset.record_dataset`)."""
    from ..store import run_dataset
    from ..store.dataset import record_dataset

    b = run.batches
    every = b.index if b is not None and (source == "batch" or len(run.index) < b.n_examples) else None
    if train_set is None:
        searched = record_dataset(run, every)
    else:
        searched = run_dataset(run, train_set, index=every, allow_other_data=allow_other_data)
    if every is None or source == "batch":
        return searched, searched
    return searched, run_dataset(run, searched)  # the probe's columns; checked already (the check is kept)


def _save(res: SignalsResult, examples, path: Path, say) -> SignalsResult:
    """Write the image grids (when ``examples`` holds images) and ``signals.json`` into the run directory ``path``.

    Raises:
        StoreError: when a file cannot be written (a read-only run directory, a full disk), naming it and the fix.
    """
    target = path / "signals"
    try:
        if examples is not None and examples.raw is not None and res.groups:
            t_grids = time.perf_counter()
            say(f"drawing {len(res.groups)} group image grids")
            written = save_group_grids(res, examples, target)
            res = dataclasses.replace(res, timings={**res.timings, "grids": time.perf_counter() - t_grids})
            say(f"image grids: {target}/group_NN.png ({len(written)} files, one per group)")
        target = path / "signals.json"
        write_signals_json(res, target)
    except OSError as e:
        fix = {errno.ENOSPC: "free space on its disk", errno.EDQUOT: "free space on its disk (quota)",
               errno.EACCES: f"make {path} writable (chmod -R u+w) or detect a copy of the run",
               errno.EPERM: f"make {path} writable (chmod -R u+w) or detect a copy of the run",
               errno.EROFS: "detect a copy of the run on a writable disk"}.get(e.errno, "fix the cause")
        grids_hint = "; --no-grids skips the image grids" if target.name == "signals" else ""
        raise StoreError(f"cannot write the detection results to {target} ({e.strerror or e}); {fix} and run "
                         f"oppsig detect again{grids_hint}") from None
    return res
