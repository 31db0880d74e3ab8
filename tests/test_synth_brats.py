from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.tree import DecisionTreeClassifier

from medssl.cli.main import main
from medssl.data.layouts.brats import NAMINGS
from medssl.data.synth.brats import brats_affine, generate

SEQUENCES = ("T1", "T1C", "T2", "FLAIR")


def _load(folder: Path, naming: str, case: str, key: str) -> nib.Nifti1Image:
    return nib.load(folder / case / NAMINGS[naming].file_name(case, key))


@pytest.fixture(scope="module")
def brats2021(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("brats2021")
    summary = generate(out, 3, seed=0, size=(24, 24, 20), no_tumour=0.0, low_grade=0.0)
    return out, summary


@pytest.fixture(scope="module")
def brats2023(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("brats2023")
    summary = generate(out, 5, seed=1, layout="2023", size=20, timepoints=0.2, no_tumour=0.2, low_grade=0.5)
    return out, summary


def test_2021_files_shapes_affines_and_labels(brats2021):
    out, summary = brats2021
    assert summary["cases"] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    for case in summary["cases"]:
        names = sorted(p.name for p in (out / case).iterdir())
        assert names == sorted(f"{case}_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg"))
        seg = _load(out, "2021", case, "label")
        assert seg.shape == (24, 24, 20)
        np.testing.assert_allclose(seg.affine, brats_affine((24, 24, 20)))
        assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")  # voxel order of the released BraTS files
        np.testing.assert_allclose(seg.header.get_zooms(), (1.0, 1.0, 1.0))
        assert set(np.unique(np.asarray(seg.dataobj))) == {0, 1, 2, 4}
        for key in SEQUENCES:
            image = _load(out, "2021", case, key)
            assert image.shape == (24, 24, 20) and image.get_data_dtype() == np.int16
            np.testing.assert_allclose(image.affine, seg.affine)
            data = np.asarray(image.dataobj)
            assert data.max() > 100 and data.min() >= 0


def test_2023_naming_timepoints_and_et_label(brats2023):
    out, summary = brats2023
    assert summary["n_cases"] == 5 and summary["n_patients"] == 4
    assert all(c.startswith("BraTS-GLI-") for c in summary["cases"])
    assert any(c.endswith("-001") for c in summary["cases"])
    values = set()
    for case in summary["cases"]:
        assert (out / case / f"{case}-t2f.nii.gz").is_file() and (out / case / f"{case}-t1c.nii.gz").is_file()
        values |= set(np.unique(np.asarray(_load(out, "2023", case, "label").dataobj)).tolist())
    assert 3 in values and 4 not in values


def test_case_labels_match_the_segmentations(brats2023):
    out, _ = brats2023
    with (out / "case_labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["grade"] for r in rows} == {"none", "low", "high"}
    for row in rows:
        seg = np.asarray(_load(out, "2023", row["case"], "label").dataobj)
        assert int(row["tumour"]) == int(seg.any())
        assert int(row["high_grade"]) == int((seg == 3).any())  # high grade == enhancing tumour present
        if row["grade"] == "low":
            assert (seg == 1).any() and not (seg == 3).any()


def test_same_seed_same_data_other_seed_other_data(tmp_path, brats2021):
    out, _ = brats2021
    generate(tmp_path / "again", 1, seed=0, size=(24, 24, 20), no_tumour=0.0, low_grade=0.0)
    generate(tmp_path / "other", 1, seed=9, size=(24, 24, 20), no_tumour=0.0, low_grade=0.0)
    case = "BraTS2021_00000"
    for key in ("T1C", "label"):
        first = np.asarray(_load(out, "2021", case, key).dataobj)
        np.testing.assert_array_equal(first, np.asarray(_load(tmp_path / "again", "2021", case, key).dataobj))
        assert not np.array_equal(first, np.asarray(_load(tmp_path / "other", "2021", case, key).dataobj))


def _tumour_voxels(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    seg = np.asarray(_load(folder, "2021", case, "label").dataobj)
    features = []
    for key in SEQUENCES:
        volume = np.asarray(_load(folder, "2021", case, key).dataobj, dtype=float)
        features.append(volume[seg > 0] / np.percentile(volume, 99))  # per-volume normalisation (arbitrary units)
    return np.stack(features, axis=1), seg[seg > 0]


def test_no_single_sequence_separates_the_labels_but_all_four_do(tmp_path):
    generate(tmp_path, 4, seed=3, size=32, no_tumour=0.0, low_grade=0.0)
    cases = [f"BraTS2021_{i:05d}" for i in range(4)]
    train = [_tumour_voxels(tmp_path, c) for c in cases[:3]]
    x_train, y_train = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    x_test, y_test = _tumour_voxels(tmp_path, cases[3])
    assert set(np.unique(y_test)) == {1, 2, 4}

    def score(columns: list[int]) -> float:
        tree = DecisionTreeClassifier(max_depth=4, class_weight="balanced", random_state=0)
        tree.fit(x_train[:, columns], y_train)
        return balanced_accuracy_score(y_test, tree.predict(x_test[:, columns]))

    single = {name: score([i]) for i, name in enumerate(SEQUENCES)}
    # Each sequence confuses two of the three labels: at best 2/3 balanced accuracy.
    assert max(single.values()) < 0.75, single
    assert score([0, 1, 2, 3]) > 0.95
    assert score([1, 3]) > 0.95  # T1C + FLAIR is the smallest combination that works (docs/synthetic_data.md)


def test_cli_synth_brats(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "brats",
                "--out",
                str(tmp_path / "b"),
                "--n",
                "2",
                "--seed",
                "4",
                "--size",
                "16",
                "--layout",
                "2023",
                "--skull-stripped",
            ]
        )
        == 0
    )
    assert '"naming": "2023"' in capsys.readouterr().out
    case = tmp_path / "b" / "BraTS-GLI-00000-000"
    flair = np.asarray(nib.load(case / "BraTS-GLI-00000-000-t2f.nii.gz").dataobj)
    assert flair[0, 0, 0] == 0 and flair[8, 8, 8] > 0  # skull stripped: background exactly zero
    assert main(["synth", "brats", "--out", str(tmp_path / "c"), "--size", "4x4"]) == 2


def test_cli_synth_help_lists_generators(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "brats" in text and "mr-dicom" in text
    with pytest.raises(SystemExit):
        main(["synth", "brats", "--help"])
    assert "--size" in capsys.readouterr().out
