"""Image-report models: ConVIRT (Zhang et al. 2020) and GLoRIA (Huang et al. 2021), built from plain arguments.

Both put an :class:`~medssl.networks.encoders.ImageEncoder` and a :class:`~medssl.networks.encoders.TextEncoder`
side by side with the projection heads of their paper:

* **ConVIRT**: a non-linear projection (one hidden layer, ReLU) of the pooled image features and of the max-pooled
  token features of the text (BERT with the embeddings and first layers frozen) to a 512-d space; trained with
  :class:`medssl.losses.ConVIRTLoss`.
* **GLoRIA**: linear embedding layers: the global image features (``Linear``) and the region grid of an intermediate
  stage (a 1x1 convolution) on the image side; the sentence and the word features (sum of the last 4 BERT layers,
  word pieces summed into words) on the text side, all to ``embed_dim`` (768 in the paper); trained with
  :class:`medssl.losses.GloriaLoss`. The paper projects only the image side, into BERT's 768-d space; here the text
  side gets linear layers too (``project_text=True``) so that any text width works (a tiny test BERT, a
  larger clinical one); ``project_text=False`` keeps the paper's choice when ``embed_dim`` equals BERT's width.
  The sentence embedding is the mean of the caption's word features over real words (the original averages over
  every token position, padding included, which makes a report's embedding depend on the padded length).

Every model offers ``encode_image``, ``encode_text`` and ``similarity`` (what zero-shot classification and retrieval
use) and is rebuilt from ``config()``: ``{"_target_": "medssl.networks.vlp.ConVIRT", "text_model": "...", ...}``
works in a bundle config. :func:`export_vlp_model` writes the encoders folder (``image.pt`` + ``image.json``,
``text/``, ``heads.pt``, ``model.json``) and :func:`load_vlp_model` reads it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medssl.losses import cosine_logits, gloria_local_similarity
from medssl.networks.encoders import (
    EncoderConfigError,
    ImageEncoder,
    TextEncoder,
    export_image_encoder,
    export_text_encoder,
    projection_head,
)

__all__ = [
    "ImageTextModel",
    "ConVIRT",
    "GLoRIA",
    "VLP_MODELS",
    "build_vlp_model",
    "export_vlp_model",
    "load_vlp_model",
    "VLP_MODEL_FORMAT",
]

#: ``format`` field of ``model.json``.
VLP_MODEL_FORMAT = "medssl-image-text-model"


class ImageTextModel(nn.Module):
    """Common part of the image-report models: the two towers and their rebuild arguments.

    Subclasses set ``method`` and implement :meth:`encode_image`, :meth:`encode_text` and :meth:`similarity`.

    Args:
        text_model: hub name or local folder of the text model (``AutoModel.from_pretrained``).
        image_backbone: MONAI encoder name (see :data:`medssl.networks.backbones.ENCODER_NAMES`).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_width: width multiplier of the image backbone.
        image_kwargs: other arguments of the MONAI image network.
        region_layer: image stage giving the region grid (``None``: none).
        trainable_layers: last text layers that train (``None``: all).
        last_n_layers: text hidden states summed into token features.
        text_pooling: report pooling of the text tower.
        word_aggregation: how word pieces form a word.
        local_files_only: never download the text model.
    """

    method = "image-text"

    def __init__(
        self,
        text_model: str | os.PathLike,
        image_backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        image_width: float = 1.0,
        image_kwargs: Mapping[str, Any] | None = None,
        region_layer: str | None = None,
        trainable_layers: int | None = None,
        last_n_layers: int = 1,
        text_pooling: str = "max",
        word_aggregation: str = "sum",
        local_files_only: bool = True,
    ) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(
            image_backbone, spatial_dims, in_channels, image_width, region_layer, dict(image_kwargs or {})
        )
        self.text_encoder = TextEncoder(
            text_model,
            trainable_layers=trainable_layers,
            last_n_layers=last_n_layers,
            pooling=text_pooling,
            word_aggregation=word_aggregation,
            local_files_only=local_files_only,
        )
        self._init_args: dict[str, Any] = {
            "text_model": os.fspath(text_model),
            "image_backbone": image_backbone,
            "spatial_dims": int(spatial_dims),
            "in_channels": int(in_channels),
            "image_width": float(image_width),
            "image_kwargs": dict(self.image_encoder.backbone_kwargs),
            "trainable_layers": trainable_layers,
            "local_files_only": bool(local_files_only),
        }

    def config(self) -> dict[str, Any]:
        """Plain constructor arguments that rebuild this model (JSON-serialisable)."""
        return dict(self._init_args)

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embed images: ``{"global": (B, D)}`` and, for local models, ``"regions"``."""
        raise NotImplementedError

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Embed tokenized reports: ``{"global": (B, D)}`` and, for local models, ``"words"``, ``"word_mask"``."""
        raise NotImplementedError

    def similarity(
        self, image: Mapping[str, torch.Tensor], text: Mapping[str, torch.Tensor], mode: str | None = None
    ) -> torch.Tensor:
        """Similarity of every image with every text, ``(B_img, B_text)``, larger is more alike."""
        raise NotImplementedError

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embed a batch of paired images and reports (the inputs of the training loss).

        Args:
            image: ``(B, C, *spatial)``.
            input_ids: ``(B, T)``.
            attention_mask: ``(B, T)``.
            word_index: ``(B, T)`` word of each token (-1 for special/padding tokens).

        Returns:
            ``{"image_emb", "text_emb"}`` and, for GLoRIA, ``"regions"`` ``(B, D, *grid)``, ``"words"``
            ``(B, D, W)`` and ``"word_mask"`` ``(B, W)``.
        """
        image_out = self.encode_image(image)
        text_out = self.encode_text(input_ids, attention_mask, word_index)
        out = {"image_emb": image_out["global"], "text_emb": text_out["global"]}
        if "regions" in image_out:
            out["regions"] = image_out["regions"]
        if "words" in text_out:
            out["words"] = text_out["words"].transpose(1, 2)
            out["word_mask"] = text_out["word_mask"]
        return out


