from __future__ import annotations

import pydicom
import pytest

from medssl.data.views import (
    MAMMO_VIEWS,
    RADIOGRAPHY_VIEWS,
    chest_wall_side,
    fields_from_dataset,
    modifier_from_code,
    normalise_laterality,
    normalise_view,
    parse_view_key,
    split_view,
    view_and_laterality,
    view_from_code,
    view_group,
)

MG = {"Modality": "MG"}

# (fields, expected view, expected laterality, conflict expected)
TABLE = [
    # ViewPosition, plain and with laterality prefixes or suffixes
    ({**MG, "ViewPosition": "CC", "ImageLaterality": "L"}, "CC", "L", False),
    ({**MG, "ViewPosition": "MLO", "ImageLaterality": "R"}, "MLO", "R", False),
    ({**MG, "ViewPosition": "RCC"}, "CC", "R", False),
    ({**MG, "ViewPosition": "L-MLO"}, "MLO", "L", False),
    ({**MG, "ViewPosition": "XCC", "ImageLaterality": "L"}, "XCCL", "L", False),
    ({**MG, "ViewPosition": "XCCM", "ImageLaterality": "L"}, "XCCM", "L", False),
    ({**MG, "ViewPosition": "ML", "ImageLaterality": "R"}, "ML", "R", False),
    ({**MG, "ViewPosition": "LM", "ImageLaterality": "R"}, "LM", "R", False),
    ({**MG, "ViewPosition": "FB", "ImageLaterality": "R"}, "FB", "R", False),
    ({**MG, "ViewPosition": "RMLOID"}, "MLO+ID", "R", False),
    ({**MG, "ViewPosition": "MLO ID", "ImageLaterality": "L"}, "MLO+ID", "L", False),
    ({**MG, "ViewPosition": "cranio-caudal", "ImageLaterality": "L"}, "CC", "L", False),
    # series-level Laterality when ImageLaterality is absent; spelled-out laterality
    ({**MG, "ViewPosition": "CC", "Laterality": "RIGHT"}, "CC", "R", False),
    # ViewCodeSequence fallback: code meaning (CID 4014) or SNOMED CT code value
    ({**MG, "ViewCode": "cranio-caudal", "ImageLaterality": "L"}, "CC", "L", False),
    ({**MG, "ViewCode": "medio-lateral oblique", "ImageLaterality": "L"}, "MLO", "L", False),
    ({**MG, "ViewCode": "399368009", "ImageLaterality": "R"}, "MLO", "R", False),
    ({**MG, "ViewCode": "cranio-caudal exaggerated laterally", "ImageLaterality": "R"}, "XCCL", "R", False),
    # view modifiers (CID 4015): spot compression, magnification, cleavage (the CV view)
    (
        {**MG, "ViewPosition": "CC", "ViewCode": "cranio-caudal", "ViewModifierCode": "Spot Compression"},
        "CC+SPOT",
        "",
        False,
    ),
    (
        {**MG, "ViewCode": "cranio-caudal", "ViewModifierCode": "Magnification", "ImageLaterality": "L"},
        "CC+MAG",
        "L",
        False,
    ),
    ({**MG, "ViewPosition": "CC", "ViewModifierCode": "Cleavage", "ImageLaterality": "L"}, "CV", "L", False),
    # SeriesDescription fallback, modifiers named only in the description
    ({**MG, "SeriesDescription": "R CC"}, "CC", "R", False),
    ({**MG, "SeriesDescription": "Left mediolateral oblique"}, "MLO", "L", False),
    ({**MG, "SeriesDescription": "LCC SPOT MAG"}, "CC+MAG+SPOT", "L", False),
    ({**MG, "ViewPosition": "CC", "ImageLaterality": "R", "SeriesDescription": "R CC spot"}, "CC+SPOT", "R", False),
    # the description never overrides the tags
    ({**MG, "ViewPosition": "CC", "ImageLaterality": "R", "SeriesDescription": "L MLO"}, "CC", "R", False),
    # conflicts are reported, not guessed
    ({**MG, "ViewPosition": "CC", "ViewCode": "medio-lateral oblique", "ImageLaterality": "L"}, "", "L", True),
    ({**MG, "ViewPosition": "CC", "ImageLaterality": "L", "Laterality": "R"}, "CC", "", True),
    ({**MG, "ViewPosition": "LCC", "ImageLaterality": "R"}, "CC", "", True),
    ({**MG, "ViewPosition": "CC MLO", "ImageLaterality": "R"}, "", "R", True),
    # mammography recognised by body part or SOP class on CR/DX
    (
        {"Modality": "CR", "BodyPartExamined": "BREAST", "ViewPosition": "MLO", "ImageLaterality": "L"},
        "MLO",
        "L",
        False,
    ),
    ({"Modality": "DX", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2", "ViewPosition": "CC"}, "CC", "", False),
    # radiography (chest) vocabulary
    ({"Modality": "DX", "ViewPosition": "PA"}, "PA", "", False),
    ({"Modality": "CR", "ViewPosition": "AP"}, "AP", "", False),
    ({"Modality": "DX", "ViewPosition": "LATERAL"}, "LATERAL", "", False),
    ({"Modality": "DX", "ViewPosition": "LAT"}, "LATERAL", "", False),
    ({"Modality": "DX", "ViewPosition": "LL"}, "LL", "", False),
    ({"Modality": "DX", "ViewPosition": "RL"}, "RL", "", False),
    ({"Modality": "DX", "ViewPosition": "AP LLD"}, "LLD", "", False),
    ({"Modality": "DX", "ViewCode": "postero-anterior"}, "PA", "", False),
    ({"Modality": "DX", "ViewCode": "left lateral"}, "LL", "", False),
    ({"Modality": "DX", "SeriesDescription": "CHEST PA"}, "PA", "", False),
    ({"Modality": "DX", "SeriesDescription": "Thorax lat"}, "LATERAL", "", False),
    ({"Modality": "DX", "SeriesDescription": "PA and LAT"}, "", "", False),  # two views named: unknown
    ({"Modality": "DX", "ViewPosition": "LATERAL", "ViewCode": "postero-anterior"}, "", "", True),
    ({"Modality": "DX", "ViewPosition": "PA", "ImageLaterality": "U"}, "PA", "", False),
    # not planar
    ({"Modality": "MR", "ViewPosition": "CC", "ImageLaterality": "L"}, "", "", False),
]


@pytest.mark.parametrize("fields, view, laterality, conflict", TABLE)
def test_view_and_laterality_table(fields, view, laterality, conflict):
    got_view, got_laterality, got_conflict = view_and_laterality(fields)
    assert (got_view, got_laterality) == (view, laterality)
    assert bool(got_conflict) == conflict


def test_conflict_messages_name_both_tags():
    _, _, conflict = view_and_laterality({**MG, "ViewPosition": "CC", "ViewCode": "medio-lateral oblique"})
    assert "ViewPosition CC" in conflict and "ViewCodeSequence MLO" in conflict
    _, _, conflict = view_and_laterality({**MG, "ViewPosition": "CC", "ImageLaterality": "L", "Laterality": "R"})
    assert "ImageLaterality L" in conflict and "Laterality R" in conflict


def test_code_tables_come_from_pydicom_cids():
    from pydicom.sr.codedict import codes

    assert view_from_code(codes.cid4014.CranioCaudal.value) == "CC"
    assert view_from_code(codes.cid4014.MedioLateralObliqueProjection.meaning) == "MLO"
    assert view_from_code(codes.cid4010.PosteroAnterior.value, mammography=False) == "PA"
    assert modifier_from_code(codes.cid4015.SpotCompression.value) == "SPOT"
    assert modifier_from_code(codes.cid4015.ImplantDisplaced.meaning) == "ID"
    assert view_from_code("not a view") == ""


def test_vocabularies_and_helpers():
    assert {"CC", "MLO", "XCCL"} <= set(MAMMO_VIEWS) and {"PA", "AP", "LATERAL"} <= set(RADIOGRAPHY_VIEWS)
    assert [view_group(v) for v in ("PA", "AP", "LL", "LATERAL", "CC+SPOT", "MLO", "LLD")] == [
        "frontal",
        "frontal",
        "lateral",
        "lateral",
        "craniocaudal",
        "mediolateral",
        "decubitus",
    ]
    assert split_view("CC+MAG+SPOT") == ("CC", ("MAG", "SPOT")) and split_view(None) == ("", ())
    assert parse_view_key("R-MLO") == ("R", "MLO")
    with pytest.raises(ValueError, match="view key"):
        parse_view_key("CC")
    assert [normalise_laterality(v) for v in ("l", "Right", "U", None, "B")] == ["L", "R", "", "", "B"]
    assert normalise_view("LMLO")[0::2] == ("MLO", "L")
    assert normalise_view("LL", mammography=False) == ("LL", (), "")  # a projection, not a laterality


def test_chest_wall_side_from_patient_orientation():
    assert chest_wall_side(["A", "R"]) == "left"  # left CC: rows run towards the nipple
    assert chest_wall_side("P\\L") == "right"  # right CC
    assert chest_wall_side(["A", "FR"]) == "left" and chest_wall_side(["P", "FL"]) == "right"
    assert chest_wall_side([]) == "" and chest_wall_side(["L", "F"]) == ""


@pytest.mark.parametrize("folder, view", [("CR1", "LL"), ("CR2", "AP"), ("CR3", "AP")])
def test_real_cr_files(dicomdir_tests_dir, folder, view):
    path = next((dicomdir_tests_dir / "77654033" / folder).iterdir())
    fields = fields_from_dataset(pydicom.dcmread(path, stop_before_pixels=True))
    assert fields["Modality"] == "CR" and fields["BodyPartExamined"] == "CSPINE"
    assert view_and_laterality(fields) == (view, "", "")


def test_index_records_views_of_real_cr_files(dicomdir_tests_dir, tmp_path):
    import shutil

    from medssl.data.index import index_export

    for folder in ("CR1", "CR2", "CR3"):
        shutil.copytree(dicomdir_tests_dir / "77654033" / folder, tmp_path / folder)
    manifest = index_export(tmp_path, workers=1).manifest
    assert sorted(manifest["view"]) == ["AP", "AP", "LL"]
    assert set(manifest["photometric"]) == {"MONOCHROME1"}
