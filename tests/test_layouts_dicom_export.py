from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medssl.cli.main import main
from medssl.data.datalist import read_datalist
from medssl.data.keys import make_key
from medssl.data.layouts.dicom_export import build, dicom_export_items, rank_candidates
from medssl.data.synth.mr_dicom import EXPORT_DIR, generate, read_ground_truth
from medssl.exceptions import DatalistError, MissingSequenceError

SALT = "export-test-salt"


def _row(series: str, sequence: str, study: str = "stu-1", patient: str = "pat-1", **extra) -> dict:
    row = {
        "patient_key": patient,
        "study_key": study,
        "series_key": series,
        "study_rank": 0,
        "modality": "MR",
        "sequence": sequence,
        "n_instances": 3,
        "spacing": [1.0, 1.0, 5.0],
        "geometry": "ok",
        "image_type": "ORIGINAL\\PRIMARY\\M",
        "series_number": 1,
        "files": [f"{series}/a", f"{series}/b", f"{series}/c"],
        "root": "/data/export",
    }
    row.update(extra)
    return row


def _choice(rows: list[dict]) -> str:
    return str(rank_candidates(pd.DataFrame(rows)).iloc[0]["series_key"])


def test_rank_rule_order():
    # 1. a series that does not stack is never chosen, however fine its voxels
    assert (
        _choice([_row("ser-a", "T1", geometry="mixed orientations", spacing=[0.5, 0.5, 0.5]), _row("ser-b", "T1")])
        == "ser-b"
    )
    assert rank_candidates(pd.DataFrame([_row("ser-a", "T1", geometry="missing slices")])).empty
    # 2. ORIGINAL before DERIVED (a reformat)
    assert (
        _choice(
            [_row("ser-a", "T1", image_type="DERIVED\\SECONDARY\\MPR", spacing=[0.5, 0.5, 0.5]), _row("ser-b", "T1")]
        )
        == "ser-b"
    )
    # 3. finest voxels (3D over 2D)
    assert _choice([_row("ser-a", "T1C", spacing=[0.5, 0.5, 5.0]), _row("ser-b", "T1C", spacing=[1, 1, 1])]) == "ser-b"
    # 4. most slices
    assert _choice([_row("ser-a", "T2", n_instances=20), _row("ser-b", "T2", n_instances=24)]) == "ser-b"
    # 5. latest series number (a repeat replaces a failed first attempt), 6. key
    assert _choice([_row("ser-b", "T2", series_number=3), _row("ser-a", "T2", series_number=4)]) == "ser-a"
    assert _choice([_row("ser-b", "T2"), _row("ser-a", "T2")]) == "ser-a"


def test_choice_does_not_depend_on_row_order():
    rows = [_row(f"ser-{i}", "T2", series_number=i % 3, n_instances=20 + i % 2) for i in range(6)]
    expected = _choice(rows)
    assert _choice(rows[::-1]) == expected == _choice(rows[2:] + rows[:2])


