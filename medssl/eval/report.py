"""The fusion report: from out-of-fold predictions to ``results.csv``, ``pairwise.csv``, figures and ``report.md``.

Input: the per-case predictions of every strategy (``predictions.csv`` of ``medssl compare-fusion``: one row per case
and strategy, each case predicted by the model of the fold in which it was a test case). Everything here is a
function of that table, so a report can be rebuilt, or checked, from the CSV alone
(``medssl compare-fusion --report-only OUT``).

Conventions (see ``docs/fusion_comparison.md``):

* **Pooled out-of-fold estimates.** A metric's ``value`` is computed on the pooled test-fold predictions of all folds
  (every case once); ``fold_values`` are the same metric on each fold's test cases alone, ``fold_mean``/``fold_std``
  their mean and standard deviation (NaN where a fold's test cases hold one class only).
* **Confidence intervals**: percentile bootstrap over *patients* (all of a patient's cases move together), the same
  resamples for every strategy and metric (same seed), :func:`medssl.eval.metrics.bootstrap_ci`.
* **Operating point**: each row carries the threshold its fold chose on its inner validation split; sensitivity and
  specificity count the cases with ``probability >= threshold``. A table without thresholds has no sensitivity or
  specificity (choosing the threshold on test data would be optimistic).
* **DeLong**: the paired DeLong test (:func:`medssl.eval.metrics.delong_test`) assumes independent cases, so the
  pooled predictions are first aggregated to one row per patient (mean probability; a patient is positive when any
  of its cases is). ``pairwise.csv`` also holds a patient-level paired bootstrap CI of the AUROC difference on the
  case rows, and Holm-adjusted p-values over all pairs.
* **Segmentation**: per-case Dice and HD95 per region; means with patient-bootstrap CIs; pairs compared with the
  paired bootstrap of the mean difference and the Wilcoxon signed-rank test on per-case values.

Only keys (salted ``case_key``/``patient_key``), strategy names and numbers reach the outputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medssl.eval.metrics import (
    Estimate,
    aggregate_by_group,
    auprc,
    auroc,
    bootstrap_ci,
    brier_score,
    delong_test,
    expected_calibration_error,
    sensitivity,
    specificity,
)
from medssl.exceptions import MedsslError

__all__ = [
    "ReportError",
    "PREDICTION_COLUMNS",
    "RESULT_COLUMNS",
    "PAIRWISE_COLUMNS",
    "CLASSIFICATION_METRICS",
    "read_predictions",
    "check_predictions",
    "holm_adjust",
    "summarize_classification",
    "compare_classification",
    "summarize_segmentation_cases",
    "compare_segmentation",
    "write_fusion_report",
]

PREDICTION_COLUMNS = ("case_key", "patient_key", "fold", "strategy", "probability", "label")
SEGMENTATION_KEY_COLUMNS = ("case_key", "patient_key", "fold", "strategy")
RESULT_COLUMNS = (
    "strategy",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_boot_used",
    "n_boot",
    "n_cases",
    "n_patients",
    "fold_mean",
    "fold_std",
    "fold_values",
)
PAIRWISE_COLUMNS = (
    "strategy_a",
    "strategy_b",
    "metric",
    "value_a",
    "value_b",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "test",
    "boot_ci_low",
    "boot_ci_high",
    "n_patients",
    "n_positive",
    "n_negative",
)
CLASSIFICATION_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ece", "brier")
_LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ece": "ECE",
    "brier": "Brier",
}


class ReportError(MedsslError):
    """A predictions table cannot be reported: missing columns, unpaired strategies, a patient in two folds ..."""


# ------------------------------------------------------------------------------------------------------------- input
def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``predictions.csv`` (keys as strings) and check it with :func:`check_predictions`.

    Args:
        path: the CSV file.

    Returns:
        The table.

    Raises:
        ReportError: unreadable file or a check failed.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"case_key": str, "patient_key": str, "strategy": str})
    except (OSError, ValueError) as error:
        raise ReportError(f"cannot read the predictions: {error}", path) from error
    task = "classification" if "probability" in frame.columns else "segmentation"
    check_predictions(frame, task, where=path)
    return frame


def check_predictions(frame: pd.DataFrame, task: str = "classification", where: Any = None) -> list[str]:
    """Check that a predictions table can be compared fairly.

    Every strategy must have predicted the same cases, each case once, in the same fold; a patient's cases must all be
    in one fold; classification probabilities must be finite and in [0, 1] and labels 0/1.

    Args:
        frame: the table.
        task: ``"classification"`` or ``"segmentation"``.
        where: the file named in errors.

    Returns:
        The strategies, in order of first appearance.

    Raises:
        ReportError: a violated rule, naming it.
    """
    columns = PREDICTION_COLUMNS if task == "classification" else SEGMENTATION_KEY_COLUMNS
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ReportError(f"predictions lack the columns {absent} (have {list(frame.columns)})", where)
    if frame.empty:
        raise ReportError("no predictions", where)
    strategies = list(dict.fromkeys(frame["strategy"].astype(str)))
    if frame.duplicated(["strategy", "case_key"]).any():
        dup = frame.loc[frame.duplicated(["strategy", "case_key"]), ["strategy", "case_key"]].iloc[0].tolist()
        raise ReportError(f"strategy {dup[0]!r} predicts case {dup[1]} twice", where)
    reference = frame[frame["strategy"] == strategies[0]].set_index("case_key")["fold"].sort_index()
    for name in strategies[1:]:
        other = frame[frame["strategy"] == name].set_index("case_key")["fold"].sort_index()
        if not reference.index.equals(other.index):
            raise ReportError(
                f"strategies {strategies[0]!r} and {name!r} predicted different cases: not a paired comparison", where
            )
        if not (reference == other).all():
            raise ReportError(f"strategies {strategies[0]!r} and {name!r} used different folds", where)
    folds_per_patient = frame.groupby("patient_key")["fold"].nunique()
    if (folds_per_patient > 1).any():
        raise ReportError(f"patient {folds_per_patient.idxmax()} is in several folds: the folds leak", where)
    if task == "classification":
        prob = frame["probability"].to_numpy(np.float64)
        if not np.isfinite(prob).all() or (prob < 0).any() or (prob > 1).any():
            raise ReportError("probabilities must be finite and in [0, 1]", where)
        if not frame["label"].isin([0, 1]).all():
            raise ReportError("labels must be 0 or 1", where)
        labels = frame[frame["strategy"] == strategies[0]]["label"]
        if labels.nunique() < 2:
            raise ReportError("every case has the same label: AUROC is undefined", where)
    return strategies


def _strategy_rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """One strategy's rows, in case-key order (the same order for every strategy: paired resamples)."""
    return frame[frame["strategy"] == name].sort_values("case_key", kind="stable").reset_index(drop=True)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Hand-written because neither SciPy nor scikit-learn has it (statsmodels would be a dependency for six lines).

    Args:
        p_values: the raw p-values (NaN stays NaN and does not count as a test).

    Returns:
        The adjusted p-values in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


