"""Evaluation metrics with uncertainty: AUROC/AUPRC, bootstrap CIs, DeLong, calibration, operating points, Dice/HD95.

Plain functions of arrays in the scikit-learn style, no hidden state. The metrics themselves come from scikit-learn
(``roc_auc_score``, ``average_precision_score``, ``calibration_curve``, ``brier_score_loss``, ``roc_curve``), SciPy
(midranks, normal quantiles) and MONAI (``compute_dice``, ``compute_hausdorff_distance``); this module adds what
a published table needs around them:

* :func:`bootstrap_ci`: percentile (or BCa) bootstrap of any metric, resampling rows or whole patients (groups), with
  optional stratification, skipping and counting resamples where the metric is undefined;
* :func:`delong_test` / :func:`delong_ci`: the fast paired DeLong test (Sun & Xu 2014) for correlated ROC AUCs;
* calibration (:func:`expected_calibration_error`, :func:`reliability_curve`, :func:`brier_score`);
* operating points chosen on validation data (:func:`threshold_for`) and evaluated elsewhere
  (:func:`sensitivity_specificity`);
* per-region segmentation metrics for label maps (:func:`dice_per_region`, :func:`hd95_per_region`) with the BraTS
  region definitions and explicit empty-region conventions;
* :func:`summarize_binary`: every binary metric with its CI in one call (what the fusion report uses).

Conventions are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import stats

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "MetricInputError",
    "UndefinedMetricError",
    "Estimate",
    "DeLongResult",
    "ReliabilityCurve",
    "BRATS_2021_REGIONS",
    "BRATS_2023_REGIONS",
    "auroc",
    "auprc",
    "auroc_per_class",
    "auprc_per_class",
    "macro_auroc",
    "macro_auprc",
    "bootstrap_samples",
    "bootstrap_ci",
    "aggregate_by_group",
    "delong_test",
    "delong_ci",
    "reliability_curve",
    "expected_calibration_error",
    "brier_score",
    "threshold_for",
    "sensitivity_specificity",
    "sensitivity",
    "specificity",
    "region_masks",
    "dice_per_region",
    "hd95_per_region",
    "segmentation_metrics",
    "summarize_segmentation",
    "summarize_binary",
]

logger = get_logger(__name__)

BRATS_2021_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType({"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)})
"""BraTS 2017-2021 regions: labels 1 necrotic core, 2 oedema, 4 enhancing tumour."""

BRATS_2023_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType({"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)})
"""BraTS 2023 regions: the enhancing tumour label was renumbered from 4 to 3."""


class MetricInputError(MedsslError):
    """Arrays given to a metric are malformed: wrong shape, non-binary labels, non-finite scores ..."""


class UndefinedMetricError(MedsslError):
    """A metric is undefined on the data given, e.g. AUROC when ``y_true`` holds a single class."""


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval.

    Attributes:
        value: the metric on the full data.
        ci_low: lower end of the ``1 - alpha`` confidence interval (NaN when no resample was usable).
        ci_high: upper end of the interval.
        n_boot_used: resamples on which the metric was defined and which entered the interval (0 for analytic CIs).
        n_boot: resamples drawn (0 for analytic CIs); ``n_boot - n_boot_used`` were skipped as undefined.
        alpha: one minus the confidence level.
        method: ``"percentile"``, ``"bca"`` (bootstrap) or ``"delong"`` (analytic).
        resampling: what was resampled: ``"row"``, ``"stratified-row"``, ``"group"``, ``"stratified-group"``, or
            ``"none"`` for analytic CIs.
        n: number of rows (cases, queries) the value was computed on.
        n_groups: number of groups (patients) when resampling groups, else ``None``.
        se: standard error: standard deviation of the usable bootstrap values, or the analytic standard error.
    """

    value: float
    ci_low: float
    ci_high: float
    n_boot_used: int
    n_boot: int = 0
    alpha: float = 0.05
    method: str = "percentile"
    resampling: str = "row"
    n: int = 0
    n_groups: int | None = None
    se: float = float("nan")

    @property
    def n_boot_skipped(self) -> int:
        """Resamples skipped because the metric was undefined on them."""
        return self.n_boot - self.n_boot_used

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-friendly dictionary."""
        return asdict(self)

    def __str__(self) -> str:
        level = round(100 * (1 - self.alpha), 1)
        level_str = f"{level:g}"
        return f"{self.value:.3f} ({level_str}% CI {self.ci_low:.3f}-{self.ci_high:.3f})"


@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of two correlated ROC AUCs (same cases, two scores).

    Attributes:
        auc_a: AUROC of the first score.
        auc_b: AUROC of the second score.
        difference: ``auc_a - auc_b``.
        se: standard error of the difference.
        z: ``difference / se`` (0 when both are 0).
        p_value: two-sided p-value of ``H0: auc_a == auc_b``.
        ci_low: lower end of the ``1 - alpha`` normal CI of the difference.
        ci_high: upper end of that CI.
        alpha: one minus the confidence level.
        n_positive: positive cases.
        n_negative: negative cases.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-friendly dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class ReliabilityCurve:
    """Reliability (calibration) curve over the non-empty bins.

    Attributes:
        prob_true: observed fraction of positives per non-empty bin (scikit-learn's ``prob_true``).
        prob_pred: mean predicted probability per non-empty bin (scikit-learn's ``prob_pred``).
        counts: number of samples per non-empty bin.
        bin_edges: the ``n_bins + 1`` edges of all bins (quantile edges may repeat).
        bin_ids: index (in ``0 .. n_bins - 1``) of each non-empty bin.
    """

    prob_true: np.ndarray
    prob_pred: np.ndarray
    counts: np.ndarray
    bin_edges: np.ndarray
    bin_ids: np.ndarray


# ----------------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Convert an array-like or a (possibly CUDA) torch tensor to a NumPy array without copying when possible."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_binary(y_true: Any, y_score: Any, name: str, allow_2d: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate binary labels and finite scores of the same shape.

    Args:
        y_true: 0/1 (or boolean) labels.
        y_score: scores of the positive class.
        name: metric name used in error messages.
        allow_2d: accept ``(n, n_classes)`` multi-label arrays.

    Returns:
        ``y_true`` as an integer array and ``y_score`` as a float array.

    Raises:
        MetricInputError: on shape mismatch, non-binary labels or non-finite scores.
    """
    yt = _to_numpy(y_true)
    ys = _to_numpy(y_score)
    max_dim = 2 if allow_2d else 1
    if yt.ndim == 0 or yt.ndim > max_dim:
        raise MetricInputError(f"y_true must be {'1-D or 2-D' if allow_2d else '1-D'}, got shape {yt.shape}", name)
    if yt.shape != ys.shape:
        raise MetricInputError(f"y_true has shape {yt.shape} but y_score has shape {ys.shape}", name)
    if yt.shape[0] == 0:
        raise MetricInputError("no samples", name)
    if yt.dtype != bool:
        if not np.issubdtype(yt.dtype, np.number):
            raise MetricInputError(f"y_true must be numeric 0/1 labels, got dtype {yt.dtype}", name)
        bad = ~np.isin(yt, (0, 1))
        if bad.any():
            found = np.unique(yt[bad])[:5].tolist()
            raise MetricInputError(f"y_true must hold only 0 and 1, found {found}", name)
    if not np.issubdtype(ys.dtype, np.number) and ys.dtype != bool:
        raise MetricInputError(f"y_score must be numeric, got dtype {ys.dtype}", name)
    ys = ys.astype(np.float64, copy=False)
    if not np.isfinite(ys).all():
        raise MetricInputError(f"y_score holds {int((~np.isfinite(ys)).sum())} NaN/inf values", name)
    return yt.astype(np.int64, copy=False), ys


def _require_both_classes(y_true: np.ndarray, name: str) -> None:
    """Raise :class:`UndefinedMetricError` when a 1-D label vector holds a single class."""
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == y_true.shape[0]:
        only = "1 (positive)" if n_pos else "0 (negative)"
        raise UndefinedMetricError(
            f"y_true holds only class {only} in {y_true.shape[0]} samples; the metric needs both classes", name
        )


def _check_probabilities(y_prob: np.ndarray, name: str) -> None:
    if y_prob.min() < 0 or y_prob.max() > 1:
        raise MetricInputError(
            f"y_prob must be probabilities in [0, 1], found values in [{y_prob.min():.4g}, {y_prob.max():.4g}] "
            "(apply a sigmoid to logits first)",
            name,
        )


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}", "confidence interval")


# ----------------------------------------------------------------------------------------------------------------------
# Ranking metrics
# ----------------------------------------------------------------------------------------------------------------------


def auroc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve of a binary problem; equal to scikit-learn's ``roc_auc_score`` (ties count 1/2).

    Computed as the Mann-Whitney statistic from SciPy's midranks rather than by calling ``roc_auc_score``: the value
    is identical (tested), but scikit-learn's input validation costs about ten times the computation itself, which
    dominates a 1000-resample bootstrap.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores, higher meaning more likely positive.

    Returns:
        The AUROC.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: ``y_true`` holds a single class.
    """
    yt, ys = _check_binary(y_true, y_score, "auroc")
    _require_both_classes(yt, "auroc")
    pos = yt == 1
    m = int(pos.sum())
    n = yt.size - m
    return float((stats.rankdata(ys)[pos].sum() - m * (m + 1) / 2) / (m * n))


def auprc(y_true: Any, y_score: Any) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's ``average_precision_score``).

    Average precision is the step-wise (non-interpolated) area; its chance level is the prevalence.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores, higher meaning more likely positive.

    Returns:
        The average precision.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: ``y_true`` holds a single class (scikit-learn would silently return 0 or 1).
    """
    from sklearn.metrics import average_precision_score

    yt, ys = _check_binary(y_true, y_score, "auprc")
    _require_both_classes(yt, "auprc")
    return float(average_precision_score(yt, ys))


def _per_class(
    metric: Callable[[Any, Any], float],
    name: str,
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str] | None,
    on_undefined: str,
) -> dict[str, float]:
    if on_undefined not in ("raise", "nan"):
        raise MetricInputError(f"on_undefined must be 'raise' or 'nan', got {on_undefined!r}", name)
    yt, ys = _check_binary(y_true, y_score, name, allow_2d=True)
    if yt.ndim != 2:
        raise MetricInputError(f"multi-label arrays must be 2-D (n_samples, n_classes), got shape {yt.shape}", name)
    n_classes = yt.shape[1]
    names = [str(i) for i in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise MetricInputError(f"{len(names)} class names for {n_classes} columns", name)
    if "macro" in names or len(set(names)) != len(names):
        raise MetricInputError("class names must be unique and must not be 'macro'", name)
    out: dict[str, float] = {}
    for j, cls in enumerate(names):
        try:
            out[cls] = metric(yt[:, j], ys[:, j])
        except UndefinedMetricError as err:
            if on_undefined == "raise":
                raise UndefinedMetricError(err.problem, f"{name}, class {cls!r}") from None
            out[cls] = float("nan")
    defined = [v for v in out.values() if not math.isnan(v)]
    if not defined:
        raise UndefinedMetricError("every class holds a single label value", name)
    out["macro"] = float(np.mean(defined))
    return out


def auroc_per_class(
    y_true: Any, y_score: Any, class_names: Sequence[str] | None = None, on_undefined: str = "raise"
) -> dict[str, float]:
    """AUROC of each class of a multi-label problem, plus their unweighted mean under ``"macro"``.

    Args:
        y_true: ``(n, n_classes)`` 0/1 labels.
        y_score: ``(n, n_classes)`` scores.
        class_names: names of the columns (default ``"0"``, ``"1"``, ...); must not contain ``"macro"``.
        on_undefined: ``"raise"`` when a class holds a single label value, or ``"nan"`` to report it as NaN and
            leave it out of the macro average.

    Returns:
        ``{class_name: auroc, ..., "macro": mean}``.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: a class holds a single label value (naming the class) with ``on_undefined="raise"``,
            or every class does.
    """
    return _per_class(auroc, "auroc", y_true, y_score, class_names, on_undefined)


def auprc_per_class(
    y_true: Any, y_score: Any, class_names: Sequence[str] | None = None, on_undefined: str = "raise"
) -> dict[str, float]:
    """Average precision of each class of a multi-label problem, plus their unweighted mean under ``"macro"``.

    Args:
        y_true: ``(n, n_classes)`` 0/1 labels.
        y_score: ``(n, n_classes)`` scores.
        class_names: names of the columns (default ``"0"``, ``"1"``, ...); must not contain ``"macro"``.
        on_undefined: ``"raise"`` or ``"nan"``, as in :func:`auroc_per_class`.

    Returns:
        ``{class_name: average_precision, ..., "macro": mean}``.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: a class holds a single label value with ``on_undefined="raise"``, or every class does.
    """
    return _per_class(auprc, "auprc", y_true, y_score, class_names, on_undefined)


def macro_auroc(y_true: Any, y_score: Any) -> float:
    """Macro-averaged multi-label AUROC (a scalar, for :func:`bootstrap_ci`); undefined if any class is one-valued.

    Args:
        y_true: ``(n, n_classes)`` 0/1 labels.
        y_score: ``(n, n_classes)`` scores.

    Returns:
        The unweighted mean of the per-class AUROCs.
    """
    return auroc_per_class(y_true, y_score)["macro"]


def macro_auprc(y_true: Any, y_score: Any) -> float:
    """Macro-averaged multi-label average precision (a scalar, for :func:`bootstrap_ci`).

    Args:
        y_true: ``(n, n_classes)`` 0/1 labels.
        y_score: ``(n, n_classes)`` scores.

    Returns:
        The unweighted mean of the per-class average precisions.
    """
    return auprc_per_class(y_true, y_score)["macro"]


# ----------------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------------


def bootstrap_samples(
    n: int,
    groups: Any | None = None,
    strata: Any | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Yield bootstrap resamples as row indices, resampling rows or whole groups (patients), optionally stratified.

    With ``groups``, groups are drawn with replacement and every row of a drawn group is taken (as many times as the
    group was drawn), so a patient's rows always stay together. With ``strata``, each stratum is resampled to its own
    size; with both, a group's stratum is the largest stratum value among its rows (for 0/1 labels: whether the
    patient has any positive row).

    The same ``n``, ``groups``, ``strata`` and ``seed`` give the same resamples, so two models evaluated on the same
    cases with the same seed see paired resamples.

    Args:
        n: number of rows.
        groups: optional ``(n,)`` group (patient) key of each row; use salted keys, never raw patient IDs.
        strata: optional ``(n,)`` stratum of each row (usually the binary label).
        n_boot: number of resamples.
        seed: seed of the NumPy generator.

    Yields:
        ``(m,)`` integer row indices; ``m == n`` when resampling rows, and varies around ``n`` when resampling groups.

    Raises:
        MetricInputError: when ``groups`` or ``strata`` do not have ``n`` entries.
    """
    rng = np.random.default_rng(seed)
    strata_arr = None if strata is None else _to_numpy(strata)
    if strata_arr is not None and strata_arr.shape != (n,):
        raise MetricInputError(f"strata must have shape ({n},), got {strata_arr.shape}", "bootstrap")
    if groups is None:
        if strata_arr is None:
            for _ in range(n_boot):
                yield rng.integers(0, n, n)
            return
        members = [np.flatnonzero(strata_arr == s) for s in np.unique(strata_arr)]
        for _ in range(n_boot):
            yield np.concatenate([idx[rng.integers(0, idx.size, idx.size)] for idx in members])
        return
    groups_arr = _to_numpy(groups)
    if groups_arr.shape != (n,):
        raise MetricInputError(f"groups must have shape ({n},), got {groups_arr.shape}", "bootstrap")
    _, inverse = np.unique(groups_arr, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_groups = int(inverse.max()) + 1
    if strata_arr is None:
        group_members = [np.arange(n_groups)]
    else:
        group_stratum = np.full(n_groups, -np.inf)
        np.maximum.at(group_stratum, inverse, strata_arr.astype(np.float64))
        group_members = [np.flatnonzero(group_stratum == s) for s in np.unique(group_stratum)]
    rows = np.arange(n)
    for _ in range(n_boot):
        counts = np.zeros(n_groups, dtype=np.int64)
        for members in group_members:
            counts += np.bincount(members[rng.integers(0, members.size, members.size)], minlength=n_groups)
        # Each row is repeated as many times as its group was drawn: all rows of a patient move together.
        yield np.repeat(rows, counts[inverse])


def _call_metric(metric_fn: Callable[..., Any], y_true: np.ndarray, y_score: np.ndarray | None) -> float:
    value = metric_fn(y_true) if y_score is None else metric_fn(y_true, y_score)
    value = np.asarray(value)
    if value.size != 1:
        raise MetricInputError(f"metric_fn must return a scalar, got shape {value.shape}", "bootstrap")
    return float(value.reshape(()))


def _bca_interval(
    boot: np.ndarray,
    value: float,
    jackknife: np.ndarray,
    alpha: float,
) -> tuple[float, float] | None:
    """Bias-corrected and accelerated interval (Efron 1987) from bootstrap and jackknife values.

    Hand-written because ``scipy.stats.bootstrap(method="BCa")`` resamples rows only: it cannot resample patients,
    stratify, or skip resamples on which the metric is undefined, which this module needs. Returns ``None`` when the
    correction is degenerate (every bootstrap value on one side of the estimate).
    """
    below = (np.sum(boot < value) + 0.5 * np.sum(boot == value)) / boot.size
    if below <= 0 or below >= 1:
        return None
    z0 = stats.norm.ppf(below)
    jack = jackknife[np.isfinite(jackknife)]
    diffs = jack.mean() - jack if jack.size > 1 else np.zeros(1)
    denom = 6.0 * np.sum(diffs**2) ** 1.5
    accel = float(np.sum(diffs**3) / denom) if denom > 0 else 0.0
    quantiles = []
    for z_alpha in (stats.norm.ppf(alpha / 2), stats.norm.ppf(1 - alpha / 2)):
        quantiles.append(stats.norm.cdf(z0 + (z0 + z_alpha) / (1 - accel * (z0 + z_alpha))))
    low, high = np.quantile(boot, quantiles)
    return float(low), float(high)


def bootstrap_ci(
    metric_fn: Callable[..., Any],
    y_true: Any,
    y_score: Any | None = None,
    groups: Any | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = False,
    method: str = "percentile",
) -> Estimate:
    """Bootstrap confidence interval of any metric, resampling rows or whole patients.

    The metric is computed on the full data (errors there propagate), then on ``n_boot`` resamples (see
    :func:`bootstrap_samples`). A resample on which the metric is undefined (it raises ``ValueError``, which includes
    :class:`UndefinedMetricError` and scikit-learn's errors, emits scikit-learn's ``UndefinedMetricWarning``, or
    returns NaN/inf) is skipped and counted: ``Estimate.n_boot_used`` says how many entered the interval.

    Pass ``groups`` whenever a patient contributes several rows (exams, views, series): rows of one patient are
    correlated, and resampling rows would give intervals that are too narrow.

    To compare two models on the same cases, bootstrap the difference on paired resamples::

        bootstrap_ci(lambda y, s: auroc(y, s[:, 0]) - auroc(y, s[:, 1]), y, np.column_stack([a, b]))

    Args:
        metric_fn: ``metric_fn(y_true, y_score) -> float`` (or ``metric_fn(y_true)`` when ``y_score`` is None).
        y_true: labels, or any array indexed along its first axis (e.g. per-case Dice with ``y_score=None``).
        y_score: scores with the same first dimension, or None.
        groups: optional ``(n,)`` patient key of each row; resamples patients and takes all their rows.
        n_boot: number of resamples.
        alpha: one minus the confidence level (0.05 for a 95% CI).
        seed: seed of the resampling.
        stratified: resample positives and negatives separately (keeps the prevalence fixed, so every resample has
            both classes); needs 1-D 0/1 ``y_true``. With ``groups``, patients are stratified by whether they have any
            positive row.
        method: ``"percentile"`` (default) or ``"bca"`` (bias-corrected and accelerated; costs one extra metric
            evaluation per row, or per patient with ``groups``, for the jackknife).

    Returns:
        The :class:`Estimate`; its CI is NaN when no resample was usable.

    Raises:
        MetricInputError: malformed arguments.
    """
    _check_alpha(alpha)
    if n_boot < 1:
        raise MetricInputError(f"n_boot must be >= 1, got {n_boot}", "bootstrap")
    if method not in ("percentile", "bca"):
        raise MetricInputError(f"method must be 'percentile' or 'bca', got {method!r}", "bootstrap")
    yt = _to_numpy(y_true)
    ys = None if y_score is None else _to_numpy(y_score)
    if yt.ndim == 0:
        raise MetricInputError("y_true must have at least one dimension", "bootstrap")
    n = yt.shape[0]
    if ys is not None and (ys.ndim == 0 or ys.shape[0] != n):
        raise MetricInputError(f"y_true has {n} rows but y_score has shape {ys.shape}", "bootstrap")
    strata = None
    if stratified:
        if yt.ndim != 1:
            raise MetricInputError("stratified resampling needs 1-D class labels in y_true", "bootstrap")
        strata = yt
    groups_arr = None if groups is None else _to_numpy(groups)
    n_groups = None if groups_arr is None else int(np.unique(groups_arr).size)

    value = _call_metric(metric_fn, yt, ys)

    from sklearn.exceptions import UndefinedMetricWarning

    boot: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        for idx in bootstrap_samples(n, groups=groups_arr, strata=strata, n_boot=n_boot, seed=seed):
            try:
                v = _call_metric(metric_fn, yt[idx], None if ys is None else ys[idx])
            except (ValueError, ZeroDivisionError, UndefinedMetricWarning):
                continue
            if math.isfinite(v):
                boot.append(v)
    boot_arr = np.asarray(boot, dtype=np.float64)
    resampling = ("stratified-" if stratified else "") + ("group" if groups_arr is not None else "row")
    if boot_arr.size < n_boot:
        log = logger.warning if boot_arr.size < 0.9 * n_boot else logger.info
        log("bootstrap: metric undefined on %d of %d resamples (skipped)", n_boot - boot_arr.size, n_boot)
    if boot_arr.size == 0:
        return Estimate(value, float("nan"), float("nan"), 0, n_boot, alpha, method, resampling, n, n_groups)

    interval = None
    used_method = method
    if method == "bca":
        interval = _bca_interval(boot_arr, value, _jackknife(metric_fn, yt, ys, groups_arr), alpha)
        if interval is None:
            warnings.warn(
                "BCa correction is degenerate (every bootstrap value on one side of the estimate); "
                "falling back to the percentile interval",
                RuntimeWarning,
                stacklevel=2,
            )
            used_method = "percentile"
    if interval is None:
        low, high = np.quantile(boot_arr, [alpha / 2, 1 - alpha / 2])
        interval = (float(low), float(high))
    se = float(boot_arr.std(ddof=1)) if boot_arr.size > 1 else float("nan")
    return Estimate(
        value, interval[0], interval[1], int(boot_arr.size), n_boot, alpha, used_method, resampling, n, n_groups, se
    )


def _jackknife(
    metric_fn: Callable[..., Any], yt: np.ndarray, ys: np.ndarray | None, groups: np.ndarray | None
) -> np.ndarray:
    """Leave-one-row-out (or leave-one-group-out) values of the metric; NaN where it is undefined."""
    n = yt.shape[0]
    units = np.arange(n) if groups is None else np.unique(groups, return_inverse=True)[1].reshape(-1)
    out = np.full(int(units.max()) + 1, np.nan)
    for u in range(out.size):
        keep = units != u
        try:
            out[u] = _call_metric(metric_fn, yt[keep], None if ys is None else ys[keep])
        except (ValueError, ZeroDivisionError):
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Patient-level aggregation and DeLong
# ----------------------------------------------------------------------------------------------------------------------


def aggregate_by_group(
    y_true: Any, y_score: Any, groups: Any, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate rows to one row per group (patient), e.g. before a DeLong test, which assumes independent cases.

    A group is positive when any of its rows is positive; its score is the mean or maximum of its rows' scores.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores.
        groups: ``(n,)`` group key of each row (salted patient keys).
        how: ``"mean"`` or ``"max"`` of the scores.

    Returns:
        ``(y_true_per_group, y_score_per_group, group_keys)``, groups in sorted key order.

    Raises:
        MetricInputError: malformed input or unknown ``how``.
    """
    import pandas as pd

    if how not in ("mean", "max"):
        raise MetricInputError(f"how must be 'mean' or 'max', got {how!r}", "aggregate_by_group")
    yt, ys = _check_binary(y_true, y_score, "aggregate_by_group")
    g = _to_numpy(groups)
    if g.shape != yt.shape:
        raise MetricInputError(f"groups has shape {g.shape}, labels {yt.shape}", "aggregate_by_group")
    frame = pd.DataFrame({"group": g, "y": yt, "s": ys}).groupby("group", sort=True)
    agg = frame.agg(y=("y", "max"), s=("s", how))
    return agg["y"].to_numpy(np.int64), agg["s"].to_numpy(np.float64), agg.index.to_numpy()


def _delong_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """AUCs and their covariance matrix by the fast DeLong algorithm (Sun & Xu 2014).

    Args:
        y_true: ``(n,)`` 0/1 labels with at least two positives and two negatives.
        scores: ``(k, n)`` scores of ``k`` models.

    Returns:
        ``(aucs (k,), covariance (k, k), n_positive, n_negative)``.
    """
    pos = y_true == 1
    m = int(pos.sum())
    n = int(pos.size - m)
    # Midranks (average ranks of ties) within positives, within negatives and over all cases: O(n log n).
    tx = stats.rankdata(scores[:, pos], axis=1)
    ty = stats.rankdata(scores[:, ~pos], axis=1)
    tz = stats.rankdata(scores, axis=1)
    # Structural components: V10 of a positive is the fraction of negatives it outranks (ties count 1/2), V01 of a
    # negative the fraction of positives that outrank it.
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, ~pos] - ty) / m
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n, m, n


