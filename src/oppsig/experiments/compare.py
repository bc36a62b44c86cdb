"""Branching: train once to a checkpoint, then continue several runs from that identical state.

Each branch is a normal run (recorded, sharpness tracked, signals detected) that
starts from the base run's model at step ``branch_at`` and sees the same data
order (mini-batches are a function of the seed and the step). Branches differ in
their optimiser and its settings; the optimiser state is carried over only when
a branch keeps the base run's optimiser.

Example:
    >>> specs = parse_branches("gd,adam:optim.lr=0.0005")
    >>> [(b.name, b.overrides) for b in specs]
    [('gd', ()), ('adam', ('optim.lr=0.0005',))]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import ConfigError, DataMismatchError, DivergenceError, OppsigError
from ..optim import OPTIMIZERS

# settings that make each optimiser a sensible branch of a GD run at its edge of stability (an SGD branch probes
# every example at every step, as the GD run records them: far over the default probe budget, for the comparison)
EVERY_EXAMPLE = 2**62  # record.probe_n at least the data set's size: every example
BRANCH_DEFAULTS: dict[str, tuple[str, ...]] = {
    "gd": (),
    "sgd": ("optim.momentum=0.9", "train.batch_size=128", "record.every=1", f"record.probe_n={EVERY_EXAMPLE}"),
    "adam": ("optim.lr=0.0005", "train.batch_size=100000", "curvature.preconditioned=true"),
    "adamw": ("optim.lr=0.0005", "train.batch_size=100000", "curvature.preconditioned=true"),
    "splitsgd": ("optim.momentum=0.9", "optim.dampening=0.9", "train.batch_size=100000"),
    "sam": ("optim.rho=0.05",),
    "signsgd": ("optim.lr=0.0005", "train.batch_size=100000"),
}


@dataclass(frozen=True)
class BranchSpec:
    """One branch: an optimiser name, a label, and dotted overrides applied after the defaults."""

    name: str
    overrides: tuple[str, ...] = ()
    label: str = ""

    @property
    def run_name(self) -> str:
        return self.label or self.name


def parse_branches(text: str) -> list[BranchSpec]:
    """``"gd,sgd,adam:optim.lr=0.001;train.batch_size=256"`` -> branch specs.

    Raises:
        ConfigError: for an unknown optimiser (the message lists the valid ones).
    """
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, rest = part.partition(":")
        opt = name.split("@")[0]
        if opt not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {opt!r} in --optimizers; valid: {', '.join(OPTIMIZERS)}")
        ov = tuple(o.strip() for o in rest.split(";") if o.strip())
        label = name.replace("@", "-") if "@" in name else (opt if not ov else f"{opt}-" + "-".join(
            o.split("=")[-1] for o in ov))
        out.append(BranchSpec(opt, ov, label))
    if not out:
        raise ConfigError("--optimizers names no optimiser (e.g. gd,sgd,adam,splitsgd)")
    return out


@dataclass
class CompareResult:
    base: Path
    branches: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None
    summaries: dict[str, str] = field(default_factory=dict)
    diverged: dict[str, str] = field(default_factory=dict)


def branch_config(base: Config, spec: BranchSpec, steps: int | None) -> Config:
    """The config of one branch: the base config with the branch's optimiser, defaults and overrides."""
    ov = [f"optim.name={spec.name}", *BRANCH_DEFAULTS.get(spec.name, ()), *spec.overrides,
          f"name={base.name}-{spec.run_name}"]
    if steps is not None:
        ov.append(f"train.steps={steps}")
    return base.replace(ov)


def compare(cfg: Config, branches: list[BranchSpec], branch_at: int, steps: int | None = None,
            detect: bool = True, report: bool = True, overwrite: bool = False, progress: bool = True,
            log=print, allow_other_data: bool = False) -> CompareResult:
    """Train the base run to ``branch_at``, then each branch from there to ``steps`` (default ``cfg.train.steps``).

    Each branch's detection checks the data it rebuilds against the branch's data fingerprint
    (``allow_other_data``: go on when they differ, and say so in its summary; see :func:`detect_run`).

    Raises:
        ConfigError: when ``branch_at`` is not inside the run.
    """
    from ..training import load_checkpoint, train

    total = steps or cfg.train.steps
    if not 0 < branch_at < total:
        raise ConfigError(f"--branch-at must lie in 1..{total - 1} (got {branch_at})")
    base_cfg = cfg.replace([f"train.steps={branch_at}", f"name={cfg.name}-base"])
    log(f"base run to step {branch_at}")
    base = train(base_cfg, overwrite=overwrite, progress=progress)
    ckpt = load_checkpoint(base.run_dir)
    out = CompareResult(base.run_dir)
    for spec in branches:
        bcfg = branch_config(cfg, spec, total)
        log(f"branch {spec.run_name}: {bcfg.optim.name}, lr {bcfg.optim.lr:g}, steps {branch_at}..{total - 1}")
        try:
            res = train(bcfg, overwrite=overwrite, progress=progress, branch_from=ckpt)
        except DivergenceError as e:  # a branch that blows up is a result too: keep what it recorded
            log(f"branch {spec.run_name} diverged: {e}")
            out.diverged[spec.run_name] = str(e)
            res = None
        run_dir = res.run_dir if res is not None else Path(bcfg.out_dir) / bcfg.name
        out.branches[spec.run_name] = run_dir
        if detect:
            try:
                from .detect import detect_run
                from ..signals import summary_text
                from ..store.fingerprint import mismatch_text

                found = detect_run(run_dir, verify=1, allow_other_data=allow_other_data)
                other = found.dataset.get("data_mismatch")
                out.summaries[spec.run_name] = summary_text(found) + (
                    f"\nOTHER DATA: {mismatch_text(other)}" if other else "")
            except DataMismatchError:
                raise
            except OppsigError as e:  # e.g. too few steps recorded before a divergence
                out.summaries[spec.run_name] = f"no detection: {e}"
    if report:
        from ..report import write_report

        out.report = write_report(list(out.branches.values()), Path(cfg.out_dir) / f"{cfg.name}-comparison.html")
    return out


