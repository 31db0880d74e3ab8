"""Synthetic chest X-rays: MIMIC-CXR-JPG / CheXpert layouts, DICOM output, report-label agreement, learnable signal."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from medssl.cli.main import main
from medssl.data.layouts.mimic_cxr import CHEXPERT_FILE, METADATA_FILE, SPLIT_FILE
from medssl.data.reports import CHEXPERT_OBSERVATIONS, parse_report
from medssl.data.synth.cxr import (
    CHEXPERT_CSV_COLUMNS,
    GROUND_TRUTH_COLUMNS,
    GROUND_TRUTH_FILE,
    METADATA_COLUMNS,
    Finding,
    generate,
    render_cxr,
)
from medssl.transforms.cxr import LoadCXRImage

# Words one of which every sentence stating the observation (positive or uncertain) uses.
MENTIONS = {
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Cardiomegaly": ("cardiomegaly", "heart", "cardiac"),
    "Lung Lesion": ("nodul", "mass"),
    "Lung Opacity": ("opacit",),
    "Edema": ("edema", "kerley", "congestion"),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis", "volume loss"),
    "Pneumothorax": ("pneumothorax", "sulcus"),
    "Pleural Effusion": ("effusion", "costophrenic"),
    "Pleural Other": ("pleural",),
    "Fracture": ("fracture",),
    "Support Devices": ("tube", "catheter", "picc", "pacemaker", "sternotomy", "line", "wire"),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mimic")
    summary = generate(out, 8, seed=0, size=40, dicom=True, monochrome1=0.5, lateral=0.5, normal=0.2)
    return out, summary


def test_mimic_layout_files_and_csv_columns(mimic):
    out, summary = mimic
    metadata = _rows(out / METADATA_FILE)
    assert tuple(metadata[0]) == METADATA_COLUMNS
    assert len(metadata) == summary["n_images"] and summary["n_studies"] >= 8
    for row in metadata:
        subject, study, dicom_id = row["subject_id"], row["study_id"], row["dicom_id"]
        assert re.fullmatch(r"1\d{7}", subject) and re.fullmatch(r"5\d{7}", study)
        assert re.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}", dicom_id)
        folder = out / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        with Image.open(folder / f"{dicom_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "L"
            assert image.size == (int(row["Columns"]), int(row["Rows"])) and int(row["Rows"]) == 40
        assert (folder / f"{dicom_id}.dcm").is_file()
        assert (folder.parent / f"s{study}.txt").is_file()
        assert row["ViewPosition"] in ("PA", "AP", "LATERAL", "LL")
    assert {r["ViewPosition"] for r in metadata} & {"LATERAL", "LL"}, "some studies have a lateral view"
    studies_per_subject = {}
    for row in metadata:
        studies_per_subject.setdefault(row["subject_id"], set()).add(row["study_id"])
    assert max(len(s) for s in studies_per_subject.values()) > 1

    split = _rows(out / SPLIT_FILE)
    assert tuple(split[0]) == ("dicom_id", "study_id", "subject_id", "split")
    split_of_subject = {}
    for row in split:
        assert row["split"] in ("train", "validate", "test")
        assert split_of_subject.setdefault(row["subject_id"], row["split"]) == row["split"]
    assert set(split_of_subject.values()) == {"train", "validate", "test"}

    labels = _rows(out / CHEXPERT_FILE)
    assert tuple(labels[0]) == ("subject_id", "study_id", *sorted(CHEXPERT_OBSERVATIONS))
    assert len(labels) == summary["n_studies"]
    cells = {row[o] for row in labels for o in CHEXPERT_OBSERVATIONS}
    assert cells == {"", "1.0", "0.0", "-1.0"}
    truth = _rows(out / GROUND_TRUTH_FILE)
    assert tuple(truth[0]) == GROUND_TRUTH_COLUMNS


def test_dicom_files_monochrome1_and_display_match_the_jpg(mimic):
    out, _ = mimic
    photometrics = set()
    for path in sorted((out / "files").glob("p*/p*/s*/*.dcm"))[:10]:
        ds = pydicom.dcmread(path)
        assert ds.Modality in ("DX", "CR") and ds.BitsStored == 12 and ds.ViewPosition in ("PA", "AP", "LATERAL", "LL")
        photometrics.add(ds.PhotometricInterpretation)
        dicom, jpg = LoadCXRImage()(path), LoadCXRImage()(path.with_suffix(".jpg"))
        assert dicom.meta["view"] == ds.ViewPosition
        assert float((dicom - jpg).abs().mean()) < 0.02  # MONOCHROME1 files come back inverted, like the JPG
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_labels_agree_with_report_text_and_truth(mimic):
    out, _ = mimic
    truth: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for row in _rows(out / GROUND_TRUTH_FILE):
        truth.setdefault((row["subject_id"], row["study_id"]), {})[row["observation"]] = row
    checked = {"positive": 0, "uncertain": 0, "side": 0, "lobe": 0}
    for labels in _rows(out / CHEXPERT_FILE):
        subject, study = labels["subject_id"], labels["study_id"]
        text = (out / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").read_text()
        parsed = parse_report(text, priority=["findings+impression"])
        body = " ".join(parsed.sentences).lower()
        for observation in CHEXPERT_OBSERVATIONS:
            cell = labels[observation]
            row = truth[(subject, study)].get(observation)
            assert (row["label"] if row else "") == (cell[:-2] if cell else ""), (study, observation)
            if observation == "No Finding" or cell not in ("1.0", "-1.0"):
                if cell in ("0.0", "") and row is not None:
                    assert row["present"] == "0"  # negated and unmentioned findings are not drawn
                continue
            assert any(word in body for word in MENTIONS[observation]), (study, observation, body)
            checked["positive" if cell == "1.0" else "uncertain"] += 1
            if cell == "1.0":
                assert row["present"] == "1"
                if row["side"] and observation != "Support Devices":
                    assert row["side"] in body, (study, observation, row["side"], body)
                    checked["side"] += 1
                if row["lobe"]:
                    assert row["lobe"] in body, (study, observation, row["lobe"], body)
                    checked["lobe"] += 1
                if row["size_cm"]:
                    assert row["size_cm"] in body
    assert min(checked.values()) > 0, checked


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    generate(tmp_path / "a", 2, seed=5, size=24, max_studies=2)
    generate(tmp_path / "b", 2, seed=5, size=24, max_studies=2)
    generate(tmp_path / "c", 2, seed=6, size=24, max_studies=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_reports_in_a_separate_folder_and_chexpert_layout(tmp_path):
    generate(tmp_path / "sep", 2, seed=1, size=24, reports="separate")
    assert list((tmp_path / "sep" / "mimic-cxr-reports" / "files").glob("p*/p*/s*.txt"))
    assert not list((tmp_path / "sep" / "files").glob("p*/p*/s*.txt"))

    summary = generate(tmp_path / "chx", 4, seed=2, size=24, layout="chexpert")
    root = tmp_path / "chx" / "CheXpert-v1.0-small"
    train, valid = _rows(root / "train.csv"), _rows(root / "valid.csv")
    assert tuple(train[0]) == ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CSV_COLUMNS)
    assert len(train) + len(valid) == summary["n_images"] and valid
    for row in train + valid:
        assert re.fullmatch(
            r"CheXpert-v1.0-small/(train|valid)/patient\d{5}/study\d+/view\d_(frontal|lateral)\.jpg", row["Path"]
        )
        assert (tmp_path / "chx" / row["Path"]).is_file()
        assert (row["Frontal/Lateral"] == "Frontal") == (row["AP/PA"] in ("AP", "PA"))
    assert {row[o] for row in valid for o in CHEXPERT_CSV_COLUMNS} <= {"0.0", "1.0"}


def test_bad_options_raise():
    with pytest.raises(ValueError, match="n must be"):
        generate("/nonexistent", 0, seed=0)
    with pytest.raises(ValueError, match="lateral"):
        generate("/nonexistent", 1, seed=0, lateral=1.5)
    with pytest.raises(ValueError, match="MIMIC layout only"):
        generate("/nonexistent", 1, seed=0, layout="chexpert", dicom=True)


def test_cli_writes_the_layout(tmp_path, capsys):
    assert main(["synth", "cxr", "--out", str(tmp_path / "cli"), "--n", "1", "--seed", "3", "--size", "24"]) == 0
    assert '"n_patients": 1' in capsys.readouterr().out
    assert (tmp_path / "cli" / METADATA_FILE).is_file()


def _features(findings_of, n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Frontal images drawn for ``n`` draws of ``findings_of(rng)``: 8x8 block means, standardised per image (the
    exposure varies from image to image, as it does in real radiographs)."""
    rows = []
    for _ in range(n):
        image = render_cxr(findings_of(rng), "PA", (size, size), rng)
        blocks = image.reshape(8, size // 8, 8, size // 8).mean(axis=(1, 3)).ravel()
        rows.append((blocks - blocks.mean()) / (blocks.std() + 1e-6))
    return np.asarray(rows)


def _cv_auc(negative: np.ndarray, positive: np.ndarray) -> float:
    features = np.concatenate([negative, positive])
    target = np.r_[np.zeros(len(negative)), np.ones(len(positive))]
    model = LogisticRegression(max_iter=2000)
    return float(cross_val_score(model, features, target, cv=4, scoring="roc_auc").mean())


def test_findings_and_their_side_are_learnable_from_pixels():
    rng = np.random.default_rng(0)
    degree = lambda r: str(r.choice(["mild", "moderate", "severe"]))  # noqa: E731
    size = lambda r: str(r.choice(["small", "moderate", "large"]))  # noqa: E731
    normal = _features(lambda r: [], 32, rng)
    cardiomegaly = _features(lambda r: [Finding("Cardiomegaly", 1, True, {"deg": degree(r)})], 32, rng)
    effusion = _features(
        lambda r: [Finding("Pleural Effusion", 1, True, {"side": str(r.choice(["left", "right"])), "sev": size(r)})],
        32,
        rng,
    )
    left = _features(lambda r: [Finding("Pleural Effusion", 1, True, {"side": "left", "sev": size(r)})], 20, rng)
    right = _features(lambda r: [Finding("Pleural Effusion", 1, True, {"side": "right", "sev": size(r)})], 20, rng)
    # Chance is 0.5; a linear model on 64 block means separates the findings, and the side of an effusion, which
    # the report states: image-report pairs carry a shared, image-specific signal.
    assert _cv_auc(normal, cardiomegaly) > 0.85
    assert _cv_auc(normal, effusion) > 0.85
    assert _cv_auc(left, right) > 0.85
