"""Re-measure the numbers and the figure that the README's quick start quotes, so they cannot drift.

Runs ``oppsig demo`` (CIFAR-10 when found, and the synthetic data set), times every stage (wall clock and CPU
time, with the machine's load average and thread count), reads what detection found, screenshots the first
pair of the CIFAR-10 report in headless Chromium into ``docs/report.png``, writes every number to
``docs/readme_numbers.json``, and rewrites the README paragraph between the markers
``<!-- demo-numbers:start -->`` and ``<!-- demo-numbers:end -->`` from them.

    OMP_NUM_THREADS=2 OPPSIG_DATA=/path/to/data python docs/make_readme_figures.py       # ~5 min on 2 free cores
    python docs/make_readme_figures.py --skip-synthetic --no-readme                         # numbers only

The other figures the README shows come from their own scripts, each printing what it measured:
``docs/sharpness-mse-gd.png`` from ``oppsig train configs/fc-tanh-mse-gd-cifar5k.yaml`` and its report,
the sharpness-solver costs from ``python benchmarks/bench_sharpness.py``, the toy phase-diagram agreement
from ``python benchmarks/toy_linear.py``; ``--all`` runs those two benchmarks too and stores their output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


def run_demo_measured(out_dir: Path, synthetic: bool, data_dir: str | None) -> dict:
    """One demo run, timed per stage, with what it found."""
    import torch

    from oppsig.experiments.demo import run_demo
    from oppsig.report.html import load_signals

    saved = {k: os.environ.get(k) for k in ("OPPSIG_DATA", "XDG_CACHE_HOME")}
    empty = tempfile.mkdtemp()
    if synthetic:  # nowhere to find CIFAR-10: the demo takes the synthetic data
        os.environ["OPPSIG_DATA"] = empty
        os.environ["XDG_CACHE_HOME"] = empty
        data_dir = None
    load0 = _load()
    try:
        res = run_demo(data_dir=data_dir, out_dir=str(out_dir), progress=False,
                       log=lambda m: print(m, flush=True))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    sig = load_signals(res.run_dir)
    return {
        "data": "synthetic" if synthetic else "cifar10",
        "run_dir": str(res.run_dir),
        "report": str(res.report),
        "train_summary": res.train_summary,
        "timings_s": {k: round(v, 1) for k, v in res.timings.items()},
        "cpu_s": round(res.cpu_seconds, 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_before": load0,
        "load_after": _load(),
        **found(sig),
    }


def found(sig) -> dict:
    """What detection found, in the numbers the README quotes."""
    from oppsig.report.figures import pair_contrast
    from oppsig.signals import pair_name

    groups = {g.id: g for g in sig.groups}
    ver = {frozenset((v.a, v.b)): v for v in sig.verifications}
    pairs = []
    for k, p in enumerate(sig.pairs):
        ga, gb = groups[p.a], groups[p.b]
        top = [next(iter(g.class_counts), "") for g in (ga, gb)]
        v = ver.get(frozenset((p.a, p.b)))
        pairs.append({
            "name": pair_name(k, p),
            "classes": top,
            "contrast": list(pair_contrast(ga, gb)),
            "corr": round(p.corr, 3),
            "null_corr": round(p.anti_phase.null_corr, 3),
            "beyond_corr": round(p.anti_phase.beyond_corr, 3),
            "null_beyond": round(p.anti_phase.null_beyond, 3),
            "view": p.view,
            "weak": bool(p.anti_phase.weak),
            "p_value": float(f"{p.coherence.p_value:.2g}"),
            "max_rise_share": round(max((s for s in p.spike_rise_share if s == s), default=float("nan")), 3),
            "grad_cosine": None if v is None else round(v.grad_cosine, 3),
        })
    return {"n_spikes": len(sig.spikes), "n_pairs": len(pairs), "pairs": pairs}


def _weak_text(pairs: list[dict]) -> str:
    """How many pairs are no more anti-phase than random splits of their sizes (flagged weak), in words."""
    weak = [p for p in pairs if p.get("weak")]
    own = [p["beyond_corr"] for p in pairs if p.get("beyond_corr") == p.get("beyond_corr")]
    ref = [p["null_beyond"] for p in pairs if p.get("null_beyond") == p.get("null_beyond")]
    beyond = (f"; with the leading oscillation taken out of both groups {min(own):.2f} to {max(own):.2f} against "
              f"{min(ref):+.2f} to {max(ref):+.2f}" if own and ref else "")
    if not weak:
        return f"each pair beyond them at the 1% level{beyond}"
    names = ", ".join(f"{p['classes'][0]} {p['corr']:.2f} against {p['null_corr']:.2f}" for p in weak)
    return (f"{len(pairs) - len(weak)} pairs beyond them at the 1% level{beyond}; {len(weak)} flagged weak, no more "
            f"anti-phase than random splits ({names})")


def screenshot_first_pair(report: Path, out: Path) -> Path:
    """The report's title and its first pair's section, rendered by headless Chromium into ``out`` (PNG)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("headless Chromium is needed for the screenshot: apt-get install -y chromium")
    html = report.read_text(encoding="utf-8")
    head = html[: html.index("<body>") + len("<body>")]
    title = re.search(r"<h1>.*?</h1>", html, re.S).group(0)
    lead = re.search(r"<div class='finding'><b>.*?</b>", html, re.S).group(0) + "</div>"
    sec = re.search(r"<section class='pair' id='pair-0'.*?</section>", html, re.S)
    if sec is None:
        raise SystemExit(f"{report} has no pair section to show")
    tmp = Path(tempfile.mkdtemp())
    page = tmp / "pair0.html"
    page.write_text(head + title + lead + sec.group(0) + "</body></html>", encoding="utf-8")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={tmp / 'profile'}", "--window-size=1100,1350", f"--screenshot={out}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    return out


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} minutes"


