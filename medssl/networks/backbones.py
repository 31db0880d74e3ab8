"""Backbones by name: MONAI networks as feature encoders (classification) or whole segmentation networks.

Every fusion network in :mod:`medssl.networks.fusion` builds its trunks here, from a name and plain keyword arguments,
so a JSON config can say ``"backbone": "resnet18", "backbone_kwargs": {"widen_factor": 0.5}``.

Encoders (:func:`build_encoder`) map ``(B, C, *spatial)`` to a feature vector ``(B, F)`` and carry ``out_features``
(``F``). They are MONAI networks with their classifier removed, so their state-dict keys are those of the MONAI
network minus the classifier and a checkpoint of the full MONAI network (or of a pretrained encoder) loads with
:func:`load_encoder_state` (``ignore_prefixes=("fc.",)`` for a ResNet checkpoint, ``("class_layers.out.",)`` for a
DenseNet one):

==================================  ===========================================================================
name                                MONAI network, classifier removed
==================================  ===========================================================================
``resnet10`` ... ``resnet200``      :class:`monai.networks.nets.ResNet` with ``feed_forward=False``
``resnet``                          the same with your own ``block``, ``layers``, ``block_inplanes``
``densenet121`` ... ``densenet264`` :class:`monai.networks.nets.DenseNet` with ``class_layers.out`` an identity
``densenet``                        the same with your own ``init_features``, ``growth_rate``, ``block_config``
``segresnet``                       :class:`SegResNetEncoder`: SegResNet's ``convInit`` + ``down_layers`` + pooling
==================================  ===========================================================================

Segmentation networks (:func:`build_segmentation_network`): ``segresnet``, ``unet``, ``basicunet``, or the dotted path
of any MONAI-style network class taking ``spatial_dims``, ``in_channels`` and ``out_channels``
(``"monai.networks.nets.SwinUNETR"``).

``width`` scales the base width of a named backbone (ResNet ``widen_factor``, DenseNet ``init_features`` and
``growth_rate``, SegResNet ``init_filters``, UNet ``channels``, BasicUNet ``features``) so that strategies can be given
a comparable parameter budget (see :func:`medssl.networks.fusion.build_fusion_model`). Nothing here downloads weights:
``pretrained`` is refused; load local weights with :func:`load_encoder_state`.
"""

from __future__ import annotations

import os
import pickle
import pydoc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.networks import nets
from monai.networks.layers.factories import Pool
from torch import nn

from medssl.exceptions import MedsslError

__all__ = [
    "BackboneConfigError",
    "EncoderStateError",
    "ENCODER_NAMES",
    "SEGMENTATION_NAMES",
    "SegResNetEncoder",
    "build_encoder",
    "build_segmentation_network",
    "segmentation_encoder",
    "read_state_dict",
    "load_encoder_state",
]


class BackboneConfigError(MedsslError):
    """A backbone name or its keyword arguments cannot build a network."""


class EncoderStateError(MedsslError):
    """A state dict does not fit an encoder: missing, unexpected or mis-shaped keys."""


_RESNETS = {
    "resnet10": nets.resnet10,
    "resnet18": nets.resnet18,
    "resnet34": nets.resnet34,
    "resnet50": nets.resnet50,
    "resnet101": nets.resnet101,
    "resnet152": nets.resnet152,
    "resnet200": nets.resnet200,
}
_DENSENETS = {
    "densenet121": nets.DenseNet121,
    "densenet169": nets.DenseNet169,
    "densenet201": nets.DenseNet201,
    "densenet264": nets.DenseNet264,
}
ENCODER_NAMES = (*_RESNETS, "resnet", *_DENSENETS, "densenet", "segresnet")
SEGMENTATION_NAMES = ("segresnet", "unet", "basicunet")

# Arguments the fusion networks set themselves; a backbone_kwargs entry for them would silently disagree.
_RESERVED = ("spatial_dims", "in_channels", "n_input_channels", "out_channels", "num_classes", "feed_forward")


def _check_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    clash = [k for k in _RESERVED if k in kwargs]
    if clash:
        raise BackboneConfigError(
            f"backbone_kwargs sets {clash}: give spatial_dims, in_channels and num_classes to the fusion network",
            f"backbone {name!r}",
        )
    if kwargs.pop("pretrained", False):
        raise BackboneConfigError(
            "pretrained weights are never downloaded: build the network, then load local weights with "
            "medssl.networks.load_encoder_state(...) (or the network's load_encoder_state method)",
            f"backbone {name!r}",
        )
    kwargs.pop("progress", None)
    return kwargs


