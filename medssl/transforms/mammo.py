"""Mammography exam transforms (MONAI array transforms and dictionary twins) and the exam chain.

An exam item ``{"L-CC": path, "R-CC": path, "L-MLO": path, "R-MLO": path, "label": 1, ...}`` becomes the view-keyed
input of :mod:`medssl.networks.fusion`: ``{"L-CC": tensor (1, H, W), ..., "presence": (4,), "duplicated": (4,),
"label": ...}``, every breast with its chest wall on the same side, cropped to the breast and resized keeping its
aspect ratio. The chain, :func:`mammo_exam_transforms`, is buildable from a bundle config::

    {"_target_": "medssl.transforms.mammo.mammo_exam_transforms", "image_size": [256, 192], "missing": "zeros",
     "chest_wall": "left"}

Steps, each an array transform with its dictionary twin:

- :class:`LoadMammogram` (:class:`LoadMammogramd`): a DICOM file through the display pipeline of
  :mod:`medssl.data.display` (modality LUT, VOI, MONOCHROME1 inverted; PHI-free metadata), or a PNG/JPEG/TIFF scaled
  to [0, 1] by its bit depth, as a ``(1, H, W)`` MetaTensor;
- :class:`OrientBreast` (:class:`OrientBreastd`): flip left-right so that the chest wall is on the target side,
  decided from the tags and checked against the image content (:func:`medssl.data.mammo.decide_flip`);
- :class:`CropBreast` (:class:`CropBreastd`): crop to the largest bright component (the breast);
- :class:`ResizeKeepAspect` (:class:`ResizeKeepAspectd`): resize to fit, pad away from the chest wall;
- :class:`FillMissingViewsd`: the missing-view policy (``zeros`` with a presence mask, ``duplicate``, ``error``).

Flips, crops, resizing and padding are MONAI transforms (``Flip``, ``SpatialCrop``, ``Resize``, ``BorderPad``), so
the affine in each view's metadata follows them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    BorderPad,
    Compose,
    DeleteItemsd,
    EnsureTyped,
    Flip,
    MapTransform,
    Resize,
    SpatialCrop,
    Transform,
)

from medssl.data.display import PlanarDicomReader
from medssl.data.mammo import (
    CHEST_WALL_TARGETS,
    NATIVE_CHEST_WALL_SIDE,
    STANDARD_VIEWS,
    MissingViewError,
    breast_bounding_box,
    decide_flip,
    fit_size,
    other_breast,
    pad_amounts,
)
from medssl.data.views import parse_view_key
from medssl.exceptions import InputFileError, MedsslError

__all__ = [
    "TRANSFORM_MISSING_POLICIES",
    "LoadMammogram",
    "LoadMammogramd",
    "LoadMammogramD",
    "LoadMammogramDict",
    "OrientBreast",
    "OrientBreastd",
    "OrientBreastD",
    "OrientBreastDict",
    "CropBreast",
    "CropBreastd",
    "CropBreastD",
    "CropBreastDict",
    "ResizeKeepAspect",
    "ResizeKeepAspectd",
    "ResizeKeepAspectD",
    "ResizeKeepAspectDict",
    "FillMissingViewsd",
    "FillMissingViewsD",
    "FillMissingViewsDict",
    "mammo_exam_transforms",
]

TRANSFORM_MISSING_POLICIES = ("error", "duplicate", "zeros")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _case_of(data: Mapping[Hashable, Any]) -> str | None:
    for key in ("case_key", "study_key", "case_id"):
        if data.get(key):
            return str(data[key])
    return None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _meta(img: Any) -> dict:
    return img.meta if isinstance(img, MetaTensor) else {}


class LoadMammogram(Transform):
    """Load one mammogram (or radiograph) display-ready as a ``(1, H, W)`` float MetaTensor in [0, 1].

    DICOM files go through :class:`medssl.data.display.PlanarDicomReader` (called directly: no silent fallback to
    another reader); PNG/JPEG/TIFF files (e.g. the 16-bit PNGs of ``export_planar_display``) are divided by 65535
    when a value exceeds 255, else by 255, and carry no view metadata.

    Args:
        voi: apply the VOI LUT / window of DICOM files.
        invert_monochrome1: invert MONOCHROME1 images.
        salt: salt of the keys in the metadata (default ``$MEDSSL_SALT``).

    Raises:
        InputFileError: missing file or unreadable image.
        DicomReadError: see :func:`medssl.data.display.display_image`.
    """

    def __init__(self, voi: bool = True, invert_monochrome1: bool = True, salt: str | None = None) -> None:
        self.reader = PlanarDicomReader(voi=voi, invert_monochrome1=invert_monochrome1, salt=salt)

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        """Load the image.

        Args:
            path: the file.

        Returns:
            ``(1, H, W)`` MetaTensor (rows, columns as displayed) with the display metadata.
        """
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise InputFileError("no such file", name)
        if name.lower().endswith(_IMAGE_SUFFIXES):
            array, meta = self._load_picture(name)
        else:
            array, meta = self.reader.get_data(self.reader.read(name))
        meta["filename_or_obj"] = name
        tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)[None]
        affine = torch.as_tensor(meta.pop("affine"), dtype=torch.float64)
        return MetaTensor(tensor, affine=affine, meta=meta)

    @staticmethod
    def _load_picture(name: str) -> tuple[np.ndarray, dict]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(name) as picture:
                array = np.asarray(picture.convert("I") if picture.mode not in ("L", "I", "I;16") else picture)
        except (OSError, UnidentifiedImageError) as error:
            raise InputFileError(f"cannot read the image: {error}", name) from error
        if array.ndim != 2:
            raise InputFileError(f"expected a grayscale image, got shape {array.shape}", name)
        array = array.astype(np.float32)
        array /= 65535.0 if array.max() > 255 else 255.0
        meta = {
            "affine": np.eye(4),
            "spacing": np.ones(2),
            "spatial_shape": np.asarray(array.shape),
            "view": "",
            "laterality": "",
            "chest_wall_side": "",
            "photometric": "",
            "for_processing": False,
        }
        return np.clip(array, 0.0, 1.0), meta


class LoadMammogramd(MapTransform):
    """Dictionary twin of :class:`LoadMammogram`; empty entries (None, "") count as missing.

    Args:
        keys: view keys to load (e.g. ``["L-CC", "R-CC", "L-MLO", "R-MLO"]``).
        voi: apply the VOI LUT / window.
        invert_monochrome1: invert MONOCHROME1 images.
        salt: key salt.
        allow_missing_keys: skip absent or empty keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        voi: bool = True,
        invert_monochrome1: bool = True,
        salt: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMammogram(voi=voi, invert_monochrome1=invert_monochrome1, salt=salt)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to the keys of an item (a copy; the input is not changed)."""
        d = dict(data)
        for key in self.key_iterator(d):
            if _is_empty(d[key]):
                if not self.allow_missing_keys:
                    raise MissingViewError(f"{key} is empty", _case_of(d))
                d.pop(key)
                continue
            d[key] = self.loader(d[key])
        return d


class OrientBreast(Transform):
    """Flip a mammogram left-right so that its chest wall is on the target side.

    The decision is :func:`medssl.data.mammo.decide_flip`: the side from the tags (PatientOrientation, else the
    laterality in the metadata or given) checked against the image content, with ``on_conflict`` deciding when they
    disagree. The metadata gets ``flipped``, ``chest_wall_side`` (after the flip), ``orientation_source``,
    ``orientation_conflict`` and ``content_confidence``.

    Args:
        target: ``left`` or ``right`` (every breast the same way), or ``native`` (each breast the way its own
            laterality is displayed: left breasts on the left; used to make a duplicated view look like the breast
            it replaces).
        threshold: tissue threshold on the display-ready image.
        min_confidence: content evidence below this is ignored.
        on_conflict: ``content``, ``tags`` or ``error``.
    """

    def __init__(
        self,
        target: str = "left",
        threshold: float | str = 0.05,
        min_confidence: float = 0.1,
        on_conflict: str = "content",
    ) -> None:
        if target not in CHEST_WALL_TARGETS:
            raise MedsslError(f"target must be one of {CHEST_WALL_TARGETS}, got {target!r}")
        self.target = target
        self.threshold = threshold
        self.min_confidence = min_confidence
        self.on_conflict = on_conflict
        self.flip = Flip(spatial_axis=1)

    def __call__(
        self, img: torch.Tensor, laterality: str | None = None, view_laterality: str | None = None
    ) -> torch.Tensor:
        """Orient one image.

        Args:
            img: ``(1, H, W)`` display-ready image.
            laterality: the image's laterality when its metadata has none.
            view_laterality: the laterality of the view it stands for (needed by ``target="native"``).

        Returns:
            The image, flipped or not.
        """
        meta = _meta(img)
        target = self.target
        if target == "native":
            target = NATIVE_CHEST_WALL_SIDE.get(str(view_laterality or laterality or meta.get("laterality", "")), "")
            if not target:
                raise MedsslError("target 'native' needs the laterality of the view", meta.get("filename_or_obj"))
        flip, info = decide_flip(
            img,
            target,
            laterality=str(meta.get("laterality") or laterality or ""),
            orientation_side=str(meta.get("chest_wall_side") or ""),
            threshold=self.threshold,
            min_confidence=self.min_confidence,
            on_conflict=self.on_conflict,
            name=meta.get("filename_or_obj"),
        )
        out = self.flip(img) if flip else img
        if isinstance(out, MetaTensor):
            out.meta.update(info)
            out.meta["flipped"] = flip
            if info["chest_wall_side"]:
                out.meta["chest_wall_side"] = target
        return out


class OrientBreastd(MapTransform):
    """Dictionary twin of :class:`OrientBreast`; view keys ``L-*``/``R-*`` give the laterality to fall back on.

    A view listed under ``duplicated_key`` holds the other breast's image, so its fallback laterality is the other
    side.

    Args:
        keys: view keys.
        target: ``left``, ``right`` or ``native``.
        threshold: tissue threshold.
        min_confidence: content evidence below this is ignored.
        on_conflict: ``content``, ``tags`` or ``error``.
        duplicated_key: item key listing duplicated views.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        target: str = "left",
        threshold: float | str = 0.05,
        min_confidence: float = 0.1,
        on_conflict: str = "content",
        duplicated_key: str = "duplicated",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.orient = OrientBreast(target, threshold, min_confidence, on_conflict)
        self.duplicated_key = duplicated_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to the keys of an item (a copy; the input is not changed)."""
        d = dict(data)
        duplicated = set(d.get(self.duplicated_key) or [])
        for key in self.key_iterator(d):
            try:
                view_laterality = parse_view_key(str(key))[0]
            except ValueError:
                view_laterality = ""
            own = view_laterality
            if key in duplicated and view_laterality:
                own = "R" if view_laterality == "L" else "L"
            d[key] = self.orient(d[key], laterality=own, view_laterality=view_laterality)
        return d


class CropBreast(Transform):
    """Crop to the bounding box of the breast (largest component above a threshold), plus a margin.

    An image without any pixel above the threshold is returned unchanged (``cropped`` False in the metadata).

    Args:
        threshold: tissue threshold on the display-ready image (or ``"otsu"``).
        margin: pixels kept around the breast.
    """

    def __init__(self, threshold: float | str = 0.05, margin: int = 4) -> None:
        self.threshold = threshold
        self.margin = margin

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Crop one ``(1, H, W)`` image."""
        box = breast_bounding_box(img, self.threshold, self.margin)
        if box is None:
            out = img
        else:
            out = SpatialCrop(roi_start=[box[0].start, box[1].start], roi_end=[box[0].stop, box[1].stop])(img)
        if isinstance(out, MetaTensor):
            out.meta["cropped"] = box is not None
        return out


