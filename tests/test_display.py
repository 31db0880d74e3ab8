from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medssl.data.display import (
    DISPLAY_INFO_KEYS,
    PlanarDicomReader,
    PlanarImageError,
    display_image,
    export_planar_display,
    pixel_spacing,
    register_planar_exporter,
)
from medssl.data.synth.dicom_writer import build_dataset, write_planar_image
from medssl.exceptions import DicomReadError, InputFileError

PHI = {"PatientName": "DOE^JANE", "PatientID": "PID-778899", "PatientBirthDate": "19600101", "StudyDate": "20200202"}


def _cr_files(dicomdir_tests_dir: Path) -> list[Path]:
    return sorted(p for folder in ("CR1", "CR2", "CR3") for p in (dicomdir_tests_dir / "77654033" / folder).iterdir())


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1], written out independently of pydicom."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_real_monochrome1_cr_images_are_inverted(dicomdir_tests_dir):
    for path in _cr_files(dicomdir_tests_dir):
        ds = pydicom.dcmread(path)
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        image, info = display_image(path)
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = 1.0 - _linear_window(values, float(ds.WindowCenter), float(ds.WindowWidth))
        np.testing.assert_allclose(image, expected, atol=1e-5)
        assert info["inverted"] and info["voi"] == "window" and info["photometric"] == "MONOCHROME1"
        assert info["pixel_spacing"] == [0.1, 0.1] and info["spacing_source"] == "ImagerPixelSpacing"
        # the brightest stored pixel is the darkest displayed one
        assert image.flat[np.argmax(ds.pixel_array)] == image.min()
        raw, raw_info = display_image(path, invert_monochrome1=False)
        np.testing.assert_allclose(raw, 1.0 - image, atol=1e-6)
        assert not raw_info["inverted"]


def _tags(**extra) -> dict:
    return {
        **PHI,
        "StudyInstanceUID": "1.2.3.4",
        "SeriesInstanceUID": "1.2.3.4.5",
        "ViewPosition": "CC",
        "ImageLaterality": "L",
        "PatientOrientation": ["A", "R"],
        **extra,
    }


def test_monochrome1_and_monochrome2_copies_display_the_same(tmp_path):
    rng = np.random.default_rng(0)
    display = np.clip(rng.uniform(size=(12, 10)), 0, 1)
    stored2 = np.round(200 + display * 3000).astype(np.uint16)
    write_planar_image(
        stored2,
        tmp_path / "m2.dcm",
        tags=_tags(WindowCenter="1700.5", WindowWidth="3001"),
        modality="MG",
        photometric="MONOCHROME2",
        rng=rng,
    )
    write_planar_image(
        4095 - stored2,
        tmp_path / "m1.dcm",
        tags=_tags(WindowCenter="2395.5", WindowWidth="3001"),
        modality="MG",
        photometric="MONOCHROME1",
        rng=rng,
    )
    image2, info2 = display_image(tmp_path / "m2.dcm")
    image1, info1 = display_image(tmp_path / "m1.dcm")
    np.testing.assert_allclose(image1, image2, atol=1e-6)
    np.testing.assert_allclose(image2, display, atol=1.0 / 3000)
    assert info1["inverted"] and not info2["inverted"]
    assert info2["view"] == "CC" and info2["laterality"] == "L" and info2["chest_wall_side"] == "left"
    assert info2["presentation_intent"] == "" and not info2["for_processing"]


def test_for_processing_without_window_is_flagged_and_min_max_scaled(tmp_path):
    stored = np.arange(20, dtype=np.uint16).reshape(4, 5) * 100 + 50
    path = write_planar_image(
        stored,
        tmp_path / "raw.dcm",
        tags=_tags(PresentationIntentType="FOR PROCESSING"),
        modality="MG",
        sop_class="MG-PROCESSING",
    )
    image, info = display_image(path)
    assert info["for_processing"] and info["voi"] == "minmax"
    assert image.min() == 0.0 and image.max() == 1.0
    np.testing.assert_allclose(image, (stored - 50) / 1900.0, atol=1e-6)


def test_window_override_and_voi_off(tmp_path):
    stored = np.linspace(0, 4000, 30).astype(np.uint16).reshape(5, 6)
    path = write_planar_image(
        stored, tmp_path / "w.dcm", tags=_tags(WindowCenter="2000", WindowWidth="4000"), modality="DX"
    )
    image, info = display_image(path, window=(1000, 500))
    np.testing.assert_allclose(image, _linear_window(stored.astype(float), 1000, 500), atol=1e-6)
    assert info["voi"] == "window_override" and info["window_center"] == 1000
    image, info = display_image(path, voi=False)
    assert info["voi"] == "minmax" and image.max() == 1.0


