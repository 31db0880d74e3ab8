from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medssl.eval import metrics as M
from medssl.eval.metrics import (
    BRATS_2021_REGIONS,
    BRATS_2023_REGIONS,
    MetricInputError,
    UndefinedMetricError,
)
from medssl.exceptions import MedsslError


def _binary_data(n: int, seed: int, signal: float = 1.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = signal * y + rng.normal(size=n)
    if ties:
        s = np.round(s, 1)
    return y, s


# ----------------------------------------------------------------------------------------------------------------------
# AUROC / AUPRC
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_auprc_match_sklearn(ties):
    y, s = _binary_data(257, seed=1, ties=ties)
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # booleans and torch tensors are accepted
    torch = pytest.importorskip("torch")
    assert M.auroc(torch.from_numpy(y.astype(bool)), torch.from_numpy(s)) == pytest.approx(roc_auc_score(y, s))


@pytest.mark.parametrize("fn", [M.auroc, M.auprc])
def test_single_class_is_a_clear_error(fn):
    with pytest.raises(UndefinedMetricError, match="only class 0"):
        fn(np.zeros(5, int), np.arange(5.0))
    with pytest.raises(UndefinedMetricError, match="only class 1"):
        fn(np.ones(5, int), np.arange(5.0))


def test_bad_inputs_raise_medssl_errors():
    with pytest.raises(MetricInputError, match=r"only 0 and 1, found \[2\]"):
        M.auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match="shape"):
        M.auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(MetricInputError, match="NaN"):
        M.auroc([0, 1, 1], [0.1, np.nan, 0.3])
    assert issubclass(MetricInputError, MedsslError) and issubclass(UndefinedMetricError, MedsslError)


def test_per_class_matches_sklearn_and_names_the_undefined_class():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (120, 3))
    s = y + rng.normal(size=(120, 3))
    names = ["Edema", "Effusion", "Pneumothorax"]
    res = M.auroc_per_class(y, s, class_names=names)
    expected = roc_auc_score(y, s, average=None)
    assert [res[c] for c in names] == pytest.approx(expected.tolist())
    assert res["macro"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    ap = M.auprc_per_class(y, s)
    assert ap["macro"] == pytest.approx(average_precision_score(y, s, average="macro"))
    assert M.macro_auroc(y, s) == pytest.approx(res["macro"])

    y[:, 1] = 0
    with pytest.raises(UndefinedMetricError, match="Effusion"):
        M.auroc_per_class(y, s, class_names=names)
    lenient = M.auroc_per_class(y, s, class_names=names, on_undefined="nan")
    assert math.isnan(lenient["Effusion"])
    assert lenient["macro"] == pytest.approx(np.mean([lenient["Edema"], lenient["Pneumothorax"]]))


# ----------------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_is_reproducible_and_narrows_with_more_data():
    y, s = _binary_data(100, seed=3)
    a = M.bootstrap_ci(M.auroc, y, s, n_boot=300, seed=7)
    b = M.bootstrap_ci(M.auroc, y, s, n_boot=300, seed=7)
    c = M.bootstrap_ci(M.auroc, y, s, n_boot=300, seed=8)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.value < a.ci_high
    assert a.value == pytest.approx(roc_auc_score(y, s))
    assert a.n_boot_used == 300 and a.resampling == "row" and a.n == 100

    y_big, s_big = _binary_data(1600, seed=4)
    big = M.bootstrap_ci(M.auroc, y_big, s_big, n_boot=300, seed=7)
    assert big.ci_low < big.value < big.ci_high
    # 16x the data: the interval should shrink about 4x; demand at least 2x.
    assert (big.ci_high - big.ci_low) < 0.5 * (a.ci_high - a.ci_low)


def test_group_resampling_keeps_patients_rows_together():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 6, 40)
    groups = np.repeat(np.arange(40), sizes)
    rng.shuffle(groups)  # rows of a patient need not be contiguous

    def check_whole_patients(g):
        counts = np.bincount(g, minlength=40)
        assert np.all(counts % sizes == 0), "a patient was split across a resample"
        return float(counts.sum())

    est = M.bootstrap_ci(check_whole_patients, groups, None, groups=groups, n_boot=50, seed=0)
    assert est.resampling == "group" and est.n_groups == 40 and est.n_boot_used == 50
    # row resampling would split patients: the same check must fail there
    with pytest.raises(AssertionError):
        M.bootstrap_ci(check_whole_patients, groups, None, n_boot=50, seed=0)


