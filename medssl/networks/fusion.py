"""Early, joint and late fusion of views (mammography) or modalities (multi-sequence MR).

Input convention (every network here, TorchScript included)
-----------------------------------------------------------
``forward(x, presence=None)`` where ``x`` is one of

* a **view-keyed dict** ``{"L-CC": (B, C, H, W), "R-CC": ..., ...}`` (what the mammography-exam transform produces);
  a view absent from the dict counts as missing;
* a **channel-stacked image** ``(B, V*C, *spatial)`` (what MR sequence stacking produces: channels in
  ``view_names`` order, the order of the datalist's ``channel_def``);
* a **view-stacked tensor** ``(B, V, C, *spatial)``.

``presence`` is ``(B, V)`` (bool or 0/1), in ``view_names`` order; ``None`` means every view is present. A missing
view's pixels never reach an output: early fusion zeroes its channels, joint and late fusion do not run it through a
trunk at all (so not even batch-norm statistics see it).

Outputs
-------
* :class:`EarlyFusion` returns a tensor, like any MONAI network: logits ``(B, K)`` (classification) or
  ``(B, K, *spatial)`` (segmentation).
* :class:`JointFusion` and :class:`LateFusion` return a dict of tensors: ``logits`` ``(B, K)`` (exam level),
  ``view_logits`` ``(B, V, K)``, ``presence`` ``(B, V)`` (the views actually used), and with ``breasts`` set
  ``breast_logits`` ``(B, NB, K)`` and ``breast_presence`` ``(B, NB)``; late fusion adds ``probs``, ``view_probs``
  and ``breast_probs``; attention pooling adds ``attention`` ``(B, V)``.
* A missing view's (or breast's) outputs are zeros, to be masked with ``presence`` (``breast_presence``) - zeros keep
  a masked loss ``(loss * mask).sum()`` finite. An exam with no view at all is a data error, not a clinical
  situation: its exam-level ``logits``/``probs`` are NaN so that it cannot pass silently.
* :func:`build_fusion_model` (``output="dict"`` / ``"logits"``) or the :class:`DictOutput` / :class:`SelectOutput`
  wrappers give every strategy the same output type.

TorchScript: all networks script (``torch.jit.script``, what MONAI's ``ckpt_export`` uses); early fusion also traces.
Scripted models are for inference: modality and view dropout are skipped in a scripted model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import FullyConnectedNet
from torch import nn

from medssl.exceptions import MedsslError
from medssl.networks.backbones import (
    build_encoder,
    build_segmentation_network,
    load_encoder_state,
    read_state_dict,
    segmentation_encoder,
)
from medssl.networks.profile import count_parameters

__all__ = [
    "MAMMO_VIEWS",
    "MR_SEQUENCES",
    "STRATEGIES",
    "FusionConfigError",
    "FusionInputError",
    "stack_views",
    "draw_keep_mask",
    "masked_mean_ensemble",
    "ModalityDropout",
    "EarlyFusion",
    "ViewBranch",
    "GatedAttentionPooling",
    "JointFusion",
    "LateFusion",
    "DictOutput",
    "SelectOutput",
    "fit_width",
    "build_fusion_model",
]

MAMMO_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
MR_SEQUENCES = ("T1", "T1C", "T2", "FLAIR")
STRATEGIES = ("early", "joint", "late", "single_view")


class FusionConfigError(MedsslError):
    """A fusion network's constructor arguments are inconsistent."""


class FusionInputError(MedsslError):
    """The input given to a fusion network does not follow the input convention."""


