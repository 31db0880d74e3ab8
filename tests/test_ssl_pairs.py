"""Patient-aware positives (MICLe): candidates and drawn pairs never cross patients (or studies), fallbacks, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.ssl.pairs import (
    CANDIDATES_KEY,
    FLAG_KEY,
    PairingError,
    RandPositived,
    add_positive_candidates,
    image_items,
    positive_groups,
    positive_pair_dataset,
    write_positive_datalist,
)


def _items(seed: int = 0, n_patients: int = 12) -> list[dict]:
    """Image items of patients with 1-4 images in 1-2 studies; study keys deliberately collide across patients."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        for s in range(int(rng.integers(1, 3))):
            for v in range(int(rng.integers(1, 3))):
                items.append(
                    {
                        "image": f"/data/p{p}/s{s}/v{v}.png",
                        "patient_key": f"pat-{p:02d}",
                        "study_key": f"stu-{s}",  # the same study key in every patient
                        "case_key": f"cas-{p}-{s}-{v}",
                    }
                )
    rng.shuffle(items)  # group members are not adjacent
    return items


def _owner(items):
    return {item["image"]: (item["patient_key"], item["study_key"]) for item in items}


@pytest.mark.parametrize("level", ["patient", "study"])
def test_candidates_never_cross_patients_or_studies(level):
    items = _items()
    owner = _owner(items)
    paired = add_positive_candidates(items, level)
    assert CANDIDATES_KEY not in items[0]  # the input is not changed
    n_with = 0
    for item in paired:
        candidates = item[CANDIDATES_KEY]
        assert item["image"] not in candidates  # never the image itself
        for other in candidates:
            assert owner[other][0] == item["patient_key"]
            if level == "study":
                assert owner[other][1] == item["study_key"]
        same = [
            i["image"]
            for i in items
            if i["patient_key"] == item["patient_key"]
            and (level == "patient" or i["study_key"] == item["study_key"])
            and i["image"] != item["image"]
        ]
        assert sorted(candidates) == sorted(same)  # and every other image of the group is a candidate
        n_with += bool(candidates)
    assert 0 < n_with < len(paired)  # both cases occur in this data


def test_same_file_twice_is_not_a_positive():
    items = [
        {"image": "/d/a.png", "patient_key": "pat-1", "case_key": "c1"},
        {"image": "/d/./a.png", "patient_key": "pat-1", "case_key": "c2"},
        {"image": "/d/b.png", "patient_key": "pat-1", "case_key": "c3"},
    ]
    paired = add_positive_candidates(items)
    assert paired[0][CANDIDATES_KEY] == ["/d/b.png"]
    assert paired[2][CANDIDATES_KEY] == ["/d/a.png", "/d/./a.png"]


def test_drawn_positives_stay_within_the_patient_and_fall_back_to_the_anchor():
    items = _items(seed=1)
    owner = _owner(items)
    paired = add_positive_candidates(items, "patient")
    draw = RandPositived("image")
    seen_other = seen_self = 0
    for epoch in range(3):
        for index, item in enumerate(paired):
            draw.set_random_state(seed=epoch * 1000 + index)
            out = draw(item)
            assert CANDIDATES_KEY not in out  # lists of different lengths would not collate
            positive = out["image_positive"]
            assert owner[positive][0] == item["patient_key"]
            if item[CANDIDATES_KEY]:
                assert positive != item["image"] and out[FLAG_KEY] == 1.0
                seen_other += 1
            else:
                assert positive == item["image"] and out[FLAG_KEY] == 0.0
                seen_self += 1
    assert seen_other and seen_self


def test_draws_cover_the_candidates_and_are_seeded():
    item = {"image": "a", CANDIDATES_KEY: ["b", "c", "d"]}
    draw = RandPositived("image")
    draws = [draw.set_random_state(seed=s)(item)["image_positive"] for s in range(60)]
    assert set(draws) == {"b", "c", "d"}
    again = [draw.set_random_state(seed=s)(item)["image_positive"] for s in range(60)]
    assert draws == again


def test_fallback_copies_a_loaded_anchor():
    anchor = torch.rand(1, 4, 4)
    out = RandPositived("image")({"image": anchor, CANDIDATES_KEY: []})
    assert torch.equal(out["image_positive"], anchor) and out["image_positive"] is not anchor


def test_errors_name_the_problem():
    with pytest.raises(PairingError, match="no patient_key"):
        add_positive_candidates([{"image": "a", "case_key": "c1"}])
    with pytest.raises(PairingError, match="no study_key"):
        add_positive_candidates([{"image": "a", "patient_key": "p"}], level="study")
    with pytest.raises(PairingError, match="level"):
        positive_groups([{"image": "a", "patient_key": "p"}], level="site")
    with pytest.raises(PairingError, match="no 'image'"):
        add_positive_candidates([{"image": "", "patient_key": "p"}])
    with pytest.raises(PairingError, match="list the candidates first"):
        RandPositived("image")({"image": "a", "case_key": "c"})


def test_image_items_turn_exams_into_images_of_one_study():
    exams = [
        {"case_key": "ex-1", "patient_key": "pat-1", "L-CC": "a", "L-MLO": "b", "R-CC": None, "split": "training"},
        {"case_key": "ex-2", "patient_key": "pat-1", "L-CC": "c", "L-MLO": "", "R-CC": "d"},
    ]
    items = image_items(exams, ["L-CC", "L-MLO", "R-CC"])
    assert [i["image"] for i in items] == ["a", "b", "c", "d"]
    assert [i["case_key"] for i in items] == ["ex-1/L-CC", "ex-1/L-MLO", "ex-2/L-CC", "ex-2/R-CC"]
    assert items[0]["study_key"] == "ex-1" and items[0]["image_source"] == "L-CC" and items[0]["split"] == "training"
    by_study = add_positive_candidates(items, "study")
    assert by_study[0][CANDIDATES_KEY] == ["b"] and by_study[2][CANDIDATES_KEY] == ["d"]
    by_patient = add_positive_candidates(items, "patient")
    assert sorted(by_patient[0][CANDIDATES_KEY]) == ["b", "c", "d"]
    with pytest.raises(PairingError, match="no case_key"):
        image_items([{"L-CC": "a"}], ["L-CC"])


def test_written_datalist_and_pair_dataset(tmp_path):
    from medssl.data.datalist import read_datalist

    items = _items(seed=2, n_patients=5)
    path = write_positive_datalist(tmp_path / "pairs.json", items, level="patient")
    data = read_datalist(path)
    written = data["training"]
    assert data["positives"]["level"] == "patient"
    assert data["positives"]["items_with_other_images"] == sum(1 for i in written if i[CANDIDATES_KEY])
    owner = _owner(items)
    assert all(owner[c][0] == i["patient_key"] for i in written for c in i[CANDIDATES_KEY])
    json.dumps(written)  # plain JSON

    dataset = positive_pair_dataset(items, level="patient", seed=3)
    first = [dataset[i]["image_positive"] for i in range(len(items))]
    again = positive_pair_dataset(items, level="patient", seed=3)
    assert first == [again[i]["image_positive"] for i in range(len(items))]
    assert all(owner[p][0] == items[i]["patient_key"] for i, p in enumerate(first))
