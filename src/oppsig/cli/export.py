"""``oppsig export RUN``: the per-example summary table (mean loss, variability, forgetting) as CSV or Parquet."""

from __future__ import annotations

from ._common import add_allow_other_data


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write the per-example summary table of a run (CSV or Parquet)",
        description="One row per recorded example: stable id, class, the opposing group it belongs to (when "
                    "signals.json exists), mean and final loss, loss variability and forgetting events.")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="output file, .csv or .parquet (default <run>/examples.csv)")
    p.add_argument("--source", choices=("auto", "dense", "batch"), default="auto",
                   help="dense record, the sparse mini-batch record, or auto (dense when it has a row; default)")
    add_allow_other_data(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report.summary import example_columns
    from ..store import open_run
    from ..store.batches import EpochRun
    from ..store.export import uses_batches, write_summary

    run = open_run(args.run)
    view = EpochRun(run) if uses_batches(run, args.source) else run
    extra, why = example_columns(view, allow_other_data=args.allow_other_data)
    path = write_summary(run, args.out, extra, source=args.source)
    print(f"per-example summary: {path}")
    if "other_data" in extra:
        print(f"OTHER DATA: the class column comes from data that are not the run's ({extra['other_data'][0]}); "
              "the other_data column says so in every row")
    if why:
        print(f"no class column: {why}")
    if not (run.path / "signals.json").exists():
        print("group column empty: the run has no signals.json (run oppsig detect RUN first)")
    return 0
