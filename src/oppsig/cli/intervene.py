"""``oppsig intervene RUN --mode remove|downweight|attenuate``: branch with the detected groups changed, \
against a random control."""

from __future__ import annotations

from ._common import add_allow_other_data


def add_parser(sub) -> None:
    p = sub.add_parser(
        "intervene", help="branch a run with its detected groups removed, down-weighted or attenuated",
        description="Branch a detected run from a checkpoint before its first spike three times: untouched, with "
                    "the groups changed, and with a random control of the same size and class mix; tabulate "
                    "spikes and sharpness.")
    p.add_argument("run", help="run directory with signals.json and kept checkpoints")
    p.add_argument("--mode", choices=["remove", "downweight", "attenuate"], default="remove",
                   help="remove the groups' examples, down-weight their loss, or attenuate their shared feature "
                        "(default remove)")
    p.add_argument("--group", type=int, action="append", help="group id (repeat; default: the top pair's two groups)")
    p.add_argument("--from-step", type=int,
                   help="branch from the checkpoint at this step "
                        "(default: the last kept one at least 20 steps before the first spike)")
    p.add_argument("--steps", type=int, help="total steps of the branches (default: the run's)")
    p.add_argument("--weight", type=float, default=0.1, help="downweight: the groups' loss weight (default 0.1)")
    p.add_argument("--attenuation", type=float, default=0.1,
                   help="attenuate: scale of the shared feature (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing branch runs (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    add_allow_other_data(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.intervene import intervene

    res = intervene(args.run, args.mode, args.group, args.from_step, args.steps, args.weight, args.attenuation,
                    args.seed, args.overwrite, not args.no_progress, allow_other_data=args.allow_other_data)
    print(f"branched from step {res.from_step}: {len(res.members)} group examples, {len(res.control)} control examples")
    keys = ["spikes", "largest spike", "mean sharpness", "max sharpness / threshold", "final loss"]
    print(f"{'branch':24s}" + "".join(f"{k:>26s}" for k in keys))
    for label, row in res.table.items():
        print(f"{label:24s}" + "".join(f"{row.get(k, float('nan')):>26.4g}" for k in keys))
    for label, row in res.table.items():
        if "spikes not counted" in row:
            print(f"{label}: spikes not counted: {row['spikes not counted']}")
    if res.data_mismatch is not None:
        from ..store.fingerprint import mismatch_text

        print(f"OTHER DATA: {mismatch_text(res.data_mismatch)}")
    if res.report:
        print(f"report: {res.report}")
    return 0