def test_group_resampling_widens_the_interval_of_clustered_data():
    # 40 patients x 10 rows with identical label and nearly identical score within a patient: 40 independent units,
    # not 400. Row resampling pretends otherwise and is far too narrow.
    rng = np.random.default_rng(6)
    y_pat = rng.integers(0, 2, 40)
    s_pat = y_pat + rng.normal(size=40)
    groups = np.repeat(np.arange(40), 10)
    y = y_pat[groups]
    s = s_pat[groups] + 0.01 * rng.normal(size=400)
    rows = M.bootstrap_ci(M.auroc, y, s, n_boot=300, seed=0)
    pats = M.bootstrap_ci(M.auroc, y, s, groups=groups, n_boot=300, seed=0)
    assert pats.value == rows.value
    assert (pats.ci_high - pats.ci_low) > 2.0 * (rows.ci_high - rows.ci_low)
    # and close to resampling the 40 patient-level rows directly
    direct = M.bootstrap_ci(M.auroc, y_pat, s_pat, n_boot=300, seed=0)
    assert (pats.ci_high - pats.ci_low) == pytest.approx(direct.ci_high - direct.ci_low, rel=0.35)


def test_undefined_resamples_are_skipped_and_counted():
    y = np.array([1, 1] + [0] * 18)
    s = np.linspace(1, 0, 20)
    est = M.bootstrap_ci(M.auroc, y, s, n_boot=200, seed=1)
    # replay the same resamples and count those holding both classes
    expected = sum(0 < y[idx].sum() < len(idx) for idx in M.bootstrap_samples(20, n_boot=200, seed=1))
    assert 0 < expected < 200
    assert est.n_boot_used == expected and est.n_boot_skipped == 200 - expected
    strat = M.bootstrap_ci(M.auroc, y, s, n_boot=200, seed=1, stratified=True)
    assert strat.n_boot_used == 200 and strat.resampling == "stratified-row"
    with pytest.raises(UndefinedMetricError):
        M.bootstrap_ci(M.auroc, np.zeros(5, int), np.arange(5.0))


def test_stratified_resampling_keeps_the_class_counts():
    y, s = _binary_data(50, seed=9)
    for idx in M.bootstrap_samples(50, strata=y, n_boot=20, seed=0):
        assert y[idx].sum() == y.sum() and idx.size == 50
    groups = np.arange(50) // 2
    pos_groups = np.unique(groups[y == 1]).size
    for idx in M.bootstrap_samples(50, groups=groups, strata=y, n_boot=20, seed=0):
        # patients with a positive row are resampled among themselves
        drawn = np.bincount(groups[idx], minlength=25) // 2
        assert drawn[np.unique(groups[y == 1])].sum() == pos_groups


def test_bca_matches_scipy_on_iid_rows():
    x = np.random.default_rng(10).exponential(size=80)  # skewed: BCa differs from the percentile interval
    ours = M.bootstrap_ci(np.mean, x, None, n_boot=4000, seed=0, method="bca")
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="BCa", rng=np.random.default_rng(1))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.method == "bca"
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.06 * width)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.06 * width)
    perc = M.bootstrap_ci(np.mean, x, None, n_boot=4000, seed=0)
    assert ours.ci_high > perc.ci_high  # right skew moves the BCa interval up


def test_estimate_serialises():
    est = M.bootstrap_ci(np.mean, np.arange(10.0), n_boot=20)
    d = json.loads(json.dumps(est.to_dict()))
    assert d["value"] == 4.5 and d["n_boot_used"] == 20
    assert str(est).startswith("4.500 (95% CI ")