class ConVIRT(ImageTextModel):
    """ConVIRT: ResNet image tower, BERT text tower (max-pooled), non-linear projections to a shared space.

    Args:
        text_model: hub name or local folder of the text model.
        image_backbone: MONAI encoder name (ResNet-50 in the paper).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_width: width multiplier of the image backbone.
        image_kwargs: other arguments of the MONAI image network.
        embed_dim: size of the shared space (512 in the paper).
        projection_hidden: hidden width of the projections (``None``: the input width; 0: linear projections).
        trainable_layers: last BERT layers that train (6 in the paper: the embeddings and first 6 layers frozen).
        text_pooling: ``"max"`` over tokens (the paper), ``"mean"`` or ``"cls"``.
        local_files_only: never download the text model.

    Example:
        ``{"_target_": "medssl.networks.vlp.ConVIRT", "text_model": "$@bundle_root + '/models/text'"}``.
    """

    method = "convirt"

    def __init__(
        self,
        text_model: str | os.PathLike,
        image_backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        image_width: float = 1.0,
        image_kwargs: Mapping[str, Any] | None = None,
        embed_dim: int = 512,
        projection_hidden: int | None = None,
        trainable_layers: int | None = 6,
        text_pooling: str = "max",
        local_files_only: bool = True,
    ) -> None:
        super().__init__(
            text_model,
            image_backbone,
            spatial_dims,
            in_channels,
            image_width,
            image_kwargs,
            region_layer=None,
            trainable_layers=trainable_layers,
            last_n_layers=1,
            text_pooling=text_pooling,
            local_files_only=local_files_only,
        )
        self.embed_dim = int(embed_dim)
        self.image_projection = projection_head(self.image_encoder.out_features, self.embed_dim, projection_hidden)
        self.text_projection = projection_head(self.text_encoder.hidden_size, self.embed_dim, projection_hidden)
        self._init_args.update(embed_dim=self.embed_dim, projection_hidden=projection_hidden, text_pooling=text_pooling)

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"global": (B, embed_dim)}``: the projected pooled image features."""
        features, _ = self.image_encoder(image)
        return {"global": self.image_projection(features)}

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"global": (B, embed_dim)}``: the projected pooled token features."""
        out = self.text_encoder(input_ids, attention_mask)
        return {"global": self.text_projection(out["pooled"])}

    def similarity(
        self, image: Mapping[str, torch.Tensor], text: Mapping[str, torch.Tensor], mode: str | None = None
    ) -> torch.Tensor:
        """Cosine similarity of the global embeddings, ``(B_img, B_text)``.

        Raises:
            EncoderConfigError: a ``mode`` other than ``None``/``"global"``.
        """
        if mode not in (None, "global"):
            raise EncoderConfigError(f"ConVIRT has only global embeddings; similarity mode {mode!r} is unknown")
        return cosine_logits(image["global"].float(), text["global"].float())


