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
    from ..report.summary import example_columns
    from ..store import open_run
    from ..store.export import write_summary

    run = open_run(args.run)
    extra, why = example_columns(run)
    path = write_summary(run, args.out, extra)
    print(f"per-example summary: {path}")
    if why:
        print(f"no class column: {why}")
    if not (run.path / "signals.json").exists():
        print("group column empty: the run has no signals.json (run oppsig detect RUN first)")
    return 0
