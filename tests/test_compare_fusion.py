"""medssl compare-fusion: folds never split a patient, the test fold never reaches model selection, outputs agree
with the metric functions; tiny end-to-end runs on synthetic mammography and BraTS; the engine pieces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.engines import supervised as engine
from medssl.eval import compare
from medssl.eval.metrics import auroc, summarize_binary
from medssl.eval.report import PREDICTION_COLUMNS, RESULT_COLUMNS

TINY = dict(backbone="resnet10", width=0.125, epochs=1, batch_size=8, folds=2, n_boot=50, progress=False, threads=1)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread: on a shared 2-core machine several threads per process slow these tiny models down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record_selection(patch: pytest.MonkeyPatch) -> dict[str, list[set[str]]]:
    """Wrap the two functions that choose anything (epoch, threshold) to record the cases they see."""
    seen: dict[str, list[set[str]]] = {"epoch": [], "threshold": []}
    original_score, original_point = engine.selection_score, compare.select_operating_point

    def score(predictions, *args, **kwargs):
        seen["epoch"].append(set(predictions.case_keys))
        return original_score(predictions, *args, **kwargs)

    def point(case_keys, *args, **kwargs):
        seen["threshold"].append(set(case_keys))
        return original_point(case_keys, *args, **kwargs)

    patch.setattr(engine, "selection_score", score)
    patch.setattr(compare, "select_operating_point", point)
    return seen


@pytest.fixture(scope="module")
def mammo_run(tmp_path_factory, single_thread):
    from medssl.data.synth.mammo import generate
    from medssl.transforms.mammo import LoadMammogram

    root = tmp_path_factory.mktemp("cmp_mammo")
    generate(root / "data", 17, 0, size="64x48", malignant=0.35, missing=0.15, monochrome1=0.25)
    images = sorted((root / "data" / "images").rglob("*.dicom"))
    images[0].write_bytes(b"not a DICOM file")  # one broken exam: reported and left out, the run goes on
    with pytest.MonkeyPatch.context() as patch:
        seen = _record_selection(patch)
        seen["decoded"] = []
        load = LoadMammogram.__call__

        def counting_load(self, path):
            seen["decoded"].append(str(path))
            return load(self, path)

        patch.setattr(LoadMammogram, "__call__", counting_load)
        result = compare.compare_fusion(
            source=str(root / "data"),
            out=str(root / "out"),
            strategies=["early", "joint", "late", "single:CC"],
            image_size=[32, 24],
            **TINY,
        )
    seen["n_images"] = len(images)
    seen["broken_exam"] = images[0].parent.name
    return result, seen


@pytest.fixture(scope="module")
def brats_data(tmp_path_factory) -> Path:
    """BraTS 2023 naming with follow-up time points: patients with two cases."""
    from medssl.data.synth.brats import generate

    root = tmp_path_factory.mktemp("cmp_brats")
    generate(root / "data", 14, 1, layout="2023", size=16, timepoints=0.3, no_tumour=0.4)
    return root / "data"


@pytest.fixture(scope="module")
def brats_run(brats_data, single_thread):
    """Tumour presence on BraTS through the command line, with MLflow tracking."""
    from medssl.cli.main import main

    root = brats_data.parent
    out = root / "out"
    argv = [
        "compare-fusion",
        str(brats_data),
        "--out",
        str(out),
        "--label",
        "tumour",
        "--strategies",
        "early,late,single:T1C",
        "--image-size",
        "16",
        "--folds",
        "2",
        "--epochs",
        "2",
        "--backbone",
        "resnet10",
        "--width",
        "0.125",
        "--n-boot",
        "40",
        "--no-progress",
        "--threads",
        "1",
        "--tracking",
        "mlflow",
    ]
    assert main(argv) == 0
    return out


def _splits(out: Path) -> dict:
    return json.loads((out / "splits.json").read_text())


# ------------------------------------------------------------------------------------------------- the comparison
def test_outputs_exist_with_documented_columns(mammo_run):
    result, _ = mammo_run
    out = result.out
    for name in (
        "predictions.csv",
        "results.csv",
        "pairwise.csv",
        "report.md",
        "splits.json",
        "config.json",
        "models.csv",
        "training.csv",
        "metrics.csv",
    ):
        assert (out / name).is_file(), name
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(PREDICTION_COLUMNS) <= set(predictions.columns)
    assert tuple(pd.read_csv(out / "results.csv").columns) == RESULT_COLUMNS
    assert set(predictions["strategy"]) == {"early", "joint", "late", "single:CC"}
    # keys only: no paths, study ids or names
    text = (out / "predictions.csv").read_text()
    assert "/" not in text and "SYNTH" not in text
    assert (
        predictions["case_key"].str.startswith("cas-").all() and predictions["patient_key"].str.startswith("pat-").all()
    )
    config = json.loads((out / "config.json").read_text())
    assert config["strategies"] == ["early", "joint", "late", "single:CC"] and config["command"]
    assert config["versions"]["torch"] == torch.__version__
    models = pd.read_csv(out / "models.csv").set_index("strategy")
    assert models.loc["joint", "parameters"] > models.loc["single:CC", "parameters"] > 0  # two trunks vs one
    # FLOPs of a complete exam (some exams lack a view): the CC baseline runs two of late fusion's four images
    assert models.loc["single:CC", "flops"] == pytest.approx(models.loc["late", "flops"] / 2, rel=0.02)


def test_folds_grouped_and_identical_for_every_strategy(mammo_run, brats_run):
    for out in (mammo_run[0].out, brats_run):
        predictions = pd.read_csv(out / "predictions.csv")
        splits = _splits(out)
        test_fold = {case: fold["fold"] for fold in splits["folds"] for case in fold["test"]}
        patients = splits["patients"]
        assert len(test_fold) == len(patients)  # every usable case is a test case exactly once
        for fold in splits["folds"]:
            test_patients = {patients[c] for c in fold["test"]}
            for name in ("training", "validation"):
                assert not test_patients & {patients[c] for c in fold[name]}, (out, name)
            assert not {patients[c] for c in fold["training"]} & {patients[c] for c in fold["validation"]}
        assert (predictions.groupby("patient_key")["fold"].nunique() == 1).all()
        assert (predictions["fold"] == predictions["case_key"].map(test_fold)).all()
        per_strategy = {name: sorted(zip(g["case_key"], g["fold"])) for name, g in predictions.groupby("strategy")}
        first = next(iter(per_strategy.values()))
        assert all(v == first for v in per_strategy.values())
    # BraTS 2023 follow-ups: some patient has two cases, and both went to the same fold
    predictions = pd.read_csv(brats_run / "predictions.csv")
    cases_per_patient = predictions[predictions["strategy"] == "early"].groupby("patient_key").size()
    assert cases_per_patient.max() == 2


def test_images_decoded_once_and_broken_exam_skipped(mammo_run):
    result, seen = mammo_run
    # the cache decodes every image once (the broken one fails once), for 2 folds x 4 strategies x epochs
    assert len(seen["decoded"]) == len(set(seen["decoded"])) >= seen["n_images"] - 3
    problems = pd.read_csv(result.out / "problems.csv")
    assert len(problems) == 1 and problems["action"].tolist() == ["skipped"]
    assert "DicomReadError" in problems["problem"][0] and "/" not in problems["problem"][0]
    predictions = pd.read_csv(result.out / "predictions.csv")
    assert problems["case_key"][0] not in set(predictions["case_key"])
    assert predictions["case_key"].nunique() == 16
    assert "Cases left out" in (result.out / "report.md").read_text()


def test_test_fold_never_reaches_selection(mammo_run):
    result, seen = mammo_run
    splits = _splits(result.out)
    validation = [set(f["validation"]) for f in splits["folds"]]
    tests = [set(f["test"]) for f in splits["folds"]]
    assert len(seen["epoch"]) == len(splits["folds"]) * 4 * TINY["epochs"]
    assert len(seen["threshold"]) == len(splits["folds"]) * 4
    for cases in seen["epoch"] + seen["threshold"]:
        fold = validation.index(cases)  # exactly one fold's validation split, nothing else
        assert not cases & tests[fold]
    assert set(map(frozenset, seen["threshold"])) == set(map(frozenset, validation))


def test_results_equal_metrics_on_predictions(mammo_run, brats_run):
    for out in (mammo_run[0].out, brats_run):
        predictions = pd.read_csv(out / "predictions.csv", dtype={"case_key": str, "patient_key": str})
        results = pd.read_csv(out / "results.csv")
        config = json.loads((out / "config.json").read_text())
        for name, rows in predictions.groupby("strategy"):
            rows = rows.sort_values("case_key")
            y, p = rows["label"].to_numpy(), rows["probability"].to_numpy()
            expected = summarize_binary(
                y, p, groups=rows["patient_key"].to_numpy(), n_boot=config["n_boot"], seed=config["seed"]
            )
            got = results[results["strategy"] == name].set_index("metric")
            for metric in ("auroc", "auprc", "ece", "brier"):
                assert got.loc[metric, "value"] == pytest.approx(expected[metric].value)
                assert got.loc[metric, "ci_low"] == pytest.approx(expected[metric].ci_low)
                assert got.loc[metric, "ci_high"] == pytest.approx(expected[metric].ci_high)
            decided = (p >= rows["threshold"].to_numpy()).astype(int)
            assert (decided == rows["decision"].to_numpy()).all()
            assert got.loc["sensitivity", "value"] == pytest.approx(decided[y == 1].mean())
            thresholds = rows.groupby("fold")["threshold"].nunique()
            assert (thresholds == 1).all()  # one validation-chosen threshold per fold
        assert auroc(y, p) == pytest.approx(got.loc["auroc", "value"])


def test_report_references_existing_pngs(mammo_run, brats_run):
    for out in (mammo_run[0].out, brats_run):
        text = (out / "report.md").read_text()
        images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
        assert {"roc.png", "reliability.png"} <= set(images)
        for name in images:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = pd.read_csv(out / "results.csv")
        row = table[table["metric"] == "auroc"].iloc[0]
        assert f"{row['value']:.3f} ({row['ci_low']:.3f}-{row['ci_high']:.3f})" in text


def test_tracking_and_report_rebuild(brats_run):
    from medssl.cli.main import main

    assert any((brats_run / "mlruns").rglob("meta.yaml"))  # MLflow's local file store
    curves = pd.read_csv(brats_run / "metrics.csv")
    assert {"fold0/early/train_loss", "fold1/single-T1C/val_loss"} <= set(curves["name"])
    before = pd.read_csv(brats_run / "results.csv")
    (brats_run / "results.csv").unlink()
    assert main(["compare-fusion", "--report-only", str(brats_run)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(brats_run / "results.csv"), before)


def test_config_rerun_round_trip(brats_run, tmp_path):
    import argparse

    from medssl.cli.compare_fusion import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(brats_run / "config.json"), "--out", str(tmp_path), "--epochs", "3"])
    config = config_from_args(args)
    saved = json.loads((brats_run / "config.json").read_text())
    assert config.epochs == 3 and config.out == str(tmp_path)
    assert config.strategies == saved["strategies"] == ["early", "late", "single:T1C"]
    assert config.label_key == "tumour" and config.image_size == [16]


def test_segmentation_comparison(brats_data, single_thread, tmp_path):
    result = compare.compare_fusion(
        source=str(brats_data),
        out=str(tmp_path),
        task="segmentation",
        strategies=["early", "single:FLAIR"],
        image_size=[16],
        **{**TINY, "backbone": "segresnet", "width": 0.5},
    )
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    metrics = [f"{m}_{r}" for m in ("dice", "hd95") for r in ("TC", "WT", "ET")]
    assert set(metrics) <= set(predictions.columns) and len(predictions) == 2 * 14
    assert predictions[[m for m in metrics if m.startswith("dice")]].apply(lambda c: c.between(0, 1).all()).all()
    early = predictions[predictions["strategy"] == "early"]
    row = result.results[(result.results["strategy"] == "early") & (result.results["metric"] == "dice_WT")].iloc[0]
    assert row["value"] == pytest.approx(early["dice_WT"].mean())
    assert set(result.pairwise["test"]) == {"wilcoxon"} and (tmp_path / "dice.png").is_file()
    with pytest.raises(compare.CompareConfigError, match="segmentation compares early"):
        compare.compare_fusion(
            source=str(brats_data),
            out=str(tmp_path / "x"),
            task="segmentation",
            strategies=["joint"],
            image_size=[16],
            **TINY,
        )


# -------------------------------------------------------------------------------------------------------- pieces
def test_parse_strategy():
    views = ["L-CC", "R-CC", "L-MLO", "R-MLO"]
    assert compare.parse_strategy("single:CC", views).views_used == ("L-CC", "R-CC")
    assert compare.parse_strategy("single:L", views).views_used == ("L-CC", "L-MLO")
    assert compare.parse_strategy("single:R-MLO", views).views_used == ("R-MLO",)
    assert compare.parse_strategy("single:T1C", ["T1", "T1C"]).views_used == ("T1C",)
    assert compare.parse_strategy("joint", views).kind == "joint"
    with pytest.raises(compare.CompareConfigError, match="no view"):
        compare.parse_strategy("single:T2", views)
    with pytest.raises(compare.CompareConfigError, match="unknown strategy"):
        compare.parse_strategy("middle", views)
    with pytest.raises(compare.CompareConfigError, match="operating point"):
        compare.parse_operating_point("sensitivity=1.5")


def test_loss_masks_missing_views_and_unknown_labels():
    loss = engine.FusionLoss(exam_weight=0.0, view_weight=1.0)
    logits = torch.tensor([[[2.0], [-1.0], [5.0]]])
    pred = {"logits": torch.zeros(1, 1), "view_logits": logits, "presence": torch.tensor([[1.0, 1.0, 0.0]])}
    target = {"label": torch.tensor([1.0]), "view": torch.tensor([[1.0, -1.0, 0.0]])}
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(1.0))
    assert loss(pred, target) == pytest.approx(float(expected))  # the unknown and the missing view do not count
    exam = engine.FusionLoss()(torch.tensor([[0.3], [1.0]]), {"label": torch.tensor([1.0, -1.0])})
    assert exam == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-0.3))))
    with pytest.raises(engine.SupervisedConfigError, match="view_logits"):
        loss(torch.zeros(1, 1), target)


def test_regions_round_trip():
    regions = {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
    label = torch.tensor([[[0, 1, 2], [4, 2, 0]]])
    masks = engine.region_targets(label[:, None], regions)
    assert masks.shape == (1, 3, 2, 3)
    assert (engine.regions_to_label_map(masks[0].numpy() > 0, regions) == label[0].numpy()).all()
    with pytest.raises(engine.SupervisedConfigError, match="nested"):
        engine.regions_to_label_map(masks[0].numpy() > 0, {"A": [1, 2], "B": [2, 4]})


def _toy_items(n: int, seed: int) -> list[dict]:
    """Two views; the label is whether view 'A' is bright in its upper half - learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = i % 2
        a = rng.normal(size=(1, 12, 12)).astype(np.float32)
        a[:, :6] += 1.5 * label
        b = rng.normal(size=(1, 12, 12)).astype(np.float32)
        items.append(
            {
                "A": torch.from_numpy(a),
                "B": torch.from_numpy(b),
                "presence": torch.ones(2),
                "label": label,
                "case_key": f"cas-{seed}-{i}",
                "patient_key": f"pat-{seed}-{i}",
            }
        )
    return items


