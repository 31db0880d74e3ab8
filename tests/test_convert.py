"""``medssl convert``: a synthetic PACS export (ground truth known) indexed, then converted series by series and
stacked per study; affines against the ground truth and SimpleITK, errors reported and skipped, no PHI in outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from medssl.cli.main import main
from medssl.data.geometry import LPS_TO_RAS
from medssl.data.index import index_export
from medssl.data.keys import Keyer
from medssl.data.manifest import read_manifest, write_manifest
from medssl.data.nifti import EXPORTERS, convert_manifest, select_series
from medssl.data.synth.dicom_writer import new_uid, write_planar_image
from medssl.data.synth.mr_dicom import generate, read_ground_truth
from medssl.data.synth.shapes import grid_points

SALT = "convert-test-salt"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("synth")
    generate(out, n=3, seed=4, matrix=24, followups=0.0, dicomdir=False)
    truth = read_ground_truth(out)
    result = index_export(out / "export", salt=SALT, workers=1)
    manifest_path = write_manifest(result.manifest, out / "manifest.csv")
    keyer = Keyer(SALT, warn=False)
    series = {keyer.series(s["series_uid"]): s for s in truth["series"]}
    studies = {keyer.study(s["study_uid"]): s for s in truth["studies"]}
    return {"root": out, "truth": truth, "manifest": manifest_path, "series": series, "studies": studies}


def phi_strings(truth: dict) -> list[str]:
    values = []
    for patient in truth["patients"]:
        values += [patient["patient_id"], patient["patient_name"].split("^")[0], patient["birth_date"]]
    for study in truth["studies"]:
        values += [study["study_uid"], study["study_date"], study["accession"]]
    values += [s["series_uid"] for s in truth["series"]]
    return [v for v in values if v]


def assert_no_phi(folder: Path, truth: dict) -> None:
    secrets = phi_strings(truth)
    for path in folder.rglob("*"):
        if path.suffix in (".json", ".csv"):
            text = path.read_text()
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{path} holds {leaked}"


def test_series_to_nifti_with_ground_truth_affines(export: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nifti"
    assert main(["convert", str(export["manifest"]), "--out", str(out)]) == 0
    assert "medssl convert: wrote" in capsys.readouterr().out
    converted = pd.read_csv(out / "converted.csv")
    errors = pd.read_csv(out / "convert_errors.csv", keep_default_na=False)
    manifest = read_manifest(export["manifest"])
    assert len(converted) + len(errors) == len(manifest)  # every series written or reported
    checked = 0
    for record in converted.itertuples():
        truth = export["series"][record.series_key]
        image = nib.load(out / record.path)
        assert record.path == f"{record.patient_key}/{record.study_key}/{record.series_key}_{record.label}.nii.gz"
        assert image.shape == (truth["columns"], truth["rows"], truth["n_slices"])
        np.testing.assert_allclose(image.affine, LPS_TO_RAS @ np.asarray(truth["affine_lps"]), atol=1e-3)
        sidecar = json.loads((out / record.sidecar).read_text())
        assert sidecar["series_key"] == record.series_key and sidecar["modality"] == "MR"
        checked += 1
    assert checked >= 15
    reasons = dict(zip(errors["series_key"], errors["reason"]))
    localizers = [k for k, s in export["series"].items() if not s["stackable"] and k in reasons]
    assert localizers and all(reasons[k] == "SeriesGeometryError" for k in localizers)
    assert not any(str(export["root"]) in detail for detail in errors["detail"])  # paths relative to the export
    assert_no_phi(out, export["truth"])


def test_nifti_matches_simpleitk_reading_the_dicom_series(export: dict, tmp_path: Path) -> None:
    manifest = read_manifest(export["manifest"])
    row = manifest[(manifest["sequence"] == "FLAIR") & (manifest["geometry"] == "ok")].iloc[0]
    result = convert_manifest(manifest[manifest["series_key"] == row["series_key"]], tmp_path)
    ours = sitk.ReadImage(str(tmp_path / result.converted[0]["path"]))
    reader = sitk.ImageSeriesReader()
    folder = Path(row["root"]) / Path(row["files"][0]).parent  # may be the flat folder mixing a study's series
    uid = export["series"][row["series_key"]]["series_uid"]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    dicom = reader.Execute()
    np.testing.assert_allclose(ours.GetOrigin(), dicom.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ours.GetDirection(), dicom.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), dicom.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(dicom), atol=1e-2)


def head_correlation(channel: np.ndarray, affine_ras: np.ndarray, phantom: dict, shift_mm: float = 0.0) -> float:
    """Correlation between a channel and the phantom's true head ellipsoid on the channel's grid (where it has
    signal): about 0.85 when the grid is right, under 0.7 when it is 20 mm off."""
    affine = LPS_TO_RAS @ affine_ras
    affine[:3, 3] += shift_mm
    points = grid_points(affine, channel.shape)
    head = (points - np.asarray(phantom["centre_lps"])) @ np.asarray(phantom["rotation"])
    inside = (np.linalg.norm(head / np.asarray(phantom["radii"]), axis=1) <= 1.0).reshape(channel.shape)
    valid = channel != 0  # zero padding outside a sequence's field of view
    return float(np.corrcoef(channel[valid], inside[valid])[0, 1])


def test_stack_per_study(export: dict, tmp_path: Path) -> None:
    out = tmp_path / "stacks"
    stack = ["T1C", "T1", "T2", "FLAIR"]
    assert main(["convert", str(export["manifest"]), "--out", str(out), "--stack", ",".join(stack)]) == 0
    manifest = read_manifest(export["manifest"])
    studies = manifest.loc[manifest["modality"] == "MR", "study_key"].unique()
    converted = pd.read_csv(out / "converted.csv")
    errors = pd.read_csv(out / "convert_errors.csv", keep_default_na=False)
    assert set(converted["study_key"]) | set(errors["study_key"]) == set(studies)
    # patient 1's study has no post-contrast T1: reported with its study key, not written
    missing = errors[errors["reason"] == "MissingSequenceError"]
    assert len(missing) == 1 and "['T1C']" in missing["detail"].iloc[0]
    assert missing["study_key"].iloc[0] in missing["detail"].iloc[0]
    for record in converted.itertuples():
        image = nib.load(out / record.path)
        sidecar = json.loads((out / record.sidecar).read_text())
        assert sidecar["channel_def"] == {"0": "T1C", "1": "T1", "2": "T2", "3": "FLAIR"}
        assert sidecar["presence"] == [1.0, 1.0, 1.0, 1.0] and sidecar["reference"] == "T1C"
        assert sidecar["shape"] == list(image.shape)
        reference = export["series"][sidecar["sources"]["T1C"]]
        assert image.shape == (reference["columns"], reference["rows"], reference["n_slices"], 4)
        np.testing.assert_allclose(image.affine, LPS_TO_RAS @ np.asarray(reference["affine_lps"]), atol=1e-3)
        data = np.asarray(image.dataobj)
        phantom = export["studies"][record.study_key]["phantom"]
        for channel in range(4):  # every sequence, resampled from its own orientation and spacing, on the true head
            assert head_correlation(data[..., channel], image.affine, phantom) > 0.8
        assert head_correlation(data[..., 0], image.affine, phantom, shift_mm=20.0) < 0.7
    assert_no_phi(out, export["truth"])


def test_repeated_sequence_picks_by_the_documented_rule(export: dict, tmp_path: Path) -> None:
    manifest = read_manifest(export["manifest"])
    t2 = manifest[manifest["sequence"] == "T2"]
    repeated = t2.groupby("study_key").filter(lambda g: len(g) > 1)
    assert len(repeated) >= 2, "the synthetic export repeats T2 for patient 2"
    study = repeated["study_key"].iloc[0]
    rows = repeated[repeated["study_key"] == study].to_dict(orient="records")
    truth = [export["series"][r["series_key"]] for r in rows]
    expected = max(zip(rows, truth), key=lambda rt: (rt[1]["n_slices"], rt[1]["series_number"]))[0]
    assert select_series(rows)["series_key"] == expected["series_key"]
    result = convert_manifest(manifest[manifest["study_key"] == study], tmp_path, stack=["T2", "T1"])
    sidecar = json.loads((tmp_path / result.converted[0]["sidecar"]).read_text())
    assert sidecar["sources"]["T2"] == expected["series_key"]
    assert sidecar["alternatives"]["T2"] == [r["series_key"] for r in rows if r is not expected]


def test_missing_zeros_writes_the_study_with_presence(export: dict, tmp_path: Path) -> None:
    manifest = read_manifest(export["manifest"])
    counts = manifest[manifest["sequence"] == "T1C"].groupby("study_key").size()
    lacking = sorted(set(manifest.loc[manifest["modality"] == "MR", "study_key"]) - set(counts.index))
    result = convert_manifest(
        manifest[manifest["study_key"] == lacking[0]], tmp_path, stack=["T1C", "T1", "T2"], missing="zeros"
    )
    assert not result.errors
    sidecar = json.loads((tmp_path / result.converted[0]["sidecar"]).read_text())
    assert sidecar["presence"] == [0.0, 1.0, 1.0] and sidecar["reference"] == "T1"
    data = np.asarray(nib.load(tmp_path / result.converted[0]["path"]).dataobj)
    assert float(np.abs(data[..., 0]).sum()) == 0.0 and float(np.abs(data[..., 1]).sum()) > 0


def planar_manifest(folder: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    tags = {
        "PatientID": "P9",
        "StudyInstanceUID": new_uid(rng),
        "SeriesInstanceUID": new_uid(rng),
        "ImagerPixelSpacing": [0.15, 0.15],
        "ViewPosition": "PA",
    }
    path = write_planar_image(
        rng.integers(0, 4000, (30, 20)), folder / "export" / "cxr.dcm", tags=tags, modality="DX", rng=rng
    )
    keyer = Keyer(SALT, warn=False)
    row = {
        "patient_key": keyer.patient("P9"),
        "study_key": keyer.study(tags["StudyInstanceUID"]),
        "series_key": keyer.series(tags["SeriesInstanceUID"]),
        "modality": "DX",
        "sequence": "",
        "view": "PA",
        "laterality": "",
        "n_instances": 1,
        "rows": 30,
        "columns": 20,
        "spacing": [0.15, 0.15],
        "orientation": [],
        "photometric": "MONOCHROME2",
        "files": [path.name],
        "root": str(path.parent),
    }
    return pd.DataFrame([row])


def test_planar_series_written_display_ready(tmp_path: Path) -> None:
    result = convert_manifest(planar_manifest(tmp_path), tmp_path / "out")
    record = result.converted[0]
    assert record["path"].endswith("_DX-PA.png")
    assert "display-ready" in json.loads((tmp_path / "out" / record["sidecar"]).read_text())["png"]
    nifti = convert_manifest(planar_manifest(tmp_path), tmp_path / "out_nifti", planar_format="nifti").converted[0]
    assert nifti["path"].endswith("_DX-PA.nii.gz")
    assert nib.load(tmp_path / "out_nifti" / nifti["path"]).shape == (20, 30)


def test_exporters_are_looked_up_per_modality(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(EXPORTERS, "DX", "medssl.data.nifti.export_volume_nifti")  # route DX to another exporter
    result = convert_manifest(planar_manifest(tmp_path), tmp_path / "out")
    sidecar = json.loads((tmp_path / "out" / result.converted[0]["sidecar"]).read_text())
    assert "png" not in sidecar and result.converted[0]["path"].endswith(".nii.gz")  # the registry decided


def test_nothing_written_exits_1(tmp_path: Path, capsys) -> None:
    manifest = planar_manifest(tmp_path)
    manifest.loc[0, "files"] = ["absent.dcm"]
    path = write_manifest(manifest, tmp_path / "manifest.csv")
    assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 1
    errors = pd.read_csv(tmp_path / "out" / "convert_errors.csv")
    assert errors["reason"].tolist() == ["InputFileError"] and "absent.dcm" in errors["detail"].iloc[0]
    assert "skipped 1 with errors" in capsys.readouterr().out


def test_bad_options_are_errors(tmp_path: Path, export: dict) -> None:
    assert (
        main(["convert", str(export["manifest"]), "--out", str(tmp_path), "--stack", "T1,T2", "--reference", "T1C"])
        == 2
    )
    assert main(["convert", str(export["manifest"]), "--out", str(tmp_path), "--reference", "T1C"]) == 2


@pytest.mark.slow
def test_workers_give_the_same_outputs(export: dict, tmp_path: Path) -> None:
    manifest = read_manifest(export["manifest"])
    one = convert_manifest(manifest, tmp_path / "one", stack=["T2", "FLAIR"], workers=1)
    two = convert_manifest(manifest, tmp_path / "two", stack=["T2", "FLAIR"], workers=2)
    assert [r["path"] for r in one.converted] == [r["path"] for r in two.converted]
    for record in one.converted:
        a = np.asarray(nib.load(tmp_path / "one" / record["path"]).dataobj)
        b = np.asarray(nib.load(tmp_path / "two" / record["path"]).dataobj)
        np.testing.assert_array_equal(a, b)