TABLE_COLUMNS = ("branch", "optimiser", "spikes", "largest", "pairs", "pair swing", "sharp/thr", "precond/thr",
                 "|update.v|", "final loss", "train acc", "test acc")


def comparison_table(branches: dict[str, Path], reference: str | None = None) -> tuple[list[dict], str]:
    """One row of figures per branch, and a line naming the groups the ``pair swing`` column follows.

    ``pair swing`` is the standard deviation of the per-step change of the mean loss of the reference
    branch's top detected pair (both groups), measured in every branch on the same examples: how strongly
    those opposing groups oscillate under each optimiser. ``sharp/thr`` is the median of the sharpness the
    optimiser's stability threshold is for over that threshold (the preconditioned one for Adam/AdamW, whose
    branches track it), ``precond/thr`` that of the Adam-preconditioned top eigenvalue (Adam/AdamW only); a
    dash where the optimiser has no threshold (SAM, sign-SGD, see :func:`oppsig.curvature.stability`).
    """
    import numpy as np

    from ..report.summary import load_signals, run_summary
    from ..store import open_run

    runs = {k: open_run(v) for k, v in branches.items()}
    reference = reference or next(iter(runs))
    ref_sig = load_signals(branches[reference])
    pair = ref_sig.pairs[0] if ref_sig is not None and ref_sig.pairs else None
    note = "no significant pair in the reference branch"
    ids = None
    if pair is not None:
        by_id = {g.id: g for g in ref_sig.groups}
        ga, gb = by_id[pair.a], by_id[pair.b]
        ids = np.asarray(runs[reference].index)[np.asarray(list(ga.members) + list(gb.members), dtype=int)]
        note = (f"pair swing follows {reference}'s top pair: group {ga.id} ({ga.size}; {', '.join(ga.shared[:2])}) "
                f"vs group {gb.id} ({gb.size}; {', '.join(gb.shared[:2])}), corr {pair.corr:.2f}")
    rows = []
    for name, run in runs.items():
        m = run.metrics
        sig = load_signals(branches[name])
        s = run_summary(run)

        up = np.asarray(m.get("update_proj", []), float)
        up = up[np.isfinite(up)]
        swing = float("nan")
        if ids is not None:
            cols = np.sort(np.flatnonzero(np.isin(run.index, ids)))
            if len(cols):
                g = np.asarray(run.losses[:, cols], dtype=np.float64).mean(1)
                swing = float(np.std(np.diff(g)))
        cfg = run.config
        diverged = run.meta.get("stopped") == "diverged"
        rows.append({
            "branch": name + (f" (diverged at {run.meta.get('diverged_at')})" if diverged else ""),
            "optimiser": f"{cfg.optim.name} {cfg.optim.lr:g}",
            "spikes": len(sig.spikes) if sig else float("nan"),
            "largest": max((x.height for x in sig.spikes), default=0.0) if sig else float("nan"),
            "pairs": len(sig.pairs) if sig else float("nan"), "pair swing": swing,
            "sharp/thr": s["median sharpness / threshold"], "precond/thr": s["median precond / threshold"],
            "|update.v|": float(np.mean(np.abs(up))) if len(up) else float("nan"),
            "final loss": s["final loss"], "train acc": s["final accuracy"], "test acc": s["test accuracy"],
        })
    return rows, note


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`comparison_table` as a fixed-width text table."""
    def cell(v):
        if isinstance(v, float):
            return "-" if v != v else f"{v:.3g}"
        return str(v)

    cells = [[cell(r[c]) for c in TABLE_COLUMNS] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) + 2 for i, c in enumerate(TABLE_COLUMNS)]
    lines = ["".join(f"{c:>{w}s}" for c, w in zip(TABLE_COLUMNS, widths))]
    lines += ["".join(f"{v:>{w}s}" for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
