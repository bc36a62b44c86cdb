"""``oppsig compare CONFIG --optimizers gd,sgd,adam,splitsgd --branch-at STEP``: branch runs from one checkpoint."""

from __future__ import annotations

from ._common import add_allow_other_data, split_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train to a checkpoint, then branch several optimisers from it and compare",
                       description="Branch specs: NAME[:key=value;key=value], e.g. adam:optim.lr=0.001. "
                                   "Extra --section.key=value arguments override the config of every run.")
    p.add_argument("config", nargs="?", help="YAML config of the base run (default: built-in synthetic run)")
    p.add_argument("--optimizers", default="gd,sgd,adam,splitsgd",
                   help="comma-separated branch specs NAME[:key=value;...] (default gd,sgd,adam,splitsgd)")
    p.add_argument("--branch-at", type=int, required=True, help="step at which the branches start")
    p.add_argument("--steps", type=int, help="total steps of each branch (default: the config's train.steps)")
    p.add_argument("--no-detect", action="store_true",
                   help="do not run signal detection on the branches (default: detected)")
    p.add_argument("--overwrite", action="store_true", help="replace existing runs of the same names (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    add_allow_other_data(p)
    p.set_defaults(func=run, accepts_overrides=True)


def run(args) -> int:
    from ..experiments.compare import compare, parse_branches
    from ..config import load_config

    cfg = load_config(args.config, split_overrides(args.overrides))
    res = compare(cfg, parse_branches(args.optimizers), args.branch_at, args.steps, detect=not args.no_detect,
                  overwrite=args.overwrite, progress=not args.no_progress, allow_other_data=args.allow_other_data)
    print(f"base: {res.base}")
    for name, d in res.branches.items():
        print(f"branch {name}: {d}")
        if name in res.summaries:
            print("  " + res.summaries[name].replace("\n", "\n  "))
    if res.branches:
        from ..experiments.compare import comparison_table, format_table

        rows, note = comparison_table(res.branches)
        print(format_table(rows))
        print(note)
    if res.report:
        print(f"comparison report: {res.report}")
    return 0