def test_engine_learns_and_keeps_the_best_epoch(single_thread):
    from medssl.networks.fusion import build_fusion_model

    torch.manual_seed(0)
    model = build_fusion_model("joint", ["A", "B"], 2, backbone="resnet10", width=0.125)
    prepare = engine.FusionPrepareBatch(image_keys=["A", "B"], label_key="label")
    result = engine.train_supervised(
        model,
        _toy_items(48, 0),
        _toy_items(24, 1),
        prepare,
        engine.FusionLoss(),
        epochs=6,
        lr=3e-3,
        progress=False,
        seed=0,
    )
    scores = [h["val_score"] for h in result.history]
    assert result.selection == "val_auroc" and result.best_score == max(scores)
    tied = [h for h in result.history if h["val_score"] == max(scores)]  # ties go to the lower validation loss
    assert result.best_epoch == min(tied, key=lambda h: h["val_loss"])["epoch"]
    test = engine.predict(model, _toy_items(24, 2), prepare)
    assert test.case_keys[0] == "cas-2-0" and auroc(test.labels, test.outputs) > 0.85
    # the weights left in the model are the chosen epoch's: validation again gives its score
    again = engine.predict(model, _toy_items(24, 1), prepare, loss_function=engine.FusionLoss())
    assert engine.selection_score(again)[0] == pytest.approx(result.best_score)


