"""Loading DICOM series (and NIfTI) into MONAI MetaTensors: real files, SimpleITK as the geometry oracle, errors."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage

from medssl.data.dicom import DicomSeriesReader, MultipleSeriesError, UnsupportedDicomError, _native_frame, load_series
from medssl.data.geometry import LPS_TO_RAS
from medssl.data.keys import Keyer
from medssl.data.synth.dicom_writer import build_dataset, new_uid, write_dataset, write_planar_image, write_series
from medssl.exceptions import DicomReadError, SeriesGeometryError
from medssl.transforms import LoadVolume

MR_SMALL_VARIANTS = (
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
)
PATIENT_ID, PATIENT_NAME = "PID-778899", "Doe^Jane"


def series_tags(rng: np.random.Generator, **extra) -> dict:
    tags = {
        "PatientID": PATIENT_ID,
        "PatientName": PATIENT_NAME,
        "PatientBirthDate": "19700101",
        "StudyDate": "20240102",
        "AccessionNumber": "ACC123",
        "StudyInstanceUID": new_uid(rng),
        "SeriesInstanceUID": new_uid(rng),
        "FrameOfReferenceUID": new_uid(rng),
        "SeriesNumber": 3,
        "SeriesDescription": "t1_tse_tra",
    }
    tags.update(extra)
    return tags


def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = np.radians(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_oblique_series(folder: Path, seed: int = 0, shape=(12, 10, 7), spacing=(0.8, 1.1, 2.5), rescale=None):
    """A synthetic oblique series: shuffled file names, InstanceNumbers unrelated to position. Returns (volume, files,
    geometry dict)."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 3000, size=shape).astype(float)
    if rescale is not None:
        slope, intercept = rescale
        volume = volume * slope + intercept
    rot = rotation((17.0, -23.0, 31.0))
    origin = np.array([-40.5, 12.25, 33.0])
    names = [f"IMG{int(v):05d}" for v in rng.permutation(shape[2]) * 7 + 3]  # names unrelated to slice order
    numbers = list(rng.permutation(shape[2]) + 100)
    files = write_series(
        volume,
        [folder / n for n in names],
        spacing=spacing,
        row_cosine=rot[:, 0],
        column_cosine=rot[:, 1],
        origin=origin,
        tags=series_tags(rng),
        rescale=rescale,
        instance_numbers=numbers,
        rng=rng,
    )
    return volume, files, {"rot": rot, "origin": origin, "spacing": spacing}