def _delong_inputs(y_true: Any, *scores: Any) -> tuple[np.ndarray, np.ndarray]:
    checked = [_check_binary(y_true, s, "delong") for s in scores]
    yt = checked[0][0]
    _require_both_classes(yt, "delong")
    n_pos = int(yt.sum())
    if n_pos < 2 or yt.size - n_pos < 2:
        raise UndefinedMetricError(
            f"the DeLong variance needs at least 2 positive and 2 negative cases, got {n_pos} and {yt.size - n_pos}",
            "delong",
        )
    return yt, np.stack([c[1] for c in checked])


def delong_test(y_true: Any, score_a: Any, score_b: Any, alpha: float = 0.05) -> DeLongResult:
    """Paired DeLong test of two correlated ROC AUCs computed on the same cases.

    Uses the O(n log n) midrank algorithm of Sun & Xu (2014), exact for ties. DeLong assumes independent cases: when
    a patient contributes several rows, aggregate to one row per patient first (:func:`aggregate_by_group`) or use a
    patient-level bootstrap of the difference (:func:`bootstrap_ci` with ``groups``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        score_a: ``(n,)`` scores of model A.
        score_b: ``(n,)`` scores of model B on the same cases.
        alpha: one minus the confidence level of the CI of the difference.

    Returns:
        The :class:`DeLongResult`; identical scores give difference 0, z 0 and p 1.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: fewer than two positives or two negatives.
    """
    _check_alpha(alpha)
    yt, scores = _delong_inputs(y_true, score_a, score_b)
    aucs, cov, m, n = _delong_components(yt, scores)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:
        # Zero variance of the difference: the two scores rank the cases identically (or both perfectly).
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    half = float(stats.norm.ppf(1 - alpha / 2) * se)
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, float(z), p, diff - half, diff + half, alpha, m, n)


