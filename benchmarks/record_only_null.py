"""Detection from the record alone (no inputs): false pairs on null runs, and power on planted runs.

Each run trains the callbacks' end-to-end setting (``tests/integrations/_planted.py``: 1,024 vectors of 16
features in 4 classes, a tanh MLP, SGD at lr 0.5 in batches of 256 for 700 steps) under the Lightning
callback's default record (the batch record plus a probe within 10% of training time), with no oppsig config
and no inputs given to detection, then runs ``detect_run`` on the record alone (the replication test of
``oppsig.signals.replication``). Settings:

- ``null``: the same data with no planted feature (classes only): any reported pair is a false pair;
- ``planted``: the two planted opposing pairs of ``_planted.planted_vectors``: a pair counts as found when its
  two groups match a planted pair's at F1 >= 0.9 and are reported as a pair;
- ``synthetic``: no training; the synthetic null families of ``signals_calibration.py`` (generic period-2
  oscillation with random signs, with one sign per class, with heavy-tailed amplitudes: 200 steps x 1,000
  examples in 10 classes, :func:`oppsig.signals.synthetic.eos_matrix`) searched with labels and no inputs.

Usage (measured: a trained run 20-40 s at one thread, a synthetic one 2 s, on a 2-core machine under load;
20 null runs about 7-13 min):
    OMP_NUM_THREADS=1 python benchmarks/record_only_null.py --setting null --seeds 20 --json null.json
    OMP_NUM_THREADS=1 python benchmarks/record_only_null.py --setting planted --seeds 10
    OMP_NUM_THREADS=1 python benchmarks/record_only_null.py --setting synthetic --seeds 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integrations._planted import (BATCH, CLASSES, LR, STEPS, mlp, planted_pairs_found,  # noqa: E402
                                         planted_vectors)


def null_vectors(seed: int):
    """The planted setting's data without the planted feature: Gaussian noise plus a weak class pattern."""
    x, y, _ = planted_vectors(seed)
    g = torch.Generator().manual_seed(10_000 + seed)
    pattern = torch.randn(len(CLASSES), x.shape[1], generator=g)
    return torch.randn(x.shape, generator=g) + 0.3 * pattern[y], y, []


def one_run(setting: str, seed: int, root: Path) -> dict:
    import lightning.pytorch as L

    from oppsig import detect_run
    from oppsig.integrations.lightning import OppsigCallback
    from tests.integrations.test_lightning import Net

    x, y, pairs = (planted_vectors if setting == "planted" else null_vectors)(seed)
    ids = torch.arange(len(x))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, x, y), batch_size=BATCH,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    run_dir = root / f"{setting}-{seed}"
    cb = OppsigCallback(run_dir, num_examples=len(x), labels=y.numpy(), classes=list(CLASSES), live=False)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[cb]).fit(Net(mlp(seed), lr=LR),
                                                                                             loader)
    t1 = time.perf_counter()
    res = detect_run(run_dir, verify=0, grids=False)
    out = {"setting": setting, "seed": seed, "groups": len(res.groups), "pairs": len(res.pairs),
           "tested_on": sorted({p.tested_on for p in res.pairs}),
           "passed_test": sum(1 for p in list(res.pairs) + list(res.rejected_pairs) if "test" not in p.failed),
           "train_s": round(t1 - t0, 1), "detect_s": round(time.perf_counter() - t1, 1)}
    if pairs:
        found = planted_pairs_found(res, pairs)
        out.update(found=sum(f["found"] for f in found), f1=[f["f1"] for f in found])
    return out


def synthetic_nulls(seeds: int) -> list[dict]:
    """The synthetic null families, each searched from its labels alone (no inputs)."""
    import numpy as np

    from oppsig.data import ArrayDataset, opposing_signals
    from oppsig.signals import find_signals
    from oppsig.signals.synthetic import eos_matrix

    ds = opposing_signals(n=1000, magnitude=0.0, seed=0)
    rec = ArrayDataset(x=torch.zeros((len(ds), 1)), y=ds.y, index=ds.index, classes=ds.classes,
                       name="the record (no inputs)", meta={"inputs": False})
    y = ds.y.numpy()
    fams = {"random-signs": lambda s: eos_matrix(1000, 200, seed=s),
            "class-signs": lambda s: eos_matrix(1000, 200, seed=s, labels=y),
            "heavy-tails": lambda s: eos_matrix(1000, 200, seed=s, tails="pareto")}
    rows = []
    for name, make in fams.items():
        for seed in range(seeds):
            t0 = time.perf_counter()
            res = find_signals(make(seed), np.arange(200), rec)
            rows.append({"setting": name, "seed": seed, "groups": len(res.groups), "pairs": len(res.pairs),
                         "passed_test": sum(1 for p in res.rejected_pairs if "test" not in p.failed)
                         + len(res.pairs), "detect_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
        fam = [r for r in rows if r["setting"] == name]
        print(f"{name}: {sum(r['pairs'] > 0 for r in fam)} of {len(fam)} runs report a pair", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=("null", "planted", "synthetic"), default="null")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the per-run rows here")
    a = ap.parse_args(argv)
    if a.setting == "synthetic":
        rows = synthetic_nulls(a.seeds)
        if a.json:
            Path(a.json).write_text(json.dumps({"runs": rows}, indent=1))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            rows.append(one_run(a.setting, seed, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    with_pair = sum(r["pairs"] > 0 for r in rows)
    summary = f"{a.setting}: {with_pair} of {len(rows)} runs report a pair"
    if a.setting == "planted":
        summary += f"; a planted pair found in {sum(r['found'] > 0 for r in rows)} of {len(rows)}"
    print(summary)
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
