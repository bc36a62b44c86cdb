"""A user's own data with two planted opposing pairs, for the callbacks' end-to-end tests, and how to score what
detect found against them.

1,024 vectors of 16 features in 4 classes (Gaussian noise plus a weak class pattern); in each pair 96 examples of
class 0 and 96 of class 1 (pair 0), or of classes 2 and 3 (pair 1), share one large feature (8 times the noise's
scale, along a fixed direction), which predicts opposite classes in the two groups: the construction of
oppsig.data.synthetic on plain vectors. Trained with SGD at lr 0.5 in batches of 256 (a quarter of the data) for
700 steps, each pair's groups swing in anti-phase.
"""

import numpy as np
import torch

N, D, CLASSES, MEMBERS, MAGNITUDE = 1024, 16, ("cat", "dog", "bird", "fish"), 96, 8.0
BATCH, STEPS, LR = 256, 700, 0.5


def planted_vectors(seed: int = 0):
    """``(x (N, D) float32, y (N,) int64, groups)``: ``groups`` lists each planted pair's two member-id arrays."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(N, generator=g) % len(CLASSES)
    pattern = torch.randn(len(CLASSES), D, generator=g)
    x = torch.randn(N, D, generator=g) + 0.3 * pattern[y]
    pairs = []
    for a, b in ((0, 1), (2, 3)):
        f = torch.randn(D, generator=g)
        f = f / f.norm()
        members = [torch.nonzero(y == c).flatten()[:MEMBERS] for c in (a, b)]
        for m in members:
            x[m] += MAGNITUDE * f
        pairs.append(tuple(m.numpy() for m in members))
    return x, y, pairs


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.Tanh(), torch.nn.Linear(64, len(CLASSES)))


def f1(found, planted) -> float:
    found, planted = set(int(i) for i in found), set(int(i) for i in planted)
    return 2 * len(found & planted) / (len(found) + len(planted))


def best_match(groups, planted) -> tuple[int, float]:
    """The group (id) that matches the planted members best, and its F1."""
    g = max(groups, key=lambda g: f1(g.ids, planted))
    return g.id, f1(g.ids, planted)


def planted_pairs_found(res, pairs, min_f1: float = 0.9) -> list[dict]:
    """For each planted pair: its groups' best matches, their F1 and whether detect reported them as a pair."""
    reported = {frozenset((p.a, p.b)) for p in res.pairs}
    out = []
    for a, b in pairs:
        (ga, fa), (gb, fb) = best_match(res.groups, a), best_match(res.groups, b)
        out.append({"groups": (ga, gb), "f1": (round(fa, 3), round(fb, 3)),
                    "found": min(fa, fb) >= min_f1 and frozenset((ga, gb)) in reported})
    return out


def check_record(run, probe_printed: str) -> None:
    """The default record of this run: every training batch in the sparse record, every example probed every 14
    steps (50 rows) in the dense record, the plan printed, its measured share in meta.json, the labels stored."""
    from oppsig.store.labels import read_labels

    assert "probe: every example every 14 steps (50 rows), planned 9.5% of training time (budget 10%;" in probe_printed
    assert "probe: 1,024 examples every 14 steps took" in probe_printed
    assert run.batches is not None and run.batches.entries == STEPS * BATCH
    step, col, _, _ = run.batches.arrays()
    assert (np.bincount(step, minlength=STEPS) == BATCH).all()
    assert run.losses.shape == (50, N) and list(run.steps) == list(range(0, STEPS, 14))
    assert np.isfinite(np.asarray(run.losses[:])).all()
    assert 0 < run.meta["probe_share"] == run.meta["probe"]["measured_share"]
    lab = read_labels(run.path)
    assert lab is not None and lab.classes == CLASSES


def record_alone_pairs(run_dir, tmp_path, pairs) -> list[dict]:
    """:func:`planted_pairs_found` of ``detect_run`` on a copy of the run, from its record alone."""
    import shutil

    from oppsig import detect_run

    shutil.copytree(run_dir, tmp_path / "mine")
    return planted_pairs_found(detect_run(tmp_path / "mine", verify=0, grids=False), pairs)
