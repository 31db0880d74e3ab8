from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from skimage.filters import threshold_otsu

from medssl.cli.main import main
from medssl.data.synth.mr_dicom import EXPORT_DIR, GROUND_TRUTH, generate, read_ground_truth

SEED, N, MATRIX = 1, 3, 12


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("pacs")
    summary = generate(out, N, SEED, matrix=MATRIX)
    return out, summary, read_ground_truth(out)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _volume(export: Path, record: dict) -> np.ndarray:
    slices = [dcmread(export / f) for f in record["files"]]
    return np.stack([ds.pixel_array.T * float(ds.get("RescaleSlope", 1)) for ds in slices], axis=-1)


def test_layout_and_ground_truth(synthetic):
    out, summary, truth = synthetic
    export = out / EXPORT_DIR
    assert (out / GROUND_TRUTH).is_file() and not (export / GROUND_TRUTH).exists()
    assert summary["n_patients"] == N and summary["n_studies"] == len(truth["studies"]) == N + 1  # one follow-up
    assert {s["layout"] for s in truth["studies"]} == {"folders", "flat", "dicomdir"}
    listed = {f for r in truth["series"] for f in r["files"]} | {b["path"] for b in truth["broken"]}
    listed |= set(truth["dicomdirs"])
    on_disk = {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    assert listed == on_disk  # every file is described, every described file exists
    names = [Path(f).name for r in truth["series"] for f in r["files"]]
    assert any(n.endswith(".dcm") for n in names) and any("." not in n for n in names)
    assert any(sorted(r["files"]) != r["files"] for r in truth["series"] if r["stackable"])  # names not in slice order
    assert any(
        len({Path(f).parent for f in r["files"]}) == 1 and Path(r["files"][0]).parent.name == "incoming"
        for r in truth["series"]
    )
    # a patient with two studies, a study without contrast, a study with two T2 series
    assert any(p["n_studies"] == 2 for p in truth["patients"])
    assert any("T1C" in s["missing_sequences"] for s in truth["studies"])
    assert any(r["repeat"] and r["sequence"] == "T2" for r in truth["series"])


def test_series_headers_match_the_truth(synthetic):
    out, _, truth = synthetic
    export = out / EXPORT_DIR
    patients = {p["patient_id"]: p for p in truth["patients"]}
    for record in truth["series"]:
        first = dcmread(export / record["files"][0], stop_before_pixels=True)
        assert first.Modality == "MR" and first.SeriesInstanceUID == record["series_uid"]
        assert first.StudyInstanceUID == record["study_uid"] and first.SeriesDescription == record["description"]
        assert len(record["files"]) == record["n_slices"]
        # PHI-like tags are there on purpose: they are what the rest of the pipeline must not leak
        assert first.PatientName == patients[record["patient_id"]]["patient_name"]
        assert first.PatientBirthDate and first.AccessionNumber and first.StudyDate and first.ReferringPhysicianName
        assert ("ContrastBolusAgent" in first) == record["contrast"] == (record["sequence"] == "T1C")
        if record["sequence"] == "ADC":
            assert list(first.ImageType)[0] == "DERIVED" and "ADC" in list(first.ImageType)
        if not record["stackable"]:
            assert record["sequence"] == "OTHER"
            continue
        affine = np.asarray(record["affine_lps"])
        for k, name in enumerate(record["files"]):  # files are in slice order along the normal
            ds = dcmread(export / name, stop_before_pixels=True)
            np.testing.assert_allclose(
                [float(v) for v in ds.ImagePositionPatient], affine[:3, :3] @ [0, 0, k] + affine[:3, 3], atol=1e-4
            )
            np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], record["orientation"], atol=1e-5)
            assert (ds.Rows, ds.Columns) == (record["rows"], record["columns"])


def test_sequences_have_different_geometry_but_the_same_anatomy(synthetic):
    out, _, truth = synthetic
    export = out / EXPORT_DIR
    for study in truth["studies"]:
        series = [r for r in truth["series"] if r["study_uid"] == study["study_uid"] and r["stackable"]]
        assert len({tuple(np.round(r["orientation"], 3)) for r in series}) >= 3
        assert len({tuple(np.round(r["spacing"], 3)) for r in series}) >= 3
        dwi = next(r for r in series if r["sequence"] == "DWI")
        adc = next(r for r in series if r["sequence"] == "ADC")
        assert adc["affine_lps"] == dwi["affine_lps"] and adc["series_uid"] != dwi["series_uid"]
        centre = np.asarray(study["phantom"]["centre_lps"])
        for record in series:
            volume = _volume(export, record)
            mask = volume > (0 if record["sequence"] == "ADC" else threshold_otsu(volume))
            affine = np.asarray(record["affine_lps"])
            world = affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]
            # the head's centre, found from each series' own pixels and affine, is the phantom's centre
            tolerance = 0.5 * max(record["spacing"])
            assert np.linalg.norm(world - centre) < tolerance, (record["description"], world, centre)
            # and the head lies inside every in-plane field of view (no border row or column belongs to it)
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), record["description"]


