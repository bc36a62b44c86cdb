"""``oppsig data download cifar10``: fetch and verify the official archive into the cache."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="download data sets (needs internet)",
                       description="oppsig data download cifar10: fetch the python version of CIFAR-10, check its "
                                   "MD5 and unpack it where oppsig looks for it.")
    p.add_argument("action", choices=["download"], metavar="ACTION", help="what to do: download")
    p.add_argument("dataset", choices=["cifar10"], metavar="DATASET", help="which data set: cifar10")
    p.add_argument("--dest", help="where to put it (default ~/.cache/oppsig)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.cifar import download_cifar10

    path = download_cifar10(args.dest)
    print(f"CIFAR-10 is in {path}")
    return 0