def _scaled(value: int, width: float, multiple: int = 1) -> int:
    """Scale a channel count by ``width``, rounded to a positive multiple of ``multiple``."""
    return max(multiple, multiple * round(value * width / multiple))


def _group_multiple(norm: Any) -> int:
    """Channel counts under GroupNorm must be multiples of its number of groups."""
    if isinstance(norm, (tuple, list)) and len(norm) == 2 and str(norm[0]).lower() == "group":
        return int(dict(norm[1]).get("num_groups", 8))
    return 1


class SegResNetEncoder(nn.Module):
    """The encoder half of MONAI's SegResNet, globally average-pooled to a feature vector.

    Its state-dict keys (``convInit.*``, ``down_layers.*``) are those of :class:`monai.networks.nets.SegResNet`, so
    weights of a SegResNet (a segmentation model, or an SSL-pretrained one) load with
    ``ignore_prefixes=("up_layers.", "up_samples.", "conv_final.")``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        init_filters: channels of the first level; doubled at each of ``len(blocks_down)`` levels.
        kwargs: other :class:`~monai.networks.nets.SegResNet` arguments (``blocks_down``, ``norm``, ``act``,
            ``dropout_prob`` ...).
    """

    def __init__(self, spatial_dims: int, in_channels: int, init_filters: int = 8, **kwargs: Any) -> None:
        super().__init__()
        kwargs = dict(kwargs)
        kwargs.update(blocks_up=(), use_conv_final=False)  # build no decoder at all
        network = nets.SegResNet(
            spatial_dims=spatial_dims, in_channels=in_channels, init_filters=init_filters, **kwargs
        )
        self._take(network)

    def _take(self, network: nets.SegResNet) -> None:
        self.convInit = network.convInit
        self.down_layers = network.down_layers
        self.dropout = network.dropout if network.dropout_prob is not None else nn.Identity()
        self.pool = Pool[Pool.ADAPTIVEAVG, network.spatial_dims](1)
        self.out_features = int(network.init_filters * 2 ** (len(network.blocks_down) - 1))

    @classmethod
    def from_segresnet(cls, network: nets.SegResNet) -> SegResNetEncoder:
        """Make an encoder that shares (not copies) the modules of an existing SegResNet.

        Args:
            network: a built SegResNet (for example the backbone of an early-fusion segmentation model).

        Returns:
            The encoder; training it trains ``network``'s encoder too.
        """
        encoder = cls.__new__(cls)
        nn.Module.__init__(encoder)
        encoder._take(network)
        return encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, C, *spatial)`` to ``(B, out_features)``."""
        x = self.dropout(self.convInit(x))
        for down in self.down_layers:
            x = down(x)
        return torch.flatten(self.pool(x), 1)


def build_encoder(name: str, spatial_dims: int, in_channels: int, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build a MONAI network that maps ``(B, in_channels, *spatial)`` to features ``(B, F)``.

    Args:
        name: one of :data:`ENCODER_NAMES`.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width: multiplies the base width (see the module docstring); 1.0 keeps MONAI's (or your kwargs') width.
        kwargs: arguments of the MONAI network (``widen_factor``, ``init_features``, ``block_config``, ``norm`` ...).

    Returns:
        The encoder, with an ``out_features`` attribute (``F``).

    Raises:
        BackboneConfigError: unknown name, reserved or invalid kwargs, or a width too small to build.
    """
    if spatial_dims not in (2, 3):
        raise BackboneConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}", f"backbone {name!r}")
    if width <= 0:
        raise BackboneConfigError(f"width must be positive, got {width}", f"backbone {name!r}")
    kwargs = _check_kwargs(name, kwargs)
    try:
        if name in _RESNETS or name == "resnet":
            kwargs["widen_factor"] = float(kwargs.get("widen_factor", 1.0)) * width
            narrowest = min(kwargs.get("block_inplanes", (64,))) * kwargs["widen_factor"]
            if int(narrowest) < 1:
                raise BackboneConfigError(f"width {width} leaves a layer with no channels", f"backbone {name!r}")
            if name == "resnet":
                encoder = nets.ResNet(
                    spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, **kwargs
                )
            else:
                encoder = _RESNETS[name](
                    pretrained=False,
                    spatial_dims=spatial_dims,
                    n_input_channels=in_channels,
                    feed_forward=False,
                    **kwargs,
                )
            # MONAI's ResNet leaves in_planes at the channels of layer4's output, the pooled feature size.
            encoder.out_features = int(encoder.in_planes)
        elif name in _DENSENETS or name == "densenet":
            kwargs["init_features"] = _scaled(int(kwargs.get("init_features", 64)), width)
            kwargs["growth_rate"] = _scaled(int(kwargs.get("growth_rate", 32)), width)
            builder = _DENSENETS.get(name, nets.DenseNet)
            encoder = builder(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **kwargs)
            out = encoder.class_layers.out
            encoder.class_layers.out = nn.Identity()  # features after relu + global pooling + flatten
            encoder.out_features = int(out.in_features)
        elif name == "segresnet":
            multiple = _group_multiple(kwargs.get("norm", ("GROUP", {"num_groups": kwargs.get("num_groups", 8)})))
            kwargs["init_filters"] = _scaled(int(kwargs.get("init_filters", 8)), width, multiple)
            encoder = SegResNetEncoder(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
        elif name in SEGMENTATION_NAMES or "." in name:
            raise BackboneConfigError(
                f"{name!r} is a segmentation network without a separable feature encoder; use it with "
                f"task='segmentation', or one of {list(ENCODER_NAMES)} as a classification encoder",
                f"backbone {name!r}",
            )
        else:
            raise BackboneConfigError(f"unknown encoder; known: {list(ENCODER_NAMES)}", f"backbone {name!r}")
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError, AssertionError) as error:
        if isinstance(error, MedsslError):
            raise
        raise BackboneConfigError(
            f"cannot build with {kwargs} at width {width}: {error}", f"backbone {name!r}"
        ) from error
    _check_not_empty(encoder, name, width)
    return encoder


