"""Cross-modal retrieval metrics (image -> text, text -> image) with bootstrap CIs over queries.

A similarity matrix holds one row per query and one column per gallery item. By default the relevant item of query
``i`` is item ``i`` (paired image and report); a boolean relevance matrix covers the case where several reports are
relevant to an image (same findings, same patient ...).

Ties are broken pessimistically: an irrelevant item scoring *equal* to the best relevant one is ranked before it, so a
collapsed encoder (all similarities equal) scores chance, not perfection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medssl.eval.metrics import Estimate, MetricInputError, bootstrap_ci
from medssl.log import get_logger

__all__ = [
    "cosine_similarity",
    "retrieval_ranks",
    "recall_at_k",
    "precision_at_k",
    "retrieval_metrics",
]

logger = get_logger(__name__)

_CHUNK = 1024  # queries per block when ranking, to bound memory at O(chunk * n_items)


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or 0 in a.shape:
        raise MetricInputError(f"{name} must be a non-empty 2-D matrix, got shape {a.shape}", "retrieval")
    if not np.isfinite(a).all():
        raise MetricInputError(f"{name} holds NaN/inf values", "retrieval")
    return a


def _relevance(similarity: np.ndarray, relevance: Any | None) -> np.ndarray:
    n_q, n_items = similarity.shape
    if relevance is None:
        if n_items < n_q:
            raise MetricInputError(
                f"without a relevance matrix the match of query i is item i, but there are {n_q} queries and only "
                f"{n_items} items",
                "retrieval",
            )
        rel = np.zeros(similarity.shape, dtype=bool)
        rel[np.arange(n_q), np.arange(n_q)] = True
        return rel
    if hasattr(relevance, "detach") and hasattr(relevance, "cpu"):
        relevance = relevance.detach().cpu().numpy()
    rel = np.asarray(relevance)
    if rel.shape != similarity.shape:
        raise MetricInputError(f"relevance has shape {rel.shape}, similarity {similarity.shape}", "retrieval")
    rel = rel.astype(bool)
    empty = np.flatnonzero(~rel.any(axis=1))
    if empty.size:
        raise MetricInputError(
            f"{empty.size} queries have no relevant item (first query indices: {empty[:5].tolist()})", "retrieval"
        )
    return rel


def cosine_similarity(queries: Any, items: Any) -> np.ndarray:
    """Cosine similarity of every query embedding with every item embedding.

    Args:
        queries: ``(n_queries, dim)`` embeddings.
        items: ``(n_items, dim)`` embeddings.

    Returns:
        ``(n_queries, n_items)`` similarities in [-1, 1].

    Raises:
        MetricInputError: malformed embeddings or a zero embedding.
    """
    from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

    q = _as_matrix(queries, "queries")
    g = _as_matrix(items, "items")
    if q.shape[1] != g.shape[1]:
        raise MetricInputError(f"embedding sizes differ: {q.shape[1]} and {g.shape[1]}", "retrieval")
    for name, a in (("queries", q), ("items", g)):
        zero = np.flatnonzero(~np.any(a != 0, axis=1))
        if zero.size:
            raise MetricInputError(
                f"{name} has {zero.size} all-zero embeddings (rows {zero[:5].tolist()})", "retrieval"
            )
    return sk_cosine(q, g)


def retrieval_ranks(similarity: Any, relevance: Any | None = None) -> np.ndarray:
    """Rank (1 = first) of the best-ranked relevant item of each query, ties broken pessimistically.

    Args:
        similarity: ``(n_queries, n_items)`` scores, higher meaning more similar.
        relevance: optional boolean ``(n_queries, n_items)`` matrix; default: item ``i`` is the match of query ``i``.

    Returns:
        ``(n_queries,)`` integer ranks.

    Raises:
        MetricInputError: malformed input or a query without a relevant item.
    """
    sim = _as_matrix(similarity, "similarity")
    rel = _relevance(sim, relevance)
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], _CHUNK):
        s = sim[start : start + _CHUNK]
        r = rel[start : start + _CHUNK]
        best_relevant = np.where(r, s, -np.inf).max(axis=1, keepdims=True)
        # Items ranked before the best relevant one: irrelevant items scoring at least as high.
        ranks[start : start + _CHUNK] = 1 + np.sum(~r & (s >= best_relevant), axis=1)
    return ranks


def _check_k(k: int, n_items: int) -> None:
    if not 1 <= k <= n_items:
        raise MetricInputError(f"k must be in [1, {n_items}] (the number of items), got {k}", "retrieval")


def recall_at_k(similarity: Any, k: int, relevance: Any | None = None) -> float:
    """Recall@k as used in image-text retrieval: the fraction of queries with a relevant item in their top k.

    Args:
        similarity: ``(n_queries, n_items)`` scores.
        k: cut-off, 1 <= k <= n_items.
        relevance: optional boolean relevance matrix (default: the diagonal).

    Returns:
        Recall@k in [0, 1].

    Raises:
        MetricInputError: malformed input or ``k`` out of range.
    """
    ranks = retrieval_ranks(similarity, relevance)
    _check_k(k, np.shape(similarity)[1])
    return float(np.mean(ranks <= k))


def _precision_hits(sim: np.ndarray, rel: np.ndarray, k: int) -> np.ndarray:
    """Fraction of relevant items among the top k of each query (irrelevant items first among equal scores)."""
    out = np.empty(sim.shape[0])
    for start in range(0, sim.shape[0], _CHUNK):
        s = sim[start : start + _CHUNK]
        r = rel[start : start + _CHUNK]
        # lexsort sorts by the last key first: descending similarity, then relevant items after irrelevant ties.
        order = np.lexsort((r, -s), axis=1)[:, :k]
        out[start : start + _CHUNK] = np.take_along_axis(r, order, axis=1).mean(axis=1)
    return out


def precision_at_k(similarity: Any, relevance: Any | None, k: int) -> float:
    """Mean over queries of the fraction of relevant items among the top k (ties broken pessimistically).

    Args:
        similarity: ``(n_queries, n_items)`` scores.
        relevance: boolean relevance matrix, or None for the diagonal (then precision@k is recall@k / k).
        k: cut-off, 1 <= k <= n_items.

    Returns:
        Precision@k in [0, 1].

    Raises:
        MetricInputError: malformed input or ``k`` out of range.
    """
    sim = _as_matrix(similarity, "similarity")
    rel = _relevance(sim, relevance)
    _check_k(k, sim.shape[1])
    return float(_precision_hits(sim, rel, k).mean())


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    ks: Sequence[int] = (1, 5, 10),
    relevance: Any | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Image -> text and text -> image retrieval metrics from paired embeddings, with bootstrap CIs over queries.

    Similarity is cosine. Keys (``d`` is ``i2t`` or ``t2i``): ``{d}_recall@{k}`` for every k, ``{d}_mean_rank``,
    ``{d}_median_rank``, and ``{d}_precision@{k}`` when a relevance matrix is given. A k larger than the gallery is
    skipped (logged). The CIs resample queries with a fixed gallery.

    Args:
        image_emb: ``(n_images, dim)`` image embeddings.
        text_emb: ``(n_texts, dim)`` text embeddings (``n_texts == n_images`` without ``relevance``).
        ks: cut-offs.
        relevance: optional boolean ``(n_images, n_texts)`` matrix, True where a text is relevant to an image; its
            transpose is used for text -> image.
        n_boot: bootstrap resamples of the queries.
        alpha: one minus the confidence level.
        seed: seed of the resampling.

    Returns:
        ``{metric_name: Estimate}``.

    Raises:
        MetricInputError: malformed embeddings or relevance, or a query without a relevant item.
    """
    sim = cosine_similarity(image_emb, text_emb)
    if relevance is None and sim.shape[0] != sim.shape[1]:
        raise MetricInputError(
            f"{sim.shape[0]} images and {sim.shape[1]} texts: paired retrieval needs equal numbers, or a relevance "
            "matrix",
            "retrieval",
        )
    rel = _relevance(sim, relevance)
    out: dict[str, Estimate] = {}
    for direction, s, r in (("i2t", sim, rel), ("t2i", sim.T, rel.T)):
        _relevance(s, r)  # every text query must have a relevant image too
        ranks = retrieval_ranks(s, r).astype(np.float64)
        common = dict(n_boot=n_boot, alpha=alpha, seed=seed)
        for k in ks:
            if not 1 <= k <= s.shape[1]:
                logger.warning("retrieval: k=%d skipped for %s, the gallery has %d items", k, direction, s.shape[1])
                continue
            out[f"{direction}_recall@{k}"] = bootstrap_ci(lambda x, k=k: np.mean(x <= k), ranks, None, **common)
            if relevance is not None:
                hits = _precision_hits(s, r, k)
                out[f"{direction}_precision@{k}"] = bootstrap_ci(np.mean, hits, None, **common)
        out[f"{direction}_mean_rank"] = bootstrap_ci(np.mean, ranks, None, **common)
        out[f"{direction}_median_rank"] = bootstrap_ci(np.median, ranks, None, **common)
    return out