class GLoRIA(ImageTextModel):
    """GLoRIA: global and local (word-region) image-report embeddings.

    Args:
        text_model: hub name or local folder of the text model.
        image_backbone: MONAI encoder name (ResNet-50 in the paper).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_width: width multiplier of the image backbone.
        image_kwargs: other arguments of the MONAI image network.
        region_layer: the stage giving the regions (``layer3`` of a ResNet: 19 x 19 at 299 px).
        embed_dim: embedding size of global and local features (768 in the paper).
        trainable_layers: last BERT layers that train (``None``: all, as in the paper).
        last_n_layers: BERT hidden states summed into token features (4 in the paper).
        word_aggregation: ``"sum"`` of word pieces (the paper) or ``"mean"``.
        project_text: linear embedding layers on the text side (see the module docstring).
        temperature: global temperature used by :meth:`similarity` (set from the loss after training).
        temp1: attention sharpness over regions.
        temp2: aggregation sharpness over words.
        temp3: scale of the local similarities.
        similarity_mode: default of :meth:`similarity`: ``"global"``, ``"local"`` or ``"both"``.
        local_files_only: never download the text model.
    """

    method = "gloria"

    def __init__(
        self,
        text_model: str | os.PathLike,
        image_backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        image_width: float = 1.0,
        image_kwargs: Mapping[str, Any] | None = None,
        region_layer: str = "layer3",
        embed_dim: int = 768,
        trainable_layers: int | None = None,
        last_n_layers: int = 4,
        word_aggregation: str = "sum",
        project_text: bool = True,
        temperature: float = 0.1,
        temp1: float = 4.0,
        temp2: float = 5.0,
        temp3: float = 10.0,
        similarity_mode: str = "both",
        local_files_only: bool = True,
    ) -> None:
        super().__init__(
            text_model,
            image_backbone,
            spatial_dims,
            in_channels,
            image_width,
            image_kwargs,
            region_layer=region_layer,
            trainable_layers=trainable_layers,
            last_n_layers=last_n_layers,
            text_pooling="words",
            word_aggregation=word_aggregation,
            local_files_only=local_files_only,
        )
        if similarity_mode not in ("global", "local", "both"):
            raise EncoderConfigError(f"similarity_mode must be 'global', 'local' or 'both', got {similarity_mode!r}")
        self.embed_dim = int(embed_dim)
        hidden = self.text_encoder.hidden_size
        if not project_text and hidden != self.embed_dim:
            raise EncoderConfigError(
                f"project_text=False needs embed_dim equal to the text width ({hidden}), got {self.embed_dim}"
            )
        self.global_embedder = nn.Linear(self.image_encoder.out_features, self.embed_dim)
        self.local_embedder = Conv[Conv.CONV, self.image_encoder.spatial_dims](
            self.image_encoder.region_features, self.embed_dim, kernel_size=1
        )
        self.text_global_embedder = nn.Linear(hidden, self.embed_dim) if project_text else nn.Identity()
        self.text_local_embedder = nn.Linear(hidden, self.embed_dim) if project_text else nn.Identity()
        self.temperature, self.temp1, self.temp2, self.temp3 = (
            float(temperature),
            float(temp1),
            float(temp2),
            float(temp3),
        )
        self.similarity_mode = similarity_mode
        self._init_args.update(
            region_layer=region_layer,
            embed_dim=self.embed_dim,
            last_n_layers=self.text_encoder.last_n_layers,
            word_aggregation=word_aggregation,
            project_text=bool(project_text),
            similarity_mode=similarity_mode,
        )

    def config(self) -> dict[str, Any]:
        """Plain constructor arguments (with the current temperatures)."""
        return {
            **self._init_args,
            "temperature": self.temperature,
            "temp1": self.temp1,
            "temp2": self.temp2,
            "temp3": self.temp3,
        }

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"global": (B, D), "regions": (B, D, *grid)}``."""
        features, regions = self.image_encoder(image)
        return {"global": self.global_embedder(features), "regions": self.local_embedder(regions)}

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"global": (B, D), "words": (B, W, D), "word_mask": (B, W)}``.

        Raises:
            EncoderConfigError: no ``word_index`` (GLoRIA needs words).
        """
        if word_index is None:
            raise EncoderConfigError("GLoRIA needs the word_index of the tokenizer transform (Tokenized)")
        out = self.text_encoder(input_ids, attention_mask, word_index)
        return {
            "global": self.text_global_embedder(out["pooled"]),
            "words": self.text_local_embedder(out["words"]),
            "word_mask": out["word_mask"],
        }

    def similarity(
        self, image: Mapping[str, torch.Tensor], text: Mapping[str, torch.Tensor], mode: str | None = None
    ) -> torch.Tensor:
        """Similarity of every image with every text as the logits of training, ``(B_img, B_text)``.

        ``"global"`` is ``cos / temperature``, ``"local"`` is ``temp3 * r`` (the word-region similarity of
        :func:`medssl.losses.gloria_local_similarity`), ``"both"`` their sum (the product of the two softmax
        distributions the two losses train). Each image is scored independently of the others (no normalisation
        over a test set).

        Args:
            image: output of :meth:`encode_image`.
            text: output of :meth:`encode_text`.
            mode: ``"global"``, ``"local"``, ``"both"`` or ``None`` (``similarity_mode``).

        Returns:
            The similarities.
        """
        mode = mode or self.similarity_mode
        if mode not in ("global", "local", "both"):
            raise EncoderConfigError(f"similarity mode must be 'global', 'local' or 'both', got {mode!r}")
        out = None
        if mode in ("global", "both"):
            out = cosine_logits(image["global"].float(), text["global"].float()) / self.temperature
        if mode in ("local", "both"):
            local = gloria_local_similarity(
                image["regions"].float(),
                text["words"].float().transpose(1, 2),
                text["word_mask"],
                self.temp1,
                self.temp2,
            )
            local = local * self.temp3
            out = local if out is None else out + local
        return out


