"""Training on weak labels: the noise-aware loss, weak labels on datalist items, and the weak-vs-gold comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.weak import probs_from_chexpert
from medssl.weak.training import (
    NoiseAwareBCELoss,
    WeakTrainingError,
    attach_weak_labels,
    evaluate_multilabel,
    weak_label_targets,
    write_weak_datalist,
)

SALT = "weak-training-test-salt"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------------- loss
def test_loss_with_hard_targets_is_bce():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    hard = (torch.rand(6, 4) > 0.5).float()
    loss = NoiseAwareBCELoss()
    expected = F.binary_cross_entropy_with_logits(logits, hard)
    assert torch.allclose(loss(logits, hard), expected, atol=1e-7)
    # The same through the label-model path: one-hot probabilities of hard CheXpert labels, any policy.
    for policy in ("ones", "zeros", "ignore"):
        targets, weights = weak_label_targets(probs_from_chexpert(hard.numpy()), policy)
        assert np.all(weights == 1)
        got = loss(logits, torch.as_tensor(targets), torch.as_tensor(weights))
        assert torch.allclose(got, expected, atol=1e-7)
    # MONAI's loss_function(pred, targets) form
    assert torch.allclose(loss(logits, {"target": hard, "weight": torch.ones_like(hard)}), expected, atol=1e-7)


def test_masked_elements_contribute_no_loss_and_no_gradient():
    torch.manual_seed(1)
    logits = torch.randn(5, 3, requires_grad=True)
    targets = torch.rand(5, 3)
    weights = torch.ones(5, 3)
    weights[1, :] = 0.0  # an image without a report
    weights[:, 2] = 0.0  # an observation ignored everywhere
    targets[weights == 0] = float("nan")  # no label there at all
    value = NoiseAwareBCELoss()(logits, targets, weights)
    value.backward()
    assert torch.isfinite(value)
    assert torch.all(logits.grad[weights == 0] == 0)
    assert torch.all(logits.grad[weights > 0] != 0)
    keep = weights > 0
    expected = F.binary_cross_entropy_with_logits(logits.detach()[keep], targets[keep])
    assert torch.allclose(value.detach(), expected, atol=1e-6)


def test_soft_target_loss_is_the_expected_loss_over_the_label_distribution():
    torch.manual_seed(2)
    logits = torch.randn(8, 5)
    q = torch.rand(8, 5)
    loss = NoiseAwareBCELoss(reduction="none")
    expected = q * loss(logits, torch.ones_like(q)) + (1 - q) * loss(logits, torch.zeros_like(q))
    assert torch.allclose(loss(logits, q), expected, atol=1e-6)
    # Weighted mean: weights scale the elements and the normaliser.
    w = torch.rand(8, 5)
    mean = NoiseAwareBCELoss()(logits, q, w)
    assert torch.allclose(mean, (expected * w).sum() / w.sum(), atol=1e-6)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(WeakTrainingError, match="targets of shape"):
        NoiseAwareBCELoss()(torch.zeros(2, 3), torch.zeros(2, 4))


# ------------------------------------------------------------------------------------- targets reduce to the policies
def test_weak_targets_reduce_to_the_layout_policies():
    """Hard CheXpert labels through attach_weak_labels give exactly the layouts' U-Ones / U-Zeros / U-Ignore fields."""
    from medssl.data.layouts.chexpert import label_fields

    rng = np.random.default_rng(0)
    codes = rng.choice([1.0, 0.0, -1.0, np.nan], size=(12, len(CHEXPERT_OBSERVATIONS)))
    table = pd.DataFrame(codes, columns=list(CHEXPERT_OBSERVATIONS))
    table.insert(0, "study_key", [f"stu-{i}" for i in range(12)])
    items = [{"case_key": f"c{i}", "patient_key": f"p{i}", "study_key": f"stu-{i}"} for i in range(12)]
    for policy in ("ones", "zeros", "ignore"):
        for blank in ("zeros", "ignore"):
            weak = attach_weak_labels(items, table, policy=policy, blank=blank)
            for item, row in zip(weak, codes):
                layout = label_fields(dict(zip(CHEXPERT_OBSERVATIONS, row)), policy, blank)
                assert item["label"] == layout["label"], (policy, blank)
                assert item["label_mask"] == layout["label_mask"], (policy, blank)
    # Soft probabilities: an uncertain mass counts as positive under U-Ones, negative under U-Zeros.
    probs = np.array([[[0.2, 0.5, 0.3]]])
    assert weak_label_targets(probs, "ones")[0][0, 0] == pytest.approx(0.8)
    assert weak_label_targets(probs, "zeros")[0][0, 0] == pytest.approx(0.5)
    target, weight = weak_label_targets(probs, "ignore")
    assert (target[0, 0], weight[0, 0]) == (pytest.approx(0.5 / 0.7), pytest.approx(0.7))