# ----------------------------------------------------------------------------------------------------------- inputs
def stack_views(
    x: dict[str, torch.Tensor] | torch.Tensor,
    presence: torch.Tensor | None,
    view_names: list[str],
    in_channels: int,
    spatial_dims: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring any accepted input to ``(B, V, C, *spatial)`` views and a float ``(B, V)`` presence mask.

    Args:
        x: a view-keyed dict, a channel-stacked ``(B, V*C, *spatial)`` or a view-stacked ``(B, V, C, *spatial)``.
        presence: ``(B, V)`` or None (all present); views absent from a dict are missing whatever it says.
        view_names: the views, in channel/stack order.
        in_channels: channels per view (``C``).
        spatial_dims: 2 or 3.

    Returns:
        ``(views, present)``; ``present`` is 0/1 in the dtype of ``views``.
    """
    num_views = len(view_names)
    if isinstance(x, torch.Tensor):
        if x.dim() == spatial_dims + 2:
            views = x.reshape([x.shape[0], num_views, in_channels] + list(x.shape[2:]))
        else:
            views = x
        given = torch.ones(views.shape[0], num_views, dtype=views.dtype, device=views.device)
    else:
        ref: torch.Tensor | None = None
        for name in view_names:
            if name in x:
                ref = x[name]
                break
        if ref is None:
            raise ValueError("the input dict holds none of the network's views")
        tensors: list[torch.Tensor] = []
        flags: list[float] = []
        for name in view_names:
            if name in x:
                tensors.append(x[name])
                flags.append(1.0)
            else:
                tensors.append(torch.zeros_like(ref))
                flags.append(0.0)
        views = torch.stack(tensors, 1)
        given = torch.tensor(flags, dtype=views.dtype, device=views.device).unsqueeze(0)
        given = given.expand(views.shape[0], num_views)
    if presence is not None:
        given = given * (presence > 0).to(device=given.device, dtype=given.dtype)
    return views, given


@torch.jit.unused
def _check_input(
    x: dict[str, torch.Tensor] | torch.Tensor,
    presence: torch.Tensor | None,
    view_names: list[str],
    in_channels: int,
    spatial_dims: int,
    where: str,
) -> None:
    """Eager-mode validation of the input convention (skipped in TorchScript)."""
    num_views = len(view_names)
    if isinstance(x, Mapping):
        unknown = sorted(k for k in x if k not in view_names)
        if unknown:
            raise FusionInputError(f"unknown views {unknown}; this network takes {view_names}", where)
        given = [k for k in view_names if k in x]
        if not given:
            raise FusionInputError(f"the input dict holds none of the views {view_names}", where)
        shapes = {k: tuple(x[k].shape) for k in given}
        if len(set(shapes.values())) > 1:
            raise FusionInputError(f"views differ in shape: {shapes}", where)
        shape = shapes[given[0]]
        if len(shape) != spatial_dims + 2 or shape[1] != in_channels:
            raise FusionInputError(
                f"view {given[0]!r} has shape {shape}; expected (B, {in_channels}, {'D, ' * (spatial_dims == 3)}H, W)",
                where,
            )
        batch = shape[0]
    elif isinstance(x, torch.Tensor):
        batch = x.shape[0]
        if x.dim() == spatial_dims + 2:
            if x.shape[1] != num_views * in_channels:
                raise FusionInputError(
                    f"a channel-stacked image needs {num_views} views x {in_channels} channels = "
                    f"{num_views * in_channels} channels ({view_names}), got {x.shape[1]}",
                    where,
                )
        elif x.dim() == spatial_dims + 3:
            if x.shape[1] != num_views or x.shape[2] != in_channels:
                raise FusionInputError(
                    f"a view-stacked tensor needs shape (B, {num_views}, {in_channels}, ...), got {tuple(x.shape)}",
                    where,
                )
        else:
            raise FusionInputError(
                f"a {spatial_dims}D input tensor has {spatial_dims + 2} (B, V*C, ...) or {spatial_dims + 3} "
                f"(B, V, C, ...) dimensions, got shape {tuple(x.shape)}",
                where,
            )
    else:
        raise FusionInputError(f"expected a tensor or a view-keyed dict, got {type(x).__name__}", where)
    if presence is not None and tuple(presence.shape) != (batch, num_views):
        raise FusionInputError(
            f"presence must be (B, V) = ({batch}, {num_views}) in the order {view_names}, got {tuple(presence.shape)}",
            where,
        )


# ------------------------------------------------------------------------------------------------- dropout, ensemble
def draw_keep_mask(presence: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw which modalities (views) to keep: each present one is dropped with probability ``p``, never all.

    Missing modalities (``presence == 0``) stay dropped and count as dropped: when every present modality of a
    sample would be dropped, one of them, chosen at random, is kept. A sample with no modality keeps none.

    Args:
        presence: ``(B, M)``, 0/1 or bool.
        p: drop probability per modality, in ``[0, 1]``.
        generator: a CPU generator for reproducible draws; the global generator if None.

    Returns:
        ``(B, M)`` 0/1 mask in ``presence``'s dtype (float for bool) on its device.
    """
    present = presence.detach().cpu() > 0
    drop = torch.rand(present.shape, generator=generator) < p
    keep = present & ~drop
    # A present modality chosen uniformly at random per sample (argmax of uniform scores over the present ones).
    scores = torch.where(present, torch.rand(present.shape, generator=generator), torch.full(present.shape, -1.0))
    fallback = torch.zeros_like(keep).scatter_(1, scores.argmax(1, keepdim=True), True) & present
    keep = torch.where(keep.any(1, keepdim=True), keep, fallback)
    dtype = presence.dtype if presence.is_floating_point() else torch.float32
    return keep.to(device=presence.device, dtype=dtype)


def masked_mean_ensemble(
    predictions: torch.Tensor, presence: torch.Tensor, weights: torch.Tensor | None = None, dim: int = 1
) -> torch.Tensor:
    """Average predictions over the present members only, optionally weighted.

    :class:`monai.transforms.MeanEnsemble` averages every member: it has no presence mask, so a missing view's
    placeholder would pull the mean. This is its masked form: with every member present it equals ``MeanEnsemble``
    (weighted or not). Missing members' values are never read (NaN there does not propagate).

    Args:
        predictions: ``(B, V, ...)`` (members along ``dim``; probabilities for late fusion).
        presence: ``(B, V)`` 0/1 or bool (members along ``dim`` as well).
        weights: ``(V,)`` non-negative member weights (or a tensor broadcastable to ``presence``), None for equal.
        dim: the members' dimension of ``predictions`` and ``presence``.

    Returns:
        ``predictions`` reduced over ``dim``; NaN where no member is present.
    """
    mask = (presence > 0).to(predictions.dtype)
    if weights is not None:
        weights = weights.to(device=mask.device, dtype=mask.dtype)
        if weights.dim() == 1:
            shape = [1] * mask.dim()
            shape[dim] = -1
            weights = weights.reshape(shape)
        mask = mask * weights
    while mask.dim() < predictions.dim():
        mask = mask.unsqueeze(-1)
    values = torch.where(mask > 0, predictions, torch.zeros_like(predictions))
    total = (values * mask).sum(dim)
    norm = mask.sum(dim)
    mean = total / norm.clamp_min(1e-12)
    return torch.where(norm > 0, mean, torch.full_like(mean, math.nan))


class ModalityDropout(nn.Module):
    """Input-level modality (or view) dropout that never drops every modality; respects a presence mask.

    In training, each present modality of each sample is zeroed with probability ``p`` (:func:`draw_keep_mask`);
    missing modalities stay zero and count as dropped. In eval mode (and in a scripted model) it only zeroes the
    missing modalities.

    Scaling: ``"none"`` (default) leaves kept modalities as they are, because at inference a missing sequence is also
    a plain zero channel and intensities are normalised per channel - scaling would teach the network intensities it
    never sees at test time. ``"rescale"`` multiplies a sample's kept modalities by ``n_present / n_kept`` (inverted
    dropout at the modality level: the expected channel sum matches eval mode; 1 when nothing is dropped).

    Args:
        p: drop probability per modality.
        scaling: ``"none"`` or ``"rescale"``.
        seed: seed of a private generator for reproducible draws; the global generator when None.
    """

    __jit_ignored_attributes__ = ["_generator"]

    def __init__(self, p: float = 0.0, scaling: str = "none", seed: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise FusionConfigError(f"modality dropout p must be in [0, 1], got {p}", "ModalityDropout")
        if scaling not in ("none", "rescale"):
            raise FusionConfigError(f"scaling must be 'none' or 'rescale', got {scaling!r}", "ModalityDropout")
        self.p = float(p)
        self.rescale = scaling == "rescale"
        self.seed = seed
        self._generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    @torch.jit.unused
    def draw(self, presence: torch.Tensor) -> torch.Tensor:
        """Draw a keep mask for ``presence`` ``(B, M)`` with this module's generator."""
        return draw_keep_mask(presence, self.p, self._generator)

    def forward(self, views: torch.Tensor, presence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero missing (and, in training, dropped) modalities.

        Args:
            views: ``(B, M, ...)``.
            presence: ``(B, M)`` 0/1.

        Returns:
            ``(views, keep)``: the masked views and the ``(B, M)`` mask of modalities kept.
        """
        keep = presence
        if self.training and self.p > 0.0 and not torch.jit.is_scripting():
            keep = self.draw(presence)
        shape = [keep.shape[0], keep.shape[1]] + [1] * (views.dim() - 2)
        out = views * keep.reshape(shape).to(views.dtype)
        if self.rescale:
            factor = presence.sum(1) / keep.sum(1).clamp_min(1.0)
            out = out * factor.reshape([-1] + [1] * (views.dim() - 1)).to(views.dtype)
        return out, keep


# ------------------------------------------------------------------------------------------------------------ helpers
def _head(in_features: int, out_features: int, hidden: Sequence[int] | int, dropout: float) -> nn.Module:
    """MONAI's FullyConnectedNet: one linear layer without hidden sizes, else Linear-Dropout-ReLU blocks."""
    if isinstance(hidden, int):
        hidden = [hidden] if hidden > 0 else []
    return FullyConnectedNet(in_features, out_features, [int(h) for h in hidden], dropout=dropout or None, act="RELU")


def _where(cls: type) -> str:
    return f"{cls.__name__} config"


def _resolve_groups(share: str | Mapping[str, str], views: Sequence[str], where: str) -> dict[str, list[str]]:
    """Map trunk group name -> views, in first-appearance order."""
    if isinstance(share, str):
        if share == "none":
            assignment = {v: v for v in views}
        elif share == "all":
            assignment = {v: "all" for v in views}
        elif share == "projection":
            bad = [v for v in views if "-" not in v]
            if bad:
                raise FusionConfigError(f"share='projection' needs views named 'L-CC'-style; {bad} have no '-'", where)
            assignment = {v: v.split("-", 1)[1] for v in views}
        else:
            raise FusionConfigError(
                f"share must be 'none', 'all', 'projection' or a {{view: group}} mapping, got {share!r}", where
            )
    else:
        assignment = {str(k): str(g) for k, g in dict(share).items()}
        unknown = sorted(set(assignment) - set(views))
        absent = [v for v in views if v not in assignment]
        if unknown or absent:
            raise FusionConfigError(f"share mapping: unknown views {unknown}, views without a group {absent}", where)
    groups: dict[str, list[str]] = {}
    for view in views:
        groups.setdefault(assignment[view], []).append(view)
    bad = [g for g in groups if not g or "." in g]
    if bad:
        raise FusionConfigError(f"group names must be non-empty and contain no '.', got {bad}", where)
    return groups


def _resolve_breasts(
    breasts: str | Mapping[str, Sequence[str]] | None, views: Sequence[str], where: str
) -> dict[str, list[str]]:
    if breasts is None:
        return {}
    if isinstance(breasts, str):
        if breasts != "laterality":
            raise FusionConfigError(f"breasts must be 'laterality', a mapping or None, got {breasts!r}", where)
        bad = [v for v in views if "-" not in v]
        if bad:
            raise FusionConfigError(f"breasts='laterality' needs views named 'L-CC'-style; {bad} have no '-'", where)
        resolved: dict[str, list[str]] = {}
        for view in views:
            resolved.setdefault(view.split("-", 1)[0], []).append(view)
    else:
        resolved = {str(k): [str(v) for v in vs] for k, vs in dict(breasts).items()}
    unknown = sorted({v for vs in resolved.values() for v in vs} - set(views))
    sizes = {k: len(vs) for k, vs in resolved.items()}
    if unknown or len(set(sizes.values())) != 1 or not resolved:
        raise FusionConfigError(
            f"breasts must list known views ({list(views)}), the same number per breast; got {resolved}", where
        )
    return resolved


# ------------------------------------------------------------------------------------------------------------- early
class EarlyFusion(nn.Module):
    """Early fusion: views/modalities stacked as channels into one MONAI backbone.

    Classification: ``encoder`` (a MONAI network without classifier, see :mod:`medssl.networks.backbones`) then a
    fully connected ``head``. Segmentation: one MONAI segmentation network (``network``). Missing modalities' channels
    are zeroed; in training, :class:`ModalityDropout` drops present ones (never all).

    Args:
        view_names: the views/modalities in channel order (``["T1", "T1C", "T2", "FLAIR"]``).
        spatial_dims: 2 or 3.
        num_classes: output classes (channels of the segmentation).
        in_channels: channels per view (the backbone gets ``len(view_names) * in_channels``).
        task: ``"classification"`` or ``"segmentation"``.
        backbone: an encoder name (classification) or segmentation network name / dotted path.
        backbone_kwargs: arguments of the MONAI network.
        width: base-width multiplier of the backbone (for equal parameter budgets).
        modality_dropout: drop probability per present modality in training.
        dropout_scaling: ``"none"`` or ``"rescale"`` (see :class:`ModalityDropout`).
        dropout_seed: seed of the dropout draws.
        head_hidden: hidden sizes of the classification head (``[]``: one linear layer).
        head_dropout: dropout in the head.
    """

    def __init__(
        self,
        view_names: Sequence[str],
        spatial_dims: int,
        num_classes: int = 1,
        in_channels: int = 1,
        task: str = "classification",
        backbone: str = "resnet18",
        backbone_kwargs: Mapping[str, Any] | None = None,
        width: float = 1.0,
        modality_dropout: float = 0.0,
        dropout_scaling: str = "none",
        dropout_seed: int | None = None,
        head_hidden: Sequence[int] | int = (),
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        where = _where(type(self))
        if task not in ("classification", "segmentation"):
            raise FusionConfigError(f"task must be 'classification' or 'segmentation', got {task!r}", where)
        if not view_names or len(set(view_names)) != len(view_names):
            raise FusionConfigError(f"view_names must be distinct and non-empty, got {list(view_names)}", where)
        self.view_names = [str(v) for v in view_names]
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.task = task
        self.modality_dropout = ModalityDropout(modality_dropout, dropout_scaling, dropout_seed)
        total = len(self.view_names) * self.in_channels
        kwargs = dict(backbone_kwargs or {})
        self.encoder = None
        self.head = None
        self.network = None
        if task == "classification":
            self.encoder = build_encoder(backbone, self.spatial_dims, total, width=width, **kwargs)
            self.head = _head(self.encoder.out_features, self.num_classes, head_hidden, head_dropout)
        else:
            self.network = build_segmentation_network(
                backbone, self.spatial_dims, total, self.num_classes, width, **kwargs
            )

    def get_encoders(self) -> dict[str, nn.Module]:
        """The feature encoder(s) for reuse: ``{"encoder": module}``; empty for a segmentation network without one.

        Returns:
            For classification the ``encoder``; for segmentation a view sharing the backbone's encoder modules
            (SegResNet), or nothing (UNet, whose down path is not a separate module).
        """
        if self.encoder is not None:
            return {"encoder": self.encoder}
        encoder = segmentation_encoder(self.network)
        return {} if encoder is None else {"encoder": encoder}

    def load_encoder_state(self, state: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
        """Load pretrained weights into the encoder (see :func:`medssl.networks.load_encoder_state`).

        Args:
            state: state dict or checkpoint path.
            kwargs: ``strict``, ``strip_prefix``, ``ignore_prefixes``, ``key``.

        Returns:
            ``(missing, unexpected)`` keys.

        Raises:
            FusionConfigError: the backbone has no separable encoder.
        """
        encoders = self.get_encoders()
        if not encoders:
            raise FusionConfigError("this segmentation backbone has no separable encoder to load", _where(type(self)))
        return load_encoder_state(encoders["encoder"], state, **kwargs)

    def forward(self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse the views as channels.

        Args:
            x: a view-keyed dict, ``(B, V*C, *spatial)`` or ``(B, V, C, *spatial)``.
            presence: ``(B, V)`` or None.

        Returns:
            Logits ``(B, K)`` or segmentation logits ``(B, K, *spatial)``.
        """
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            _check_input(x, presence, self.view_names, self.in_channels, self.spatial_dims, "EarlyFusion input")
        views, present = stack_views(x, presence, self.view_names, self.in_channels, self.spatial_dims)
        views, _ = self.modality_dropout(views, present)
        image = views.flatten(1, 2)
        # Nested `is not None` tests on submodules are resolved when scripting, so the unused branch is not compiled.
        if self.network is not None:
            return self.network(image)
        if self.encoder is not None:
            if self.head is not None:
                return self.head(self.encoder(image))
        raise RuntimeError("EarlyFusion has neither a segmentation network nor an encoder and head")


# ----------------------------------------------------------------------------------------------------- joint and late
class ViewBranch(nn.Module):
    """One trunk (``encoder``) and its per-view classifier (``head``), shared by a group of views."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features, view logits)`` of ``(N, C, *spatial)``."""
        features = self.encoder(x)
        return features, self.head(features)


class GatedAttentionPooling(nn.Module):
    """Masked gated-attention pooling of view features (Ilse et al. 2018).

    Hand-written because MONAI's attention MIL (:class:`monai.networks.nets.MILModel`) is tied to its own backbone
    and has no mask: here missing views get zero weight, exactly.

    Args:
        in_features: feature size ``F``.
        hidden: attention hidden size.
    """

    def __init__(self, in_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.value = nn.Linear(in_features, hidden)
        self.gate = nn.Linear(in_features, hidden)
        self.score = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, presence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``(B, V, F)`` over the present views.

        Returns:
            ``(pooled (B, F), weights (B, V))``; all-zero for a sample with no view.
        """
        scores = self.score(torch.tanh(self.value(features)) * torch.sigmoid(self.gate(features))).squeeze(-1)
        present = presence > 0
        scores = scores.masked_fill(~present, -1e4 if scores.dtype == torch.float16 else -1e30).float()
        weights = torch.softmax(scores, dim=1) * present.to(scores.dtype)
        weights = weights.to(features.dtype)
        return (weights.unsqueeze(-1) * features).sum(1), weights


class _MultiViewNet(nn.Module):
    """Trunks per view group, per-view heads, input handling and encoder access shared by joint and late fusion."""

    # Python-side bookkeeping that forward does not read (TorchScript could not type an empty list of them).
    __jit_ignored_attributes__ = ["views_used", "breast_names", "groups"]

    def __init__(
        self,
        view_names: Sequence[str],
        spatial_dims: int,
        num_classes: int,
        in_channels: int,
        backbone: str,
        backbone_kwargs: Mapping[str, Any] | None,
        width: float,
        share: str | Mapping[str, str],
        breasts: str | Mapping[str, Sequence[str]] | None,
        views_used: Sequence[str] | None,
        view_dropout: float,
        dropout_seed: int | None,
    ) -> None:
        super().__init__()
        where = _where(type(self))
        if not view_names or len(set(view_names)) != len(view_names):
            raise FusionConfigError(f"view_names must be distinct and non-empty, got {list(view_names)}", where)
        self.view_names = [str(v) for v in view_names]
        used = self.view_names if views_used is None else [str(v) for v in views_used]
        unknown = sorted(set(used) - set(self.view_names))
        if unknown or not used:
            raise FusionConfigError(f"views_used must be a non-empty subset of {self.view_names}, got {used}", where)
        used = [v for v in self.view_names if v in used]
        self.views_used = used
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        groups = _resolve_groups(share, used, where)
        self.groups = groups
        kwargs = dict(backbone_kwargs or {})
        self.branches = nn.ModuleDict(
            {
                name: ViewBranch(
                    build_encoder(backbone, self.spatial_dims, self.in_channels, width, **kwargs), num_classes
                )
                for name in groups
            }
        )
        self.num_features = int(next(iter(self.branches.values())).encoder.out_features)
        group_of = torch.full((len(self.view_names),), -1, dtype=torch.long)
        for index, name in enumerate(groups):
            for view in groups[name]:
                group_of[self.view_names.index(view)] = index
        self.register_buffer("view_group", group_of, persistent=False)
        used_mask = torch.tensor([float(v in used) for v in self.view_names])
        self.register_buffer("used_mask", used_mask, persistent=False)
        breast_map = _resolve_breasts(breasts, self.view_names, where)
        self.breast_names = list(breast_map)
        index = [[self.view_names.index(v) for v in vs] for vs in breast_map.values()] or [[0]]
        self.register_buffer("breast_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.has_breasts = bool(breast_map)
        self.view_dropout = ModalityDropout(view_dropout, "none", dropout_seed)

    # ----------------------------------------------------------------------------------------------- encoder access
    def get_encoders(self) -> dict[str, nn.Module]:
        """The trunks for reuse, by group name (``{"CC": ..., "MLO": ...}`` for ``share="projection"``)."""
        return {name: branch.encoder for name, branch in self.branches.items()}

    def encoder_for(self, view: str) -> nn.Module:
        """The trunk that encodes ``view``.

        Raises:
            FusionConfigError: the view is not used by this network.
        """
        for name, views in self.groups.items():
            if view in views:
                return self.branches[name].encoder
        raise FusionConfigError(f"view {view!r} is not encoded by this network ({self.views_used})", _where(type(self)))

    def load_encoder_state(
        self, state: Any, groups: Sequence[str] | None = None, **kwargs: Any
    ) -> dict[str, tuple[list[str], list[str]]]:
        """Load one pretrained encoder state into every trunk (or the named groups).

        Args:
            state: state dict or checkpoint path (read once).
            groups: trunk group names; all when None.
            kwargs: ``strict``, ``strip_prefix``, ``ignore_prefixes``, ``key`` of
                :func:`medssl.networks.load_encoder_state`.

        Returns:
            ``{group: (missing, unexpected)}``.

        Raises:
            FusionConfigError: an unknown group.
        """
        names = list(self.branches) if groups is None else list(groups)
        unknown = [g for g in names if g not in self.branches]
        if unknown:
            raise FusionConfigError(
                f"unknown trunk groups {unknown}; groups are {list(self.branches)}", _where(type(self))
            )
        if not isinstance(state, Mapping):
            state = read_state_dict(state)
        return {g: load_encoder_state(self.branches[g].encoder, state, **kwargs) for g in names}

    # -------------------------------------------------------------------------------------------------- computation
    def _views(
        self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None, where: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            _check_input(x, presence, self.view_names, self.in_channels, self.spatial_dims, where)
        views, present = stack_views(x, presence, self.view_names, self.in_channels, self.spatial_dims)
        present = present * self.used_mask.to(present.dtype).unsqueeze(0)
        _, present = self.view_dropout(present, present)
        return views, present

    def _encode(self, views: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every present view through its group's branch, batched per group.

        Returns:
            ``(features (B, V, F), view_logits (B, V, K))``, zeros for missing views.
        """
        batch, num_views = present.shape[0], present.shape[1]
        flat = views.flatten(0, 1)  # (B*V, C, *spatial), row b*V + v
        flat_present = present.reshape(-1) > 0
        flat_group = self.view_group.repeat(batch)
        rows: list[torch.Tensor] = []
        features: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        group = 0
        for _, branch in self.branches.items():
            selected = torch.nonzero(flat_present & (flat_group == group)).squeeze(1)
            if selected.numel() > 0:
                feature, logit = branch(flat.index_select(0, selected))
                rows.append(selected)
                features.append(feature)
                logits.append(logit)
            group += 1
        dtype = features[0].dtype if len(features) > 0 else views.dtype
        all_features = torch.zeros(batch * num_views, self.num_features, dtype=dtype, device=views.device)
        all_logits = torch.zeros(batch * num_views, self.num_classes, dtype=dtype, device=views.device)
        if len(rows) > 0:
            index = torch.cat(rows)
            all_features = all_features.index_copy(0, index, torch.cat(features).to(dtype))
            all_logits = all_logits.index_copy(0, index, torch.cat(logits).to(dtype))
        return all_features.reshape(batch, num_views, -1), all_logits.reshape(batch, num_views, -1)

    def _breast_gather(self, values: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, V, X)`` -> ``(B, NB, n, X)`` and presence ``(B, NB, n)`` for the breasts' views."""
        nb, per = self.breast_index.shape[0], self.breast_index.shape[1]
        flat_index = self.breast_index.flatten()
        gathered = values.index_select(1, flat_index).reshape(values.shape[0], nb, per, values.shape[2])
        return gathered, present.index_select(1, flat_index).reshape(present.shape[0], nb, per)


class JointFusion(_MultiViewNet):
    """Joint fusion: one trunk per view group, features fused into fully connected heads (Wu et al. 2019).

    Trunk sharing (``share``): ``"none"`` (one trunk per view), ``"all"`` (one trunk for every view), ``"projection"``
    (mammography: L-CC and R-CC share the CC trunk, L-MLO and R-MLO the MLO trunk), or a ``{view: group}`` mapping.
    Each group's trunk also has a per-view head (``view_logits``). Shared trunks are the same ``Parameter`` objects:
    their gradient is the sum of the contributions of the views they encode.

    Fusion (``pooling``): ``"concat"`` - the views' features, zero for a missing view, concatenated with the
    presence mask; ``"attention"`` - masked gated-attention pooling (missing views get weight 0). ``breasts``
    (``"laterality"`` or ``{"L": ["L-CC", "L-MLO"], "R": [...]}``) adds a breast head shared by the breasts:
    concatenated CC+MLO features and presence of one breast -> ``breast_logits``.

    Args:
        view_names: the views in input order.
        spatial_dims: 2 or 3.
        num_classes: classes of every head.
        in_channels: channels per view.
        backbone: encoder name (:data:`medssl.networks.backbones.ENCODER_NAMES`).
        backbone_kwargs: arguments of the MONAI network.
        width: base-width multiplier of the trunks.
        share: trunk sharing, see above.
        pooling: ``"concat"`` or ``"attention"``.
        breasts: breast grouping, see above; None for no breast head (MR).
        head_hidden: hidden sizes of the exam and breast heads.
        head_dropout: dropout in those heads.
        attention_hidden: hidden size of the attention pooling.
        view_dropout: in training, drop each present view with this probability (never all of a sample's views).
        dropout_seed: seed of the view-dropout draws.
    """

    def __init__(
        self,
        view_names: Sequence[str],
        spatial_dims: int,
        num_classes: int = 1,
        in_channels: int = 1,
        backbone: str = "resnet18",
        backbone_kwargs: Mapping[str, Any] | None = None,
        width: float = 1.0,
        share: str | Mapping[str, str] = "none",
        pooling: str = "concat",
        breasts: str | Mapping[str, Sequence[str]] | None = None,
        head_hidden: Sequence[int] | int = (),
        head_dropout: float = 0.0,
        attention_hidden: int = 64,
        view_dropout: float = 0.0,
        dropout_seed: int | None = None,
    ) -> None:
        super().__init__(
            view_names,
            spatial_dims,
            num_classes,
            in_channels,
            backbone,
            backbone_kwargs,
            width,
            share,
            breasts,
            views_used=None,
            view_dropout=view_dropout,
            dropout_seed=dropout_seed,
        )
        if pooling not in ("concat", "attention"):
            raise FusionConfigError(f"pooling must be 'concat' or 'attention', got {pooling!r}", _where(type(self)))
        self.pooling = pooling
        num_views, features = len(self.view_names), self.num_features
        self.attention = None
        if pooling == "attention":
            self.attention = GatedAttentionPooling(features, attention_hidden)
            self.head = _head(features, num_classes, head_hidden, head_dropout)
        else:
            self.head = _head(num_views * (features + 1), num_classes, head_hidden, head_dropout)
        self.breast_head = None
        if self.has_breasts:
            per = int(self.breast_index.shape[1])
            self.breast_head = _head(per * (features + 1), num_classes, head_hidden, head_dropout)

    def forward(
        self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode the present views and fuse them.

        Args:
            x: a view-keyed dict, ``(B, V*C, *spatial)`` or ``(B, V, C, *spatial)``.
            presence: ``(B, V)`` or None.

        Returns:
            ``logits``, ``view_logits``, ``presence`` (+ ``attention``, ``breast_logits``, ``breast_presence``).
        """
        views, present = self._views(x, presence, "JointFusion input")
        features, view_logits = self._encode(views, present)
        present = present.to(features.dtype)
        out: dict[str, torch.Tensor] = {"view_logits": view_logits, "presence": present}
        if self.attention is not None:
            pooled, weights = self.attention(features, present)
            logits = self.head(pooled)
            out["attention"] = weights
        else:
            logits = self.head(torch.cat([features.flatten(1), present], 1))
        any_present = present.sum(1, keepdim=True) > 0
        out["logits"] = torch.where(any_present, logits, torch.full_like(logits, math.nan))
        if self.breast_head is not None:
            breast_features, breast_present = self._breast_gather(features, present)
            head_input = torch.cat([breast_features.flatten(2), breast_present], 2)
            breast_logits = self.breast_head(head_input.flatten(0, 1)).reshape(present.shape[0], -1, self.num_classes)
            has_breast = breast_present.amax(2)
            out["breast_logits"] = breast_logits * has_breast.unsqueeze(-1)
            out["breast_presence"] = has_breast
        return out


class LateFusion(_MultiViewNet):
    """Late fusion: one model per view (or one shared per-view model), probabilities averaged over present views.

    Each view's model is a trunk with a linear head (``share`` as in :class:`JointFusion`: ``"none"`` for one model
    per view, ``"all"`` for one model applied to each view). Fused probability = :func:`masked_mean_ensemble` of the
    per-view probabilities over the present views, weighted by ``view_weights``; in eval mode it first averages each
    view's probabilities over test-time flips (``tta_flips``, the plain mean of :class:`monai.transforms.MeanEnsemble`
    since every augmentation of a present view exists). ``views_used`` restricts the model to some views (the
    single-view baselines: ``["L-CC"]``, or ``["L-CC", "R-CC"]`` with ``share="all"`` for a CC-only model).

    Train it on ``view_logits`` (each present view against the exam's or its breast's label); the fused ``logits``
    are the log-odds (sigmoid) or log-probabilities (softmax) of ``probs``.

    Args:
        view_names: the views in input order.
        spatial_dims: 2 or 3.
        num_classes: classes.
        in_channels: channels per view.
        backbone: encoder name.
        backbone_kwargs: arguments of the MONAI network.
        width: base-width multiplier of the trunks.
        share: ``"none"``, ``"all"``, ``"projection"`` or a ``{view: group}`` mapping.
        activation: ``"sigmoid"`` (binary/multi-label) or ``"softmax"`` (multi-class).
        view_weights: per-view weights (list in ``view_names`` order or ``{view: weight}``); equal when None.
        tta_flips: test-time flips, each a list of spatial axes (``[[1]]`` flips W of a 2D image); the identity is
            always included.
        breasts: ``"laterality"`` or a mapping, for ``breast_probs``/``breast_logits`` (means within each breast).
        views_used: the views this model looks at; others are treated as missing and never computed.
        view_dropout: in training, drop each present view with this probability (never all).
        dropout_seed: seed of the view-dropout draws.
    """

    def __init__(
        self,
        view_names: Sequence[str],
        spatial_dims: int,
        num_classes: int = 1,
        in_channels: int = 1,
        backbone: str = "resnet18",
        backbone_kwargs: Mapping[str, Any] | None = None,
        width: float = 1.0,
        share: str | Mapping[str, str] = "none",
        activation: str = "sigmoid",
        view_weights: Sequence[float] | Mapping[str, float] | None = None,
        tta_flips: Sequence[Sequence[int]] = (),
        breasts: str | Mapping[str, Sequence[str]] | None = None,
        views_used: Sequence[str] | None = None,
        view_dropout: float = 0.0,
        dropout_seed: int | None = None,
    ) -> None:
        super().__init__(
            view_names,
            spatial_dims,
            num_classes,
            in_channels,
            backbone,
            backbone_kwargs,
            width,
            share,
            breasts,
            views_used=views_used,
            view_dropout=view_dropout,
            dropout_seed=dropout_seed,
        )
        where = _where(type(self))
        if activation not in ("sigmoid", "softmax"):
            raise FusionConfigError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}", where)
        self.softmax = activation == "softmax"
        if view_weights is None:
            weights = [1.0] * len(self.view_names)
        elif isinstance(view_weights, Mapping):
            unknown = sorted(set(view_weights) - set(self.view_names))
            if unknown:
                raise FusionConfigError(f"view_weights names unknown views {unknown}", where)
            weights = [float(view_weights.get(v, 1.0)) for v in self.view_names]
        else:
            weights = [float(w) for w in view_weights]
        if len(weights) != len(self.view_names) or min(weights) < 0 or sum(weights) <= 0:
            raise FusionConfigError(
                f"view_weights must be {len(self.view_names)} non-negative numbers, got {weights}", where
            )
        self.register_buffer("view_weights", torch.tensor(weights), persistent=False)
        flips: list[list[int]] = []
        for axes in tta_flips:
            axes = [int(a) for a in axes]
            if not axes or any(a < 0 or a >= self.spatial_dims for a in axes):
                raise FusionConfigError(f"tta_flips axes must be in [0, {self.spatial_dims}), got {axes}", where)
            flips.append([a + 3 for a in axes])  # axes of (B, V, C, *spatial)
        self.num_tta = len(flips)
        # TorchScript cannot type an empty list attribute: without flips a placeholder that is never read.
        self.tta_flips = flips if flips else [[3]]

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, -1) if self.softmax else torch.sigmoid(logits)

    def _logits(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.log(probs.clamp_min(1e-12)) if self.softmax else torch.logit(probs, eps=1e-6)

    def forward(
        self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Predict each present view, then average the probabilities over the present views.

        Args:
            x: a view-keyed dict, ``(B, V*C, *spatial)`` or ``(B, V, C, *spatial)``.
            presence: ``(B, V)`` or None.

        Returns:
            ``logits``, ``probs``, ``view_logits``, ``view_probs``, ``presence`` (+ ``breast_probs``,
            ``breast_logits``, ``breast_presence``).
        """
        views, present = self._views(x, presence, "LateFusion input")
        _, view_logits = self._encode(views, present)
        present = present.to(view_logits.dtype)
        mask = present.unsqueeze(-1)
        view_probs = self._probabilities(view_logits)
        if not self.training and self.num_tta > 0:
            total = view_probs
            for axes in self.tta_flips:
                _, flipped_logits = self._encode(torch.flip(views, axes), present)
                total = total + self._probabilities(flipped_logits)
            view_probs = total / float(self.num_tta + 1)
        view_probs = view_probs * mask
        probs = masked_mean_ensemble(view_probs, present, self.view_weights)
        out: dict[str, torch.Tensor] = {
            "logits": self._logits(probs),
            "probs": probs,
            "view_logits": view_logits,
            "view_probs": view_probs,
            "presence": present,
        }
        if self.has_breasts:
            breast_values, breast_present = self._breast_gather(view_probs, present)
            weights = self.view_weights.index_select(0, self.breast_index.flatten()).reshape(self.breast_index.shape)
            breast_probs = masked_mean_ensemble(breast_values, breast_present, weights.unsqueeze(0), dim=2)
            has_breast = ((breast_present * weights.unsqueeze(0)).sum(2) > 0).to(present.dtype)
            breast_probs = torch.nan_to_num(breast_probs, nan=0.0) * has_breast.unsqueeze(-1)
            out["breast_probs"] = breast_probs
            out["breast_logits"] = self._logits(breast_probs) * has_breast.unsqueeze(-1)
            out["breast_presence"] = has_breast
        return out


# --------------------------------------------------------------------------------------------------------- wrappers
class DictOutput(nn.Module):
    """Wrap a tensor-returning network (early fusion) so that it returns ``{key: output}`` like joint/late fusion.

    Args:
        network: the network; called as ``network(x, presence)``.
        key: the output's key.
    """

    def __init__(self, network: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.network = network
        self.key = key

    def forward(
        self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Return ``{key: network(x, presence)}``."""
        return {self.key: self.network(x, presence)}


class SelectOutput(nn.Module):
    """Wrap a dict-returning network (joint/late fusion) so that it returns one tensor (for tensor-only consumers).

    Args:
        network: the network; called as ``network(x, presence)``.
        key: the output to return (``"logits"``, ``"probs"``, ``"breast_logits"`` ...).
    """

    def __init__(self, network: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.network = network
        self.key = key

    def forward(self, x: dict[str, torch.Tensor] | torch.Tensor, presence: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``network(x, presence)[key]``."""
        return self.network(x, presence)[self.key]


# ----------------------------------------------------------------------------------------------------- equal budget
def fit_width(factory: Callable[[float], nn.Module], param_budget: int, low: float = 1 / 64, steps: int = 12) -> float:
    """The largest width whose model has at most ``param_budget`` parameters.

    Parameter counts grow with width (in steps, because channel counts are rounded): the width is doubled from
    ``low`` until the budget is exceeded, then bisected. Every model tried has at most about four times the budget
    (parameters grow about quadratically with width); they are built on the CPU for budgets up to 10 million
    parameters and on the meta device (no memory, but slower to build) above.

    Args:
        factory: builds the model at a given width.
        param_budget: the maximum number of parameters.
        low: smallest width tried (doubled while the model cannot be built, a layer having no channels).
        steps: bisection steps.

    Returns:
        The width.

    Raises:
        FusionConfigError: even the narrowest buildable model exceeds the budget.
    """
    device = torch.device("cpu") if param_budget <= 10_000_000 else torch.device("meta")

    def count(width: float) -> float:
        try:
            with torch.device(device), torch.no_grad():
                return count_parameters(factory(width))
        except MedsslError:  # too narrow (or too wide) to build
            return math.inf

    low_count = count(low)
    while low_count == math.inf and low < 64:
        low *= 2
        low_count = count(low)
    if low_count > param_budget:
        raise FusionConfigError(
            f"the narrowest buildable model (width {low}) has {low_count} parameters, over the budget of "
            f"{param_budget}",
            "fit_width",
        )
    high = low * 2
    while high <= 64 and count(high) <= param_budget:
        low, high = high, high * 2
    for _ in range(steps):
        middle = (low + high) / 2
        if count(middle) <= param_budget:
            low = middle
        else:
            high = middle
    return low


def build_fusion_model(
    strategy: str,
    view_names: Sequence[str],
    spatial_dims: int,
    num_classes: int = 1,
    in_channels: int = 1,
    backbone: str = "resnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    width: float = 1.0,
    param_budget: int | None = None,
    output: str = "native",
    **options: Any,
) -> nn.Module:
    """Build one fusion strategy, optionally fitted to a parameter budget, for strategy comparisons.

    Strategies: ``"early"`` (:class:`EarlyFusion`), ``"joint"`` (:class:`JointFusion`), ``"late"``
    (:class:`LateFusion`), ``"single_view"`` (a :class:`LateFusion` restricted to ``views_used``, default the first
    view, one shared trunk: the baseline that shows what fusion adds).

    Equal budget: with ``param_budget`` set, ``width`` is replaced by the largest width at which the strategy's
    model has at most that many parameters (:func:`fit_width`), so that a four-trunk joint model is not compared
    with a one-trunk early model four times smaller. Parameters are not compute: report FLOPs too
    (:func:`medssl.networks.profile.count_flops`) - a shared trunk has a quarter of the parameters of four trunks
    but the same FLOPs.

    Args:
        strategy: one of :data:`STRATEGIES`.
        view_names: views/modalities in input order.
        spatial_dims: 2 or 3.
        num_classes: classes.
        in_channels: channels per view.
        backbone: backbone name.
        backbone_kwargs: arguments of the MONAI network.
        width: base-width multiplier (ignored when ``param_budget`` is set).
        param_budget: maximum number of parameters, or None.
        output: ``"native"`` (early: tensor; joint/late: dict), ``"dict"`` (every strategy a dict with
            ``logits``) or ``"logits"`` (every strategy a tensor of exam logits).
        options: the strategy's own arguments (``share``, ``pooling``, ``breasts``, ``modality_dropout`` ...).

    Returns:
        The model; ``model.fusion_width`` holds the width used.

    Raises:
        FusionConfigError: unknown strategy or output, or a budget too small.
    """
    if strategy not in STRATEGIES:
        raise FusionConfigError(f"unknown strategy {strategy!r}; known: {list(STRATEGIES)}", "build_fusion_model")
    if output not in ("native", "dict", "logits"):
        raise FusionConfigError(f"output must be 'native', 'dict' or 'logits', got {output!r}", "build_fusion_model")
    options = dict(options)
    if strategy == "single_view":
        options.setdefault("views_used", [view_names[0]])
        options.setdefault("share", "all")
    cls = {"early": EarlyFusion, "joint": JointFusion, "late": LateFusion, "single_view": LateFusion}[strategy]

    def factory(w: float) -> nn.Module:
        return cls(
            view_names=view_names,
            spatial_dims=spatial_dims,
            num_classes=num_classes,
            in_channels=in_channels,
            backbone=backbone,
            backbone_kwargs=backbone_kwargs,
            width=w,
            **options,
        )

    if param_budget is not None:
        width = fit_width(factory, int(param_budget))
    model = factory(width)
    if output == "dict" and strategy == "early":
        model = DictOutput(model)
    elif output == "logits" and strategy != "early":
        model = SelectOutput(model)
    model.fusion_width = float(width)
    return model