def test_tied_validation_scores_keep_the_lowest_validation_loss(single_thread, monkeypatch):
    from medssl.networks.fusion import build_fusion_model

    monkeypatch.setattr(engine, "selection_score", lambda *a, **k: (1.0, "val_auroc"))  # saturated tiny split
    torch.manual_seed(0)
    model = build_fusion_model("early", ["A", "B"], 2, backbone="resnet10", width=0.125)
    prepare = engine.FusionPrepareBatch(image_keys=["A", "B"], label_key="label")
    result = engine.train_supervised(
        model, _toy_items(16, 0), _toy_items(8, 1), prepare, engine.FusionLoss(), epochs=4, lr=3e-3, progress=False
    )
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))


def test_prepare_batch_and_loss_plug_into_monai_trainer(single_thread):
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    from medssl.networks.fusion import build_fusion_model

    model = build_fusion_model("late", ["A", "B"], 2, backbone="resnet10", width=0.125)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(_toy_items(8, 0), batch_size=4),
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        loss_function=engine.FusionLoss(exam_weight=0.0, view_weight=1.0),
        prepare_batch=engine.FusionPrepareBatch(image_keys=["A", "B"]),
        decollate=False,
    )
    trainer.run()
    assert trainer.state.iteration == 2 and np.isfinite(float(trainer.state.output["loss"].detach()))