# ----------------------------------------------------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------------------------------------------------


def _slow_delong(y, scores):
    """O(n^2) DeLong: explicit pairwise comparisons psi(x, y) = 1, 1/2, 0."""
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10 = psi.mean(axis=2)
    v01 = psi.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / pos.shape[1] + np.atleast_2d(np.cov(v01)) / neg.shape[1]
    return psi.mean(axis=(1, 2)), cov


def test_delong_hand_checked_example():
    y = np.array([1, 1, 0, 0])
    a = np.array([0.9, 0.6, 0.6, 0.2])
    b = np.array([0.8, 0.7, 0.3, 0.5])
    # Model A, by hand. Positives 0.9, 0.6; negatives 0.6, 0.2.
    #   V10(0.9) = (1 + 1) / 2 = 1;   V10(0.6) = (1/2 [tie] + 1) / 2 = 0.75   -> AUC = 0.875
    #   V01(0.6) = (1 + 1/2) / 2 = 0.75;  V01(0.2) = (1 + 1) / 2 = 1
    #   S10 = var([1, .75]) = 0.03125, S01 = var([.75, 1]) = 0.03125, Var(AUC) = S10 / 2 + S01 / 2 = 0.03125
    # Model B: every positive above every negative: V10 = [1, 1], V01 = [1, 1], AUC = 1, variance 0, covariance 0.
    # Difference: -0.125, Var = 0.03125 + 0 - 0 -> se = 0.1767767, z = -0.7071068, p = 2 * Phi(-0.7071) = 0.4795001
    res = M.delong_test(y, a, b)
    assert res.auc_a == pytest.approx(0.875) and res.auc_b == pytest.approx(1.0)
    assert res.difference == pytest.approx(-0.125)
    assert res.se == pytest.approx(math.sqrt(0.03125))
    assert res.z == pytest.approx(-0.125 / math.sqrt(0.03125))
    assert res.p_value == pytest.approx(0.4795001, abs=1e-6)
    ci = M.delong_ci(y, a)
    assert ci.se**2 == pytest.approx(0.03125) and ci.method == "delong"
    assert ci.ci_high == 1.0  # 0.875 + 1.96 * 0.177 is clipped


@pytest.mark.parametrize("seed", [0, 1])
def test_delong_matches_sklearn_and_slow_implementation(seed):
    y, a = _binary_data(150, seed=seed, ties=True)
    b = np.round(0.5 * y + np.random.default_rng(seed + 100).normal(size=150), 1)
    slow_auc, slow_cov = _slow_delong(y, np.stack([a, b]))
    res = M.delong_test(y, a, b)
    assert res.auc_a == pytest.approx(roc_auc_score(y, a)) and res.auc_b == pytest.approx(roc_auc_score(y, b))
    assert [res.auc_a, res.auc_b] == pytest.approx(slow_auc.tolist())
    var = slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1]
    assert res.se**2 == pytest.approx(var, rel=1e-10)
    assert M.delong_ci(y, a).se ** 2 == pytest.approx(slow_cov[0, 0], rel=1e-10)
    assert res.ci_low < res.difference < res.ci_high


def test_delong_identical_and_clearly_different_scores():
    y, s = _binary_data(200, seed=11)
    same = M.delong_test(y, s, s.copy())
    assert same.difference == 0 and same.p_value == 1.0 and same.z == 0
    noise = np.random.default_rng(12).normal(size=200)
    better = M.delong_test(y, 3 * y + noise, noise)
    assert better.difference > 0.3 and better.p_value < 1e-6


def test_delong_se_agrees_with_bootstrap_se():
    y, s = _binary_data(400, seed=13)
    boot = M.bootstrap_ci(M.auroc, y, s, n_boot=400, seed=0)
    assert M.delong_ci(y, s).se == pytest.approx(boot.se, rel=0.2)


