"""Chest X-ray transforms: real CR DICOM files (MONOCHROME1), JPG/PNG, resize/pad, report pairing, collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import DataLoader, Dataset
from PIL import Image

from medssl.data.reports import ReportError
from medssl.exceptions import InputFileError
from medssl.transforms.cxr import (
    CXR_META_KEYS,
    LoadCXRImage,
    LoadCXRImaged,
    PairReportd,
    cxr_transforms,
)

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___-year-old man with cough.

 FINDINGS:

 There is a small left pleural effusion.  Heart size is normal.

 IMPRESSION:

 Small left pleural effusion.  No pneumothorax.
"""


@pytest.fixture(scope="module")
def cr_files(dicomdir_tests_dir: Path) -> dict[str, Path]:
    """pydicom's three CR images of patient 77654033 (MONOCHROME1; CR1 is a left lateral, CR2/CR3 AP)."""
    return {name: next((dicomdir_tests_dir / "77654033" / name).iterdir()) for name in ("CR1", "CR2", "CR3")}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """Non-square 8-bit gradients as PNG, JPG, RGB PNG and a 16-bit PNG."""
    folder = tmp_path_factory.mktemp("pictures")
    rows, columns = np.mgrid[0:12, 0:20]
    gray = (rows * 16 + columns * 3).astype(np.uint8)
    files = {}
    for name, array in (("gray.png", gray), ("gray.jpg", gray), ("rgb.png", np.stack([gray] * 3, axis=-1))):
        Image.fromarray(array).save(folder / name, quality=100)
        files[name] = (folder / name, gray / 255.0)
    wide = gray.astype(np.uint16) * 257
    Image.fromarray(wide).save(folder / "gray16.png")
    files["gray16.png"] = (folder / "gray16.png", wide / 65535.0)
    return files


def test_real_cr_monochrome1_is_inverted_in_place_with_views(cr_files):
    for name, path in cr_files.items():
        image = LoadCXRImage()(path)
        raw = pydicom.dcmread(path).pixel_array.astype(float)
        assert image.shape == (1, *raw.shape) and image.dtype == torch.float32
        values = image[0].numpy()
        assert 0.0 <= values.min() and values.max() <= 1.0
        # MONOCHROME1: larger stored values are darker, so the display is a decreasing function of the raw values,
        # pixel by pixel in the same layout (not transposed or flipped): a perfect negative rank correlation.
        order_raw = np.argsort(np.argsort(raw.ravel(), kind="stable"))
        order_out = np.argsort(np.argsort(-values.ravel(), kind="stable"))
        assert np.corrcoef(order_raw, order_out)[0, 1] > 0.99, name
        assert image.meta["photometric"] == "MONOCHROME1" and image.meta["inverted"] is True
        assert image.meta["source_format"] == "dicom" and image.meta["modality"] == "CR"
        assert image.meta["voi"] == "window"
    assert LoadCXRImage()(cr_files["CR1"]).meta["view"] == "LL"
    assert LoadCXRImage()(cr_files["CR1"]).meta["frontal"] is False
    assert LoadCXRImage()(cr_files["CR1"]).meta["view_group"] == "lateral"
    assert LoadCXRImage()(cr_files["CR2"]).meta["view"] == "AP"
    assert LoadCXRImage()(cr_files["CR2"]).meta["frontal"] is True


def test_no_inversion_option_keeps_stored_order(cr_files):
    image = LoadCXRImage(invert_monochrome1=False)(cr_files["CR2"])
    raw = pydicom.dcmread(cr_files["CR2"]).pixel_array.astype(float)
    assert np.corrcoef(raw.ravel(), image[0].numpy().ravel())[0, 1] > 0.99
    assert image.meta["inverted"] is False


def test_meta_has_no_identifiers(cr_files):
    image = LoadCXRImage()(cr_files["CR3"])
    ds = pydicom.dcmread(cr_files["CR3"])
    assert set(image.meta) >= set(CXR_META_KEYS)
    identifiers = {str(ds.PatientID), str(ds.PatientName), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)}
    for key, value in image.meta.items():
        if key != "filename_or_obj":
            assert not any(i and i in str(value) for i in identifiers), key


def test_jpg_png_load_as_displayed(pictures):
    for name, (path, expected) in pictures.items():
        image = LoadCXRImage()(path)
        assert image.shape == (1, 12, 20), name  # (channel, rows, columns): not transposed
        tolerance = 0.02 if name.endswith(".jpg") else 1e-6
        np.testing.assert_allclose(image[0].numpy(), expected, atol=tolerance, err_msg=name)
        assert image.meta["view"] == "" and image.meta["frontal"] is False
        assert image.meta["source_format"] == ("jpeg" if name.endswith(".jpg") else "png")


def test_bad_files_raise_naming_the_file(tmp_path):
    with pytest.raises(InputFileError, match="no such image file"):
        LoadCXRImage()(tmp_path / "absent.jpg")
    text = tmp_path / "notes.dcm"
    text.write_text("not an image")
    with pytest.raises(InputFileError, match="notes.dcm"):
        LoadCXRImage()(text)


