import shutil
import subprocess

import numpy as np
import pytest

from oppsig.report import plot_heatmap, plot_image_grid, plot_loss, plot_sharpness, write_report
from oppsig.training import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio"]

CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _err = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _err(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.setAttribute('data-check', JSON.stringify({n: imgs.length, broken: broken, errors: window.__errors}));
});
</script>"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from oppsig.config import load_config

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, ["data.name=synthetic", "data.n=96", "model.widths=[8]", "train.steps=12",
                             "optim.lr=0.05", f"out_dir={out}", "name=<img src=x onerror=alert(1)>",
                             "curvature.every=4"])
    return train(cfg, progress=False).run_dir


def add_fake_signals(run_dir, n_pairs=1, tested_on="inputs"):
    """A signals.json with ``n_pairs`` significant pairs, as detection would write: pair 0 of group 0 (rows 0-9) and
    group 1 (rows 10-19), the others of groups of 7 rows from row 20."""
    import numpy as np

    from oppsig.signals import AntiPhase, Coherence, Group, Pair, SignalsResult, Spike, Verification, write_signals_json
    from oppsig.store import open_run

    run = open_run(run_dir)
    total = np.asarray(run.losses).mean(1)
    groups = (Group(0, tuple(range(10)), tuple(range(10)), shared=("bright <top>",), class_counts={"class0": 10},
                    explanation="bright <b>top</b> border", direction=np.ones((3, 32, 32)),
                    descriptors={"top": 1.5, "background": 0.1}),
              Group(1, tuple(range(10, 20)), tuple(range(10, 20)), shared=("dark background",),
                    descriptors={"top": 0.2, "background": -1.2}))
    groups += tuple(Group(g, tuple(range(6 + 7 * g, 13 + 7 * g)), tuple(range(6 + 7 * g, 13 + 7 * g)),
                          shared=(f"word{g}",)) for g in range(2, 2 * n_pairs))
    pairs = tuple(Pair(2 * k, 2 * k + 1, corr=-0.9, strength=3.0 - k / 10, swing=0.2, spike_share=2.0,
                       coherence=Coherence(statistic=1.5, p_value=1e-6, threshold=1e-3),
                       anti_phase=AntiPhase(null_corr=-0.5),
                       significant=True, spikes=(6,), spike_rise_share=(0.4,), tested_on=tested_on)
                  for k in range(n_pairs))
    spike = Spike(row=6, step=int(run.steps[6]), onset_row=3, onset_step=int(run.steps[3]), loss=float(total[6]),
                  trend=float(total[6]) * 0.8, height=0.25, z=4.0)
    res = SignalsResult(n_rows=run.rows, n_examples=len(run.index), steps=run.steps, total_loss=total,
                        spikes=(spike,), groups=groups, pairs=pairs,
                        verifications=(Verification(0, 1, -0.6, 1.0, 1.0, 0.5, 0.4, step=3),))
    write_signals_json(res, run_dir / "signals.json")


def test_figures_plot_the_run_data(tiny_run):
    """Each figure draws the run's own numbers: metrics at their steps, the heat map's losses, the images."""
    import matplotlib.pyplot as plt

    from oppsig.store import open_run

    run = open_run(tiny_run)
    m = run.metrics
    step = np.asarray(m["step"])

    def finite(key):
        v = np.asarray(m[key], dtype=float)
        return step[np.isfinite(v)], v[np.isfinite(v)]

    def xy(line):
        return np.asarray(line.get_xdata()), np.asarray(line.get_ydata(), dtype=float)

    fig = plot_loss(run)
    for ax, key in zip(fig.axes[:2], ("loss", "accuracy")):
        x, y = xy(ax.get_lines()[0])
        assert np.array_equal(x, finite(key)[0]) and np.allclose(y, finite(key)[1])
    fig = plot_sharpness(run)
    lines = {ln.get_label(): xy(ln) for ln in fig.axes[0].get_lines()}
    x, y = lines["top eigenvalue"]
    assert np.array_equal(x, [0, 4, 8]) and np.allclose(y, finite("sharpness")[1])  # curvature.every=4
    assert np.allclose(lines["stability threshold"][1], 2 / run.config.optim.lr)  # GD: 2/lr
    cols = [0, 5, 7]
    fig = plot_heatmap(run, [7, 0, 5])  # in the order given, not sorted
    img = np.asarray(fig.axes[0].images[0].get_array())
    L = np.asarray(run.losses, dtype=np.float64)
    assert np.allclose(img, np.log10(np.maximum(L[:, [7, 0, 5]].T, 1e-4)))
    assert img.shape == (len(cols), run.rows)
    imgs = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    fig = plot_image_grid(imgs, "t", ncols=3)
    mosaic = np.asarray(fig.axes[0].images[0].get_array())  # one mosaic, 3 per row, 2 px white gaps
    tiles = [mosaic[r * 10: r * 10 + 8, c * 10: c * 10 + 8] for r, c in ((0, 0), (0, 1), (0, 2), (1, 0))]
    assert all(np.array_equal(t, i.transpose(1, 2, 0)) for t, i in zip(tiles, imgs))
    plt.close("all")