def test_delong_needs_two_cases_per_class():
    with pytest.raises(UndefinedMetricError, match="at least 2 positive"):
        M.delong_test([1, 0, 0], [0.9, 0.1, 0.2], [0.5, 0.4, 0.3])


def test_aggregate_by_group():
    y = np.array([0, 1, 0, 0, 0])
    s = np.array([0.2, 0.8, 0.1, 0.3, 0.5])
    g = np.array(["pat-b", "pat-b", "pat-a", "pat-a", "pat-c"])
    yt, ys, keys = M.aggregate_by_group(y, s, g, how="mean")
    assert keys.tolist() == ["pat-a", "pat-b", "pat-c"]
    assert yt.tolist() == [0, 1, 0] and ys == pytest.approx([0.2, 0.5, 0.5])
    assert M.aggregate_by_group(y, s, g, how="max")[1] == pytest.approx([0.3, 0.8, 0.5])


# ----------------------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------------------


def test_reliability_curve_matches_sklearn_with_counts():
    rng = np.random.default_rng(14)
    p = rng.beta(2, 5, 500)
    y = (rng.random(500) < p).astype(int)
    for strategy in ("uniform", "quantile"):
        curve = M.reliability_curve(y, p, n_bins=8, strategy=strategy)
        ref_true, ref_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
        assert np.allclose(curve.prob_true, ref_true) and np.allclose(curve.prob_pred, ref_pred)
        assert curve.counts.sum() == 500
    curve = M.reliability_curve(y, p, n_bins=8)
    manual = np.histogram(p, bins=np.linspace(0, 1, 9))[0]
    assert curve.counts.tolist() == manual[manual > 0].tolist()


def test_ece_exact_on_binned_example_and_near_zero_when_calibrated():
    # 4 cases predicted 0.05 (1 positive) and 6 predicted 0.95 (3 positives):
    # ECE = 4/10 * |0.25 - 0.05| + 6/10 * |0.5 - 0.95| = 0.08 + 0.27 = 0.35
    p = np.array([0.05] * 4 + [0.95] * 6)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    assert M.expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.35)
    # overconfident model: says 0.9 / 0.1, truth is 0.6 / 0.4 -> every bin off by 0.3
    y2 = np.array([1] * 6 + [0] * 4 + [1] * 4 + [0] * 6)
    p2 = np.array([0.9] * 10 + [0.1] * 10)
    assert M.expected_calibration_error(y2, p2) == pytest.approx(0.3)
    rng = np.random.default_rng(15)
    p3 = rng.random(20000)
    y3 = (rng.random(20000) < p3).astype(int)
    assert M.expected_calibration_error(y3, p3) < 0.02
    assert M.brier_score(y3, p3) == pytest.approx(brier_score_loss(y3, p3))
    with pytest.raises(MetricInputError, match=r"\[0, 1\]"):
        M.expected_calibration_error([0, 1], [-2.0, 3.0])


# ----------------------------------------------------------------------------------------------------------------------
# Operating points
# ----------------------------------------------------------------------------------------------------------------------


def _brute_force_operating_points(y, s):
    out = []
    for t in np.unique(s):
        pred = s >= t
        out.append((t, pred[y == 1].mean(), (~pred[y == 0]).mean()))
    return out


