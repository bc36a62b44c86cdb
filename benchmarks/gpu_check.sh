#!/usr/bin/env bash
# Device check for a machine with a GPU: ResNet-18 and VGG-11 on 10k CIFAR-10, full-batch GD,
# recording every step and sharpness every 20 steps. Prints seconds per step, HVP cost in
# gradients and peak memory. Needs CIFAR-10 under $OPPSIG_DATA (or --data-dir).
#   bash benchmarks/gpu_check.sh [STEPS]
set -euo pipefail
STEPS="${1:-60}"
OUT="${OUT:-/tmp/oppsig-gpu-check}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python - "$STEPS" "$OUT" <<'PY'
import json, sys, time
import torch
from oppsig.config import load_config
from oppsig.training import train
from oppsig.store import open_run

steps, out = int(sys.argv[1]), sys.argv[2]
for cfg_path in ("configs/resnet18-gd-cifar10k.yaml", "configs/vgg11-gd-cifar10k.yaml"):
    cfg = load_config(cfg_path, [f"train.steps={steps}", f"out_dir={out}", "device=cuda", "curvature.every=20",
                                 "train.checkpoint_every=0", "data.test_n=0"])
    torch.cuda.reset_peak_memory_stats()
    res = train(cfg, overwrite=True, progress=False)
    m = open_run(res.run_dir).metrics
    wall = m["wall_time"]
    per_step = float((wall[-1] - wall[1]) / (len(wall) - 2))
    curv = m.get("curv_time")
    hv = m.get("hvps")
    import numpy as np
    ok = np.isfinite(curv) if curv is not None else None
    print(json.dumps({
        "config": cfg_path, "steps": steps, "s_per_step_incl_curvature": round(per_step, 4),
        "sharpness": [round(float(x), 2) for x in m["sharpness"][np.isfinite(m["sharpness"])]],
        "hvps_per_measurement": [round(float(x), 1) for x in hv[np.isfinite(hv)]] if hv is not None else None,
        "curv_seconds": [round(float(x), 2) for x in curv[ok]] if curv is not None else None,
        "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))
PY
python benchmarks/bench_sharpness.py --device cuda --seeds 3
# The mini-batch record on the GPU: ResNet-18 under SGD (batch 128, momentum 0.9), each example's loss
# from its own batch (record.mode=batch), and the record's share of the step time.
python - "$STEPS" "$OUT" <<'PY'
import json, sys, time
from oppsig.config import load_config
from oppsig.store import batches as B, open_run
from oppsig.training import train

steps, out = int(sys.argv[1]), sys.argv[2]
spent = [0.0]
def timed(fn):
    def w(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t
    return w
B.BatchWriter.append, B.BatchWriter.flush = timed(B.BatchWriter.append), timed(B.BatchWriter.flush)
cfg = load_config("configs/resnet18-gd-cifar10k.yaml", [
    "name=resnet18-sgd-minibatch", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "train.batch_size=128",
    f"train.steps={4 * steps}", f"out_dir={out}", "device=cuda", "curvature.every=0", "train.checkpoint_every=0",
    "data.test_n=0", "record.mode=batch"])
t0 = time.perf_counter()
res = train(cfg, overwrite=True, progress=False)
wall = time.perf_counter() - t0
rec = open_run(res.run_dir).batches
print(json.dumps({"config": "resnet18 sgd batch 128, record.mode=batch", "steps": 4 * steps,
                  "s_per_step": round(wall / (4 * steps), 4), "record_share": round(spent[0] / wall, 4),
                  "entries": rec.entries}))
PY
