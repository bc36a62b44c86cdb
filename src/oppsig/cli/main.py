"""``oppsig <command>``: dispatch to one module per subcommand; turn oppsig errors into one-line messages."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import traceback
import warnings

from ..errors import DivergenceError, OppsigError, OppsigWarning

COMMANDS = ("train", "demo", "detect", "report", "sharpness", "compare", "intervene", "toy", "export", "env", "data")


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    p = argparse.ArgumentParser(
        prog="oppsig",
        description="Find the training examples that destabilise optimisation (opposing signals), and show how.",
    )
    p.add_argument("--version", action="version", version=f"oppsig {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:  # the command modules import only the standard library at the top: a failure is a bug
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error is one line on stderr (``--debug``: with its traceback).

    Exit status: 0 done, 1 no command, 2 an error (bad input, data, run directory), 3 the
    training diverged, 130 interrupted (Ctrl-C, also while the libraries load).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    with warnings.catch_warnings(), _interrupt_handler():
        warnings.showwarning = _show_warning
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - every error ends as one line; --debug shows where it came from
            if debug:
                traceback.print_exc()
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return 3 if isinstance(e, DivergenceError) else 2 if _is_user_error(e) else 1


class _Interrupt:
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, and is remembered (``interrupted``): a
    KeyboardInterrupt raised while a finaliser runs is swallowed ("Exception ignored in ..."), and the training
    loop, which checks ``interrupted`` on the handler it replaces, then stops before its first step instead of
    training on."""

    interrupted = False

    def __call__(self, signum, frame):
        self.interrupted = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_handler():
    """:class:`_Interrupt` as the SIGINT handler for the command (main thread only), the previous one after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, _Interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_overrides(argv))
    if args.command is None:
        parser.print_help()
        return 1
    _load_libraries()
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return int(args.func(args) or 0)


def _join_overrides(argv: list[str]) -> list[str]:
    """``--section.key value`` -> ``--section.key=value``, so that the value is not read as a positional argument.

    Registered options have no dot in their names, so a dotted ``--name`` can only be a config override.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if (a.startswith("--") and "." in a and "=" not in a and i + 1 < len(argv)
                and not argv[i + 1].startswith("--")):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _load_libraries() -> None:
    """Import numpy, torch and zarr with Ctrl-C held back until they are loaded, then act on it.

    A KeyboardInterrupt raised in the middle of an import can leave a library half
    initialised, which then fails with an unrelated error; held back, it becomes a
    clean "interrupted" (exit 130) once the imports are done.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    hit = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import zarr  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, old)
    if hit:
        raise KeyboardInterrupt


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, (OppsigError, MemoryError)) or _out_of_memory(e)


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def _one_line(e: BaseException) -> str:
    """The message of ``e`` as one line: oppsig's own errors as they are, others named as what they are."""
    if isinstance(e, OppsigError):
        return str(e)
    if isinstance(e, MemoryError) or _out_of_memory(e):
        return ("out of memory: the data, model or batch does not fit; use a smaller --data.n, a smaller model "
                "or a smaller --train.physical_batch_size")
    if isinstance(e, BrokenPipeError):
        return "the output was closed before oppsig finished writing"
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return (f"internal error ({type(e).__name__}: {first}); this is a bug in oppsig: rerun with --debug for the "
            "traceback and report it")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of oppsig as ``warning: <message>`` on stderr (one line, no source line)."""
    text = str(message)
    if not issubclass(category, OppsigWarning):
        text = f"{text} ({category.__name__})"
    print(f"warning: {text}", file=sys.stderr if file is None else file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
