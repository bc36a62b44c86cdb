"""``oppsig <command>``: dispatch to one module per subcommand; turn oppsig errors into one-line messages."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import DivergenceError, OppsigError

COMMANDS = ("train", "demo", "detect", "report", "sharpness", "compare", "intervene", "toy", "export", "env", "data")


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    p = argparse.ArgumentParser(
        prog="oppsig",
        description="Find the training examples that destabilise optimisation (opposing signals), and show how.",
    )
    p.add_argument("--version", action="version", version=f"oppsig {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:  # the command modules import only the standard library at the top: a failure is a bug
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except OppsigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
