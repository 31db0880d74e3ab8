from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.weak import (
    ABSTAIN,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    DawidSkene,
    LabelMatrix,
    OptionalDependencyError,
    SnorkelLabelModel,
    WeakLabels,
    add_no_finding,
    aggregate,
    from_chexpert,
    label_metrics,
    lf_summary,
    majority_vote,
    probs_from_chexpert,
    snorkel_available,
    soft_targets,
    to_chexpert,
    vote_proportions,
)

A, N, P, U = ABSTAIN, NEGATIVE, POSITIVE, UNCERTAIN


def test_majority_vote_ties_and_abstains():
    votes = np.array([[P, N, A], [P, P, N], [A, A, A], [U, N, A], [P, U, N]])
    assert majority_vote(votes).tolist() == [P, P, A, U, P]  # ties: positive > uncertain > negative
    assert majority_vote(votes, tie_policy="abstain").tolist() == [A, P, A, A, A]
    assert majority_vote(votes, abstain=N).tolist() == [P, P, N, U, P]
    random = majority_vote(votes, tie_policy="random", seed=1)
    assert random[1] == P and random[2] == A and random[0] in (P, N) and random[3] in (U, N)
    assert (majority_vote(votes, tie_policy="random", seed=1) == random).all()
    shares = vote_proportions(votes)
    assert np.allclose(shares[1], [1 / 3, 2 / 3, 0]) and np.isnan(shares[2]).all()
    with pytest.raises(ValueError):
        majority_vote(votes, tie_policy="coin")


