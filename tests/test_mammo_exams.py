from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.data.mammo import (
    STANDARD_VIEWS,
    MissingViewError,
    OrientationError,
    apply_missing_policy,
    breast_bounding_box,
    chest_wall_side_from_content,
    decide_flip,
    exam_items_from_manifest,
    exam_label,
    fit_size,
    other_breast,
    pad_amounts,
    rank_view_images,
)
from medssl.transforms.mammo import (
    CropBreast,
    FillMissingViewsd,
    OrientBreast,
    ResizeKeepAspect,
    mammo_exam_transforms,
)

SIZE = (64, 48)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny synthetic VinDr-style export with FOR PROCESSING copies, later spot views and a missing view."""
    from medssl.data.synth.mammo import generate

    out = tmp_path_factory.mktemp("mammo")
    generate(out, 4, seed=3, size="96x72", processing_copies=0.5, spot_views=0.5, missing=0.25, monochrome1=0.5)
    return out


@pytest.fixture(scope="module")
def manifest(export) -> pd.DataFrame:
    from medssl.data.index import index_export

    return index_export(export / "images", workers=1).manifest


def _row(view, intent="FOR PRESENTATION", series=1, key="ser-a", laterality="L"):
    return {
        "view": view,
        "laterality": laterality,
        "presentation_intent": intent,
        "series_number": series,
        "series_key": key,
    }


def test_rank_view_images_rule():
    rows = pd.DataFrame(
        [
            _row("CC+SPOT", series=9, key="ser-spot"),
            _row("CC", "FOR PROCESSING", series=8, key="ser-raw"),
            _row("CC+ID", series=7, key="ser-id"),
            _row("CC", series=2, key="ser-first"),
            _row("CC", series=3, key="ser-repeat"),
            _row("CC+MAG", series=10, key="ser-mag"),
        ]
    )
    ranked = rank_view_images(rows)
    assert list(ranked["series_key"]) == ["ser-repeat", "ser-first", "ser-id", "ser-raw"]  # spot and mag never
    assert rank_view_images(rows[rows["series_key"].isin(["ser-spot", "ser-mag"])]).empty
    assert list(rank_view_images(rows, allowed_modifiers=("ID", "SPOT"))["series_key"])[:2] == [
        "ser-repeat",
        "ser-first",
    ]


def _item(*views):
    return {view: f"/data/{view}.dcm" for view in views}


def test_missing_view_policies():
    problems: list = []
    three = ("L-CC", "R-CC", "L-MLO")
    zeros = apply_missing_policy(_item(*three), STANDARD_VIEWS, "zeros", "case-1", problems)
    assert zeros["presence"] == [1, 1, 1, 0] and zeros["missing"] == ["R-MLO"] and "R-MLO" not in zeros
    duplicate = apply_missing_policy(_item(*three), STANDARD_VIEWS, "duplicate", "case-1", problems)
    assert duplicate["R-MLO"] == "/data/L-MLO.dcm" and duplicate["duplicated"] == ["R-MLO"]
    assert duplicate["presence"] == [1, 1, 1, 1]
    both_mlo_missing = apply_missing_policy(_item("L-CC", "R-CC"), STANDARD_VIEWS, "duplicate", "case-2", problems)
    assert both_mlo_missing["presence"] == [1, 1, 0, 0] and both_mlo_missing["duplicated"] == []
    assert any("cannot duplicate" in p["problem"] for p in problems)
    assert apply_missing_policy(_item(*three), STANDARD_VIEWS, "drop", "case-3", problems) is None
    assert problems[-1] == {"case": "case-3", "problem": "missing R-MLO", "action": "skipped"}
    with pytest.raises(MissingViewError, match="case-4.*R-MLO"):
        apply_missing_policy(_item(*three), STANDARD_VIEWS, "error", "case-4", problems)
    assert apply_missing_policy({}, STANDARD_VIEWS, "zeros", "case-5", problems) is None
    assert other_breast("L-MLO") == "R-MLO" and exam_label([0, -1]) == 0 and exam_label([-1, -1]) == -1


def test_exam_grouping_from_the_index_picks_the_screening_images(export, manifest):
    csv = pd.read_csv(export / "breast-level_annotations.csv")
    assert {"CC+SPOT"} <= set(manifest["view"]) and "FOR PROCESSING" in set(manifest["presentation_intent"])
    items, problems = exam_items_from_manifest(manifest, missing="zeros")
    assert len(items) == csv["study_id"].nunique() == 4
    chosen = {Path(item[v]).stem: v for item in items for v in STANDARD_VIEWS if v in item}
    expected = {row.image_id: f"{row.laterality}-{row.view_position}" for row in csv.itertuples()}
    assert chosen == expected  # neither the FOR PROCESSING copies nor the later spot views
    assert sum(item["presence"].count(0) for item in items) == 1
    assert all(item["case_key"] == item["study_key"] and item["patient_key"].startswith("pat-") for item in items)
    dropped, _ = exam_items_from_manifest(manifest, missing="drop")
    assert len(dropped) == 3


def _tissue_side(image: torch.Tensor) -> tuple[float, float]:
    array = image[0].numpy()
    columns = max(1, array.shape[1] // 8)
    return float(array[:, :columns].mean()), float(array[:, -columns:].mean())


@pytest.mark.parametrize("target", ["left", "native"])
def test_every_breast_faces_the_target_side(export, manifest, target):
    items, _ = exam_items_from_manifest(manifest, missing="zeros")
    transform = mammo_exam_transforms(SIZE, chest_wall=target)
    for item in items:
        out = transform(item)
        for view, present in zip(STANDARD_VIEWS, out["presence"].tolist()):
            assert tuple(out[view].shape) == (1, *SIZE)
            if not present:
                assert float(out[view].abs().sum()) == 0.0
                continue
            left, right = _tissue_side(out[view])
            side = target if target != "native" else ("left" if view.startswith("L") else "right")
            assert (left > right + 0.1) if side == "left" else (right > left + 0.1), (view, target, left, right)


def _breast(height=60, width=40, side="left", speck=True) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    x = cols if side == "left" else width - 1 - cols
    image = (((x / 24.0) ** 2 + ((rows - 30) / 20.0) ** 2) <= 1.0) * 0.5
    if speck:
        image[2:4, width - 4 : width - 2] = 1.0  # a marker, smaller than the breast
    return image.astype(np.float32)


def test_content_side_and_flip_decision_with_conflicting_tags():
    image = _breast(side="left")
    assert chest_wall_side_from_content(image)[0] == "left"
    mirrored = image[:, ::-1].copy()  # pixels say right, the tags still say a left breast
    flip, info = decide_flip(mirrored, "left", laterality="L", on_conflict="content")
    assert flip and info["orientation_conflict"] and info["orientation_source"] == "content"
    flip, info = decide_flip(mirrored, "left", laterality="L", on_conflict="tags")
    assert not flip and info["orientation_source"] == "tags"
    with pytest.raises(OrientationError, match="mirrored-case"):
        decide_flip(mirrored, "left", laterality="L", on_conflict="error", name="mirrored-case")
    flat = np.full((20, 20), 0.5, dtype=np.float32)  # no evidence in the pixels: the tags decide
    flip, info = decide_flip(flat, "left", laterality="R")
    assert flip and info["orientation_source"] == "tags" and not info["orientation_conflict"]
    flip, info = decide_flip(image, "right", orientation_side="left")  # PatientOrientation before laterality
    assert flip and info["orientation_source"] == "tags+content"
    assert decide_flip(np.zeros((8, 8)), "left")[1]["orientation_source"] == "none"


def test_orient_breast_transform_uses_content_over_wrong_laterality():
    from monai.data import MetaTensor

    image = MetaTensor(torch.as_tensor(_breast(side="right"))[None], meta={"laterality": "L"})
    out = OrientBreast("left")(image)
    left, right = _tissue_side(out)
    assert left > right and out.meta["flipped"] and out.meta["orientation_conflict"]
    assert out.meta["chest_wall_side"] == "left"


def test_crop_and_aspect_preserving_resize():
    from monai.data import MetaTensor

    image = MetaTensor(torch.as_tensor(_breast(side="left"))[None], meta={"chest_wall_side": "left"})
    box = breast_bounding_box(image)
    assert (box[0].start, box[0].stop, box[1].start, box[1].stop) == (10, 51, 0, 25)  # the speck is not the breast
    cropped = CropBreast(margin=0)(image)
    assert tuple(cropped.shape) == (1, 41, 25)
    resized = ResizeKeepAspect((82, 82))(cropped)
    assert tuple(resized.shape) == (1, 82, 82)
    content = resized[0].numpy() > 0.05
    columns = np.nonzero(content.any(axis=0))[0]
    rows = np.nonzero(content.any(axis=1))[0]
    assert columns.min() == 0 and columns.max() <= 50  # 25 columns scaled x2, padding on the right
    assert rows.max() - rows.min() + 1 >= 80
    assert fit_size((41, 25), (82, 82)) == (82, 50) and fit_size((100, 10), (50, 50)) == (50, 5)
    assert pad_amounts((82, 50), (82, 82), "left") == [0, 0, 0, 32]
    assert pad_amounts((82, 50), (82, 82), "right") == [0, 0, 32, 0]
    assert pad_amounts((80, 50), (82, 82), "") == [1, 1, 16, 16]


def test_fill_missing_views_at_transform_level():
    views = list(STANDARD_VIEWS)
    present = {v: torch.rand(1, 4, 3) for v in views[:3]}  # R-MLO missing
    zeros = FillMissingViewsd(views, "zeros")(dict(present, case_key="c1"))
    assert zeros["presence"].tolist() == [1, 1, 1, 0] and float(zeros["R-MLO"].abs().sum()) == 0.0
    duplicate = FillMissingViewsd(views, "duplicate", flip_duplicates=True)(dict(present))
    assert torch.equal(duplicate["R-MLO"], torch.flip(present["L-MLO"], dims=[-1]))
    assert duplicate["presence"].tolist() == [1, 1, 1, 1] and duplicate["duplicated"].tolist() == [0, 0, 0, 1]
    with pytest.raises(MissingViewError, match="c1"):
        FillMissingViewsd(views, "error")(dict(present, case_key="c1"))


def test_exam_batches_feed_the_joint_fusion_network(export):
    from monai.data import DataLoader, Dataset

    from medssl.data.layouts.vindr_mammo import vindr_items
    from medssl.networks.fusion import MAMMO_VIEWS, JointFusion

    assert tuple(MAMMO_VIEWS) == STANDARD_VIEWS
    items, _ = vindr_items(export, missing="zeros")
    batch = next(iter(DataLoader(Dataset(items, mammo_exam_transforms(SIZE)), batch_size=4)))
    assert tuple(batch["L-CC"].shape) == (4, 1, *SIZE) and tuple(batch["presence"].shape) == (4, 4)
    assert float(batch["presence"].sum()) == 15.0
    torch.manual_seed(0)
    model = JointFusion(list(MAMMO_VIEWS), 2, backbone="resnet10", backbone_kwargs={"widen_factor": 0.125}).eval()
    with torch.no_grad():
        out = model({v: batch[v] for v in MAMMO_VIEWS}, presence=batch["presence"])
    assert tuple(out["logits"].shape) == (4, 1) and torch.isfinite(out["logits"]).all()
    assert torch.equal(out["presence"], batch["presence"])


def test_png_inputs_load_too(tmp_path, export):
    from medssl.data.display import display_image, write_display_png
    from medssl.transforms.mammo import LoadMammogram

    dicom = next((export / "images").rglob("*.dicom"))
    image, _ = display_image(dicom)
    png = write_display_png(image, tmp_path / "view.png")
    loaded = LoadMammogram()(os.fspath(png))
    np.testing.assert_allclose(loaded[0].numpy(), image, atol=1.0 / 65535)


def test_exam_chain_builds_from_a_bundle_config():
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser(
        {
            "pre": {
                "_target_": "medssl.transforms.mammo.mammo_exam_transforms",
                "image_size": [64, 48],
                "missing": "duplicate",
                "chest_wall": "right",
            }
        }
    )
    chain = parser.get_parsed_content("pre")
    assert isinstance(chain, Compose)
    fill = [t for t in chain.transforms if isinstance(t, FillMissingViewsd)][0]
    assert fill.missing == "duplicate" and fill.spatial_size == (64, 48) and not fill.flip_duplicates
