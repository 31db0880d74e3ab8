from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medssl.cli.main import main
from medssl.data.display import display_image
from medssl.data.synth.mammo import (
    BREAST_LEVEL_COLUMNS,
    FINDING_COLUMNS,
    generate,
    plan_breast,
)

CODES = {"CC": codes.cid4014.CranioCaudal.value, "MLO": codes.cid4014.MedioLateralObliqueProjection.value}
ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict, pd.DataFrame]:
    out = tmp_path_factory.mktemp("vindr")
    summary = generate(out, 5, seed=0, size="96x72", missing=0.2, monochrome1=0.4, malignant=0.5)
    table = pd.read_csv(out / "breast-level_annotations.csv", dtype=str)
    return out, summary, table


def _file(out: Path, row) -> Path:
    return out / "images" / row.study_id / f"{row.image_id}.dicom"


def test_layout_columns_and_files(data):
    out, summary, table = data
    with (out / "breast-level_annotations.csv").open() as handle:
        assert tuple(next(csv.reader(handle))) == BREAST_LEVEL_COLUMNS
    with (out / "finding_annotations.csv").open() as handle:
        assert tuple(next(csv.reader(handle))) == FINDING_COLUMNS
    assert summary["n_exams"] == 5 and summary["n_missing_views"] == 1 and len(table) == 19 == summary["n_images"]
    assert table["study_id"].nunique() == 5 and table["image_id"].is_unique
    assert set(table["split"]) <= {"training", "test"} and set(table["laterality"]) == {"L", "R"}
    assert table["breast_birads"].str.fullmatch(r"BI-RADS [1-5]").all()
    assert table["breast_density"].str.fullmatch(r"DENSITY [A-D]").all()
    for row in table.itertuples():
        assert _file(out, row).is_file()
    files = sorted((out / "images").rglob("*.dicom"))
    assert len(files) == 19  # nothing else written without --processing-copies / --spot-views