class CropBreastd(MapTransform):
    """Dictionary twin of :class:`CropBreast`."""

    def __init__(
        self, keys: KeysCollection, threshold: float | str = 0.05, margin: int = 4, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.crop = CropBreast(threshold, margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to the keys of an item (a copy; the input is not changed)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.crop(d[key])
        return d


class ResizeKeepAspect(Transform):
    """Resize to fit ``spatial_size`` keeping the aspect ratio, then pad to exactly ``spatial_size``.

    Rows are padded equally above and below; columns on the side away from the chest wall (from the metadata's
    ``chest_wall_side``, or ``chest_wall_side`` given), so the chest wall stays on the image edge.

    Args:
        spatial_size: ``(H, W)``.
        mode: interpolation of MONAI ``Resize`` (``area`` averages when shrinking).
        chest_wall_side: ``left``/``right`` to use when the metadata has none (``""``: pad both sides).
    """

    def __init__(self, spatial_size: Sequence[int], mode: str = "area", chest_wall_side: str = "") -> None:
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.mode = mode
        self.chest_wall_side = chest_wall_side

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Resize and pad one ``(1, H, W)`` image."""
        shape = tuple(int(s) for s in img.shape[1:])
        size = fit_size(shape, self.spatial_size)
        out = Resize(spatial_size=size, mode=self.mode)(img) if size != shape else img
        side = str(_meta(img).get("chest_wall_side") or self.chest_wall_side)
        pads = pad_amounts(size, self.spatial_size, side)
        if any(pads):
            out = BorderPad(spatial_border=pads, mode="constant")(out)
        return out


class ResizeKeepAspectd(MapTransform):
    """Dictionary twin of :class:`ResizeKeepAspect`."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str = "area",
        chest_wall_side: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resize = ResizeKeepAspect(spatial_size, mode, chest_wall_side)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to the keys of an item (a copy; the input is not changed)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resize(d[key])
        return d


class FillMissingViewsd(MapTransform):
    """Apply the missing-view policy and write the ``presence`` and ``duplicated`` masks (in ``keys`` order).

    - ``zeros``: a missing view becomes zeros of ``spatial_size`` (or of the other views' shape) with presence 0;
    - ``duplicate``: the other breast's same view (``L-CC`` for ``R-CC``), flipped left-right when
      ``flip_duplicates`` (breasts kept in their native orientation), with presence 1 and duplicated 1; a view whose
      counterpart is missing too becomes zeros;
    - ``error``: raise :class:`medssl.data.mammo.MissingViewError` naming the case.

    Views duplicated upstream (listed under ``duplicated_key`` by a datalist built with ``missing="duplicate"``)
    are present and flagged in ``duplicated``.

    Args:
        keys: the view keys, in mask order.
        missing: ``zeros``, ``duplicate`` or ``error``.
        spatial_size: ``(H, W)`` of zero views when no view is present to copy the shape from.
        presence_key: where the ``(V,)`` float presence mask goes.
        duplicated_key: item key listing duplicated views (read) and where the ``(V,)`` mask goes (written).
        flip_duplicates: flip a duplicated view left-right.
    """

    def __init__(
        self,
        keys: KeysCollection,
        missing: str = "zeros",
        spatial_size: Sequence[int] | None = None,
        presence_key: str = "presence",
        duplicated_key: str = "duplicated",
        flip_duplicates: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if missing not in TRANSFORM_MISSING_POLICIES:
            raise MedsslError(f"missing must be one of {TRANSFORM_MISSING_POLICIES}, got {missing!r}")
        self.missing = missing
        self.spatial_size = tuple(int(s) for s in spatial_size) if spatial_size is not None else None
        self.presence_key = presence_key
        self.duplicated_key = duplicated_key
        self.flip_duplicates = flip_duplicates

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to the keys of an item (a copy; the input is not changed)."""
        d = dict(data)
        views = list(self.keys)
        present = [v for v in views if v in d and not _is_empty(d[v])]
        absent = [v for v in views if v not in present]
        if not present:
            raise MissingViewError(f"no view of {views} is present", _case_of(d))
        if absent and self.missing == "error":
            raise MissingViewError(f"exam lacks {absent}", _case_of(d))
        duplicated = {v for v in (d.get(self.duplicated_key) or []) if v in present}
        if self.missing == "duplicate":
            for view in absent:
                source = other_breast(str(view))
                if source in present:
                    d[view] = torch.flip(d[source], dims=[-1]) if self.flip_duplicates else d[source].clone()
                    duplicated.add(view)
        reference = d[present[0]]
        shape = (reference.shape[0],) + (self.spatial_size or tuple(reference.shape[1:]))
        for view in views:
            if view not in d or _is_empty(d[view]):
                d[view] = torch.zeros(shape, dtype=reference.dtype)
        d[self.presence_key] = torch.tensor([float(v in present or v in duplicated) for v in views])
        d[self.duplicated_key] = torch.tensor([float(v in duplicated) for v in views])
        return d


def mammo_exam_transforms(
    image_size: Sequence[int] = (256, 192),
    views: Sequence[str] = STANDARD_VIEWS,
    missing: str = "zeros",
    chest_wall: str = "left",
    *,
    crop: bool = True,
    voi: bool = True,
    threshold: float | str = 0.05,
    margin: int = 4,
    min_confidence: float = 0.1,
    on_conflict: str = "content",
    presence_key: str = "presence",
    duplicated_key: str = "duplicated",
    mode: str = "area",
    salt: str | None = None,
    track_meta: bool = False,
    drop_keys: Sequence[str] = ("missing", "series_keys", "abnormality_types"),
) -> Compose:
    """The whole exam chain: load, orient, crop, resize keeping aspect, fill missing views, to tensors.

    Args:
        image_size: ``(H, W)`` of every view.
        views: the view keys, in ``presence`` order (the order of the fusion network's ``view_names``).
        missing: ``zeros``, ``duplicate`` or ``error`` (a datalist built with ``drop`` has no missing view left).
        chest_wall: ``left`` or ``right`` (every breast faces the same way) or ``native``.
        crop: crop to the breast before resizing.
        voi: apply the DICOM VOI LUT / window.
        threshold: tissue threshold on the display-ready image.
        margin: pixels kept around the breast when cropping.
        min_confidence: content evidence below this does not overrule the tags.
        on_conflict: tags vs content disagreement: ``content``, ``tags`` or ``error``.
        presence_key: where the presence mask goes.
        duplicated_key: where the duplicated mask goes (and where a datalist lists duplicated views).
        mode: interpolation when resizing.
        salt: key salt for the metadata.
        track_meta: keep views as MetaTensors (False: plain tensors, which always collate).
        drop_keys: item keys removed at the end: lists and dicts of varying length (``missing``, the datalist's
            list of absent views, is what ``presence`` encodes) that a ``DataLoader`` cannot collate.

    Returns:
        A ``Compose`` mapping an exam item to ``{view: (1, H, W) float tensor, presence: (V,), duplicated: (V,),
        ...other keys unchanged}``.
    """
    if missing not in TRANSFORM_MISSING_POLICIES:
        raise MedsslError(f"missing must be one of {TRANSFORM_MISSING_POLICIES}, got {missing!r}")
    views = [str(v) for v in views]
    transforms: list[Any] = [
        LoadMammogramd(keys=views, voi=voi, salt=salt, allow_missing_keys=True),
        OrientBreastd(
            keys=views,
            target=chest_wall,
            threshold=threshold,
            min_confidence=min_confidence,
            on_conflict=on_conflict,
            duplicated_key=duplicated_key,
            allow_missing_keys=True,
        ),
    ]
    if crop:
        transforms.append(CropBreastd(keys=views, threshold=threshold, margin=margin, allow_missing_keys=True))
    transforms += [
        ResizeKeepAspectd(keys=views, spatial_size=image_size, mode=mode, allow_missing_keys=True),
        FillMissingViewsd(
            keys=views,
            missing=missing,
            spatial_size=image_size,
            presence_key=presence_key,
            duplicated_key=duplicated_key,
            flip_duplicates=chest_wall == "native",
        ),
        EnsureTyped(keys=views + [presence_key, duplicated_key], data_type="tensor", track_meta=track_meta),
    ]
    if drop_keys:
        transforms.append(DeleteItemsd(keys=list(drop_keys)))
    return Compose(transforms)


LoadMammogramD = LoadMammogramDict = LoadMammogramd
OrientBreastD = OrientBreastDict = OrientBreastd
CropBreastD = CropBreastDict = CropBreastd
ResizeKeepAspectD = ResizeKeepAspectDict = ResizeKeepAspectd
FillMissingViewsD = FillMissingViewsDict = FillMissingViewsd
