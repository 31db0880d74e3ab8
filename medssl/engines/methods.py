"""Pretraining methods as pluggable units, and the image-report methods ConVIRT and GLoRIA.

A method is a :class:`PretrainMethod` subclass registered under a name. It owns what differs between methods and
nothing else:

* ``defaults()``: its options (image backbone, sizes, temperatures ...) with their default values;
* ``build_model()`` and ``build_loss()``: the network and the loss module (plain PyTorch modules);
* ``transforms(train)``: the MONAI pipeline from a datalist item to a sample, as a deterministic part (cached when
  asked) and a random part (seeded per item by :class:`medssl.engines.data.SeededDataset`);
* ``forward_loss(model, loss, batch)``: one batch to ``{"loss": ..., other scalars}``;
* ``export(model, loss, out_dir)``: the encoders other code loads (``encoders/image.pt`` at least).

The engine (:mod:`medssl.engines.pretrain`) supplies everything they share: data loading with exact resume,
optimisation (accumulation, mixed precision, clipping, schedule), DDP, checkpoints, tracking, progress and export.

Image-only methods (SimCLR, SimSiam, BYOL, MAE, rotation) subclass :class:`PretrainMethod` (or
:class:`ImageMethodBase` for the shared image options) and register themselves with :func:`register_method`; the
registry imports ``medssl.ssl.methods`` on the first lookup of an unknown name, and any installed package can add
methods through the ``medssl.pretrain_methods`` entry-point group, or be named as ``package.module:ClassName``.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "MethodConfigError",
    "PretrainMethod",
    "ImageMethodBase",
    "ImageTextMethodBase",
    "ConVIRTMethod",
    "GLoRIAMethod",
    "register_method",
    "get_method",
    "create_method",
    "available_methods",
    "image_load_transforms",
    "PLUGIN_MODULES",
]

logger = get_logger(__name__)

#: Modules imported on the first lookup of a method name that is not registered yet (they register on import).
PLUGIN_MODULES = ("medssl.ssl.methods",)
_ENTRY_POINT_GROUP = "medssl.pretrain_methods"

_REGISTRY: dict[str, type[PretrainMethod]] = {}
_PLUGINS_LOADED = False


class MethodConfigError(MedsslError):
    """An unknown method, an unknown option, or option values that do not fit together."""


class PretrainMethod:
    """Base class of a pretraining method (see the module docstring for the contract).

    Args:
        options: method options; every key must be one of ``defaults()``.

    Raises:
        MethodConfigError: an unknown option.
    """

    #: Registry name (``--method``).
    name: ClassVar[str] = ""
    #: One line for ``medssl pretrain --help``.
    summary: ClassVar[str] = ""
    #: Item keys the method needs in each datalist item.
    required_keys: ClassVar[tuple[str, ...]] = ("image",)
    #: Options holding paths (kept out of checkpoints, which must not carry site paths).
    path_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        defaults = self.defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise MethodConfigError(
                f"unknown option(s) {unknown} for method {self.name!r}; known: {sorted(defaults)}",
                f"--method {self.name}",
            )
        self.options: dict[str, Any] = {**copy.deepcopy(defaults), **options}
        self.check_options()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The method's options and their default values (JSON-serialisable)."""
        return {}

    def check_options(self) -> None:
        """Validate ``self.options`` (raise :class:`MethodConfigError`)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The options without paths (what checkpoints and trackers record)."""
        return {
            k: (Path(os.fspath(v)).name if v is not None else None) if k in self.path_options else v
            for k, v in self.options.items()
        }

    def build_model(self) -> nn.Module:
        """The network (called under the run's seed, identically on every rank)."""
        raise NotImplementedError

    def build_loss(self) -> nn.Module:
        """The loss module (may hold parameters, e.g. a learnable temperature)."""
        raise NotImplementedError

    def transforms(self, train: bool = True) -> tuple[list[Callable], list[Callable]]:
        """``(deterministic, random)`` transform lists from a datalist item to a training sample."""
        raise NotImplementedError

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Compute the loss of a batch: ``{"loss": scalar tensor, ...}`` (other entries are logged)."""
        raise NotImplementedError

    def batch_size_of(self, batch: Mapping[str, Any]) -> int:
        """Number of samples in a collated batch."""
        return int(batch["image"].shape[0])

    def load_items(self, data: str | os.PathLike, split: str = "training") -> list[dict[str, Any]]:
        """The training items of ``data`` (here: a datalist JSON or a folder holding ``datalist.json``).

        Image-only methods also read manifests and folders of images (:meth:`medssl.ssl.SSLMethodBase.load_items`).
        """
        from medssl.engines.pretrain import load_training_items

        return load_training_items(data, split)

    def prepare_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The usable training items as the method trains on them (here: unchanged).

        Image-only methods split exams into one item per image and list patient-aware positives here.
        """
        return items

    def export(self, model: nn.Module, loss: nn.Module, out_dir: Path) -> dict[str, str]:
        """Write the encoders to ``out_dir``; return ``{what: path}``."""
        raise NotImplementedError

    def parameter_groups(self, model: nn.Module, loss: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: weight decay on weights, none on biases, norms and temperatures.

        Frozen parameters (``requires_grad=False``) are left out, so they never change.
        """
        decay, no_decay = [], []
        for module in (model, loss):
            for name, param in module.named_parameters():
                if not param.requires_grad:
                    continue
                (no_decay if param.ndim <= 1 or "logit_scale" in name else decay).append(param)
        groups = [{"params": decay, "weight_decay": float(weight_decay)}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups


def _to_device(value: Any, device: torch.device) -> torch.Tensor:
    """A batch entry as a plain tensor on ``device`` (a MetaTensor's metadata does not travel into the model)."""
    if hasattr(value, "as_tensor"):
        value = value.as_tensor()
    if not torch.is_tensor(value):
        value = torch.as_tensor(value)
    return value.to(device, non_blocking=True)


def image_load_transforms(
    key: str = "image", size: int = 256, fit: str = "pad", channels: int = 1, final_size: int | None = None
) -> list[Callable]:
    """Load a radiograph (:class:`medssl.transforms.cxr.LoadCXRImaged`), fit it in a ``size`` square, optionally resize.

    Args:
        key: the image key.
        size: side of the square the image is fitted in (aspect ratio kept).
        fit: ``"pad"`` (letterbox with black) or ``"crop"`` (cover, crop the centre).
        channels: output channels (copies of the grey channel for 3-channel backbones).
        final_size: resize the square to this side afterwards and make it a plain float32 tensor (evaluation).

    Returns:
        The transforms.
    """
    from monai.transforms import CenterSpatialCropd, EnsureTyped, RepeatChanneld, Resized, SpatialPadd

    from medssl.transforms.cxr import LoadCXRImaged

    if fit not in ("pad", "crop"):
        raise MethodConfigError(f"fit must be 'pad' or 'crop', got {fit!r}")
    steps: list[Callable] = [LoadCXRImaged(key)]
    if fit == "pad":
        steps += [
            Resized(key, spatial_size=int(size), size_mode="longest", mode="area"),
            SpatialPadd(key, spatial_size=(int(size), int(size)), mode="constant", value=0.0),
        ]
    else:
        steps += [
            Resized(key, spatial_size=int(size), size_mode="shortest", mode="area"),
            CenterSpatialCropd(key, roi_size=(int(size), int(size))),
        ]
    if int(channels) > 1:
        steps.append(RepeatChanneld(key, repeats=int(channels)))
    if final_size is not None:
        steps += [
            Resized(key, spatial_size=(int(final_size), int(final_size)), mode="area"),
            EnsureTyped(key, dtype=torch.float32, track_meta=False),
        ]
    return steps


class ImageMethodBase(PretrainMethod):
    """Shared image options of every method: backbone, sizes, loading, augmentation settings.

    Image-only methods extend ``defaults()`` with their own options.
    """

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            "image_backbone": "resnet50",
            "image_width": 1.0,
            "image_kwargs": {},
            "spatial_dims": 2,
            "in_channels": 1,
            "image_size": 224,
            "load_size": None,
            "fit": "pad",
            "image_key": "image",
        }

    def preprocessing(self) -> dict[str, Any]:
        """How images are prepared (exported with the encoders so evaluation does the same)."""
        o = self.options
        return {
            "image_key": o["image_key"],
            "image_size": int(o["image_size"]),
            "load_size": int(o["load_size"] or round(o["image_size"] * 8 / 7)),
            "fit": o["fit"],
            "in_channels": int(o["in_channels"]),
        }

    def load_transforms(self) -> list[Callable]:
        """Deterministic image loading (see :func:`image_load_transforms`) at ``load_size``.

        ``load_size`` (default: ``image_size * 8 / 7``, 256 for 224) keeps a margin for the random crop.
        """
        p = self.preprocessing()
        return image_load_transforms(p["image_key"], p["load_size"], p["fit"], p["in_channels"])


class ImageTextMethodBase(ImageMethodBase):
    """Shared part of ConVIRT and GLoRIA: report loading, sentence sampling, tokenization, the two-tower export."""

    required_keys = ("image",)
    path_options = ("text_model", "tokenizer", "reports_dir")
    model_method = ""

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            **super().defaults(),
            "text_model": None,
            "tokenizer": None,
            "local_files_only": True,
            "report_key": "report",
            "reports_dir": None,
            "report_priority": ["impression", "findings", "last_paragraph"],
            "max_length": 128,
            "trainable_layers": None,
            # ConVIRT's augmentation (see medssl.transforms.augment); flips off: laterality is in the reports.
            "crop_scale": [0.6, 1.0],
            "flip_prob": 0.0,
            "rotate_degrees": 20.0,
            "translate": 0.1,
            "scale": 0.05,
            "brightness": 0.4,
            "contrast": 0.4,
            "blur_sigma": [0.1, 3.0],
            "blur_prob": 1.0,
            "temperature": 0.1,
            "learnable_temperature": False,
        }

    def check_options(self) -> None:  # noqa: D102
        if not self.options.get("text_model"):
            raise MethodConfigError(
                "needs a text model: --text-model FOLDER_OR_HUB_NAME (a local folder always works; "
                "medssl.networks.encoders.build_tiny_text_model makes a small one)",
                f"--method {self.name}",
            )

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer folder or name (the text model's unless ``tokenizer`` is set)."""
        return os.fspath(self.options["tokenizer"] or self.options["text_model"])

    def text_sampling(self, train: bool) -> list[Callable]:
        """The sentence sampling step(s) of the report (after loading, before tokenizing)."""
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """Image preparation plus the report's: key, sections, evaluation word budget, token length."""
        o = self.options
        return {
            **super().preprocessing(),
            "report_key": o["report_key"],
            "report_priority": list(o["report_priority"]),
            "max_words": int(o.get("max_words") or o["max_length"]),
            "max_length": int(o["max_length"]),
        }

    def image_augmentation(self, train: bool) -> list[Callable]:
        """ConVIRT-style random augmentation (train) or a plain resize to ``image_size`` (evaluation)."""
        from monai.transforms import EnsureTyped, Resized

        from medssl.transforms.augment import RandConVIRTAugmentd

        key, size, o = self.options["image_key"], int(self.options["image_size"]), self.options
        if not train:
            return [
                Resized(key, spatial_size=(size, size), mode="area"),
                EnsureTyped(key, dtype=torch.float32, track_meta=False),
            ]
        return [
            RandConVIRTAugmentd(
                key,
                spatial_size=size,
                spatial_dims=o["spatial_dims"],
                crop_scale=o["crop_scale"],
                flip_prob=o["flip_prob"],
                rotate_degrees=o["rotate_degrees"],
                translate=o["translate"],
                scale=o["scale"],
                brightness=o["brightness"],
                contrast=o["contrast"],
                blur_sigma=o["blur_sigma"],
                blur_prob=o["blur_prob"],
            )
        ]

    def transforms(self, train: bool = True) -> tuple[list[Callable], list[Callable]]:
        """Load image and report (deterministic); augment, sample sentences, tokenize, keep tensors (random)."""
        from monai.transforms import SelectItemsd

        from medssl.transforms.cxr import PairReportd
        from medssl.transforms.text import Tokenized

        report = self.options["report_key"]
        deterministic = self.load_transforms() + [
            PairReportd(
                report,
                image_key=self.options["image_key"],
                reports_dir=self.options["reports_dir"],
                priority=self.options["report_priority"],
            )
        ]
        random_part = self.image_augmentation(train) + self.text_sampling(train)
        random_part += [
            Tokenized(
                report,
                tokenizer=self.tokenizer_path,
                max_length=int(self.options["max_length"]),
                local_files_only=self.options["local_files_only"],
            ),
            # Only tensors go on: no paths, texts or keys reach the model, the logs or a checkpoint.
            SelectItemsd([self.options["image_key"], *self.text_keys()]),
        ]
        return deterministic, random_part

    def text_keys(self) -> list[str]:
        """The batch keys of the tokenized report."""
        report = self.options["report_key"]
        return [f"{report}_input_ids", f"{report}_attention_mask", f"{report}_word_index"]

    def model_arguments(self) -> dict[str, Any]:
        """Constructor arguments of the model class shared by both methods."""
        o = self.options
        return {
            "text_model": o["text_model"],
            "image_backbone": o["image_backbone"],
            "spatial_dims": o["spatial_dims"],
            "in_channels": o["in_channels"],
            "image_width": o["image_width"],
            "image_kwargs": o["image_kwargs"],
            "trainable_layers": o["trainable_layers"],
            "local_files_only": o["local_files_only"],
        }

    def model_inputs(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """The model's keyword inputs from a collated batch, on ``device``."""
        ids, mask, words = self.text_keys()
        names = {"image": self.options["image_key"], "input_ids": ids, "attention_mask": mask, "word_index": words}
        return {arg: _to_device(batch[key], device) for arg, key in names.items()}

    def batch_size_of(self, batch: Mapping[str, Any]) -> int:  # noqa: D102
        return int(batch[self.options["image_key"]].shape[0])

    def export(self, model: nn.Module, loss: nn.Module, out_dir: Path) -> dict[str, str]:
        """Write ``image.pt``/``image.json``, ``text/``, ``heads.pt``, ``model.json`` (:mod:`medssl.networks.vlp`)."""
        from medssl.networks.vlp import export_vlp_model
        from medssl.transforms.text import load_tokenizer

        self.sync_model_temperatures(model, loss)
        tokenizer = load_tokenizer(self.tokenizer_path, self.options["local_files_only"])
        export_vlp_model(model, out_dir, tokenizer, self.preprocessing())
        return {
            "image_encoder": os.fspath(out_dir / "image.pt"),
            "image_config": os.fspath(out_dir / "image.json"),
            "text_encoder": os.fspath(out_dir / "text"),
            "model": os.fspath(out_dir / "model.json"),
        }

    def sync_model_temperatures(self, model: nn.Module, loss: nn.Module) -> None:
        """Copy learned temperatures from the loss into the model (used by its ``similarity``)."""


class ConVIRTMethod(ImageTextMethodBase):
    """ConVIRT: one random sentence per report, non-linear projections, bidirectional InfoNCE."""

    name = "convirt"
    summary = "ConVIRT image-report contrastive pretraining (Zhang et al. 2020)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            **super().defaults(),
            "trainable_layers": 6,
            "embed_dim": 512,
            "projection_hidden": None,
            "text_pooling": "max",
            "lambda_weight": 0.75,
            "text_sampling": "sentence",
            "min_sentence_words": 3,
            "max_words": 97,
            "flip_prob": 0.0,
        }

    def check_options(self) -> None:  # noqa: D102
        super().check_options()
        if self.options["text_sampling"] not in ("sentence", "words"):
            raise MethodConfigError(
                f"text_sampling must be 'sentence' (ConVIRT) or 'words', got {self.options['text_sampling']!r}",
                f"--method {self.name}",
            )

    def text_sampling(self, train: bool) -> list[Callable]:
        """One random sentence (the paper's ``"sentence"``) or the sentences up to ``max_words`` (``"words"``)."""
        from medssl.transforms.text import SampleSentenced, SampleSentencesUpTod

        report = self.options["report_key"]
        if train and self.options["text_sampling"] == "sentence":
            return [SampleSentenced(report, min_words=int(self.options["min_sentence_words"]))]
        return [SampleSentencesUpTod(report, max_words=int(self.options["max_words"]), shuffle=False)]

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.networks.vlp import ConVIRT

        o = self.options
        return ConVIRT(
            **self.model_arguments(),
            embed_dim=o["embed_dim"],
            projection_hidden=o["projection_hidden"],
            text_pooling=o["text_pooling"],
        )

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import ConVIRTLoss

        o = self.options
        return ConVIRTLoss(
            temperature=o["temperature"],
            lambda_weight=o["lambda_weight"],
            learnable_temperature=o["learnable_temperature"],
            output_dict=True,
        )

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Embed the pairs and compute ConVIRT's loss in float32 (outside any autocast)."""
        device = next(model.parameters()).device
        out = model(**self.model_inputs(batch, device))
        with torch.autocast(device_type=device.type, enabled=False):
            return loss(out["image_emb"].float(), out["text_emb"].float())


class GLoRIAMethod(ImageTextMethodBase):
    """GLoRIA: the report's sentences up to a word budget, global + word-region losses."""

    name = "gloria"
    summary = "GLoRIA global-local image-report pretraining (Huang et al. 2021)"

    @classmethod
    def defaults(cls) -> dict[str, Any]:  # noqa: D102
        return {
            **super().defaults(),
            "image_size": 299,
            "report_priority": ["findings+impression", "impression", "findings", "last_paragraph"],
            "region_layer": "layer3",
            "embed_dim": 768,
            "last_n_layers": 4,
            "word_aggregation": "sum",
            "project_text": True,
            "max_words": 97,
            "max_length": 97,
            "shuffle_sentences": False,
            "global_weight": 1.0,
            "local_weight": 1.0,
            "temp1": 4.0,
            "temp2": 5.0,
            "temp3": 10.0,
            "chunk_size": None,
        }

    def text_sampling(self, train: bool) -> list[Callable]:  # noqa: D102
        from medssl.transforms.text import SampleSentencesUpTod

        return [
            SampleSentencesUpTod(
                self.options["report_key"],
                max_words=int(self.options["max_words"]),
                shuffle=bool(train and self.options["shuffle_sentences"]),
            )
        ]

    def build_model(self) -> nn.Module:  # noqa: D102
        from medssl.networks.vlp import GLoRIA

        o = self.options
        return GLoRIA(
            **self.model_arguments(),
            region_layer=o["region_layer"],
            embed_dim=o["embed_dim"],
            last_n_layers=o["last_n_layers"],
            word_aggregation=o["word_aggregation"],
            project_text=o["project_text"],
            temperature=o["temperature"],
            temp1=o["temp1"],
            temp2=o["temp2"],
            temp3=o["temp3"],
        )

    def build_loss(self) -> nn.Module:  # noqa: D102
        from medssl.losses import GloriaLoss

        o = self.options
        return GloriaLoss(
            global_weight=o["global_weight"],
            local_weight=o["local_weight"],
            temperature=o["temperature"],
            temp1=o["temp1"],
            temp2=o["temp2"],
            temp3=o["temp3"],
            chunk_size=o["chunk_size"],
            learnable_temperature=o["learnable_temperature"],
            output_dict=True,
        )

    def forward_loss(self, model: nn.Module, loss: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Embed the pairs and compute GLoRIA's loss in float32 (outside any autocast)."""
        device = next(model.parameters()).device
        out = model(**self.model_inputs(batch, device))
        with torch.autocast(device_type=device.type, enabled=False):
            return loss(
                out["image_emb"].float(),
                out["text_emb"].float(),
                out["regions"].float(),
                out["words"].float(),
                out["word_mask"],
            )

    def sync_model_temperatures(self, model: nn.Module, loss: nn.Module) -> None:  # noqa: D102
        if getattr(loss, "learnable_temperature", False):
            model.temperature = float(1.0 / loss.scale())
            model.temp3 = float(loss.local_scale())


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


def register_method(cls: type[PretrainMethod] | None = None, *, name: str | None = None, replace: bool = False):
    """Register a :class:`PretrainMethod` subclass under ``name`` (default: its ``name`` attribute).

    Usable as ``@register_method`` or ``register_method(MyMethod, name="mine")``.

    Args:
        cls: the class.
        name: the registry name.
        replace: allow replacing an existing registration.

    Returns:
        The class (so it works as a decorator).

    Raises:
        MethodConfigError: not a method class, no name, or a name taken (without ``replace``).
    """

    def _register(klass: type[PretrainMethod]) -> type[PretrainMethod]:
        if not (isinstance(klass, type) and issubclass(klass, PretrainMethod)):
            raise MethodConfigError(f"{klass!r} is not a PretrainMethod subclass")
        key = name or klass.name
        if not key:
            raise MethodConfigError(f"{klass.__name__} has no name to register under")
        if key in _REGISTRY and _REGISTRY[key] is not klass and not replace:
            raise MethodConfigError(f"a method named {key!r} is already registered ({_REGISTRY[key].__name__})")
        _REGISTRY[key] = klass
        return klass

    return _register if cls is None else _register(cls)


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise
    from importlib.metadata import entry_points

    for entry in entry_points(group=_ENTRY_POINT_GROUP):
        try:
            register_method(entry.load(), name=entry.name)
        except Exception as error:  # noqa: BLE001 - a broken third-party plugin must not break the built-ins
            logger.warning("pretraining method plugin %s could not be loaded: %s", entry.name, error)


def get_method(name: str) -> type[PretrainMethod]:
    """The method class registered under ``name`` (or named ``package.module:ClassName``).

    Raises:
        MethodConfigError: unknown name.
    """
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            klass = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise MethodConfigError(f"cannot import the method class {name!r}: {error}") from error
        return register_method(klass, name=name, replace=True)
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise MethodConfigError(f"unknown pretraining method {name!r}; available: {available_methods()}")
    return _REGISTRY[name]


def create_method(name: str, **options: Any) -> PretrainMethod:
    """Instantiate the method ``name`` with ``options`` (see each method's ``defaults()``)."""
    return get_method(name)(**options)


def available_methods() -> list[str]:
    """Names of every registered method (plugins included)."""
    _load_plugins()
    return sorted(_REGISTRY)


register_method(ConVIRTMethod)
register_method(GLoRIAMethod)