def test_dicom_tags(data):
    out, _, table = data
    photometrics = set()
    for row in table.itertuples():
        ds = pydicom.dcmread(_file(out, row))
        assert ds.Modality == "MG" and ds.SOPClassUID.name.startswith("Digital Mammography X-Ray Image Storage")
        assert ds.ViewPosition == row.view_position and ds.ImageLaterality == row.laterality
        code = ds.ViewCodeSequence[0]
        assert code.CodeValue == CODES[row.view_position] and code.CodingSchemeDesignator == "SCT"
        assert list(ds.PatientOrientation) == ORIENTATION[(row.laterality, row.view_position)]
        assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.BitsStored == 12
        assert (ds.Rows, ds.Columns) == (int(row.height), int(row.width)) == (96, 72)
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(240.0 / 96, abs=1e-3)
        assert "WindowCenter" in ds and ds.PatientID.startswith("SYNMG") and ds.PatientName
        photometrics.add(ds.PhotometricInterpretation)
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_monochrome1_is_stored_inverted_and_displayed_like_monochrome2(data):
    out, _, table = data
    for row in table.itertuples():
        path = _file(out, row)
        ds = pydicom.dcmread(path)
        image, info = display_image(path)
        far_side = image[:, -4:] if row.laterality == "L" else image[:, :4]
        near_side = image[:, :4] if row.laterality == "L" else image[:, -4:]
        assert far_side[:8].max() == 0.0  # air, beyond the nipple: black
        middle = near_side[image.shape[0] // 3 : 2 * image.shape[0] // 3]
        assert middle.min() > 0.1  # tissue along the chest wall: bright
        corner = int(ds.pixel_array[0, -1] if row.laterality == "L" else ds.pixel_array[0, 0])
        assert corner == (4095 if ds.PhotometricInterpretation == "MONOCHROME1" else 0)
        assert info["inverted"] == (ds.PhotometricInterpretation == "MONOCHROME1")


def test_lesions_sit_at_the_same_depth_in_both_views(data):
    out, _, table = data
    findings = pd.read_csv(out / "finding_annotations.csv", dtype=str)
    findings = findings[findings["finding_categories"] != "['No Finding']"]
    depths: dict[tuple[str, str], dict[str, float]] = {}
    contrasts = []
    for row in findings.itertuples():
        image, _ = display_image(_file(out, row))
        tissue = np.nonzero((image > 0.02).any(axis=0))[0]
        extent = tissue.max() - tissue.min() + 1
        centre = (float(row.xmin) + float(row.xmax)) / 2
        from_wall = centre if row.laterality == "L" else image.shape[1] - 1 - centre
        depths.setdefault((row.study_id, row.laterality), {})[row.view_position] = from_wall / extent
        x0, y0, x1, y1 = (int(float(v)) for v in (row.xmin, row.ymin, row.xmax, row.ymax))
        inner = image[y0 : y1 + 1, x0 : x1 + 1]
        ring = image[max(0, y0 - 6) : y1 + 7, max(0, x0 - 6) : x1 + 7]
        contrasts.append(inner.mean() - (ring.sum() - inner.sum()) / max(1, ring.size - inner.size))
    pairs = [d for d in depths.values() if len(d) == 2]
    assert pairs, "the fixture should hold a lesion seen in both views"
    for pair in pairs:
        assert abs(pair["CC"] - pair["MLO"]) < 0.15
    assert np.mean(contrasts) > 0.0


def test_one_view_is_a_noisy_cue_and_two_views_are_reliable():
    rng = np.random.default_rng(0)
    plans = [
        plan_breast(rng, malignant=0.2, benign=0.15, distractors=0.5, contrast=0.15, height=96) for _ in range(3000)
    ]
    suspicious = ("spiculated", "calcifications")
    in_cc = np.array([any(les.kind in suspicious and "CC" in les.views for les in p.lesions) for p in plans])
    in_both = np.array([any(les.kind in suspicious and len(les.views) == 2 for les in p.lesions) for p in plans])
    malignant = np.array([p.malignant for p in plans])
    base = malignant.mean()
    single_view_precision = malignant[in_cc].mean()
    assert base < single_view_precision < 0.6  # a blob in one view raises suspicion but is often a distractor
    assert malignant[in_both].mean() == 1.0 and in_both[malignant].all()  # seen in both views: always cancer
    birads = np.array([p.birads for p in plans])
    assert (birads[malignant] >= 4).all() and (birads[~malignant] <= 3).all()


def test_same_seed_same_data(tmp_path):
    first = generate(tmp_path / "a", 2, seed=7, size="64x48")
    second = generate(tmp_path / "b", 2, seed=7, size="64x48")
    assert first["n_images"] == second["n_images"]
    table_a = (tmp_path / "a" / "breast-level_annotations.csv").read_text()
    assert table_a == (tmp_path / "b" / "breast-level_annotations.csv").read_text()
    row = pd.read_csv(tmp_path / "a" / "breast-level_annotations.csv", dtype=str).iloc[0]
    a = pydicom.dcmread(tmp_path / "a" / "images" / row.study_id / f"{row.image_id}.dicom")
    b = pydicom.dcmread(tmp_path / "b" / "images" / row.study_id / f"{row.image_id}.dicom")
    assert np.array_equal(a.pixel_array, b.pixel_array) and a.SOPInstanceUID == b.SOPInstanceUID
    with pytest.raises(ValueError, match="fraction"):
        generate(tmp_path / "c", 2, seed=0, missing=1.5)


def test_cli(tmp_path, capsys):
    argv = ["synth", "mammo", "--out", str(tmp_path / "cli"), "--n", "2", "--seed", "1", "--size", "64x48"]
    assert main(argv + ["--lesion-scale", "3"]) == 0
    assert '"n_exams": 2' in capsys.readouterr().out
    assert (tmp_path / "cli" / "breast-level_annotations.csv").is_file()
    with pytest.raises(SystemExit):
        main(["synth", "mammo", "--help"])
    assert "VinDr-Mammo" in capsys.readouterr().out


def test_index_fills_view_and_laterality_of_every_image(data):
    from medssl.data.index import index_export

    out, _, table = data
    result = index_export(out / "images", workers=1)
    manifest = result.manifest
    assert len(manifest) == len(table) and result.errors.empty
    expected = {row.image_id: (row.view_position, row.laterality) for row in table.itertuples()}
    for row in manifest.itertuples():
        image_id = Path(row.files[0]).stem
        assert (row.view, row.laterality) == expected[image_id]
        assert row.modality == "MG" and row.presentation_intent == "FOR PRESENTATION"


def test_lesion_scale_multiplies_the_drawn_radius(tmp_path):
    plans = {
        scale: plan_breast(
            np.random.default_rng(3),
            malignant=1.0,
            benign=0.0,
            distractors=1.0,
            contrast=0.3,
            height=64,
            lesion_scale=scale,
        )
        for scale in (1.0, 3.0)
    }
    assert len(plans[1.0].lesions) >= 2  # the malignant lesion and a distractor
    for small, large in zip(plans[1.0].lesions, plans[3.0].lesions):
        assert large.radius == pytest.approx(3.0 * small.radius) and large.depth == small.depth
    boxes = {}
    for scale in (1.0, 3.0):
        generate(tmp_path / str(scale), 2, seed=1, size="64x48", malignant=1.0, missing=0.0, lesion_scale=scale)
        findings = pd.read_csv(tmp_path / str(scale) / "finding_annotations.csv")
        findings = findings[findings["finding_categories"] != "['No Finding']"]
        boxes[scale] = ((findings["xmax"] - findings["xmin"]) * (findings["ymax"] - findings["ymin"])).to_numpy()
    assert len(boxes[1.0]) == len(boxes[3.0]) > 0
    assert np.median(boxes[3.0]) > 4.0 * np.median(boxes[1.0])  # ~9x the area, less where the box is clipped
    with pytest.raises(ValueError, match="lesion_scale"):
        generate(tmp_path / "bad", 1, seed=0, size="64x48", lesion_scale=0.0)
