from __future__ import annotations

import json

import pytest

from medssl.cli.main import main


@pytest.fixture(scope="module")
def cxr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    assert main(["synth", "cxr", "--out", str(root), "--n", "12", "--seed", "3", "--size", "32"]) == 0
    return root


def test_official_split_is_kept_unless_resplit(cxr_root, tmp_path):
    import pandas as pd

    official = pd.read_csv(next(cxr_root.glob("mimic-cxr-2.0.0-split.csv*")))
    test_subjects = set(official.loc[official["split"] == "test", "subject_id"].astype(str))
    assert main(["datalist", "mimic-cxr", str(cxr_root), "--out", str(tmp_path / "a.json"), "--salt", "s"]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["split"]["official"] is True
    assert {item["official_split"] for item in data["test"]} == {"test"}
    assert len({i["patient_key"] for i in data["test"]}) == len(test_subjects)
    assert all(item["official_split"] != "test" for item in data["training"] + data["validation"])
    assert (
        main(
            [
                "datalist",
                "mimic-cxr",
                str(cxr_root),
                "--out",
                str(tmp_path / "b.json"),
                "--resplit",
                "--salt",
                "s",
                "--test",
                "0.5",
            ]
        )
        == 0
    )
    resplit = json.loads((tmp_path / "b.json").read_text())
    assert "official" not in resplit["split"]
    assert {i["case_key"] for i in resplit["test"]} != {i["case_key"] for i in data["test"]}
