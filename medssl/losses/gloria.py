"""GLoRIA's global and local image-report losses (Huang et al. 2021), the local one batched and memory-bounded.

Local loss, for caption ``i`` with real words ``w_l`` (``l = 1..L_i``) and image ``j`` with regions ``v_n``
(``n = 1..N``, ``N = H x W``), all ``D``-dimensional, as in GLoRIA's ``local_loss`` and ``attention_fn``::

    S_nl  = v_n . w_l                                   attention scores, (N, L_i)
    p_nl  = softmax_l(S_nl)                             per region, over the caption's real words
    a_ln  = softmax_n(temp1 * p_nl)                     per word, over the regions
    c_l   = sum_n a_ln v_n                              attended image context of word l
    r_ij  = log sum_l exp(temp2 * cos(w_l, c_l))        with cos(x, y) = x . y / max(|x| |y|, 1e-8)
    image_to_text = CE(temp3 * r, arange(B)),  text_to_image = CE(temp3 * r^T, arange(B))

with ``r[j, i]`` for image ``j`` (rows) and caption ``i`` (columns).

The batched formulation never builds ``c_l``:

* the numerator of the cosine reuses the scores: ``w_l . c_l = sum_n a_ln (v_n . w_l) = sum_n a_ln S_nl``;
* its norm uses the image's Gram matrix ``G = V^T V`` (``N x N``, computed once per image):
  ``|c_l|^2 = a_l^T G a_l``, which costs ``N^2`` per word instead of ``N D`` (``N = 361 < D = 768``);
* the scores of a tile of images x captions are one GEMM ``(n_img N, D) @ (D, n_cap L)``;
* :class:`_LocalSimilarity` is a custom autograd function that saves only its inputs and, in backward, recomputes
  each tile and accumulates ``dV`` and ``dW`` (and ``dG``, turned into ``dV += 2 dG V`` once per image), so the
  working memory depends on the tile size, not on ``B^2``.

Captions are first compacted (real words first, padding zeroed) and sorted by length so that each tile is trimmed
to its longest caption: padding costs (almost) nothing and contributes nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medssl.losses._common import ContrastiveLossBase, LossInputError, check_embeddings, cosine_logits

__all__ = [
    "gloria_global_loss",
    "gloria_local_loss",
    "gloria_local_similarity",
    "gloria_attention_maps",
    "GloriaLoss",
    "DEFAULT_TILE_ELEMENTS",
]

#: Pair x region x word entries of one tile when ``chunk_size`` is not given (each float32 tile tensor is 4 bytes
#: per entry; backward holds about eight of them).
DEFAULT_TILE_ELEMENTS = 1 << 21

_COS_EPS = 1e-8  # GLoRIA's ``cosine_similarity`` clamp of |x| |y|


def gloria_global_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's global loss: cross-entropy of cosine similarities / temperature, both ways.

    Args:
        image_emb: ``(B, F)`` global image embeddings.
        text_emb: ``(B, F)`` global report embeddings (row ``i`` pairs with image ``i``).
        temperature: similarities are divided by it (GLoRIA's ``temp3 = 10`` is ``temperature = 0.1``).

    Returns:
        ``(image_to_text, text_to_image)``, each a mean cross-entropy; GLoRIA's training loss adds them.

    Raises:
        LossInputError: if the shapes differ or the temperature is not positive.
    """
    check_embeddings("image_emb", image_emb, "text_emb", text_emb)
    if not float(temperature) > 0:
        raise LossInputError(f"temperature must be positive, got {temperature}")
    logits = cosine_logits(image_emb, text_emb) / float(temperature)
    labels = torch.arange(image_emb.shape[0], device=image_emb.device)
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)


# ----------------------------------------------------------------------------------------------------------------
# Input preparation
# ----------------------------------------------------------------------------------------------------------------


