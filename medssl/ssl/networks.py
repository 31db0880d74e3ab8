"""Networks of the image self-supervised methods: heads, SimCLR/SimSiam/BYOL/rotation models, MAE helpers, ViT export.

Every convolutional model holds an :class:`medssl.networks.encoders.ImageEncoder` (a MONAI backbone from
:func:`medssl.networks.backbones.build_encoder`, 2D or 3D) as ``encoder``, so the exported trunk is the one
ConVIRT/GLoRIA export and every consumer (probes, fusion networks) loads it the same way.

* :class:`SimCLRNet`: encoder + projection MLP (Chen et al. 2020: 2 layers, ReLU);
* :class:`SimSiamNet`: encoder + projection MLP (3 layers, BatchNorm, last BatchNorm without affine) + bottleneck
  predictor (Chen & He 2021);
* :class:`BYOLNet`: online encoder/projector/predictor and a target encoder/projector that receives no gradient and
  follows the online weights by an exponential moving average (Grill et al. 2020), updated once per optimizer step
  (see :meth:`BYOLNet.update_target` and the module-level optimizer hook below);
* :class:`RotationNet`: encoder + a linear 4-way classifier (Gidaris et al. 2018);
* MAE: MONAI's :class:`monai.networks.nets.MaskedAutoEncoderViT` itself (2D and 3D), :func:`patchify` giving the
  reconstruction targets in the order of its patch embedding, and :class:`ViTEncoder` (a MONAI ``ViT`` returning
  mean-pooled tokens) that the trained MAE encoder is exported as (:func:`mae_encoder_state`).

BYOL's target update. The pretraining engine calls the optimizer; a method has no "after the step" callback yet, so
:class:`BYOLNet` registers with a process-wide ``torch.optim`` step post-hook (one hook for all BYOL networks, held
through weak references): after any ``optimizer.step()`` whose parameters include the network's online weights, the
network updates its target once. The update count is a buffer, so it is in the state dict, in every checkpoint, and
restored on resume together with the target weights; the momentum schedule is a function of that count.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import ViT
from torch import nn

from medssl.exceptions import MedsslError
from medssl.networks.encoders import ImageEncoder

__all__ = [
    "SSLNetworkError",
    "mlp_head",
    "SimCLRNet",
    "SimSiamNet",
    "BYOLNet",
    "RotationNet",
    "rotate_batch",
    "ViTEncoder",
    "build_mae",
    "patchify",
    "mae_loss",
    "mae_encoder_state",
    "VIT_BACKBONE",
]

#: ``backbone`` name of an exported ViT encoder in ``image.json``.
VIT_BACKBONE = "vit"


class SSLNetworkError(MedsslError):
    """Network settings that do not fit (sizes, patch sizes, shapes)."""


def mlp_head(
    in_features: int,
    hidden: int,
    out_features: int,
    num_layers: int = 2,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
) -> nn.Sequential:
    """An MLP head: ``num_layers`` linear layers, BatchNorm + ReLU between them.

    Args:
        in_features: input size.
        hidden: hidden size.
        out_features: output size.
        num_layers: linear layers (>= 1).
        batch_norm: BatchNorm after each hidden linear layer.
        last_batch_norm: a BatchNorm without affine parameters after the last layer (SimSiam's projector).

    Returns:
        The head.
    """
    if num_layers < 1:
        raise SSLNetworkError(f"a head needs at least one layer, got {num_layers}")
    layers: list[nn.Module] = []
    size = int(in_features)
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(size, int(hidden), bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(hidden)))
        layers.append(nn.ReLU(inplace=True))
        size = int(hidden)
    layers.append(nn.Linear(size, int(out_features), bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(int(out_features), affine=False))
    return nn.Sequential(*layers)


def _encoder(backbone: str, spatial_dims: int, in_channels: int, width: float, kwargs: Mapping[str, Any] | None):
    return ImageEncoder(backbone, spatial_dims, in_channels, width, None, dict(kwargs or {}))


class SimCLRNet(nn.Module):
    """Encoder + SimCLR projection head.

    Args:
        backbone: encoder name (``resnet50``, ``resnet18``, ``densenet121`` ...).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        width: backbone width multiplier.
        backbone_kwargs: other MONAI network arguments.
        proj_dim: projection size (SimCLR: 128).
        proj_hidden: hidden size (``None``: the feature size).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        width: float = 1.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = _encoder(backbone, spatial_dims, in_channels, width, backbone_kwargs)
        features = self.encoder.out_features
        self.projector = mlp_head(features, proj_hidden or features, proj_dim, num_layers=2, batch_norm=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"features": (B, F), "z": (B, proj_dim)}``."""
        features = self.encoder(x)[0]
        return {"features": features, "z": self.projector(features)}


class SimSiamNet(nn.Module):
    """Encoder + SimSiam projector (3 layers, BatchNorm) + bottleneck predictor (2 layers).

    Args:
        backbone: encoder name.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        width: backbone width multiplier.
        backbone_kwargs: other MONAI network arguments.
        proj_dim: projection size (SimSiam: 2048).
        pred_hidden: predictor bottleneck (SimSiam: ``proj_dim / 4``; ``None`` gives that).
        proj_layers: projector layers (3 in the paper).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        width: float = 1.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
        proj_dim: int = 2048,
        pred_hidden: int | None = None,
        proj_layers: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = _encoder(backbone, spatial_dims, in_channels, width, backbone_kwargs)
        self.projector = mlp_head(self.encoder.out_features, proj_dim, proj_dim, proj_layers, True, True)
        self.predictor = mlp_head(proj_dim, pred_hidden or max(1, proj_dim // 4), proj_dim, 2, True, False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"z": projection, "p": prediction}``; the loss stops the gradient of ``z``."""
        z = self.projector(self.encoder(x)[0])
        return {"z": z, "p": self.predictor(z)}


# ----------------------------------------------------------------------------------------------------------- BYOL

_EMA_NETWORKS: weakref.WeakSet = weakref.WeakSet()
_EMA_HOOK: Any = None


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Update the target of every BYOL network whose online weights this optimizer just stepped."""
    if not len(_EMA_NETWORKS):
        return
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for network in list(_EMA_NETWORKS):
        if network.update_on_optimizer_step and network.training and id(network.anchor_parameter()) in stepped:
            network.update_target()


def _register(network: BYOLNet) -> None:
    global _EMA_HOOK
    if _EMA_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _EMA_HOOK = register_optimizer_step_post_hook(_after_optimizer_step)
    _EMA_NETWORKS.add(network)


class BYOLNet(nn.Module):
    """BYOL's online network (encoder, projector, predictor) and its moving-average target (encoder, projector).

    The target starts as a copy of the online encoder and projector, never requires a gradient, and after each
    optimizer step becomes ``tau * target + (1 - tau) * online`` with
    ``tau_k = 1 - (1 - base_momentum) * (cos(pi k / K) + 1) / 2`` (``k`` updates so far, ``K = momentum_steps``;
    constant ``base_momentum`` when ``momentum_steps`` is 0). Buffers of the target (BatchNorm statistics) are its
    own, updated by its forward passes, as in BYOL.

    Args:
        backbone: encoder name.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        width: backbone width multiplier.
        backbone_kwargs: other MONAI network arguments.
        proj_dim: projection size (BYOL: 256).
        hidden: hidden size of projector and predictor (BYOL: 4096).
        base_momentum: ``tau`` at the start (BYOL: 0.996).
        momentum_steps: steps over which ``tau`` goes to 1 (the run's total steps); 0 keeps it constant.
        update_on_optimizer_step: update the target automatically after each optimizer step that moves the online
            weights (False: call :meth:`update_target` yourself).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        width: float = 1.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
        proj_dim: int = 256,
        hidden: int = 4096,
        base_momentum: float = 0.996,
        momentum_steps: int = 0,
        update_on_optimizer_step: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(base_momentum) <= 1.0:
            raise SSLNetworkError(f"base_momentum must be in [0, 1], got {base_momentum}")
        self.encoder = _encoder(backbone, spatial_dims, in_channels, width, backbone_kwargs)
        self.projector = mlp_head(self.encoder.out_features, hidden, proj_dim, 2, True, False)
        self.predictor = mlp_head(proj_dim, hidden, proj_dim, 2, True, False)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for parameter in self.target_parameters():
            parameter.requires_grad_(False)
        self.base_momentum = float(base_momentum)
        self.momentum_steps = int(momentum_steps or 0)
        self.update_on_optimizer_step = bool(update_on_optimizer_step)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        _register(self)

    def online_parameters(self) -> list[nn.Parameter]:
        """Parameters of the online encoder and projector, in the order of :meth:`target_parameters`."""
        return [*self.encoder.parameters(), *self.projector.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        """Parameters of the target encoder and projector."""
        return [*self.target_encoder.parameters(), *self.target_projector.parameters()]

    def anchor_parameter(self) -> nn.Parameter:
        """An online parameter identifying this network's optimizer."""
        return next(self.encoder.parameters())

    def momentum(self, updates: int | None = None) -> float:
        """``tau`` of the next update (or after ``updates`` updates)."""
        k = int(self.ema_updates) if updates is None else int(updates)
        if self.momentum_steps <= 0:
            return self.base_momentum
        progress = min(1.0, k / self.momentum_steps)
        return 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * progress) + 1.0) / 2.0

    @torch.no_grad()
    def update_target(self) -> float:
        """One moving-average step of the target towards the online weights.

        Returns:
            The momentum used.
        """
        tau = self.momentum()
        for target, online in zip(self.target_parameters(), self.online_parameters()):
            target.mul_(tau).add_(online.detach(), alpha=1.0 - tau)
        self.ema_updates += 1
        return tau

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"p": online prediction, "z_target": target projection (no gradient)}``."""
        _EMA_NETWORKS.add(self)  # a deep copy (never __init__-ed) registers on its first forward
        p = self.predictor(self.projector(self.encoder(x)[0]))
        with torch.no_grad():
            z_target = self.target_projector(self.target_encoder(x)[0])
        return {"p": p, "z_target": z_target.detach()}


# ------------------------------------------------------------------------------------------------------- rotation


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image, by multiples of 90 degrees in the plane of the first two spatial axes.

    For 2D images ``(B, C, H, W)`` that is the image plane; for RAS-oriented volumes ``(B, C, X, Y, Z)`` it is the
    axial plane (left-right x front-back), so a rotated brain is still a brain seen from above, rotated.

    Args:
        images: ``(B, C, S1, S2[, S3])`` with ``S1 == S2``.

    Returns:
        ``(rotated, labels)``: ``(4B, C, ...)`` (rotation ``k`` of image ``b`` at row ``k * B + b``) and ``(4B,)``
        labels ``k`` in 0..3 (counter-clockwise quarter turns).

    Raises:
        SSLNetworkError: a plane that is not square, or fewer than two spatial axes.
    """
    if images.dim() < 4:
        raise SSLNetworkError(f"rotation needs (B, C, S1, S2[, S3]) images, got {tuple(images.shape)}")
    if images.shape[2] != images.shape[3]:
        raise SSLNetworkError(f"the rotation plane must be square, got {tuple(images.shape[2:4])}")
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class RotationNet(nn.Module):
    """Encoder + linear 4-way rotation classifier.

    Args:
        backbone: encoder name.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        width: backbone width multiplier.
        backbone_kwargs: other MONAI network arguments.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 1,
        width: float = 1.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = _encoder(backbone, spatial_dims, in_channels, width, backbone_kwargs)
        self.head = nn.Linear(self.encoder.out_features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation logits ``(B, 4)``."""
        return self.head(self.encoder(x)[0])


# ------------------------------------------------------------------------------------------------------------ MAE


class ViTEncoder(ViT):
    """MONAI's ``ViT`` (no class token, no classifier) returning the mean of its output tokens: ``(B, hidden)``.

    Its state-dict keys are MONAI ``ViT``'s, so MONAI code (``ViT``, ``UNETR``'s ``vit``) loads the weights too.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        img_size: image size.
        patch_size: patch size.
        hidden_size: token size.
        mlp_dim: MLP size of the transformer blocks.
        num_layers: transformer blocks.
        num_heads: attention heads.
        proj_type: patch embedding ``conv`` or ``perceptron``.
        pos_embed_type: ``sincos``, ``learnable`` or ``none``.
        qkv_bias: bias of the attention projections.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "conv",
        pos_embed_type: str = "sincos",
        qkv_bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type=proj_type,
            pos_embed_type=pos_embed_type,
            classification=False,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        self.out_features = int(hidden_size)
        self.arguments = {
            "img_size": img_size if isinstance(img_size, int) else list(img_size),
            "patch_size": patch_size if isinstance(patch_size, int) else list(patch_size),
            "hidden_size": int(hidden_size),
            "mlp_dim": int(mlp_dim),
            "num_layers": int(num_layers),
            "num_heads": int(num_heads),
            "proj_type": proj_type,
            "pos_embed_type": pos_embed_type,
            "qkv_bias": bool(qkv_bias),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Mean-pooled tokens ``(B, hidden_size)``."""
        tokens, _ = super().forward(x)
        return tokens.mean(dim=1)


def build_mae(
    spatial_dims: int = 2,
    in_channels: int = 1,
    img_size: int | Sequence[int] = 224,
    patch_size: int | Sequence[int] = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_layers: int = 12,
    num_heads: int = 12,
    masking_ratio: float = 0.75,
    decoder_hidden_size: int = 384,
    decoder_mlp_dim: int = 1536,
    decoder_num_layers: int = 4,
    decoder_num_heads: int = 12,
    qkv_bias: bool = False,
) -> nn.Module:
    """MONAI's ``MaskedAutoEncoderViT`` (conv patch embedding, sin-cos positions), with checked sizes.

    Its forward returns ``(pred, mask)``: ``(B, N, prod(patch_size) * in_channels)`` predicted patches and the
    ``(B, N)`` integer mask, 1 for masked patches (the ones the loss looks at), 0 for visible ones.

    Raises:
        SSLNetworkError: an image size not divisible by the patch size, or sizes not divisible by the heads.
    """
    from monai.networks.nets import MaskedAutoEncoderViT

    size = _tuple(img_size, spatial_dims)
    patch = _tuple(patch_size, spatial_dims)
    if any(s % p for s, p in zip(size, patch)):
        raise SSLNetworkError(f"image size {size} is not a multiple of the patch size {patch}")
    if hidden_size % num_heads or decoder_hidden_size % decoder_num_heads:
        raise SSLNetworkError("hidden sizes must be multiples of their numbers of attention heads")
    if spatial_dims == 3 and (hidden_size % 6 or decoder_hidden_size % 6):
        raise SSLNetworkError(
            "3D sin-cos position embeddings need hidden_size and decoder_hidden_size divisible by 6 "
            f"(got {hidden_size} and {decoder_hidden_size})"
        )
    if spatial_dims == 2 and (hidden_size % 4 or decoder_hidden_size % 4):
        raise SSLNetworkError(
            "2D sin-cos position embeddings need hidden_size and decoder_hidden_size divisible by 4 "
            f"(got {hidden_size} and {decoder_hidden_size})"
        )
    if not 0.0 < float(masking_ratio) < 1.0:
        raise SSLNetworkError(f"masking_ratio must be in (0, 1), got {masking_ratio}")
    return MaskedAutoEncoderViT(
        in_channels=in_channels,
        img_size=size,
        patch_size=patch,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        masking_ratio=float(masking_ratio),
        decoder_hidden_size=decoder_hidden_size,
        decoder_mlp_dim=decoder_mlp_dim,
        decoder_num_layers=decoder_num_layers,
        decoder_num_heads=decoder_num_heads,
        proj_type="conv",
        pos_embed_type="sincos",
        decoder_pos_embed_type="sincos",
        spatial_dims=spatial_dims,
        qkv_bias=qkv_bias,
    )


def _tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    out = (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != dims:
        raise SSLNetworkError(f"{value} does not have {dims} dimensions")
    return out


def patchify(images: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """Cut images into non-overlapping patches, in the order of MONAI's patch embedding.

    Patches come in raster order of the patch grid (the order of the conv embedding's ``flatten(2)``); the values of
    a patch are ordered ``(p1, p2[, p3], channel)`` (the order of MONAI's ``perceptron`` embedding).

    Args:
        images: ``(B, C, S1, S2[, S3])``.
        patch_size: patch size per spatial axis (an int for all).

    Returns:
        ``(B, N, prod(patch_size) * C)``.

    Raises:
        SSLNetworkError: a size not divisible by the patch size.
    """
    batch, channels, *spatial = images.shape
    patch = _tuple(patch_size, len(spatial))
    if any(s % p for s, p in zip(spatial, patch)):
        raise SSLNetworkError(f"image size {tuple(spatial)} is not a multiple of the patch size {patch}")
    grid = [s // p for s, p in zip(spatial, patch)]
    shape = [batch, channels]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = images.reshape(shape)
    dims = len(spatial)
    grid_axes = [2 + 2 * i for i in range(dims)]
    patch_axes = [3 + 2 * i for i in range(dims)]
    x = x.permute(0, *grid_axes, *patch_axes, 1)
    return x.reshape(batch, math.prod(grid), math.prod(patch) * channels)


def mae_loss(
    pred: torch.Tensor,
    images: torch.Tensor,
    mask: torch.Tensor,
    patch_size: int | Sequence[int],
    norm_pix_loss: bool = False,
) -> torch.Tensor:
    """MAE's loss of a batch: mean squared error over the masked patches only (visible patches are ignored).

    Args:
        pred: ``(B, N, K)`` predicted patches.
        images: ``(B, C, *spatial)`` the input images (targets).
        mask: ``(B, N)``, 1 where masked.
        patch_size: the MAE's patch size.
        norm_pix_loss: normalise each target patch by its mean and variance first.

    Returns:
        The scalar loss (float32).
    """
    from medssl.losses import masked_patch_loss

    target = patchify(images.float(), patch_size)
    return masked_patch_loss(pred.float(), target, mask, norm_pix_loss=norm_pix_loss)


def mae_encoder_state(mae: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder of a trained ``MaskedAutoEncoderViT`` as a :class:`ViTEncoder` (MONAI ``ViT``) state dict.

    The patch embedding and the transformer blocks keep their names; the encoder's final LayerNorm (the last entry of
    the MAE's ``blocks``) becomes ``norm``; the class token and the decoder are left out.

    Args:
        mae: the trained MAE.

    Returns:
        A state dict on the CPU.
    """
    last = len(mae.blocks) - 1
    state: dict[str, torch.Tensor] = {}
    for key, value in mae.state_dict().items():
        if key.startswith("patch_embedding."):
            state[key] = value
        elif key.startswith("blocks."):
            index, _, rest = key[len("blocks.") :].partition(".")
            state[f"norm.{rest}" if int(index) == last else key] = value
    return {k: v.detach().cpu().clone() for k, v in state.items()}
