"""The long fuzz run: thousands of generated bad inputs through the command line.

Kinds (see ``tests/faults/fuzzing.py``): config files, dotted overrides, damaged runs (then
export / detect / report / sharpness / resume / overwrite on them), data files (CIFAR
batches, text), runs whose data differ from their data fingerprint (detect / report / export /
sharpness / intervene, with and without ``--allow-other-data``) and resumes of a run with live
attribution and curvature on (stopped or killed at a random step, or finished; plainly, with an
allowed change or a refused one). Each input is checked for the three things that must never
happen: a traceback, a file outside the run directory touched, a wrong number returned without an
error or a flag (``export`` against the intact record, other data not refused or not flagged, a
plain resume against the uninterrupted run); and for ending as expected (``unexpected``). Fixed
seed (hypothesis derandomized).

    python benchmarks/fuzz_inputs.py [--count 1000] [--out fuzz.jsonl] [--kinds otherdata,resume]

Prints the count per kind, how each ended (exit 0, a one-line error, flagged with a
warning), and every problem; exit status 1 when there is one.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.faults.fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.faults.fuzzing import KINDS, Harness, plans  # noqa: E402

SHARE = {"config": 0.15, "overrides": 0.15, "damaged": 0.3, "data": 0.15, "otherdata": 0.125, "resume": 0.125}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="inputs in all")
    ap.add_argument("--out", help="write one JSON line per input here")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated kinds, run in this order (default {','.join(KINDS)})")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    h = Harness(tempfile.mkdtemp(prefix="oppsig-fuzz-"))
    log = open(args.out, "w") if args.out else None
    stats: dict = collections.defaultdict(collections.Counter)
    problems = []
    kinds = args.kinds.split(",")
    if set(kinds) - set(KINDS):
        ap.error(f"--kinds: unknown {sorted(set(kinds) - set(KINDS))}; choose from {', '.join(KINDS)}")
    share = sum(SHARE[k] for k in kinds)
    for kind in kinds:
        n = max(1, round(args.count * SHARE[kind] / share))

        @settings(max_examples=n, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(plan=plans(kind))
        def go(plan):
            out = h.run(plan)
            end = "ok" if out.rc == 0 else "error" if out.rc in (2, 3, 130) else f"exit {out.rc}"
            stats[kind][end + (" + flag" if out.flagged else "")] += 1
            stats[kind]["inputs"] += 1
            for p in out.problems:
                problems.append((kind, p, out.plan))
            if log:
                log.write(json.dumps({"kind": kind, "argv": out.plan.argv, "damage": out.plan.damage,
                                      "base": out.plan.base, "rc": out.rc,
                                      "flagged": out.flagged, "problems": out.problems,
                                      "err": out.err.strip().splitlines()[-1:]}) + "\n")
                log.flush()

        go()
        print(f"{kind:10s} {dict(stats[kind])}  ({time.time() - t0:.0f} s so far)", flush=True)
    total = sum(s["inputs"] for s in stats.values())
    kinds = collections.Counter(p.split(":")[0] for _, p, _ in problems)
    print(f"{total} generated inputs in {time.time() - t0:.0f} s: {kinds.get('traceback', 0)} tracebacks, "
          f"{kinds.get('touched outside the run directory', 0)} with files outside the run directory touched, "
          f"{kinds.get('wrong numbers', 0)} with wrong numbers and no error or flag, "
          f"{kinds.get('unexpected', 0)} that ended otherwise than expected")
    for kind, p, plan in problems[:30]:
        print(f"  {kind}: {p}\n      {plan}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
