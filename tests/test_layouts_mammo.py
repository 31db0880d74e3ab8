from __future__ import annotations

import json
from pathlib import Path

import pytest

from medssl.cli.main import main
from medssl.data.datalist import read_datalist
from medssl.data.layouts.cbis_ddsm import cbis_items, resolve_image, write_cbis_datalist
from medssl.data.layouts.vindr_mammo import parse_birads, parse_density, vindr_items, write_vindr_datalist
from medssl.data.mammo import MissingViewError
from medssl.exceptions import DatalistError

VINDR_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
VINDR_ROWS = [
    # s1: complete, right breast suspicious
    "s1,se1,i11,L,CC,3518,2800,BI-RADS 1,DENSITY C,training",
    "s1,se2,i12,L,MLO,3518,2800,BI-RADS 1,DENSITY C,training",
    "s1,se3,i13,R,CC,3518,2800,BI-RADS 4,DENSITY C,training",
    "s1,se4,i14,R,MLO,3518,2800,BI-RADS 4,DENSITY C,training",
    # s2: no R-MLO row, left breast BI-RADS 3 (probably benign)
    "s2,se5,i21,L,CC,3518,2800,BI-RADS 3,DENSITY B,training",
    "s2,se6,i22,L,MLO,3518,2800,BI-RADS 3,DENSITY B,training",
    "s2,se7,i23,R,CC,3518,2800,BI-RADS 2,DENSITY B,training",
    # s3: rows of one breast disagree (2 vs 5), official test split; its R-CC file is absent
    "s3,se8,i31,L,CC,3518,2800,BI-RADS 2,DENSITY D,test",
    "s3,se9,i32,L,MLO,3518,2800,BI-RADS 5,DENSITY D,test",
    "s3,se10,i33,R,CC,3518,2800,BI-RADS 1,DENSITY D,test",
    "s3,se11,i34,R,MLO,3518,2800,BI-RADS 1,DENSITY D,test",
]


@pytest.fixture()
def vindr(tmp_path) -> Path:
    root = tmp_path / "vindr"
    (root).mkdir()
    (root / "breast-level_annotations.csv").write_text("\n".join([VINDR_HEADER, *VINDR_ROWS]) + "\n")
    for row in VINDR_ROWS:
        study, _, image = row.split(",")[:3]
        if image == "i33":
            continue
        path = root / "images" / study / f"{image}.dicom"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def _by_case(items):
    return {item["case"]: item for item in items}


def test_value_parsers():
    assert [parse_birads(v) for v in ("BI-RADS 4", "4A", 5, "", None, "BI-RADS 0")] == [4, 4, 5, None, None, 0]
    assert [parse_density(v) for v in ("DENSITY C", "A", "3", "", None)] == ["C", "A", "C", "", ""]


def test_vindr_labels_under_both_thresholds(vindr):
    items, problems = vindr_items(vindr, salt="s")
    cases = _by_case(items)
    assert (cases["s1"]["label_L"], cases["s1"]["label_R"], cases["s1"]["label"]) == (0, 1, 1)
    assert (cases["s2"]["label_L"], cases["s2"]["label_R"], cases["s2"]["label"]) == (0, 0, 0)
    assert (cases["s3"]["birads_L"], cases["s3"]["label_L"], cases["s3"]["label"]) == (5, 1, 1)
    assert any("BI-RADS [2, 5]" in p["problem"] for p in problems)
    assert cases["s1"]["density"] == "C" and cases["s3"]["official_split"] == "test"
    assert cases["s1"]["case_key"].startswith("cas-") and cases["s1"]["patient_key"].startswith("pat-")
    lower, _ = vindr_items(vindr, salt="s", birads_threshold=3)
    assert (_by_case(lower)["s2"]["label_L"], _by_case(lower)["s2"]["label"]) == (1, 1)
    with pytest.raises(DatalistError, match="no pathology"):
        vindr_items(vindr, positive="pathology")


def test_vindr_missing_views_under_each_policy(vindr):
    items, problems = vindr_items(vindr, salt="s", missing="zeros")
    cases = _by_case(items)
    assert cases["s1"]["presence"] == [1, 1, 1, 1]
    assert cases["s2"]["presence"] == [1, 1, 1, 0] and "R-MLO" not in cases["s2"]
    assert cases["s3"]["presence"] == [1, 0, 1, 1]  # the R-CC row's file is missing
    assert any("R-CC file missing" in p["problem"] for p in problems)
    assert cases["s1"]["L-CC"].endswith("images/s1/i11.dicom") and Path(cases["s1"]["L-CC"]).is_absolute()
    duplicated = _by_case(vindr_items(vindr, salt="s", missing="duplicate")[0])
    assert duplicated["s2"]["R-MLO"] == duplicated["s2"]["L-MLO"] and duplicated["s2"]["duplicated"] == ["R-MLO"]
    dropped = _by_case(vindr_items(vindr, salt="s", missing="drop")[0])
    assert sorted(dropped) == ["s1"]
    with pytest.raises(MissingViewError, match="s2"):
        vindr_items(vindr, salt="s", missing="error")
    relative = _by_case(vindr_items(vindr, salt="s", base_dir=vindr)[0])
    assert relative["s1"]["L-CC"] == "images/s1/i11.dicom"