def test_threshold_for_matches_brute_force():
    y, s = _binary_data(120, seed=16, ties=True)
    points = _brute_force_operating_points(y, s)
    t = M.threshold_for(y, s)
    best = max(se + sp for _, se, sp in points)
    se, sp = M.sensitivity_specificity(y, s, t)
    assert se + sp == pytest.approx(best)

    t90 = M.threshold_for(y, s, sensitivity=0.9)
    assert M.sensitivity(y, s, t90) >= 0.9
    assert M.specificity(y, s, t90) == pytest.approx(max(sp for _, se, sp in points if se >= 0.9))

    t_spec = M.threshold_for(y, s, specificity=0.8)
    assert M.specificity(y, s, t_spec) >= 0.8
    assert M.sensitivity(y, s, t_spec) == pytest.approx(max(se for _, se, sp in points if sp >= 0.8))
    with pytest.raises(MetricInputError, match="not both"):
        M.threshold_for(y, s, sensitivity=0.9, specificity=0.9)
    with pytest.raises(MetricInputError, match="method must be"):
        M.threshold_for(y, s, method="f1")
    t_corner = M.threshold_for(y, s, method="closest")
    best_corner = min((1 - se) ** 2 + (1 - sp) ** 2 for _, se, sp in points)
    se, sp = M.sensitivity_specificity(y, s, t_corner)
    assert (1 - se) ** 2 + (1 - sp) ** 2 == pytest.approx(best_corner)


def test_sensitivity_specificity_by_hand_and_with_ci():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.3, 0.7, 0.2, 0.1, 0.1, 0.6])
    # at 0.5: positives called 0.9, 0.8 -> 2/4; negatives called 0.7, 0.6 -> 3/5 correctly negative
    assert M.sensitivity_specificity(y, s, 0.5) == pytest.approx((0.5, 0.6))
    y_big, s_big = _binary_data(300, seed=17)
    est = M.bootstrap_ci(partial(M.sensitivity, threshold=0.5), y_big, s_big, n_boot=200)
    assert est.ci_low <= est.value <= est.ci_high
    with pytest.raises(UndefinedMetricError, match="no positive"):
        M.sensitivity(np.zeros(4, int), np.arange(4.0), 1.0)


