"""Interventions: the causal test that detected groups drive the instability.

Branch from a checkpoint before the spikes three times: untouched, with the
detected groups changed, and with random examples of the same size and class
mix changed the same way (the control). Modes:

- ``remove``: the examples leave the training set;
- ``downweight``: their loss counts ``weight`` times (default 0.1);
- ``attenuate``: their shared feature is scaled down in their inputs: with the
  group's signal direction ``d = mean(x_group) - mean(x)``, each member becomes
  ``x - (1 - a) * ((x - mean(x)) . d_hat) d_hat`` (``a`` = ``attenuation``).

Each branch is a normal run; the result compares their spikes and sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.base import ArrayDataset
from ..errors import ConfigError, StoreError

MODES = ("remove", "downweight", "attenuate")


@dataclass
class InterventionResult:
    branches: dict[str, Path] = field(default_factory=dict)
    table: dict[str, dict] = field(default_factory=dict)
    from_step: int = 0
    members: np.ndarray | None = None
    control: np.ndarray | None = None
    report: Path | None = None
    data_mismatch: dict | None = None  # with allow_other_data: what differs from the run's data


def matched_control(dataset: ArrayDataset, members: np.ndarray, seed: int = 0) -> np.ndarray:
    """Random rows with the same size and class counts as ``members``, disjoint from them."""
    rng = np.random.default_rng(seed)
    y = dataset.y.cpu().numpy()
    taken = np.zeros(len(y), dtype=bool)
    taken[members] = True
    out = []
    for c, k in zip(*np.unique(y[members], return_counts=True)):
        pool = np.flatnonzero((y == c) & ~taken)
        if len(pool) < k:
            pool = np.flatnonzero(~taken)
        out.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=int)


def apply(dataset: ArrayDataset, rows: np.ndarray, mode: str, weight: float = 0.1, attenuation: float = 0.1):
    """The intervened data set and per-example weights (or None) for ``rows`` under ``mode``."""
    if mode not in MODES:
        raise ConfigError(f"unknown intervention mode {mode!r}; valid: {', '.join(MODES)}")
    rows = np.asarray(rows, dtype=int)
    if mode == "remove":
        keep = np.setdiff1d(np.arange(len(dataset)), rows)
        return dataset.take(keep), None
    if mode == "downweight":
        w = torch.ones(len(dataset))
        w[torch.as_tensor(rows)] = weight
        return dataset, w
    x = dataset.x.clone()
    mu = x.mean(0)
    d = x[torch.as_tensor(rows)].mean(0) - mu
    dn = d / d.norm().clamp_min(1e-12)
    r = torch.as_tensor(rows)
    coef = ((x[r] - mu) * dn).flatten(1).sum(1)
    x[r] = x[r] - (1.0 - attenuation) * coef.view(-1, *([1] * (x.dim() - 1))) * dn
    from dataclasses import replace

    return replace(dataset, x=x), None


def _spike_stats(run_dir: Path) -> dict:
    from ..report.summary import run_summary
    from ..signals import SignalsConfig, SignalsError, detect_spikes
    from ..store import open_run

    run = open_run(run_dir)
    m = run.metrics
    s = run_summary(run)
    out = {"final loss": s["final loss"]}
    try:
        spikes = detect_spikes(np.asarray(m["loss"], dtype=float), np.asarray(m["step"]), SignalsConfig())
        out["spikes"] = len(spikes)
        out["largest spike"] = max((s.height for s in spikes), default=0.0)
    except SignalsError as e:  # too few steps, or a non-finite loss (a diverged branch): no count, and why
        out["spikes"], out["largest spike"] = float("nan"), float("nan")
        out["spikes not counted"] = str(e)
    out["mean sharpness"] = s["mean sharpness"]
    out["max sharpness / threshold"] = s["max sharpness / threshold"]
    return out


def intervene(run_dir: str | Path, mode: str = "remove", groups: list[int] | None = None, from_step: int | None = None,
              steps: int | None = None, weight: float = 0.1, attenuation: float = 0.1, seed: int = 0,
              overwrite: bool = False, progress: bool = True, report: bool = True, log=print,
              allow_other_data: bool = False) -> InterventionResult:
    """Branch the run in ``run_dir`` untouched, intervened and controlled, and compare them.

    Args:
        groups: group ids of the run's ``signals.json`` (default: both groups of the top pair).
        from_step: branch from the kept checkpoint at this step (default: the last one at
            least 20 steps before the first detected spike).
        steps: total steps of the branches (default: the run's).
        allow_other_data: go on when the rebuilt data are not those the run trained on (its data fingerprint);
            the result (``data_mismatch``) and the log say so.

    Raises:
        StoreError: when the run has no signals.json or no usable checkpoint.
        ConfigError: for an unknown mode or group.
        DataMismatchError: when the rebuilt data differ from the run's and ``allow_other_data`` is False.
    """
    from ..data import build_datasets
    from ..report.summary import load_signals
    from ..store import open_run
    from ..store.fingerprint import check_run_data, mismatch_text
    from ..training import load_checkpoint, train
    from ..training.checkpoint import list_checkpoints

    run_dir = Path(run_dir)
    run = open_run(run_dir)
    cfg = run.config
    if not hasattr(cfg, "data"):
        raise StoreError(f"{run_dir} was not trained by oppsig train; interventions need its config")
    sig = load_signals(run_dir)
    if sig is None:
        raise StoreError(f"{run_dir} has no signals.json; run `oppsig detect {run_dir}` first")
    by_id = {g.id: g for g in sig.groups}
    if groups is None:
        if not sig.pairs:
            raise StoreError(f"{run_dir}: no significant pair to intervene on; name groups with --group")
        p = sig.pairs[0]
        groups = [p.a, p.b]
    for g in groups:
        if g not in by_id:
            raise ConfigError(f"group {g} is not in {run_dir}/signals.json; valid: {sorted(by_id)}")
    members = np.unique(np.concatenate([np.asarray(by_id[g].members, dtype=int) for g in groups]))
    kept = list_checkpoints(run_dir)
    if not kept:
        raise StoreError(f"{run_dir} kept no intermediate checkpoint (train.keep_checkpoints); cannot branch")
    if from_step is None:
        first = min((s.step for s in sig.spikes), default=max(kept))
        cands = [s for s in kept if s <= first - 20] or [min(kept)]
        from_step = max(cands)
    if from_step not in kept:
        raise StoreError(f"no checkpoint at step {from_step} in {run_dir}; kept: {sorted(kept)}")
    ckpt = load_checkpoint(kept[from_step])
    train_set, test_set = build_datasets(cfg.data, seed=cfg.seed)
    mismatch = check_run_data(run, train_set, allow_other_data)
    if mismatch is not None:
        log(f"warning: {mismatch_text(mismatch)}")
    control = matched_control(train_set, members, seed)
    total = steps or cfg.train.steps
    out = InterventionResult(from_step=from_step, members=members, control=control, data_mismatch=mismatch)
    for label, rows in (("untouched", None), (f"{mode}-groups", members), (f"{mode}-control", control)):
        data, w = (train_set, None) if rows is None else apply(train_set, rows, mode, weight, attenuation)
        bcfg = cfg.replace([f"name={cfg.name}-{label}", f"train.steps={total}", f"out_dir={run_dir.parent}"])
        log(f"branch {label} from step {from_step} ({len(data)} examples)")
        res = train(bcfg, overwrite=overwrite, progress=progress, data=(data, test_set), branch_from=ckpt,
                    example_weights=w)
        out.branches[label] = res.run_dir
        out.table[label] = _spike_stats(res.run_dir)
    if report:
        from ..report import write_report

        # an attenuated branch trained on changed inputs: its section shows the config's, under a banner
        out.report = write_report(list(out.branches.values()), run_dir.parent / f"{cfg.name}-intervention.html",
                                  allow_other_data=True)
    return out
