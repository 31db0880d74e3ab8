from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from medssl.data.splits import (
    apply_splits,
    assign_folds,
    grouped_folds,
    load_splits,
    save_splits,
    split_by_patient,
)
from medssl.exceptions import DatalistError


def _items(n_patients: int, seed: int = 0, positive: float = 0.3) -> list[dict]:
    """Patients with 1 to 3 items each (studies or time points), a binary label per patient."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        label = int(rng.random() < positive)
        for s in range(int(rng.integers(1, 4))):
            items.append({"case_key": f"cas-{p:04d}-{s}", "patient_key": f"pat-{p:04d}", "grade": label})
    return items


def _patients(items) -> set[str]:
    return {item["patient_key"] for item in items}


def test_no_patient_in_two_splits_and_fractions_respected_across_seeds():
    items = _items(60)
    n_patients = len(_patients(items))
    for seed in range(40):
        splits = split_by_patient(items, val_fraction=0.2, test_fraction=0.1, seed=seed)
        owners = [_patients(splits[name]) for name in ("training", "validation", "test")]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert sorted(i["case_key"] for s in splits.values() for i in s) == sorted(i["case_key"] for i in items)
        assert len(owners[1]) == round(0.2 * n_patients) and len(owners[2]) == round(0.1 * n_patients)


def test_split_is_deterministic_and_independent_of_item_order():
    items = _items(30)
    first = split_by_patient(items, 0.2, 0.2, seed=5)
    shuffled = [items[i] for i in np.random.default_rng(1).permutation(len(items))]
    again = split_by_patient(shuffled, 0.2, 0.2, seed=5)
    for name in first:
        assert _patients(first[name]) == _patients(again[name])
    other = split_by_patient(items, 0.2, 0.2, seed=6)
    assert _patients(other["test"]) != _patients(first["test"])


def test_stratification_keeps_the_label_proportions():
    items = _items(200, positive=0.25)
    label = {i["patient_key"]: i["grade"] for i in items}
    overall = np.mean(list(label.values()))
    worst_stratified, worst_plain = 0.0, 0.0
    for seed in range(10):
        for key, attr in (("grade", "stratified"), (None, "plain")):
            splits = split_by_patient(items, 0.2, 0.2, seed=seed, stratify_key=key)
            share = np.mean([label[p] for p in _patients(splits["test"])])
            if attr == "stratified":
                worst_stratified = max(worst_stratified, abs(share - overall))
            else:
                worst_plain = max(worst_plain, abs(share - overall))
    assert worst_stratified <= 0.03  # 40 test patients: within about one patient of the overall share
    assert worst_stratified < worst_plain


def test_stratification_falls_back_when_a_class_is_too_small(caplog):
    items = _items(20, positive=0.0)
    items[0]["grade"] = 1  # a single patient of class 1 (its other items keep 0: the patient's mode decides)
    for item in items:
        if item["patient_key"] == items[0]["patient_key"]:
            item["grade"] = 1
    logger = logging.getLogger("medssl.data.splits")
    logger.addHandler(caplog.handler)  # the CLI's logging set-up may stop propagation to the root logger
    try:
        splits = split_by_patient(items, 0.2, 0.2, seed=0, stratify_key="grade")
    finally:
        logger.removeHandler(caplog.handler)
    assert "cannot stratify" in caplog.text
    assert len(_patients(splits["test"])) == 4


def test_bad_input_raises():
    items = _items(10)
    with pytest.raises(DatalistError, match="patient_key"):
        split_by_patient([{"case_key": "c"}], 0.2, 0.2)
    with pytest.raises(DatalistError, match="below 1"):
        split_by_patient(items, 0.6, 0.5)
    with pytest.raises(DatalistError, match="cannot fill"):
        split_by_patient(_items(2), 0.3, 0.3)
    with pytest.raises(DatalistError, match="stratify"):
        split_by_patient(items, 0.2, 0.2, stratify_key="absent")


@pytest.mark.parametrize("stratify_key", [None, "grade"])
def test_folds_cover_every_item_once_and_never_split_a_patient(stratify_key):
    items = _items(40)
    folds = grouped_folds(items, k=5, seed=3, stratify_key=stratify_key)
    assert len(folds) == 5
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(items)))  # every item is a test item exactly once
    for train, test in folds:
        assert not (_patients([items[i] for i in train]) & _patients([items[i] for i in test]))
        assert len(set(train.tolist()) | set(test.tolist())) == len(items)
    assert [t.tolist() for _, t in grouped_folds(items, 5, 3, stratify_key)] == [t.tolist() for _, t in folds]


def test_stratified_folds_keep_the_label_proportions():
    items = _items(100, positive=0.3)
    labels = np.array([i["grade"] for i in items])
    overall = labels.mean()
    for _, test in grouped_folds(items, k=4, seed=0, stratify_key="grade"):
        assert abs(labels[test].mean() - overall) < 0.08


def test_assign_folds_and_saved_splits_round_trip(tmp_path):
    items = _items(25)
    splits = split_by_patient(items, 0.0, 0.2, seed=1)
    splits["training"] = assign_folds(splits["training"], k=3, seed=1)
    counts = Counter(i["fold"] for i in splits["training"])
    assert set(counts) == {0, 1, 2}
    folds_of = {}
    for item in splits["training"]:
        assert folds_of.setdefault(item["patient_key"], item["fold"]) == item["fold"]
    path = save_splits(tmp_path / "splits.json", splits, seed=1, test_fraction=0.2)
    record = load_splits(path)
    assert record["parameters"]["seed"] == 1
    assert "pat-" not in path.read_text()  # case keys only
    rebuilt = apply_splits(items, record)
    for name in splits:
        assert [(i["case_key"], i.get("fold")) for i in rebuilt[name]] == [
            (i["case_key"], i.get("fold")) for i in splits[name]
        ]
    with pytest.raises(DatalistError, match="no split"):
        apply_splits(items + [{"case_key": "cas-new", "patient_key": "pat-new"}], record)


def test_fold_count_out_of_range_raises():
    with pytest.raises(DatalistError, match="between 2"):
        grouped_folds(_items(3), k=10)
