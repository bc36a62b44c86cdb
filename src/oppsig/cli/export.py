"""``oppsig export RUN``: the per-example summary table (mean loss, variability, forgetting) as CSV or Parquet."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write the per-example summary table of a run (CSV or Parquet)",
        description="One row per recorded example: stable id, class, the opposing group it belongs to (when "
                    "signals.json exists), mean and final loss, loss variability and forgetting events.")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="output file, .csv or .parquet (default <run>/examples.csv)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import open_run
    from ..store.export import write_summary

    path = write_summary(open_run(args.run), args.out)
    print(f"per-example summary: {path}")
    return 0
