from __future__ import annotations

import pytest

from medssl.data.sequences import (
    PHYSICS_RULES,
    SEQUENCE_RULES,
    SEQUENCES,
    explain_sequence,
    has_contrast,
    infer_sequence,
)


@pytest.mark.parametrize("rule", SEQUENCE_RULES, ids=lambda r: f"{r.sequence}:{r.example}")
def test_every_rule_fires_on_its_own_example(rule):
    tag = rule.tags[0] if rule.tags[0] != "ImageType" or "\\" in rule.example else "SeriesDescription"
    fields = {"Modality": "MR", tag: rule.example.split("\\") if tag == "ImageType" else rule.example}
    sequence, reason = explain_sequence(fields)
    assert sequence in (rule.sequence, "T1C" if rule.sequence == "T1" else rule.sequence), reason
    assert f"({rule.sequence})" in reason


@pytest.mark.parametrize(
    "description, expected",
    [
        ("t1_mprage_sag_p2_iso", "T1"),
        ("AX T1 POST GAD", "T1C"),
        ("T1 MPRAGE +C", "T1C"),
        ("t1_se_tra_pre", "T1"),
        ("AX T1 FLAIR", "T1"),  # GE's T1 FLAIR is T1-weighted
        ("Ax T2 FLAIR", "FLAIR"),
        ("t2_tirm_tra_dark-fluid", "FLAIR"),
        ("t2_tse_tra_p2", "T2"),
        ("T2W_TSE", "T2"),
        ("ep2d_diff_3scan_trace_p2", "DWI"),
        ("AX DWI B1000", "DWI"),
        ("ep2d_diff_3scan_trace_p2_ADC", "ADC"),
        ("Apparent Diffusion Coefficient (mm2/s)", "ADC"),
        ("AX SWAN", "OTHER"),
        ("AX PD FSE", "OTHER"),
        ("3-plane loc", "OTHER"),
        ("SAG T1 CUBE", "T1"),
        ("T1W_3D_TFE +C", "T1C"),
        ("series 12", "OTHER"),
    ],
)
def test_real_world_series_descriptions(description, expected):
    assert infer_sequence({"Modality": "MR", "SeriesDescription": description}) == expected


def test_text_tags_are_read_in_order_and_image_type_first():
    fields = {"Modality": "MR", "SeriesDescription": "AX POST", "ProtocolName": "t1_vibe_tra"}
    assert infer_sequence(fields) == "T1C"  # T1 from the protocol, contrast from the description
    dwi = {"Modality": "MR", "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"], "SeriesDescription": "dwi"}
    assert infer_sequence(dwi) == "ADC"
    localizer = {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SeriesDescription": "t1"}
    assert infer_sequence(localizer) == "OTHER"


def test_contrast_from_agent_and_cues():
    assert has_contrast({"ContrastBolusAgent": "Gadovist 1.0"})
    assert not has_contrast({"ContrastBolusAgent": "NONE", "SeriesDescription": "t1_se_tra"})
    assert not has_contrast({"SeriesDescription": "T1 pre contrast"})
    assert (
        infer_sequence({"Modality": "MR", "SeriesDescription": "t1_se_tra", "ContrastBolusAgent": "Dotarem"}) == "T1C"
    )


@pytest.mark.parametrize(
    "tr, te, ti, expected",
    [
        (9000, 90, 2500, "FLAIR"),
        (500, 10, None, "T1"),
        (2300, 3, 900, "T1"),
        (4000, 100, None, "T2"),
        (30, 5, None, "T1"),
        (1500, 40, None, "OTHER"),
    ],
)
def test_physics_fallback(tr, te, ti, expected):
    fields = {
        "Modality": "MR",
        "SeriesDescription": "series 4",
        "RepetitionTime": tr,
        "EchoTime": te,
        "InversionTime": ti,
    }
    sequence, reason = explain_sequence(fields)
    assert sequence == expected
    assert ("physics" in reason) == (expected != "OTHER")
    assert len(PHYSICS_RULES) >= 3


def test_non_mr_and_vocabulary():
    assert infer_sequence({"Modality": "CT", "SeriesDescription": "T1"}) == ""
    assert {r.sequence for r in SEQUENCE_RULES} <= set(SEQUENCES)