#: Image-report model classes by method name.
VLP_MODELS: dict[str, type[ImageTextModel]] = {"convirt": ConVIRT, "gloria": GLoRIA}


def build_vlp_model(method: str, **kwargs: Any) -> ImageTextModel:
    """Build an image-report model by method name.

    Args:
        method: ``"convirt"`` or ``"gloria"``.
        kwargs: constructor arguments of the model class.

    Returns:
        The model.

    Raises:
        EncoderConfigError: unknown method or arguments.
    """
    if method not in VLP_MODELS:
        raise EncoderConfigError(f"unknown image-text method {method!r}; known: {sorted(VLP_MODELS)}")
    try:
        return VLP_MODELS[method](**kwargs)
    except TypeError as error:
        raise EncoderConfigError(f"cannot build {method} with {sorted(kwargs)}: {error}") from error


def export_vlp_model(
    model: ImageTextModel,
    out_dir: str | os.PathLike,
    tokenizer: str | os.PathLike | Any | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> Path:
    """Write the encoders folder of an image-report model.

    ``image.pt`` + ``image.json`` (:func:`~medssl.networks.encoders.export_image_encoder`), ``text/`` (model and
    tokenizer, ``save_pretrained``), ``heads.pt`` (every other weight: projections, embedders; a plain state dict)
    and ``model.json`` (method and constructor arguments, with ``text_model`` pointing at ``text/``).

    Args:
        model: the model.
        out_dir: the folder (created).
        tokenizer: the tokenizer (object, folder or name); ``None`` takes the text model's folder.
        preprocessing: how images and reports were prepared in training (image size, report sections, token
            length ...), kept in ``image.json`` and ``model.json`` for evaluation.

    Returns:
        The folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_image_encoder(model.image_encoder, out, "image", preprocessing)
    export_text_encoder(model.text_encoder, out / "text", tokenizer)
    heads = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(("image_encoder.", "text_encoder."))
    }
    tmp = out / ".heads.pt.tmp"
    torch.save(heads, tmp)
    os.replace(tmp, out / "heads.pt")
    config = model.config()
    config["text_model"] = "text"
    meta = {
        "format": VLP_MODEL_FORMAT,
        "version": 1,
        "method": model.method,
        "config": config,
        "preprocessing": dict(preprocessing or {}),
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_vlp_model(folder: str | os.PathLike, map_location: str = "cpu") -> ImageTextModel:
    """Rebuild an image-report model from the folder :func:`export_vlp_model` wrote (weights-only loading).

    Args:
        folder: the encoders folder.
        map_location: device of the model.

    Returns:
        The model, in eval mode.

    Raises:
        EncoderConfigError: missing or malformed files.
        EncoderStateError: weights that do not fit.
    """
    from medssl.networks.backbones import load_encoder_state, read_state_dict

    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise EncoderConfigError("no model.json: not an exported image-text model folder", folder)
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != VLP_MODEL_FORMAT:
        raise EncoderConfigError(f"not a medssl image-text model (format={meta.get('format')!r})", meta_path)
    config = dict(meta["config"])
    config["text_model"] = os.fspath(folder / config.get("text_model", "text"))
    model = build_vlp_model(meta["method"], **config)
    load_encoder_state(model.image_encoder.trunk, folder / "image.pt")
    heads = read_state_dict(folder / "heads.pt")
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if not k.startswith(("image_encoder.", "text_encoder."))]
    if missing or unexpected:
        raise EncoderConfigError(f"heads.pt does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}", folder)
    model.preprocessing = dict(meta.get("preprocessing") or {})
    return model.to(map_location).eval()
