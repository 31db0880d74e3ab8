from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from medssl.data.datalist import check_no_patient_leak, load_datalist, read_datalist, write_datalist
from medssl.data.keys import Keyer
from medssl.data.manifest import MANIFEST_COLUMNS, REQUIRED_COLUMNS, read_manifest, series_files, write_manifest
from medssl.exceptions import DatalistError, ManifestError

ROOT = Path(__file__).resolve().parents[1]
KEYER = Keyer("s", warn=False)


def _manifest(n=2) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows.append(
            {
                "patient_key": KEYER.patient(f"p{i}"),
                "study_key": KEYER.study(f"s{i}"),
                "series_key": KEYER.series(f"x{i}"),
                "modality": "MR",
                "sequence": "T1",
                "view": "",
                "laterality": "",
                "n_instances": 2,
                "rows": 4,
                "columns": 5,
                "spacing": [1.0, 1.0, 2.0],
                "orientation": [1, 0, 0, 0, 1, 0],
                "photometric": "MONOCHROME2",
                "files": [f"a/{i}_1", f"a/{i}_2"],
                "root": "/data/export",
                "contrast": i == 1,
                "echo_time": 12.5,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_round_trip(tmp_path, suffix):
    path = write_manifest(_manifest(), tmp_path / f"m{suffix}")
    back = read_manifest(path)
    assert back["files"].tolist() == [["a/0_1", "a/0_2"], ["a/1_1", "a/1_2"]]
    assert back["spacing"].iloc[0] == [1.0, 1.0, 2.0]
    assert back["n_instances"].dtype == "Int64" and back["contrast"].tolist() == [False, True]
    assert series_files(back.iloc[1]) == ["/data/export/a/1_1", "/data/export/a/1_2"]
    assert read_manifest(path, root=tmp_path)["root"].iloc[0] == str(tmp_path.resolve())


def test_manifest_validation(tmp_path):
    frame = _manifest()
    with pytest.raises(ManifestError, match="lacks required columns"):
        write_manifest(frame.drop(columns="files"), tmp_path / "x.csv")
    bad = frame.copy()
    bad.loc[0, "patient_key"] = "John Doe"
    write_manifest(bad, tmp_path / "bad.csv")
    with pytest.raises(ManifestError, match="not a medssl key"):
        read_manifest(tmp_path / "bad.csv")
    wrong = frame.copy()
    wrong.loc[1, "n_instances"] = 3
    write_manifest(wrong, tmp_path / "wrong.csv")
    with pytest.raises(ManifestError, match="n_instances is 3 but 2 files"):
        read_manifest(tmp_path / "wrong.csv")
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "absent.csv")


def test_data_manifests_readme_documents_every_column():
    text = (ROOT / "data_manifests" / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert {c.name for c in MANIFEST_COLUMNS} <= documented
    assert set(REQUIRED_COLUMNS) <= documented


def test_datalist_round_trip_and_monai_paths(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.nii.gz").write_bytes(b"x")
    items = [{"case_key": "cas-1", "patient_key": "pat-1", "image": "img/a.nii.gz", "label": 1}]
    path = write_datalist(
        tmp_path / "dl.json",
        {
            "training": items,
            "test": [{"case_key": "cas-2", "patient_key": "pat-2", "image": "img/a.nii.gz", "label": 0}],
        },
        name="toy",
        channel_def={"0": "T1"},
    )
    data = read_datalist(path)
    assert data["numTraining"] == 1 and data["channel_def"] == {"0": "T1"} and data["medssl_datalist_version"] == 1
    loaded = load_datalist(path, "training")
    assert loaded[0]["image"] == str(tmp_path / "img" / "a.nii.gz") and loaded[0]["label"] == 1
    with pytest.raises(DatalistError, match="no 'validation' split"):
        load_datalist(path, "validation")


def test_datalist_rejects_leaks_and_malformed(tmp_path):
    a = {"case_key": "c1", "patient_key": "p1"}
    b = {"case_key": "c2", "patient_key": "p1"}
    with pytest.raises(DatalistError, match="patient p1 is in both 'training' and 'test'"):
        write_datalist(tmp_path / "x.json", {"training": [a], "test": [b]})
    with pytest.raises(DatalistError, match=r"lacks \['patient_key'\]"):
        write_datalist(tmp_path / "x.json", {"training": [{"case_key": "c"}]})
    with pytest.raises(DatalistError, match="appears twice"):
        write_datalist(tmp_path / "x.json", {"training": [a, dict(a)]})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatalistError, match="invalid JSON"):
        read_datalist(tmp_path / "broken.json")
    check_no_patient_leak({"training": [a, b], "validation": [{"case_key": "c3", "patient_key": "p2"}]})