def delong_ci(y_true: Any, y_score: Any, alpha: float = 0.05) -> Estimate:
    """AUROC with its DeLong variance and normal confidence interval (clipped to [0, 1]).

    Args:
        y_true: ``(n,)`` 0/1 labels of independent cases (see :func:`delong_test` for repeated measures).
        y_score: ``(n,)`` scores.
        alpha: one minus the confidence level.

    Returns:
        An :class:`Estimate` with ``method="delong"``, ``se`` the DeLong standard error (variance ``se ** 2``) and
        ``n_boot_used == 0``.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: fewer than two positives or two negatives.
    """
    _check_alpha(alpha)
    yt, scores = _delong_inputs(y_true, y_score)
    aucs, cov, _, _ = _delong_components(yt, scores)
    auc = float(aucs[0])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    half = float(stats.norm.ppf(1 - alpha / 2) * se)
    return Estimate(
        auc, max(0.0, auc - half), min(1.0, auc + half), 0, 0, alpha, "delong", "none", int(yt.size), None, se
    )


# ----------------------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------------------


def reliability_curve(y_true: Any, y_prob: Any, n_bins: int = 10, strategy: str = "uniform") -> ReliabilityCurve:
    """Reliability curve (scikit-learn's ``calibration_curve``) with the number of samples in each bin.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_prob: ``(n,)`` predicted probabilities of the positive class.
        n_bins: number of bins.
        strategy: ``"uniform"`` (equal-width bins on [0, 1]) or ``"quantile"`` (equal-count bins).

    Returns:
        The :class:`ReliabilityCurve` over the non-empty bins.

    Raises:
        MetricInputError: malformed input, probabilities outside [0, 1], unknown strategy.
    """
    from sklearn.calibration import calibration_curve

    if strategy not in ("uniform", "quantile"):
        raise MetricInputError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}", "reliability_curve")
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be >= 1, got {n_bins}", "reliability_curve")
    yt, yp = _check_binary(y_true, y_prob, "reliability_curve")
    _check_probabilities(yp, "reliability_curve")
    prob_true, prob_pred = calibration_curve(yt, yp, n_bins=n_bins, strategy=strategy, pos_label=1)
    # calibration_curve does not return bin counts: recompute its binning (same edges, same searchsorted rule).
    if strategy == "quantile":
        edges = np.percentile(yp, np.linspace(0, 100, n_bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of_sample = np.searchsorted(edges[1:-1], yp)
    all_counts = np.bincount(bin_of_sample, minlength=n_bins)
    bin_ids = np.flatnonzero(all_counts)
    if bin_ids.size != prob_true.size:  # pragma: no cover - guards against a change of scikit-learn's binning
        raise RuntimeError("bin counts disagree with scikit-learn's calibration_curve")
    return ReliabilityCurve(prob_true, prob_pred, all_counts[bin_ids], edges, bin_ids)


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: ``sum_b (n_b / n) * |observed_b - predicted_b|`` over the bins of the curve.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_prob: ``(n,)`` predicted probabilities of the positive class.
        n_bins: number of bins.
        strategy: ``"uniform"`` or ``"quantile"`` bins.

    Returns:
        The ECE in [0, 1].

    Raises:
        MetricInputError: malformed input or probabilities outside [0, 1].
    """
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    weights = curve.counts / curve.counts.sum()
    return float(np.sum(weights * np.abs(curve.prob_true - curve.prob_pred)))


def brier_score(y_true: Any, y_prob: Any) -> float:
    """Brier score: mean squared error of the probabilities (equal to scikit-learn's ``brier_score_loss``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_prob: ``(n,)`` predicted probabilities of the positive class.

    Returns:
        The Brier score (0 is perfect).

    Raises:
        MetricInputError: malformed input or probabilities outside [0, 1].
    """
    yt, yp = _check_binary(y_true, y_prob, "brier_score")
    _check_probabilities(yp, "brier_score")
    # The definition itself, equal to brier_score_loss (tested): its input validation costs ~50x the mean.
    return float(np.mean((yp - yt) ** 2))


# ----------------------------------------------------------------------------------------------------------------------
# Operating points
# ----------------------------------------------------------------------------------------------------------------------


def threshold_for(
    y_true: Any,
    y_score: Any,
    sensitivity: float | None = None,
    specificity: float | None = None,
    method: str = "youden",
) -> float:
    """Choose a decision threshold on validation data (a case is positive when ``score >= threshold``).

    With a ``sensitivity`` target, the highest threshold reaching it (the best specificity at that sensitivity); with
    a ``specificity`` target, the lowest threshold keeping it (the best sensitivity at that specificity); otherwise
    ``method``: ``"youden"`` maximises ``sensitivity + specificity - 1``, ``"closest"`` minimises the distance to the
    corner (0, 1) of the ROC plot. Ties go to the higher threshold. Evaluate the threshold on *other* data
    (:func:`sensitivity_specificity`): measured on the data that chose it, it is optimistic.

    Args:
        y_true: ``(n,)`` 0/1 validation labels.
        y_score: ``(n,)`` validation scores.
        sensitivity: target sensitivity in [0, 1].
        specificity: target specificity in [0, 1].
        method: ``"youden"`` or ``"closest"`` when no target is given.

    Returns:
        The threshold (``inf`` when only "nothing positive" meets a specificity target of 1).

    Raises:
        MetricInputError: malformed input, both targets given, a target outside [0, 1], an unknown method.
        UndefinedMetricError: ``y_true`` holds a single class.
    """
    from sklearn.metrics import roc_curve

    yt, ys = _check_binary(y_true, y_score, "threshold_for")
    _require_both_classes(yt, "threshold_for")
    if sensitivity is not None and specificity is not None:
        raise MetricInputError("give a sensitivity target or a specificity target, not both", "threshold_for")
    if method not in ("youden", "closest"):
        raise MetricInputError(f"method must be 'youden' or 'closest', got {method!r}", "threshold_for")
    for name, target in (("sensitivity", sensitivity), ("specificity", specificity)):
        if target is not None and not 0 <= target <= 1:
            raise MetricInputError(f"{name} target must be in [0, 1], got {target}", "threshold_for")
    fpr, tpr, thresholds = roc_curve(yt, ys, drop_intermediate=False)
    eps = 1e-12
    if sensitivity is not None:
        idx = int(np.argmax(tpr >= sensitivity - eps))  # thresholds decrease, tpr increases: the first is the highest
    elif specificity is not None:
        idx = int(np.flatnonzero(fpr <= 1 - specificity + eps)[-1])
    elif method == "youden":
        idx = int(np.argmax(tpr - fpr))
    else:
        idx = int(np.argmin(fpr**2 + (1 - tpr) ** 2))
    return float(thresholds[idx])


def sensitivity_specificity(y_true: Any, y_score: Any, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when cases with ``score >= threshold`` are called positive.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores.
        threshold: decision threshold, chosen on other data (:func:`threshold_for`).

    Returns:
        ``(sensitivity, specificity)``.

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: ``y_true`` holds a single class.
    """
    tn, fp, fn, tp = _confusion(y_true, y_score, threshold, "sensitivity_specificity", need=(0, 1))
    return float(tp / (tp + fn)), float(tn / (tn + fp))


def _confusion(y_true: Any, y_score: Any, threshold: float, name: str, need: tuple[int, ...]) -> np.ndarray:
    """``(tn, fp, fn, tp)`` at a threshold, raising when a class in ``need`` is absent.

    Counted with NumPy rather than scikit-learn's ``confusion_matrix``, whose input validation costs about a hundred
    times the four sums (it dominated ``summarize_binary``'s bootstrap).
    """
    yt, ys = _check_binary(y_true, y_score, name)
    n_pos = int(yt.sum())
    for cls, count in ((1, n_pos), (0, yt.size - n_pos)):
        if cls in need and count == 0:
            kind = "positive" if cls else "negative"
            raise UndefinedMetricError(f"no {kind} case in {yt.size} samples", name)
    called = ys >= threshold
    tp = int(np.count_nonzero(called & (yt == 1)))
    fp = int(np.count_nonzero(called)) - tp
    fn = n_pos - tp
    tn = yt.size - n_pos - fp
    return np.array([tn, fp, fn, tp])


def sensitivity(y_true: Any, y_score: Any, threshold: float) -> float:
    """Sensitivity (recall of positives) at a threshold; a scalar for :func:`bootstrap_ci` (via ``functools.partial``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores.
        threshold: decision threshold.

    Returns:
        The sensitivity.

    Raises:
        UndefinedMetricError: no positive case.
    """
    _, _, fn, tp = _confusion(y_true, y_score, threshold, "sensitivity", need=(1,))
    return float(tp / (tp + fn))


def specificity(y_true: Any, y_score: Any, threshold: float) -> float:
    """Specificity (recall of negatives) at a threshold; a scalar for :func:`bootstrap_ci`.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` scores.
        threshold: decision threshold.

    Returns:
        The specificity.

    Raises:
        UndefinedMetricError: no negative case.
    """
    tn, fp, _, _ = _confusion(y_true, y_score, threshold, "specificity", need=(0,))
    return float(tn / (tn + fp))


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------------------


def _check_label_map(arr: Any, name: str, case: str) -> np.ndarray:
    a = _to_numpy(arr)
    if a.ndim not in (2, 3):
        raise MetricInputError(
            f"{name} must be a 2-D or 3-D label map without channel dimension, got shape {a.shape} "
            "(for MONAI channel-first data pass label[0])",
            case,
        )
    if a.dtype != bool and not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.number) or not np.array_equal(a, np.round(a)):
            raise MetricInputError(
                f"{name} must hold integer labels, got dtype {a.dtype} with non-integer values", case
            )
    return a


def region_masks(label_map: Any, regions: Mapping[str, Sequence[int]] = BRATS_2021_REGIONS) -> np.ndarray:
    """Binary masks of regions defined as sets of labels (e.g. BraTS tumour core = labels {1, 4}).

    Args:
        label_map: integer label map of any shape.
        regions: ``{region_name: labels}``.

    Returns:
        ``(n_regions, *label_map.shape)`` boolean masks in the order of ``regions``.
    """
    a = _to_numpy(label_map)
    return np.stack([np.isin(a, np.asarray(list(labels))) for labels in regions.values()])


def _paired_masks(
    pred: Any, label: Any, regions: Mapping[str, Sequence[int]], case: str
) -> tuple[np.ndarray, np.ndarray]:
    p = _check_label_map(pred, "pred", case)
    g = _check_label_map(label, "label", case)
    if p.shape != g.shape:
        raise MetricInputError(f"pred has shape {p.shape} but label has shape {g.shape}", case)
    if not regions:
        raise MetricInputError("no regions given", case)
    return region_masks(p, regions), region_masks(g, regions)


def dice_per_region(
    pred: Any,
    label: Any,
    regions: Mapping[str, Sequence[int]] = BRATS_2021_REGIONS,
    both_empty: float = 1.0,
    case: str = "case",
) -> dict[str, float]:
    """Dice of each region of one case (MONAI's ``compute_dice``).

    Empty-region convention: when a region is absent from both the prediction and the ground truth, Dice is
    ``both_empty`` (1.0, the BraTS convention: nothing to find, nothing found; pass NaN to leave such cases out of
    means); when it is absent from exactly one of them, Dice is 0.

    Args:
        pred: predicted label map (2-D or 3-D, no channel dimension).
        label: ground-truth label map of the same shape.
        regions: ``{region_name: labels}``, e.g. :data:`BRATS_2021_REGIONS` or :data:`BRATS_2023_REGIONS`.
        both_empty: Dice when the region is empty in both.
        case: name of the case in error messages (a salted key, never a patient ID).

    Returns:
        ``{region_name: dice}``.

    Raises:
        MetricInputError: malformed or mismatched label maps.
    """
    import torch
    from monai.metrics import compute_dice

    pm, gm = _paired_masks(pred, label, regions, case)
    # ignore_empty=False: MONAI gives 0 when the ground truth is empty but the prediction is not.
    dice = compute_dice(
        torch.from_numpy(pm[None]).double(),
        torch.from_numpy(gm[None]).double(),
        include_background=True,
        ignore_empty=False,
    )[0].numpy()
    out = {}
    for i, name in enumerate(regions):
        empty_pred, empty_gt = not pm[i].any(), not gm[i].any()
        out[name] = (
            float(both_empty) if (empty_pred and empty_gt) else 0.0 if (empty_pred or empty_gt) else float(dice[i])
        )
    return out


def hd95_per_region(
    pred: Any,
    label: Any,
    regions: Mapping[str, Sequence[int]] = BRATS_2021_REGIONS,
    spacing: float | Sequence[float] | None = None,
    both_empty: float = 0.0,
    one_empty: float | str = "diagonal",
    case: str = "case",
) -> dict[str, float]:
    """95th-percentile Hausdorff distance of each region of one case, in mm (MONAI's ``compute_hausdorff_distance``).

    MONAI's definition: the larger of the two directed 95th-percentile surface distances, on the boundary voxels.

    Empty-region convention: absent from both prediction and ground truth: ``both_empty`` (0 mm); absent from exactly
    one: ``one_empty``, by default ``"diagonal"``, the length of the image diagonal in mm (the worst possible
    distance; 373.13 mm for a 240 x 240 x 155 BraTS volume at 1 mm, the penalty used in BraTS rankings). Pass a number
    for a fixed penalty or NaN to leave such cases out of means.

    Args:
        pred: predicted label map (2-D or 3-D, no channel dimension).
        label: ground-truth label map of the same shape.
        regions: ``{region_name: labels}``.
        spacing: voxel spacing in mm, one number or one per axis (default 1 mm).
        both_empty: distance when the region is empty in both.
        one_empty: distance when the region is empty in exactly one, or ``"diagonal"``.
        case: name of the case in error messages.

    Returns:
        ``{region_name: hd95_mm}``.

    Raises:
        MetricInputError: malformed label maps or spacing.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    pm, gm = _paired_masks(pred, label, regions, case)
    ndim = pm.ndim - 1
    sp = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or not (sp > 0).all():
        raise MetricInputError(f"spacing must be positive, one value or {ndim} values, got {spacing}", case)
    if isinstance(one_empty, str):
        if one_empty != "diagonal":
            raise MetricInputError(f"one_empty must be a number or 'diagonal', got {one_empty!r}", case)
        penalty = float(np.sqrt(np.sum((np.asarray(pm.shape[1:]) * sp) ** 2)))
    else:
        penalty = float(one_empty)
    out: dict[str, float] = {}
    both = [i for i in range(pm.shape[0]) if pm[i].any() and gm[i].any()]
    if both:
        with warnings.catch_warnings():
            # MONAI 1.5+ calls its own deprecated argument inside compute_hausdorff_distance: not actionable here.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd = compute_hausdorff_distance(
                torch.from_numpy(pm[None, both]).float(),
                torch.from_numpy(gm[None, both]).float(),
                include_background=True,
                percentile=95,
                spacing=sp.tolist(),
            )[0].numpy()
        hd_of = dict(zip(both, hd.tolist()))
    for i, name in enumerate(regions):
        if i in both:
            out[name] = float(hd_of[i])
        elif pm[i].any() or gm[i].any():
            out[name] = penalty
        else:
            out[name] = float(both_empty)
    return out


def segmentation_metrics(
    preds: Sequence[Any],
    labels: Sequence[Any],
    regions: Mapping[str, Sequence[int]] = BRATS_2021_REGIONS,
    spacings: Sequence[Any] | None = None,
    hd95: bool = True,
    case_ids: Sequence[str] | None = None,
    dice_both_empty: float = 1.0,
    hd95_both_empty: float = 0.0,
    hd95_one_empty: float | str = "diagonal",
) -> dict[str, np.ndarray]:
    """Per-case Dice (and HD95) of each region over a list of cases (cases may differ in shape).

    Args:
        preds: predicted label maps, one per case.
        labels: ground-truth label maps, one per case.
        regions: ``{region_name: labels}``.
        spacings: one spacing per case (number or per-axis), or None for 1 mm.
        hd95: also compute HD95 (slower than Dice).
        case_ids: names of the cases in error messages (salted keys).
        dice_both_empty: see :func:`dice_per_region`.
        hd95_both_empty: see :func:`hd95_per_region`.
        hd95_one_empty: see :func:`hd95_per_region`.

    Returns:
        ``{"dice_<region>": (n_cases,), "hd95_<region>": (n_cases,)}``.

    Raises:
        MetricInputError: mismatched lists or malformed label maps (naming the case).
    """
    if len(preds) != len(labels):
        raise MetricInputError(f"{len(preds)} predictions for {len(labels)} labels", "segmentation_metrics")
    if spacings is not None and len(spacings) != len(labels):
        raise MetricInputError(f"{len(spacings)} spacings for {len(labels)} cases", "segmentation_metrics")
    names = [f"case {i}" for i in range(len(labels))] if case_ids is None else [str(c) for c in case_ids]
    out: dict[str, list[float]] = {f"dice_{r}": [] for r in regions}
    if hd95:
        out.update({f"hd95_{r}": [] for r in regions})
    for i, (p, g) in enumerate(zip(preds, labels)):
        for r, v in dice_per_region(p, g, regions, both_empty=dice_both_empty, case=names[i]).items():
            out[f"dice_{r}"].append(v)
        if hd95:
            sp = None if spacings is None else spacings[i]
            res = hd95_per_region(p, g, regions, sp, hd95_both_empty, hd95_one_empty, case=names[i])
            for r, v in res.items():
                out[f"hd95_{r}"].append(v)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def summarize_segmentation(
    preds: Sequence[Any],
    labels: Sequence[Any],
    regions: Mapping[str, Sequence[int]] = BRATS_2021_REGIONS,
    spacings: Sequence[Any] | None = None,
    hd95: bool = True,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Estimate]:
    """Mean Dice (and HD95) per region over cases, with bootstrap CIs over cases.

    NaN per-case values (from a NaN empty-region convention) are left out of the means.

    Args:
        preds: predicted label maps, one per case.
        labels: ground-truth label maps, one per case.
        regions: ``{region_name: labels}``.
        spacings: one spacing per case, or None.
        hd95: also summarise HD95.
        n_boot: bootstrap resamples of the cases.
        alpha: one minus the confidence level.
        seed: seed of the resampling.
        **kwargs: passed to :func:`segmentation_metrics` (``case_ids``, empty-region conventions).

    Returns:
        ``{"dice_<region>": Estimate, "hd95_<region>": Estimate}``.
    """
    per_case = segmentation_metrics(preds, labels, regions, spacings, hd95=hd95, **kwargs)
    out = {}
    for key, values in per_case.items():
        if np.isnan(values).all():
            out[key] = Estimate(
                float("nan"), float("nan"), float("nan"), 0, n_boot, alpha, "percentile", "row", values.size
            )
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples give NaN and are skipped
            out[key] = bootstrap_ci(np.nanmean, values, None, n_boot=n_boot, alpha=alpha, seed=seed)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# One-call summary
# ----------------------------------------------------------------------------------------------------------------------


def summarize_binary(
    y_true: Any,
    y_score: Any,
    groups: Any | None = None,
    threshold: float | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = False,
    method: str = "percentile",
    n_bins: int = 10,
    strategy: str = "uniform",
    calibration: bool = True,
) -> dict[str, Estimate]:
    """AUROC, AUPRC, ECE, Brier score, sensitivity and specificity, each with a bootstrap CI, in one call.

    Every metric uses the same seed and therefore the same resamples. Metrics are computed over rows; with ``groups``
    the resampling unit is the patient.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        y_score: ``(n,)`` predicted probabilities (scores outside [0, 1] need ``calibration=False``).
        groups: optional ``(n,)`` salted patient keys for patient-level resampling.
        threshold: decision threshold chosen on validation data (:func:`threshold_for`); when None, sensitivity and
            specificity are left out rather than measured at a threshold chosen on these data.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: seed of the resampling.
        stratified: stratify the resampling by class (see :func:`bootstrap_ci`).
        method: ``"percentile"`` or ``"bca"``.
        n_bins: bins of the ECE.
        strategy: ``"uniform"`` or ``"quantile"`` ECE bins.
        calibration: compute ECE and Brier score (needs probabilities).

    Returns:
        ``{"auroc", "auprc", "ece", "brier", "sensitivity", "specificity": Estimate}`` (the last two only with a
        threshold, the calibration ones only with ``calibration=True``).

    Raises:
        MetricInputError: malformed input.
        UndefinedMetricError: ``y_true`` holds a single class.
    """
    from functools import partial

    yt, ys = _check_binary(y_true, y_score, "summarize_binary")
    _require_both_classes(yt, "summarize_binary")
    if calibration:
        _check_probabilities(ys, "summarize_binary")
    metrics: dict[str, Callable[..., float]] = {"auroc": auroc, "auprc": auprc}
    if calibration:
        metrics["ece"] = partial(expected_calibration_error, n_bins=n_bins, strategy=strategy)
        metrics["brier"] = brier_score
    if threshold is not None:
        metrics["sensitivity"] = partial(sensitivity, threshold=threshold)
        metrics["specificity"] = partial(specificity, threshold=threshold)
    common = dict(groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, stratified=stratified, method=method)
    return {name: bootstrap_ci(fn, yt, ys, **common) for name, fn in metrics.items()}