def test_voi_lut_sequence(tmp_path):
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4)
    ds = build_dataset(stored, _tags(), modality="DX", bits_stored=8)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 8]
    item.LUTData = [255 - 17 * i for i in range(16)]  # a reversed ramp
    ds.VOILUTSequence = [item]
    image, info = display_image(ds)
    assert info["voi"] == "lut"
    np.testing.assert_allclose(image, (255 - 17 * stored) / 255.0, atol=1e-6)


def test_pixel_spacing_prefers_pixel_spacing():
    ds = Dataset()
    ds.ImagerPixelSpacing = [0.1, 0.1]
    assert pixel_spacing(ds) == ((0.1, 0.1), "ImagerPixelSpacing")
    ds.PixelSpacing = [0.085, 0.09]
    assert pixel_spacing(ds) == ((0.085, 0.09), "PixelSpacing")
    assert np.isnan(pixel_spacing(Dataset())[0][0])


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.dcm"):
        display_image(tmp_path / "nope.dcm")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(DicomReadError, match="notes.txt"):
        display_image(text)
    colour = build_dataset(np.zeros((2, 2), dtype=np.uint8), _tags(), modality="DX")
    colour.SamplesPerPixel = 3
    colour.filename = str(tmp_path / "colour.dcm")
    with pytest.raises(PlanarImageError, match="colour.dcm.*colour image"):
        display_image(colour)
    no_pixels = Dataset()
    no_pixels.Modality = "DX"
    with pytest.raises(PlanarImageError, match="no pixel data"):
        display_image(no_pixels)


def test_reader_gives_display_ready_images_without_phi(tmp_path):
    from monai.transforms import LoadImage

    stored = np.round(np.linspace(100, 3000, 24)).astype(np.uint16).reshape(4, 6)
    path = write_planar_image(
        stored,
        tmp_path / "img.dcm",
        tags=_tags(WindowCenter="1550", WindowWidth="2900", ImagerPixelSpacing=[0.2, 0.1]),
        modality="MG",
        photometric="MONOCHROME1",
    )
    reader = PlanarDicomReader(salt="test-salt")
    assert reader.verify_suffix(str(path)) and not reader.verify_suffix(str(tmp_path / "x.png"))
    image = LoadImage(image_only=True)(str(path), reader=reader)
    expected, _ = display_image(path)
    assert tuple(image.shape) == (4, 6)
    np.testing.assert_allclose(image.numpy(), expected)
    meta = image.meta
    assert set(DISPLAY_INFO_KEYS) <= set(meta)
    assert meta["view"] == "CC" and meta["laterality"] == "L" and meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(meta["spacing"], [0.2, 0.1])
    assert meta["patient_key"].startswith("pat-") and meta["study_key"].startswith("stu-")
    text = json.dumps({k: str(v) for k, v in meta.items()})
    for value in list(PHI.values()) + ["1.2.3.4"]:
        assert value not in text.replace(str(path), "")
    transposed = LoadImage(image_only=True)(str(path), reader=PlanarDicomReader(reverse_indexing=True))
    assert tuple(transposed.shape) == (6, 4)
    np.testing.assert_allclose(transposed.numpy(), expected.T)


def test_export_planar_display_and_registration(tmp_path):
    from PIL import Image

    from medssl.data import nifti

    stored = np.round(np.linspace(0, 4000, 20)).astype(np.uint16).reshape(4, 5)
    write_planar_image(
        stored, tmp_path / "export" / "a.dcm", tags=_tags(WindowCenter="2000", WindowWidth="4000"), modality="MG"
    )
    row = {
        "root": str(tmp_path / "export"),
        "files": ["a.dcm"],
        "patient_key": "pat-0000000000000001",
        "study_key": "stu-0000000000000001",
        "series_key": "ser-0000000000000001",
        "view": "CC",
        "laterality": "L",
    }
    written = export_planar_display(row, tmp_path / "out" / "ser-1_MG-L-CC")
    assert [p.name for p in written] == ["ser-1_MG-L-CC.png", "ser-1_MG-L-CC.json"]
    png = np.asarray(Image.open(written[0])).astype(float) / 65535.0
    np.testing.assert_allclose(png, display_image(tmp_path / "export" / "a.dcm")[0], atol=1.0 / 65535)
    sidecar = json.loads(written[1].read_text())
    assert sidecar["images"][0]["voi"] == "window" and sidecar["view"] == "CC"
    assert "DOE" not in written[1].read_text()
    before = dict(nifti.EXPORTERS)
    try:
        register_planar_exporter()
        assert nifti.get_exporter("MG") is export_planar_display
        assert nifti.get_exporter("MR") is nifti.export_volume_nifti
    finally:
        nifti.EXPORTERS.clear()
        nifti.EXPORTERS.update(before)
