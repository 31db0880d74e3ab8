from __future__ import annotations

import json
from pathlib import Path

import pytest

from medssl.cli.main import main
from medssl.data.datalist import load_datalist, read_datalist
from medssl.data.keys import make_key
from medssl.data.layouts.brats import brats_items, brats_metadata, build, detect_naming
from medssl.data.synth.brats import generate
from medssl.exceptions import DatalistError, MissingSequenceError

SALT = "layout-test-salt"
SUFFIXES_2021 = ("t1", "t1ce", "t2", "flair", "seg")
SUFFIXES_2023 = ("t1n", "t1c", "t2w", "t2f", "seg")


def _touch_case(root: Path, case: str, separator: str, suffixes, skip=(), folder: Path | None = None) -> None:
    folder = folder or root / case
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        if suffix not in skip:
            (folder / f"{case}{separator}{suffix}.nii.gz").write_bytes(b"")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("brats")
    generate(root / "b21", 3, seed=0, size=12, no_tumour=0.0, low_grade=0.0)
    generate(root / "b23", 4, seed=0, size=12, layout="2023", timepoints=0.25, no_tumour=0.25, low_grade=0.0)
    return {"2021": root / "b21", "2023": root / "b23"}


def test_generated_2021_folder_to_items(synthetic):
    items, problems = brats_items(synthetic["2021"], salt=SALT)
    assert problems == [] and len(items) == 3
    for item in items:
        for key, suffix in zip(("T1", "T1C", "T2", "FLAIR", "label"), SUFFIXES_2021):
            assert Path(item[key]).is_absolute() and item[key].endswith(f"{item['case']}_{suffix}.nii.gz")
            assert Path(item[key]).is_file()
        assert item["case_key"] == make_key("case", item["case"], SALT)
        assert item["patient_key"] == make_key("patient", item["case"], SALT)  # 2021: each case is a patient
        assert item["grade"] == "high" and item["tumour"] == 1  # joined from case_labels.csv
    assert brats_metadata("2021")["labels"]["4"].endswith("(ET)") and "3" not in brats_metadata("2021")["labels"]


def test_generated_2023_folder_groups_timepoints_by_patient(synthetic):
    assert detect_naming(synthetic["2023"]) == "2023"
    items, metadata, problems = build(synthetic["2023"], salt=SALT)
    assert problems == [] and metadata["naming"] == "2023" and metadata["et_label"] == 3
    assert metadata["labels"]["3"].endswith("(ET)") and "4" not in metadata["labels"]
    assert metadata["label_regions"] == {"TC": [1, 3], "WT": [1, 2, 3], "ET": [3]}
    assert metadata["channel_def"] == {"0": "T1", "1": "T1C", "2": "T2", "3": "FLAIR"}
    by_case = {item["case"]: item for item in items}
    followup = next(case for case in by_case if case.endswith("-001"))
    baseline = followup[:-3] + "000"
    assert by_case[followup]["patient_key"] == by_case[baseline]["patient_key"]
    assert by_case[followup]["case_key"] != by_case[baseline]["case_key"]
    assert (by_case[baseline]["timepoint"], by_case[followup]["timepoint"]) == (0, 1)
    assert len({item["patient_key"] for item in items}) == 3
    assert by_case[followup]["T2"].endswith(f"{followup}-t2w.nii.gz")


def test_hand_made_folders_nested_2020_names_and_missing_files(tmp_path):
    root = tmp_path / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData"
    _touch_case(root, "BraTS20_Training_001", "_", SUFFIXES_2021)  # 2018-2020 names follow the 2021 scheme
    _touch_case(root, "BraTS2021_00002", "_", SUFFIXES_2021, skip=("flair",), folder=root / "sub" / "BraTS2021_00002")
    _touch_case(root, "BraTS2021_00003", "_", SUFFIXES_2021, skip=("seg",))
    assert detect_naming(tmp_path) == "2021"
    items, problems = brats_items(tmp_path, salt=SALT)
    assert [i["case"] for i in items] == ["BraTS20_Training_001"]
    assert {(p["case"], p["action"]) for p in problems} == {
        ("BraTS2021_00002", "skipped"),
        ("BraTS2021_00003", "skipped"),
    }
    assert "BraTS2021_00002_flair.nii.gz" in next(p["problem"] for p in problems if p["case"] == "BraTS2021_00002")
    items, _ = brats_items(tmp_path, salt=SALT, missing="include")
    partial = next(i for i in items if i["case"] == "BraTS2021_00002")
    assert "FLAIR" not in partial and partial["missing"] == ["FLAIR"]
    items, problems = brats_items(tmp_path, salt=SALT, require_label=False)
    assert {i["case"] for i in items} == {"BraTS20_Training_001", "BraTS2021_00003"}
    assert "label" not in next(i for i in items if i["case"] == "BraTS2021_00003")
    with pytest.raises(MissingSequenceError, match="BraTS2021_00002"):
        brats_items(tmp_path, salt=SALT, missing="error")


