"""Loss spikes planted in Adam's state, on data without opposing groups, and Adam's threshold before each.

Adam spikes when its preconditioned sharpness (top eigenvalue of ``P^-1/2 H P^-1/2``, ``P = sqrt(v_hat) + eps``)
passes its threshold ``(2 + 2 beta1) / ((1 - beta1) lr)``: once the gradients shrink below the second-moment
estimate, ``v_hat`` decays, ``P`` with it, and the preconditioned sharpness climbs past the threshold (Bai et al.,
"Adaptive Preconditioners Trigger Loss Spikes in Adam", arXiv 2506.04805; it happens on a one-dimensional
quadratic). These spikes are the optimiser's, not the data's: the data here carry no planted group
(``data.synthetic.pairs: []``), so they are the "optimiser state" class of the live verdict's confusion table.

Settings (each a config plus overrides; :func:`state_spike_settings` gives the chosen one as overrides):

- ``minibatch``: configs/fc-tanh-adam-state-spikes.yaml: fc-tanh 64-64 on 2,000 synthetic images with no planted
  pair, Adam lr 0.01, betas (0.9, 0.99999), eps 1e-12, batch 128, 1,000 steps.
- ``control``: the same with ``beta2 0.9``: ``v_hat`` then follows ``g^2`` within about ten steps, so the
  preconditioner cannot lag behind shrinking gradients (everything else, the lr and eps included, is the same).
- ``gd``: the same as ``minibatch`` with full-batch Adam (``train.batch_size=100000``); not in the findings: its
  per-step curvature is over all 2,000 examples.
- ``defaults``: the same with torch's default betas (0.9, 0.999) and eps 1e-8.
- ``quadratic``: ``f(x) = x^2 / 2`` under torch's Adam (lr 0.01, betas (0.9, 0.99), eps 1e-12), 4,000 steps,
  no oppsig training: the mechanism's unit, measured exactly every step; against beta2 0.9.

Spikes are :func:`oppsig.signals.spikes.detect_spikes` on the logged (mini-batch) loss, counted when they rise at
least 50% over the trend. Each run measures Adam's preconditioned curvature three ways, each over Adam's threshold:

- ``batch``: the top eigenvalue of ``P^-1/2 H_B P^-1/2`` on the step's own mini-batch ``B``, every 5 steps
  (:class:`BatchCurvature`): what a mini-batch step is unstable against;
- ``update``: ``d^T H_B d / d^T P d`` along the step's update ``d``, every step (the paper's curvature along the
  update direction);
- ``full``: the curvature hook's ``precond_sharpness`` over all training examples every ``--every`` steps
  (``curvature.every``, ``curvature.preconditioned``).

For each spike and each measure the table gives the share of spikes with a measurement at or above the threshold
in the ``--k`` steps up to the onset (``full``: ``max(k, every)``), the ratio ``k`` steps before and at the onset,
and the median share of a run's measurements above the threshold (a crossing that holds at most steps of a run,
spikes or not, says little about any one spike).

Usage (each setting's seeds in the background at one thread, then the table from what they wrote)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/optimizer_state_spikes.py --setting minibatch --seeds 0-9 \\
        --out bench_out/state_spikes
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/optimizer_state_spikes.py --setting control --seeds 0-9 \\
        --out bench_out/state_spikes
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/optimizer_state_spikes.py --setting defaults --seeds 0-9 \\
        --out bench_out/state_spikes
    python benchmarks/optimizer_state_spikes.py --setting quadratic
    python benchmarks/optimizer_state_spikes.py --table --out bench_out/state_spikes   # --refresh: facts anew

Wall time (2-core machine shared with other jobs, load 4-6, one thread): 0.7-0.9 min of CPU per seed, 1.7-3.6 min
wall; 10 seeds of one setting 25 min; the quadratic 12 s; the table a second.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fc-tanh-adam-state-spikes.yaml"
MIN_RISE = 0.5  # a spike counts when the loss rises at least 50% over its trend
SETTINGS = {
    "minibatch": [],
    "control": ["optim.betas=[0.9,0.9]"],
    "gd": ["train.batch_size=100000"],
    "defaults": ["optim.betas=[0.9,0.999]", "optim.eps=1e-8"],
}


def state_spike_settings() -> list[str]:
    """The chosen setting as dotted overrides of the default config (the content of :data:`CONFIG`).

    Example:
        >>> from oppsig.config import load_config
        >>> load_config(None, state_spike_settings()).optim.eps
        1e-12
    """
    return ["data.name=synthetic", "data.n=2000", "data.synthetic.pairs=[]", "model.name=mlp",
            "model.widths=[64,64]", "model.activation=tanh", "optim.name=adam", "optim.lr=0.01",
            "optim.betas=[0.9,0.99999]", "optim.eps=1e-12", "train.steps=1000", "train.loss=ce",
            "train.batch_size=128", "train.checkpoint_every=0", "curvature.every=50", "curvature.preconditioned=true",
            "curvature.tol=0.01", "curvature.max_iter=12", "curvature.cold_every=0"]


def quadratic(steps: int = 4000, lr: float = 0.01, betas=(0.9, 0.99), eps: float = 1e-12, h: float = 1.0):
    """Adam on ``f(x) = h x^2 / 2`` from ``x = 1`` (float64): the loss and the preconditioned sharpness
    ``h / (sqrt(v_hat) + eps)`` after each step, and Adam's threshold.

    Example:
        >>> loss, ps, thr = quadratic(steps=50)
        >>> loss.shape, round(thr)
        ((50,), 3800)
    """
    import torch

    from oppsig.curvature import adam_threshold

    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr, betas=tuple(betas), eps=eps)
    loss, ps = np.empty(steps), np.empty(steps)
    for t in range(steps):
        f = 0.5 * h * x.pow(2).sum()
        opt.zero_grad()
        f.backward()
        opt.step()
        st = opt.state[x]
        v_hat = float(st["exp_avg_sq"]) / (1.0 - betas[1] ** float(st["step"]))
        loss[t], ps[t] = float(f.detach()), h / (v_hat ** 0.5 + eps)
    return loss, ps, adam_threshold(lr, betas[0])


def spike_facts(steps, loss, m_steps, ratio, k: int) -> list[dict]:
    """Each spike of ``loss`` (rise >= :data:`MIN_RISE`) with the preconditioned sharpness over its threshold.

    Args:
        steps, loss: (T,) steps and the logged loss.
        m_steps, ratio: (M,) the steps measured and ``precond_sharpness / threshold`` there.
        k: steps before an onset in which a measurement at or above the threshold counts as a crossing.

    Returns:
        One dict per spike: ``onset``, ``peak``, ``rise`` (over the trend), ``crossed`` (a measurement in
        ``[onset - k, onset]`` at or above 1), ``ratio_at`` (the last measurement at or before the onset),
        ``ratio_before`` (the last one at or before ``onset - k``), ``lead`` (steps from the start of the
        above-threshold stretch that holds that crossing to the onset; None without a crossing).

    Example:
        >>> t = np.arange(200)
        >>> loss = np.exp(-t / 100.0); loss[150] *= 3
        >>> f = spike_facts(t, loss, np.arange(0, 200, 10), np.r_[np.full(13, 0.5), np.ones(7)], k=30)
        >>> f[0]["crossed"], f[0]["lead"]
        (True, 19)
    """
    from oppsig.signals.spikes import detect_spikes

    steps, m_steps, ratio = np.asarray(steps), np.asarray(m_steps), np.asarray(ratio, dtype=float)
    out = []
    for s in detect_spikes(np.asarray(loss, dtype=float), steps):
        if s.height < MIN_RISE:
            continue
        on = s.onset_step
        upto = np.flatnonzero(m_steps <= on)
        before = np.flatnonzero(m_steps <= on - k)
        win = np.flatnonzero((m_steps >= on - k) & (m_steps <= on) & (ratio >= 1.0))
        lead = None
        if len(win):
            i = int(win[-1])
            while i > 0 and ratio[i - 1] >= 1.0:
                i -= 1
            lead = int(on - m_steps[i])
        out.append({"onset": int(on), "peak": int(s.step), "rise": float(s.height), "crossed": bool(len(win)),
                    "ratio_at": float(ratio[upto[-1]]) if len(upto) else None,
                    "ratio_before": float(ratio[before[-1]]) if len(before) else None, "lead": lead})
    return out


class BatchCurvature:
    """A hook: Adam's preconditioned curvature on each step's own mini-batch ``B``, with ``P = sqrt(v_hat) + eps``
    the preconditioner of that step and ``H_B`` the Hessian of the batch loss at ``theta_t``.

    Every step, ``update_precond_curv``: ``d^T H_B d / d^T P d`` along the update ``d = theta_{t+1} - theta_t``
    (its curvature in Adam's coordinates ``P^1/2 theta``; one Hessian-vector product). Every ``every`` steps,
    ``batch_precond_sharpness``: the top eigenvalue of ``P^-1/2 H_B P^-1/2`` (Lanczos, ``max_iter`` products,
    warm-started; a Ritz value, so at most the true one). Both beside ``batch_threshold``, Adam's threshold.
    A mini-batch step is unstable against its batch's curvature, which is sharper than the full batch's.
    """

    def __init__(self, every: int = 5, max_iter: int = 10) -> None:
        self.every, self.max_iter = every, max_iter
        self._theta: dict | None = None
        self._v0 = None

    def on_step_start(self, state) -> None:
        self._theta = {n: p.detach().clone() for n, p in state.model.named_parameters() if p.requires_grad}

    def on_step_end(self, state) -> None:
        import torch

        from oppsig.curvature import adam_threshold
        from oppsig.curvature.lanczos import lanczos
        from oppsig.curvature.model_operators import HessianOperator, PreconditionedOperator
        from oppsig.curvature.problem import make_hvp
        from oppsig.curvature.results import warm_start
        from oppsig.curvature.spectrum import adam_preconditioner
        from oppsig.training.step import batch_rows

        cfg, data = state.config, state.train_data
        n = len(data)
        rows = (batch_rows(state.step, n, cfg.train.batch_size, cfg.seed, state.device)
                if cfg.train.batch_size < n else torch.arange(n))
        names = list(self._theta)
        hvp = make_hvp(state.model, [(data.x[rows], data.y[rows])], state.loss_fn, params=self._theta)
        now = dict(state.model.named_parameters())
        d = torch.cat([(now[k].detach() - self._theta[k]).reshape(-1) for k in names])
        prec = adam_preconditioner(state.optimizer, state.model, names)
        state.metrics["update_precond_curv"] = float(d @ hvp.matvec(d)) / float(d @ (prec * d))
        state.metrics["batch_threshold"] = adam_threshold(state.lr, cfg.optim.betas[0])
        if state.step % self.every == 0:
            op = PreconditionedOperator(HessianOperator(hvp), prec)
            v0 = self._v0 if self._v0 is not None and self._v0.shape[0] == op.dim else None
            r = lanczos(op, k=1, tol=1e-2, max_iter=self.max_iter, v0=v0, seed=state.step, criterion="eigenvalue")
            self._v0 = warm_start(r).detach()
            state.metrics["batch_precond_sharpness"] = float(r.eigenvalues[0])
        hvp.release()


def _ratio(rows: list[dict], key: str, threshold: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps that measured ``key`` and ``key / threshold`` there."""
    m = [r for r in rows if key in r and threshold in r]
    return np.array([r["step"] for r in m], dtype=int), np.array([r[key] / r[threshold] for r in m])


def run_seed(setting: str, seed: int, out: Path, every: int, k: int) -> dict:
    """Train one seed of ``setting`` with :class:`BatchCurvature` and the curvature hook; its spikes and timings.

    Each spike gets the crossing facts of :func:`spike_facts` for the mini-batch preconditioned sharpness (within
    ``k`` steps), under ``update`` for the curvature along the update (within ``k``) and under ``full`` for the
    hook's preconditioned sharpness over all examples (every ``every`` steps, within ``max(k, every)``).
    """
    import torch

    from oppsig.config import load_config
    from oppsig.training import train

    torch.set_num_threads(1)
    name = f"{setting}-seed{seed}"
    cfg = load_config(CONFIG, [*SETTINGS[setting], f"seed={seed}", f"name={name}", f"out_dir={out / 'runs'}",
                               "record.enabled=false", f"curvature.every={every}"])
    t0, c0 = time.perf_counter(), time.process_time()
    train(cfg, hooks=[BatchCurvature()], progress=False, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return write_facts(out, setting, seed, every, k, {"wall_s": wall, "cpu_s": cpu})


def crossing_base_rate(m_steps, ratio, k: int, start: int = 100) -> float:
    """Share of the steps from ``start`` on with a measurement at or above 1 in the ``k`` steps up to them: how
    often a spike placed at random would count as crossed.

    Example:
        >>> round(crossing_base_rate(np.arange(0, 200, 10), np.r_[np.zeros(15), np.ones(5)], k=20, start=100), 2)
        0.45
    """
    m_steps, above = np.asarray(m_steps), np.asarray(ratio) >= 1.0
    if not len(m_steps) or m_steps[-1] < start:
        return float("nan")
    hits = [bool(above[(m_steps >= t - k) & (m_steps <= t)].any()) for t in range(start, int(m_steps[-1]) + 1)]
    return float(np.mean(hits))


def write_facts(out: Path, setting: str, seed: int, every: int, k: int, timing: dict) -> dict:
    """The facts of a finished run under ``out/runs`` (spikes, crossings, base rates), written to ``out/facts``."""
    name = f"{setting}-seed{seed}"
    rows = [json.loads(x) for x in (out / "runs" / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps, loss = [r["step"] for r in rows], [r["loss"] for r in rows]
    series = {"batch": _ratio(rows, "batch_precond_sharpness", "batch_threshold"),
              "update": _ratio(rows, "update_precond_curv", "batch_threshold"),
              "full": _ratio(rows, "precond_sharpness", "threshold")}
    window = {"batch": k, "update": k, "full": max(k, every)}
    spikes = spike_facts(steps, loss, *series["batch"], k)
    for key in ("update", "full"):
        for s, f in zip(spikes, spike_facts(steps, loss, *series[key], window[key])):
            s[key] = {fld: f[fld] for fld in ("crossed", "ratio_at", "ratio_before", "lead")}
    facts = {"setting": setting, "seed": seed, **timing, "every": every, "k": k, "steps": len(rows),
             "share_above": {key: float(np.mean(r >= 1.0)) if len(r) else float("nan")
                             for key, (_, r) in series.items()},
             "base_rate": {key: crossing_base_rate(*series[key], window[key]) for key in series}, "spikes": spikes}
    (out / "facts").mkdir(parents=True, exist_ok=True)
    (out / "facts" / f"{name}.json").write_text(json.dumps(facts, indent=1))
    return facts


def _med(xs) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


def _share(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def summarise(facts: list[dict]) -> dict:
    """One table row from the seeds of one setting: ratios are curvature / Adam's threshold; ``batch``: the
    mini-batch preconditioned sharpness, ``update``: along the update, ``full``: over all examples."""
    spikes = [s for f in facts for s in f["spikes"]]
    row = {"seeds": len(facts), "runs with a spike": sum(1 for f in facts if f["spikes"]),
           "spikes per run": len(spikes) / max(1, len(facts)), "median rise": _med([s["rise"] for s in spikes])}
    for key in ("batch", "update", "full"):
        part = [s if key == "batch" else s[key] for s in spikes]
        row[f"crossed ({key})"] = _share([p["crossed"] for p in part])
        row[f"ratio k before ({key})"] = _med([p["ratio_before"] for p in part if p["ratio_before"] is not None])
        row[f"ratio at onset ({key})"] = _med([p["ratio_at"] for p in part if p["ratio_at"] is not None])
        row[f"steps above ({key})"] = _med([f["share_above"][key] for f in facts])
        row[f"crossed at random steps ({key})"] = _med([f["base_rate"][key] for f in facts])
    row["median lead (batch)"] = _med([s["lead"] for s in spikes if s["lead"] is not None])
    row["CPU min per run"] = _med([f["cpu_s"] / 60 for f in facts])
    return row


def print_table(rows: dict[str, dict], k: int) -> None:
    cols = list(next(iter(rows.values())))
    print(f"spikes: rise >= {MIN_RISE:.0%} over the trend; ratio: curvature / Adam's threshold; crossed: a "
          f"measurement >= 1 in the {k} steps up to the onset (full: max(k, every)); steps above: median share of a "
          "run's steps")
    print("| setting | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def quadratic_table(k: int) -> None:
    """The one-dimensional quadratic: first crossing, spikes and their onsets, for beta2 0.99 and 0.9."""
    for b2 in (0.99, 0.9):
        loss, ps, thr = quadratic(betas=(0.9, b2))
        ratio = ps / thr
        cross = np.flatnonzero(ratio >= 1.0)
        facts = spike_facts(np.arange(len(loss)), np.maximum(loss, 1e-300), np.arange(len(loss)), ratio, k)
        first = facts[0] if facts else None
        print(f"quadratic beta2={b2}: max ratio {ratio.max():.3g}, first crossing "
              f"{int(cross[0]) if len(cross) else None}, {len(facts)} spikes >= {MIN_RISE:.0%}; "
              f"first spike onset {first and first['onset']}, peak {first and first['peak']}, "
              f"rise {first and round(first['rise'], 1)}; crossed within {k}: "
              f"{sum(f['crossed'] for f in facts)}/{len(facts)}")


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=[*SETTINGS, "quadratic"])
    ap.add_argument("--seeds", default="0-9", help="a range, e.g. 0-9")
    ap.add_argument("--out", default="bench_out/state_spikes")
    ap.add_argument("--every", type=int, default=50, help="steps between preconditioned-sharpness measurements")
    ap.add_argument("--k", type=int, default=20, help="steps before an onset in which a crossing counts")
    ap.add_argument("--table", action="store_true", help="print the table from the facts under --out")
    ap.add_argument("--refresh", action="store_true", help="first rewrite the facts from the runs' metrics")
    args = ap.parse_args()
    out = Path(args.out)
    if args.setting == "quadratic":
        quadratic_table(100)  # exact every step; the first spike grows out of a loss of 1e-70
    elif args.setting:
        for seed in _seeds(args.seeds):
            f = run_seed(args.setting, seed, out, args.every, args.k)
            print(f"{args.setting} seed {seed}: {len(f['spikes'])} spikes, steps above {f['share_above']}, "
                  f"{f['wall_s'] / 60:.1f} min wall, {f['cpu_s'] / 60:.1f} min CPU", flush=True)
    if args.refresh:
        for p in sorted((out / "facts").glob("*.json")):
            f = json.loads(p.read_text())
            write_facts(out, f["setting"], f["seed"], f["every"], f["k"], {"wall_s": f["wall_s"], "cpu_s": f["cpu_s"]})
    if args.table:
        facts: dict[str, list[dict]] = {}
        for p in sorted((out / "facts").glob("*.json")):
            f = json.loads(p.read_text())
            facts.setdefault(f["setting"], []).append(f)
        print_table({s: summarise(fs) for s, fs in facts.items()}, args.k)


if __name__ == "__main__":
    main()
