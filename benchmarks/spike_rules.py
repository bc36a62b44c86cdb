"""oppsig's spike rules against the field's, on the same loss streams (issue #30, "One spike rule").

Each field rule is written here from its published definition, read at its source (no code copied):

- ``lightning``: Lightning-AI/pytorch-lightning, src/lightning/fabric/utilities/spike.py (``SpikeDetection``,
  used by lightning.pytorch.callbacks.spike): after ``warmup=1`` batches, a loss that is not below the last
  accepted one and is at least ``rtol=2.0`` times the running mean (window 10) above it is a spike; a spike's
  loss does not enter the mean.
- ``skip_step_6sd``: allenai/OLMo-core, src/olmo_core/optim/skip_step_optimizer.py (``SkipStepOptimizer``;
  Levanter's skip-step optimizer states the same rule): once ``max(20, 128 // 2)`` losses are held, a loss
  whose absolute z-score against the mean and (unbiased) standard deviation of the previous 128 losses
  exceeds ``sigma_factor=6`` is skipped (every loss enters the window). The z-score is absolute, so a sudden
  drop is flagged too: that is the published rule.
- ``foundry``: mosaicml/llm-foundry, llmfoundry/callbacks/kill_loss_spike_callback.py (``KillLossSpike``):
  once the window of 100 losses is full, a loss at least ``outlier_multiplier=2`` times the window's mean is
  an outlier; more than ``patience=4`` outliers in a row (the 5th) is a spike; every loss enters the window.
- ``megatron``: NVIDIA/Megatron-LM, megatron/core/rerun_state_machine.py (``is_unexpectedly_large``, called
  with ``threshold=10`` on the loss): the largest absolute value of the first 100 losses is kept, and a later
  loss at least 10 times it is rejected.
- ``zclip_loss``: bluorion-com/ZClip, zclip/zclip.py (arXiv 2504.02507), applied here to the loss stream
  instead of the gradient norm: the first 25 values set the mean and variance, then an EMA (``alpha=0.97``)
  of both; a value whose z-score ``(x - mean) / (std + 1e-6)`` exceeds 2.5 is a spike, and the EMA takes the
  adaptively clipped value ``mean + 2.5 ** 2 * std / z`` in its place.

oppsig's rules: ``oppsig_live`` (:class:`oppsig.live.detector.SpikeDetector` with the default ``LiveConfig``)
and ``oppsig_offline`` (:func:`oppsig.signals.spikes.detect_spikes` with the default ``SignalsConfig``, which
sees the whole stream at once: not a live rule, measured for the choice of one rule).

Streams: ``benchmarks/_spike_streams.py`` (synthetic families, seeded, and recorded runs labelled by the
offline finder; on those the offline finder scores 1 by construction and is left out of that row).

Matching (one event per spike): a rule's events are the first steps of its runs of consecutive flagged
steps. An event inside a spike's interval ``[onset, end]`` that has not been matched yet is a true positive
(its delay: event step - onset); every other event (outside all spikes, or a second event inside one) is a
false positive; a spike without an event is a miss. Precision, recall and F1 are pooled over a family's
streams ("synthetic": all synthetic families; "overall": every stream); the delay is the median over its true
positives.

    python benchmarks/spike_rules.py [--seeds 20] [--steps 800] [--no-real] [--out results.json]

Wall time: about 1 minute at the defaults on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _spike_streams import FAMILIES, Stream, streams  # noqa: E402


class Lightning:
    """Lightning's ``SpikeDetection`` (mode min, window 10, warmup 1, rtol 2.0, no atol)."""

    def __init__(self, window: int = 10, warmup: int = 1, rtol: float = 2.0) -> None:
        self.vals: deque[float] = deque(maxlen=window)
        self.last, self.warmup, self.rtol, self.seen = 0.0, warmup, rtol, 0

    def update(self, step: int, loss: float) -> bool:
        i, self.seen = self.seen, self.seen + 1
        mean = float(np.mean(self.vals)) if self.vals else 0.0
        spike = i >= self.warmup and loss - self.last > 0 and abs(loss - mean) >= abs(self.rtol * mean)
        if not spike:
            self.vals.append(loss)
            self.last = loss
        return bool(spike)


