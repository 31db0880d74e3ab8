from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet

from medssl.cli.main import main
from medssl.data.index import ERROR_REASONS, index_export
from medssl.data.keys import make_key
from medssl.data.manifest import read_manifest
from medssl.data.synth.dicom_writer import build_dataset, new_uid, write_dataset, write_series

SALT = "test-salt"
PATIENTS = {"PID-0001": "Doe^Jane", "PID-0002": "Roe^Richard"}


def _series_tags(rng, patient_id, study_uid, description, number, study_date="20240102", **extra):
    return {
        "PatientID": patient_id,
        "PatientName": PATIENTS[patient_id],
        "PatientBirthDate": "19600101",
        "AccessionNumber": "ACC12345",
        "StudyDate": study_date,
        "StudyTime": "101010",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": new_uid(rng),
        "FrameOfReferenceUID": new_uid(rng),
        "SeriesDescription": description,
        "SeriesNumber": number,
        **extra,
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    """A messy export: nested and flat folders, names with and without extensions, broken files."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(7)
    truth: dict = {"series": {}, "errors": {}}
    study_a = new_uid(rng)
    study_b = new_uid(rng)
    volume = rng.normal(500, 50, size=(8, 6, 5))
    # 1. T1 in patient/study/series folders, instance numbers reversed and file names shuffled
    tags = _series_tags(rng, "PID-0001", study_a, "t1_mprage_sag", 2)
    names = [f"PID-0001/STUDY1/SER2/IM{n}" for n in rng.permutation(5)]
    write_series(
        volume,
        [root / n for n in names],
        spacing=(0.9, 0.9, 1.2),
        tags=tags,
        rescale=(0.5, 0.0),
        instance_numbers=[5, 4, 3, 2, 1],
        rng=rng,
    )
    truth["series"][tags["SeriesInstanceUID"]] = ("T1", names)
    # 2. FLAIR and T2 mixed in one flat folder, .dcm extensions, oblique FLAIR
    a = 1 / np.sqrt(2)
    for description, sequence, number, (row, column), extra in (
        ("t2_tirm_tra_dark-fluid", "FLAIR", 3, ((a, a, 0), (-a, a, 0)), {"InversionTime": 2500}),
        ("t2_tse_tra", "T2", 4, ((1, 0, 0), (0, 1, 0)), {}),
    ):
        tags = _series_tags(rng, "PID-0001", study_a, description, number, **extra)
        names = [f"mixed/{rng.integers(1e9)}.dcm" for _ in range(5)]
        write_series(
            volume,
            [root / n for n in names],
            spacing=(1.0, 1.0, 3.0),
            row_cosine=row,
            column_cosine=column,
            tags=tags,
            rng=rng,
        )
        truth["series"][tags["SeriesInstanceUID"]] = (sequence, names)
    # 3. post-contrast T1 of a second patient, one series spread over two folders
    tags = _series_tags(rng, "PID-0002", study_b, "AX T1 POST GAD", 5, ContrastBolusAgent="Gadovist")
    names = [f"{'partA' if k % 2 else 'partB'}/slice{k}" for k in range(5)]
    write_series(volume, [root / n for n in names], spacing=(1.0, 1.0, 2.0), tags=tags, rng=rng)
    truth["series"][tags["SeriesInstanceUID"]] = ("T1C", names)
    # 4. a later study of patient 1 (study rank 1), with a slice missing
    tags = _series_tags(rng, "PID-0001", new_uid(rng), "t2_tse_tra", 2, study_date="20230101")
    names = [f"PID-0001/STUDY2/t2_{k}.dcm" for k in range(5)]
    write_series(volume, [root / n for n in names], spacing=(1.0, 1.0, 2.0), tags=tags, rng=rng)
    (root / names[2]).unlink()
    truth["series"][tags["SeriesInstanceUID"]] = ("T2", [n for n in names if n != names[2]])
    truth["missing_slice_series"] = tags["SeriesInstanceUID"]
    # 5. broken files
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an image")
    (root / "junk" / "empty").write_bytes(b"")
    good = root / truth["series"][next(iter(truth["series"]))][1][0]
    data = good.read_bytes()
    (root / "junk" / "cut.dcm").write_bytes(data[: len(data) - 40])
    shutil.copy(good, root / "junk" / "copy_of_slice")  # a duplicate instance
    sr = build_dataset(
        np.zeros((2, 2), np.uint16),
        {"StudyInstanceUID": study_a, "SeriesInstanceUID": new_uid(rng)},
        modality="SR",
        sop_class="1.2.840.10008.5.1.4.1.1.88.11",
    )
    del sr.PixelData
    write_dataset(sr, root / "junk" / "report_sr")
    for name, syntax in (("mpeg2", "1.2.840.10008.1.2.4.100"), ("philips_private", "1.3.46.670589.33.1.4.1")):
        ds = build_dataset(
            np.zeros((4, 4), np.uint16), {"StudyInstanceUID": study_a, "SeriesInstanceUID": new_uid(rng)}, modality="MR"
        )
        ds.PixelData = encapsulate([b"\x00" * 16])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(root / "junk" / name, enforce_file_format=False, little_endian=True, implicit_vr=False)
    truth["errors"] = {
        "junk/notes.txt": "not_dicom",
        "junk/empty": "empty_file",
        "junk/cut.dcm": "truncated",
        "junk/report_sr": "no_pixel_data",
        "junk/mpeg2": "unsupported_transfer_syntax",
        "junk/philips_private": "unsupported_transfer_syntax",
    }
    truth["root"] = root
    return truth


@pytest.fixture(scope="module")
def indexed(export):
    return index_export(export["root"], salt=SALT, workers=1)


def test_series_grouped_by_uid_not_folder(export, indexed):
    manifest = indexed.manifest
    assert len(manifest) == len(export["series"])
    for uid, (sequence, names) in export["series"].items():
        row = manifest[manifest["series_key"] == make_key("series", uid, SALT)]
        assert len(row) == 1, uid
        row = row.iloc[0]
        assert row["sequence"] == sequence
        if uid != export["missing_slice_series"]:
            # files come back in slice order: the order they were written in, whatever their names or numbers
            assert row["files"] == names
            assert row["geometry"] == "ok"
        assert row["n_instances"] == len(names) and row["rows"] == 6 and row["columns"] == 8


def test_geometry_columns(export, indexed):
    manifest = indexed.manifest.set_index("sequence", drop=False)
    assert manifest.loc["T1C", "spacing"] == pytest.approx([1.0, 1.0, 2.0])
    assert manifest.loc["FLAIR", "plane"] == "axial" and manifest.loc["T1", "spacing"] == pytest.approx([0.9, 0.9, 1.2])
    broken = indexed.manifest[
        indexed.manifest["series_key"] == make_key("series", export["missing_slice_series"], SALT)
    ]
    assert broken["geometry"].iloc[0].startswith("missing slices: 1 slice")
    assert manifest.loc["T1C", "contrast"] and not manifest.loc["T1", "contrast"]


def test_study_rank_keys_and_patients(indexed):
    manifest = indexed.manifest
    assert manifest["patient_key"].nunique() == 2
    first = manifest[manifest["patient_key"] == make_key("patient", "PID-0001", SALT)]
    assert sorted(first["study_rank"].unique()) == [0, 1]
    assert first["study_key"].nunique() == 2
    assert set(manifest["patient_key"]) == {make_key("patient", p, SALT) for p in PATIENTS}


def test_every_bad_file_reported_with_its_reason(export, indexed):
    errors = indexed.errors.set_index("path")
    for path, reason in export["errors"].items():
        assert errors.loc[path, "reason"] == reason, (path, errors.loc[path, "detail"])
    assert errors.loc["junk/copy_of_slice", "reason"] == "duplicate_instance"
    assert set(indexed.errors["reason"]) <= set(ERROR_REASONS)
    assert indexed.summary["n_errors"] == len(export["errors"]) + 1


def test_no_phi_in_outputs(export, indexed, tmp_path, capsys, caplog):
    out = tmp_path / "manifest.csv"
    status = main(["index", str(export["root"]), "--out", str(out), "--salt", SALT, "--workers", "1"])
    assert status == 0
    text = out.read_text() + (tmp_path / "manifest_errors.csv").read_text()
    text += capsys.readouterr().out + caplog.text
    uids = set()
    for path in Path(export["root"]).rglob("*"):
        if path.is_file() and path.suffix != ".txt" and path.stat().st_size > 200:
            try:
                ds = dcmread(path, stop_before_pixels=True, force=True)
            except Exception:
                continue
            uids |= {str(ds.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if k in ds}
    forbidden = {"Doe", "Jane", "Roe", "Richard", "19600101", "20240102", "20230101", "ACC12345"} | uids
    leaked = [f for f in forbidden if f in text]
    assert not leaked
    # patient IDs in folder names cannot be removed from the paths, but they are detected and counted
    assert indexed.summary["n_paths_with_phi"] == 5 + 4  # the T1 series and the second study live in PID-0001/


def test_parallel_equals_sequential(export, indexed):
    parallel = index_export(export["root"], salt=SALT, workers=2)
    pd.testing.assert_frame_equal(parallel.manifest, indexed.manifest)
    pd.testing.assert_frame_equal(parallel.errors, indexed.errors)


def test_manifest_round_trip_through_cli_parquet(export, tmp_path):
    out = tmp_path / "m.parquet"
    assert (
        main(["index", str(export["root"]), "--out", str(out), "--salt", SALT, "--errors", str(tmp_path / "e.csv")])
        == 0
    )
    manifest = read_manifest(out)
    assert len(manifest) == len(export["series"]) and isinstance(manifest["files"].iloc[0], list)
    assert (tmp_path / "e.csv").is_file()


def test_exit_status_when_nothing_indexed(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello")
    assert main(["index", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--salt", SALT]) == 1
    assert "indexed 0 instances" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv"), "--salt", SALT]) == 2


def test_real_dicomdir_file_set_matches_pydicom(dicomdir_tests_dir, tmp_path):
    """Index pydicom's `dicomdirtests` and compare patients, studies and series with pydicom's FileSet."""
    root = tmp_path / "dicomdirtests"
    shutil.copytree(dicomdir_tests_dir, root)
    result = index_export(root, salt=SALT, workers=1)
    fileset = FileSet(root / "DICOMDIR")
    expected_series: dict[str, int] = {}
    for instance in fileset:
        key = make_key("series", instance.SeriesInstanceUID, SALT)
        expected_series[key] = expected_series.get(key, 0) + 1
    manifest = result.manifest[result.manifest["series_key"].isin(expected_series)]
    assert dict(zip(manifest["series_key"], manifest["n_instances"], strict=True)) == expected_series
    assert set(manifest["patient_key"]) == {make_key("patient", p, SALT) for p in fileset.find_values("PatientID")}
    assert set(manifest["study_key"]) == {make_key("study", s, SALT) for s in fileset.find_values("StudyInstanceUID")}
    # every image referenced by the DICOMDIR is in the manifest
    listed = {f for files in manifest["files"] for f in files}
    assert listed == {str(Path(i.path).relative_to(root)) for i in fileset}
    # TINY_ALPHA's instances carry no pixel data: reported, not indexed
    tiny = result.errors[result.errors["path"].str.startswith("TINY_ALPHA/PT")]
    assert len(tiny) == 50 and set(tiny["reason"]) == {"no_pixel_data"}
    # the 3-instance localizers of 98892003 have three orientations each: kept, but flagged
    assert manifest["geometry"].str.startswith("mixed orientations").sum() >= 2
    # CR images of 77654033 are MONOCHROME1
    assert set(manifest.loc[manifest["modality"] == "CR", "photometric"]) == {"MONOCHROME1"}


def test_real_pydicom_files_truncated_and_transfer_syntax_variants(pydicom_data_dir, tmp_path):
    for name in (
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_truncated.dcm",
        "rtplan.dcm",
    ):
        shutil.copy(pydicom_data_dir / name, tmp_path / name)
    result = index_export(tmp_path, salt=SALT, workers=1)
    errors = dict(zip(result.errors["path"], result.errors["reason"], strict=True))
    assert errors["MR_truncated.dcm"] == "truncated"
    assert errors["rtplan.dcm"] == "no_pixel_data"
    # the transfer-syntax variants are one instance (same SOPInstanceUID) written four ways: one kept
    assert sum(r == "duplicate_instance" for r in errors.values()) == 3
    assert len(result.manifest) == 1 and result.manifest["modality"].iloc[0] == "MR"


def test_planar_series_with_several_views_becomes_one_row_per_view(tmp_path):
    """Some vendors put a whole screening exam (four views) in one series: one row per view and side, no conflict."""
    from medssl.data.synth.dicom_writer import write_planar_image

    rng = np.random.default_rng(0)
    common = {
        "PatientID": "PID-0001",
        "StudyInstanceUID": new_uid(rng),
        "SeriesInstanceUID": new_uid(rng),
        "ImagerPixelSpacing": ["0.1", "0.1"],
    }
    for view, side in (("CC", "L"), ("CC", "R"), ("MLO", "L"), ("MLO", "R")):
        write_planar_image(
            rng.integers(0, 4000, (16, 12)),
            tmp_path / f"{side}{view}",
            modality="MG",
            rng=rng,
            tags={**common, "ViewPosition": view, "ImageLaterality": side},
        )
    result = index_export(tmp_path, salt=SALT, workers=1)
    manifest = result.manifest
    assert sorted(zip(manifest["view"], manifest["laterality"], strict=True)) == [
        ("CC", "L"),
        ("CC", "R"),
        ("MLO", "L"),
        ("MLO", "R"),
    ]
    assert manifest["series_key"].nunique() == 4 and manifest["series_key"].str.fullmatch(r"ser-[0-9a-f]{16}").all()
    assert manifest["study_key"].nunique() == 1 and (manifest["n_instances"] == 1).all()
    assert "tag_conflict" not in set(result.errors["reason"])
    again = index_export(tmp_path, salt=SALT, workers=1).manifest
    assert sorted(again["series_key"]) == sorted(manifest["series_key"])
