"""Figures for evaluation reports: ROC and PR curves, reliability diagrams, metric bars, label-efficiency curves.

Every function takes arrays (or :class:`~medssl.eval.metrics.Estimate` objects) and names chosen by the caller, never
patient data, so nothing identifying can reach a figure. Figures are made with matplotlib's object API on the Agg
canvas (no ``pyplot`` state, no display needed, safe in batch jobs and threads); each function returns the
:class:`~matplotlib.figure.Figure` and writes a PNG when ``path`` is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medssl.eval.metrics import (
    Estimate,
    MetricInputError,
    _check_binary,
    auprc,
    auroc,
    bootstrap_ci,
    delong_ci,
    expected_calibration_error,
    reliability_curve,
)

__all__ = [
    "plot_roc_curves",
    "plot_pr_curves",
    "plot_reliability_diagram",
    "plot_metric_bars",
    "plot_label_efficiency",
]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: str | os.PathLike | None, dpi: int) -> Figure:
    if path is not None:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def _as_models(scores: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(scores, Mapping):
        if not scores:
            raise MetricInputError("no model scores given", "plot")
        return {str(k): v for k, v in scores.items()}
    return {"model": scores}


def _ci_text(est: Estimate) -> str:
    if math.isnan(est.ci_low):
        return f"{est.value:.3f}"
    return f"{est.value:.3f} ({est.ci_low:.3f}-{est.ci_high:.3f})"


def _field(est: Estimate | Mapping[str, float], name: str) -> float:
    return float(est[name] if isinstance(est, Mapping) else getattr(est, name))


def plot_roc_curves(
    y_true: Any,
    scores: Mapping[str, Any] | Any,
    ci: str | None = "delong",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 150,
) -> Figure:
    """ROC curves of several models on one axes, with the AUROC and its CI in the legend.

    Args:
        y_true: ``(n,)`` 0/1 labels shared by all models.
        scores: ``{model_name: (n,) scores}`` or one score array.
        ci: ``"delong"`` (analytic, fast), ``"bootstrap"`` (percentile, rows) or None for no interval.
        n_boot: resamples when ``ci="bootstrap"``.
        alpha: one minus the confidence level.
        seed: seed of the bootstrap.
        title: axes title.
        path: where to write a PNG (parent folders are created).
        dpi: resolution of the PNG.

    Returns:
        The figure: one line per model plus the chance diagonal.

    Raises:
        MetricInputError: malformed input or unknown ``ci``.
    """
    from sklearn.metrics import roc_curve

    if ci not in ("delong", "bootstrap", None):
        raise MetricInputError(f"ci must be 'delong', 'bootstrap' or None, got {ci!r}", "plot_roc_curves")
    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    for name, s in _as_models(scores).items():
        yt, ys = _check_binary(y_true, s, f"plot_roc_curves, model {name!r}")
        fpr, tpr, _ = roc_curve(yt, ys)
        if ci == "delong":
            label = f"{name}: AUC {_ci_text(delong_ci(yt, ys, alpha=alpha))}"
        elif ci == "bootstrap":
            label = f"{name}: AUC {_ci_text(bootstrap_ci(auroc, yt, ys, n_boot=n_boot, alpha=alpha, seed=seed))}"
        else:
            label = f"{name}: AUC {auroc(yt, ys):.3f}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title=title or "ROC",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return _finish(fig, path, dpi)


def plot_pr_curves(
    y_true: Any,
    scores: Mapping[str, Any] | Any,
    ci: str | None = "bootstrap",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 150,
) -> Figure:
    """Precision-recall curves of several models on one axes, average precision (with CI) in the legend.

    Args:
        y_true: ``(n,)`` 0/1 labels shared by all models.
        scores: ``{model_name: (n,) scores}`` or one score array.
        ci: ``"bootstrap"`` or None.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: seed of the bootstrap.
        title: axes title.
        path: where to write a PNG.
        dpi: resolution of the PNG.

    Returns:
        The figure: one line per model plus the prevalence (chance) line.

    Raises:
        MetricInputError: malformed input or unknown ``ci``.
    """
    from sklearn.metrics import precision_recall_curve

    if ci not in ("bootstrap", None):
        raise MetricInputError(f"ci must be 'bootstrap' or None, got {ci!r}", "plot_pr_curves")
    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    prevalence = None
    for name, s in _as_models(scores).items():
        yt, ys = _check_binary(y_true, s, f"plot_pr_curves, model {name!r}")
        precision, recall, _ = precision_recall_curve(yt, ys)
        if ci == "bootstrap":
            est = bootstrap_ci(auprc, yt, ys, n_boot=n_boot, alpha=alpha, seed=seed)
            label = f"{name}: AP {_ci_text(est)}"
        else:
            label = f"{name}: AP {auprc(yt, ys):.3f}"
        ax.plot(recall, precision, drawstyle="steps-post", label=label)
        prevalence = float(yt.mean())
    ax.axhline(prevalence, linestyle="--", color="grey", linewidth=0.8, label=f"prevalence {prevalence:.3f}")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title=title or "Precision-recall",
    )
    ax.legend(loc="lower left", fontsize="small")
    return _finish(fig, path, dpi)


def plot_reliability_diagram(
    y_true: Any,
    y_prob: Mapping[str, Any] | Any,
    n_bins: int = 10,
    strategy: str = "uniform",
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 150,
) -> Figure:
    """Reliability diagram (observed vs predicted probability) above a histogram of the bin counts.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_prob: ``{model_name: (n,) probabilities}`` or one probability array.
        n_bins: number of bins.
        strategy: ``"uniform"`` or ``"quantile"`` bins.
        title: title of the upper axes.
        path: where to write a PNG.
        dpi: resolution of the PNG.

    Returns:
        The figure with two axes: curves (one line per model plus the diagonal) and counts (one bar set per model).
    """
    models = _as_models(y_prob)
    fig = _new_figure((5.0, 6.0))
    ax_curve, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for i, (name, p) in enumerate(models.items()):
        curve = reliability_curve(y_true, p, n_bins=n_bins, strategy=strategy)
        ece = expected_calibration_error(y_true, p, n_bins=n_bins, strategy=strategy)
        line = ax_curve.plot(curve.prob_pred, curve.prob_true, marker="o", label=f"{name}: ECE {ece:.3f}")[0]
        # One bar per non-empty bin spanning the bin, split side by side when several models share the axes.
        left, right = curve.bin_edges[curve.bin_ids], curve.bin_edges[curve.bin_ids + 1]
        width = (right - left) / len(models)
        ax_hist.bar(left + i * width, curve.counts, width=width, align="edge", color=line.get_color(), alpha=0.7)
    ax_curve.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    ax_curve.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed fraction of positives", title=title or "Reliability")
    ax_curve.legend(loc="upper left", fontsize="small")
    ax_hist.set(xlabel="predicted probability", ylabel="count")
    return _finish(fig, path, dpi)


def plot_metric_bars(
    estimates: Mapping[str, Mapping[str, Estimate | Mapping[str, float]]],
    metrics: Sequence[str] | None = None,
    group_by: str = "metric",
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 150,
) -> Figure:
    """Bar chart of metrics with CI error bars, comparing strategies (fusion strategies, models ...).

    Args:
        estimates: ``{strategy: {metric: Estimate}}``, e.g. ``{name: summarize_binary(...)}``; plain mappings with
            ``value``, ``ci_low``, ``ci_high`` (an :meth:`Estimate.to_dict` read back from JSON) work too.
        metrics: metrics to show, in order (default: those of the first strategy).
        group_by: ``"metric"`` (one cluster per metric, one bar per strategy) or ``"strategy"`` (one cluster per
            strategy, one bar per metric).
        title: axes title.
        path: where to write a PNG.
        dpi: resolution of the PNG.

    Returns:
        The figure; error bars span each CI.

    Raises:
        MetricInputError: no estimates, a missing metric, or unknown ``group_by``.
    """
    if not estimates:
        raise MetricInputError("no estimates given", "plot_metric_bars")
    if group_by not in ("metric", "strategy"):
        raise MetricInputError(f"group_by must be 'metric' or 'strategy', got {group_by!r}", "plot_metric_bars")
    strategies = list(estimates)
    names = list(metrics) if metrics is not None else list(next(iter(estimates.values())))
    for s in strategies:
        missing = [m for m in names if m not in estimates[s]]
        if missing:
            raise MetricInputError(f"strategy {s!r} lacks metrics {missing}", "plot_metric_bars")
    clusters, bars = (names, strategies) if group_by == "metric" else (strategies, names)
    fig = _new_figure((max(4.0, 1.0 + len(clusters) * (0.4 + 0.25 * len(bars))), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(bars)
    x = np.arange(len(clusters))
    for j, bar in enumerate(bars):
        cells = [estimates[bar][c] if group_by == "metric" else estimates[c][bar] for c in clusters]
        values = np.array([_field(e, "value") for e in cells])
        low = np.array([_field(e, "ci_low") for e in cells])
        high = np.array([_field(e, "ci_high") for e in cells])
        yerr = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0)
        ax.bar(x + (j - (len(bars) - 1) / 2) * width, values, width=width, yerr=yerr, capsize=3, label=str(bar))
    ax.set_xticks(x, [str(c) for c in clusters])
    ax.set(ylabel="value (error bars: CI)", title=title or "")
    ax.legend(fontsize="small")
    return _finish(fig, path, dpi)


def plot_label_efficiency(
    fractions: Sequence[float],
    results: Mapping[str, Sequence[Estimate | Mapping[str, float]]],
    metric_name: str = "AUROC",
    log_x: bool = True,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 150,
) -> Figure:
    """A metric against the fraction of labelled training data, one line with a CI band per method.

    Args:
        fractions: label fractions (e.g. ``[0.01, 0.1, 1.0]``).
        results: ``{method: [Estimate per fraction]}`` (or mappings with ``value``, ``ci_low``, ``ci_high``).
        metric_name: y-axis label.
        log_x: logarithmic x axis.
        title: axes title.
        path: where to write a PNG.
        dpi: resolution of the PNG.

    Returns:
        The figure: one line (and one band) per method.

    Raises:
        MetricInputError: a method has a different number of estimates than there are fractions.
    """
    x = np.asarray(fractions, dtype=np.float64)
    if not results:
        raise MetricInputError("no results given", "plot_label_efficiency")
    fig = _new_figure((5.5, 4.0))
    ax = fig.add_subplot()
    for method, ests in results.items():
        if len(ests) != x.size:
            raise MetricInputError(
                f"method {method!r} has {len(ests)} estimates for {x.size} fractions", "plot_label_efficiency"
            )
        values = np.array([_field(e, "value") for e in ests])
        low = np.array([_field(e, "ci_low") for e in ests])
        high = np.array([_field(e, "ci_high") for e in ests])
        line = ax.plot(x, values, marker="o", label=str(method))[0]
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="fraction of labelled training data", ylabel=metric_name, title=title or "Label efficiency")
    ax.legend(fontsize="small")
    return _finish(fig, path, dpi)
