"""Do the live spike messages of a run name the groups that ``oppsig detect`` later pairs?

For each of the largest spikes that detect finds (``signals.json``), the live spike event of the same spike
(fired between its onset and its peak, or up to 2 steps before the onset) is looked up in ``events.jsonl``;
each group the live message names is matched with detect's paired groups by example id. A live group
*matches* a paired group when at least half of the live group belongs to it, or it holds at least half of
that group. Groups that came from a ``signals.json`` match by their id.

    oppsig train configs/fc-tanh-ce-gd-cifar5k.yaml --train.steps=800 --live.enabled=true
    oppsig detect runs/fc-tanh-ce-gd-cifar5k
    python benchmarks/live_attribution_check.py runs/fc-tanh-ce-gd-cifar5k [--top 5]
"""

from __future__ import annotations

import argparse

from oppsig.signals import read_signals_json
from oppsig.live import read_events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    sig = read_signals_json(f"{args.run}/signals.json")
    events = [e for e in read_events(args.run) if e["kind"] == "spike"]
    groups = {g.id: g for g in sig.groups}
    paired = {}
    for p in sig.pairs:
        if p.significant:
            paired.setdefault(p.a, p)
            paired.setdefault(p.b, p)
    spikes = sorted(sig.spikes, key=lambda s: -s.height)[: args.top]
    ok = 0
    for s in sorted(spikes, key=lambda s: s.step):
        ev = [e for e in events if s.onset_step - 2 <= e["step"] <= s.step]
        head = f"spike at step {s.step} (+{s.height:.0%}, onset {s.onset_step})"
        if not ev:
            print(f"{head}: no live event")
            continue
        e = ev[-1]
        print(f"{head}: live at step {e['step']}: {e['message']}")
        found = []
        for g in e["groups"]:
            if g.get("source") == "signals.json":
                if g["id"] in paired:
                    found.append(f"{g['label']} = detect group {g['id']}, paired")
                continue
            ids = set(g.get("ids", []))
            for gid, p in paired.items():
                inter = len(ids & set(groups[gid].ids))
                if ids and (inter >= 0.5 * len(ids) or inter >= 0.5 * len(groups[gid].ids)):
                    d = groups[gid]
                    found.append(f"{g['label']} ({len(ids)}) ~ detect group {gid} ({d.size}, "
                                 f"{', '.join(f'{k} {v}' for k, v in list(d.class_counts.items())[:2])}; "
                                 f"{', '.join(d.shared[:2])}), pair {p.a}/{p.b}: {inter} shared = "
                                 f"{inter / len(ids):.0%} of the live group, {inter / d.size:.0%} of detect's")
        ok += bool(found)
        for f in found or ["no paired group matches"]:
            print(f"    {f}")
    print(f"{ok} of {len(spikes)} largest spikes: the live message names a group that detect pairs")


if __name__ == "__main__":
    main()