def readme_paragraph(cifar: dict | None, synth: dict | None) -> str:
    """The README's demo paragraph, every number from this run."""
    out = []
    if cifar is not None:
        t = cifar["timings_s"]
        classes = sorted({c for p in cifar["pairs"] for c in p["classes"]})
        corr = [p["corr"] for p in cifar["pairs"]]
        null = [p["null_corr"] for p in cifar["pairs"]]
        rise = [p["max_rise_share"] for p in cifar["pairs"] if p["max_rise_share"] == p["max_rise_share"]]
        cos = [p["grad_cosine"] for p in cifar["pairs"] if p["grad_cosine"] is not None]
        same = sum(p["classes"][0] == p["classes"][1] for p in cifar["pairs"])
        top = cifar["pairs"][0] if cifar["pairs"] else {"contrast": ["none", "none"]}
        out.append(
            f"Measured by `python docs/make_readme_figures.py` on CIFAR-10 (800 full-batch GD steps of fc-tanh on "
            f"5,000 images at lr 0.1, every example's loss recorded at every step, sharpness every 50 steps): "
            f"{_minutes(t['total'])} wall clock at {cifar['threads']} "
            f"thread{'s' if cifar['threads'] != 1 else ''} on a "
            f"{cifar['cpu_count']}-core "
            f"machine under a load average of {cifar['load_before'][0]:g}-{cifar['load_after'][0]:g} "
            f"(training {t['training']:.0f} s, detection {t.get('detection', 0):.0f} s, checking the top pair on the "
            f"model {t.get('verification', 0):.0f} s, image grids {t.get('grids', 0):.0f} s, report "
            f"{t.get('report', 0):.0f} s); {_minutes(cifar['cpu_s'])} of CPU time, about what it takes on one "
            f"free core. It found {cifar['n_spikes']} loss spikes and {cifar['n_pairs']} pairs, "
            f"{'each' if same == cifar['n_pairs'] else f'{same} of them'} within one class ({', '.join(classes)}); "
            f"the top pair is {top['contrast'][0]} vs {top['contrast'][1]}. "
            f"The pairs' losses alternate every step before the loss spikes (correlation {min(corr):.2f} to "
            f"{max(corr):.2f} against {min(null):.2f} to {max(null):.2f} "
            f"for random examples of each pair's sizes split "
            f"the same way; {_weak_text(cifar['pairs'])})"
            + (f", the top pair's gradients point in opposite directions (cosine {cos[0]:.2f})" if cos else "")
            + (f", and a pair carries up to {100 * max(rise):.0f}% of the net rise at its spikes" if rise else "")
            + ".")
    if synth is not None:
        t = synth["timings_s"]
        out.append(
            f"On the synthetic data (600 steps, MSE) it took {_minutes(t['total'])} under a load average of "
            f"{synth['load_before'][0]:g}-{synth['load_after'][0]:g} ({_minutes(synth['cpu_s'])} of CPU time) "
            f"and found {synth['n_pairs']} pair{'s' if synth['n_pairs'] != 1 else ''}.")
    return " ".join(out)


def update_readme(paragraph: str, readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block to rewrite")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + paragraph + "\n" + END + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default: $OPPSIG_DATA, else the cache)")
    ap.add_argument("--out-dir", default=None, help="where the demo runs go (default: a temporary folder)")
    ap.add_argument("--skip-synthetic", action="store_true", help="do not rerun the synthetic demo (default: rerun)")
    ap.add_argument("--skip-cifar", action="store_true", help="do not rerun the CIFAR-10 demo (default: rerun)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README.md (default: rewrite its block)")
    ap.add_argument("--readme-only", action="store_true",
                    help="measure nothing: rewrite the README block from docs/readme_numbers.json (default: measure)")
    ap.add_argument("--all", action="store_true", help="also run bench_sharpness.py and toy_linear.py (default: off)")
    ap.add_argument("--no-screenshot", action="store_true",
                    help="keep docs/report.png as it is: no headless Chromium needed (default: retake it)")
    args = ap.parse_args(argv)
    from oppsig.data.cifar import find_cifar10

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="oppsig-readme-"))
    numbers_path = ROOT / "docs" / "readme_numbers.json"
    numbers = json.loads(numbers_path.read_text()) if numbers_path.exists() else {}
    if args.readme_only:
        args.skip_cifar = args.skip_synthetic = True
    else:
        numbers["measured"] = time.strftime("%Y-%m-%d %H:%M %Z")
    if not args.skip_cifar:
        if find_cifar10(args.data_dir) is None:
            raise SystemExit("CIFAR-10 not found: pass --data-dir or set OPPSIG_DATA (or --skip-cifar)")
        numbers["cifar10"] = run_demo_measured(out_dir, False, args.data_dir)
        if not args.no_screenshot:
            screenshot_first_pair(Path(numbers["cifar10"]["report"]), ROOT / "docs" / "report.png")
            print(f"screenshot: {ROOT / 'docs' / 'report.png'}")
    if not args.skip_synthetic:
        numbers["synthetic"] = run_demo_measured(out_dir, True, None)
    if args.all:
        for script in ("bench_sharpness.py", "toy_linear.py"):
            r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script)], capture_output=True, text=True)
            numbers[script] = r.stdout[-4000:]
    numbers_path.write_text(json.dumps(numbers, indent=1) + "\n")
    para = readme_paragraph(numbers.get("cifar10"), numbers.get("synthetic"))
    print(f"numbers: {numbers_path}\n\n{para}")
    if not args.no_readme:
        update_readme(para)
        print("README.md: demo paragraph rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