def _check_not_empty(network: nn.Module, name: str, width: float) -> None:
    if any(p.numel() == 0 for p in network.parameters()):
        raise BackboneConfigError(f"width {width} leaves a layer with no channels", f"backbone {name!r}")


def _segmentation_builders() -> dict[str, Callable[..., nn.Module]]:
    def segresnet(spatial_dims: int, in_channels: int, out_channels: int, width: float, **kw: Any) -> nn.Module:
        multiple = _group_multiple(kw.get("norm", ("GROUP", {"num_groups": kw.get("num_groups", 8)})))
        kw["init_filters"] = _scaled(int(kw.get("init_filters", 8)), width, multiple)
        return nets.SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)

    def unet(spatial_dims: int, in_channels: int, out_channels: int, width: float, **kw: Any) -> nn.Module:
        kw["channels"] = [_scaled(int(c), width) for c in kw.get("channels", (16, 32, 64, 128, 256))]
        kw.setdefault("strides", (2,) * (len(kw["channels"]) - 1))
        kw.setdefault("num_res_units", 2)
        return nets.UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)

    def basicunet(spatial_dims: int, in_channels: int, out_channels: int, width: float, **kw: Any) -> nn.Module:
        kw["features"] = [_scaled(int(c), width) for c in kw.get("features", (32, 32, 64, 128, 256, 32))]
        return nets.BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)

    return {"segresnet": segresnet, "unet": unet, "basicunet": basicunet}