def test_items_and_missing_policies():
    manifest = pd.DataFrame(
        [
            _row("ser-1", "T1"),
            _row("ser-2", "T2"),
            _row("ser-3", "FLAIR"),
            _row("ser-4", "T1C"),
            _row("ser-5", "T1", study="stu-2", patient="pat-2", study_rank=0),
            _row("ser-6", "T2", study="stu-2", patient="pat-2"),
            _row("ser-7", "T1C", study="stu-2", patient="pat-2", geometry="mixed orientations"),
            _row("ser-8", "OTHER", study="stu-3", patient="pat-3"),
            {**_row("ser-9", "", study="stu-4", patient="pat-4"), "modality": "CT"},
        ]
    )
    items, problems = dicom_export_items(manifest)
    assert [i["case_key"] for i in items] == ["stu-1"]
    assert items[0]["T1"] == [
        os.path.abspath("/data/export/ser-1/a"),
        os.path.abspath("/data/export/ser-1/b"),
        os.path.abspath("/data/export/ser-1/c"),
    ]
    assert items[0]["series_keys"] == {"T1": "ser-1", "T1C": "ser-4", "T2": "ser-2", "FLAIR": "ser-3"}
    assert {p["case"]: p["action"] for p in problems} == {"stu-2": "skipped", "stu-3": "skipped"}
    assert "none stacks" in next(p["problem"] for p in problems if p["case"] == "stu-2")
    items, problems = dicom_export_items(manifest, missing="include")
    partial = next(i for i in items if i["case_key"] == "stu-2")
    assert partial["missing"] == ["T1C", "FLAIR"] and "T1C" not in partial and "T1" in partial
    assert "stu-3" not in {i["case_key"] for i in items}  # nothing wanted at all: skipped even when including
    items, _ = dicom_export_items(manifest, sequences=["T1", "T2"], base_dir="/data")
    assert {i["case_key"] for i in items} == {"stu-1", "stu-2"} and items[0]["T1"][0] == "export/ser-1/a"
    with pytest.raises(MissingSequenceError, match="stu-2"):
        dicom_export_items(manifest, missing="error")
    with pytest.raises(DatalistError, match="lacks columns"):
        dicom_export_items(manifest.drop(columns="files"))


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pacs")
    generate(out, 3, seed=4, matrix=12, dicomdir=False, followups=0.0)
    return out, read_ground_truth(out)


def _phi_strings(truth: dict) -> set[str]:
    values = set()
    for patient in truth["patients"]:
        values |= {patient["patient_id"], patient["patient_name"], patient["birth_date"]}
        values |= set(patient["patient_name"].split("^"))
    for study in truth["studies"]:
        values |= {
            study["study_uid"],
            study["accession"],
            study["study_date"],
            study["frame_of_reference_uid"],
            study["referring_physician"].split("^")[0],
        }
    values |= {record["series_uid"] for record in truth["series"]}
    return values


def test_synthetic_export_to_datalist(export):
    pytest.importorskip("medssl.data.index")
    out, truth = export
    items, metadata, problems = build(out / EXPORT_DIR, salt=SALT, workers=1)
    assert metadata["channel_def"] == {"0": "T1", "1": "T1C", "2": "T2", "3": "FLAIR"}
    no_contrast = next(s for s in truth["studies"] if "T1C" in s["missing_sequences"])
    assert [p["case"] for p in problems] == [make_key("study", no_contrast["study_uid"], SALT)]
    assert len(items) == len(truth["studies"]) - 1
    series_by_key = {make_key("series", r["series_uid"], SALT): r for r in truth["series"]}
    for item in items:
        for sequence in ("T1", "T1C", "T2", "FLAIR"):
            record = series_by_key[item["series_keys"][sequence]]
            assert record["sequence"] == sequence
            assert item[sequence] == [str((out / EXPORT_DIR / f).resolve()) for f in record["files"]]
    repeated = next(r for r in truth["series"] if r["repeat"])
    chosen = {key for item in items for key in item["series_keys"].values()}
    assert make_key("series", repeated["series_uid"], SALT) in chosen  # the later of the two T2 series


def test_cli_datalist_has_no_phi(export, tmp_path):
    pytest.importorskip("medssl.data.index")
    out, truth = export
    target = tmp_path / "export.json"
    assert (
        main(
            [
                "datalist",
                "dicom-export",
                str(out / EXPORT_DIR),
                "--out",
                str(target),
                "--missing",
                "include",
                "--val",
                "0",
                "--test",
                "0.34",
                "--salt",
                SALT,
                "--workers",
                "1",
            ]
        )
        == 0
    )
    data = read_datalist(target)
    assert data["numTraining"] + data["numTest"] == len(truth["studies"])
    included = next(i for s in ("training", "test") for i in data[s] if "missing" in i)
    assert included["missing"] == ["T1C"]
    for path in (target, tmp_path / "export.splits.json", tmp_path / "export.problems.csv"):
        text = path.read_text()
        leaked = [value for value in _phi_strings(truth) if value in text]
        assert not leaked, (path.name, leaked)
    assert json.loads((tmp_path / "export.splits.json").read_text())["parameters"]["layout"] == "dicom-export"
