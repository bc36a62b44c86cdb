"""``oppsig export RUN``: the per-example summary table (mean loss, variability, forgetting) as CSV or Parquet."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the per-example summary table of a run (CSV or Parquet)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="output file, .csv or .parquet (default <run>/examples.csv)")
    p.add_argument("--source", choices=("auto", "dense", "batch"), default="auto",
                   help="dense record, the sparse mini-batch record, or auto (dense when it has a row)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import open_run
    from ..store.export import write_summary

    path = write_summary(open_run(args.run), args.out, source=args.source)
    print(f"per-example summary: {path}")
    return 0
