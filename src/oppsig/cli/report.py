"""``oppsig report RUN [RUN ...]``: one self-contained HTML page per run or comparison."""

from __future__ import annotations

from ._common import add_allow_other_data


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="write report.html for a run, or a comparison of several runs",
        description="Write one self-contained HTML page (figures embedded, no network needed): loss, sharpness "
                    "against the stability threshold and, when <run>/signals.json exists (oppsig detect), every "
                    "significant opposing pair with its anti-phase losses and images. Several runs: a comparison.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", help="the HTML file to write (default: <run>/report.html, or comparison.html beside the "
                                 "first run for several)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files, needs tensorboard (default: not written)")
    add_allow_other_data(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import write_report, write_tensorboard
    from ..report.summary import load_signals
    from ..store import open_run

    path = write_report(args.runs, args.out, allow_other_data=args.allow_other_data)
    print(f"report: {path}")
    if args.tensorboard:
        for d in args.runs:
            tb = write_tensorboard(open_run(d), load_signals(d))
            print(f"tensorboard: {tb}" if tb else "tensorboard is not installed: pip install 'oppsig[tensorboard]'")
    return 0