def test_report_escapes_names(tiny_run):
    add_fake_signals(tiny_run)
    out = write_report([tiny_run])
    text = out.read_text()
    assert "pair 0 (group 0 vs group 1)" in text and "-0.6" in text  # the pair and its gradient cosine
    assert "images of group 0" in text and "images of group 1" in text
    assert "bright &lt;top&gt;" in text and "<b>top</b> border" not in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert text.count("data:image/png;base64,") >= 7
    assert "http://" not in text and "https://" not in text  # nothing to fetch


def test_every_significant_pair_has_its_section(tiny_run, tmp_path):
    """Each pair gets its heading, anti-phase figure and both groups' images; the later ones collapsed, not left out."""
    import re

    from oppsig.report.html import OPEN_PAIRS
    from oppsig.signals import read_signals_json

    n = OPEN_PAIRS + 2
    add_fake_signals(tiny_run, n_pairs=n)
    sig = read_signals_json(tiny_run / "signals.json")
    text = write_report([tiny_run], tmp_path / "r.html").read_text()
    sections = re.findall(r"<(section|details) class='pair' id='pair-(\d+)' data-pair='\d+'>(.*?)</\1>", text, re.S)
    assert [int(k) for _, k, _ in sections] == list(range(len(sig.significant_pairs))) == list(range(n))
    for tag, k, body in sections:
        p = sig.pairs[int(k)]
        assert f"pair {k} (group {p.a} vs group {p.b})" in body
        assert f"group losses of pair {k} " in body
        assert f"images of group {p.a}" in body and f"images of group {p.b}" in body
        assert tag == ("section" if int(k) < OPEN_PAIRS else "details")
    assert f"Pairs {OPEN_PAIRS} to {n - 1} are collapsed" in text
    # what opposes the groups, once: pair 0's legend names each side of the descriptor that differs most
    assert "bright top border (+1.5 sd)" in text and "dark top border (+0.2 sd)" in text
    assert "1 loss spike detected" in text
    # signals.json and the summary name the pair the same way
    import json

    assert json.loads((tiny_run / "signals.json").read_text())["pairs"][0]["name"] == "pair 0 (group 0 vs group 1)"


@pytest.mark.parametrize("tested_on", ["inputs", "record"])
def test_a_pair_says_which_test_it_passed(tiny_run, tmp_path, tested_on):
    """A pair found from the record alone passed no input test: its section says so, beside its p-value."""
    add_fake_signals(tiny_run, tested_on=tested_on)
    text = write_report([tiny_run], tmp_path / "r.html").read_text()
    assert ("tested on the record alone: no input test" in text) == (tested_on == "record")
    assert ("input coherence 1.5x null, p=1e-06" in text) == (tested_on == "inputs")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    add_fake_signals(tiny_run)
    out = write_report([tiny_run], tmp_path / "report.html")
    html = out.read_text()
    # a copy with a checking script (the real report forbids scripts by its content security policy)
    check = tmp_path / "check.html"
    check.write_text(html.replace("<meta http-equiv='Content-Security-Policy'", "<meta name='x'")
                     .replace("<body>", "<body>" + CHECK, 1))
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof'}", "--virtual-time-budget=5000",
                        "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    import re

    m = re.search(r'data-check="([^"]*)"', r.stdout)
    assert m, r.stdout[:500]
    res = json.loads(m.group(1).replace("&quot;", '"'))
    assert res["n"] >= 7 and res["broken"] == 0 and res["errors"] == []
    shot = tmp_path / "report.png"
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof2'}", "--window-size=1200,1800",
                        f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]


def test_no_sharpness_chart_without_sharpness(tmp_path):
    from oppsig.config import load_config

    cfg = load_config(None, ["data.name=synthetic", "data.n=64", "model.widths=[8]", "train.steps=3",
                             f"out_dir={tmp_path}", "name=flat"])
    text = write_report([train(cfg, progress=False).run_dir]).read_text()
    assert "Sharpness was not measured" in text and 'alt="sharpness"' not in text


def test_pair_window_marks_its_largest_peak(tiny_run):
    from oppsig.report.figures import plot_group_losses
    from oppsig.signals import read_signals_json
    from oppsig.store import open_run

    add_fake_signals(tiny_run)
    run = open_run(tiny_run)
    fig = plot_group_losses(run, read_signals_json(tiny_run / "signals.json"))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    total = np.asarray(run.losses).mean(1)
    assert f"largest loss in view (step {int(run.steps[int(np.argmax(total))])})" in labels
