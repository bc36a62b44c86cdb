"""``oppsig train CONFIG [--section.key=value ...]``: train and record a run."""

from __future__ import annotations

from pathlib import Path

from ._common import split_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network from a config and record every example's loss",
                       description="Train from a YAML config; extra --section.key=value arguments override it.")
    p.add_argument("config", nargs="?", help="YAML config (see configs/); default: built-in synthetic run")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (default: a new run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of the same name (default: refuse)")
    p.add_argument("--data-dir", help="folder holding the data sets (default: $OPPSIG_DATA, else ~/.cache/oppsig)")
    p.add_argument("--name", help="run name; the run directory is <out_dir>/<name> (default: the config's name)")
    p.add_argument("--out-dir", help="parent folder of run directories (default runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.set_defaults(func=run, accepts_overrides=True)


def _live(cfg) -> dict:
    """The live-attribution hook (``live.enabled``), and the example weights its down-weight action changes."""
    if not cfg.live.enabled:
        return {}
    from ..live import LiveHook

    kw: dict = {"hooks": [LiveHook(cfg.live)]}
    if cfg.live.downweight_group is not None:
        import torch

        from ..data import build_datasets

        kw["data"] = build_datasets(cfg.data, seed=cfg.seed)
        kw["example_weights"] = torch.ones(len(kw["data"][0]))
    return kw


def run(args) -> int:
    from ..config import load_config
    from ..errors import ConfigError
    from ..training import train

    overrides = split_overrides(args.overrides)
    if args.data_dir:
        overrides.append(f"data.dir={args.data_dir}")
    if args.name is not None:
        if not args.name.strip():
            raise ConfigError("--name is empty; give the run a name, e.g. --name=lr005 (or leave --name out)")
        overrides.append(f"name={args.name}")
    if args.out_dir is not None:
        overrides.append(f"out_dir={args.out_dir}")
    if args.resume:
        rd = Path(args.resume)
        if not (rd / "config.yaml").exists():
            raise ConfigError(f"cannot resume {rd}: it has no config.yaml (is it a run directory?)")
        cfg = load_config(rd / "config.yaml", overrides)
        asked = tuple(o.lstrip("-").split("=", 1)[0].strip() for o in overrides)
        result = train(cfg, run_dir=rd, resume=True, progress=not args.no_progress, resume_overrides=asked,
                       **_live(cfg))
    else:
        cfg = load_config(args.config, overrides)  # no file: the built-in defaults (synthetic data)
        result = train(cfg, overwrite=args.overwrite, progress=not args.no_progress, **_live(cfg))
    m = result.metrics
    print(f"{result.run_dir}: {result.next_step} steps ({result.stopped}), loss {m.get('loss', float('nan')):.4f}, "
          f"accuracy {m.get('accuracy', float('nan')):.3f}, {result.wall_time:.1f} s")
    if result.probe:
        pr = result.probe
        print(f"probe: {pr['n']:,} examples every {pr['every']} steps took {100 * pr['measured_share']:.1f}% of "
              f"the training steps' time (planned {100 * pr['planned_share']:.1f}%, budget {100 * pr['budget']:g}%)")
    if result.resume_command:
        print(f"stopped early; resume with: {result.resume_command}")
        return 130
    return 0
