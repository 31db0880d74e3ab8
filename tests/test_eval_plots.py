from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import BarContainer

from medssl.eval import plots as P
from medssl.eval.metrics import Estimate, MetricInputError, reliability_curve, summarize_binary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    scores = {
        "early": np.clip(0.35 * y + 0.65 * rng.random(150), 0, 1),
        "joint": np.clip(0.2 * y + 0.8 * rng.random(150), 0, 1),
        "late": rng.random(150),
    }
    return y, scores


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_roc_curves(data, tmp_path):
    y, scores = data
    fig = P.plot_roc_curves(y, scores, path=tmp_path / "sub" / "roc.png")
    _assert_png(tmp_path / "sub" / "roc.png")
    ax = fig.axes[0]
    assert len(ax.lines) == len(scores) + 1  # one per model + chance
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("early: AUC ") and "(" in labels[0] and labels[-1] == "chance"
    no_ci = P.plot_roc_curves(y, scores["late"], ci=None)
    assert len(no_ci.axes[0].lines) == 2 and "(" not in no_ci.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(MetricInputError, match="ci must be"):
        P.plot_roc_curves(y, scores, ci="wilson")


def test_pr_curves(data, tmp_path):
    y, scores = data
    fig = P.plot_pr_curves(y, scores, n_boot=50, path=tmp_path / "pr.png")
    _assert_png(tmp_path / "pr.png")
    ax = fig.axes[0]
    assert len(ax.lines) == len(scores) + 1  # one per model + prevalence
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(y.mean())


def test_reliability_diagram(data, tmp_path):
    y, scores = data
    fig = P.plot_reliability_diagram(y, scores, n_bins=5, path=tmp_path / "rel.png")
    _assert_png(tmp_path / "rel.png")
    ax_curve, ax_hist = fig.axes
    assert len(ax_curve.lines) == len(scores) + 1  # one per model + the diagonal
    expected_bars = sum(reliability_curve(y, p, n_bins=5).counts.size for p in scores.values())
    assert len(ax_hist.patches) == expected_bars
    heights = sorted(p.get_height() for p in ax_hist.patches)
    all_counts = sorted(c for p in scores.values() for c in reliability_curve(y, p, n_bins=5).counts)
    assert heights == all_counts


def test_metric_bars(data, tmp_path):
    y, scores = data
    est = {name: summarize_binary(y, s, threshold=0.5, n_boot=30) for name, s in scores.items()}
    fig = P.plot_metric_bars(est, metrics=["auroc", "ece"], path=tmp_path / "bars.png")
    _assert_png(tmp_path / "bars.png")
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(scores)
    assert ax.patches[0].get_height() == pytest.approx(est["early"]["auroc"].value)
    # error bars: one per bar, spanning the CI
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = [seg for c in bars for seg in c.errorbar.lines[2][0].get_segments()]
    assert len(segments) == 2 * len(scores)
    first = est["early"]["auroc"]
    assert sorted(segments[0][:, 1]) == pytest.approx([first.ci_low, first.ci_high])
    # Estimates read back from JSON work, grouped by strategy
    as_dicts = {k: {m: e.to_dict() for m, e in v.items()} for k, v in est.items()}
    fig2 = P.plot_metric_bars(as_dicts, group_by="strategy")
    assert len(fig2.axes[0].patches) == 6 * len(scores)
    with pytest.raises(MetricInputError, match="lacks metrics"):
        P.plot_metric_bars(est, metrics=["auroc", "dice"])


def test_label_efficiency(tmp_path):
    fractions = [0.01, 0.1, 1.0]
    mk = lambda v: Estimate(v, v - 0.05, v + 0.05, 100, 100)  # noqa: E731
    results = {"ssl": [mk(0.7), mk(0.8), mk(0.85)], "scratch": [mk(0.6), mk(0.7), mk(0.84)]}
    fig = P.plot_label_efficiency(fractions, results, path=tmp_path / "le.png")
    _assert_png(tmp_path / "le.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # one line and one CI band per method
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([0.7, 0.8, 0.85])
    assert ax.get_xscale() == "log"
    with pytest.raises(MetricInputError, match="2 estimates for 3 fractions"):
        P.plot_label_efficiency(fractions, {"ssl": results["ssl"][:2]})
