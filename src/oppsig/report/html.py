"""The HTML report: one self-contained file per run or comparison (figures embedded, no network needed).

Every piece of text taken from a run (names, class names, config values,
descriptions) is HTML-escaped, so a run or class name cannot inject script.
"""

from __future__ import annotations

import base64
import html
import io

import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import StoreError
from ..signals.text import pair_test_text
from ..store.dataset import data_mismatch, run_dataset_or_reason
from ..store.fingerprint import mismatch_text
from ..store.format import atomic_write
from . import figures
from .summary import load_signals, run_summary, signals_summary

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;
color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem} \
h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem;margin-bottom:.3rem} h4{font-size:.98rem;margin:.4rem 0 .2rem}
details.pair{border:1px solid #ddd;padding:.3rem .6rem;margin:.5rem 0} section.pair{margin-bottom:1.2rem} \
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0} \
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f6f6f6} img{max-width:100%;height:auto;display:block;margin:.4rem 0}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:.8rem} \
.side{display:grid;grid-auto-flow:column;grid-auto-columns:1fr;gap:.6rem}
.otherdata{background:#fff0f0;border-left:4px solid #c00;padding:.5rem .8rem;margin:.6rem 0}
.finding{background:#f3f8ff;border-left:4px solid #1f77b4;padding:.5rem .8rem;margin:.6rem 0}
.warn{background:#fff6f0;border-left:4px solid #d62728;padding:.5rem .8rem;margin:.6rem 0}
code{background:#f4f4f4;padding:0 .2rem} .small{font-size:.85rem;color:#555}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fig_to_img(fig, alt: str, dpi: int = 110) -> str:
    """Render a matplotlib Figure to an embedded ``<img>`` tag and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any, nd: int = 4) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{nd}g}"
    return str(v)


def _config_table(cfg) -> str:
    if cfg is None:
        return "<p class='small'>no config recorded</p>"
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
    rows = []
    for section in ("data", "model", "optim", "train", "record", "curvature"):
        v = d.get(section) if isinstance(d, dict) else None
        if isinstance(v, dict):
            flat = ", ".join(f"{k}={v2}" for k, v2 in v.items() if not isinstance(v2, dict))
            rows.append(f"<tr><th>{esc(section)}</th><td class='small'>{esc(flat)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def array_to_img(arr: np.ndarray, alt: str) -> str:
    """An (H, W, 3) uint8 image as an embedded ``<img>`` tag (no figure: fast)."""
    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, arr, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}" style="image-rendering:pixelated">'


OPEN_PAIRS = 3  # pairs shown open; the later ones are collapsed (click to open), never left out


def _shared_words(g) -> str:
    """The group's shared descriptors in words with their effect sizes, strongest first (each once)."""
    shared = list(getattr(g, "shared", ()) or ())
    eff = dict(getattr(g, "descriptors", {}) or {})
    strongest = sorted(eff, key=lambda k: -abs(eff[k]))[: len(shared)]
    if len(strongest) == len(shared):
        return ", ".join(f"{w} ({eff[k]:+.1f} sd)" for w, k in zip(shared, strongest))
    return ", ".join(shared)


def _group_column(g, data) -> str:
    tokens = data is not None and data.meta.get("unit") == "token"
    col = [f"<h4>group {esc(g.id)}: {len(g.members)} examples</h4><ul class='small'>"]
    cc = getattr(g, "class_counts", {}) or {}
    if cc:
        what = "targets" if tokens else "classes"
        more = f", +{len(cc) - 6} more" if len(cc) > 6 else ""
        col.append(f"<li>{what}: " + esc(", ".join(f"{n} {c}" for n, c in list(cc.items())[:6]) + more) + "</li>")
    words = _shared_words(g)
    col.append("<li>shared: " + esc(words or "no descriptor separates it from its classes; see the direction image")
               + "</li>")
    ratio = getattr(g, "direction_ratio", float("nan"))
    if not tokens and getattr(g, "direction", None) is not None and np.ndim(g.direction) == 3 and math.isfinite(ratio):
        col.append(f"<li>mean image - data mean: norm {ratio:.2f}x a typical image's distance from the mean</li>")
    col.append("</ul>")
    if tokens:
        from ..data.text import show_context

        ex = [show_context(data, int(i)) for i in list(g.members)[:12]]
        col.append("<p class='small'>first 12 examples (context⟨target⟩):</p><pre class='small' "
                   "style='white-space:pre-wrap'>" + esc("\n".join(ex)) + "</pre>")
    elif data is not None and data.raw is not None and data.raw.dim() == 4:
        mem = np.asarray(g.members[:30], dtype=int)
        tiles = data.raw[mem].numpy()
        if getattr(g, "direction", None) is not None and np.ndim(g.direction) == 3:
            from .grids import _direction_image

            tiles = np.concatenate([(255 * _direction_image(g.direction)).astype(np.uint8).transpose(2, 0, 1)[None],
                                    tiles])
            cap = "first tile: the mean image minus the data mean (grey is zero); then "
        else:
            cap = ""
        col.append(array_to_img(figures.image_mosaic(tiles, ncols=8, scale=2), f"images of group {g.id}"))
        col.append(f"<p class='small'>{esc(cap)}the first {len(mem)} of {len(g.members)} members, largest loss "
                   "swing first</p>")
    return "<div>" + "".join(col) + "</div>"


def _pair_section(k: int, pair, run, sig, data) -> str:
    from ..signals import pair_name

    groups = {g.id: g for g in getattr(sig, "groups", ())}
    ga, gb = figures.pair_groups(pair, groups)
    name = pair_name(k, pair)
    ver = next((v for v in getattr(sig, "verifications", ()) if {v.a, v.b} == {pair.a, pair.b}), None)
    rel = " (relative: of log L)" if getattr(pair, "view", "raw") == "relative" else ""
    facts = [f"anti-phase correlation of loss changes{rel}: <b>{esc(_fmt(pair.corr, 3))}</b> "
             f"(random examples of its sizes split the same way: {esc(_fmt(pair.anti_phase.null_corr, 3))}; "
             f"beyond the leading oscillation: {pair.anti_phase.beyond_corr:.2f} vs "
             f"{pair.anti_phase.null_beyond:+.2f}"
             + ("; <b>weak: no more anti-phase than they are</b>)" if pair.anti_phase.weak else ")")]
    if ver is not None and not math.isfinite(ver.grad_cosine):
        facts.append(f"<b>not verified</b>: {esc(ver.error)}")
    elif ver is not None:
        facts.append(f"gradient cosine at step {esc(ver.step)}: <b>{esc(_fmt(ver.grad_cosine, 3))}</b>")
        if ver.eig_cosine_a is not None:
            facts.append(f"|cosine| with the top Hessian eigenvector: {esc(_fmt(ver.eig_cosine_a, 2))} / "
                         f"{esc(_fmt(ver.eig_cosine_b, 2))}")
        if ver.sharpness is not None:
            flag = "" if ver.eig_converged else " <b>(not converged: not certified)</b>"
            facts.append(f"sharpness there {esc(_fmt(ver.sharpness, 4))} &plusmn; {esc(_fmt(ver.sharpness_error, 2))}"
                         + flag)
        if ver.error:
            facts.append(esc(ver.error))
    facts.append(esc(pair_test_text(pair)))  # the input test's, or the record's alone (flagged)
    facts.append(f"share of the spikes' loss change per example: {esc(_fmt(pair.spike_share, 3))}x its size")
    if pair.spike_rise_share:
        steps = getattr(sig, "steps", ())
        facts.append("share of the net rise at its spikes: " + esc(", ".join(
            (f"step {int(steps[r])}: " if r < len(steps) else "") + f"{100 * v:.0f}%"
            for r, v in zip(pair.spikes, pair.spike_rise_share) if math.isfinite(v))))
    contrast = " vs ".join(figures.pair_contrast(ga, gb)) if ga is not None and gb is not None else ""
    body = [f"<p><b>{esc(contrast)}</b></p>" if contrast else "", "<p>" + "; ".join(facts) + "</p>",
            fig_to_img(figures.plot_group_losses(run, sig, pair=pair), f"group losses of {name}"),
            "<div class='grid2'>" + "".join(_group_column(g, data) for g in (ga, gb) if g is not None) + "</div>"]
    if k < OPEN_PAIRS:
        return (f"<section class='pair' id='pair-{k}' data-pair='{k}'><h3>{esc(name)}</h3>" + "".join(body)
                + "</section>")
    return (f"<details class='pair' id='pair-{k}' data-pair='{k}'><summary><b>{esc(name)}</b>: {esc(contrast)}"
            f"</summary>" + "".join(body) + "</details>")


def _group_section(run, sig, data, note) -> str:
    from ..signals import pair_name

    parts = []
    pairs = list(getattr(sig, "pairs", ()))
    if not pairs:
        parts.append("<div class='finding'>No significant opposing pair was found in this run "
                     "at the default threshold.</div>")
    else:
        later = (f" Pairs {OPEN_PAIRS} to {len(pairs) - 1} are collapsed below the first {OPEN_PAIRS}: click one to "
                 "open it." if len(pairs) > OPEN_PAIRS else "")
        links = ", ".join(f"<a href='#pair-{k}'>{esc(pair_name(k, p))}</a>" for k, p in enumerate(pairs))
        parts.append(f"<p>{len(pairs)} significant pair{'s' if len(pairs) != 1 else ''}, strongest first: {links}."
                     f"{esc(later)}</p>")
    for k, pair in enumerate(pairs):
        parts.append(_pair_section(k, pair, run, sig, data))
    if note:
        parts.append(f"<p class='small'>{esc(note)}</p>")
    return "".join(parts)


def _heatmap_examples(sig, per_group: int = 8, max_groups: int = 6) -> tuple[list[int], list[str], list[int]]:
    """Rows, labels (group and stable id) and block starts of the heat map: the pairs' groups first."""
    groups = {g.id: g for g in getattr(sig, "groups", ())}
    order = [gid for p in getattr(sig, "pairs", ()) for gid in (p.a, p.b) if gid in groups]
    order += [gid for gid in groups if gid not in order]
    ex, lab, blocks = [], [], []
    for gid in order[:max_groups]:
        g = groups[gid]
        blocks.append(len(ex))
        for r, i in list(zip(g.members, g.ids))[:per_group]:
            ex.append(int(r))
            lab.append(f"g{g.id} #{int(i)}")
    if not ex:
        for r in list(getattr(sig, "recurring", ()))[:40]:
            ex.append(int(r.row))
            lab.append(f"#{int(getattr(r, 'id', r.row))}")
    return ex, lab, blocks


def _other_data_banner(data, sig) -> str:
    """A visible warning when the images shown, or the signals read, come from data the run did not train on."""
    lines = []
    if data_mismatch(data) is not None:
        lines.append("Images and classes: " + mismatch_text(data_mismatch(data)))
    if sig is not None and (sig.dataset or {}).get("data_mismatch"):
        lines.append("Signals (oppsig detect): " + mismatch_text(sig.dataset["data_mismatch"]))
    return "".join(f"<div class='otherdata'><b>Other data.</b> {esc(t)}</div>" for t in lines)


def run_section(run, sig, title: str, allow_other_data: bool = False) -> str:
    cfg = run.config
    meta = run.meta
    data, note = run_dataset_or_reason(run, allow_other_data=allow_other_data)
    parts = [f"<h2>{esc(title)}</h2>", _other_data_banner(data, sig)]
    summ = run_summary(run)
    facts = {
        "run directory": str(run.path),
        "data": meta.get("data", getattr(getattr(cfg, "data", None), "name", "")),
        "examples recorded": f"{len(run.index)} x {run.rows} steps",
        "model": getattr(getattr(cfg, "model", None), "name", ""),
        "optimiser": (f"{cfg.optim.name}, lr {cfg.optim.lr:g}" if hasattr(cfg, "optim") else ""),
        "changed on resume": "; ".join(f"from step {c['step']}: " + ", ".join(f"{k}={v}" for k, v in
                                                                               c["changes"].items())
                                       for c in meta.get("config_changes", [])),
        "loss": getattr(getattr(cfg, "train", None), "loss", ""),
        "wall time": f"{meta.get('wall_time', float('nan')):.0f} s" if "wall_time" in meta else "",
        "final train loss / accuracy": f"{_fmt(summ['final loss'])} / {_fmt(summ['final accuracy'], 3)}",
        "max sharpness / threshold": (f"{_fmt(summ['max sharpness / threshold'], 3)} ({summ['sharpness measure']} "
                                      "sharpness; time at EoS " + _fmt(summ['time at EoS'], 2) + ")")
        if math.isfinite(summ["max sharpness / threshold"]) else "",
        "sharpness not converged": (f"{summ['unconverged sharpness']} measurements (their values are not certified; "
                                    "marked in the figure)") if summ["unconverged sharpness"] else "",
        "test accuracy": _fmt(summ["test accuracy"], 3),
        "device / torch": f"{meta.get('device', '')} / {meta.get('torch', '')}",
        "oppsig / revision": f"{meta.get('oppsig_version', '')} / {meta.get('code_revision', '')}",
    }
    parts.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items() if v)
                 + "</table>")
    parts.append("<details><summary>config (the run's first; changes above)</summary>" + _config_table(cfg)
                 + "</details>")
    if sig is not None:
        from ..signals import summary_text

        text = summary_text(sig)
        n_pairs = len(sig.pairs)
        n_sp = len(sig.spikes)
        lead = (f"{n_pairs} opposing pair{'s' if n_pairs != 1 else ''} found" if n_pairs else
                "no significant opposing pair found") + f"; {n_sp} loss spike{'s' if n_sp != 1 else ''} detected."
        parts.append(f"<div class='finding'><b>{esc(lead)}</b><details><summary>detection summary</summary>"
                     f"<pre style='white-space:pre-wrap;margin:0'>{esc(text)}</pre></details></div>")
    parts.append("<h3>Loss and accuracy</h3>")
    parts.append(fig_to_img(figures.plot_loss(run, sig), "loss and accuracy"))
    parts.append("<h3>Sharpness against the stability threshold</h3>")
    if np.isfinite(np.asarray(run.metrics.get("sharpness", []), dtype=float)).any():
        parts.append(fig_to_img(figures.plot_sharpness(run), "sharpness"))
    else:
        parts.append("<p class='small'>Sharpness was not measured in this run (set <code>curvature.every</code>, or "
                     "measure it afterwards with <code>oppsig sharpness RUN</code>).</p>")
    if "update_proj" in run.metrics:
        parts.append("<h3>The update's projection on the top eigenvector</h3>")
        parts.append(fig_to_img(figures.plot_update_projection(run), "update projection"))
    if figures.layer_share_keys(run):
        parts.append("<h3>Where the top eigenvector lives: its share in each layer</h3>")
        parts.append(fig_to_img(figures.plot_layer_shares(run), "layer shares of the top eigenvector"))
    if sig is not None:
        parts.append("<h3>Opposing groups</h3>")
        parts.append(_group_section(run, sig, data, note))
        ex, lab, blocks = _heatmap_examples(sig)
        if ex:
            parts.append("<h3>Per-example loss of the pairs' groups</h3>")
            parts.append("<p class='small'>rows: the first examples of each group (g: group, #: stable example id), "
                         "the groups of the strongest pairs first, separated by white lines</p>")
            parts.append(fig_to_img(figures.plot_heatmap(run, ex, lab, blocks=blocks), "per-example loss heat map"))
    else:
        parts.append("<p class='small'>No signals.json in this run: run <code>oppsig detect RUN</code> to find the "
                     "opposing groups.</p>")
    return "".join(parts)


def comparison_section(runs: Sequence, sigs: Sequence, names: Sequence[str]) -> str:
    parts = ["<h2>Comparison</h2>"]
    cols = ["run", "steps", "final loss", "final accuracy", "test accuracy", "spikes", "pairs", "group oscillation",
            "max sharpness (raw)", "max preconditioned sharpness", "sharpness measure", "max sharpness / threshold",
            "time at EoS", "unconverged sharpness"]
    rows = []
    for run, sig, name in zip(runs, sigs, names):
        d = {"run": name, **run_summary(run), **signals_summary(sig)}
        rows.append("<tr>" + "".join(f"<td>{esc(_fmt(d.get(c, '–'), 3))}</td>" for c in cols) + "</tr>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>" + "".join(rows) + "</table>")
    parts.append("<p class='small'>time at EoS: fraction of sharpness measurements at or above 90% of the optimiser's "
                 "stability threshold. The ratio and the time at EoS compare the sharpness the threshold is for "
                 "(sharpness measure): the raw top Hessian eigenvalue for GD/SGD, the preconditioned one "
                 "(P^-1/2 H P^-1/2) against Adam's preconditioned threshold for Adam/AdamW. unconverged sharpness: "
                 "measurements whose eigensolve ran out of iterations (not certified).</p>")
    parts.append(fig_to_img(figures.plot_comparison(runs, names, "loss"), "loss of every run"))
    if any("sharpness" in r.metrics for r in runs):
        parts.append(fig_to_img(figures.plot_comparison(runs, names, "sharpness", log=False), "sharpness of every run"))
    return "".join(parts)


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
                 title: str | None = None, allow_other_data: bool = False) -> Path:
    """Write ``report.html`` for one run (into its directory) or several (a comparison).

    Args:
        run_dirs: run directories; each may hold a ``signals.json`` from ``oppsig detect``.
        out: the HTML file to write (default: ``<run>/report.html``, or
            ``<first run's parent>/comparison.html`` for several runs).
        allow_other_data: go on when a run's data are not those it trained on (its data fingerprint);
            its section then opens with a banner that says so.

    Returns:
        the path written.

    Raises:
        StoreError: when a directory is not a run or the file cannot be written.
        DataMismatchError: when a run's data differ from those it trained on and ``allow_other_data`` is False.
    """
    from ..store import open_run

    if not run_dirs:
        raise StoreError("give at least one run directory")
    runs = [open_run(d) for d in run_dirs]
    sigs = [load_signals(Path(d)) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    if out is None:
        out = Path(run_dirs[0]) / "report.html" if len(runs) == 1 else Path(run_dirs[0]).parent / "comparison.html"
    out = Path(out)
    title = title or (f"oppsig report: {names[0]}" if len(runs) == 1 else "oppsig comparison: " + " vs ".join(names))
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class='sub'>written {esc(time.strftime('%Y-%m-%d %H:%M'))} by oppsig; "
            "self-contained, no network needed</p>"]
    if len(runs) > 1:
        body.append(comparison_section(runs, sigs, names))
    for run, sig, name in zip(runs, sigs, names):
        record = (getattr(sig, "dataset", None) or {}).get("record") if sig is not None else None
        if record and record.get("source") == "batch":  # signals of the sparse record: figures read it per epoch
            from ..store.batches import EpochRun

            run = EpochRun(run, record["steps_per_epoch"])
        body.append(run_section(run, sig, name, allow_other_data))
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           "<meta http-equiv='Content-Security-Policy' "
           "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, doc)
    except OSError as e:
        raise StoreError(f"cannot write the report {out}: {e.strerror or e}") from None

    return out
