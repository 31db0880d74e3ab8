from __future__ import annotations

import numpy as np
import pytest

from medssl.eval import retrieval as R
from medssl.eval.metrics import MetricInputError

# Hand-made similarity: query 0 finds its match first; query 1's match is beaten by item 0;
# query 2's match ties with item 1 (ties are pessimistic, so the match ranks second).
SIM = np.array(
    [
        [0.9, 0.1, 0.3],
        [0.8, 0.5, 0.2],
        [0.1, 0.2, 0.2],
    ]
)


def test_hand_made_similarity_diagonal():
    assert R.retrieval_ranks(SIM).tolist() == [1, 2, 2]
    assert R.recall_at_k(SIM, 1) == pytest.approx(1 / 3)
    assert R.recall_at_k(SIM, 2) == pytest.approx(1.0)
    # top-2: {0, 2}, {0, 1}, {1, 2} each hold exactly one match
    assert R.precision_at_k(SIM, None, 2) == pytest.approx(0.5)


def test_hand_made_similarity_with_relevance():
    rel = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)
    assert R.retrieval_ranks(SIM, rel).tolist() == [1, 2, 2]
    # top-2 of query 0 = {0, 2}: both relevant (1.0); query 1: {0, 1} -> 0.5; query 2: {1, 2} -> 0.5
    assert R.precision_at_k(SIM, rel, 2) == pytest.approx(2 / 3)
    assert R.precision_at_k(SIM, rel, 1) == pytest.approx(1 / 3)
    rel_any = rel.copy()
    rel_any[1, 0] = True
    assert R.recall_at_k(SIM, 1, rel_any) == pytest.approx(2 / 3)


def test_collapsed_embeddings_score_chance_not_perfection():
    sim = np.ones((5, 5))
    assert R.retrieval_ranks(sim).tolist() == [5] * 5
    assert R.recall_at_k(sim, 1) == 0.0


def test_against_argsort_on_random_embeddings():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 6))
    txt = img + rng.normal(size=(40, 6))
    sim = R.cosine_similarity(img, txt)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    assert np.allclose(sim, unit(img) @ unit(txt).T)
    order = np.argsort(-sim, axis=1)
    expected_rank = 1 + np.argmax(order == np.arange(40)[:, None], axis=1)
    assert R.retrieval_ranks(sim).tolist() == expected_rank.tolist()
    rel = rng.random((40, 40)) < 0.2
    rel[np.arange(40), np.arange(40)] = True
    for k in (1, 3, 7):
        assert R.precision_at_k(sim, rel, k) == pytest.approx(np.take_along_axis(rel, order[:, :k], 1).mean())
        assert R.recall_at_k(sim, k, rel) == pytest.approx(np.take_along_axis(rel, order[:, :k], 1).any(1).mean())


def test_retrieval_metrics_both_directions_with_cis():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(30, 8))
    txt = img + 0.8 * rng.normal(size=(30, 8))
    out = R.retrieval_metrics(img, txt, ks=(1, 5, 50), n_boot=200, seed=0)
    assert "i2t_recall@50" not in out  # k larger than the gallery is skipped
    sim = R.cosine_similarity(img, txt)
    assert out["i2t_recall@1"].value == pytest.approx(R.recall_at_k(sim, 1))
    assert out["t2i_recall@5"].value == pytest.approx(R.recall_at_k(sim.T, 5))
    assert out["i2t_mean_rank"].value == pytest.approx(R.retrieval_ranks(sim).mean())
    assert out["t2i_median_rank"].value == pytest.approx(np.median(R.retrieval_ranks(sim.T)))
    assert out["i2t_recall@1"].value != out["t2i_recall@1"].value  # the two directions differ here
    for est in out.values():
        assert est.ci_low <= est.value <= est.ci_high and est.n == 30
    assert R.retrieval_metrics(img, txt, ks=(1,), n_boot=200, seed=0)["i2t_recall@1"] == out["i2t_recall@1"]
    perfect = R.retrieval_metrics(img, img, ks=(1,), n_boot=20)
    assert perfect["i2t_recall@1"].value == 1.0 and perfect["t2i_mean_rank"].value == 1.0


def test_retrieval_metrics_with_several_relevant_reports():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(6, 4))
    txt = np.concatenate([img, img[:3] + 0.01])  # texts 6..8 are near-copies of texts 0..2
    rel = np.zeros((6, 9), dtype=bool)
    rel[np.arange(6), np.arange(6)] = True
    rel[np.arange(3), np.arange(6, 9)] = True
    out = R.retrieval_metrics(img, txt, ks=(1, 2), relevance=rel, n_boot=20)
    assert out["i2t_recall@1"].value == 1.0
    # images 0..2 have both relevant texts in their top 2, images 3..5 only one
    assert out["i2t_precision@2"].value == pytest.approx((3 * 1.0 + 3 * 0.5) / 6)
    assert out["t2i_recall@1"].value == 1.0


def test_retrieval_errors():
    with pytest.raises(MetricInputError, match="no relevant item"):
        R.retrieval_ranks(SIM, np.zeros((3, 3), bool))
    with pytest.raises(MetricInputError, match="k must be"):
        R.recall_at_k(SIM, 4)
    with pytest.raises(MetricInputError, match="relevance matrix"):
        R.retrieval_metrics(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(MetricInputError, match="all-zero"):
        R.cosine_similarity(np.zeros((2, 3)), np.ones((2, 3)))
