"""The cost of watching: each part of oppsig's watching of a shipped config against a plain PyTorch loop.

For one family (its shipped config in configs/), in one process and interleaved round by round (so machine load
hits every variant alike), it times
  plain      a plain PyTorch loop: the same model, data, batches (physical batches too) and optimiser
  off        ``oppsig.train`` with record off, curvature.every=0, live off
  record     + the record as the config sets it (mini-batch: the batch record; gpt: none, its record is the probe)
  probe      + the probe (mini-batch: the default probe subset as planned from record.budget for the config's
             length; gpt: the config's record)
  sharpness  + sharpness tracking at the config's curvature interval (cnn-sgd, gpt: none in the config)
  live       + live attribution (live.enabled=true, a LiveHook)
A stage the config lacks costs nothing and is reported as not applying. Each variant's figure is its mean
seconds per step over the round's steps after 2 warm-up steps (the mean, so that the steps that measure the
sharpness or probe count at their share), the median over rounds; its ratio is the median over rounds of that
round's ratio to the plain loop. A stage's share is the ratio's rise over the previous variant, and the total
(everything on) is held against the budget: 1.10x for full-batch configs, 1.15x for mini-batch ones.
Evaluation and checkpoints are off in every variant (they are not watching). The timed steps are 2..steps-1 and
each includes the sharpness measured at the start of the next, so ``--steps`` of 2 + a multiple of the curvature
interval (fc-tanh: 25; resnet18, vgg11, vit: 20) times the measurements at their share; the first, cold solve at
step 0 falls in the warm-up, as a long run amortises it. Measured on CIFAR-10 (docs/findings.md, "The cost of
watching"): fc-tanh GD 1.49x (sharpness every 25 steps +0.60: over budget), CNN SGD 1.03x (the probe +0.05).

    python benchmarks/bench_overhead.py --family fc-tanh-gd [--n 5000] [--steps 102] [--rounds 3]
        [--threads 2] [--synthetic] [--out overhead.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import data_overrides, timed_run
from oppsig.config import load_config
from oppsig.data import build_datasets
from oppsig.live import LiveHook
from oppsig.losses import get_loss
from oppsig.models import build_from_config
from oppsig.optim import build_optimizer, is_full_batch
from oppsig.store.probe_plan import plan_probe
from oppsig.training import batch_rows
from oppsig.training.build import forward_share

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FAMILIES = {
    "fc-tanh-gd": "fc-tanh-ce-gd-cifar5k.yaml",
    "cnn-sgd": "cnn-sgd-minibatch-cifar10k.yaml",
    "fc-tanh-sgd": "fc-tanh-ce-sgd-cifar5k.yaml",
    "resnet18": "resnet18-gd-cifar2k.yaml",
    "vgg11": "vgg11-gd-cifar2k.yaml",
    "vit": "vit-gd-cifar2k.yaml",
    "gpt": "gpt-shakespeare.yaml",
}
VARIANTS = ("plain", "off", "record", "probe", "sharpness", "live")
BUDGET = {True: 1.10, False: 1.15}  # full batch, mini-batch
SKIP = 2  # warm-up steps left out of every round


def probe_plan(cfg, train_set):
    """The default probe of a mini-batch config, as ``oppsig train`` plans it: for the config's own length
    (``record.budget``; :func:`~oppsig.store.probe_plan.plan_probe`), whatever ``--steps`` times, at the forward
    share measured on the run's model and data (:func:`~oppsig.training.build.forward_share`)."""
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes)
    share = forward_share(model, get_loss(cfg.train.loss), train_set, cfg)
    return plan_probe(len(train_set), cfg.train.batch_size, cfg.train.steps, cfg.record.budget,
                      every=cfg.record.every, n=cfg.record.probe_n, forward_share=share)


def stages(family: str, cfg, plan=None) -> dict[str, list[str] | None]:
    """Each watching stage's overrides on top of the variant before it (None: the config has no such stage);
    ``plan`` the probe of a mini-batch config (:func:`probe_plan`)."""
    minibatch = not is_full_batch(cfg.optim) and family != "gpt"
    probe = {"gpt": ["record.enabled=true"]}.get(family)
    record = None if family == "gpt" else ["record.enabled=true"] + (["record.mode=batch"] if minibatch else [])
    if minibatch:
        probe = ["record.mode=both", f"record.every={plan.every}", f"record.probe_n={plan.n}"]
    curv = cfg.curvature.every
    return {"off": ["record.enabled=false", "curvature.every=0", "live.enabled=false"],
            "record": record,
            "probe": probe,
            "sharpness": [f"curvature.every={curv}"] if curv > 0 else None,
            "live": ["live.enabled=true"]}


def build(args):
    """The family's config (data shrunk to ``--n``, evaluation and checkpoints off) and its (train, test) data."""
    over = ["name=bench", "train.checkpoint_every=0", "train.eval_every=0"]
    if args.family == "gpt":
        if args.synthetic:  # random characters in a temporary file
            path = Path(tempfile.mkdtemp()) / "random.txt"
            rng = np.random.default_rng(0)
            path.write_text("".join(rng.choice(list("abcdefgh ,.\n"), size=args.n * 65)))
            over += [f"data.path={path}"]
        over += [f"data.n={args.n}"]
        what = "random characters" if args.synthetic else "tinyshakespeare"
    elif args.synthetic:
        over += ["data.name=synthetic", f"data.n={args.n}"]
        what = f"synthetic ({args.n} images)"
    else:
        ov, what = data_overrides(args.n)
        over += ov
    cfg = load_config(CONFIGS / FAMILIES[args.family], over)
    data = build_datasets(cfg.data, seed=cfg.seed)
    if not is_full_batch(cfg.optim) and len(data[0]) <= cfg.train.batch_size:
        raise SystemExit(f"error: --n {len(data[0])} leaves one mini-batch of {cfg.train.batch_size}, a full-batch "
                         f"run; pass --n above {cfg.train.batch_size}")
    return cfg, data, what