def _check_local_inputs(regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> None:
    if regions.dim() not in (3, 4) or regions.shape[0] == 0:
        raise LossInputError(f"regions must be (B, D, H, W) or (B, D, N), got shape {tuple(regions.shape)}")
    if words.dim() != 3 or words.shape[0] == 0 or words.shape[2] == 0:
        raise LossInputError(f"words must be (B, D, L), got shape {tuple(words.shape)}")
    if regions.shape[1] != words.shape[1]:
        raise LossInputError(
            f"regions {tuple(regions.shape)} and words {tuple(words.shape)} must share the feature size D (dim 1)"
        )
    if tuple(word_mask.shape) != (words.shape[0], words.shape[2]):
        raise LossInputError(
            f"word_mask must be (B, L) = {(words.shape[0], words.shape[2])} like words, got {tuple(word_mask.shape)}"
        )


def _prepare_words(words: torch.Tensor, word_mask: torch.Tensor):
    """Compact the real words of every caption to the front, zero the padding, sort captions by length.

    Args:
        words: ``(B, D, L)``.
        word_mask: ``(B, L)``, true for real words.

    Returns:
        ``(rows, mask, lengths, inverse)``: ``rows`` ``(B, L', D)`` (captions longest first, ``L'`` the longest
        caption), its mask, the lengths as a list, and the permutation that puts sorted captions back in order.

    Raises:
        LossInputError: if a caption has no real word.
    """
    mask = word_mask.to(device=words.device, dtype=torch.bool)
    lengths = mask.sum(dim=1)
    empty = torch.nonzero(lengths == 0).flatten().tolist()
    if empty:
        raise LossInputError(f"word_mask marks no real word in caption(s) {empty}; every caption needs at least one")
    # The loss is symmetric in the words of a caption, so moving real words to the front changes nothing.
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    perm = torch.argsort(lengths, descending=True, stable=True)
    inverse = torch.argsort(perm)
    lengths_sorted = lengths[perm].tolist()
    longest = lengths_sorted[0]
    order = order[perm, :longest]
    rows = words.transpose(1, 2)[perm].gather(1, order.unsqueeze(-1).expand(-1, -1, words.shape[1]))
    mask_sorted = torch.arange(longest, device=words.device) < lengths[perm].unsqueeze(1)
    rows = (rows * mask_sorted.unsqueeze(-1).to(rows.dtype)).contiguous()  # padding -> exact zeros, zero gradient
    return rows, mask_sorted, lengths_sorted, inverse


def _auto_chunk(n_regions: int, n_words: int, tile_elements: int = DEFAULT_TILE_ELEMENTS) -> int:
    return max(1, int(math.sqrt(tile_elements / max(1, n_regions * n_words))))


# ----------------------------------------------------------------------------------------------------------------
# The tiled computation
# ----------------------------------------------------------------------------------------------------------------


def _tile_forward(vt, gram, wt, wn, mask, padded, temp1, temp2):
    """One tile: images ``vt`` ``(J, N, D)`` (Gram ``(J, N, N)``) x captions ``wt`` ``(I, L, D)``.

    Returns the local similarities ``(J, I)`` and the intermediate tensors that backward needs.
    """
    n_img, n_reg, dim = vt.shape
    n_cap, n_words, _ = wt.shape
    scores = torch.mm(vt.view(n_img * n_reg, dim), wt.view(n_cap * n_words, dim).t()).view(n_img, n_reg, n_cap, n_words)
    if padded:  # -inf on padding words: one pass instead of masked_fill's copy + fill
        bias = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~mask, float("-inf"))
        word_probs = torch.softmax(scores + bias.view(1, 1, n_cap, n_words), dim=-1)
    else:
        word_probs = scores.softmax(dim=-1)
    attn = torch.softmax(word_probs * temp1, dim=1)  # over regions
    numerator = torch.linalg.vecdot(attn, scores, dim=1)  # w_l . c_l, (J, I, L)
    gram_attn = torch.bmm(gram, attn.view(n_img, n_reg, n_cap * n_words)).view(n_img, n_reg, n_cap, n_words)
    context_sq = torch.linalg.vecdot(attn, gram_attn, dim=1)  # |c_l|^2
    context_norm = context_sq.clamp_min(0).sqrt()
    norm_product = wn.unsqueeze(0) * context_norm
    denominator = norm_product.clamp_min(_COS_EPS)
    cosine = numerator / denominator
    logits = cosine * temp2
    if padded:
        logits = logits.masked_fill(~mask.unsqueeze(0), float("-inf"))
    row_sim = torch.logsumexp(logits, dim=-1)
    cache = (scores, word_probs, attn, gram_attn, context_norm, norm_product, denominator, cosine, logits, row_sim)
    return row_sim, cache


