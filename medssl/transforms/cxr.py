"""Chest X-ray transforms: load any CXR file display-ready, pair it with its report, and one pipeline for bundles.

=============================  ==============================  =====================================================
array                          dictionary                      what it does
=============================  ==============================  =====================================================
:class:`LoadCXRImage`          :class:`LoadCXRImaged`          a JPG/PNG (MONAI ``PILReader``) or DX/CR DICOM file
                                                               (the planar display pipeline of
                                                               :mod:`medssl.data.display`: modality LUT, VOI,
                                                               MONOCHROME1 inverted) -> ``(1, H, W)`` float32
                                                               ``MetaTensor`` in [0, 1], dense tissue bright, with
                                                               PHI-free metadata (view, frontal ...)
..                             :class:`PairReportd`            the report text of an image item: its ``report`` path,
                                                               or the MIMIC-CXR report of the image's study, read
                                                               through the report parser's section priority
:func:`cxr_transforms`         ..                              load, resize keeping the aspect ratio and pad with
                                                               black, optional augmentation, report pairing,
                                                               sentence sampling and tokenization as one ``Compose``
=============================  ==============================  =====================================================

Images are ``(channel, rows, columns)``: the image as displayed, row 0 at the top, like
:class:`medssl.data.display.PlanarDicomReader` (and unlike MONAI's ``PILReader`` default, which swaps the axes), so
JPG and DICOM inputs of one dataset agree and a plot of ``image[0]`` looks like the radiograph. JPG/PNG values are
divided by their type's maximum (255, or 65535 for 16-bit PNG), never stretched per image, so the exposure is kept;
colour files are converted to luminance.

The metadata always has the same keys (:data:`CXR_META_KEYS`) whatever the format, so JPG and DICOM items collate in
one batch: ``view`` (``PA``, ``AP``, ``LATERAL``, ``LL`` ... from ViewPosition / ViewCodeSequence, ``""`` for
JPG/PNG, which carry no view: take it from the datalist), ``view_group`` (``frontal``, ``lateral`` ...),
``frontal`` (bool), ``source_format`` (``dicom``, ``jpeg``, ``png``), ``modality``, ``photometric``, ``inverted``,
``voi``, ``pixel_spacing`` (mm; NaN when unknown), ``spatial_shape`` and ``filename_or_obj``. No patient name, ID,
date or UID is copied (DICOM keys are the salted ones of the display pipeline, not kept here).

Horizontal flips are deliberately absent from the augmentations: laterality is part of the findings (a left
effusion, a right pneumothorax) and of the report text.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RepeatChanneld,
    Resized,
    SpatialPadd,
    Transform,
)

from medssl.data.layouts.chexpert import normalise_cxr_view
from medssl.data.layouts.mimic_cxr import report_path_for_image
from medssl.data.reports import DEFAULT_PRIORITY, ReportError
from medssl.exceptions import InputFileError

__all__ = [
    "CXR_META_KEYS",
    "IMAGE_SUFFIXES",
    "is_dicom_file",
    "LoadCXRImage",
    "LoadCXRImaged",
    "LoadCXRImageD",
    "LoadCXRImageDict",
    "PairReportd",
    "PairReportD",
    "PairReportDict",
    "report_path_for_image",
    "normalise_cxr_view",
    "cxr_transforms",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""File suffixes read with MONAI's ``PILReader``; anything else must be DICOM (checked by its preamble)."""

CXR_META_KEYS = (
    "filename_or_obj",
    "source_format",
    "modality",
    "view",
    "view_group",
    "frontal",
    "photometric",
    "inverted",
    "voi",
    "pixel_spacing",
    "spacing",
    "spatial_shape",
    "original_channel_dim",
    "affine",
    "original_affine",
)
"""The metadata keys every image loaded by :class:`LoadCXRImage` has, whatever its format."""

