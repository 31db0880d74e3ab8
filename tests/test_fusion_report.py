"""The fusion report: results/pairwise tables equal the metric functions on the predictions; checks; report.md."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pandas as pd
import pytest

from medssl.eval.metrics import (
    aggregate_by_group,
    auroc,
    bootstrap_ci,
    delong_test,
    expected_calibration_error,
    sensitivity,
    specificity,
    summarize_binary,
)
from medssl.eval.report import (
    PAIRWISE_COLUMNS,
    RESULT_COLUMNS,
    ReportError,
    check_predictions,
    compare_classification,
    compare_segmentation,
    holm_adjust,
    read_predictions,
    summarize_classification,
    summarize_segmentation_cases,
    write_fusion_report,
)

N_BOOT = 60


def _predictions(seed: int = 0, n_patients: int = 60) -> pd.DataFrame:
    """Three strategies on the same cases: 'strong' separates, 'weak' barely, 'noise' not at all.

    Patients have one or two cases (a second exam), folds are by patient, thresholds per fold.
    """
    rng = np.random.default_rng(seed)
    rows = []
    case = 0
    for p in range(n_patients):
        fold = p % 3
        label = int(rng.random() < 0.4)
        for _ in range(1 + (p % 4 == 0)):
            for name, signal in (("strong", 0.6), ("weak", 0.3), ("noise", 0.0)):
                prob = float(np.clip(signal * label + (1 - signal) * rng.random(), 0, 1))
                rows.append(
                    {
                        "case_key": f"cas-{case:04d}",
                        "patient_key": f"pat-{p:04d}",
                        "fold": fold,
                        "strategy": name,
                        "probability": prob,
                        "label": label,
                        "threshold": 0.4 + 0.05 * fold,
                    }
                )
            case += 1
    return pd.DataFrame(rows)


def _one(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["strategy"] == name].sort_values("case_key").reset_index(drop=True)


def test_results_equal_the_metric_functions():
    frame = _predictions()
    results = summarize_classification(frame, n_boot=N_BOOT, seed=3)
    assert tuple(results.columns) == RESULT_COLUMNS
    assert set(results["metric"]) == {"auroc", "auprc", "sensitivity", "specificity", "ece", "brier"}
    for name in ("strong", "noise"):
        rows = _one(frame, name)
        y, p, g = rows["label"].to_numpy(), rows["probability"].to_numpy(), rows["patient_key"].to_numpy()
        expected = summarize_binary(y, p, groups=g, n_boot=N_BOOT, seed=3)
        decisions = (p >= rows["threshold"].to_numpy()).astype(float)
        expected["sensitivity"] = bootstrap_ci(partial(sensitivity, threshold=0.5), y, decisions, g, N_BOOT, seed=3)
        expected["specificity"] = bootstrap_ci(partial(specificity, threshold=0.5), y, decisions, g, N_BOOT, seed=3)
        got = results[results["strategy"] == name].set_index("metric")
        for metric, est in expected.items():
            assert got.loc[metric, "value"] == pytest.approx(est.value)
            assert got.loc[metric, "ci_low"] == pytest.approx(est.ci_low)
            assert got.loc[metric, "ci_high"] == pytest.approx(est.ci_high)
            assert got.loc[metric, "n_cases"] == len(rows)
        # per-fold values: the metric on each fold's rows alone
        folds = [float(v) for v in got.loc["auroc", "fold_values"].split(";")]
        for fold, value in enumerate(folds):
            part = rows[rows["fold"] == fold]
            assert value == pytest.approx(auroc(part["label"], part["probability"]), abs=1e-5)
        assert got.loc["auroc", "fold_mean"] == pytest.approx(np.mean(folds), abs=1e-5)
        # the sensitivity uses each fold's own threshold, not one threshold for all
        assert got.loc["sensitivity", "value"] == pytest.approx(decisions[y == 1].mean())
    by = results.set_index(["strategy", "metric"])["value"]
    assert by[("strong", "auroc")] > 0.9 and by[("strong", "auroc")] > by[("weak", "auroc")]
    assert abs(by[("noise", "auroc")] - 0.5) < 0.2
    ece = expected_calibration_error(_one(frame, "weak")["label"], _one(frame, "weak")["probability"])
    assert by[("weak", "ece")] == pytest.approx(ece)


def test_no_threshold_no_sensitivity():
    frame = _predictions().drop(columns=["threshold"])
    results = summarize_classification(frame, n_boot=20)
    assert "sensitivity" not in set(results["metric"]) and "auroc" in set(results["metric"])


def test_pairwise_delong_on_patient_means():
    frame = _predictions()
    pairs = compare_classification(frame, n_boot=N_BOOT, seed=1)
    assert tuple(pairs.columns) == PAIRWISE_COLUMNS
    assert len(pairs) == 3 and set(zip(pairs["strategy_a"], pairs["strategy_b"])) == {
        ("strong", "weak"),
        ("strong", "noise"),
        ("weak", "noise"),
    }
    row = pairs[(pairs["strategy_a"] == "strong") & (pairs["strategy_b"] == "noise")].iloc[0]
    a, b = _one(frame, "strong"), _one(frame, "noise")
    y, pa, _ = aggregate_by_group(a["label"], a["probability"], a["patient_key"])
    _, pb, _ = aggregate_by_group(b["label"], b["probability"], b["patient_key"])
    expected = delong_test(y, pa, pb)
    assert row["p_value"] == pytest.approx(expected.p_value)
    assert row["difference"] == pytest.approx(expected.difference)
    assert row["n_patients"] == frame["patient_key"].nunique() < len(a)  # aggregated: fewer rows than cases
    assert row["p_value"] < 0.01 and row["ci_low"] > 0 and row["boot_ci_low"] > 0
    assert (pairs["p_holm"] >= pairs["p_value"] - 1e-12).all()


def test_holm_adjust():
    p = [0.01, 0.04, 0.03, np.nan, 0.5]
    adjusted = holm_adjust(p)
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, 0.09, max(0.09, 0.08), 0.5
    assert adjusted[0] == pytest.approx(0.04)
    assert adjusted[2] == pytest.approx(0.09)
    assert adjusted[1] == pytest.approx(0.09)
    assert adjusted[4] == pytest.approx(0.5)
    assert np.isnan(adjusted[3])


def test_checks_refuse_unfair_tables():
    frame = _predictions()
    assert check_predictions(frame) == ["strong", "weak", "noise"]
    with pytest.raises(ReportError, match="different cases"):
        check_predictions(frame.drop(index=frame.index[(frame["strategy"] == "weak")][:1]))
    moved = frame.copy()
    moved.loc[(moved["strategy"] == "weak") & (moved["case_key"] == "cas-0001"), "fold"] = 2
    with pytest.raises(ReportError, match="different folds"):
        check_predictions(moved)
    leaky = frame.copy()
    leaky.loc[leaky["case_key"] == "cas-0001", "fold"] = 2  # patient 0 has cases 0 and 1
    with pytest.raises(ReportError, match="several folds"):
        check_predictions(leaky)
    bad = frame.copy()
    bad.loc[0, "probability"] = np.nan
    with pytest.raises(ReportError, match="finite"):
        check_predictions(bad)
    with pytest.raises(ReportError, match="lack the columns"):
        check_predictions(frame.drop(columns=["patient_key"]))


def test_write_report_and_read_back(tmp_path):
    frame = _predictions()
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    models = pd.DataFrame([{"strategy": s, "parameters": 1234567, "flops": 8.9e9, "width": 0.5} for s in ("strong",)])
    files = write_fusion_report(
        tmp_path,
        read_predictions(tmp_path / "predictions.csv"),
        n_boot=N_BOOT,
        command="medssl compare-fusion x",
        models=models,
    )
    text = (tmp_path / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"roc.png", "reliability.png", "metrics.png"} <= set(images)
    for name in images:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    results = pd.read_csv(files["results"])
    strong = results[(results["strategy"] == "strong") & (results["metric"] == "auroc")].iloc[0]
    assert f"{strong['value']:.3f} ({strong['ci_low']:.3f}-{strong['ci_high']:.3f})" in text
    assert "medssl compare-fusion x" in text and "1.23M" in text
    assert "pat-" not in text and "cas-" not in text  # keys stay in the CSV files


def test_segmentation_tables(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for case in range(24):
        for name, quality in (("early", 0.8), ("single:T1C", 0.5)):
            rows.append(
                {
                    "case_key": f"cas-{case}",
                    "patient_key": f"pat-{case}",
                    "fold": case % 2,
                    "strategy": name,
                    "dice_WT": float(np.clip(quality + 0.1 * rng.normal(), 0, 1)),
                    "hd95_WT": float(20 * (1 - quality) + rng.random()),
                }
            )
    frame = pd.DataFrame(rows)
    results = summarize_segmentation_cases(frame, n_boot=N_BOOT)
    early = frame[frame["strategy"] == "early"]
    row = results[(results["strategy"] == "early") & (results["metric"] == "dice_WT")].iloc[0]
    assert row["value"] == pytest.approx(early["dice_WT"].mean())
    pairs = compare_segmentation(frame, n_boot=N_BOOT)
    dice = pairs[pairs["metric"] == "dice_WT"].iloc[0]
    assert dice["difference"] > 0.2 and dice["p_value"] < 0.001 and dice["test"] == "wilcoxon"
    files = write_fusion_report(tmp_path, frame, "segmentation", n_boot=N_BOOT)
    assert files["dice.png"].is_file() and "![" in files["report"].read_text()
