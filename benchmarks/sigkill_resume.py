"""SIGKILL at random steps, then ``--resume``: every resumed run is bitwise identical to an uninterrupted one.

For each trial (alternating full-batch GD and Adam on the synthetic data), one
uninterrupted reference run, then the same run killed with SIGKILL at random
steps (anywhere in a step: forward, store flush, checkpoint write) and resumed
with ``oppsig train --resume`` until it finishes. Checked at the end of each
trial: the per-example record (losses, correctness) and the metrics (loss,
accuracy, lr) are bitwise equal to the reference, every step is recorded
exactly once in the store and in metrics.jsonl, and the final weights are
bitwise equal.

    python benchmarks/sigkill_resume.py [--kills 20] [--per-trial 5] [--steps 120] [--seed 0]

Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from oppsig.store import open_run
from oppsig.training import load_checkpoint

OPTIMISERS = {
    "gd": ["--optim.name=gd", "--optim.lr=0.05"],
    "adam": ["--optim.name=adam", "--optim.lr=0.002", "--train.batch_size=32"],
}


def command(out: Path, name: str, steps: int, optim: str) -> list[str]:
    return [sys.executable, "-m", "oppsig", "train", "--no-progress", "--data.n=256", "--model.widths=[32]",
            f"--train.steps={steps}", "--train.checkpoint_every=10", "--record.chunk_steps=8",
            "--train.physical_batch_size=100", f"--out-dir={out}", f"--name={name}", *OPTIMISERS[optim]]


def steps_done(run_dir: Path) -> int:
    m = run_dir / "metrics.jsonl"
    try:
        return m.read_bytes().count(b"\n")
    except OSError:
        return 0


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def kill_at(cmd: list[str], run_dir: Path, target: int, timeout: float = 300) -> bool:
    """Start ``cmd``; SIGKILL it once its metrics.jsonl has ``target`` lines. True when it was killed (not finished).

    "Its": a resumed run first rewrites metrics.jsonl (cut back to its checkpoint), a new file.
    """
    before = inode(run_dir / "metrics.jsonl")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:
        if inode(run_dir / "metrics.jsonl") not in (None, before) and steps_done(run_dir) >= target:
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.002)
    err = p.communicate(timeout=60)[1].decode()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()[-300:]}")
    return False


def compare(ref: Path, got: Path, steps: int) -> list[str]:
    """What differs between two finished runs (empty: bitwise identical, each step exactly once)."""
    bad = []
    a, b = open_run(ref), open_run(got)
    if b.steps.tolist() != list(range(steps)):
        bad.append(f"store steps {b.steps.tolist()[:5]}... ({len(b.steps)} rows) != 0..{steps - 1}")
    if not np.array_equal(np.asarray(a.losses), np.asarray(b.losses)):
        bad.append("per-example losses differ")
    if not np.array_equal(np.asarray(a.correct), np.asarray(b.correct)):
        bad.append("per-example correctness differs")
    ma, mb = a.metrics, b.metrics
    if mb["step"].tolist() != list(range(steps)):
        bad.append(f"metrics steps are not 0..{steps - 1} exactly once ({len(mb['step'])} lines)")
    for k in ("loss", "accuracy", "lr"):
        if len(ma[k]) != len(mb[k]) or not np.array_equal(ma[k], mb[k]):
            bad.append(f"metrics {k} differ")
    wa, wb = load_checkpoint(ref)["model"], load_checkpoint(got)["model"]
    if any(not torch.equal(wa[k], wb[k]) for k in wa):
        bad.append("final weights differ")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--per-trial", type=int, default=5, help="kills per run before it is let finish")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="keep the runs in this folder")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rng = random.Random(args.seed)
    out = Path(args.keep or tempfile.mkdtemp(prefix="oppsig-sigkill-"))
    kills = restarts = 0
    failures: list[str] = []
    refs: dict[str, Path] = {}
    trial = 0
    t0 = time.time()
    while kills < args.kills:
        optim = list(OPTIMISERS)[trial % len(OPTIMISERS)]
        if optim not in refs:
            subprocess.run(command(out, f"ref-{optim}", args.steps, optim), check=True, capture_output=True)
            refs[optim] = out / f"ref-{optim}"
        name = f"t{trial:02d}-{optim}"
        rd = out / name
        targets = sorted(rng.sample(range(1, args.steps), min(args.per_trial, args.kills - kills)))
        at = []
        cmd = command(out, name, args.steps, optim)
        for target in targets:
            resume = [sys.executable, "-m", "oppsig", "train", "--resume", str(rd), "--no-progress"]
            if kill_at(cmd, rd, target):
                kills += 1
                at.append(steps_done(rd))
            cmd = resume
            if not (rd / "checkpoints").exists():  # killed before the first checkpoint: only a fresh start
                cmd = command(out, name, args.steps, optim) + ["--overwrite"]
                restarts += 1
        kill_at(cmd, rd, args.steps + 10)  # let it finish
        bad = compare(refs[optim], rd, args.steps)
        print(f"trial {trial} ({optim}): killed after metrics lines {at}: {'identical' if not bad else '; '.join(bad)}",
              flush=True)
        failures += [f"{name}: {b}" for b in bad]
        trial += 1
    print(f"{kills} SIGKILLs in {trial} runs ({restarts} fresh starts), {time.time() - t0:.0f} s: "
          f"{trial - len({f.split(':')[0] for f in failures})}/{trial} resumed runs bitwise identical to the "
          f"uninterrupted ones, every step recorded exactly once" if not failures else f"FAILED: {failures}")
    if not args.keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
