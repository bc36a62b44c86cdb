"""The search's results in words: :func:`summary_text` (what the CLI prints), :func:`failed_text` (why a pair
is not reported) and :func:`verification_text` (one gradient check)."""

from __future__ import annotations

import numpy as np

from .result import Pair, SignalsResult, pair_name


def verification_text(v) -> str:
    """One line for a :class:`~oppsig.signals.result.Verification`: the cosines, the sharpness with its bound
    (marked when not converged), or why the check failed."""
    if not np.isfinite(v.grad_cosine):
        return f"groups {v.a} and {v.b} not verified: {v.error}"
    e = ""
    if v.eig_cosine_a is not None and v.eig_cosine_b is not None:
        e = f", |cos| with the top Hessian eigenvector {v.eig_cosine_a:.2f} / {v.eig_cosine_b:.2f}"
    if v.sharpness is not None:
        mark = "" if v.eig_converged else " (not converged: not certified)"
        e += f" (sharpness {v.sharpness:.4g} +- {v.sharpness_error:.2g}{mark})"
    if v.error:
        e += f"; {v.error}"
    at = f" at step {v.step}" if v.step is not None else ""
    return f"gradients of groups {v.a} and {v.b}{at}: cosine {v.grad_cosine:+.2f}{e}"


TEST_NAME = {"inputs": "input coherence", "record": "replication on held-out rows"}
"""What each pair test is called in the summaries (by :attr:`~oppsig.signals.result.Pair.tested_on`)."""


def pair_test_text(p: Pair) -> str:
    """The pair's test in words: input coherence, or, found from the record alone, its replication in time.

    Example:
        >>> from oppsig.signals.result import Coherence
        >>> p = Pair(0, 1, corr=-0.5, strength=1.0, swing=1.0, spike_share=1.0, tested_on="record",
        ...          coherence=Coherence(statistic=3.2, p_value=0.001, n_null=999))
        >>> pair_test_text(p)  # doctest: +ELLIPSIS
        'tested on the record alone: no input test; co-movement on held-out rows 3.2x random groups of its ...'
    """
    c = p.coherence
    if p.tested_on == "record":
        return (f"tested on the record alone: no input test; co-movement on held-out rows {c.statistic:.1f}x "
                f"random groups of its classes, p={c.p_value:.2g} (family-wise, {c.n_null} permutations)")
    return f"input coherence {c.statistic:.1f}x null, p={c.p_value:.2g} (family-wise, {c.n_null} permutations)"


def failed_text(p: Pair) -> str:
    """Why a pair is not reported, in words (its :attr:`~oppsig.signals.result.Pair.failed` checks).

    Example:
        >>> from oppsig.signals.result import AntiPhase, Coherence
        >>> p = Pair(0, 1, corr=-0.5, strength=1.0, swing=1.0, spike_share=1.0, failed=("anti-phase",),
        ...          coherence=Coherence(p_value=0.001, threshold=0.01), anti_phase=AntiPhase(null_corr=-0.6, p=0.2))
        >>> failed_text(p)  # doctest: +ELLIPSIS
        'anti-phase -0.50 no stronger than random examples of its sizes split the same way (-0.60), nor beyond ...'
    """
    c, ap = p.coherence, p.anti_phase
    why = {
        "test": (f"{TEST_NAME[p.tested_on]} p={c.p_value:.2g} > {c.threshold:.2g}" if c.p_value > c.threshold
                 else f"anti-phase {p.corr:.2f} weaker than the candidates' limit"),
        "anti-phase": f"anti-phase {p.corr:.2f} no stronger than random examples of its sizes split the same way "
                      f"({ap.null_corr:.2f}), nor beyond the leading oscillation ({ap.beyond_corr:.2f} vs "
                      f"{ap.null_beyond:.2f}; p={ap.p:.2g})",
        "visible": f"a group's mean input differs from its classes' by only {p.direction_ratio:.2f}x a typical "
                   "example's distance",
        "leading": f"its group-mean difference is the leading oscillation (corr {ap.leading_corr:.2f}), with no "
                   f"anti-phase of its own beyond it (p={ap.p_beyond:.2g})",
        "beyond": f"its groups are not anti-phase once the leading oscillation is taken out of both "
                  f"(corr {ap.beyond_corr:.2f})",
        "partner": "each of its groups has a more anti-phase partner, reported",
        "gradient": "its groups' gradients do not point apart on the model (cosine >= 0)",
    }
    return "; ".join(why.get(f, f) for f in p.failed) or "reported"


def extension_text(g) -> str:
    """One line on a mini-batch group's members outside the probe (:attr:`Group.extension`)."""
    e = g.extension
    done = (f" (its membership model adds {len(e.added)} probed and leaves out {len(e.dropped)})"
            if e.added or e.dropped else "")
    if not e.ids:
        return f"{g.size} probed members{done}; {e.note or 'none found outside the probe'}"
    return (f"{g.size} probed members{done} + {len(e.ids)} found outside the probe (cross-validated on the probe: "
            f"precision {e.precision:.2f}, recall {e.recall:.2f}; by {', '.join(e.features)})"
            + (f"; {e.note}" if e.note else ""))