def _simulate(n: int, accuracies: list[float], coverage: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Votes of independent LFs of known accuracy on a 3-class truth (errors spread over the other classes)."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    votes = np.full((n, len(accuracies)), A)
    for j, accuracy in enumerate(accuracies):
        covered = rng.random(n) < coverage
        right = rng.random(n) < accuracy
        wrong = (truth + rng.integers(1, 3, size=n)) % 3
        votes[covered, j] = np.where(right, truth, wrong)[covered]
    return votes, truth


def test_dawid_skene_learns_accuracies_and_beats_majority_vote():
    votes, truth = _simulate(4000, [0.95, 0.6, 0.6, 0.55], coverage=0.9, seed=0)
    model = DawidSkene().fit(votes)
    accuracies = model.lf_accuracies()
    assert accuracies[0] > 0.9 and accuracies[0] > max(accuracies[1:]) + 0.2
    covered = (votes >= 0).any(axis=1)
    lm = (model.predict(votes) == truth)[covered].mean()
    mv = (majority_vote(votes) == truth)[covered].mean()
    assert lm > mv + 0.05, (lm, mv)
    proba = model.predict_proba(votes)
    assert np.allclose(proba[covered].sum(axis=1), 1) and np.isnan(proba[~covered]).all()


@pytest.mark.parametrize("parametrization", ["one-coin", "class", "full", "auto"])
@pytest.mark.parametrize("abstain", ["ignore", "model"])
def test_dawid_skene_variants_are_valid_and_deterministic(parametrization, abstain):
    votes, truth = _simulate(600, [0.9, 0.8, 0.7], coverage=0.7, seed=1)
    model = DawidSkene(parametrization=parametrization, abstain=abstain, class_balance=None)
    proba = model.fit(votes).predict_proba(votes)
    again = DawidSkene(parametrization=parametrization, abstain=abstain, class_balance=None).fit(votes)
    assert np.array_equal(proba, again.predict_proba(votes), equal_nan=True)
    covered = (votes >= 0).any(axis=1)
    assert np.allclose(proba[covered].sum(axis=1), 1)
    assert np.allclose(model.confusion_.sum(axis=2), 1) and np.isclose(model.class_balance_.sum(), 1)
    assert (model.predict(votes)[covered] == truth[covered]).mean() > 0.8


def test_dawid_skene_edge_cases_and_arguments():
    empty = DawidSkene().fit(np.full((5, 2), A))
    assert np.isnan(empty.predict_proba(np.full((5, 2), A))).all()
    assert (empty.predict(np.full((5, 2), A)) == A).all()
    with pytest.raises(RuntimeError):
        DawidSkene().predict_proba(np.zeros((1, 1), dtype=int))
    for bad in (
        dict(parametrization="two-coins"),
        dict(abstain="skip"),
        dict(class_balance="skewed"),
        dict(decision="x"),
    ):
        with pytest.raises(ValueError):
            DawidSkene(**bad)
    fixed = DawidSkene(class_balance=[0.7, 0.2, 0.1]).fit(_simulate(200, [0.9, 0.9], 1.0, 2)[0])
    assert np.allclose(fixed.class_balance_, [0.7, 0.2, 0.1])


def test_snorkel_is_optional():
    matrix = LabelMatrix(np.array([[P, P], [N, A]], dtype=np.int8), ["a", "b"], ["x:Edema", "y:Edema"], ["Edema"] * 2)
    if snorkel_available():
        pytest.importorskip("snorkel")
        weak = aggregate(matrix, model="snorkel")
        assert weak.labels.shape == (2, 2)
    else:
        with pytest.raises(OptionalDependencyError, match="pip install 'medssl\\[snorkel\\]'"):
            SnorkelLabelModel()
        with pytest.raises(OptionalDependencyError):
            aggregate(matrix, model="snorkel")


@pytest.mark.skipif(not snorkel_available(), reason="snorkel (medssl[snorkel]) is not installed")
def test_snorkel_label_model_runs_when_installed():
    votes, truth = _simulate(300, [0.9, 0.8, 0.7], coverage=0.8, seed=3)
    proba = SnorkelLabelModel(n_epochs=50).fit(votes).predict_proba(votes)
    covered = (votes >= 0).any(axis=1)
    assert np.allclose(proba[covered].sum(axis=1), 1)


def _matrix() -> LabelMatrix:
    votes = np.array(
        [
            # Edema LFs (3)      Pneumothorax LFs (2)
            [P, P, A, A, A],
            [N, N, N, N, A],
            [A, A, A, P, N],
            [U, N, U, A, A],
        ],
        dtype=np.int8,
    )
    names = ["e1", "e2", "e3", "p1", "p2"]
    return LabelMatrix(votes, ["r0", "r1", "r2", "r3"], names, ["Edema"] * 3 + ["Pneumothorax"] * 2)


def test_aggregate_no_finding_and_chexpert_frame():
    weak = aggregate(_matrix(), model="majority")
    assert weak.observations == ["No Finding", "Edema", "Pneumothorax"]
    frame = weak.chexpert()
    assert frame.loc["r0", "Edema"] == 1 and frame.loc["r1", "Edema"] == 0 and frame.loc["r3", "Edema"] == -1
    assert frame.loc["r2", "Pneumothorax"] == 1  # tie P/N: positive wins
    assert np.isnan(frame.loc["r2", "Edema"])
    # No Finding: 1 only when no pathology is positive or uncertain, else blank.
    assert frame["No Finding"].tolist()[1] == 1 and np.isnan(frame["No Finding"].tolist()[0])
    out = weak.to_frame()
    assert {"Edema_p_pos", "Edema_p_unc", "No Finding_p_pos"} <= set(out.columns)
    assert out.loc["r1", "No Finding_p_pos"] == 1.0 and out.loc["r0", "No Finding_p_pos"] == 0.0
    lm = aggregate(_matrix(), model="label-model")
    assert lm.labels.shape == (4, 3) and lm.method == "label-model"
    assert (lm.labels[:, 1] == weak.labels[:, 1]).all()  # unanimous or single votes are kept


def test_add_no_finding_probability_is_the_weakest_pathology():
    probs = np.array([[[0.8, 0.1, 0.1], [0.9, 0.05, 0.05], [np.nan] * 3]])
    weak = WeakLabels(["r"], ["Edema", "Pneumothorax", "Support Devices"], probs, np.array([[N, N, A]]), "x")
    out = add_no_finding(weak)
    assert out.observations[0] == "No Finding" and out.labels[0, 0] == P
    assert np.isclose(out.probs[0, 0, P], 0.8)
    again = add_no_finding(out)  # idempotent: replaces the column
    assert again.observations == out.observations


def test_lf_summary_coverage_overlaps_conflicts_and_accuracy():
    gold = pd.DataFrame(
        {"Edema": [1.0, 0.0, np.nan, 0.0], "Pneumothorax": [np.nan, 0.0, 1.0, np.nan]}, index=["r0", "r1", "r2", "r3"]
    )
    table = lf_summary(_matrix(), gold=gold).set_index("lf")
    assert table.loc["e1", "coverage"] == 0.75 and table.loc["e3", "coverage"] == 0.5
    assert table.loc["e1", "overlaps"] == 0.75 and table.loc["p1", "overlaps"] == 0.25
    assert table.loc["e1", "conflicts"] == 0.25  # r3: U against N
    assert table.loc["p2", "conflicts"] == 0.25 and table.loc["e2", "conflicts"] == 0.25
    assert table.loc["e1", "polarity"] == "negative,positive,uncertain"
    assert table.loc["e1", "n_gold"] == 3 and table.loc["e1", "empirical_accuracy"] == pytest.approx(2 / 3)
    assert table.loc["p2", "empirical_accuracy"] == 0.0  # gold r2 is positive, p2 said negative


def test_chexpert_codes_and_soft_targets():
    labels = np.array([[1.0, 0.0, -1.0, np.nan]])
    assert from_chexpert(labels).tolist() == [[P, N, U, N]]
    assert from_chexpert(labels, blank=A).tolist() == [[P, N, U, A]]
    assert np.array_equal(to_chexpert(from_chexpert(labels, blank=A)), labels, equal_nan=True)
    probs = probs_from_chexpert(labels)
    ones, w1 = soft_targets(probs, "ones")
    zeros, _ = soft_targets(probs, "zeros")
    ignore, w3 = soft_targets(probs, "ignore")
    assert ones.tolist() == [[1, 0, 1, 0]] and zeros.tolist() == [[1, 0, 0, 0]]
    assert w1.tolist() == [[1, 1, 1, 1]] and w3.tolist() == [[1, 1, 0, 1]] and ignore[0, :2].tolist() == [1, 0]
    _, blank_weights = soft_targets(probs, "ones", blank=None)
    assert blank_weights[0, 3] == 0
    soft = np.array([[0.2, 0.5, 0.3]])
    t, w = soft_targets(soft, "ignore")
    assert np.isclose(t[0], 0.5 / 0.7) and np.isclose(w[0], 0.7)
    with pytest.raises(ValueError):
        soft_targets(soft, "maybe")


def test_label_metrics_per_observation():
    gold = pd.DataFrame({"Edema": [1, 0, -1, np.nan]}, index=["a", "b", "c", "d"])
    predicted = pd.DataFrame({"Edema": [1, 1, -1, np.nan]}, index=["a", "b", "c", "d"])
    table = label_metrics(predicted, gold).set_index(["observation", "label"])
    assert table.loc[("Edema", "positive"), "precision"] == 0.5 and table.loc[("Edema", "positive"), "recall"] == 1
    assert table.loc[("Edema", "uncertain"), "f1"] == 1 and table.loc[("Edema", "positive"), "n"] == 4
    assert ("macro", "positive") in table.index
