"""``oppsig demo``: the whole story in one call, on the embedded default.

Train fc-tanh with full-batch GD at the edge of stability, record every
example's loss at every step, track the sharpness, detect the opposing groups
and write the report. On CIFAR-10 when it is found (``--data-dir``,
``$OPPSIG_DATA`` or the cache), otherwise on the synthetic data set with
planted opposing signals, saying which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, load_config
from ..data.cifar import GET_DATA_HINT, candidate_dirs, find_cifar10, find_cifar10_in
from ..errors import ConfigError, DataNotFoundError
from ..signals.tuning import MIN_ROWS

DEMO_CIFAR = [
    "name=demo-cifar10", "data.name=cifar10", "data.n=5000", "data.test_n=1000", "model.name=mlp",
    "model.widths=[200, 200]", "model.activation=tanh", "optim.name=gd", "optim.lr=0.1", "train.loss=ce",
    "train.steps=800", "train.physical_batch_size=5000", "train.checkpoint_every=50", "record.every=1",
    "curvature.every=50",
]
DEMO_SYNTHETIC = [
    "name=demo-synthetic", "data.name=synthetic", "data.n=5000", "model.name=mlp", "model.widths=[200, 200]",
    "model.activation=tanh", "optim.name=gd", "optim.lr=0.1", "train.loss=mse", "train.steps=600",
    "train.physical_batch_size=5000", "train.checkpoint_every=50", "record.every=1", "curvature.every=50",
]


def demo_config(data_dir: str | None = None, out_dir: str = "runs", steps: int | None = None,
                n: int | None = None) -> tuple[Config, str]:
    """The demo's config and a sentence saying which data it uses.

    Raises:
        DataNotFoundError: when ``data_dir`` is given and holds no CIFAR-10 (an explicit folder never
            falls back to the synthetic data).
        ConfigError: when ``steps`` is too few to detect anything.
    """
    if steps is not None and steps < MIN_ROWS:
        raise ConfigError(f"--steps {steps} is too few: detection needs at least {MIN_ROWS} recorded steps "
                          f"(the demo's default is 800 on CIFAR-10, 600 on synthetic data)")
    if data_dir is not None:
        found = find_cifar10_in(data_dir)
        if found is None:
            raise DataNotFoundError(f"--data-dir {data_dir}: no CIFAR-10 there; {GET_DATA_HINT}; "
                                    "or leave out --data-dir to run on synthetic data")
    else:
        found = find_cifar10()
    if found is not None:
        ov = DEMO_CIFAR + ([f"data.dir={data_dir}"] if data_dir else [])
        why = f"CIFAR-10 found in {found}: the paper's setting (fc-tanh, cross-entropy, GD lr 0.1, 5k images)"
    else:
        ov = list(DEMO_SYNTHETIC)
        looked = ", ".join(str(d) for d in candidate_dirs()[::2])
        why = (f"CIFAR-10 not found (looked in {looked}; pass --data-dir DIR or set OPPSIG_DATA=DIR to use it): "
               "synthetic images with two planted opposing pairs")
    ov.append(f"out_dir={out_dir}")
    if steps is not None:
        ov.append(f"train.steps={steps}")
    if n is not None:
        ov += [f"data.n={n}", f"train.physical_batch_size={n}"]
    return load_config(None, ov), why


@dataclass
class DemoResult:
    """Where the demo put everything, and where its time went.

    Attributes:
        timings: wall-clock seconds per stage: ``training``, ``detection`` (reading the record, the search,
            writing signals.json), ``verification`` (replaying to the spike, the top eigenvector, the groups'
            gradients), ``grids`` (the group image grids), ``report`` and ``total``.
        cpu_seconds: CPU time of this process over the whole demo (all threads; about the wall time the
            demo would take on free cores at one thread).
    """

    run_dir: Path
    data_note: str
    train_summary: str
    signals_summary: str | None = None
    report: Path | None = None
    n_pairs: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = float("nan")


def run_demo(data_dir: str | None = None, out_dir: str = "runs", steps: int | None = None, progress: bool = True,
             overwrite: bool = True, log=print, n: int | None = None) -> DemoResult:
    """Train, record, track sharpness, detect, check and report; returns where everything is and the time per stage.

    Every stage says when it starts; training shows a progress bar (``progress``), the later stages a line per
    piece of work.
    """
    import time

    from ..training import train

    cfg, why = demo_config(data_dir, out_dir, steps, n)
    t_all, cpu0 = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    log(f"[1/3] training: {why}")
    t0 = time.perf_counter()
    res = train(cfg, overwrite=overwrite, progress=progress)
    timings["training"] = time.perf_counter() - t0
    m = res.metrics
    summary = (f"{res.next_step} GD steps in {res.wall_time:.0f} s: loss {m.get('loss', float('nan')):.3f}, "
               f"accuracy {m.get('accuracy', float('nan')):.3f}")
    out = DemoResult(res.run_dir, why, summary)
    from ..signals import summary_text
    from .detect import detect_run

    log("[2/3] detecting opposing signals, checking the strongest pair on the model, drawing the groups")
    t0 = time.perf_counter()
    sig = detect_run(res.run_dir, verify=1, log=lambda msg: log(f"      {msg}"), progress=progress)
    spent = time.perf_counter() - t0
    later = {k: float(sig.timings[k]) for k in ("verification", "grids") if k in sig.timings}
    timings["detection"] = spent - sum(later.values())  # reading the record, the search, signals.json
    timings.update(later)
    out.signals_summary = summary_text(sig)
    out.n_pairs = len(sig.pairs)
    from ..report import write_report

    n_pairs = len(sig.pairs)
    log("[3/3] writing the report" + (f" ({n_pairs} pair section{'s' if n_pairs != 1 else ''})" if n_pairs else ""))
    t0 = time.perf_counter()
    out.report = write_report([res.run_dir])
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    out.timings, out.cpu_seconds = timings, time.process_time() - cpu0
    return out