# --------------------------------------------------------------------------------------------- attach_weak_labels
@pytest.fixture(scope="module")
def labelled_cxr(tmp_path_factory):
    """A small synthetic MIMIC-CXR-JPG folder, one report removed, and labels.csv of `medssl label-reports`."""
    from medssl.cli.main import main
    from medssl.data.synth.cxr import generate

    root = tmp_path_factory.mktemp("cxr") / "mimic"
    generate(root, 8, seed=3, size=24, lateral=0.3)
    reports = sorted((root / "files").rglob("s*.txt"))
    missing = reports[0]
    missing.unlink()
    out = root.parent / "weak" / "labels.csv"
    assert main(["label-reports", str(root), "--out", str(out), "--model", "majority"]) == 0
    return {"root": root, "labels": out, "missing_study": missing.stem}


def test_attach_joins_on_the_study_key_and_masks_studies_without_report(labelled_cxr):
    from medssl.data.layouts.mimic_cxr import mimic_cxr_items

    items, _ = mimic_cxr_items(labelled_cxr["root"], salt=SALT, policy="ones")
    labels = pd.read_csv(labelled_cxr["labels"])
    before = json.dumps(items, sort_keys=True)
    weak = attach_weak_labels(items, labelled_cxr["labels"], policy="ones", blank="zeros", salt=SALT)
    assert json.dumps(items, sort_keys=True) == before  # the input is not modified
    assert len(weak) == len(items)
    by_study = labels.set_index("study_id")
    n_masked = 0
    for item in weak:
        study = Path(item["image"]).parent.name  # sNNNNNNNN
        assert item["gold_label"] == next(i for i in items if i["case_key"] == item["case_key"])["label"]
        if study == labelled_cxr["missing_study"]:
            n_masked += 1
            assert item["weak_labelled"] is False
            assert item["label_mask"] == [0.0] * 14
            continue
        row = by_study.loc[int(study[1:])]
        assert item["weak_labelled"] is True
        for j, observation in enumerate(CHEXPERT_OBSERVATIONS):
            p_pos, p_unc = row[f"{observation}_p_pos"], row[f"{observation}_p_unc"]
            expected = 0.0 if math.isnan(p_pos) else p_pos + p_unc  # U-Ones; not mentioned -> absent
            assert item["label"][j] == pytest.approx(expected, abs=1e-6), (study, observation)
            assert item["label_mask"][j] == 1.0
        assert item["cardiomegaly"] == item["label"][CHEXPERT_OBSERVATIONS.index("Cardiomegaly")]
    assert n_masked >= 1
    # Two images of one study get the same labels.
    by_key: dict[str, list] = {}
    for item in weak:
        by_key.setdefault(item["study_key"], []).append(item["label"])
    assert any(len(v) > 1 for v in by_key.values())
    assert all(all(v == vs[0] for v in vs) for vs in by_key.values())


def test_attach_refuses_a_join_that_matches_nothing(labelled_cxr):
    from medssl.data.layouts.mimic_cxr import mimic_cxr_items

    items, _ = mimic_cxr_items(labelled_cxr["root"], salt=SALT)
    with pytest.raises(WeakTrainingError, match="salt"):
        attach_weak_labels(items, labelled_cxr["labels"], salt="another-salt")
    with pytest.raises(WeakTrainingError, match="policy"):
        attach_weak_labels(items, labelled_cxr["labels"], policy="u-twos", salt=SALT)


def test_write_weak_datalist_keeps_gold_test_labels_and_paths(labelled_cxr, tmp_path):
    from medssl.data.datalist import read_datalist
    from medssl.data.layouts.mimic_cxr import mimic_cxr_datalist

    source, _ = mimic_cxr_datalist(
        labelled_cxr["root"],
        tmp_path / "lists" / "mimic.json",
        relative=True,
        salt=SALT,
        resplit=True,
        val_fraction=0.2,
        test_fraction=0.25,
    )
    out = write_weak_datalist(source, labelled_cxr["labels"], tmp_path / "weak" / "weak.json", salt=SALT)
    original, weak = read_datalist(source), read_datalist(out)
    assert weak["label_source"]["kind"] == "weak" and weak["label_source"]["splits"] == ["training", "validation"]
    assert weak["test"] == original["test"] or all(
        w["label"] == o["label"] for w, o in zip(weak["test"], original["test"])
    )
    assert all("weak_labelled" in item for item in weak["training"])
    assert all("weak_labelled" not in item for item in weak["test"])
    for item in weak["training"] + weak["test"]:  # relative paths rebased on the new folder
        assert not Path(item["image"]).is_absolute() and (out.parent / item["image"]).is_file()
        assert (out.parent / item["report"]).is_file()