# --------------------------------------------------------------------------------------------------- classification
def _metric_functions(n_bins: int) -> dict[str, Any]:
    return {
        "auroc": auroc,
        "auprc": auprc,
        "sensitivity": partial(sensitivity, threshold=0.5),  # applied to the 0/1 decisions
        "specificity": partial(specificity, threshold=0.5),
        "ece": partial(expected_calibration_error, n_bins=n_bins),
        "brier": brier_score,
    }


def _decisions(rows: pd.DataFrame) -> np.ndarray | None:
    if "threshold" not in rows.columns:
        return None
    return (rows["probability"].to_numpy(np.float64) >= rows["threshold"].to_numpy(np.float64)).astype(np.float64)


def _fold_value(fn: Any, y: np.ndarray, s: np.ndarray) -> float:
    try:
        value = float(fn(y, s))
    except ValueError:  # one class in the fold (UndefinedMetricError is a ValueError)
        return math.nan
    return value if math.isfinite(value) else math.nan


def _result_row(name: str, metric: str, est: Estimate, fold_values: list[float], n_patients: int) -> dict[str, Any]:
    finite = [v for v in fold_values if math.isfinite(v)]
    return {
        "strategy": name,
        "metric": metric,
        "value": est.value,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n_boot_used": est.n_boot_used,
        "n_boot": est.n_boot,
        "n_cases": est.n,
        "n_patients": n_patients,
        "fold_mean": float(np.mean(finite)) if finite else math.nan,
        "fold_std": float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan,
        "fold_values": ";".join("nan" if not math.isfinite(v) else f"{v:.6g}" for v in fold_values),
    }