def test_broken_files_are_broken_as_documented(synthetic):
    out, _, truth = synthetic
    export = out / EXPORT_DIR
    reasons = {b["reason"] for b in truth["broken"]}
    assert reasons == {"truncated", "not_dicom", "empty_file", "no_pixel_data", "unsupported_transfer_syntax"}
    for broken in truth["broken"]:
        path = export / broken["path"]
        if broken["reason"] == "empty_file":
            assert path.stat().st_size == 0
        elif broken["reason"] == "not_dicom":
            with pytest.raises(InvalidDicomError):
                dcmread(path)
        elif broken["reason"] == "no_pixel_data":
            ds = dcmread(path)
            assert ds.Modality == "SR" and "PixelData" not in ds
        elif broken["reason"] == "truncated":
            ds = dcmread(path, stop_before_pixels=True)  # the header is intact
            assert ds.Modality == "MR"
            with pytest.raises(Exception):  # noqa: B017 - pydicom raises different types per version
                _ = dcmread(path).pixel_array
        else:
            ds = dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.92"
            with pytest.raises(Exception):  # noqa: B017
                _ = ds.pixel_array


def test_dicomdir_file_set_references_its_study(synthetic):
    out, _, truth = synthetic
    export = out / EXPORT_DIR
    (dicomdir,) = truth["dicomdirs"]
    fileset = FileSet(export / dicomdir)
    referenced = {Path(instance.path).resolve().relative_to(export.resolve()).as_posix() for instance in fileset}
    study = next(s for s in truth["studies"] if s["layout"] == "dicomdir")
    expected = {f for r in truth["series"] if r["study_uid"] == study["study_uid"] for f in r["files"]}
    assert referenced == expected


def test_series_names_follow_the_sequence_rules(synthetic):
    sequences = pytest.importorskip("medssl.data.sequences")
    out, _, truth = synthetic
    export = out / EXPORT_DIR
    for record in truth["series"]:
        ds = dcmread(export / record["files"][0], stop_before_pixels=True)
        fields = {
            k: ds.get(k)
            for k in (
                "Modality",
                "SeriesDescription",
                "ProtocolName",
                "SequenceName",
                "ImageType",
                "EchoTime",
                "RepetitionTime",
                "InversionTime",
                "ContrastBolusAgent",
            )
        }
        fields["ImageType"] = list(ds.ImageType)
        assert sequences.infer_sequence(fields) == record["sequence"], record["description"]


def test_indexer_agrees_with_the_truth(synthetic):
    index = pytest.importorskip("medssl.data.index")
    from medssl.data.keys import make_key

    out, _, truth = synthetic
    result = index.index_export(out / EXPORT_DIR, salt="s", workers=1)
    manifest = result.manifest.set_index("series_key")
    assert len(manifest) == len(truth["series"])
    for record in truth["series"]:
        row = manifest.loc[make_key("series", record["series_uid"], "s")]
        assert row["n_instances"] == record["n_slices"] and row["sequence"] == record["sequence"]
        assert (row["geometry"] == "ok") == record["stackable"]
        if record["stackable"]:
            assert list(row["files"]) == record["files"]
            np.testing.assert_allclose(row["spacing"], record["spacing"], rtol=1e-4)
    assert sorted(zip(result.errors["path"], result.errors["reason"])) == sorted(
        (b["path"], b["reason"]) for b in truth["broken"]
    )


def test_same_seed_same_bytes_other_seed_other_export(synthetic, tmp_path):
    out, _, truth = synthetic
    again = tmp_path / "again"
    generate(again, N, SEED, matrix=MATRIX)
    assert _digests(again / EXPORT_DIR) == _digests(out / EXPORT_DIR)
    assert read_ground_truth(again) == truth
    other = tmp_path / "other"
    generate(other, 1, SEED + 1, matrix=8, broken=False)
    assert read_ground_truth(other)["patients"][0]["patient_id"] != truth["patients"][0]["patient_id"]


def test_cli_synth_mr_dicom(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, with a DICOMDIR (pydicom reports absolute paths)
    args = "synth mr-dicom --out pacs --n 3 --seed 2 --matrix 8 --no-broken --followups 0".split()
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_broken_files"] == 0 and summary["layouts"]["dicomdir"] == 1
    truth = read_ground_truth(tmp_path / "pacs")
    assert all((tmp_path / "pacs" / EXPORT_DIR / f).is_file() for r in truth["series"] for f in r["files"])
    assert main(["synth", "mr-dicom", "--out", "x", "--matrix", "2"]) == 2
