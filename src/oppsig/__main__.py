import os
import sys

from .cli.main import main

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