def test_vindr_datalist_keeps_the_official_test_split(vindr, tmp_path):
    path = write_vindr_datalist(vindr, tmp_path / "vindr.json", val_fraction=0.0, salt="s", stratify_key=None)
    data = read_datalist(path)
    assert [item["case"] for item in data["test"]] == ["s3"]
    assert sorted(item["case"] for item in data["training"]) == ["s1", "s2"]
    assert data["view_names"] == ["L-CC", "R-CC", "L-MLO", "R-MLO"] and data["positive_rule"]["birads_threshold"] == 4


def test_vindr_missing_annotations_is_an_error(tmp_path):
    with pytest.raises(DatalistError, match="breast-level_annotations.csv"):
        vindr_items(tmp_path)
    (tmp_path / "breast-level_annotations.csv").write_text("study_id,image_id\ns1,i1\n")
    with pytest.raises(DatalistError, match="missing columns"):
        vindr_items(tmp_path)


MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)
CALC_HEADER = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
    "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)


def _mass(patient, side, view, assessment, pathology, prefix="Mass-Training"):
    folder = f"{prefix}_{patient}_{side}_{view}"
    path = f"{folder}/1.3.6.1.4.1.9590.100.1.2.{len(folder)}{patient[-1]}/1.3.6.1.4.1.9590.100.1.2.77/000000.dcm"
    return (
        f"{patient},3,{side},{view},1,mass,IRREGULAR,SPICULATED,{assessment},{pathology},4,{path},"
        f"{folder}_1/x/y/000000.dcm,{folder}_1/x/y/000001.dcm\n"
    )


def _calc(patient, side, view, assessment, pathology, prefix="Calc-Test"):
    row = _mass(patient, side, view, assessment, pathology, prefix)
    return row.replace(",mass,IRREGULAR,SPICULATED,", ",calcification,PLEOMORPHIC,CLUSTERED,")


@pytest.fixture()
def cbis(tmp_path) -> Path:
    root = tmp_path / "cbis"
    (root / "csv").mkdir(parents=True)
    mass_rows = [
        _mass("P_00001", "LEFT", "CC", 4, "MALIGNANT"),
        _mass("P_00001", "LEFT", "MLO", 4, "MALIGNANT"),
        _mass("P_00002", "RIGHT", "CC", 4, "BENIGN"),
        _mass("P_00004", "LEFT", "CC", 3, "BENIGN"),
        _mass("P_00005", "LEFT", "CC", 2, "BENIGN"),  # no image folder on disk
    ]
    calc_rows = [
        _calc("P_00002", "RIGHT", "MLO", 2, "BENIGN_WITHOUT_CALLBACK", prefix="Calc-Training"),
        _calc("P_00003", "LEFT", "MLO", 3, "MALIGNANT"),
        _calc("P_00004", "LEFT", "CC", 3, "BENIGN"),
    ]
    (root / "csv" / "mass_case_description_train_set.csv").write_text(MASS_HEADER + "\n" + "".join(mass_rows))
    calc_train = [r for r in calc_rows if "Calc-Training" in r]
    calc_test = [r for r in calc_rows if "Calc-Test" in r]
    (root / "csv" / "calc_case_description_train_set.csv").write_text(CALC_HEADER + "\n" + "".join(calc_train))
    (root / "csv" / "calc_case_description_test_set.csv").write_text(CALC_HEADER + "\n" + "".join(calc_test))
    # the TCIA download's "descriptive" folder names, which differ from the CSV paths below the first folder
    for row in mass_rows[:4] + calc_rows:
        folder = row.split(",")[11].split("/")[0]
        full = root / "CBIS-DDSM" / folder / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515"
        full.mkdir(parents=True, exist_ok=True)
        (full / "1-1.dcm").write_bytes(b"")
        roi = root / "CBIS-DDSM" / f"{folder}_1" / "08-07-2016-DDSM-1" / "1.000000-ROI mask images-1"
        roi.mkdir(parents=True, exist_ok=True)
        (roi / "1-1.dcm").write_bytes(b"")
        (roi / "1-2.dcm").write_bytes(b"")
    return root


