"""Image-text contrastive loss of ConVIRT (Zhang et al. 2020), as a function and as a distributed-aware module.

For a batch of ``B`` paired image and text embeddings, with cosine similarities ``s_ij = cos(v_i, u_j)`` and a
temperature ``tau``::

    l_i(v->u) = -log( exp(s_ii / tau) / sum_k exp(s_ik / tau) )
    l_i(u->v) = -log( exp(s_ii / tau) / sum_k exp(s_ki / tau) )
    L = mean_i [ lambda * l_i(v->u) + (1 - lambda) * l_i(u->v) ]

The ``log softmax`` of :func:`torch.nn.functional.cross_entropy` keeps it finite at any temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medssl.losses._common import ContrastiveLossBase, LossInputError, check_embeddings, cosine_logits

__all__ = ["convirt_loss", "ConVIRTLoss"]


def _check_lambda(lambda_weight: float) -> float:
    lambda_weight = float(lambda_weight)
    if not 0.0 <= lambda_weight <= 1.0:
        raise LossInputError(f"lambda_weight must lie in [0, 1], got {lambda_weight}")
    return lambda_weight


def convirt_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1, lambda_weight: float = 0.75
) -> torch.Tensor:
    """ConVIRT's bidirectional InfoNCE loss over cosine similarities, averaged over the batch.

    Args:
        image_emb: ``(B, F)`` image embeddings (row ``i`` pairs with ``text_emb[i]``); need not be normalised.
        text_emb: ``(B, F)`` text embeddings.
        temperature: ``tau``; similarities are divided by it.
        lambda_weight: weight of the image-to-text term; the text-to-image term gets ``1 - lambda_weight``.

    Returns:
        The scalar loss.

    Raises:
        LossInputError: if the shapes differ, the temperature is not positive or ``lambda_weight`` is outside [0, 1].

    Example:
        >>> import torch
        >>> loss = convirt_loss(torch.randn(8, 32), torch.randn(8, 32))
    """
    check_embeddings("image_emb", image_emb, "text_emb", text_emb)
    lambda_weight = _check_lambda(lambda_weight)
    if not float(temperature) > 0:
        raise LossInputError(f"temperature must be positive, got {temperature}")
    logits = cosine_logits(image_emb, text_emb) / float(temperature)
    labels = torch.arange(image_emb.shape[0], device=image_emb.device)
    image_to_text = F.cross_entropy(logits, labels)
    text_to_image = F.cross_entropy(logits.t(), labels)
    return lambda_weight * image_to_text + (1.0 - lambda_weight) * text_to_image


class ConVIRTLoss(ContrastiveLossBase):
    """ConVIRT's loss as a module: optional learnable temperature, negatives from the global batch under DDP.

    In a distributed run the embeddings of all ranks are gathered (:func:`medssl.losses.gather_with_grad`); with
    ``local_loss=False`` every rank computes the full ``(B_global, B_global)`` loss (its value is the single-process
    loss on the global batch), with ``local_loss=True`` a rank computes the rows of its own images (image-to-text)
    and its own texts (text-to-image) against all columns (the mean over ranks is the global loss). Either way the
    gradient of a rank's inputs is ``world_size`` times the single-process gradient of its slice, which DDP's
    gradient averaging turns into the single-process parameter gradient.

    Args:
        temperature: initial temperature ``tau``.
        lambda_weight: weight of the image-to-text term.
        learnable_temperature: learn the logit scale ``1 / tau`` (clamped to ``[1, max_logit_scale]``).
        max_logit_scale: upper clamp of the learnable logit scale.
        local_loss: distributed: compute only this rank's rows (see above).
        gather_with_grad: distributed: gather with gradients (exact) or without (open_clip's approximation).
        rank: explicit rank (``None``: from ``torch.distributed``).
        world_size: explicit world size (``None``: from ``torch.distributed``, 1 when not initialised).
        output_dict: return ``{"loss", "image_to_text", "text_to_image"}`` instead of the scalar.

    Example:
        A config entry: ``{"_target_": "medssl.losses.ConVIRTLoss", "temperature": 0.1, "lambda_weight": 0.75}``.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        lambda_weight: float = 0.75,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        output_dict: bool = False,
    ) -> None:
        super().__init__(
            temperature, learnable_temperature, max_logit_scale, local_loss, gather_with_grad, rank, world_size
        )
        self.lambda_weight = _check_lambda(lambda_weight)
        self.output_dict = bool(output_dict)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Compute the loss of a batch of paired embeddings.

        Args:
            image_emb: ``(B, F)`` image embeddings of this rank.
            text_emb: ``(B, F)`` paired text embeddings.

        Returns:
            The scalar loss, or a dict of it and its two directions when ``output_dict``.
        """
        check_embeddings("image_emb", image_emb, "text_emb", text_emb)
        scale = self.scale()
        all_images, offset = self.gather(image_emb)
        all_texts, _ = self.gather(text_emb)
        if self.local_loss:
            logits_image = cosine_logits(image_emb, all_texts) * scale
            logits_text = cosine_logits(text_emb, all_images) * scale
            labels = self.labels(image_emb.shape[0], offset, image_emb.device)
        else:
            logits_image = cosine_logits(all_images, all_texts) * scale
            logits_text = logits_image.t()
            labels = self.labels(all_images.shape[0], 0, image_emb.device)
        image_to_text = F.cross_entropy(logits_image, labels)
        text_to_image = F.cross_entropy(logits_text, labels)
        loss = self.lambda_weight * image_to_text + (1.0 - self.lambda_weight) * text_to_image
        if self.output_dict:
            return {"loss": loss, "image_to_text": image_to_text, "text_to_image": text_to_image}
        return loss
