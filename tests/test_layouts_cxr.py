"""MIMIC-CXR-JPG and CheXpert layouts to datalists: real column formats, policies, official and patient splits."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl.cli.main import main
from medssl.data.datalist import check_no_patient_leak, load_datalist
from medssl.data.keys import Keyer
from medssl.data.layouts.chexpert import (
    OBSERVATION_KEYS,
    chexpert_items,
    label_fields,
    official_splits,
)
from medssl.data.layouts.mimic_cxr import mimic_cxr_datalist, mimic_cxr_items
from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.exceptions import DatalistError

SALT = "layout-test-salt"
MIMIC_METADATA = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
    "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\n"
    "d1a,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,CHEST (PA AND LAT),"
    "postero-anterior,Erect\n"
    "d1b,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,213014.531,CHEST (PA AND LAT),lateral,"
    "Erect\n"
    "d2a,10000032,53189527,CHEST (PORTABLE AP),AP,2705,2539,21800626,165500.312,CHEST (PORTABLE AP),"
    "antero-posterior,Erect\n"
    "d3a,10000764,57375967,CHEST (PA AND LAT),PA,3056,2544,21321105,23337,CHEST (PA AND LAT),postero-anterior,"
    "Erect\n"
    "d3b,10000764,57375967,CHEST (PA AND LAT),LL,3056,2544,21321105,23337,CHEST (PA AND LAT),left lateral,Erect\n"
    "d4a,10000898,50771383,CHEST (PORTABLE AP),,2544,3056,21320917,155530.453,CHEST (PORTABLE AP),,\n"
    "d5a,10001176,53186264,CHEST (PA AND LAT),PA,3056,2544,21620630,174706.281,CHEST (PA AND LAT),"
    "postero-anterior,Erect\n"
)
MIMIC_SPLIT = (
    "dicom_id,study_id,subject_id,split\n"
    "d1a,50414267,10000032,train\nd1b,50414267,10000032,train\nd2a,53189527,10000032,train\n"
    "d3a,57375967,10000764,validate\nd3b,57375967,10000764,validate\nd4a,50771383,10000898,test\n"
    "d5a,53186264,10001176,train\n"
)
# MIMIC-CXR-JPG's label CSV: subject_id, study_id, then the observations in alphabetical order.
MIMIC_LABELS = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
    "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices\n"
    "10000032,50414267,,,,,,,,,1.0,,,,,\n"
    "10000032,53189527,,-1.0,,,,,,,,1.0,,,0.0,\n"
    "10000764,57375967,,,-1.0,,,,,1.0,,,,-1.0,,\n"
    "10000898,50771383,1.0,,,,,,,,,0.0,,,,1.0\n"
)
REPORT = " FINDINGS:\n\n There is a small right pleural effusion.\n\n IMPRESSION:\n\n Small right effusion.\n"


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5), 100, dtype=np.uint8)).save(path)


@pytest.fixture()
def mimic_root(tmp_path) -> Path:
    """A tiny MIMIC-CXR-JPG tree: 4 subjects, 5 studies; d5a has no image, s53186264 no report."""
    root = tmp_path / "mimic-cxr-jpg"
    for line in MIMIC_METADATA.splitlines()[1:]:
        dicom_id, subject, study = line.split(",")[:3]
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        if dicom_id != "d5a":
            _jpg(folder / f"{dicom_id}.jpg")
        if study != "53186264":
            (folder.parent / f"s{study}.txt").write_text(REPORT)
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(MIMIC_METADATA)
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as handle:  # PhysioNet ships .csv.gz
        handle.write(MIMIC_SPLIT)
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(MIMIC_LABELS)
    return root


def _by_image(items: list[dict]) -> dict[str, dict]:
    return {Path(item["image"]).stem: item for item in items}


def test_mimic_items_views_reports_keys_and_problems(mimic_root):
    items, problems = mimic_cxr_items(mimic_root, salt=SALT)
    by = _by_image(items)
    assert sorted(by) == ["d1a", "d1b", "d2a", "d3a", "d3b", "d4a"]
    assert [by[k]["view"] for k in ("d1a", "d1b", "d2a", "d3b", "d4a")] == ["PA", "LATERAL", "AP", "LL", ""]
    assert by["d1a"]["frontal"] and not by["d1b"]["frontal"] and not by["d4a"]["frontal"]
    assert Path(by["d1a"]["report"]) == mimic_root / "files/p10/p10000032/s50414267.txt"
    keyer = Keyer(SALT, warn=False)
    assert by["d1a"]["patient_key"] == by["d2a"]["patient_key"] == keyer.patient("mimic-cxr:10000032")
    assert by["d1a"]["study_key"] == by["d1b"]["study_key"] != by["d2a"]["study_key"]
    assert len({item["case_key"] for item in items}) == len(items)
    for item in items:  # identifiers appear only inside the file paths
        for key, value in item.items():
            if key not in ("image", "report"):
                assert "10000032" not in json.dumps(value) and "50414267" not in json.dumps(value), key
    assert {(p["problem"], p["action"]) for p in problems} == {("image file not found", "skipped")}
    assert "d5a" in problems[0]["case"]


def test_mimic_uncertainty_and_blank_policies(mimic_root):
    index = {o: i for i, o in enumerate(CHEXPERT_OBSERVATIONS)}
    expected = {"ones": (1.0, 1.0), "zeros": (0.0, 1.0), "ignore": (0.0, 0.0)}
    for policy, (value, mask) in expected.items():
        d2a = _by_image(mimic_cxr_items(mimic_root, salt=SALT, policy=policy)[0])["d2a"]
        assert d2a["cardiomegaly"] == value  # -1.0 in the CSV
        assert d2a["label"][index["Cardiomegaly"]] == value and d2a["label_mask"][index["Cardiomegaly"]] == mask
        assert d2a["pleural_effusion"] == 1.0 and d2a["label_mask"][index["Pleural Effusion"]] == 1.0
        assert d2a["pneumothorax"] == 0.0 and d2a["label_mask"][index["Pneumothorax"]] == 1.0
        assert d2a["edema"] == 0.0 and d2a["label_mask"][index["Edema"]] == 0.0  # blank
    zeros = _by_image(mimic_cxr_items(mimic_root, salt=SALT, blank="zeros")[0])["d2a"]
    assert zeros["label_mask"][index["Edema"]] == 1.0 and zeros["edema"] == 0.0
    assert _by_image(mimic_cxr_items(mimic_root, salt=SALT, policy="U-Ignore")[0])["d2a"]["cardiomegaly"] == 0.0
    with pytest.raises(DatalistError, match="uncertainty policy"):
        mimic_cxr_items(mimic_root, policy="U-Maybe")


def test_mimic_frontal_only_study_level_and_separate_reports(mimic_root, tmp_path):
    frontal, _ = mimic_cxr_items(mimic_root, salt=SALT, frontal_only=True)
    assert sorted(_by_image(frontal)) == ["d1a", "d2a", "d3a"]
    studies, _ = mimic_cxr_items(mimic_root, salt=SALT, study_level=True)
    assert sorted(_by_image(studies)) == ["d1a", "d2a", "d3a", "d4a"]  # PA before the lateral

    reports = tmp_path / "mimic-cxr-reports" / "files" / "p10" / "p10000032"
    reports.mkdir(parents=True)
    (reports / "s50414267.txt").write_text(REPORT)
    items, problems = mimic_cxr_items(mimic_root, salt=SALT, reports=tmp_path / "mimic-cxr-reports")
    by = _by_image(items)
    assert Path(by["d1a"]["report"]) == reports / "s50414267.txt"
    assert "report" not in by["d3a"]
    assert [p["action"] for p in problems if p["problem"] == "no report"] == ["images included"] * 3  # per study
    required, _ = mimic_cxr_items(mimic_root, salt=SALT, reports=tmp_path / "mimic-cxr-reports", require_report=True)
    assert sorted(_by_image(required)) == ["d1a", "d1b"]


def test_mimic_datalist_official_split_and_patient_split(mimic_root, tmp_path):
    path, _ = mimic_cxr_datalist(mimic_root, tmp_path / "official.json", salt=SALT, relative=True)
    data = json.loads(path.read_text())
    assert data["split"] == {"source": "official"}
    assert sorted(Path(i["image"]).stem for i in data["training"]) == ["d1a", "d1b", "d2a"]
    assert sorted(Path(i["image"]).stem for i in data["validation"]) == ["d3a", "d3b"]
    assert [Path(i["image"]).stem for i in data["test"]] == ["d4a"]
    loaded = load_datalist(path, "training")
    assert all(Path(item["image"]).is_file() for item in loaded)

    (mimic_root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    path, _ = mimic_cxr_datalist(
        mimic_root, tmp_path / "patients.json", salt=SALT, val_fraction=0.25, test_fraction=0.25, seed=1
    )
    data = json.loads(path.read_text())
    assert data["split"]["source"] == "patient"
    check_no_patient_leak({s: data.get(s, []) for s in ("training", "validation", "test")})
    assert sum(len(data.get(s, [])) for s in ("training", "validation", "test")) == 6


def test_mimic_without_metadata_walks_the_tree(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv").unlink()
    items, _ = mimic_cxr_items(mimic_root, salt=SALT)
    assert sorted(_by_image(items)) == ["d1a", "d1b", "d2a", "d3a", "d3b", "d4a"]
    assert {item["view"] for item in items} == {""}  # JPGs carry no view


def test_mimic_bad_folders_raise(tmp_path):
    with pytest.raises(DatalistError, match="no files/ folder"):
        mimic_cxr_items(tmp_path)
    (tmp_path / "files").mkdir()
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,study_id\nx,1\n")
    with pytest.raises(DatalistError, match="subject_id"):
        mimic_cxr_items(tmp_path)


def test_mimic_layout_of_the_synthetic_data(tmp_path):
    from medssl.data.synth.cxr import generate

    summary = generate(tmp_path / "synth", 5, seed=4, size=24, max_studies=2)
    items, problems = mimic_cxr_items(tmp_path / "synth", salt=SALT, policy="ignore")
    assert len(items) == summary["n_images"] and not problems
    assert all(Path(item["report"]).is_file() for item in items)
    with (tmp_path / "synth" / "mimic-cxr-2.0.0-chexpert.csv").open(newline="") as handle:
        labels = {row["study_id"]: row for row in csv.DictReader(handle)}
    study_of = {}
    with (tmp_path / "synth" / "mimic-cxr-2.0.0-metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            study_of[row["dicom_id"]] = row["study_id"]
    for item in items:
        expected = label_fields(labels[study_of[Path(item["image"]).stem]], "ignore")
        assert item["label"] == expected["label"] and item["label_mask"] == expected["label_mask"]
    splits = official_splits(items)
    assert splits is not None and splits["test"] and splits["validation"]
    check_no_patient_leak(splits)


CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices\n"
)


@pytest.fixture()
def chexpert_root(tmp_path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    train = [
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
        "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0"
        ",,-1.0,,-1.0,,1.0,",
        "CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,"
        "1.0,",
        "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,",
        "CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg,Male,20,Frontal,PA,2.0,,,,,,,,,,,,,",
    ]
    valid = [
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
        "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,0.0,0.0,0.0,1.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
        "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,1.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
    ]
    for line in train + valid:
        _jpg(tmp_path / line.split(",")[0])
    root.mkdir(exist_ok=True)
    (root / "train.csv").write_text(CHEXPERT_HEADER + "\n".join(train) + "\n")
    (root / "valid.csv").write_text(CHEXPERT_HEADER + "\n".join(valid) + "\n")
    return root


def test_chexpert_items_views_splits_and_policies(chexpert_root):
    items, problems = chexpert_items(chexpert_root, salt=SALT, policy="zeros")
    assert len(items) == 8
    assert [(p["action"], "not 1, 0, -1 or blank" in p["problem"]) for p in problems] == [("skipped", True)]
    by = {item["image"].split("CheXpert-v1.0-small/")[1]: item for item in items}
    first = by["train/patient00002/study2/view1_frontal.jpg"]
    assert first["view"] == "AP" and first["frontal"] and first["sex"] == "Female" and first["age"] == 87
    lateral = by["train/patient00002/study2/view2_lateral.jpg"]
    assert lateral["view"] == "LATERAL" and not lateral["frontal"]
    assert first["cardiomegaly"] == 0.0 and first["edema"] == 0.0  # -1.0 under U-Zeros
    assert first["label_mask"][CHEXPERT_OBSERVATIONS.index("Cardiomegaly")] == 1.0
    assert first["lung_opacity"] == 1.0 and first["fracture"] == 1.0 and first["pneumonia"] == 0.0
    assert (
        first["patient_key"]
        == lateral["patient_key"]
        == by["train/patient00002/study1/view1_frontal.jpg"]["patient_key"]
    )
    assert first["study_key"] == lateral["study_key"] != by["train/patient00002/study1/view1_frontal.jpg"]["study_key"]
    ones = {i["image"]: i for i in chexpert_items(chexpert_root, salt=SALT, policy="U-Ones")[0]}
    assert ones[first["image"]]["cardiomegaly"] == 1.0
    ignore = {i["image"]: i for i in chexpert_items(chexpert_root, salt=SALT, policy="ignore")[0]}
    assert ignore[first["image"]]["label_mask"][CHEXPERT_OBSERVATIONS.index("Edema")] == 0.0

    splits = official_splits(items)
    assert len(splits["training"]) == 5 and len(splits["validation"]) == 3 and not splits["test"]
    check_no_patient_leak(splits)
    assert {i["view"] for i in chexpert_items(chexpert_root, salt=SALT, frontal_only=True)[0]} == {"AP", "PA"}
    studies = chexpert_items(chexpert_root, salt=SALT, study_level=True)[0]
    assert len(studies) == 6 and all(item["frontal"] for item in studies)


def test_chexpert_layout_of_the_synthetic_data(tmp_path):
    from medssl.data.synth.cxr import generate

    summary = generate(tmp_path, 4, seed=3, size=24, layout="chexpert")
    items, problems = chexpert_items(tmp_path / "CheXpert-v1.0-small", salt=SALT)
    assert len(items) == summary["n_images"] and not problems
    check_no_patient_leak(official_splits(items))


def test_label_fields_keys_and_bad_values():
    fields = label_fields({"Pneumothorax": "1.0", "Edema": "-1"}, "ones")
    assert set(OBSERVATION_KEYS.values()) | {"label", "label_mask"} == set(fields)
    assert fields["pneumothorax"] == 1.0 and fields["edema"] == 1.0
    empty = label_fields(None)
    assert empty["label_mask"] == [0.0] * 14
    with pytest.raises(ValueError, match="not 1, 0, -1"):
        label_fields({"Edema": "0.5"})


def test_datalist_cli_discovers_both_layouts(mimic_root, chexpert_root, tmp_path, capsys):
    out = tmp_path / "cli" / "mimic.json"
    assert (
        main(
            [
                "datalist",
                "mimic-cxr",
                str(mimic_root),
                "--out",
                str(out),
                "--policy",
                "ignore",
                "--study-level",
                "--val",
                "0.25",
                "--test",
                "0.25",
                "--salt",
                SALT,
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    items = [i for s in ("training", "validation", "test") for i in data.get(s, [])]
    assert sorted(Path(i["image"]).stem for i in items) == ["d1a", "d2a", "d3a", "d4a"]
    assert data["uncertainty_policy"] == "ignore"
    out = tmp_path / "cli" / "chexpert.json"
    assert main(["datalist", "chexpert", str(chexpert_root), "--out", str(out), "--salt", SALT]) == 0
    assert json.loads(out.read_text())["layout"] == "chexpert"
    capsys.readouterr()
