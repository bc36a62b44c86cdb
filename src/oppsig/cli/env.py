"""``oppsig env``: versions, devices and the data sets oppsig can find."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("env", help="show versions, devices, ranks and data found",
                       description="Print oppsig's and its libraries' versions, the code revision, the devices, "
                                   "this process's rank (under torchrun) and the data sets oppsig can find.")
    p.add_argument("--data-dir", help="folder holding the data sets (default: $OPPSIG_DATA, else ~/.cache/oppsig)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import torch

    from ..data.cifar import find_cifar10
    from ..data.text import find_text
    from ..errors import DataNotFoundError
    from ..store.format import environment

    env = environment()
    for k in ("oppsig_version", "code_revision", "python", "torch", "numpy", "platform", "threads"):
        print(f"{k:16s} {env[k]}")
    print(f"{'cuda':16s} {torch.cuda.device_count()} device(s)" + (f": {env['cuda']}" if env["cuda"] else ""))
    if "WORLD_SIZE" in os.environ:
        local = f", local rank {os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else ""
        print(f"{'ranks':16s} rank {os.environ.get('RANK', '?')} of {os.environ['WORLD_SIZE']}{local}")
    else:
        print(f"{'ranks':16s} 1 process, rank 0 of 1 (not under torchrun)")
    c = find_cifar10(args.data_dir)
    print(f"{'cifar10':16s} {c if c else 'not found (set OPPSIG_DATA or --data-dir)'}")
    try:
        t = find_text(None, args.data_dir)
    except DataNotFoundError:
        t = "not found"
    print(f"{'tinyshakespeare':16s} {t}")
    return 0