def test_dictionary_version_fills_view_unless_the_item_has_one(cr_files, pictures):
    out = LoadCXRImaged("image")({"image": str(cr_files["CR1"])})
    assert out["view"] == "LL" and out["frontal"] is False
    kept = LoadCXRImaged("image")({"image": str(cr_files["CR1"]), "view": "PA", "frontal": True})
    assert kept["view"] == "PA" and kept["frontal"] is True
    jpg = LoadCXRImaged("image")({"image": str(pictures["gray.jpg"][0])})
    assert jpg["view"] == "" and jpg["frontal"] is False


def test_resize_keeps_aspect_and_pads(tmp_path):
    white = np.full((30, 60), 255, dtype=np.uint8)  # twice as wide as high
    Image.fromarray(white).save(tmp_path / "wide.png")
    out = cxr_transforms(32)({"image": str(tmp_path / "wide.png")})
    image = out["image"]
    assert image.shape == (1, 32, 32)
    content_rows = int((image[0].numpy() > 0.5).any(axis=1).sum())
    assert content_rows == 16  # 30x60 -> 16x32, padded with black above and below
    assert float(image[0, 0].max()) == 0.0 and float(image[0, 16].min()) > 0.99


def test_training_augmentation_is_seeded_and_three_channels(pictures):
    path = str(pictures["gray.png"][0])
    a = cxr_transforms(24, train=True, augment_prob=1.0, seed=3, channels=3)({"image": path})["image"]
    b = cxr_transforms(24, train=True, augment_prob=1.0, seed=3, channels=3)({"image": path})["image"]
    c = cxr_transforms(24, train=True, augment_prob=1.0, seed=4, channels=3)({"image": path})["image"]
    assert a.shape == (3, 24, 24)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(a[0], a[2])


def test_jpg_and_dicom_items_collate_in_one_batch(cr_files, pictures):
    items = [
        {"image": str(cr_files["CR2"]), "label": [1.0, 0.0]},
        {"image": str(pictures["gray.jpg"][0]), "label": [0.0, 1.0]},
    ]
    pipeline = cxr_transforms(16, label_keys=["label"])
    batch = next(iter(DataLoader(Dataset(items, pipeline), batch_size=2)))
    assert batch["image"].shape == (2, 1, 16, 16)
    assert batch["label"].shape == (2, 2) and batch["label"].dtype == torch.float32
    assert list(batch["view"]) == ["AP", ""]


def _mimic_tree(root: Path) -> Path:
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(study / "img1.jpg")
    return study / "img1.jpg"


def test_pair_report_from_the_mimic_tree_and_a_reports_folder(tmp_path):
    image = _mimic_tree(tmp_path / "jpg")
    (image.parent.parent / "s50414267.txt").write_text(REPORT)
    out = PairReportd("report")({"image": str(image)})
    assert out["report"] == "Small left pleural effusion.  No pneumothorax."
    full = PairReportd("report", priority=["findings+impression"])({"image": str(image)})
    assert full["report"].startswith("There is a small left pleural effusion.") and "No pneumothorax" in full["report"]

    reports = tmp_path / "reports" / "files" / "p10" / "p10000032"
    reports.mkdir(parents=True)
    (reports / "s50414267.txt").write_text(REPORT.replace("Small left", "Moderate left"))
    separate = PairReportd("report", reports_dir=tmp_path / "reports")({"image": str(image)})
    assert separate["report"].startswith("Moderate left")
    given = PairReportd("report")({"image": str(image), "report": str(reports / "s50414267.txt")})
    assert given["report"].startswith("Moderate left")


def test_pair_report_missing_raises_or_is_allowed(tmp_path):
    image = _mimic_tree(tmp_path)
    with pytest.raises(ReportError, match="s50414267.txt"):
        PairReportd("report")({"image": str(image)})
    assert "report" not in PairReportd("report", allow_missing_keys=True)({"image": str(image)})
    loose = tmp_path / "loose.jpg"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(loose)
    with pytest.raises(ReportError, match="pXX/pSUBJECT/sSTUDY"):
        PairReportd("report")({"image": str(loose)})


def test_pipeline_with_sentence_sampling_and_tokenizer(tmp_path):
    from medssl.data.reports import split_sentences
    from medssl.transforms.text import train_wordpiece_tokenizer

    image = _mimic_tree(tmp_path)
    (image.parent.parent / "s50414267.txt").write_text(REPORT)
    sentences = split_sentences("Small left pleural effusion.  No pneumothorax.")
    pipeline = cxr_transforms(16, report_key="report", text_sampling="sentence", seed=0)
    drawn = {pipeline({"image": str(image)})["report"] for _ in range(12)}
    assert drawn == set(sentences)

    tokenizer = train_wordpiece_tokenizer([REPORT] * 3, tmp_path / "tok", vocab_size=80)
    tokens = cxr_transforms(16, report_key="report", tokenizer=str(tokenizer), max_length=12)({"image": str(image)})
    assert tokens["report_input_ids"].shape == (12,) and int(tokens["report_attention_mask"].sum()) > 3
    with pytest.raises(ValueError, match="text_sampling"):
        cxr_transforms(16, report_key="report", text_sampling="paragraph")
