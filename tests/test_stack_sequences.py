"""Stacking MR sequences (NIfTI and DICOM mixed) on a reference grid, with named channels and a missing policy."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, list_data_collate

from medssl.data.dicom import load_series
from medssl.data.geometry import LPS_TO_RAS
from medssl.data.synth.dicom_writer import new_uid, write_series
from medssl.exceptions import MedsslError, MissingSequenceError
from medssl.transforms import LoadVolumed, StackSequences, StackSequencesd, mr_stack_transforms


def write_dicom_like(volume: np.ndarray, affine_ras: np.ndarray, folder: Path, permute=(0, 1, 2), seed: int = 0):
    """Write a volume as a DICOM series covering the same voxels in space, its axes permuted (a different grid)."""
    volume = np.transpose(np.asarray(volume, dtype=np.int16), permute)
    affine = LPS_TO_RAS @ affine_ras
    affine = np.column_stack([affine[:, list(permute)], affine[:, 3]])  # columns follow the permuted axes
    columns = [affine[:3, i] for i in range(3)]
    spacing = [float(np.linalg.norm(c)) for c in columns]
    row, col = columns[0] / spacing[0], columns[1] / spacing[1]
    origin = affine[:3, 3].copy()
    if np.dot(columns[2], np.cross(row, col)) < 0:  # DICOM slices go along row x column: flip the slice axis
        origin = origin + (volume.shape[2] - 1) * columns[2]
        volume = volume[:, :, ::-1]
    rng = np.random.default_rng(seed)
    tags = {
        "PatientID": "P1",
        "StudyInstanceUID": new_uid(rng),
        "SeriesInstanceUID": new_uid(rng),
        "SeriesDescription": "t2_tse",
    }
    paths = [folder / f"slice{k:03d}.dcm" for k in rng.permutation(volume.shape[2])]
    write_series(volume, paths, spacing=spacing, row_cosine=row, column_cosine=col, origin=origin, tags=tags, rng=rng)
    return folder


@pytest.fixture(scope="module")
def anatomical(nibabel_data_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    path = nibabel_data_dir / "anatomical.nii"  # 33 x 41 x 25, LAS, 2 mm, big-endian int16
    image = nib.load(path)
    return path, np.asarray(image.dataobj).astype(np.int16), image.affine


@pytest.fixture(scope="module")
def t2_dicom(anatomical, tmp_path_factory) -> Path:
    _, data, affine = anatomical
    return write_dicom_like(data, affine, tmp_path_factory.mktemp("t2"), permute=(1, 0, 2))


def test_nifti_and_dicom_mix_on_the_reference_grid(anatomical, t2_dicom: Path) -> None:
    path, data, affine = anatomical
    dicom = load_series(t2_dicom)
    assert dicom.shape == (41, 33, 25)  # a different grid: x and y swapped
    out = mr_stack_transforms(["T1", "T2"], reference="T1", label_key=None)(
        {"case_key": "cas-1", "T1": str(path), "T2": sorted(str(p) for p in t2_dicom.iterdir())}
    )
    image = out["image"]
    assert image.shape == (2, 33, 41, 25)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-4)  # the NIfTI reference's grid, untouched
    np.testing.assert_array_equal(image[0].numpy(), data.astype(np.float32))
    np.testing.assert_allclose(image[1].numpy(), data, atol=1e-2)  # DICOM resampled onto it: same voxels in space
    assert image.meta["channel_def"] == {"0": "T1", "1": "T2"}
    torch.testing.assert_close(out["presence"], torch.ones(2))


def test_dicom_reference_keeps_its_affine_and_shape(anatomical, t2_dicom: Path) -> None:
    path, data, _ = anatomical
    reference = load_series(t2_dicom)
    out = mr_stack_transforms(["T1", "T2"], reference="T2", label_key=None)(
        {"case_key": "cas-2", "T1": str(path), "T2": str(t2_dicom)}
    )
    assert out["image"].shape == (2, *reference.shape)
    torch.testing.assert_close(out["image"].affine, reference.affine)
    np.testing.assert_allclose(out["image"][0].numpy(), reference.numpy(), atol=1e-2)
    assert out["image"].meta["reference"] == "T2"


def test_channel_order_is_the_configured_one(anatomical, nibabel_data_dir: Path) -> None:
    path, _, _ = anatomical
    moved = nibabel_data_dir / "reoriented_anat_moved.nii"  # RAS, 4 mm, another field of view
    item = {"case_key": "cas-3", "FLAIR": str(moved), "T1": str(path)}
    out = mr_stack_transforms(["FLAIR", "T1"], reference="T1", label_key=None)(item)
    assert out["image"].meta["channel_def"] == {"0": "FLAIR", "1": "T1"}
    np.testing.assert_array_equal(out["image"][1].numpy(), np.asarray(nib.load(path).dataobj, dtype=np.float32))
    assert "T1" not in out and "FLAIR" not in out  # inputs dropped once stacked


def test_missing_sequence_policies(anatomical) -> None:
    path, data, _ = anatomical
    item = {"case_key": "cas-missing", "T1": str(path), "T2": None}
    with pytest.raises(MissingSequenceError, match=r"cas-missing: missing sequence\(s\) \['T2', 'FLAIR'\]"):
        mr_stack_transforms(["T1", "T2", "FLAIR"], reference="T1", label_key=None)(dict(item))
    out = mr_stack_transforms(["T1", "T2", "FLAIR"], reference="T1", missing="zeros", label_key=None)(dict(item))
    torch.testing.assert_close(out["presence"], torch.tensor([1.0, 0.0, 0.0]))
    assert out["image"].shape == (3, *data.shape)
    assert float(out["image"][1:].abs().sum()) == 0.0
    assert float(out["image"][0].abs().sum()) > 0


def test_missing_reference_under_zeros_uses_the_first_present(anatomical) -> None:
    path, data, affine = anatomical
    out = mr_stack_transforms(["T1C", "T1"], reference="T1C", missing="zeros", label_key=None)(
        {"case_key": "c", "T1": str(path)}
    )
    assert out["image"].meta["reference"] == "T1"
    np.testing.assert_allclose(out["image"].affine.numpy(), affine)
    torch.testing.assert_close(out["presence"], torch.tensor([0.0, 1.0]))
    with pytest.raises(MissingSequenceError, match="none of the sequences"):
        mr_stack_transforms(["T1C", "T1"], missing="zeros", label_key=None)({"case_key": "c", "T1": None})


def test_label_is_resampled_with_nearest_onto_the_reference(anatomical, t2_dicom: Path, tmp_path: Path) -> None:
    path, data, affine = anatomical
    label = np.zeros(data.shape, dtype=np.uint8)
    label[10:20, 12:30, 5:15] = 1
    label[12:16, 15:20, 8:12] = 4
    label_path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(label, affine), label_path)
    out = mr_stack_transforms(["T2", "T1"], reference="T2")(
        {"case_key": "cas-4", "T1": str(path), "T2": str(t2_dicom), "label": str(label_path)}
    )
    seg = out["label"]
    assert seg.shape == (1, *out["image"].shape[1:])
    torch.testing.assert_close(seg.affine, out["image"].affine)
    assert set(np.unique(seg.numpy()).tolist()) == {0.0, 1.0, 4.0}  # nearest neighbour: no blended labels
    np.testing.assert_array_equal(seg[0].numpy(), np.transpose(label, (1, 0, 2)).astype(np.float32))


def test_four_d_input_is_refused(anatomical, nibabel_data_dir: Path) -> None:
    path, _, _ = anatomical
    with pytest.raises(MedsslError, match=r"cas-4d: sequence T2 has shape \(2, 128, 96, 24\)"):
        mr_stack_transforms(["T1", "T2"], reference="T1", label_key=None)(
            {"case_key": "cas-4d", "T1": str(path), "T2": str(nibabel_data_dir / "example4d.nii.gz")}
        )


def test_array_transform_and_bad_configuration() -> None:
    affine = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    a = MetaTensor(torch.ones(1, 4, 5, 6), affine=affine)
    shifted = affine.clone()
    shifted[0, 3] = 2.0  # moved 2 voxels along x
    b = MetaTensor(torch.arange(120, dtype=torch.float32).reshape(1, 4, 5, 6), affine=shifted)
    out = StackSequences(["A", "B"], reference="A", mode="nearest")({"A": a, "B": b})
    assert out.shape == (2, 4, 5, 6)
    np.testing.assert_array_equal(out[1, 2:].numpy(), b[0, :2].numpy())  # B's voxel 0 sits at A's voxel 2
    assert float(out[1, :2].abs().sum()) == 0.0  # outside B's field of view: zero padding
    with pytest.raises(MedsslError, match="reference 'X'"):
        StackSequences(["A"], reference="X")
    with pytest.raises(MedsslError, match="missing must be one of"):
        StackSequences(["A"], reference="A", missing="skip")


def test_buildable_from_bundle_config(anatomical) -> None:
    path, data, _ = anatomical
    parser = ConfigParser(
        {
            "transform": {
                "_target_": "medssl.transforms.mr_stack_transforms",
                "sequences": ["T1", "T2"],
                "reference": "T1",
                "missing": "zeros",
                "label_key": None,
                "orientation": "RAS",
            }
        }
    )
    transform = parser.get_parsed_content("transform")
    out = transform({"case_key": "cas-5", "T1": str(path)})
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    np.testing.assert_array_equal(out["image"][0].numpy(), data[::-1].astype(np.float32))  # LAS -> RAS flips x


def test_cases_with_nifti_and_dicom_references_collate(anatomical, t2_dicom: Path) -> None:
    path, _, _ = anatomical
    stack_nifti = StackSequencesd(keys=["T1"], reference="T1", label_key=None)
    stack_dicom = StackSequencesd(keys=["T1"], reference="T1", label_key=None)
    load = LoadVolumed(keys=["T1"], ensure_channel_first=True)
    first = stack_nifti(load({"case_key": "a", "T1": str(path)}))
    second = stack_dicom(load({"case_key": "b", "T1": str(t2_dicom)}))
    first["image"], second["image"] = first["image"][:, :33, :33], second["image"][:, :33, :33]  # one batch shape
    batch = list_data_collate([first, second])  # fails when the two metadata dicts have different keys
    assert batch["image"].shape == (2, 1, 33, 33, 25)
    assert batch["image"].meta["channel_def"]["0"] == ["T1", "T1"]
    assert batch["presence"].shape == (2, 1)


def test_empty_entry_without_allow_missing_keys_raises(anatomical) -> None:
    path, _, _ = anatomical
    with pytest.raises(MedsslError, match="cas-6: 'T2' is empty"):
        LoadVolumed(keys=["T1", "T2"])({"case_key": "cas-6", "T1": str(path), "T2": ""})