def summarize_classification(
    predictions: pd.DataFrame,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 10,
    metrics: Sequence[str] = CLASSIFICATION_METRICS,
) -> pd.DataFrame:
    """``results.csv`` of a classification comparison: one row per strategy and metric.

    ``value`` is the metric on the pooled out-of-fold predictions; ``ci_low``/``ci_high`` its patient-bootstrap CI
    (seed ``seed``: the same resamples for every strategy and metric); ``fold_values`` the metric per test fold.
    Sensitivity and specificity use each row's ``threshold`` (chosen on validation data) and are left out when the
    table has no ``threshold`` column.

    Args:
        predictions: the predictions table.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: bootstrap seed.
        n_bins: ECE bins (equal width).
        metrics: which metrics, from :data:`CLASSIFICATION_METRICS`.

    Returns:
        The table with :data:`RESULT_COLUMNS`.

    Raises:
        ReportError: the predictions fail :func:`check_predictions`.
    """
    strategies = check_predictions(predictions, "classification")
    functions = _metric_functions(n_bins)
    unknown = [m for m in metrics if m not in functions]
    if unknown:
        raise ReportError(f"unknown metrics {unknown}; known: {list(functions)}")
    rows = []
    for name in strategies:
        data = _strategy_rows(predictions, name)
        y = data["label"].to_numpy(np.int64)
        p = data["probability"].to_numpy(np.float64)
        decisions = _decisions(data)
        groups = data["patient_key"].to_numpy(object)
        folds = data["fold"].to_numpy()
        n_patients = int(pd.unique(groups).size)
        for metric in metrics:
            scores = decisions if metric in ("sensitivity", "specificity") else p
            if scores is None:
                continue
            fn = functions[metric]
            est = bootstrap_ci(fn, y, scores, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)
            per_fold = [_fold_value(fn, y[folds == f], scores[folds == f]) for f in sorted(pd.unique(folds))]
            rows.append(_result_row(name, metric, est, per_fold, n_patients))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def compare_classification(
    predictions: pd.DataFrame,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    aggregate: str = "mean",
) -> pd.DataFrame:
    """``pairwise.csv``: every pair of strategies compared on AUROC.

    DeLong on the pooled predictions aggregated to one row per patient (``aggregate`` of its cases' probabilities),
    Holm-adjusted over the pairs, and a paired patient-bootstrap CI of the AUROC difference on the case rows.

    Args:
        predictions: the predictions table.
        alpha: one minus the confidence level.
        n_boot: bootstrap resamples of the difference (0 to skip).
        seed: bootstrap seed.
        aggregate: ``"mean"`` or ``"max"`` per patient.

    Returns:
        The table with :data:`PAIRWISE_COLUMNS` (``metric`` is ``auroc``, ``test`` is ``delong``).
    """
    strategies = check_predictions(predictions, "classification")
    data = {name: _strategy_rows(predictions, name) for name in strategies}
    first = data[strategies[0]]
    y = first["label"].to_numpy(np.int64)
    groups = first["patient_key"].to_numpy(object)
    rows = []
    for i, a in enumerate(strategies):
        for b in strategies[i + 1 :]:
            pa = data[a]["probability"].to_numpy(np.float64)
            pb = data[b]["probability"].to_numpy(np.float64)
            yp, sa, _ = aggregate_by_group(y, pa, groups, how=aggregate)
            _, sb, _ = aggregate_by_group(y, pb, groups, how=aggregate)
            test = delong_test(yp, sa, sb, alpha=alpha)
            row = {
                "strategy_a": a,
                "strategy_b": b,
                "metric": "auroc",
                "value_a": test.auc_a,
                "value_b": test.auc_b,
                "difference": test.difference,
                "ci_low": test.ci_low,
                "ci_high": test.ci_high,
                "p_value": test.p_value,
                "test": "delong",
                "boot_ci_low": math.nan,
                "boot_ci_high": math.nan,
                "n_patients": int(yp.size),
                "n_positive": test.n_positive,
                "n_negative": test.n_negative,
            }
            if n_boot > 0:
                diff = bootstrap_ci(
                    _auroc_difference,
                    y,
                    np.column_stack([pa, pb]),
                    groups=groups,
                    n_boot=n_boot,
                    alpha=alpha,
                    seed=seed,
                )
                row["boot_ci_low"], row["boot_ci_high"] = diff.ci_low, diff.ci_high
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    frame["p_holm"] = holm_adjust(frame["p_value"].to_numpy()) if len(frame) else []
    return frame