def test_hand_made_2023_and_bad_folders(tmp_path):
    _touch_case(tmp_path / "a", "BraTS-MEN-00010-000", "-", SUFFIXES_2023)
    _touch_case(tmp_path / "a", "BraTS-MEN-00010-002", "-", SUFFIXES_2023)
    items, problems = brats_items(tmp_path / "a", salt=SALT)
    assert problems == [] and len({i["patient_key"] for i in items}) == 1 and len(items) == 2
    assert items[0]["T1C"].endswith("BraTS-MEN-00010-000-t1c.nii.gz")
    assert items[0]["patient_key"] == make_key("patient", "BraTS-MEN-00010", SALT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatalistError, match="no BraTS files"):
        detect_naming(tmp_path / "empty")
    _touch_case(tmp_path / "a", "BraTS2021_00001", "_", SUFFIXES_2021)
    with pytest.raises(DatalistError, match="both namings"):
        detect_naming(tmp_path / "a")
    with pytest.raises(DatalistError, match="missing policy"):
        brats_items(tmp_path / "a", naming="2023", missing="ignore")


def test_relative_paths_resolve_with_monai(synthetic, tmp_path):
    out = tmp_path / "lists" / "brats.json"
    assert (
        main(
            [
                "datalist",
                "brats",
                str(synthetic["2021"]),
                "--out",
                str(out),
                "--val",
                "0.34",
                "--test",
                "0.34",
                "--salt",
                SALT,
                "--relative",
            ]
        )
        == 0
    )
    data = read_datalist(out)
    assert data["numTraining"] == data["numValidation"] == data["numTest"] == 1
    raw = data["training"][0]
    assert not Path(raw["T1"]).is_absolute()
    loaded = load_datalist(out, "training")[0]
    assert Path(loaded["T1"]).is_file() and Path(loaded["label"]).is_file()


def test_cli_writes_split_datalist_record_and_folds(synthetic, tmp_path, capsys):
    out = tmp_path / "cv.json"
    assert (
        main(
            [
                "datalist",
                "brats",
                str(synthetic["2023"]),
                "--out",
                str(out),
                "--val",
                "0",
                "--test",
                "0.34",
                "--folds",
                "2",
                "--seed",
                "3",
                "--salt",
                SALT,
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    data = read_datalist(out)  # validates: no patient in two splits, no case twice
    assert data["split"] == {"seed": 3, "val_fraction": 0.0, "test_fraction": 0.34, "stratify_key": None, "folds": 2}
    assert {item["fold"] for item in data["training"]} == {0, 1}
    assert "validation" not in data
    record = json.loads((tmp_path / "cv.splits.json").read_text())
    assert sorted(record["splits"]) == ["test", "training"] and record["parameters"]["layout"] == "brats"
    assert set(record["folds"]) == {item["case_key"] for item in data["training"]}
    # a patient's two time points are in the same split
    patients = {}
    for split in ("training", "test"):
        for item in data[split]:
            assert patients.setdefault(item["patient_key"], split) == split


def test_cli_help_and_bad_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["datalist", "brats", "--help"])
    assert exit_info.value.code == 0
    assert "--missing" in capsys.readouterr().out
    assert main(["datalist", "brats", str(tmp_path / "absent"), "--out", str(tmp_path / "x.json")]) == 2


def test_example_datalists_are_valid():
    examples = Path(__file__).resolve().parents[1] / "data_manifests" / "examples"
    found = sorted(examples.glob("*_datalist.json"))
    assert {p.name for p in found} >= {
        "brats2021_datalist.json",
        "brats2023_datalist.json",
        "dicom_export_datalist.json",
    }
    for path in found:
        data = read_datalist(path)  # schema, unique cases, no patient in two splits
        for split in ("training", "validation", "test"):
            for item in data.get(split, []):
                assert all(key in item for key in data["image_keys"] if key not in item.get("missing", []))
                assert not any(
                    Path(str(v)).is_absolute()
                    for k in data["image_keys"]
                    for v in (item.get(k) if isinstance(item.get(k), list) else [item.get(k, "")])
                )