def _tile_backward(grad, vt, wt, wn, cache, temp1, temp2, need_regions=True, need_words=True):
    """Gradients of one tile: returns ``(d vt, d wt, d |w|, d gram)`` (``None`` for those not needed)."""
    scores, word_probs, attn, gram_attn, context_norm, norm_product, denominator, cosine, logits, row_sim = cache
    n_img, n_reg, dim = vt.shape
    n_cap, n_words, _ = wt.shape
    # log-sum-exp -> cosine (padding words have weight exp(-inf) = 0, so every gradient below is 0 there)
    grad_cos = torch.exp(logits - row_sim.unsqueeze(-1)).mul_(grad.unsqueeze(-1) * temp2)
    grad_num = grad_cos / denominator
    active = norm_product > _COS_EPS  # the clamp passes no gradient to |w| |c| below eps
    grad_prod = torch.where(active, -grad_cos * cosine / denominator, 0.0)
    grad_wn = (grad_prod * context_norm).sum(dim=0) if need_words else None
    # d|c|^2 = d|c| / (2 |c|); |c| > 0 wherever the gradient is not zero
    grad_csq = grad_prod * wn.unsqueeze(0) / (2.0 * context_norm).clamp_min(torch.finfo(context_norm.dtype).tiny)
    # |c|^2 = a^T G a  ->  dG += a diag(g) a^T, da += 2 G a g
    attn_flat = attn.view(n_img, n_reg, n_cap * n_words)
    grad_gram = None
    if need_regions:
        grad_gram = torch.bmm(attn_flat * grad_csq.view(n_img, 1, -1), attn_flat.transpose(1, 2))
    # d a (scaled by temp1 here, on small tensors, rather than on the tile below): 2 G a g + S d(numerator)
    grad_attn = gram_attn.mul_((2.0 * temp1) * grad_csq.unsqueeze(1))  # gram_attn is not needed any more
    grad_attn.addcmul_(scores, (temp1 * grad_num).unsqueeze(1))  # numerator = sum_n a S
    # softmax over regions of temp1 p: dp = temp1 * a * (g - sum_n a g)
    grad_probs = grad_attn.sub_(torch.linalg.vecdot(attn, grad_attn, dim=1).unsqueeze(1)).mul_(attn)
    # softmax over words: dS = p * (g - sum_l p g); plus the numerator's direct term a * d(numerator)
    grad_scores = grad_probs.sub_((word_probs * grad_probs).sum(dim=-1, keepdim=True)).mul_(word_probs)
    grad_scores.addcmul_(attn, grad_num.unsqueeze(1))
    grad_scores = grad_scores.view(n_img * n_reg, n_cap * n_words)
    grad_vt = grad_wt = None
    if need_regions:
        grad_vt = torch.mm(grad_scores, wt.view(n_cap * n_words, dim)).view(n_img, n_reg, dim)
    if need_words:
        grad_wt = torch.mm(grad_scores.t(), vt.view(n_img * n_reg, dim)).view(n_cap, n_words, dim)
    return grad_vt, grad_wt, grad_wn, grad_gram


def _chunks(total: int, size: int):
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