def test_cbis_paths_labels_and_splits(cbis):
    items, problems = cbis_items(cbis, salt="s", positive="pathology")
    cases = _by_case(items)
    assert sorted(cases) == ["P_00001", "P_00002", "P_00003", "P_00004"]  # P_00005's only image is not on disk
    assert any("P_00005" == p["case"] and "no folder" in p["problem"] for p in problems)
    one = cases["P_00001"]
    full = "Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm"
    assert one["L-CC"].endswith(full)
    assert one["presence"] == [1, 0, 1, 0] and (one["label_L"], one["label_R"], one["label"]) == (1, -1, 1)
    assert (cases["P_00002"]["label_R"], cases["P_00002"]["label"]) == (0, 0)  # BENIGN with assessment 4
    assert cases["P_00002"]["presence"] == [0, 1, 0, 1]
    assert cases["P_00003"]["label"] == 1 and cases["P_00003"]["official_split"] == "test"
    assert cases["P_00001"]["official_split"] == "training"
    four = cases["P_00004"]
    assert four["official_split"] == "test" and "Mass-Training_P_00004" in four["L-CC"]  # the mass set's file
    assert any("training and test" in p["problem"] for p in problems if p["case"] == "P_00004")

    birads = _by_case(cbis_items(cbis, salt="s", positive="birads", birads_threshold=4)[0])
    assert birads["P_00002"]["label"] == 1 and birads["P_00003"]["label"] == 0 and birads["P_00001"]["label"] == 1
    assert birads["P_00003"]["birads_L"] == 3


def test_cbis_datalist_keeps_the_official_test_split(cbis, tmp_path):
    path = write_cbis_datalist(cbis, tmp_path / "cbis.json", val_fraction=0.0, salt="s", relative=True)
    data = read_datalist(path)
    assert sorted(item["case"] for item in data["test"]) == ["P_00003", "P_00004"]
    assert sorted(item["case"] for item in data["training"]) == ["P_00001", "P_00002"]
    assert data["split"]["official_split"] and not Path(data["training"][0]["L-CC"]).is_absolute()
    drawn = read_datalist(
        write_cbis_datalist(
            cbis,
            tmp_path / "drawn.json",
            official_split=False,
            val_fraction=0.25,
            test_fraction=0.25,
            salt="s",
            stratify_key=None,
        )
    )
    assert sum(len(drawn[s]) for s in ("training", "validation", "test")) == 4 and len(drawn["test"]) == 1


def test_cbis_resolution_rules(cbis):
    path, why = resolve_image(cbis, "Mass-Training_P_00009_LEFT_CC/a/b/000000.dcm")
    assert path is None and "no folder" in why
    direct = cbis / "Mass-Training_P_00009_RIGHT_MLO" / "u1" / "u2" / "000000.dcm"
    direct.parent.mkdir(parents=True)
    direct.write_bytes(b"")
    assert resolve_image(cbis, "Mass-Training_P_00009_RIGHT_MLO/u1/u2/000000.dcm\n")[0] == direct
    ambiguous = cbis / "CBIS-DDSM" / "Calc-Test_P_00010_LEFT_CC" / "s"
    ambiguous.mkdir(parents=True)
    (ambiguous / "1-1.dcm").write_bytes(b"")
    (ambiguous / "1-2.dcm").write_bytes(b"")
    path, why = resolve_image(cbis, "Calc-Test_P_00010_LEFT_CC/x/y/000000.dcm")
    assert path is None and "2 DICOM files" in why


def test_layouts_from_the_synthetic_data(tmp_path):
    from medssl.data.synth.mammo import generate

    summary = generate(tmp_path / "synth", 6, seed=2, size="64x48", malignant=0.3, missing=0.2)
    items, _ = vindr_items(tmp_path / "synth", salt="s")
    assert len(items) == 6
    assert sum(item["label"] == 1 for item in items) == summary["n_positive_exams"]
    breasts = sum((item["label_L"] == 1) + (item["label_R"] == 1) for item in items)
    assert breasts == summary["n_malignant_breasts"]
    assert sum(item["presence"].count(0) for item in items) == summary["n_missing_views"]
    lower, _ = vindr_items(tmp_path / "synth", salt="s", birads_threshold=2)
    assert sum(i["label"] for i in lower) >= sum(i["label"] for i in items)


def test_datalist_cli_for_both_layouts(vindr, cbis, tmp_path, capsys):
    assert (
        main(["datalist", "vindr-mammo", str(vindr), "--out", str(tmp_path / "v.json"), "--val", "0", "--salt", "s"])
        == 0
    )
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["layout"] == "vindr-mammo" and [item["case"] for item in data["test"]] == ["s3"]  # the official split
    assert (
        main(
            [
                "datalist",
                "cbis-ddsm",
                str(cbis),
                "--out",
                str(tmp_path / "c.json"),
                "--val",
                "0",
                "--positive",
                "birads",
                "--salt",
                "s",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["positive_rule"]["rule"] == "birads"
    assert sorted(item["case"] for item in data["test"]) == ["P_00003", "P_00004"]
    assert (tmp_path / "c.problems.csv").is_file()
    assert (
        main(
            [
                "datalist",
                "cbis-ddsm",
                str(cbis),
                "--out",
                str(tmp_path / "r.json"),
                "--val",
                "0",
                "--test",
                "0",
                "--resplit",
                "--salt",
                "s",
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "r.json").read_text())["training"]) == 4