class SkipStep6Sd:
    """OLMo-core's ``SkipStepOptimizer`` loss test (window 128, 6 standard deviations)."""

    def __init__(self, window: int = 128, sigma: float = 6.0) -> None:
        self.vals: deque[float] = deque(maxlen=window + 1)
        self.min_len, self.sigma = max(20, window // 2), sigma

    def update(self, step: int, loss: float) -> bool:
        self.vals.append(loss)
        if len(self.vals) < self.min_len:
            return False
        prev = np.array(self.vals)[:-1]
        sd = float(np.std(prev, ddof=1))
        return bool(sd > 0 and abs(loss - prev.mean()) / sd > self.sigma)


class Foundry:
    """LLM Foundry's ``KillLossSpike`` (window 100, 2x the window's mean, patience 4)."""

    def __init__(self, window: int = 100, mult: float = 2.0, patience: int = 4) -> None:
        self.vals: deque[float] = deque(maxlen=window)
        self.mult, self.patience, self.count = mult, patience, 0

    def update(self, step: int, loss: float) -> bool:
        fired = False
        if len(self.vals) == self.vals.maxlen:
            if loss >= self.mult * float(np.mean(self.vals)):
                self.count += 1
                fired = self.count > self.patience
            else:
                self.count = 0
        self.vals.append(loss)
        return fired


class Megatron:
    """Megatron's ``is_unexpectedly_large`` on the loss (10x the largest of the first 100 losses)."""

    def __init__(self, threshold: float = 10.0, samples: int = 100) -> None:
        self.threshold, self.samples, self.n, self.max = threshold, samples, 0, 0.0

    def update(self, step: int, loss: float) -> bool:
        v = abs(loss)
        if self.n < self.samples:
            self.n += 1
            self.max = max(self.max, v)
            return False
        return v >= self.threshold * self.max


class ZClipLoss:
    """ZClip's z-score test (EMA alpha 0.97, z 2.5, 25 warm-up values, adaptive scaling) on the loss."""

    def __init__(self, alpha: float = 0.97, z: float = 2.5, warmup: int = 25, eps: float = 1e-6) -> None:
        self.alpha, self.z, self.warmup, self.eps = alpha, z, warmup, eps
        self.buf: list[float] = []
        self.mean: float | None = None
        self.var = 0.0

    def update(self, step: int, loss: float) -> bool:
        if self.mean is None:
            self.buf.append(loss)
            if len(self.buf) >= self.warmup:
                self.mean = float(np.mean(self.buf))
                self.var = float(np.mean((np.array(self.buf) - self.mean) ** 2))
            return False
        std = self.var**0.5
        z = (loss - self.mean) / (std + self.eps)
        spike = z > self.z
        x = self.mean + self.z**2 * std / z if spike else loss
        self.mean = self.alpha * self.mean + (1 - self.alpha) * x
        self.var = self.alpha * self.var + (1 - self.alpha) * (x - self.mean) ** 2
        return bool(spike)


class OppsigLive:
    """oppsig's live detector with the default ``LiveConfig``: a step is flagged when it reports a spike."""

    def __init__(self) -> None:
        from oppsig.live.detector import SpikeDetector

        self.det = SpikeDetector()

    def update(self, step: int, loss: float) -> bool:
        return self.det.update(step, loss) is not None


ONLINE = {"oppsig_live": OppsigLive, "lightning": Lightning, "skip_step_6sd": SkipStep6Sd, "foundry": Foundry,
          "megatron": Megatron, "zclip_loss": ZClipLoss}
RULES = [*ONLINE, "oppsig_offline"]


def events(rule: str, loss: np.ndarray) -> list[int]:
    """The steps at which ``rule`` reports a spike on ``loss`` (T,): first steps of its runs of flagged steps."""
    if rule == "oppsig_offline":
        from oppsig.signals.spikes import detect_spikes

        return [s.row for s in detect_spikes(loss)]
    r = ONLINE[rule]()
    flags = [r.update(t, float(v)) for t, v in enumerate(loss)]
    return [t for t, f in enumerate(flags) if f and (t == 0 or not flags[t - 1])]


def match(ev: list[int], spikes: list[tuple[int, int]]) -> tuple[int, int, int, list[int]]:
    """``(tp, fp, fn, delays)`` of events against spike intervals (see the module docstring)."""
    hit = [False] * len(spikes)
    tp = fp = 0
    delays = []
    for e in ev:
        j = next((j for j, (a, b) in enumerate(spikes) if a <= e <= b and not hit[j]), None)
        if j is None:
            fp += 1
        else:
            hit[j] = True
            tp += 1
            delays.append(e - spikes[j][0])
    return tp, fp, len(spikes) - tp, delays


def _rates(tp: int, fp: int, fn: int, delays: list[int]) -> dict:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "delay": float(np.median(delays)) if delays else float("nan"),
            "tp": tp, "fp": fp, "fn": fn}


def evaluate(all_streams: list[Stream], rules=RULES) -> dict:
    """``{rule: {family | "synthetic" | "overall": rates}}`` over the streams.

    The offline finder skips the ``real`` streams (it labels them), so its "overall" is its "synthetic".
    """
    out: dict = {}
    for rule in rules:
        tally: dict = {}
        for s in all_streams:
            if rule == "oppsig_offline" and s.family == "real":
                continue  # the labeller of those streams
            tp, fp, fn, d = match(events(rule, s.loss), s.spikes)
            for key in (s.family, "overall", *(["synthetic"] if s.family != "real" else [])):
                t = tally.setdefault(key, [0, 0, 0, []])
                t[0], t[1], t[2] = t[0] + tp, t[1] + fp, t[2] + fn
                t[3].extend(d)
        out[rule] = {k: _rates(*v) for k, v in tally.items()}
    return out


def table(res: dict, key: str) -> str:
    """A markdown table of the rules' rates on ``key`` (a family or "overall")."""
    lines = ["| rule | precision | recall | F1 | median delay | TP / FP / FN |", "|---|---|---|---|---|---|"]
    for rule, by in res.items():
        if key not in by:
            continue
        r = by[key]

        def f(x):
            return "-" if math.isnan(x) else f"{x:.2f}"

        lines.append(f"| {rule} | {f(r['precision'])} | {f(r['recall'])} | {f(r['f1'])} | {f(r['delay'])} "
                     f"| {r['tp']} / {r['fp']} / {r['fn']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="streams per synthetic family")
    ap.add_argument("--steps", type=int, default=800, help="steps per synthetic stream")
    ap.add_argument("--families", default=",".join(FAMILIES), help="synthetic families, comma-separated")
    ap.add_argument("--no-real", action="store_true", help="leave out the recorded runs")
    ap.add_argument("--out", help="write the rates as JSON here")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    fams = [f for f in a.families.split(",") if f]
    res = evaluate(streams(fams, a.seeds, a.steps, real=not a.no_real))
    keys = ["overall", "synthetic", *fams, *([] if a.no_real else ["real"])]
    for k in keys:
        print(f"\n{k}:\n{table(res, k)}")
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