def build_segmentation_network(
    name: str, spatial_dims: int, in_channels: int, out_channels: int, width: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build a MONAI segmentation network ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    Args:
        name: ``segresnet``, ``unet``, ``basicunet``, or a dotted class path (``"monai.networks.nets.SwinUNETR"``)
            taking ``spatial_dims``, ``in_channels`` and ``out_channels``.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        width: multiplies the base width of a named network; must be 1.0 for a dotted path.
        kwargs: arguments of the network.

    Returns:
        The network.

    Raises:
        BackboneConfigError: unknown name, invalid kwargs, or ``width`` given for a dotted path.
    """
    if spatial_dims not in (2, 3):
        raise BackboneConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}", f"backbone {name!r}")
    kwargs = _check_kwargs(name, kwargs)
    builders = _segmentation_builders()
    try:
        if name in builders:
            network = builders[name](spatial_dims, in_channels, out_channels, width, **kwargs)
            _check_not_empty(network, name, width)
            return network
        if "." in name:
            if width != 1.0:
                raise BackboneConfigError(
                    "width scaling needs a named backbone; set the widths in backbone_kwargs", name
                )
            cls = pydoc.locate(name)
            if not callable(cls):
                raise BackboneConfigError("cannot import this network class", f"backbone {name!r}")
            return cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError, AssertionError) as error:
        if isinstance(error, MedsslError):
            raise
        raise BackboneConfigError(
            f"cannot build with {kwargs} at width {width}: {error}", f"backbone {name!r}"
        ) from error
    raise BackboneConfigError(
        f"unknown segmentation network; known: {list(SEGMENTATION_NAMES)} or a dotted class path",
        f"backbone {name!r}",
    )


def segmentation_encoder(network: nn.Module) -> nn.Module | None:
    """The feature encoder inside a segmentation network, sharing its modules, where one is separable.

    Args:
        network: a network from :func:`build_segmentation_network`.

    Returns:
        A :class:`SegResNetEncoder` view for a SegResNet; ``None`` for networks whose encoder is not a separate
        module (MONAI's UNet nests its down path inside skip connections).
    """
    if isinstance(network, nets.SegResNet):
        return SegResNetEncoder.from_segresnet(network)
    return None


def _preview(keys: Sequence[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_state_dict(path: str | os.PathLike) -> Any:
    """Read a checkpoint file safely (``weights_only=True``: tensors and containers, no pickled code).

    Args:
        path: the file.

    Returns:
        Its content (a state dict, or a dict holding one).

    Raises:
        EncoderStateError: the file is missing or is not a weights-only checkpoint.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise EncoderStateError(f"cannot read the checkpoint: {error}", path) from error


def load_encoder_state(
    encoder: nn.Module,
    state: Mapping[str, torch.Tensor] | str | os.PathLike,
    strict: bool = True,
    strip_prefix: str | None = None,
    ignore_prefixes: Sequence[str] = (),
    key: str | None = None,
) -> tuple[list[str], list[str]]:
    """Load a (pretrained) state dict into an encoder, checking every key and shape.

    Args:
        encoder: the module to load into (an encoder from :func:`build_encoder`, a fusion trunk ...).
        state: a state dict, or the path of a file saved with ``torch.save`` (read with ``weights_only=True``).
        strict: raise when a key is missing from ``state`` or unexpected in it; shape mismatches always raise.
        strip_prefix: removed from the start of every key that has it (``"module."`` of DataParallel checkpoints,
            ``"encoder."`` of an SSL model).
        ignore_prefixes: keys starting with one of these are dropped before checking (``"fc."``).
        key: take ``state[key]`` first (``"state_dict"``, ``"model"``, ``"network"`` of a training checkpoint).

    Returns:
        ``(missing, unexpected)`` key lists (both empty when ``strict``).

    Raises:
        EncoderStateError: the file cannot be read, ``key`` is absent, a shape differs, or (``strict``) a key is
            missing or unexpected. The message names the source and lists the keys.
    """
    source = os.fspath(state) if isinstance(state, (str, os.PathLike)) else "state dict"
    if isinstance(state, (str, os.PathLike)):
        state = read_state_dict(state)
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            raise EncoderStateError(f"no {key!r} entry in the checkpoint", source)
        state = state[key]
    if not isinstance(state, Mapping):
        raise EncoderStateError(f"expected a state dict (mapping of tensors), got {type(state).__name__}", source)
    given: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix) :]
        if any(name.startswith(p) for p in ignore_prefixes):
            continue
        given[name] = value
    own = encoder.state_dict()
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    mismatched = [
        f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in given and (not torch.is_tensor(given[k]) or given[k].shape != own[k].shape)
    ]
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (checkpoint vs encoder): {_preview(mismatched)}")
        if strict and missing:
            parts.append(f"{len(missing)} keys missing from the checkpoint: {_preview(missing)}")
        if strict and unexpected:
            parts.append(
                f"{len(unexpected)} unexpected keys: {_preview(unexpected)} (drop a classifier with ignore_prefixes, "
                "a wrapper prefix with strip_prefix)"
            )
        raise EncoderStateError("the state dict does not fit the encoder: " + "; ".join(parts), source)
    encoder.load_state_dict({k: v for k, v in given.items() if k in own}, strict=False)
    return missing, unexpected