_PIL_SCALE = {
    "L": 255.0,
    "LA": 255.0,
    "RGB": 255.0,
    "RGBA": 255.0,
    "I;16": 65535.0,
    "I;16B": 65535.0,
    "I;16L": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "1": 1.0,
    "F": 1.0,
}
_PIL_CONVERT = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM (by its ``DICM`` preamble; MIMIC-CXR's ``.dcm`` and extension-less PACS files).

    Args:
        path: the file.

    Returns:
        True for a readable DICOM Part 10 file.
    """
    from pydicom.misc import is_dicom

    try:
        return os.path.isfile(path) and is_dicom(os.fspath(path))
    except OSError:
        return False


def _pil_converter(image: Any) -> Any:
    """Palette and colour-space images to RGB (converted to luminance after loading); bilevel to 8-bit."""
    if image.mode in _PIL_CONVERT:
        return image.convert("RGB")
    if image.mode == "1":
        return image.convert("L")
    return image


class LoadCXRImage(Transform):
    """Load a chest X-ray file (JPG, PNG or DX/CR DICOM) as a display-ready ``(1, H, W)`` float image in [0, 1].

    DICOM goes through :class:`medssl.data.display.PlanarDicomReader` (modality LUT, the file's VOI LUT or window,
    MONOCHROME1 inverted: bone and fluid bright); JPG/PNG through MONAI's ``PILReader`` (values divided by 255, or
    65535 for 16-bit; colour converted to luminance with ITU-R 601 weights, as Pillow's ``L`` mode does).

    Args:
        voi: apply the DICOM VOI LUT or window (False: scale the modality-LUT output from its minimum to maximum).
        invert_monochrome1: invert MONOCHROME1 DICOM images.
        dtype: output dtype.

    Raises:
        InputFileError: missing file, or neither DICOM nor a JPG/PNG image.
        DicomReadError: an unreadable DICOM file, or one the display pipeline cannot use (colour, no pixels ...).
    """

    backend = ["torch"]

    def __init__(self, voi: bool = True, invert_monochrome1: bool = True, dtype: Any = np.float32) -> None:
        self.voi = voi
        self.invert_monochrome1 = invert_monochrome1
        self.dtype = dtype

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        """Load one image.

        Args:
            filename: the image file.

        Returns:
            A ``MetaTensor`` of shape ``(1, rows, columns)`` with the metadata of :data:`CXR_META_KEYS`.
        """
        path = os.fspath(filename)
        if not os.path.isfile(path):
            raise InputFileError("no such image file", path)
        if is_dicom_file(path):
            from medssl.data.display import PlanarDicomReader

            # The readers are called directly rather than through LoadImage, which would also instantiate every
            # other registered reader (and fall back to them when this one raises).
            reader = PlanarDicomReader(voi=self.voi, invert_monochrome1=self.invert_monochrome1)
            array, meta = reader.get_data(reader.read(path))
            array = np.asarray(array, dtype=np.float64)
            view, group, frontal = normalise_cxr_view(meta.get("view", ""))
            spacing = [float(v) for v in np.asarray(meta.get("pixel_spacing", [math.nan, math.nan])).ravel()[:2]]
            info = {
                "source_format": "dicom",
                "modality": str(meta.get("modality", "")),
                "view": view,
                "view_group": group,
                "frontal": frontal,
                "photometric": str(meta.get("photometric", "")),
                "inverted": bool(meta.get("inverted", False)),
                "voi": str(meta.get("voi", "")),
                "pixel_spacing": spacing,
            }
        elif path.lower().endswith(IMAGE_SUFFIXES):
            reader = PILReader(converter=_pil_converter, reverse_indexing=False)
            try:
                array, meta = reader.get_data(reader.read(path))
            except (OSError, ValueError) as error:
                raise InputFileError(f"cannot read the image: {error}", path) from error
            mode = str(meta.get("mode", "L"))
            array = np.asarray(array, dtype=np.float64)
            if array.ndim == 3:  # (H, W, channels): drop alpha, luminance of RGB
                if array.shape[-1] in (2, 4):
                    array = array[..., :-1]
                array = array[..., 0] if array.shape[-1] == 1 else array[..., :3] @ np.array([0.299, 0.587, 0.114])
            scale = _PIL_SCALE.get(mode)
            if scale is None:
                raise InputFileError(f"unsupported image mode {mode!r}", path)
            array = np.clip(array / scale, 0.0, 1.0)
            suffix = Path(path).suffix.lower()
            info = {
                "source_format": "png" if suffix == ".png" else "jpeg",
                "modality": "",
                "view": "",
                "view_group": "",
                "frontal": False,
                "photometric": "",
                "inverted": False,
                "voi": "",
                "pixel_spacing": [math.nan, math.nan],
            }
        else:
            raise InputFileError(f"not a DICOM file nor a {'/'.join(IMAGE_SUFFIXES)} image", path)
        if array.ndim != 2:
            raise InputFileError(f"expected one 2D image, got an array of shape {array.shape}", path)
        spacing = np.asarray([v if math.isfinite(v) else 1.0 for v in info["pixel_spacing"]], dtype=np.float64)
        affine = torch.eye(4, dtype=torch.float64)
        affine[0, 0], affine[1, 1] = float(spacing[0]), float(spacing[1])
        meta = {
            **info,
            "filename_or_obj": path,
            "pixel_spacing": np.asarray(info["pixel_spacing"], dtype=np.float64),
            "spacing": spacing,
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": "no_channel",
            "original_affine": affine.clone().numpy(),
        }
        tensor = torch.as_tensor(array[None].astype(self.dtype, copy=False))
        return MetaTensor(tensor, affine=affine, meta=meta)


class LoadCXRImaged(MapTransform):
    """Dictionary version of :class:`LoadCXRImage`; also fills the item's view keys from DICOM headers.

    Args:
        keys: image keys (usually ``"image"``).
        view_key: item key of the view; set from the image's metadata when the item has none (or an empty one), so
            a datalist's view (from MIMIC's metadata CSV) is kept; None leaves the item alone.
        frontal_key: item key of the frontal flag, set with the view (from it when the item has a view).
        voi: see :class:`LoadCXRImage`.
        invert_monochrome1: see :class:`LoadCXRImage`.
        dtype: see :class:`LoadCXRImage`.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = LoadCXRImage.backend

    def __init__(
        self,
        keys: KeysCollection,
        view_key: str | None = "view",
        frontal_key: str | None = "frontal",
        voi: bool = True,
        invert_monochrome1: bool = True,
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCXRImage(voi=voi, invert_monochrome1=invert_monochrome1, dtype=dtype)
        self.view_key = view_key
        self.frontal_key = frontal_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load each key's image; fill the view keys when the item lacks them."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
            if self.view_key is None:
                continue
            if not d.get(self.view_key):
                d[self.view_key] = d[key].meta["view"]
            if self.frontal_key is not None and self.frontal_key not in d:
                d[self.frontal_key] = normalise_cxr_view(d[self.view_key])[2]
        return d


class PairReportd(MapTransform):
    """Put an image item's report text under ``keys`` for image-text pretraining.

    The report is the item's own value under the key (a path, or the text itself), else the MIMIC-CXR report of the
    study of ``image_key``'s file (:func:`report_path_for_image`, in ``reports_dir`` when given). It is read with
    :class:`medssl.transforms.text.LoadReport`: the section priority of :func:`medssl.data.reports.report_text`
    (impression, findings, last paragraph; ``["findings+impression"]`` for GLoRIA's full text). Sample sentences
    and tokenize afterwards with :mod:`medssl.transforms.text`.

    Args:
        keys: output keys (usually ``"report"``).
        image_key: the item key of the image path (a string path, or a loaded ``MetaTensor``: its file name).
        reports_dir: separate reports folder for the inferred path.
        priority: see :class:`medssl.transforms.text.LoadReport`.
        min_words: see :class:`medssl.transforms.text.LoadReport`.
        deid_placeholder: see :class:`medssl.transforms.text.LoadReport`.
        output: ``"text"``, ``"sentences"`` or ``"parsed"``.
        allow_missing_keys: leave the item without a report when none is given and none can be found (instead of
            raising).

    Raises:
        ReportError: no report given nor found (unless ``allow_missing_keys``), or an unusable report; the message
            names the file.
    """

    backend = ["numpy"]

    def __init__(
        self,
        keys: KeysCollection = "report",
        image_key: str = "image",
        reports_dir: str | os.PathLike | None = None,
        priority: Sequence[str] = DEFAULT_PRIORITY,
        min_words: int = 2,
        deid_placeholder: str | None = None,
        output: str = "text",
        allow_missing_keys: bool = False,
    ) -> None:
        from medssl.transforms.text import LoadReport

        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.reports_dir = reports_dir
        self.loader = LoadReport(
            priority=priority, min_words=min_words, deid_placeholder=deid_placeholder, output=output
        )
        self.path_loader = LoadReport(
            priority=priority, min_words=min_words, deid_placeholder=deid_placeholder, source="path", output=output
        )

    def _image_path(self, d: Mapping[Hashable, Any]) -> str | None:
        image = d.get(self.image_key)
        if isinstance(image, MetaTensor):
            image = image.meta.get("filename_or_obj")
        return None if image is None else os.fspath(image)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Put each key's report text in the item (see the class description)."""
        d = dict(data)
        for key in self.keys:
            value = d.get(key)
            if value is not None and value != "":
                d[key] = self.loader(value)
                continue
            image = self._image_path(d)
            try:
                if image is None:
                    raise ReportError(f"no {key!r} in the item and no {self.image_key!r} to find the report from")
                path = report_path_for_image(image, self.reports_dir)
                if not path.is_file():
                    raise ReportError(f"no report for image {image}", path)
            except ReportError:
                if self.allow_missing_keys:
                    continue
                raise
            d[key] = self.path_loader(path)
        return d


def cxr_transforms(
    image_size: int | Sequence[int] = 224,
    keys: KeysCollection = "image",
    train: bool = False,
    channels: int = 1,
    rotate_degrees: float = 5.0,
    scale_range: float = 0.1,
    translate_fraction: float = 0.05,
    contrast_gamma: Sequence[float] = (0.8, 1.25),
    noise_std: float = 0.01,
    augment_prob: float = 0.5,
    report_key: str | None = None,
    reports_dir: str | os.PathLike | None = None,
    report_priority: Sequence[str] = DEFAULT_PRIORITY,
    text_sampling: str | None = None,
    max_words: int = 97,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 128,
    label_keys: Sequence[str] = (),
    seed: int | None = None,
) -> Compose:
    """The chest X-ray pipeline of medssl's bundles and CLI, from plain (JSON-expressible) arguments.

    Steps: :class:`LoadCXRImaged`; resize keeping the aspect ratio so that the longest side fits
    ``image_size`` and pad with black to ``image_size`` (MONAI's ``Resized(size_mode="longest")`` +
    ``SpatialPadd``); when ``train``, a small random affine (rotation, scale, translation), gamma contrast and
    Gaussian noise, each with probability ``augment_prob`` (no flips: laterality matters); ``channels`` copies of
    the channel for 3-channel backbones; then, with ``report_key``, :class:`PairReportd` and (``text_sampling``)
    one random sentence (``"sentence"``, ConVIRT) or sentences up to ``max_words`` words (``"words"``, GLoRIA;
    shuffled when ``train``), and tokenization with ``tokenizer`` (a local folder) into
    ``{report_key}_input_ids`` ...; ``label_keys`` become float32 tensors.

    Args:
        image_size: output size (an int for a square).
        keys: image keys.
        train: add the random augmentations (and shuffle sentences for ``"words"``).
        channels: output channels (1, or 3 for ImageNet-style backbones).
        rotate_degrees: largest rotation.
        scale_range: largest relative zoom in or out.
        translate_fraction: largest shift, as a share of ``image_size``.
        contrast_gamma: range of the random gamma.
        noise_std: standard deviation of the added noise (0 for none).
        augment_prob: probability of each augmentation.
        report_key: key of the report text; None for image-only pipelines.
        reports_dir: separate MIMIC-CXR reports folder (see :class:`PairReportd`).
        report_priority: report sections to use (see :func:`medssl.data.reports.report_text`).
        text_sampling: None (the whole chosen text), ``"sentence"`` or ``"words"``.
        max_words: word budget of ``"words"`` sampling.
        tokenizer: a tokenizer folder (see :class:`medssl.transforms.text.Tokenized`); None leaves text as text.
        max_length: tokens per text.
        label_keys: item keys holding labels (``label``, ``label_mask`` ...) to turn into float tensors.
        seed: seed of the random transforms (``Compose.set_random_state``); None leaves them unseeded.

    Returns:
        The ``Compose``.

    Raises:
        ValueError: an unknown ``text_sampling``, or a bad size or channel count.
    """
    if text_sampling not in (None, "sentence", "words"):
        raise ValueError(f"text_sampling must be None, 'sentence' or 'words', got {text_sampling!r}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    size = (
        (int(image_size), int(image_size)) if isinstance(image_size, int | float) else tuple(int(s) for s in image_size)
    )
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be an int or (rows, columns), got {image_size!r}")
    # Resized(size_mode="longest") takes one number, the longest side; a non-square ``size`` is then reached by
    # padding (an image of another aspect ratio is never stretched).
    steps: list[Any] = [
        LoadCXRImaged(keys),
        Resized(keys, spatial_size=max(size), size_mode="longest", mode="area"),
        SpatialPadd(keys, spatial_size=size, mode="constant", value=0.0),
    ]
    if train:
        steps += [
            RandAffined(
                keys,
                prob=augment_prob,
                rotate_range=(math.radians(rotate_degrees),),
                scale_range=(scale_range, scale_range),
                translate_range=(translate_fraction * size[0], translate_fraction * size[1]),
                padding_mode="zeros",
                mode="bilinear",
            ),
            RandAdjustContrastd(keys, prob=augment_prob, gamma=tuple(contrast_gamma)),
        ]
        if noise_std > 0:
            steps.append(RandGaussianNoised(keys, prob=augment_prob, std=noise_std))
    if channels > 1:
        steps.append(RepeatChanneld(keys, repeats=channels))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    if report_key is not None:
        from medssl.transforms.text import SampleSentenced, SampleSentencesUpTod, Tokenized

        steps.append(PairReportd(report_key, image_key=_first(keys), reports_dir=reports_dir, priority=report_priority))
        if text_sampling == "sentence":
            steps.append(SampleSentenced(report_key))
        elif text_sampling == "words":
            steps.append(SampleSentencesUpTod(report_key, max_words=max_words, shuffle=train))
        if tokenizer is not None:
            steps.append(Tokenized(report_key, tokenizer=tokenizer, max_length=max_length))
    if label_keys:
        steps.append(EnsureTyped(list(label_keys), dtype=torch.float32, track_meta=False, allow_missing_keys=True))
    pipeline = Compose(steps)
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline


def _first(keys: KeysCollection) -> str:
    return keys if isinstance(keys, str) else list(keys)[0]


LoadCXRImageD = LoadCXRImageDict = LoadCXRImaged
PairReportD = PairReportDict = PairReportd