def sitk_series(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    return array, affine_lps


def assert_matches_sitk(image: torch.Tensor, folder: Path) -> None:
    array, affine_lps = sitk_series(folder)
    np.testing.assert_allclose(image.numpy(), array, rtol=0, atol=1e-3)
    np.testing.assert_allclose(LPS_TO_RAS @ affine_lps, image.affine.numpy(), atol=1e-4)


# ------------------------------------------------------------------------------------------- real files
@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_transfer_syntaxes_load_identically(pydicom_data_dir: Path, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MR_small_padded: pydicom warns about the trailing padding it removes
        image = load_series(pydicom_data_dir / name)
        reference = pixel_array(pydicom.dcmread(pydicom_data_dir / "MR_small.dcm"))
    assert image.shape == (64, 64, 1)
    np.testing.assert_array_equal(image[:, :, 0].numpy(), reference.T.astype(np.float32))
    # MR_small: IPP (-83.9063, -91.2, 6.6406), axial, 0.3125 mm pixels, 0.8 mm slice thickness; RAS negates x and y.
    np.testing.assert_allclose(image.affine[:3, 3].numpy(), [83.9063, 91.2, 6.6406], atol=1e-4)
    np.testing.assert_allclose(np.diag(image.affine.numpy())[:3], [-0.3125, -0.3125, 0.8], atol=1e-6)
    assert image.meta["modality"] == "MR" and image.meta["transfer_syntax"]


def test_truncated_file_raises_naming_it(pydicom_data_dir: Path) -> None:
    path = pydicom_data_dir / "MR_truncated.dcm"
    with pytest.raises(DicomReadError, match="MR_truncated.dcm.*truncated") as info:
        load_series(path)
    assert info.value.path == os.fspath(path)


def test_transfer_syntax_without_decoder_raises(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ds = build_dataset(np.zeros((8, 8), np.uint16), series_tags(rng), modality="MR")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 multi-component: no pydicom plugin
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    path = write_dataset(ds, tmp_path / "j2k_part2.dcm")
    with pytest.raises(DicomReadError, match="j2k_part2.dcm: cannot decode JPEG 2000 Part 2.*no pydicom decoder"):
        load_series(path)


def test_not_dicom_and_missing_files_raise(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(DicomReadError, match="notes.txt.*not a DICOM file"):
        load_series([text, text])
    with pytest.raises(DicomReadError, match="no such file"):
        load_series(tmp_path / "absent.dcm")


def test_real_ct_series_matches_simpleitk(dicomdir_tests_dir: Path) -> None:
    folder = dicomdir_tests_dir / "98892001" / "CT5N"  # 5 axial CT slices, InstanceNumber rising as z falls
    image = load_series(folder)
    assert image.shape == (16, 16, 5)
    assert_matches_sitk(image, folder)
    assert image.affine[2, 2] > 0  # z ascends along the slice axis whatever the InstanceNumbers say


def test_real_radial_mr_is_refused_while_monai_pydicom_stacks_it(dicomdir_tests_dir: Path) -> None:
    folder = dicomdir_tests_dir / "98892003" / "MR700"  # 7 radial slices: 7 different orientations, one series
    with pytest.raises(SeriesGeometryError, match="MR700.*mixed orientations: 7"):
        load_series(folder)
    # The claim of our docstring: MONAI's PydicomReader stacks this folder into one "volume" without complaint.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_image = LoadImage(image_only=True)(str(folder), reader=PydicomReader())
    assert monai_image.shape[-1] == 7
    # ... and so does LoadImage when our reader sits in its constructor: it falls back to its default readers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fallback = LoadImage(image_only=True, reader=DicomSeriesReader())(str(folder))
    assert fallback.shape[-1] == 7
    with pytest.raises(SeriesGeometryError):  # LoadVolume passes the reader at call time: the error reaches us
        LoadVolume()(str(folder))


def test_folder_with_several_series_names_the_folder(dicomdir_tests_dir: Path) -> None:
    folder = dicomdir_tests_dir / "98892003" / "MR2"  # a localizer and two 3-plane pilots: three series
    with pytest.raises(MultipleSeriesError, match=r"MR2: this folder holds 3 series") as info:
        load_series(folder)
    assert "FAST LOCALIZER" in str(info.value)


def test_real_ct_with_missing_slices(dicomdir_tests_dir: Path) -> None:
    folder = dicomdir_tests_dir / "77654033" / "CT2"  # 4 of the slices of a 1.25 mm series: a 202.5 mm gap
    with pytest.raises(SeriesGeometryError, match="CT2: missing slices"):
        load_series(folder)


def test_tiny_alpha_has_no_pixel_data(dicomdir_tests_dir: Path) -> None:
    # TINY_ALPHA: 50 CT "instances" written by pydicom's FileSet example with identity tags only, no image.
    folder = dicomdir_tests_dir / "TINY_ALPHA" / "PT000000" / "ST000000" / "SE000000"
    assert len(list(folder.iterdir())) == 50
    with pytest.raises(DicomReadError, match=r"IM0000\w+: no pixel data \(CT Image Storage\)"):
        load_series(folder)


def test_planar_cr_loads_as_2d(dicomdir_tests_dir: Path) -> None:
    image = load_series(dicomdir_tests_dir / "77654033" / "CR1")
    assert image.ndim == 2 and image.meta["geometry"] == "planar" and image.meta["modality"] == "CR"


# ------------------------------------------------------------------------------------------- synthetic geometry
def test_oblique_shuffled_series_matches_simpleitk_and_truth(tmp_path: Path) -> None:
    volume, files, geometry = write_oblique_series(tmp_path / "s", rescale=(2.0, -1024.0))
    shuffled = list(reversed(files))
    image = load_series(shuffled)
    np.testing.assert_allclose(image.numpy(), volume, atol=1e-3)  # slice order and rescale recovered
    assert_matches_sitk(image, tmp_path / "s")
    expected = np.eye(4)
    expected[:3, :3] = geometry["rot"] * np.asarray(geometry["spacing"])
    expected[:3, 3] = geometry["origin"]
    np.testing.assert_allclose(image.affine.numpy(), LPS_TO_RAS @ expected, atol=1e-4)
    np.testing.assert_allclose(image.meta["spacing"], geometry["spacing"], atol=1e-5)
    assert image.meta["plane"] == "oblique"


def test_loadimage_with_reader_at_call_time_on_folder_and_files(tmp_path: Path) -> None:
    volume, files, _ = write_oblique_series(tmp_path / "s", seed=1)
    by_folder = LoadImage(image_only=True)(str(tmp_path / "s"), reader=DicomSeriesReader())
    by_files = LoadImage(image_only=True, ensure_channel_first=True)(
        [str(f) for f in files], reader=DicomSeriesReader()
    )
    assert by_files.shape == (1, *volume.shape)
    torch.testing.assert_close(by_folder, by_files[0])
    assert by_folder.meta["space"] == "RAS"


def test_metadata_is_phi_free_with_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    tags = series_tags(rng)
    files = write_series(
        rng.integers(0, 100, (6, 5, 3)).astype(float),
        [tmp_path / f"f{i}" for i in range(3)],
        spacing=(1, 1, 2),
        tags=tags,
        rng=rng,
    )
    image = load_series(files, salt="site-salt", sequence="T1")
    flat = repr({k: v for k, v in image.meta.items() if k != "filename_or_obj"})
    for secret in (
        PATIENT_ID,
        "Doe",
        "19700101",
        "20240102",
        "ACC123",
        tags["SeriesInstanceUID"],
        tags["StudyInstanceUID"],
    ):
        assert secret not in flat
    keyer = Keyer("site-salt", warn=False)
    assert image.meta["series_key"] == keyer.series(tags["SeriesInstanceUID"])
    assert image.meta["patient_key"] == keyer.patient(PATIENT_ID)
    assert image.meta["sequence"] == "T1" and image.meta["series_description"] == "t1_tse_tra"


@pytest.mark.parametrize("problem", ["missing", "orientation", "duplicate", "rows"])
def test_broken_series_raise_clear_errors(tmp_path: Path, problem: str) -> None:
    folder = tmp_path / "broken"
    _, files, _ = write_oblique_series(folder, seed=2)
    files = sorted(files, key=lambda f: float(np.dot(pydicom.dcmread(f).ImagePositionPatient, [0, 0, 1])))
    if problem == "missing":
        os.remove(files[3])
        match = "missing slices: 1 slice"
    else:
        ds = pydicom.dcmread(files[3])
        if problem == "orientation":
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
            match = "mixed orientations"
        elif problem == "duplicate":
            ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
            match = "distinct slice positions"
        else:
            other = np.zeros((ds.Rows + 2, ds.Columns), dtype=np.int16)
            ds.set_pixel_data(other, "MONOCHROME2", 16, generate_instance_uid=False)
            match = "images of different sizes"
        ds.save_as(files[3])
    with pytest.raises(SeriesGeometryError, match=f"broken.*{match}"):
        load_series(folder)


def test_folder_skips_non_dicom_files(tmp_path: Path) -> None:
    volume, _, _ = write_oblique_series(tmp_path / "s", seed=3)
    (tmp_path / "s" / "README.txt").write_text("export notes")
    (tmp_path / "s" / "DICOMDIR").write_bytes(b"")
    np.testing.assert_allclose(load_series(tmp_path / "s").numpy(), volume, atol=1e-3)


# ------------------------------------------------------------------------------------------- pixels
@pytest.mark.parametrize("signed", [False, True])
def test_native_fast_path_equals_pydicom_with_unused_high_bits(tmp_path: Path, signed: bool) -> None:
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 4096, (9, 11)).astype(np.uint16)
    garbage = stored | (rng.integers(0, 16, stored.shape).astype(np.uint16) << 12)  # junk in the 4 unused bits
    pixels = garbage.view(np.int16) if signed else garbage
    ds = build_dataset(pixels, series_tags(rng), modality="CT")
    ds.BitsStored, ds.HighBit = 12, 11  # set after the pixels: pydicom refuses to write values beyond BitsStored
    path = write_dataset(ds, tmp_path / "ct.dcm")
    read = pydicom.dcmread(path)
    fast = _native_frame(read)
    assert fast is not None
    np.testing.assert_array_equal(fast, pixel_array(read))


def test_modality_lut_matches_pydicom(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    files = write_series(
        rng.integers(0, 2000, (7, 5, 4)).astype(float),
        [tmp_path / "r" / f"{i}" for i in range(4)],
        spacing=(1, 1, 1),
        tags=series_tags(rng),
        rng=rng,
    )
    for i, path in enumerate(files):  # a fractional rescale that differs per slice
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = f"{0.37 + 0.01 * i:.2f}", "-12.5"
        ds.save_as(path)
    lut_path = tmp_path / "lut.dcm"
    ds = build_dataset(rng.integers(0, 64, (6, 5)).astype(np.uint16), series_tags(rng), modality="CT")
    item = Dataset()
    item.LUTDescriptor, item.LUTData = [64, 0, 16], [int(v) for v in rng.integers(0, 4000, 64)]
    item["LUTData"].VR = "US"
    ds.ModalityLUTSequence = DicomSequence([item])
    write_dataset(ds, lut_path)
    for loaded, paths in ((load_series(files), files), (load_series(lut_path), [lut_path])):
        for k, path in enumerate(paths):
            read = pydicom.dcmread(path)
            expected = apply_modality_lut(pixel_array(read), read).astype(np.float32).T
            np.testing.assert_array_equal(loaded[..., k].numpy() if loaded.ndim == 3 else loaded.numpy(), expected)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    image = rng.integers(0, 4096, (20, 16)).astype(np.uint16)
    path = write_planar_image(
        image,
        tmp_path / "cr.dcm",
        tags=series_tags(rng, PixelSpacing=[0.2, 0.15]),
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=12,
        rng=rng,
    )
    loaded = load_series(path)
    np.testing.assert_array_equal(loaded.numpy(), (4095 - image.astype(np.float32)).T)
    np.testing.assert_allclose(np.diag(loaded.affine.numpy())[:2], [-0.15, -0.2])
    raw = LoadImage(image_only=True)(str(path), reader=DicomSeriesReader(invert_monochrome1=False))
    np.testing.assert_array_equal(raw.numpy(), image.T.astype(np.float32))


# ------------------------------------------------------------------------------------------- enhanced multi-frame
def enhanced_mr(tmp_path: Path, with_positions: bool = True) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(13)
    nx, ny, nz = 8, 6, 5
    truth = rng.integers(0, 1000, (nx, ny, nz)).astype(np.int16)
    rot = rotation((0.0, 10.0, 5.0))
    origin = np.array([10.0, -20.0, 5.0])
    spacing = (0.7, 0.9, 3.0)
    order = rng.permutation(nz)  # frames stored out of spatial order
    frames = np.stack([truth[:, :, k].T for k in order])
    ds = build_dataset(frames[0], series_tags(rng), modality="MR", sop_class=EnhancedMRImageStorage)
    ds.NumberOfFrames = nz
    ds.PixelData = frames.astype(np.int16).tobytes()
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = spacing[2]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in np.concatenate([rot[:, 0], rot[:, 1]])]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2, -100, "US"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        group = Dataset()
        if with_positions:
            position = Dataset()
            position.ImagePositionPatient = [float(v) for v in origin + k * spacing[2] * rot[:, 2]]
            group.PlanePositionSequence = DicomSequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    path = write_dataset(ds, tmp_path / "enhanced.dcm")
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)
    affine[:3, 3] = origin
    return path, truth * 2.0 - 100, LPS_TO_RAS @ affine


def test_enhanced_multiframe_mr(tmp_path: Path) -> None:
    path, expected, affine = enhanced_mr(tmp_path)
    image = load_series(path)
    np.testing.assert_allclose(image.numpy(), expected)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-5)


def test_multiframe_without_positions_is_not_supported_yet(tmp_path: Path) -> None:
    path, _, _ = enhanced_mr(tmp_path, with_positions=False)
    with pytest.raises(UnsupportedDicomError, match="enhanced.dcm.*not supported yet"):
        load_series(path)


# ------------------------------------------------------------------------------------------- NIfTI
def test_nifti_through_loadvolume_matches_nibabel(nibabel_data_dir: Path) -> None:
    import nibabel as nib

    path = nibabel_data_dir / "anatomical.nii"
    image = LoadVolume()(str(path))
    reference = nib.load(path)
    np.testing.assert_array_equal(image.numpy(), np.asarray(reference.dataobj, dtype=np.float32))
    np.testing.assert_allclose(image.affine.numpy(), reference.affine)
    four_d = LoadVolume(ensure_channel_first=True)(str(nibabel_data_dir / "example4d.nii.gz"))
    assert four_d.shape == (2, 128, 96, 24)


def test_copied_series_loads_identically(tmp_path: Path, dicomdir_tests_dir: Path) -> None:
    source = dicomdir_tests_dir / "98892001" / "CT5N"
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    for i, path in enumerate(sorted(copy.iterdir(), reverse=True)):
        path.rename(copy / f"slice_{i}.dcm")  # reversed names: name order is now the opposite of InstanceNumber
    torch.testing.assert_close(load_series(copy), load_series(source))
