"""Image and text towers of image-report pretraining (ConVIRT, GLoRIA), their export and the tiny offline text model.

Image tower: :class:`ImageEncoder` wraps any MONAI classification network that
:func:`medssl.networks.backbones.build_encoder` builds (ResNet-50 by default) and returns both the global feature
vector and, when ``region_layer`` names an intermediate stage, that stage's feature map as a grid of sub-region
features (GLoRIA takes ResNet's ``layer3``: 19 x 19 regions at 299 px with the ImageNet-style stride-2 stem). The
trunk's state-dict keys are those of :func:`~medssl.networks.backbones.build_encoder`, so an exported image encoder
loads into the fusion networks' trunks with :func:`~medssl.networks.backbones.load_encoder_state`.

Text tower: :class:`TextEncoder` loads a Hugging Face encoder (``AutoModel.from_pretrained``) by hub name or local
folder, keeps only the last ``trainable_layers`` transformer layers trainable (ConVIRT freezes the embeddings and the
first 6 of BERT-base's 12 layers), optionally sums the last ``last_n_layers`` hidden states (GLoRIA sums the last 4),
pools a report embedding and aggregates word pieces into words in tensors (:func:`aggregate_word_pieces`, one
``index_add`` over the ``word_index`` of :class:`medssl.transforms.text.Tokenize`).

Export (see ``docs/pretraining.md``)::

    encoders/image.pt     plain state dict of the image trunk (torch.load(..., weights_only=True))
    encoders/image.json   how to rebuild the trunk (backbone name, spatial_dims, in_channels, width, kwargs ...)
    encoders/text/        save_pretrained() of the text model and of its tokenizer

:func:`load_pretrained_image_encoder` reads the first two back; ``AutoModel.from_pretrained("encoders/text")``
and ``AutoTokenizer.from_pretrained("encoders/text")`` read the third.

Offline by design: :func:`build_tiny_text_model` trains a WordPiece tokenizer on a corpus and saves a small randomly
initialised BERT next to it, so tests and demos go through ``from_pretrained(folder)`` exactly as a hub model does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medssl.exceptions import MedsslError
from medssl.networks.backbones import build_encoder, load_encoder_state

__all__ = [
    "EncoderConfigError",
    "ImageEncoder",
    "TextEncoder",
    "aggregate_word_pieces",
    "projection_head",
    "export_image_encoder",
    "load_pretrained_image_encoder",
    "export_text_encoder",
    "build_tiny_text_model",
    "IMAGE_ENCODER_FORMAT",
]

#: ``format`` field of ``image.json``.
IMAGE_ENCODER_FORMAT = "medssl-image-encoder"
_IMAGE_ENCODER_VERSION = 1


class EncoderConfigError(MedsslError):
    """An image or text tower cannot be built or loaded with the given settings."""


# ----------------------------------------------------------------------------------------------------------------
# Image tower
# ----------------------------------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """A MONAI classification network giving a global feature vector and a grid of sub-region features.

    Args:
        backbone: a name of :data:`medssl.networks.backbones.ENCODER_NAMES` (``resnet50``, ``densenet121`` ...).
        spatial_dims: 2 (radiographs) or 3 (volumes).
        in_channels: image channels (1 for grey-level radiographs).
        width: multiplies the backbone's base width (see :func:`~medssl.networks.backbones.build_encoder`).
        region_layer: name of the submodule whose output is the region grid (``"layer3"`` of a ResNet,
            ``"features.denseblock3"`` of a DenseNet); ``None`` for a global embedding only.
        backbone_kwargs: other arguments of the MONAI network. For ResNets, ``conv1_t_stride`` defaults to 2 here
            (the ImageNet stem: 19 x 19 ``layer3`` regions at 299 px); MONAI's own default is 1.

    Attributes:
        out_features: size of the global feature vector.
        region_features: channels of the region grid (0 without ``region_layer``).

    Raises:
        EncoderConfigError: unknown ``region_layer``.
        BackboneConfigError: the backbone cannot be built.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        width: float = 1.0,
        region_layer: str | None = None,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(backbone_kwargs or {})
        if backbone.startswith("resnet"):
            kwargs.setdefault("conv1_t_stride", 2)
        self.backbone = backbone
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.width = float(width)
        self.backbone_kwargs = kwargs
        self.region_layer = region_layer
        self.trunk = build_encoder(backbone, self.spatial_dims, self.in_channels, self.width, **kwargs)
        self.out_features = int(self.trunk.out_features)
        self.region_features = 0
        self._captured: list[torch.Tensor] = []
        if region_layer is not None:
            modules = dict(self.trunk.named_modules())
            if region_layer not in modules or region_layer == "":
                stages = [n for n, _ in self.trunk.named_children()]
                raise EncoderConfigError(
                    f"no submodule {region_layer!r} in the {backbone} trunk; top-level stages: {stages}",
                    f"image encoder {backbone!r}",
                )
            modules[region_layer].register_forward_hook(self._capture)
            self.region_features = self._probe_region_channels()

    def _capture(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._captured.append(output)

    def _probe_region_channels(self) -> int:
        """Channels of the region layer, from one tiny forward pass in eval mode (running statistics untouched)."""
        was_training = self.trunk.training
        self.trunk.eval()
        size = (64,) * self.spatial_dims if self.spatial_dims == 2 else (32,) * self.spatial_dims
        try:
            with torch.no_grad():
                _, regions = self(torch.zeros(1, self.in_channels, *size))
        finally:
            self.trunk.train(was_training)
        return int(regions.shape[1])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode images.

        Args:
            image: ``(B, in_channels, *spatial)``.

        Returns:
            ``(features, regions)``: ``(B, out_features)`` and ``(B, region_features, *grid)`` (``None`` without
            ``region_layer``).
        """
        self._captured = []
        features = self.trunk(image)
        regions = self._captured[-1] if self._captured else None
        self._captured = []
        return features, regions

    def config(self) -> dict[str, Any]:
        """Plain arguments that rebuild this encoder (JSON-serialisable)."""
        return {
            "backbone": self.backbone,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "width": self.width,
            "region_layer": self.region_layer,
            "backbone_kwargs": dict(self.backbone_kwargs),
        }


def export_image_encoder(
    encoder: ImageEncoder,
    out_dir: str | os.PathLike,
    name: str = "image",
    preprocessing: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{name}.pt`` (the trunk's plain state dict) and ``{name}.json`` (how to rebuild it) in ``out_dir``.

    The file is written to a temporary name and moved into place (``os.replace``), so a reader never sees half a file.

    Args:
        encoder: the image encoder.
        out_dir: folder (created).
        name: file stem.
        preprocessing: how images were prepared in training (``image_size``, ``fit`` ...), kept in the JSON so that
            evaluation prepares them the same way.

    Returns:
        The path of the ``.pt`` file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.trunk.state_dict().items()}
    path = out / f"{name}.pt"
    tmp = out / f".{name}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    meta = {
        "format": IMAGE_ENCODER_FORMAT,
        "version": _IMAGE_ENCODER_VERSION,
        **encoder.config(),
        "out_features": encoder.out_features,
        "region_features": encoder.region_features,
        "state_dict": path.name,
        "preprocessing": dict(preprocessing or {}),
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_pretrained_image_encoder(
    path: str | os.PathLike, region_layer: str | None | bool = True, map_location: str = "cpu"
) -> ImageEncoder:
    """Rebuild an exported image encoder and load its weights (``weights_only=True``).

    Args:
        path: the ``image.pt`` file, its ``image.json``, or the folder holding both.
        region_layer: ``True`` keeps the exported region layer, ``None``/``False`` drops it, a string replaces it.
        map_location: device of the loaded tensors.

    Returns:
        The :class:`ImageEncoder`; its ``trunk`` is the plain MONAI encoder (the module to hand to a fusion network).

    Raises:
        EncoderConfigError: missing or malformed files.
        EncoderStateError: the weights do not fit the rebuilt network.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "image.json"
    meta_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not meta_path.is_file():
        raise EncoderConfigError(
            "no image-encoder JSON next to the weights (export_image_encoder writes one)", meta_path
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise EncoderConfigError(f"invalid JSON: {error}", meta_path) from error
    if meta.get("format") != IMAGE_ENCODER_FORMAT:
        raise EncoderConfigError(f"not a medssl image-encoder description (format={meta.get('format')!r})", meta_path)
    weights = meta_path.parent / meta.get("state_dict", meta_path.with_suffix(".pt").name)
    layer = meta.get("region_layer") if region_layer is True else (region_layer or None)
    encoder = ImageEncoder(
        backbone=meta["backbone"],
        spatial_dims=meta["spatial_dims"],
        in_channels=meta["in_channels"],
        width=meta.get("width", 1.0),
        region_layer=layer,
        backbone_kwargs=meta.get("backbone_kwargs") or {},
    )
    load_encoder_state(encoder.trunk, weights)
    return encoder.to(map_location)


def projection_head(in_features: int, out_features: int, hidden: int | None = None) -> nn.Module:
    """ConVIRT's projection: one hidden layer with ReLU (``hidden=0`` gives a single linear layer).

    Args:
        in_features: input size.
        out_features: embedding size (ConVIRT: 512).
        hidden: hidden size (``None``: ``in_features``; 0: no hidden layer).

    Returns:
        The head.
    """
    if hidden == 0:
        return nn.Linear(in_features, out_features)
    hidden = in_features if hidden is None else int(hidden)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


# ----------------------------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------------------------


def aggregate_word_pieces(
    token_features: torch.Tensor, word_index: torch.Tensor, mode: str = "sum", num_words: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool word-piece features into word features, in tensors (one ``index_add`` for the whole batch).

    Args:
        token_features: ``(B, T, H)`` features of the tokens.
        word_index: ``(B, T)`` index of the word each token belongs to, -1 for special and padding tokens (the
            ``word_index`` of :class:`medssl.transforms.text.Tokenize`).
        mode: ``"sum"`` (GLoRIA) or ``"mean"`` of the word's pieces.
        num_words: words per caption in the output (``None``: the longest caption's); words beyond it are dropped.

    Returns:
        ``(words, word_mask)``: ``(B, W, H)`` word features (zeros where there is no word) and the ``(B, W)``
        boolean mask of real words.

    Raises:
        EncoderConfigError: unknown ``mode`` or shapes that do not fit.
    """
    if mode not in ("sum", "mean"):
        raise EncoderConfigError(f"word aggregation must be 'sum' or 'mean', got {mode!r}")
    if token_features.dim() != 3 or tuple(word_index.shape) != tuple(token_features.shape[:2]):
        raise EncoderConfigError(
            f"token_features (B, T, H) and word_index (B, T) do not fit: {tuple(token_features.shape)} and "
            f"{tuple(word_index.shape)}"
        )
    batch, _, hidden = token_features.shape
    word_index = word_index.to(device=token_features.device, dtype=torch.long)
    if num_words is None:
        num_words = int(word_index.max().item()) + 1 if word_index.numel() else 0
    num_words = max(int(num_words), 1)
    valid = (word_index >= 0) & (word_index < num_words)
    # One flat slot per (caption, word): caption b's word w lands in row b * W + w; special and padding tokens land
    # in one extra row that is dropped (no boolean gather: copying the pieces cost more than the sum itself).
    slots = batch * num_words
    rows = torch.arange(batch, device=word_index.device).unsqueeze(1) * num_words + word_index
    rows = torch.where(valid, rows, slots).reshape(-1)
    words = token_features.new_zeros(slots + 1, hidden)
    words.index_add_(0, rows, token_features.reshape(-1, hidden))
    counts = torch.zeros(slots + 1, device=token_features.device, dtype=token_features.dtype)
    counts.index_add_(0, rows, torch.ones_like(rows, dtype=token_features.dtype))
    words, counts = words[:slots], counts[:slots]
    if mode == "mean":
        words = words / counts.clamp_min(1).unsqueeze(1)
    return words.view(batch, num_words, hidden), (counts > 0).view(batch, num_words)


def _quiet_from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` without transformers' per-load progress bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_disabled = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(name, **kwargs)
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer layers of a Hugging Face encoder (``encoder.layer`` for BERT-likes).

    Found as the longest ``nn.ModuleList`` whose length is ``config.num_hidden_layers``, so that BERT, RoBERTa,
    ELECTRA, DistilBERT (``transformer.layer``) and others work without a table of architectures.
    """
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (n_layers is None or len(module) == n_layers):
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise EncoderConfigError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


class TextEncoder(nn.Module):
    """A Hugging Face text encoder with partial freezing, layer summing, pooling and word-piece aggregation.

    Args:
        model: hub name or local folder (``AutoModel.from_pretrained``); local folders always work.
        trainable_layers: how many of the last transformer layers train; the embeddings and the earlier layers are
            frozen (``requires_grad=False``). ``None`` trains everything; 0 freezes the whole tower. ConVIRT with
            BERT-base: 6. A number above the model's layer count trains all layers (embeddings still frozen).
        last_n_layers: sum the hidden states of the last ``n`` layers as token features (GLoRIA: 4); 1 uses the last
            layer only; capped at the model's layer count.
        pooling: report embedding from the token features: ``"max"`` over real tokens (ConVIRT), ``"mean"`` over
            real tokens, ``"cls"`` (the first token) or ``"words"`` (mean of the aggregated words; GLoRIA's sentence
            embedding).
        word_aggregation: ``"sum"`` (GLoRIA) or ``"mean"`` of a word's pieces.
        local_files_only: never download; hub names must already be in the local cache.
        gradient_checkpointing: trade compute for memory in the trainable layers.

    Attributes:
        hidden_size: width of the token features.

    Raises:
        EncoderConfigError: the model cannot be loaded, or the settings do not fit it.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        trainable_layers: int | None = None,
        last_n_layers: int = 1,
        pooling: str = "max",
        word_aggregation: str = "sum",
        local_files_only: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        if pooling not in ("max", "mean", "cls", "words"):
            raise EncoderConfigError(f"pooling must be 'max', 'mean', 'cls' or 'words', got {pooling!r}")
        if word_aggregation not in ("sum", "mean"):
            raise EncoderConfigError(f"word_aggregation must be 'sum' or 'mean', got {word_aggregation!r}")
        name = os.fspath(model)
        try:
            self.model = _quiet_from_pretrained(AutoModel, name, local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            hint = "" if os.path.isdir(name) else " (not a local folder; hub names must be cached when offline)"
            raise EncoderConfigError(f"cannot load the text model{hint}: {error}", name) from error
        self.model_name = name
        self.hidden_size = int(self.model.config.hidden_size)
        self.pooling = pooling
        self.word_aggregation = word_aggregation
        layers_name, layers = _layer_list(self.model)
        n_layers = len(layers)
        if int(last_n_layers) < 1:
            raise EncoderConfigError(f"last_n_layers must be >= 1, got {last_n_layers}", name)
        if trainable_layers is not None and int(trainable_layers) < 0:
            raise EncoderConfigError(f"trainable_layers must be >= 0 or None, got {trainable_layers}", name)
        self.last_n_layers = min(int(last_n_layers), n_layers)
        # More trainable layers than the model has (ConVIRT's 6 on a 2-layer test model) trains every layer; the
        # embeddings stay frozen.
        self.trainable_layers = None if trainable_layers is None else min(int(trainable_layers), n_layers)
        self.num_layers = n_layers
        self._freeze(layers_name, n_layers)
        if gradient_checkpointing and hasattr(self.model, "gradient_checkpointing_enable"):
            self.model.gradient_checkpointing_enable()

    def _freeze(self, layers_name: str, n_layers: int) -> None:
        """Set ``requires_grad``: last ``trainable_layers`` layers (and what follows them) train, the rest is frozen."""
        first_trainable = 0 if self.trainable_layers is None else n_layers - self.trainable_layers
        prefix = f"{layers_name}."
        for name, param in self.model.named_parameters():
            if name.startswith("pooler."):
                param.requires_grad_(False)  # the pooler's output is never used (DDP would call it unused)
            elif name.startswith(prefix):
                index = int(name[len(prefix) :].split(".", 1)[0])
                param.requires_grad_(index >= first_trainable)
            elif name.split(".", 1)[0] == "embeddings":
                param.requires_grad_(self.trainable_layers is None)
            else:  # e.g. a final layer norm after the layers
                param.requires_grad_(self.trainable_layers is None or self.trainable_layers > 0)

    def frozen_parameter_names(self) -> list[str]:
        """Names (within the Hugging Face model) of the parameters that do not train."""
        return [n for n, p in self.model.named_parameters() if not p.requires_grad]

    def token_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, H)`` token features: the last layer's hidden states, or the sum of the last ``n`` layers'."""
        output = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self.last_n_layers > 1
        )
        if self.last_n_layers == 1:
            return output.last_hidden_state
        return torch.stack(output.hidden_states[-self.last_n_layers :]).sum(dim=0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor | None = None,
        num_words: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode tokenized reports.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``, 1 for real tokens.
            word_index: ``(B, T)`` word of each token, -1 for special/padding tokens; needed for word features and
                for ``pooling="words"``.
            num_words: words per caption in the output (``None``: the longest caption's).

        Returns:
            ``{"tokens": (B, T, H), "pooled": (B, H)}`` plus ``"words": (B, W, H)`` and ``"word_mask": (B, W)``
            when ``word_index`` is given.

        Raises:
            EncoderConfigError: ``pooling="words"`` without ``word_index``.
        """
        tokens = self.token_features(input_ids, attention_mask)
        out: dict[str, torch.Tensor] = {"tokens": tokens}
        if word_index is not None:
            out["words"], out["word_mask"] = aggregate_word_pieces(tokens, word_index, self.word_aggregation, num_words)
        mask = attention_mask.to(torch.bool).unsqueeze(-1)
        if self.pooling == "max":
            out["pooled"] = tokens.masked_fill(~mask, torch.finfo(tokens.dtype).min).amax(dim=1)
        elif self.pooling == "mean":
            out["pooled"] = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        elif self.pooling == "cls":
            out["pooled"] = tokens[:, 0]
        else:
            if word_index is None:
                raise EncoderConfigError("pooling='words' needs the word_index of the tokenizer transform")
            words, word_mask = out["words"], out["word_mask"].unsqueeze(-1)
            out["pooled"] = (words * word_mask).sum(dim=1) / word_mask.sum(dim=1).clamp_min(1)
        return out

    def config(self) -> dict[str, Any]:
        """Plain arguments that rebuild this encoder around the same model folder."""
        return {
            "model": self.model_name,
            "trainable_layers": self.trainable_layers,
            "last_n_layers": self.last_n_layers,
            "pooling": self.pooling,
            "word_aggregation": self.word_aggregation,
        }


def export_text_encoder(
    encoder: TextEncoder, out_dir: str | os.PathLike, tokenizer: str | os.PathLike | Any | None = None
) -> Path:
    """Save the text model and its tokenizer with ``save_pretrained`` (safetensors: no pickled code).

    Args:
        encoder: the text tower.
        out_dir: the folder to write; ``AutoModel.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained``
            read it back.
        tokenizer: the tokenizer (object, folder or hub name); ``None`` takes it from the model's own folder.

    Returns:
        The folder.
    """
    from medssl.transforms.text import load_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_save(encoder.model, out)
    source = encoder.model_name if tokenizer is None else tokenizer
    if isinstance(source, (str, os.PathLike)):
        source = load_tokenizer(source)
    source.save_pretrained(out)
    return out


def build_tiny_text_model(
    corpus: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 600,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """Train a WordPiece tokenizer on ``corpus`` and save a small random BERT next to it (for tests and demos).

    The folder loads with ``AutoModel.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)``,
    the very path a hub model takes; nothing is downloaded. Rebuilding with the same corpus and seed gives the same
    weights (the global random state is left untouched).

    Args:
        corpus: report texts (or sentences).
        out_dir: the folder to write (created).
        vocab_size: tokenizer vocabulary size (special tokens included).
        hidden_size: BERT width.
        num_hidden_layers: transformer layers.
        num_attention_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: feed-forward width.
        max_position_embeddings: longest token sequence.
        dropout: hidden and attention dropout.
        seed: seed of the weight initialisation.

    Returns:
        The folder.
    """
    from transformers import BertConfig, BertModel

    from medssl.transforms.text import load_tokenizer, train_wordpiece_tokenizer

    out = train_wordpiece_tokenizer(corpus, out_dir, vocab_size=vocab_size)
    tokenizer = load_tokenizer(out)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    _quiet_save(model, out)
    return Path(out)


def _quiet_save(model: Any, out: str | os.PathLike) -> None:
    """``model.save_pretrained(out)`` without transformers' progress bar."""
    from transformers.utils import logging as hf_logging

    was_disabled = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()