class _LocalSimilarity(torch.autograd.Function):
    """``r[j, i]`` of all images x captions, tile by tile, recomputing each tile in backward.

    Inputs: regions ``(Bi, D, N)`` (any layout; each image chunk is copied to rows ``(J, N, D)`` only while it is
    used, so nothing of size ``Bi x N x D`` is added to the inputs and their gradients), word rows ``(Bc, L, D)``
    (real words first, padding zero, captions sorted by length, longest first), their mask ``(Bc, L)``, the lengths
    (list), ``temp1``, ``temp2``, the image and caption chunk sizes. Under CUDA autocast it runs in float32 (forward
    and the recomputation in backward alike).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, regions, wt, mask, lengths, temp1, temp2, image_chunk, caption_chunk):  # noqa: D102
        ctx.save_for_backward(regions, wt, mask)
        ctx.lengths, ctx.temps, ctx.chunks = lengths, (temp1, temp2), (image_chunk, caption_chunk)
        wn = torch.linalg.vector_norm(wt, dim=-1)
        out = regions.new_empty(regions.shape[0], wt.shape[0])
        for img in _chunks(regions.shape[0], image_chunk):
            vt_j = regions[img].transpose(1, 2).contiguous()
            gram = torch.bmm(vt_j, vt_j.transpose(1, 2))
            for cap in _chunks(wt.shape[0], caption_chunk):
                n_words = lengths[cap.start]
                padded = lengths[cap.stop - 1] < n_words
                wt_i = wt[cap, :n_words].contiguous()
                row_sim, _ = _tile_forward(
                    vt_j, gram, wt_i, wn[cap, :n_words], mask[cap, :n_words], padded, temp1, temp2
                )
                out[img, cap] = row_sim
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        regions, wt, mask = ctx.saved_tensors
        lengths, (temp1, temp2), (image_chunk, caption_chunk) = ctx.lengths, ctx.temps, ctx.chunks
        need_regions, need_words = ctx.needs_input_grad[:2]
        wn = torch.linalg.vector_norm(wt, dim=-1)
        grad_regions = torch.empty_like(regions) if need_regions else None
        grad_wt = torch.zeros_like(wt) if need_words else None
        grad_wn = torch.zeros_like(wn) if need_words else None
        for img in _chunks(regions.shape[0], image_chunk):
            vt_j = regions[img].transpose(1, 2).contiguous()
            gram = torch.bmm(vt_j, vt_j.transpose(1, 2))
            grad_gram = torch.zeros_like(gram) if need_regions else None
            grad_vt = torch.zeros_like(vt_j) if need_regions else None
            for cap in _chunks(wt.shape[0], caption_chunk):
                n_words = lengths[cap.start]
                padded = lengths[cap.stop - 1] < n_words
                wt_i, wn_i = wt[cap, :n_words].contiguous(), wn[cap, :n_words]
                _, cache = _tile_forward(vt_j, gram, wt_i, wn_i, mask[cap, :n_words], padded, temp1, temp2)
                g_vt, g_wt, g_wn, g_gram = _tile_backward(
                    grad_out[img, cap], vt_j, wt_i, wn_i, cache, temp1, temp2, need_regions, need_words
                )
                del cache
                if need_regions:
                    grad_vt += g_vt
                    grad_gram += g_gram
                if need_words:
                    grad_wt[cap, :n_words] += g_wt
                    grad_wn[cap, :n_words] += g_wn
            if need_regions:
                grad_vt.baddbmm_(grad_gram, vt_j, alpha=2.0)  # G = V V^T and dG is symmetric
                grad_regions[img] = grad_vt.transpose(1, 2)
        if need_words:  # |w| -> w (zero-norm words are padding, whose gradient is 0)
            grad_wt += wt * (grad_wn / wn.clamp_min(torch.finfo(wn.dtype).tiny)).unsqueeze(-1)
        return grad_regions, grad_wt, None, None, None, None, None, None


def gloria_local_similarity(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
    chunk_size: int | None = None,
    image_chunk_size: int | None = None,
) -> torch.Tensor:
    """GLoRIA's word-region similarity ``r[j, i]`` of every image ``j`` with every caption ``i`` (before ``temp3``).

    Usable for retrieval and zero-shot classification as well as inside :func:`gloria_local_loss`.

    Args:
        regions: ``(B_img, D, H, W)`` (or ``(B_img, D, N)``) region features.
        words: ``(B_cap, D, L)`` word features.
        word_mask: ``(B_cap, L)`` boolean, true for real words (anywhere in the caption); padding contributes nothing.
        temp1: sharpness of the attention over regions.
        temp2: sharpness of the aggregation over words.
        chunk_size: captions per tile (``None``: chosen so that a tile has about ``DEFAULT_TILE_ELEMENTS`` entries).
        image_chunk_size: images per tile (``None``: ``chunk_size``).

    Returns:
        ``(B_img, B_cap)`` similarities.

    Raises:
        LossInputError: on shapes that do not fit or a caption without real words.
    """
    _check_local_inputs(regions, words, word_mask)
    flat = regions.flatten(2)  # (B, D, N), a view of contiguous regions
    wt, mask, lengths, inverse = _prepare_words(words, word_mask)
    if chunk_size is None:
        chunk_size = _auto_chunk(flat.shape[2], wt.shape[1])
    if int(chunk_size) < 1 or (image_chunk_size is not None and int(image_chunk_size) < 1):
        raise LossInputError(f"chunk sizes must be positive, got {chunk_size} and {image_chunk_size}")
    image_chunk = int(image_chunk_size) if image_chunk_size is not None else int(chunk_size)
    sims = _LocalSimilarity.apply(flat, wt, mask, lengths, float(temp1), float(temp2), image_chunk, int(chunk_size))
    return sims.index_select(1, inverse)


def gloria_local_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
    temp3: float = 10.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's local (word-region attention) loss, batched, with the semantics of the original ``local_loss``.

    Args:
        regions: ``(B, D, H, W)`` region features of the images.
        words: ``(B, D, L)`` word features of the paired reports.
        word_mask: ``(B, L)`` boolean, true for real words; padding enters neither softmax nor the sum over words.
        temp1: attention sharpness over regions.
        temp2: aggregation sharpness over words.
        temp3: scale of the similarities in the cross-entropy.
        chunk_size: captions (and images) per tile; bounds memory, never changes the result.

    Returns:
        ``(image_to_text, text_to_image)`` mean cross-entropies; GLoRIA's training loss adds them.

    Raises:
        LossInputError: on shapes that do not fit or a caption without real words.

    Example:
        >>> import torch
        >>> regions, words = torch.randn(4, 16, 5, 5), torch.randn(4, 16, 7)
        >>> mask = torch.arange(7) < torch.tensor([[7], [3], [5], [1]])
        >>> image_to_text, text_to_image = gloria_local_loss(regions, words, mask)
    """
    if regions.shape[0] != words.shape[0]:
        raise LossInputError(f"regions ({regions.shape[0]}) and words ({words.shape[0]}) must have the same batch size")
    sims = gloria_local_similarity(regions, words, word_mask, temp1, temp2, chunk_size) * float(temp3)
    labels = torch.arange(sims.shape[0], device=sims.device)
    return F.cross_entropy(sims, labels), F.cross_entropy(sims.t(), labels)