def plain_loop(cfg, train_set, steps: int) -> np.ndarray:
    """Wall times of steps SKIP.. of a plain PyTorch loop (the steps :func:`timed_run` times): the run's model,
    batches and optimiser."""
    torch.manual_seed(cfg.seed)
    x, y = train_set.x, train_set.y
    n = len(x)
    model = build_from_config(cfg.model, tuple(x.shape[1:]), train_set.num_classes)
    model.train()
    opt = build_optimizer(cfg.optim, model.parameters())
    loss_fn = get_loss(cfg.train.loss)
    full = is_full_batch(cfg.optim) or cfg.train.batch_size >= n
    times = []
    for s in range(steps):
        t = time.perf_counter()
        rows = None if full else batch_rows(s, n, cfg.train.batch_size, cfg.seed, "cpu")
        m = n if full else len(rows)
        bs = cfg.train.physical_batch_size or m
        opt.zero_grad(set_to_none=True)
        for i in range(0, m, bs):  # the full batch in slices (no copy), a mini-batch by its rows
            c = slice(i, i + bs) if full else rows[i:i + bs]
            loss = loss_fn(model(x[c]), y[c]).mean() * (len(y[c]) / m)
            loss.backward()
        opt.step()
        float(loss.detach())
        times.append(time.perf_counter() - t)
    return np.asarray(times[SKIP:])


def measure(args, cfg, data, st) -> dict[str, list[float]]:
    """Mean seconds per step of every variant, round by round: ``{variant: [s per round]}``."""
    out: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        out["plain"].append(float(plain_loop(cfg, data[0], args.steps).mean()))
        over: list[str] = []
        for v in VARIANTS[1:]:
            if st[v] is None:  # the config has no such stage: the same run as the variant before
                out[v].append(out[VARIANTS[VARIANTS.index(v) - 1]][-1])
                continue
            over = over + st[v]
            c = cfg.replace(over)
            hooks = [LiveHook(c.live)] if c.live.enabled else []
            out[v].append(float(timed_run(c, data, args.steps, record=c.record.enabled, hooks=hooks).mean()))
    return out


def summarise(args, cfg, what: str, times: dict[str, list[float]], st, plan) -> dict:
    """The figures: per variant median s/step, ratio to the plain loop and share; the total against the budget."""
    plain = np.asarray(times["plain"])
    full = is_full_batch(cfg.optim)
    res = {"family": args.family, "config": FAMILIES[args.family], "data": what, "n": args.n, "steps": args.steps,
           "rounds": args.rounds, "threads": args.threads, "full_batch": full, "variants": {},
           "probe": None if plan is None else {"n": plan.n, "every": plan.every, "forward_share": plan.forward_share,
                                               "planned_share": plan.share}}
    prev = None
    for v in VARIANTS:
        ratio = float(np.median(np.asarray(times[v]) / plain))
        res["variants"][v] = {"s_per_step": float(np.median(times[v])), "ratio": ratio,
                              "share": None if prev is None else ratio - prev,
                              "applies": v == "plain" or st[v] is not None, "rounds": times[v]}
        prev = ratio
    budget = BUDGET[full]
    res["total"] = {"ratio": prev, "budget": budget, "met": bool(prev <= budget)}
    return res


def report(res: dict) -> str:
    lines = [f"{res['family']} ({res['config']}), {res['data']}, {'full batch' if res['full_batch'] else 'mini-batch'}"
             f", {res['threads']} threads, {res['rounds']} rounds x {res['steps']} steps",
             f"  {'variant':10s} {'s/step':>9s} {'ratio':>7s} {'share':>7s}"]
    for v, r in res["variants"].items():
        share = "" if r["share"] is None else f"{r['share']:+7.3f}"
        note = "" if r["applies"] else "   (not in the config)"
        lines.append(f"  {v:10s} {r['s_per_step']:9.4f} {r['ratio']:7.3f} {share:>7s}{note}")
    if res.get("probe"):
        p = res["probe"]
        lines.append(f"  probe as planned: {p['n']} examples every {p['every']} steps (a forward at "
                     f"{p['forward_share']:.2f} of a training step per example: {p['planned_share']:.1%} planned)")
    t = res["total"]
    lines.append(f"  total with everything on {t['ratio']:.3f}x against the budget {t['budget']:.2f}x: "
                 f"{'met' if t['met'] else 'missed'}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="fc-tanh-gd")
    ap.add_argument("--n", type=int, default=None, help="training examples (default: the config's)")
    ap.add_argument("--steps", type=int, default=102)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synthetic", action="store_true", help="synthetic images (gpt: random characters)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.steps <= SKIP:
        ap.error(f"--steps must exceed the {SKIP} warm-up steps")
    torch.set_num_threads(args.threads)
    if args.n is None:
        args.n = load_config(CONFIGS / FAMILIES[args.family], []).data.n or 4096
    cfg, data, what = build(args)
    args.n = len(data[0])
    plan = probe_plan(cfg, data[0]) if not is_full_batch(cfg.optim) and args.family != "gpt" else None
    st = stages(args.family, cfg, plan)
    res = summarise(args, cfg, what, measure(args, cfg, data, st), st, plan)
    print(report(res))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
