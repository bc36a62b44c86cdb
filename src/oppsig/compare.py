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

from .config import Config
from .errors import ConfigError
from .optim import OPTIMIZERS

# settings that make each optimiser a sensible branch of a GD run at its edge of stability
BRANCH_DEFAULTS: dict[str, tuple[str, ...]] = {
    "gd": (),
    "sgd": ("optim.momentum=0.9", "train.batch_size=128", "record.every=1"),
    "adam": ("optim.lr=0.0005", "train.batch_size=100000"),
    "adamw": ("optim.lr=0.0005", "train.batch_size=100000"),
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


def branch_config(base: Config, spec: BranchSpec, steps: int | None) -> Config:
    """The config of one branch: the base config with the branch's optimiser, defaults and overrides."""
    ov = [f"optim.name={spec.name}", *BRANCH_DEFAULTS.get(spec.name, ()), *spec.overrides,
          f"name={base.name}-{spec.run_name}"]
    if steps is not None:
        ov.append(f"train.steps={steps}")
    return base.replace(ov)


def compare(cfg: Config, branches: list[BranchSpec], branch_at: int, steps: int | None = None,
            detect: bool = True, report: bool = True, overwrite: bool = False, progress: bool = True,
            log=print) -> CompareResult:
    """Train the base run to ``branch_at``, then each branch from there to ``steps`` (default ``cfg.train.steps``).

    Raises:
        ConfigError: when ``branch_at`` is not inside the run.
    """
    from .train import load_checkpoint, train

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
        res = train(bcfg, overwrite=overwrite, progress=progress, branch_from=ckpt)
        out.branches[spec.run_name] = res.run_dir
        if detect:
            try:
                from .signals.run import detect_run
                from .signals import summary_text

                out.summaries[spec.run_name] = summary_text(detect_run(res.run_dir))
            except ImportError:
                pass
    if report:
        from .report import write_report

        out.report = write_report(list(out.branches.values()), Path(cfg.out_dir) / f"{cfg.name}-comparison.html")
    return out