def test_a_strategy_with_signal_beats_chance(tmp_path, single_thread):
    """BraTS high grade from FLAIR (the whole lesion) at 16^3: the pooled AUROC's patient-bootstrap CI excludes 0.5
    (measured 0.78, CI 0.65-0.90 in docs/fusion_comparison.md)."""
    from medssl.data.synth.brats import generate

    generate(tmp_path / "data", 60, 0, size=32, no_tumour=0.3)
    options = dict(TINY, width=0.25, epochs=8, folds=3, n_boot=500, image_size=[16], label_key="high_grade")
    result = compare.compare_fusion(
        source=str(tmp_path / "data"), out=str(tmp_path / "out"), strategies=["single:FLAIR"], **options
    )
    row = result.results.set_index("metric").loc["auroc"]
    assert row["ci_low"] > 0.5 and row["value"] > 0.65


@pytest.mark.slow
def test_joint_fusion_beats_chance_on_synthetic_mammograms(tmp_path, single_thread):
    """Four-view synthetic mammograms, lesions enlarged for 64x48 (``lesion_scale=4``): joint fusion's pooled AUROC
    CI excludes 0.5 (measured 0.700, CI 0.623-0.764, in docs/fusion_comparison.md).

    Only this is asserted: joint fusion beating the single-view baselines did not hold with a significant DeLong test
    in any measured CPU-sized run (best: joint 0.700 vs single:CC 0.680, p 0.65), so it is not asserted.
    """
    from medssl.data.synth.mammo import generate

    generate(
        tmp_path / "data",
        200,
        0,
        size="64x48",
        malignant=0.3,
        contrast=0.5,
        lesion_scale=4.0,
        distractors=1.0,
        missing=0.05,
    )
    options = dict(TINY, width=0.25, epochs=15, folds=3, batch_size=16, lr=3e-3, n_boot=1000, image_size=[64, 48])
    result = compare.compare_fusion(
        source=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        strategies=["joint"],
        strategy_options={"joint": {"share": "all"}},
        **options,
    )
    row = result.results.set_index(["strategy", "metric"]).loc[("joint", "auroc")]
    assert row["ci_low"] > 0.5 and row["value"] > 0.6
