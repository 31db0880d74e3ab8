"""Image-only self-supervised pretraining methods, registered with the pretraining engine.

``medssl pretrain --method NAME`` (or ``medssl.engines.Pretraining(method=NAME, ...)``) with:

============  =========================================================================================
name          method
============  =========================================================================================
``simclr``    SimCLR (Chen et al. 2020): two augmented views, NT-Xent over the global batch (negatives
              gathered from every rank by :class:`medssl.losses.NTXentLoss`)
``micle``     SimCLR whose positive is another image of the same patient (Azizi et al. 2021); ``simclr``,
              ``simsiam`` and ``byol`` take ``positives="patient"`` or ``"study"`` as well
``simsiam``   SimSiam (Chen & He 2021): predictor, stop-gradient, no negatives
``byol``      BYOL (Grill et al. 2020): online network + moving-average target, updated after every
              optimizer step; the target and its update count are checkpointed
``mae``       masked autoencoder (He et al. 2022) on MONAI's ``MaskedAutoEncoderViT``, 2D or 3D; loss
              on the masked patches only
``rotation``  4-way rotation prediction (Gidaris et al. 2018); volumes turn in the axial plane
============  =========================================================================================

Every method takes the shared image options of :class:`medssl.engines.methods.ImageMethodBase` (backbone, sizes,
``spatial_dims`` ...) plus:

* ``preset``: the augmentation preset (:mod:`medssl.ssl.augment`: ``cxr``, ``mammo``, ``mr3d``; default ``cxr`` in
  2D, ``mr3d`` in 3D), which also decides how images are loaded (radiograph, oriented mammogram, RAS volume);
  ``augment``: overrides of the preset's fields;
* ``positives`` (two-view methods): ``augment`` (two augmentations of one image), ``patient`` or ``study``
  (:mod:`medssl.ssl.pairs`: another image of the same patient or study, falling back to the image itself);
* ``image_keys``: datalist keys of exams or studies holding several images (``["L-CC", "R-CC", "L-MLO",
  "R-MLO"]``, ``["T1", "T1C", "T2", "FLAIR"]``), turned into one training item per image.

* ``sequences``: MR sequences to keep when ``--data`` is a manifest or a DICOM export.

The engine reads the training items with :meth:`SSLMethodBase.load_items` (a datalist, a manifest, a folder of
images or a DICOM export: :mod:`medssl.ssl.data`) and prepares them with :meth:`SSLMethodBase.prepare_items` (one
item per image, positive candidates listed: :mod:`medssl.ssl.pairs`).

Exports (``OUT/encoders``): ``image.pt`` + ``image.json`` of the encoder, as ConVIRT/GLoRIA export theirs
(:func:`medssl.networks.encoders.export_image_encoder`), readable by ``medssl evaluate linear-probe``; MAE exports its
ViT encoder with ``backbone: "vit"`` (:func:`load_ssl_image_encoder` reads both).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import nn

from medssl.engines.methods import ImageMethodBase, MethodConfigError, image_load_transforms, register_method
from medssl.log import get_logger
from medssl.ssl.augment import AugmentConfigError, resolve_preset
from medssl.ssl.pairs import FLAG_KEY, LEVELS, add_positive_candidates, image_items

__all__ = [
    "POSITIVE_MODES",
    "ssl_load_transforms",
    "LoadIfPathd",
    "LoadIfPathD",
    "LoadIfPathDict",
    "SSLMethodBase",
    "TwoViewMethodBase",
    "SimCLRMethod",
    "MICLeMethod",
    "SimSiamMethod",
    "BYOLMethod",
    "MAEMethod",
    "RotationMethod",
    "load_ssl_image_encoder",
]

logger = get_logger(__name__)

#: Values of the ``positives`` option.
POSITIVE_MODES = ("augment", *LEVELS)


def _is_path_value(value: Any) -> bool:
    if isinstance(value, (str, os.PathLike)):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, (str, os.PathLike)) for v in value)


class LoadIfPathd(MapTransform):
    """Run loading transforms on a key only when it holds a path (a positive still to load), else leave it.

    :class:`medssl.ssl.pairs.RandPositived` puts either another image's path (to load) or a copy of the loaded
    anchor (the fallback) under the positive's key; this loads the first and keeps the second.

    Args:
        keys: the keys.
        transforms: dictionary transforms loading ``key`` (e.g. the method's load transforms for that key).
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, transforms: Sequence[Callable], allow_missing_keys: bool = False) -> None:
        from monai.transforms import Compose

        super().__init__(keys, allow_missing_keys)
        self.load = Compose(list(transforms))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load the keys that hold paths (a copy of the item is returned)."""
        d = dict(data)
        for key in self.key_iterator(d):
            if _is_path_value(d[key]):
                d[key] = self.load({key: d[key], "case_key": d.get("case_key")})[key]
        return d


LoadIfPathD = LoadIfPathDict = LoadIfPathd


def ssl_load_transforms(
    preprocessing: Mapping[str, Any], key: str | None = None, final_size: int | None = None
) -> list[Callable]:
    """Deterministic loading of an image as a float32 tensor, by modality (training and evaluation share it).

    * ``cxr``: :func:`medssl.engines.methods.image_load_transforms` (JPG/PNG/DICOM radiograph, fitted in a square);
    * ``mammo``: load, orient the chest wall to the left, crop to the breast, fit in a square;
    * ``mr``: load a NIfTI file or DICOM series, reorient (``orientation``, RAS by default, 3D), scale the
      0.5-99.5 percentiles to [0, 1], fit in a square or cube.

    Args:
        preprocessing: an exported ``preprocessing`` (:meth:`SSLMethodBase.preprocessing`): ``image_key``,
            ``load_size``, ``fit``, ``in_channels``, ``modality`` (default ``cxr``), ``spatial_dims``, ``orientation``.
        key: the key to load (default: ``image_key``).
        final_size: resize to this side at the end (evaluation: the encoder's ``image_size``).

    Returns:
        The transforms.
    """
    from monai.transforms import (
        EnsureTyped,
        Orientationd,
        RepeatChanneld,
        Resized,
        ScaleIntensityRangePercentilesd,
        SpatialPadd,
    )

    p = preprocessing
    key = key or p.get("image_key", "image")
    size, channels = int(p.get("load_size") or p.get("image_size", 224)), int(p.get("in_channels", 1))
    modality, dims = p.get("modality", "cxr"), int(p.get("spatial_dims", 2))
    if modality == "cxr":
        steps = image_load_transforms(key, size, p.get("fit", "pad"), channels)
    elif modality == "mammo":
        from medssl.transforms.mammo import CropBreastd, LoadMammogramd, OrientBreastd, ResizeKeepAspectd

        steps = [
            LoadMammogramd(key),
            OrientBreastd(key, target="left"),
            CropBreastd(key),
            ResizeKeepAspectd(key, spatial_size=(size, size)),
        ]
        if channels > 1:
            steps.append(RepeatChanneld(key, repeats=channels))
    else:
        from medssl.transforms.dictionary import LoadVolumed

        steps = [LoadVolumed(key, ensure_channel_first=True)]
        if dims == 3 and p.get("orientation"):
            steps.append(Orientationd(key, axcodes=p["orientation"]))
        steps += [
            ScaleIntensityRangePercentilesd(key, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
            Resized(key, spatial_size=size, size_mode="longest", mode="area"),
            SpatialPadd(key, spatial_size=(size,) * dims),
        ]
        if channels > 1:
            steps.append(RepeatChanneld(key, repeats=channels))
    if final_size is not None:
        steps.append(Resized(key, spatial_size=(int(final_size),) * dims, mode="area"))
    return [*steps, EnsureTyped(key, dtype=torch.float32, track_meta=False)]


def _tensor(batch: Mapping[str, Any], key: str, device: torch.device) -> torch.Tensor:
    value = batch[key]
    if hasattr(value, "as_tensor"):
        value = value.as_tensor()
    return torch.as_tensor(value).to(device, non_blocking=True)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class SSLMethodBase(ImageMethodBase):
    """Shared part of the image-only methods: presets, modality-aware loading, item preparation, encoder export.

    Subclasses set :attr:`two_views`, extend :meth:`defaults`, and implement ``build_model``, ``build_loss`` and
    ``forward_loss``.
    """

    #: Whether a sample holds a second view (or another image) of the anchor.
    two_views: ClassVar[bool] = False
    #: Preset fields the method changes by default (e.g. MAE's light augmentation).
    augment_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            **super().defaults(),
            "preset": None,
            "augment": dict(cls.augment_defaults),
            "image_keys": None,
            "sequences": None,
            "orientation": "RAS",
        }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # The engine leaves out items lacking these keys before training.
        self.required_keys = () if self.options["image_keys"] else (self.options["image_key"],)

    def check_options(self) -> None:  # noqa: D102
        o = self.options
        if int(o["spatial_dims"]) not in (2, 3):
            raise MethodConfigError(f"spatial_dims must be 2 or 3, got {o['spatial_dims']}", f"--method {self.name}")
        if not isinstance(o["augment"], Mapping):
            raise MethodConfigError("augment must be an object of preset fields", f"--method {self.name}")
        try:
            settings = self.augmentation()
        except AugmentConfigError as error:
            raise MethodConfigError(error.problem, f"--method {self.name}") from error
        if settings["spatial_dims"] != int(o["spatial_dims"]):
            raise MethodConfigError(
                f"the {self.preset_name()!r} preset is {settings['spatial_dims']}D but spatial_dims is "
                f"{o['spatial_dims']}",
                f"--method {self.name}",
            )
        keys = o["image_keys"]
        if keys is not None and (isinstance(keys, str) or not all(isinstance(k, str) for k in keys) or not keys):
            raise MethodConfigError("image_keys must be a list of item keys", f"--method {self.name}")

    # -------------------------------------------------------------------------------------------- data
    def preset_name(self) -> str | Mapping[str, Any]:
        """The preset name (or dictionary) in use."""
        preset = self.options["preset"]
        if preset is None:
            return "mr3d" if int(self.options["spatial_dims"]) == 3 else "cxr"
        return preset

    def augmentation(self) -> dict[str, Any]:
        """The resolved augmentation settings (preset + ``augment`` overrides)."""
        return resolve_preset(self.preset_name(), **dict(self.options["augment"]))

    def modality(self) -> str:
        """``cxr``, ``mammo`` or ``mr``: how images are loaded."""
        return str(self.augmentation()["modality"])

    def preprocessing(self) -> dict[str, Any]:
        """How images are prepared (exported with the encoder), with the modality, dimensions and orientation."""
        prep = {**super().preprocessing(), "modality": self.modality()}
        prep["spatial_dims"] = int(self.options["spatial_dims"])
        if prep["spatial_dims"] == 3:
            prep["orientation"] = self.options["orientation"]
        return prep

    def load_transforms(self, key: str | None = None) -> list[Callable]:
        """Deterministic loading of ``key`` (default: the image key) at ``load_size`` (:func:`ssl_load_transforms`)."""
        return ssl_load_transforms(self.preprocessing(), key)

    def load_items(self, data: str | os.PathLike, split: str = "training") -> list[dict[str, Any]]:
        """Training items from a datalist, a manifest, a folder of images or a DICOM export.

        See :func:`medssl.ssl.data.load_ssl_items`; manifests keep the series of the preset's modality (and of the
        ``sequences`` option, when set).
        """
        from medssl.ssl.data import load_ssl_items

        return load_ssl_items(
            data, split, self.modality(), int(self.options["spatial_dims"]), self.options["sequences"] or None
        )

    def positive_key(self) -> str:
        """The key of the second view (or other image) in a sample."""
        return f"{self.options['image_key']}_positive"

    def positive_mode(self) -> str:
        """``augment``, ``patient`` or ``study``."""
        return str(self.options.get("positives", "augment"))

    def prepare_items(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The training items as the method needs them: one per image (``image_keys``), positive candidates listed.

        Args:
            items: the datalist split's items.

        Returns:
            New items.

        Raises:
            PairingError: items without the keys positives are grouped by.
        """
        key = self.options["image_key"]
        out = [dict(item) for item in items]
        if self.options["image_keys"]:
            exploded = image_items(out, self.options["image_keys"], key)
            if out and not exploded:
                present = sorted({k for item in out for k in item})
                raise MethodConfigError(
                    f"no item holds any of the image_keys {list(self.options['image_keys'])}; item keys: {present}",
                    f"--method {self.name}",
                )
            out = exploded
        if self.two_views and self.positive_mode() != "augment":
            out = add_positive_candidates(out, self.positive_mode(), key)
            with_other = sum(1 for item in out if item["positive_candidates"])
            logger.info(
                "%s positives: %d of %d images have another image of their %s",
                self.name,
                with_other,
                len(out),
                self.positive_mode(),
            )
        return out

    def transforms(self, train: bool = True) -> tuple[list[Callable], list[Callable]]:
        """``(deterministic, random)``: load the anchor; draw and load its positive, augment both views, keep tensors.

        With ``train=False``: load and resize to ``image_size`` (no randomness).
        """
        from monai.transforms import CopyItemsd, EnsureTyped, Resized, SelectItemsd

        from medssl.ssl.augment import RandSSLAugmentd
        from medssl.ssl.pairs import RandPositived

        key, size = self.options["image_key"], int(self.options["image_size"])
        deterministic = self.load_transforms(key)
        if not train:
            final = [Resized(key, spatial_size=size, mode="area"), EnsureTyped(key, track_meta=False)]
            return deterministic + final, []
        settings = self.augmentation()
        if not self.two_views:
            return deterministic, [RandSSLAugmentd(key, settings, size), SelectItemsd([key])]
        positive = self.positive_key()
        keep = [key, positive]
        if self.positive_mode() == "augment":
            random_part: list[Callable] = [CopyItemsd(key, names=positive)]
        else:
            random_part = [
                RandPositived(key, postfix="_positive"),
                LoadIfPathd(positive, self.load_transforms(positive)),
            ]
            keep.append(FLAG_KEY)
        random_part += [RandSSLAugmentd([key, positive], settings, size), SelectItemsd(keep)]
        return deterministic, random_part

    def batch_size_of(self, batch: Mapping[str, Any]) -> int:  # noqa: D102
        return int(batch[self.options["image_key"]].shape[0])

    def views(self, batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch, on ``device``."""
        return _tensor(batch, self.options["image_key"], device), _tensor(batch, self.positive_key(), device)

    def extra_scalars(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Scalars logged with the loss: the share of positives that are another image (patient/study modes)."""
        if FLAG_KEY in batch:
            return {"positive_is_other": _tensor(batch, FLAG_KEY, device).float().mean()}
        return {}

    # -------------------------------------------------------------------------------------------- export
    def encoder_of(self, model: nn.Module) -> nn.Module:
        """The :class:`medssl.networks.encoders.ImageEncoder` to export."""
        return model.encoder

    def export(self, model: nn.Module, loss: nn.Module, out_dir: Path) -> dict[str, str]:
        """Write ``image.pt`` (the encoder trunk's state dict) and ``image.json`` (how to rebuild it, preprocessing)."""
        from medssl.networks.encoders import export_image_encoder

        path = export_image_encoder(self.encoder_of(model), out_dir, "image", self.preprocessing())
        return {"image_encoder": os.fspath(path), "image_config": os.fspath(path.with_suffix(".json"))}

    def encoder_arguments(self) -> dict[str, Any]:
        """Constructor arguments of the encoder shared by the convolutional models."""
        o = self.options
        return {
            "backbone": o["image_backbone"],
            "spatial_dims": int(o["spatial_dims"]),
            "in_channels": int(o["in_channels"]),
            "width": float(o["image_width"]),
            "backbone_kwargs": dict(o["image_kwargs"] or {}),
        }


class TwoViewMethodBase(SSLMethodBase):
    """Methods comparing two views: the ``positives`` option (``augment``, ``patient``, ``study``)."""

    two_views = True

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {**super().defaults(), "positives": "augment"}

    def check_options(self) -> None:  # noqa: D102
        super().check_options()
        if self.options["positives"] not in POSITIVE_MODES:
            raise MethodConfigError(
                f"positives must be one of {POSITIVE_MODES}, got {self.options['positives']!r}", f"--method {self.name}"
            )


@register_method
class SimCLRMethod(TwoViewMethodBase):
    """SimCLR: projection head, NT-Xent over both views of the global batch."""

    name = "simclr"
    summary = "SimCLR image contrastive pretraining, NT-Xent with negatives from all ranks (Chen et al. 2020)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {**super().defaults(), "proj_dim": 128, "proj_hidden": None, "temperature": 0.1}

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.ssl.networks import SimCLRNet

        o = self.options
        return SimCLRNet(**self.encoder_arguments(), proj_dim=int(o["proj_dim"]), proj_hidden=o["proj_hidden"])

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import NTXentLoss

        return NTXentLoss(temperature=float(self.options["temperature"]))

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Both views through one forward pass (BatchNorm sees ``2B`` images), NT-Xent in float32."""
        device = _device_of(model)
        x1, x2 = self.views(batch, device)
        z1, z2 = model(torch.cat([x1, x2]))["z"].chunk(2)
        with torch.autocast(device_type=device.type, enabled=False):
            value = loss(z1.float(), z2.float())
        return {"loss": value, **self.extra_scalars(batch, device)}


@register_method
class MICLeMethod(SimCLRMethod):
    """MICLe: SimCLR whose positive is another image of the same patient when there is one."""

    name = "micle"
    summary = "MICLe: SimCLR with another image of the same patient as the positive (Azizi et al. 2021)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {**super().defaults(), "positives": "patient"}


@register_method
class SimSiamMethod(TwoViewMethodBase):
    """SimSiam: predictor on one branch, stop-gradient on the other, symmetric negative cosine."""

    name = "simsiam"
    summary = "SimSiam: Siamese views, predictor and stop-gradient, no negatives (Chen & He 2021)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {**super().defaults(), "proj_dim": 2048, "pred_hidden": None, "proj_layers": 3}

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.ssl.networks import SimSiamNet

        o = self.options
        return SimSiamNet(
            **self.encoder_arguments(),
            proj_dim=int(o["proj_dim"]),
            pred_hidden=o["pred_hidden"],
            proj_layers=int(o["proj_layers"]),
        )

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import SimSiamLoss

        return SimSiamLoss()

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``.

        Also logs ``z_std``, the collapse monitor of the paper: about ``1 / sqrt(d)`` when healthy, 0 when collapsed.
        """
        device = _device_of(model)
        x1, x2 = self.views(batch, device)
        out = model(torch.cat([x1, x2]))
        z1, z2 = out["z"].float().chunk(2)
        p1, p2 = out["p"].float().chunk(2)
        with torch.autocast(device_type=device.type, enabled=False):
            value = loss(p1, p2, z1, z2)
        z_std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": value, "z_std": z_std, **self.extra_scalars(batch, device)}


@register_method
class BYOLMethod(TwoViewMethodBase):
    """BYOL: online network predicts the moving-average target's projection of the other view."""

    name = "byol"
    summary = "BYOL: online network + moving-average target updated every optimizer step (Grill et al. 2020)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            **super().defaults(),
            "proj_dim": 256,
            "hidden": 4096,
            "base_momentum": 0.996,
            # Steps over which the momentum rises to 1 (cosine): give the run's total steps. None: constant.
            "momentum_steps": None,
        }

    def check_options(self) -> None:  # noqa: D102
        super().check_options()
        if not 0.0 <= float(self.options["base_momentum"]) <= 1.0:
            raise MethodConfigError("base_momentum must be in [0, 1]", f"--method {self.name}")

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.ssl.networks import BYOLNet

        o = self.options
        if not o["momentum_steps"]:
            logger.info(
                "byol: constant momentum %g (set momentum_steps to the run's steps for BYOL's cosine rise)",
                o["base_momentum"],
            )
        return BYOLNet(
            **self.encoder_arguments(),
            proj_dim=int(o["proj_dim"]),
            hidden=int(o["hidden"]),
            base_momentum=float(o["base_momentum"]),
            momentum_steps=int(o["momentum_steps"] or 0),
        )

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import BYOLLoss

        return BYOLLoss()

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Online predictions of each view against the target's projections of the other view.

        Also logs the momentum of the next target update.
        """
        device = _device_of(model)
        x1, x2 = self.views(batch, device)
        out = model(torch.cat([x1, x2]))
        p1, p2 = out["p"].float().chunk(2)
        t1, t2 = out["z_target"].float().chunk(2)
        with torch.autocast(device_type=device.type, enabled=False):
            value = loss(p1, p2, t1, t2)
        momentum = torch.tensor(model.momentum(), device=device)
        return {"loss": value, "momentum": momentum, **self.extra_scalars(batch, device)}


@register_method
class RotationMethod(SSLMethodBase):
    """Rotation prediction: every image in its four quarter turns, a linear classifier names the turn."""

    name = "rotation"
    summary = "rotation prediction, 4 quarter turns (axial plane for volumes) (Gidaris et al. 2018)"

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.ssl.networks import RotationNet

        return RotationNet(**self.encoder_arguments())

    def build_loss(self) -> nn.Module:  # noqa: D102
        return nn.CrossEntropyLoss()

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the quarter-turn labels; logs the accuracy."""
        from medssl.ssl.networks import rotate_batch

        device = _device_of(model)
        images, labels = rotate_batch(_tensor(batch, self.options["image_key"], device))
        logits = model(images).float()
        with torch.autocast(device_type=device.type, enabled=False):
            value = loss(logits, labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": value, "accuracy": accuracy}


@register_method
class MAEMethod(SSLMethodBase):
    """Masked autoencoder on MONAI's ``MaskedAutoEncoderViT``: reconstruct masked patches from visible ones."""

    name = "mae"
    summary = "masked autoencoder (ViT), loss on masked patches only, 2D or 3D (He et al. 2022)"
    # MAE's own augmentation is a random resized crop and a flip: the masking is the pretext task.
    augment_defaults: ClassVar[dict[str, Any]] = {
        "affine_prob": 0.0,
        "intensity_prob": 0.0,
        "gamma_prob": 0.0,
        "blur_prob": 0.0,
        "noise_prob": 0.0,
        "coarse_dropout": None,
        "coarse_shuffle": None,
    }

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        base = super().defaults()
        for unused in ("image_backbone", "image_width", "image_kwargs"):
            base.pop(unused)
        return {
            **base,
            "patch_size": 16,
            "hidden_size": 768,
            "mlp_dim": 3072,
            "num_layers": 12,
            "num_heads": 12,
            "masking_ratio": 0.75,
            "decoder_hidden_size": 384,
            "decoder_mlp_dim": 1536,
            "decoder_num_layers": 4,
            "decoder_num_heads": 12,
            "norm_pix_loss": True,
        }

    def check_options(self) -> None:  # noqa: D102
        super().check_options()
        o = self.options
        if int(o["image_size"]) % int(o["patch_size"]):
            raise MethodConfigError(
                f"image_size {o['image_size']} must be a multiple of patch_size {o['patch_size']}",
                f"--method {self.name}",
            )

    def _vit_arguments(self) -> dict[str, Any]:
        o = self.options
        return {
            "spatial_dims": int(o["spatial_dims"]),
            "in_channels": int(o["in_channels"]),
            "img_size": int(o["image_size"]),
            "patch_size": int(o["patch_size"]),
            "hidden_size": int(o["hidden_size"]),
            "mlp_dim": int(o["mlp_dim"]),
            "num_layers": int(o["num_layers"]),
            "num_heads": int(o["num_heads"]),
        }

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.ssl.networks import build_mae

        o = self.options
        return build_mae(
            **self._vit_arguments(),
            masking_ratio=float(o["masking_ratio"]),
            decoder_hidden_size=int(o["decoder_hidden_size"]),
            decoder_mlp_dim=int(o["decoder_mlp_dim"]),
            decoder_num_layers=int(o["decoder_num_layers"]),
            decoder_num_heads=int(o["decoder_num_heads"]),
        )

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import MaskedPatchLoss

        return MaskedPatchLoss(norm_pix_loss=bool(self.options["norm_pix_loss"]))

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Predict every patch; the loss looks at the masked ones only (MONAI's mask: 1 = masked)."""
        from medssl.ssl.networks import patchify

        device = _device_of(model)
        images = _tensor(batch, self.options["image_key"], device)
        pred, mask = model(images)
        with torch.autocast(device_type=device.type, enabled=False):
            value = loss(pred.float(), patchify(images.float(), int(self.options["patch_size"])), mask)
        return {"loss": value}

    def export(self, model: nn.Module, loss: nn.Module, out_dir: Path) -> dict[str, str]:
        """Write the ViT encoder (``image.pt``, MONAI ``ViT`` keys) and ``image.json`` with ``backbone: "vit"``."""
        from medssl.networks.encoders import IMAGE_ENCODER_FORMAT
        from medssl.ssl.networks import VIT_BACKBONE, ViTEncoder, mae_encoder_state

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arguments = self._vit_arguments()
        encoder = ViTEncoder(**arguments)
        encoder.load_state_dict(mae_encoder_state(model))  # strict: every ViT weight comes from the MAE
        path = out / "image.pt"
        tmp = out / ".image.pt.tmp"
        torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, tmp)
        os.replace(tmp, path)
        meta = {
            "format": IMAGE_ENCODER_FORMAT,
            "version": 1,
            "backbone": VIT_BACKBONE,
            "spatial_dims": arguments["spatial_dims"],
            "in_channels": arguments["in_channels"],
            "width": 1.0,
            "region_layer": None,
            "backbone_kwargs": {k: v for k, v in encoder.arguments.items()},
            "out_features": encoder.out_features,
            "region_features": 0,
            "state_dict": path.name,
            "preprocessing": self.preprocessing(),
        }
        (out / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        return {"image_encoder": os.fspath(path), "image_config": os.fspath(out / "image.json")}


def load_ssl_image_encoder(
    path: str | os.PathLike, pretrained: bool = True, seed: int = 0
) -> tuple[nn.Module, int, dict[str, Any]]:
    """An exported image encoder (CNN trunk or MAE's ViT), or the same architecture randomly initialised.

    Args:
        path: ``image.pt``, ``image.json`` or their folder.
        pretrained: load the weights (False: random initialisation under ``seed``, the baseline of the probes).
        seed: seed of the random initialisation.

    Returns:
        ``(encoder, out_features, preprocessing)``: the encoder maps ``(B, C, *spatial)`` to ``(B, F)`` features (a
        :class:`medssl.networks.encoders.ImageEncoder` returns ``(features, None)``; the probes take both).

    Raises:
        MethodConfigError: no ``image.json``.
    """
    from medssl.eval.probe import encoder_from_export
    from medssl.networks.backbones import load_encoder_state
    from medssl.ssl.networks import VIT_BACKBONE, ViTEncoder

    path = Path(path)
    meta_path = path / "image.json" if path.is_dir() else path.with_suffix(".json")
    if not meta_path.is_file():
        raise MethodConfigError("no image.json next to the encoder weights", meta_path)
    meta = json.loads(meta_path.read_text())
    if meta.get("backbone") != VIT_BACKBONE:
        return encoder_from_export(path, pretrained, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ViTEncoder(meta["spatial_dims"], meta["in_channels"], **meta["backbone_kwargs"])
    if pretrained:
        load_encoder_state(encoder, meta_path.parent / meta.get("state_dict", "image.pt"))
    return encoder, int(meta["out_features"]), dict(meta.get("preprocessing") or {})