# --------------------------------------------------------------------------------------------------- evaluation
def test_evaluation_reports_rare_observations_and_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 60
    gold = np.zeros((n, 3))
    gold[:20, 0] = 1
    gold[:2, 1] = 1  # too rare
    gold[::3, 2] = 1
    gold[5, 2] = np.nan  # unknown: left out
    scores = np.clip(gold * 0.4 + rng.random((n, 3)) * 0.6, 0, 1)
    scores[5, 2] = 0.99
    groups = [f"p{i // 2}" for i in range(n)]
    frame = evaluate_multilabel(gold, scores, groups, ["A", "B", "C"], min_positives=5, n_boot=100).set_index(
        "observation"
    )
    assert frame.loc["B", "status"].startswith("too rare in the test set: 2 positives")
    assert math.isnan(frame.loc["B", "auroc"])
    known = ~np.isnan(gold[:, 2])
    assert frame.loc["A", "auroc"] == pytest.approx(roc_auc_score(gold[:, 0], scores[:, 0]))
    assert frame.loc["C", "auroc"] == pytest.approx(roc_auc_score(gold[known, 2], scores[known, 2]))
    assert frame.loc["macro", "auroc"] == pytest.approx((frame.loc["A", "auroc"] + frame.loc["C", "auroc"]) / 2)
    assert frame.loc["macro", "status"] == "ok: mean over 2 of 3 observations"
    assert frame.loc["A", "ci_low"] < frame.loc["A", "auroc"] < frame.loc["A", "ci_high"]
    assert frame.loc["A", "n_patients"] == 30


# ------------------------------------------------------------------------------------------ learning, end to end
@pytest.fixture(scope="module")
def synthetic_cxr(tmp_path_factory):
    from medssl.data.synth.cxr import generate

    root = tmp_path_factory.mktemp("learn") / "mimic"
    generate(root, 100, seed=0, size=32, lateral=0.0)
    return root


def test_weak_label_classifier_learns_what_the_images_show(synthetic_cxr, tmp_path, monkeypatch):
    """Through the CLI: weak labels from the reports train a classifier scored on the images' ground truth."""
    from medssl.cli.main import main

    monkeypatch.setenv("MEDSSL_SALT", SALT)
    out = tmp_path / "run"
    code = main(
        [
            "weak-train", str(synthetic_cxr), "--out", str(out), "--models", "weak",
            "--observations", "Cardiomegaly,Pleural Effusion", "--image-size", "32", "--epochs", "20",
            "--batch-size", "16", "--test-fraction", "0.4", "--n-boot", "200", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    results = pd.read_csv(out / "results.csv").set_index("observation")
    for observation in ("Cardiomegaly", "Pleural Effusion"):
        assert results.loc[observation, "status"] == "ok"
        assert results.loc[observation, "auroc"] > 0.7, results
    assert results.loc["macro", "ci_low"] > 0.6
    # The weak labels themselves agree with what the images show (the reports were written from the same findings).
    quality = pd.read_csv(out / "weak_label_quality.csv").set_index("observation")
    assert (quality["auroc_vs_gold"] > 0.9).all()
    # The split is saved, by patient, and the outputs hold salted keys only.
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits["splits"]) == {"training", "test"}
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions.case_key) == set(splits["splits"]["test"])
    train_patients = set(pd.read_csv(synthetic_cxr / "mimic-cxr-2.0.0-split.csv").subject_id.astype(str))
    for name in ("results.csv", "predictions.csv", "weak_labels.csv", "report.md", "splits.json", "config.json"):
        text = (out / name).read_text()
        assert not any(subject in text for subject in train_patients), name
    report = (out / "report.md").read_text()
    assert "Cardiomegaly" in report and "patient-level bootstrap" in report


def test_full_comparison_weak_beats_gold_subset(synthetic_cxr, tmp_path, monkeypatch):
    """Every model, pretraining included; weak labels on every image beat gold labels on 10% of the patients."""
    from medssl.weak.training import run_weak_comparison

    monkeypatch.setenv("MEDSSL_SALT", SALT)
    result = run_weak_comparison(
        source=str(synthetic_cxr),
        out=str(tmp_path / "full"),
        observations=["Cardiomegaly", "Pleural Effusion", "Atelectasis", "Edema", "Pneumothorax"],
        models=["weak", "weak-hard", "gold-subset", "gold-all", "pretrained-weak"],
        image_size=32,
        epochs=20,
        batch_size=16,
        test_fraction=0.4,
        pretrain_steps=30,
        n_boot=200,
        threads=1,
    )
    frame = result.results.set_index(["model", "observation"])
    assert set(frame.index.get_level_values("model")) == {
        "weak",
        "weak-hard",
        "gold-subset",
        "gold-all",
        "pretrained-weak",
    }
    assert (result.results[result.results.observation == "Pneumothorax"].status.str.startswith("too rare")).all()
    macro = frame.xs("macro", level="observation")["auroc"]
    assert macro["weak"] > macro["gold-subset"] + 0.05
    assert macro["pretrained-weak"] > 0.65
    assert Path(result.files["figure"]).is_file()
    assert (tmp_path / "full" / "pretrain" / "encoders" / "image.json").is_file()
    diff = result.differences.set_index(["comparison", "observation"])
    assert ("weak - gold-subset", "macro") in diff.index
