import os
import signal
import sys


def _interrupted(signum, frame):
    raise SystemExit(130)


# Ctrl-C while the command line itself loads (before main() holds it back around the libraries): exit 130, no
# traceback
signal.signal(signal.SIGINT, _interrupted)
from .cli.main import main  # noqa: E402

signal.signal(signal.SIGINT, signal.default_int_handler)
code = main()
if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
    # A torchrun rank whose command finished: every file is written and closed, the process group destroyed.
    # Skip the interpreter's teardown of torch's C++ state: in two-rank CPU runs it aborted a finished rank now
    # and then (SIGABRT, "terminate called without an active exception"), and torchrun then reported the whole
    # run as failed (docs/findings.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