def gloria_attention_maps(
    regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, temp1: float = 4.0
) -> torch.Tensor:
    """Word-to-region attention of each image with its own report (GLoRIA's ``att_maps``), for display.

    Args:
        regions: ``(B, D, H, W)`` region features.
        words: ``(B, D, L)`` word features of the paired reports.
        word_mask: ``(B, L)`` boolean, true for real words.
        temp1: attention sharpness over regions.

    Returns:
        ``(B, L, H, W)`` attention of each word over the regions (sums to 1 over ``H, W``); zero for padding.

    Raises:
        LossInputError: on shapes that do not fit.
    """
    _check_local_inputs(regions, words, word_mask)
    if regions.dim() != 4 or regions.shape[0] != words.shape[0]:
        raise LossInputError(
            f"regions must be (B, D, H, W) with the batch of words, got {tuple(regions.shape)} and {tuple(words.shape)}"
        )
    mask = word_mask.to(device=words.device, dtype=torch.bool)
    scores = torch.bmm(regions.flatten(2).transpose(1, 2), words)  # (B, N, L)
    probs = scores.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(dim=-1).nan_to_num(0.0)
    attn = torch.softmax(probs * float(temp1), dim=1).transpose(1, 2) * mask.unsqueeze(-1)
    return attn.reshape(words.shape[0], words.shape[2], *regions.shape[2:])