def summary_text(result: SignalsResult, max_groups: int = 6) -> str:
    """A short human summary of ``result`` (what the CLI prints).

    Example:
        >>> print(summary_text(SignalsResult(n_rows=10, n_examples=4)))  # doctest: +ELLIPSIS
        opposing signals: 10 recorded steps x 4 examples
        ...
    """
    lines = [f"opposing signals: {result.n_rows} recorded steps x {result.n_examples} examples"]
    rec = result.dataset.get("record") if isinstance(result.dataset, dict) else None
    if rec and rec.get("source") == "batch":
        lines[0] = (f"opposing signals: {result.n_rows} epochs ({rec['steps_per_epoch']} steps each) x "
                    f"{result.n_examples} examples, each seen in its own mini-batch once an epoch")
    elif rec and rec.get("source") == "probe+batch":
        lines[0] = (f"opposing signals: {result.n_rows} probe rows x {result.n_examples} probed examples of "
                    f"{rec['examples']}; groups extended to the rest by their mini-batch losses"
                    + (" and inputs" if rec.get("what", "").endswith("inputs") else ""))
    if result.spikes:
        sp = ", ".join(f"{s.step} (+{100 * s.height:.0f}%)" for s in sorted(result.spikes, key=lambda s: -s.height)[:5])
        lines.append(f"loss spikes: {len(result.spikes)}; largest at steps {sp}")
    else:
        lines.append("loss spikes: none")
    k = result.config.get("k", 20)
    lines.append(
        f"top-{2 * k} examples carry {100 * result.top_share:.1f}% of the absolute loss change per step "
        f"(mean); recurring extremes: {len(result.recurring)}; groups: {len(result.groups)}"
    )
    t = result.test
    if t:
        lines.append(
            f"test: {t.get('groups_tested', 0)} groups in anti-phase pairs against {t.get('n_null', 0)} "
            f"within-class permutations (p resolution {t.get('resolution', float('nan')):.1g}); "
            f"{t.get('error', 'family-wise error')} at {t.get('alpha', float('nan')):g}"
            + ("; tested on the record alone (no inputs): replication on held-out rows, no visible gate"
               if t.get("tested_on") == "record" else "")
        )
    if not result.pairs:
        best = result.rejected_pairs[0] if result.rejected_pairs else None
        extra = (f" (best candidate corr {best.corr:.2f}, p={best.coherence.p_value:.2g}; {failed_text(best)})"
                 if best is not None else "")
        lines.append(f"no significant opposing pair{extra}; generic null halves correlate at {result.null_corr:.2f}")
    elif any(p.failed and set(p.failed) - {"test", "partner"} for p in result.rejected_pairs):
        gated = [p for p in result.rejected_pairs if p.failed and set(p.failed) - {"test", "partner"}]
        lines.append(f"{len(gated)} more pair(s) passed the test but not the gates after it, e.g. groups "
                     f"{gated[0].a} and {gated[0].b}: {failed_text(gated[0])}")
    verified = {(v.a, v.b): v for v in result.verifications}
    for i, p in enumerate(result.pairs):
        ga, gb = result.group(p.a), result.group(p.b)
        ap = p.anti_phase
        lines.append(
            f"{pair_name(i, p)}: corr {p.corr:.2f}{' in relative terms (of log L)' if p.view == 'relative' else ''} "
            f"(random examples of its sizes split the same way "
            f"{ap.null_corr:.2f}; beyond the leading oscillation {ap.beyond_corr:.2f} vs {ap.null_beyond:+.2f}; "
            f"p={ap.p:.2g}{'; WEAK: no more anti-phase than they are' if ap.weak else ''}), "
            f"swing {p.swing:.1f}x the total loss's, "
            + (f"spike share {p.spike_share:.1f}x its size, " if np.isfinite(p.spike_share) else "no spike to share, ")
            + pair_test_text(p)
        )
        for g in (ga, gb):
            lines.append(f"  group {g.id}: {g.explanation}")
            if g.extension is not None:
                lines.append("    " + extension_text(g))
        if p.spikes:
            sh = ", ".join(f"step {result.steps[r]}: {100 * s:.0f}%" for r, s in zip(p.spikes, p.spike_rise_share)
                           if np.isfinite(s))
            if sh:
                lines.append(f"  share of the total-loss rise: {sh}")
        v = verified.get((p.a, p.b)) or verified.get((p.b, p.a))
        if v is not None:
            lines.append("  " + verification_text(v))
    shown = {p.a for p in result.pairs} | {p.b for p in result.pairs}
    others = [g for g in result.groups if g.id not in shown][: max(0, max_groups - len(shown))]
    for g in others:
        lines.append(f"group {g.id}: {g.explanation}")
        if g.extension is not None:
            lines.append("  " + extension_text(g))
    return "\n".join(lines)
