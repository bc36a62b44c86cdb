"""``oppsig intervene RUN --mode remove|downweight|attenuate``: branch with the detected groups changed, against a random control."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("intervene", help="branch a run with its detected groups removed, down-weighted or attenuated")
    p.add_argument("run", help="run directory with signals.json and kept checkpoints")
    p.add_argument("--mode", choices=["remove", "downweight", "attenuate"], default="remove")
    p.add_argument("--group", type=int, action="append", help="group id (repeat; default: the top pair's two groups)")
    p.add_argument("--from-step", type=int, help="branch from the checkpoint at this step")
    p.add_argument("--steps", type=int, help="total steps of the branches (default: the run's)")
    p.add_argument("--weight", type=float, default=0.1, help="downweight: the groups' loss weight")
    p.add_argument("--attenuation", type=float, default=0.1, help="attenuate: scale of the shared feature")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.intervene import intervene

    res = intervene(args.run, args.mode, args.group, args.from_step, args.steps, args.weight, args.attenuation,
                    args.seed, args.overwrite, not args.no_progress)
    print(f"branched from step {res.from_step}: {len(res.members)} group examples, {len(res.control)} control examples")
    keys = ["spikes", "largest spike", "mean sharpness", "max sharpness / threshold", "final loss"]
    print(f"{'branch':24s}" + "".join(f"{k:>26s}" for k in keys))
    for label, row in res.table.items():
        print(f"{label:24s}" + "".join(f"{row.get(k, float('nan')):>26.4g}" for k in keys))
    for label, row in res.table.items():
        if "spikes not counted" in row:
            print(f"{label}: spikes not counted: {row['spikes not counted']}")
    if res.report:
        print(f"report: {res.report}")
    return 0
