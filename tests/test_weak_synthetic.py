"""Weak labels on generated reports whose true labels are known: the label model against majority vote."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.data.synth.report_text import generate_corpus
from medssl.weak import aggregate, from_chexpert, label_matrix, label_metrics, lf_summary, soft_targets


@pytest.fixture(scope="module")
def corpus():
    texts, gold = generate_corpus(800, seed=0)
    keys = [f"r{i}" for i in range(len(texts))]
    gold.index = keys
    matrix, errors = label_matrix(texts, keys)
    return texts, keys, gold, matrix, errors


def test_label_model_matches_or_beats_majority_vote(corpus, capsys):
    _, keys, gold, matrix, errors = corpus
    assert not errors and matrix.keys == keys
    scores = {}
    for model in ("majority", "label-model"):
        weak = aggregate(matrix, model=model)
        assert weak.observations == list(CHEXPERT_OBSERVATIONS)
        scores[model] = label_metrics(weak.chexpert(), gold).set_index(["observation", "label"])["f1"]
    table = pd.concat(scores, axis=1)
    with capsys.disabled():
        print("\nper-observation F1 on 800 generated reports (seed 0):\n" + table.round(3).to_string())
    macro = table.loc["macro"]
    positive = table.xs("positive", level="label").drop("macro")
    # Sensible floors: the rules read the generated phrasing well, including hedges and negated lists.
    assert (macro["majority"] > [0.95, 0.85]).all() and (macro["label-model"] > [0.95, 0.85]).all()
    assert positive["label-model"].min() > 0.8
    # The label model learns LF accuracies without gold labels; it must not lose to majority vote.
    assert (macro["label-model"] >= macro["majority"] - 0.02).all()
    assert macro["label-model"].mean() >= macro["majority"].mean() - 0.01
    # Its probabilities make better soft targets (U-Ones) than the vote shares: lower Brier score against the truth.
    truth = np.isin(np.stack([from_chexpert(gold[o]) for o in CHEXPERT_OBSERVATIONS[1:]], axis=1), (1, 2))
    brier = {}
    for model in ("majority", "label-model"):
        targets, _ = soft_targets(aggregate(matrix, model=model).probs[:, 1:], "ones")
        brier[model] = float(((targets - truth) ** 2).mean())
    with capsys.disabled():
        print(f"Brier score of U-Ones targets: {brier}")
    assert brier["label-model"] <= brier["majority"]


def test_lf_summary_on_the_corpus(corpus):
    _, _, gold, matrix, _ = corpus
    table = lf_summary(matrix, gold=gold)
    assert len(table) == len(matrix.lf_names)
    assert (table["coverage"] >= table["overlaps"]).all() and (table["overlaps"] >= table["conflicts"]).all()
    by_kind = table.assign(kind=table["lf"].str.split(":").str[0]).groupby("kind")["empirical_accuracy"].mean()
    # Scoped rules are more accurate than the sentence-level ones on the same mentions.
    assert by_kind["impression"] > by_kind["sentence"] and by_kind["findings"] > by_kind["sentence"]
    assert (table["empirical_accuracy"].dropna() > 0.5).all()


def test_parallel_label_matrix_equals_serial(corpus):
    texts, keys, _, matrix, _ = corpus
    texts = texts[:240] + ["", "IMPRESSION:"]
    keys = keys[:240] + ["empty", "headers"]
    parallel, errors = label_matrix(texts, keys, n_jobs=2, chunk_size=60)
    assert parallel.keys == keys[:240]
    assert np.array_equal(parallel.votes, matrix.votes[:240])
    assert [(e.path, e.problem) for e in errors] == [
        ("empty", "empty report"),
        ("headers", "report has section headers but no text under them"),
    ]
