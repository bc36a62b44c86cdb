"""``oppsig detect RUN``: find the opposing signals of a recorded run and print a short summary."""

from __future__ import annotations

from ._common import add_allow_other_data


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="find opposing signals in a recorded run (writes signals.json and image grids)",
        description="Find the loss spikes, the recurring extreme examples, the groups that move together and the "
                    "pairs of groups in anti-phase that beat a null of random examples; check the strongest pairs "
                    "on the model (gradient cosine at their spike); write <run>/signals.json and one image grid per "
                    "group in <run>/signals/.")
    p.add_argument("run", help="run directory")
    p.add_argument("--k", type=int, help="examples per step among the largest loss increases/decreases (default 20)")
    p.add_argument("--verify", type=int, default=3, help="check this many pairs on the model, 0: none (default 3)")
    p.add_argument("--no-grids", action="store_true", help="do not write image grids (default: written)")
    p.add_argument("--source", choices=("auto", "dense", "batch"), default="auto",
                   help="the record to read: dense (every example at recorded steps), batch (each example's loss in "
                        "its own mini-batch, one row per epoch), auto (dense when it has 8+ rows, else batch; default)")
    p.add_argument("--max-memory-mb", type=float,
                   help="memory budget (MB) of the loss matrix: held whole when it fits, else streamed in row "
                        "blocks sized to fit (default 2048)")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="run the passes over the store on Dask: threads, processes, or a scheduler address "
                        "(tcp://host:8786); needs pip install 'oppsig[dask]' (default: none, computed here)")
    add_allow_other_data(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import OppsigError
    from ..signals import SignalsConfig, summary_text
    from ..experiments.detect import detect_run

    over = {k: v for k, v in (("k", args.k), ("max_memory_mb", args.max_memory_mb)) if v is not None}
    cfg = SignalsConfig(**over)
    scheduler, client = args.dask, None
    if scheduler is not None and scheduler not in ("threads", "processes", "synchronous"):
        try:
            from distributed import Client
        except ImportError:
            raise OppsigError("--dask with a scheduler address needs distributed: pip install 'oppsig[dask]'") from None
        scheduler = client = Client(args.dask)
    try:
        res = detect_run(args.run, cfg, verify=args.verify, grids=not args.no_grids, log=lambda m: print(f"  {m}"),
                         source=args.source, scheduler=scheduler, allow_other_data=args.allow_other_data)
    finally:
        if client is not None:
            client.close()
    print(summary_text(res))
    if res.dataset.get("inputs") is False and res.groups:  # without the inputs, the ids say who they are
        print("the groups' examples by id (signals.json lists all):")
        for g in res.groups[:6]:
            more = f", ... ({len(g.ids)} in all)" if len(g.ids) > 8 else ""
            print(f"  group {g.id}: {', '.join(str(i) for i in g.ids[:8])}{more}")
    if res.dataset.get("data_mismatch"):
        from ..store.fingerprint import mismatch_text

        print(f"OTHER DATA: {mismatch_text(res.dataset['data_mismatch'])}")
    print(f"saved: {args.run}/signals.json")
    from pathlib import Path

    if not args.no_grids and any(Path(args.run, "signals").glob("group_*.png")):
        print(f"image grids: {Path(args.run, 'signals')}/group_NN.png (one per group; NN is the group id)")
    elif not args.no_grids and res.dataset.get("inputs") is False:
        print("image grids: none (the run's inputs were not given)")
    elif not args.no_grids:
        print("image grids: none (the data are not images)")
    return 0