def _auroc_difference(y: np.ndarray, scores: np.ndarray) -> float:
    return auroc(y, scores[:, 0]) - auroc(y, scores[:, 1])


# ----------------------------------------------------------------------------------------------------- segmentation
def _segmentation_metrics(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c.startswith(("dice_", "hd95_"))]


def summarize_segmentation_cases(
    predictions: pd.DataFrame, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """``results.csv`` of a segmentation comparison: mean per-case Dice / HD95 per region with patient-bootstrap CIs.

    Args:
        predictions: one row per case and strategy with ``dice_<region>`` and ``hd95_<region>`` columns.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: bootstrap seed.

    Returns:
        The table with :data:`RESULT_COLUMNS` (NaN case values are left out of the means).
    """
    strategies = check_predictions(predictions, "segmentation")
    rows = []
    for name in strategies:
        data = _strategy_rows(predictions, name)
        groups = data["patient_key"].to_numpy(object)
        folds = data["fold"].to_numpy()
        for metric in _segmentation_metrics(predictions):
            values = data[metric].to_numpy(np.float64)
            est = bootstrap_ci(_nanmean, values, None, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)
            per_fold = [_nanmean(values[folds == f]) for f in sorted(pd.unique(folds))]
            rows.append(_result_row(name, metric, est, per_fold, int(pd.unique(groups).size)))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _mean_difference(values: np.ndarray) -> float:
    return _nanmean(values[:, 0] - values[:, 1])


def compare_segmentation(
    predictions: pd.DataFrame, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """``pairwise.csv`` of a segmentation comparison: per region metric, the paired mean difference.

    CI: patient-bootstrap of the mean per-case difference (``ci_low``/``ci_high``, repeated in ``boot_ci_*``);
    p-value: Wilcoxon signed-rank test on the per-case differences (``scipy.stats.wilcoxon``), Holm-adjusted over
    all rows.

    Args:
        predictions: the per-case metrics table.
        alpha: one minus the confidence level.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        The table with :data:`PAIRWISE_COLUMNS`.
    """
    from scipy.stats import wilcoxon

    strategies = check_predictions(predictions, "segmentation")
    data = {name: _strategy_rows(predictions, name) for name in strategies}
    groups = data[strategies[0]]["patient_key"].to_numpy(object)
    rows = []
    for metric in _segmentation_metrics(predictions):
        for i, a in enumerate(strategies):
            for b in strategies[i + 1 :]:
                va = data[a][metric].to_numpy(np.float64)
                vb = data[b][metric].to_numpy(np.float64)
                both = np.isfinite(va) & np.isfinite(vb)
                diff = bootstrap_ci(
                    _mean_difference,
                    np.column_stack([va, vb]),
                    None,
                    groups=groups,
                    n_boot=n_boot,
                    alpha=alpha,
                    seed=seed,
                )
                delta = va[both] - vb[both]
                p = float(wilcoxon(delta).pvalue) if np.count_nonzero(delta) > 0 else 1.0
                rows.append(
                    {
                        "strategy_a": a,
                        "strategy_b": b,
                        "metric": metric,
                        "value_a": _nanmean(va),
                        "value_b": _nanmean(vb),
                        "difference": diff.value,
                        "ci_low": diff.ci_low,
                        "ci_high": diff.ci_high,
                        "p_value": p,
                        "test": "wilcoxon",
                        "boot_ci_low": diff.ci_low,
                        "boot_ci_high": diff.ci_high,
                        "n_patients": int(pd.unique(groups).size),
                        "n_positive": math.nan,
                        "n_negative": math.nan,
                    }
                )
    frame = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    frame["p_holm"] = holm_adjust(frame["p_value"].to_numpy()) if len(frame) else []
    return frame


# ------------------------------------------------------------------------------------------------------------ report
def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def _fmt_ci(row: Mapping[str, Any], digits: int = 3) -> str:
    if not math.isfinite(float(row["ci_low"])):
        return _fmt(row["value"], digits)
    return f"{_fmt(row['value'], digits)} ({_fmt(row['ci_low'], digits)}-{_fmt(row['ci_high'], digits)})"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_count(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(value):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _estimates(results: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in results.to_dict("records"):
        if row["metric"] in metrics:
            out.setdefault(row["strategy"], {})[row["metric"]] = {
                "value": row["value"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
            }
    return {k: v for k, v in out.items() if all(m in v for m in metrics)}


def _classification_figures(predictions: pd.DataFrame, results: pd.DataFrame, out: Path, n_bins: int) -> list[str]:
    from medssl.eval.plots import plot_metric_bars, plot_pr_curves, plot_reliability_diagram, plot_roc_curves

    strategies = list(dict.fromkeys(predictions["strategy"]))
    data = {name: _strategy_rows(predictions, name) for name in strategies}
    y = data[strategies[0]]["label"].to_numpy(np.int64)
    scores = {name: frame["probability"].to_numpy(np.float64) for name, frame in data.items()}
    written = []
    plot_roc_curves(y, scores, ci="delong", title="ROC, pooled out-of-fold", path=out / "roc.png")
    written.append("roc.png")
    plot_pr_curves(y, scores, ci=None, title="Precision-recall, pooled out-of-fold", path=out / "pr.png")
    written.append("pr.png")
    plot_reliability_diagram(
        y, scores, n_bins=n_bins, title="Reliability, pooled out-of-fold", path=out / "reliability.png"
    )
    written.append("reliability.png")
    metrics = [m for m in ("auroc", "auprc", "sensitivity", "specificity") if m in set(results["metric"])]
    estimates = _estimates(results, metrics)
    if estimates:
        plot_metric_bars(estimates, metrics=metrics, title="Metrics with 95% CIs", path=out / "metrics.png")
        written.append("metrics.png")
    return written


def _segmentation_figures(results: pd.DataFrame, out: Path) -> list[str]:
    from medssl.eval.plots import plot_metric_bars

    written = []
    for prefix, name in (("dice_", "dice.png"), ("hd95_", "hd95.png")):
        metrics = [m for m in dict.fromkeys(results["metric"]) if m.startswith(prefix)]
        estimates = _estimates(results, metrics)
        if estimates:
            title = "Dice per region (95% CI)" if prefix == "dice_" else "HD95 per region, mm (95% CI)"
            plot_metric_bars(estimates, metrics=metrics, title=title, path=out / name)
            written.append(name)
    return written


def _cohort_line(predictions: pd.DataFrame, task: str) -> str:
    first = predictions[predictions["strategy"] == predictions["strategy"].iloc[0]]
    n_cases, n_patients = len(first), first["patient_key"].nunique()
    n_folds = first["fold"].nunique()
    text = f"{n_cases} cases of {n_patients} patients, {n_folds}-fold cross-validation grouped by patient"
    if task == "classification":
        positives = int(first["label"].sum())
        text += f"; {positives} positive cases ({100 * positives / n_cases:.1f}%)"
    return text


def write_fusion_report(
    out_dir: str | os.PathLike,
    predictions: pd.DataFrame,
    task: str = "classification",
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 10,
    title: str = "Fusion strategy comparison",
    command: str | None = None,
    models: pd.DataFrame | None = None,
    training: pd.DataFrame | None = None,
    problems: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    operating_point: str | None = None,
) -> dict[str, Path]:
    """Write ``results.csv``, ``pairwise.csv``, the figures and ``report.md`` into ``out_dir``.

    Args:
        out_dir: the output folder (``predictions.csv`` is not written here: it is the input).
        predictions: the predictions table (classification: :data:`PREDICTION_COLUMNS` plus ``threshold``;
            segmentation: keys plus ``dice_<region>``/``hd95_<region>``).
        task: ``"classification"`` or ``"segmentation"``.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: bootstrap seed.
        n_bins: ECE / reliability bins.
        title: the report's title.
        command: the command line that produced the predictions (shown under "Reproduce").
        models: one row per strategy: ``strategy``, ``parameters``, ``flops``, ``width`` (optional).
        training: one row per fold and strategy: ``fold``, ``strategy``, ``best_epoch``, ``epochs_run``,
            ``selection``, ``val_score``, ``threshold`` (optional).
        problems: cases left out: ``case_key``, ``problem``, ``action`` (optional).
        notes: extra lines for the methods section.
        operating_point: how thresholds were chosen (shown in the methods).

    Returns:
        ``{"results": path, "pairwise": path, "report": path, <figure name>: path ...}``.

    Raises:
        ReportError: the predictions fail :func:`check_predictions`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    level = f"{100 * (1 - alpha):g}%"
    if task == "classification":
        results = summarize_classification(predictions, n_boot=n_boot, alpha=alpha, seed=seed, n_bins=n_bins)
        pairwise = compare_classification(predictions, alpha=alpha, n_boot=n_boot, seed=seed)
        figures = _classification_figures(predictions, results, out, n_bins)
    else:
        results = summarize_segmentation_cases(predictions, n_boot=n_boot, alpha=alpha, seed=seed)
        pairwise = compare_segmentation(predictions, alpha=alpha, n_boot=n_boot, seed=seed)
        figures = _segmentation_figures(results, out)
    results.to_csv(out / "results.csv", index=False)
    pairwise.to_csv(out / "pairwise.csv", index=False)

    strategies = list(dict.fromkeys(predictions["strategy"]))
    metrics = list(dict.fromkeys(results["metric"]))
    cell = {(r["strategy"], r["metric"]): r for r in results.to_dict("records")}
    lines = [f"# {title}", "", _cohort_line(predictions, task) + f"; strategies: {', '.join(strategies)}.", ""]
    lines += ["## Results", ""]
    lines += [
        f"Pooled out-of-fold estimates with {level} patient-bootstrap confidence intervals; last column: the "
        "first metric on each test fold.",
        "",
    ]
    header = ["strategy"] + [_LABELS.get(m, m) for m in metrics] + [f"{_LABELS.get(metrics[0], metrics[0])} per fold"]
    table_rows = []
    for name in strategies:
        row = [name] + [_fmt_ci(cell[(name, m)]) if (name, m) in cell else "-" for m in metrics]
        folds = str(cell[(name, metrics[0])]["fold_values"]).split(";") if (name, metrics[0]) in cell else []
        row.append(", ".join(_fmt(float(v)) for v in folds))
        table_rows.append(row)
    lines += _table(header, table_rows) + [""]

    lines += ["## Pairwise comparisons", ""]
    if task == "classification":
        lines += [
            f"Paired DeLong test on the pooled predictions averaged per patient; difference = A - B with its "
            f"{level} DeLong CI and a patient-bootstrap CI; p-values Holm-adjusted over the "
            f"{len(pairwise)} pairs.",
            "",
        ]
        header = ["A vs B", "AUROC A", "AUROC B", "difference (DeLong CI)", "bootstrap CI", "p", "p (Holm)"]
    else:
        lines += [
            f"Mean per-case difference A - B with its {level} patient-bootstrap CI; Wilcoxon signed-rank "
            "p-values, Holm-adjusted over all rows.",
            "",
        ]
        header = ["metric", "A vs B", "A", "B", "difference (CI)", "p", "p (Holm)"]
    pair_rows = []
    for r in pairwise.to_dict("records"):
        diff = f"{_fmt(r['difference'])} ({_fmt(r['ci_low'])} to {_fmt(r['ci_high'])})"
        if task == "classification":
            boot = f"{_fmt(r['boot_ci_low'])} to {_fmt(r['boot_ci_high'])}"
            pair_rows.append(
                [
                    f"{r['strategy_a']} vs {r['strategy_b']}",
                    _fmt(r["value_a"]),
                    _fmt(r["value_b"]),
                    diff,
                    boot,
                    _fmt_p(r["p_value"]),
                    _fmt_p(r["p_holm"]),
                ]
            )
        else:
            pair_rows.append(
                [
                    r["metric"],
                    f"{r['strategy_a']} vs {r['strategy_b']}",
                    _fmt(r["value_a"]),
                    _fmt(r["value_b"]),
                    diff,
                    _fmt_p(r["p_value"]),
                    _fmt_p(r["p_holm"]),
                ]
            )
    lines += (_table(header, pair_rows) if pair_rows else ["(one strategy: nothing to compare)"]) + [""]

    if models is not None and len(models):
        lines += [
            "## Models",
            "",
            "Same backbone family, training budget (epochs, optimiser, batch size) and seeds "
            "for every strategy; parameters and forward FLOPs of one exam.",
            "",
        ]
        model_rows = []
        for r in models.to_dict("records"):
            model_rows.append(
                [
                    r.get("strategy"),
                    _fmt_count(r.get("parameters")),
                    _fmt_count(r.get("flops")),
                    _fmt(r.get("width", math.nan), 3),
                    r.get("description", ""),
                ]
            )
        lines += _table(["strategy", "parameters", "FLOPs", "width", "model"], model_rows) + [""]
    if training is not None and len(training):
        lines += [
            "## Training",
            "",
            "Epoch kept per fold (chosen on the inner validation split)"
            + (" and the operating-point threshold chosen there." if task == "classification" else "."),
            "",
        ]
        train_rows = []
        for r in training.to_dict("records"):
            train_rows.append(
                [
                    r.get("fold"),
                    r.get("strategy"),
                    f"{r.get('best_epoch')}/{r.get('epochs_run')}",
                    f"{r.get('selection')} {_fmt(r.get('val_score', math.nan))}",
                    _fmt(r.get("threshold", math.nan)),
                    _fmt(r.get("wall_s", math.nan), 1),
                ]
            )
        lines += _table(
            ["fold", "strategy", "epoch kept / run", "validation score", "threshold", "seconds"], train_rows
        ) + [""]

    lines += ["## Figures", ""]
    captions = {
        "roc.png": "ROC curves (pooled out-of-fold; legend: AUROC with DeLong CI)",
        "pr.png": "Precision-recall curves",
        "reliability.png": "Reliability diagram (calibration) with bin counts",
        "metrics.png": f"Metrics with {level} CIs",
        "dice.png": f"Dice per region with {level} CIs",
        "hd95.png": f"HD95 per region (mm) with {level} CIs",
    }
    for name in figures:
        lines += [f"![{captions.get(name, name)}]({name})", ""]

    lines += ["## Methods", ""]
    method_lines = [
        "Folds: patient-grouped K-fold cross-validation (stratified on the label where possible); every strategy "
        "is trained and tested on identical folds (`splits.json`).",
        "Model selection: an inner validation split of each training fold, by patient; the test fold is never used "
        "for early stopping, epoch choice or thresholds.",
        f"Confidence intervals: percentile bootstrap, {n_boot} resamples of patients, seed {seed}; the same "
        "resamples for every strategy and metric.",
    ]
    if task == "classification":
        method_lines += [
            "Metrics on the pooled out-of-fold predictions (each case predicted by the model of the fold in which "
            "it was a test case); per-fold values beside them.",
            f"Operating point: {operating_point or 'the threshold of each fold chosen on its validation split'}; "
            "sensitivity and specificity count `probability >= threshold`.",
            f"Calibration: ECE with {n_bins} equal-width bins; Brier score.",
            "DeLong: pooled predictions averaged per patient first (independent cases).",
        ]
    method_lines += list(notes)
    lines += [f"- {m}" for m in method_lines] + [""]

    if problems is not None and len(problems):
        lines += ["## Cases left out", "", f"{len(problems)} cases (see `problems.csv`)."]
        counts = problems.groupby("problem").size().sort_values(ascending=False).head(10)
        lines += [f"- {count} x {problem}" for problem, count in counts.items()] + [""]

    lines += ["## Files", ""]
    files = [
        ("predictions.csv", "per case and strategy: case_key, patient_key, fold, strategy, probability, label, ..."),
        ("results.csv", "per strategy and metric: value, CI, per-fold values"),
        ("pairwise.csv", "per pair of strategies: difference, CI, p-values"),
        ("splits.json", "the folds (case keys of training, validation and test per fold)"),
        ("config.json", "the exact configuration, command line and package versions"),
    ]
    lines += [
        f"- `{name}`: {what}"
        for name, what in files
        if (out / name).exists() or name in ("results.csv", "pairwise.csv")
    ]
    lines += [""]
    if command:
        lines += [
            "## Reproduce",
            "",
            "```",
            command,
            "```",
            "",
            "or `medssl compare-fusion --config config.json` with the saved configuration.",
            "",
        ]
    report_path = out / "report.md"
    report_path.write_text("\n".join(lines))
    written = {"results": out / "results.csv", "pairwise": out / "pairwise.csv", "report": report_path}
    written.update({name: out / name for name in figures})
    return written