def test_summarize_binary():
    rng = np.random.default_rng(18)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    out = M.summarize_binary(y, p, threshold=0.5, n_boot=100)
    assert set(out) == {"auroc", "auprc", "ece", "brier", "sensitivity", "specificity"}
    assert out["auroc"].value == pytest.approx(roc_auc_score(y, p))
    assert out["brier"].value == pytest.approx(brier_score_loss(y, p))
    assert out["sensitivity"].value == pytest.approx(M.sensitivity(y, p, 0.5))
    assert all(e.ci_low <= e.value <= e.ci_high and e.n_boot_used == 100 for e in out.values())
    no_thr = M.summarize_binary(y, p, groups=np.arange(200) // 4, n_boot=50)
    assert "sensitivity" not in no_thr and no_thr["auroc"].resampling == "group"
    with pytest.raises(MetricInputError, match="sigmoid"):
        M.summarize_binary(y, p * 5, n_boot=10)
    assert set(M.summarize_binary(y, p * 5, n_boot=10, calibration=False)) == {"auroc", "auprc"}


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------------------


def test_brats_regions_2021_vs_2023():
    rng = np.random.default_rng(19)
    lab = rng.choice([0, 1, 2, 3], size=(6, 7, 8))  # a BraTS 2023 label map (3 = enhancing tumour)
    n1, n2, n3 = ((lab == k).sum() for k in (1, 2, 3))
    m23 = M.region_masks(lab, BRATS_2023_REGIONS)
    assert [m.sum() for m in m23] == [n1 + n3, n1 + n2 + n3, n3]  # TC, WT, ET
    m21 = M.region_masks(lab, BRATS_2021_REGIONS)
    assert [m.sum() for m in m21] == [n1, n1 + n2, 0]


def test_dice_per_region_known_values_and_against_formula():
    lab = np.zeros((10, 10, 10), int)
    lab[2:6, 2:6, 2:6] = 2
    lab[3:5, 3:5, 3:5] = 4  # ET inside WT
    pred = np.roll(lab, 1, axis=0)
    d = M.dice_per_region(pred, lab)
    # WT: two 4x4x4 cubes shifted by one voxel overlap in 3x4x4: 2 * 48 / 128
    assert d["WT"] == pytest.approx(0.75)
    # ET: 2x2x2 cubes shifted by one overlap in 1x2x2: 2 * 4 / 16
    assert d["ET"] == pytest.approx(0.5) and d["TC"] == pytest.approx(0.5)
    rng = np.random.default_rng(20)
    a, b = rng.choice([0, 1, 2, 4], size=(2, 9, 9, 9))
    for name, val in M.dice_per_region(a, b).items():
        ra, rb = np.isin(a, BRATS_2021_REGIONS[name]), np.isin(b, BRATS_2021_REGIONS[name])
        assert val == pytest.approx(2 * (ra & rb).sum() / (ra.sum() + rb.sum()))


def test_hd95_in_mm_with_anisotropic_spacing():
    lab = np.zeros((8, 8, 12), int)
    pred = np.zeros_like(lab)
    lab[2, 2, 6] = 4
    pred[2, 2, 2] = 4
    hd = M.hd95_per_region(pred, lab, spacing=(1.0, 1.0, 2.5))
    assert hd["ET"] == pytest.approx(4 * 2.5)
    cube = np.zeros((12, 12, 12), int)
    cube[3:8, 3:8, 3:8] = 2
    shifted = np.roll(cube, 2, axis=1)
    assert M.hd95_per_region(shifted, cube, spacing=(0.5, 3.0, 1.0))["WT"] == pytest.approx(6.0)
    with pytest.raises(MetricInputError, match="spacing"):
        M.hd95_per_region(shifted, cube, spacing=(1.0, 1.0))


def test_empty_region_conventions():
    shape, spacing = (6, 8, 10), (1.0, 2.0, 3.0)
    diagonal = math.sqrt(6**2 + 16**2 + 30**2)
    empty = np.zeros(shape, int)
    tumour = np.zeros(shape, int)
    tumour[2:4, 2:4, 2:4] = 2  # oedema only: WT present, TC and ET absent
    d = M.dice_per_region(tumour, empty)
    assert d == {"TC": 1.0, "WT": 0.0, "ET": 1.0}  # both empty -> 1, one empty -> 0
    assert M.dice_per_region(empty, tumour)["WT"] == 0.0
    hd = M.hd95_per_region(empty, tumour, spacing=spacing)
    assert hd["TC"] == 0.0 and hd["ET"] == 0.0
    assert hd["WT"] == pytest.approx(diagonal)
    assert M.hd95_per_region(tumour, empty, spacing=spacing, one_empty=373.13)["WT"] == 373.13
    assert math.isnan(M.dice_per_region(empty, empty, both_empty=float("nan"))["ET"])


def test_segmentation_input_errors_name_the_case():
    with pytest.raises(MetricInputError, match=r"cas-1.*label\[0\]"):
        M.dice_per_region(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)), case="cas-1")
    with pytest.raises(MetricInputError, match="case 1: pred has shape"):
        M.segmentation_metrics([np.zeros((4, 4)), np.zeros((4, 4))], [np.zeros((4, 4)), np.zeros((5, 4))], hd95=False)


def test_summarize_segmentation_bootstraps_over_cases():
    rng = np.random.default_rng(21)
    labels, preds = [], []
    for _ in range(6):
        lab = np.zeros((12, 12, 12), int)
        lo = rng.integers(2, 5)
        lab[lo : lo + 5, 3:8, 3:8] = 2
        lab[lo + 1 : lo + 3, 4:6, 4:6] = 4
        labels.append(lab)
        preds.append(np.roll(lab, int(rng.integers(0, 3)), axis=2))
    per_case = M.segmentation_metrics(preds, labels)
    assert per_case["dice_WT"].shape == (6,)
    out = M.summarize_segmentation(preds, labels, n_boot=200, seed=0)
    assert set(out) == {f"{m}_{r}" for m in ("dice", "hd95") for r in ("TC", "WT", "ET")}
    assert out["dice_WT"].value == pytest.approx(per_case["dice_WT"].mean())
    assert out["dice_WT"].ci_low <= out["dice_WT"].value <= out["dice_WT"].ci_high
    assert out["hd95_ET"].value == pytest.approx(per_case["hd95_ET"].mean())