class GloriaLoss(ContrastiveLossBase):
    """GLoRIA's training loss: ``global_weight * (global both ways) + local_weight * (local both ways)``.

    Under DDP the global embeddings, region and word features of all ranks are gathered, so both losses see the
    global batch; ``local_loss=True`` computes only this rank's images and captions against everything (for the
    local loss: ``B_local x B_global + B_global x B_local`` pairs instead of ``B_global^2``). Gradients follow the
    scheme of :class:`medssl.losses.ConVIRTLoss`.

    Args:
        global_weight: weight of the global loss (0 skips it).
        local_weight: weight of the local loss (0 skips it).
        temperature: temperature of the global loss (GLoRIA: 0.1).
        temp1: local attention sharpness over regions.
        temp2: local aggregation sharpness over words.
        temp3: logit scale of the local similarities.
        chunk_size: tile size of the local loss (``None``: automatic).
        learnable_temperature: learn the global logit scale ``1 / temperature`` and the local one ``temp3`` (both
            clamped to ``[1, max_logit_scale]``).
        max_logit_scale: upper clamp of learnable scales.
        local_loss: distributed: compute only this rank's rows.
        gather_with_grad: distributed: gather with gradients (exact) or without.
        rank: explicit rank (``None``: from ``torch.distributed``).
        world_size: explicit world size (``None``: from ``torch.distributed``).
        output_dict: return a dict of the total and the four terms instead of the scalar.

    Example:
        ``{"_target_": "medssl.losses.GloriaLoss", "local_weight": 1.0, "global_weight": 1.0, "chunk_size": 8}``.
    """

    def __init__(
        self,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        temperature: float = 0.1,
        temp1: float = 4.0,
        temp2: float = 5.0,
        temp3: float = 10.0,
        chunk_size: int | None = None,
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
        self.global_weight, self.local_weight = float(global_weight), float(local_weight)
        self.temp1, self.temp2 = float(temp1), float(temp2)
        if not float(temp3) > 0:
            raise LossInputError(f"temp3 must be positive, got {temp3}")
        self._check_temperature("1 / temp3", 1.0 / float(temp3))  # same clamp as the global scale
        self.temp3 = float(temp3)
        self.chunk_size = chunk_size
        self.output_dict = bool(output_dict)
        if self.learnable_temperature:
            self.local_logit_scale = torch.nn.Parameter(torch.tensor(math.log(self.temp3)))
            # no parameter for a term that is skipped (DDP rejects parameters that never get a gradient)
            if not self.global_weight:
                del self.logit_scale
            if not self.local_weight:
                del self.local_logit_scale

    def local_scale(self) -> torch.Tensor | float:
        """Return the current logit scale of the local similarities (``temp3``)."""
        return self._clamped_scale(self.local_logit_scale) if self.learnable_temperature else self.temp3

    def _gather_words(self, words: torch.Tensor, word_mask: torch.Tensor):
        """Pad words and mask to the longest caption length over ranks, then gather both."""
        _, world_size = self.world()
        if world_size > 1:
            length = torch.tensor([words.shape[2]], device=words.device)
            torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
            extra = int(length.item()) - words.shape[2]
            if extra:
                words = F.pad(words, (0, extra))
                word_mask = F.pad(word_mask.bool(), (0, extra), value=False)
        all_words, offset = self.gather(words)
        all_mask, _ = self.gather(word_mask.bool())
        return words, word_mask, all_words, all_mask, offset

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        regions: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Compute GLoRIA's loss of this rank's batch.

        Args:
            image_emb: ``(B, F)`` global image embeddings.
            text_emb: ``(B, F)`` global report embeddings.
            regions: ``(B, D, H, W)`` region features.
            words: ``(B, D, L)`` word features.
            word_mask: ``(B, L)`` boolean, true for real words.

        Returns:
            The scalar loss, or ``{"loss", "global_image_to_text", "global_text_to_image", "local_image_to_text",
            "local_text_to_image"}`` when ``output_dict``.
        """
        check_embeddings("image_emb", image_emb, "text_emb", text_emb)
        _check_local_inputs(regions, words, word_mask)
        if not regions.shape[0] == words.shape[0] == image_emb.shape[0]:
            raise LossInputError(
                f"image_emb ({image_emb.shape[0]}), regions ({regions.shape[0]}) and words ({words.shape[0]}) "
                "must have the same batch size"
            )
        zero = image_emb.new_zeros(())
        terms = {k: zero for k in ("global_image_to_text", "global_text_to_image")}
        terms |= {k: zero for k in ("local_image_to_text", "local_text_to_image")}
        n_local = image_emb.shape[0]
        if self.global_weight:
            scale = self.scale()
            all_images, offset = self.gather(image_emb)
            all_texts, _ = self.gather(text_emb)
            if self.local_loss:
                logits_image = cosine_logits(image_emb, all_texts) * scale
                logits_text = cosine_logits(text_emb, all_images) * scale
                labels = self.labels(n_local, offset, image_emb.device)
            else:
                logits_image = cosine_logits(all_images, all_texts) * scale
                logits_text = logits_image.t()
                labels = self.labels(all_images.shape[0], 0, image_emb.device)
            terms["global_image_to_text"] = F.cross_entropy(logits_image, labels)
            terms["global_text_to_image"] = F.cross_entropy(logits_text, labels)
        if self.local_weight:
            scale = self.local_scale()
            all_regions, offset = self.gather(regions)
            words, word_mask, all_words, all_mask, _ = self._gather_words(words, word_mask)
            sim = gloria_local_similarity
            if self.local_loss:
                # rows of this rank's images against all captions, and all images against this rank's captions
                logits_image = sim(regions, all_words, all_mask, self.temp1, self.temp2, self.chunk_size) * scale
                logits_text = sim(all_regions, words, word_mask, self.temp1, self.temp2, self.chunk_size).t() * scale
                labels = self.labels(n_local, offset, regions.device)
            else:
                logits_image = sim(all_regions, all_words, all_mask, self.temp1, self.temp2, self.chunk_size) * scale
                logits_text = logits_image.t()
                labels = self.labels(all_regions.shape[0], 0, regions.device)
            terms["local_image_to_text"] = F.cross_entropy(logits_image, labels)
            terms["local_text_to_image"] = F.cross_entropy(logits_text, labels)
        loss = self.global_weight * (terms["global_image_to_text"] + terms["global_text_to_image"])
        loss = loss + self.local_weight * (terms["local_image_to_text"] + terms["local_text_to_image"])
        if self.output_dict:
            return {"loss": loss, **terms}
        return loss

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"global_weight={self.global_weight}, local_weight={self.local_weight}, temp1={self.temp1}, "
            f"temp2={self.temp2}, temp3={self.temp3}, chunk_size={self.chunk_size}, " + super().extra_repr()
        )
