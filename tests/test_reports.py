from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.data.reports import (
    CHEXPERT_OBSERVATIONS,
    DEFAULT_PRIORITY,
    ParsedReport,
    ReportError,
    choose_section,
    count_words,
    normalize_section_name,
    parse_report,
    parse_reports,
    read_report,
    report_text,
    split_sections,
    split_sentences,
    tokenize_words,
    truncate_words,
)
from medssl.data.synth.report_text import generate_corpus, generate_report, sample_findings, write_report_tree

DATA = Path(__file__).parent / "data" / "reports"


def text_of(name: str) -> str:
    return (DATA / name).read_text()


def test_chexpert_observations_are_the_14_in_csv_order():
    assert len(CHEXPERT_OBSERVATIONS) == 14 == len(set(CHEXPERT_OBSERVATIONS))
    assert CHEXPERT_OBSERVATIONS[0] == "No Finding" and CHEXPERT_OBSERVATIONS[-1] == "Support Devices"


def test_standard_mimic_report_sections():
    sections = split_sections(text_of("mimic_standard.txt"))
    assert list(sections) == ["examination", "indication", "technique", "comparison", "findings", "impression"]
    assert sections["examination"] == "CHEST (PA AND LAT)"
    assert sections["impression"] == "No acute cardiopulmonary process."
    assert sections["indication"].startswith("___M with productive cough")  # de-identification marks kept
    assert "FINAL REPORT" not in " ".join(sections.values())
    assert sections["findings"].startswith("No focal consolidation") and sections["findings"].endswith("again noted.")


def test_addendum_separator_numbered_impression_and_recommendations():
    report = read_report(DATA / "addendum_numbered.txt")
    assert report.section == "impression"
    assert report.sentences == [
        "Moderate right pleural effusion, increased since ___.",
        "Right basilar opacity may represent atelectasis vs. pneumonia.",
        "No pneumothorax.",
    ]
    assert report.sections["addendum"].startswith("The findings were discussed with Dr. ___")
    assert report.sections["recommendations"] == "Follow-up radiograph after diuresis."
    assert report.sentences_of("findings") == [
        "The endotracheal tube terminates approx. 4.5 cm above the carina.",
        "A moderate right pleural effusion has increased in size, measuring approximately 1.5 cm. in depth at "
        "the base.",
        "There is no pneumothorax.",
        "Heart size is mildly enlarged, e.g. compared with ___.",
    ]


def test_typos_inline_headers_and_unknown_labels():
    sections = split_sections(text_of("typos_inline.txt"))
    # COMPARISION, Findngs, IMPRESSON are typos of known names; CONCLUSION maps to impression and merges.
    assert set(sections) == {"examination", "history", "comparison", "findings", "impression"}
    assert sections["impression"] == "Normal chest radiograph.\n\nNo acute process."
    # "HEART:" and "LINES/TUBES:" are not section names: they stay in the findings.
    assert "HEART: Normal size." in sections["findings"] and "LINES/TUBES: None." in sections["findings"]


@pytest.mark.parametrize(
    "name, expected_section, expected_text",
    [
        ("no_headers.txt", "last_paragraph", "No acute cardiopulmonary abnormality."),
        (
            "comparison_then_text.txt",
            "last_paragraph",
            "Right chest tube in place. Tiny right apical pneumothorax is unchanged.",
        ),
        ("findings_only_bullets.txt", "findings", None),
        ("repeated_sections.txt", "impression", "Left basilar atelectasis.\n\nMild pulmonary edema."),
    ],
)
def test_section_priority_and_fallback(name, expected_section, expected_text):
    report = read_report(DATA / name)
    assert report.section == expected_section
    if expected_text is not None:
        assert report.text == expected_text


def test_fallback_moves_the_paragraph_out_of_its_section():
    sections = split_sections(text_of("comparison_then_text.txt"))
    assert sections["comparison"] == "___."
    sections = split_sections(text_of("no_headers.txt"))
    assert sections["preamble"].endswith("consolidation or\neffusion.")


def test_repeated_sections_merge_and_bullets_split():
    sections = split_sections(text_of("repeated_sections.txt"))
    assert sections["findings"] == "Left basilar atelectasis.\n\nSmall left pleural effusion."
    report = read_report(DATA / "findings_only_bullets.txt")
    assert report.sentences == [
        "Acute fracture of the left seventh rib.",
        "Small left pneumothorax, approx. 1 cm at the apex.",
        "No pleural effusion.",
        "Heart size is normal.",
    ]


@pytest.mark.parametrize(
    "name, problem",
    [
        ("empty.txt", "empty report"),
        ("only_headers.txt", "no text under them"),
        ("only_deid.txt", "only de-identification marks"),
        ("metadata_only.txt", "no impression / findings / last_paragraph section"),
    ],
)
def test_unusable_reports_raise_naming_the_file(name, problem):
    with pytest.raises(ReportError) as info:
        read_report(DATA / name)
    assert problem in str(info.value)
    assert str(info.value).startswith(str(DATA / name))


def test_batch_parsing_reports_and_skips(tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02FINDINGS: x")
    paths = sorted(DATA.glob("*.txt")) + [binary, tmp_path / "missing.txt"]
    parsed, errors = parse_reports(paths)
    assert {Path(p.source).name for p in parsed} == {
        "mimic_standard.txt",
        "addendum_numbered.txt",
        "typos_inline.txt",
        "no_headers.txt",
        "findings_only_bullets.txt",
        "repeated_sections.txt",
        "comparison_then_text.txt",
    }
    assert len(parsed) + len(errors) == len(paths)
    problems = {Path(e.path).name: e.problem for e in errors}
    assert "NUL bytes" in problems["binary.txt"] and "cannot read" in problems["missing.txt"]
    assert all(isinstance(p, ParsedReport) for p in parsed)


def test_min_words_and_deid_placeholder():
    with pytest.raises(ReportError, match=r"only 1 word\(s\) in impression \(minimum 2\)"):
        parse_report("IMPRESSION: Normal.", source="r1")
    assert parse_report("IMPRESSION: Normal.", min_words=1).words == ["normal"]
    report = parse_report("FINDINGS: Discussed with Dr. ___ on ____ at _____.", deid_placeholder="[X]")
    assert report.text == "Discussed with Dr. [X] on [X] at [X]."
    assert "___" in parse_report("FINDINGS: Discussed with Dr. ___ on ___.").text


def test_report_text_priority_and_joined_sections():
    sections = {"findings": "Small effusion.", "impression": "Effusion.", "indication": "Cough."}
    assert report_text(sections) == "Effusion."
    assert report_text(sections, priority=("findings",)) == "Small effusion."
    assert report_text(sections, priority=("findings+impression",)) == "Small effusion.\n\nEffusion."
    assert choose_section({"findings": "x y"}, ("impression+findings",)) == ("impression+findings", "x y")
    with pytest.raises(ReportError, match="no history"):
        report_text(sections, priority=("history",), source="rep-1")
    assert DEFAULT_PRIORITY[0] == "impression"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("IMPRESSON", "impression"),
        ("Impresion", "impression"),
        ("FINDNGS", "findings"),
        ("COMPARISION", "comparison"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("Conclusions", "impression"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("Clinical History", "history"),
        ("REASON FOR EXAM", "indication"),
        ("ADDENDUM #2", "addendum"),
        ("FINAL REPORT", ""),
        ("HEART", None),
        ("LINES/TUBES", None),
        ("POSITION", None),
    ],
)
def test_section_names_synonyms_and_typos(name, expected):
    assert normalize_section_name(name) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "1. No effusion. 2. Small left pneumothorax. 3. Dr. Smith was notified.",
            ["No effusion.", "Small left pneumothorax.", "Dr. Smith was notified."],
        ),
        ("Nodule measures 1.5 cm. No effusion.", ["Nodule measures 1.5 cm.", "No effusion."]),
        (
            "The tube tip is 4 cm. above the carina. No pneumothorax.",
            ["The tube tip is 4 cm. above the carina.", "No pneumothorax."],
        ),
        (
            "Atelectasis vs. pneumonia, e.g. aspiration. Approx. 2 cm nodule.",
            ["Atelectasis vs. pneumonia, e.g. aspiration.", "Approx. 2 cm nodule."],
        ),
        ("Discussed with Dr. ___ at ___ on ___. No change.", ["Discussed with Dr. ___ at ___ on ___.", "No change."]),
        (
            "There is a small\nleft effusion. The heart\nis normal.",
            ["There is a small left effusion.", "The heart is normal."],
        ),
        ("- Effusion\n- Edema\n* Cardiomegaly", ["Effusion", "Edema", "Cardiomegaly"]),
        ("1) Effusion.\n2) Edema.", ["Effusion.", "Edema."]),
        ("no effusion. no pneumothorax.", ["no effusion.", "no pneumothorax."]),
        ("Pneumonia? Unlikely! Done.", ["Pneumonia?", "Unlikely!", "Done."]),
        ("First paragraph\n\nSecond one.", ["First paragraph", "Second one."]),
        ("1.\n___.\nLungs clear.", ["Lungs clear."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_words_and_truncation():
    assert tokenize_words("A 1.5-cm nodule; patient's x-ray, ___ , etc.") == [
        "a",
        "1.5-cm",
        "nodule",
        "patient's",
        "x-ray",
        "etc",
    ]
    assert count_words("No ___ effusion.") == 2
    assert truncate_words("Moderate right pleural effusion, unchanged.", 3) == "Moderate right pleural"
    assert truncate_words("Two words.", 5) == "Two words."
    assert truncate_words("Anything", 0) == ""


# Synthetic report text -----------------------------------------------------------------------------------------


def test_generated_report_is_deterministic_and_parses():
    findings = {"Pleural Effusion": 1, "Pneumothorax": 0, "Pneumonia": -1}
    a = generate_report(findings, np.random.default_rng(3))
    b = generate_report(findings, np.random.default_rng(3))
    c = generate_report(findings, np.random.default_rng(4))
    assert a == b and a != c
    report = parse_report(a, priority=("findings+impression",))
    body = " ".join(report.sentences).lower()
    assert ("effusion" in body or "costophrenic" in body) and "pneumothorax" in body and "pneumonia" in body


def test_generated_report_rejects_unknown_observations_and_values():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown observation"):
        generate_report({"Effusion": 1}, rng)
    with pytest.raises(ValueError, match="not 1, 0 or -1"):
        generate_report({"Edema": 2}, rng)


def test_generated_report_states_given_attributes():
    attributes = {
        "Pleural Effusion": {"side": "bilateral", "sev": "moderate"},
        "Consolidation": {"lobe": "right upper lobe", "side": "right"},
        "Lung Lesion": {"lobe": "left lower lobe", "side": "left", "size": "2.3"},
        "Support Devices": {"keyword": "PICC", "side": "left"},
    }
    findings = {o: 1 for o in attributes}
    for seed in range(8):
        text = generate_report(findings, np.random.default_rng(seed), attributes=attributes)
        body = " ".join(parse_report(text, priority=("findings+impression",)).sentences).lower()
        assert "bilateral" in body and "effusions" in body
        assert "right upper lobe" in body and "left lower lobe" in body and "2.3" in body
        assert "left picc" in body


def test_sample_findings_follow_the_no_finding_rule():
    rng = np.random.default_rng(0)
    pathologies = [o for o in CHEXPERT_OBSERVATIONS if o not in ("No Finding", "Support Devices")]
    normal = 0
    for _ in range(300):
        findings = sample_findings(rng)
        abnormal = any(findings.get(o) in (1, -1) for o in pathologies)
        assert (findings.get("No Finding") == 1) == (not abnormal)
        normal += not abnormal
    assert 60 < normal < 200  # about 30% normal studies plus abnormal draws that came out clean


def test_corpus_labels_and_report_tree(tmp_path):
    texts, labels = generate_corpus(12, seed=1)
    assert len(texts) == len(labels) == 12 and list(labels.columns) == list(CHEXPERT_OBSERVATIONS)
    assert set(np.unique(labels.to_numpy()[~np.isnan(labels.to_numpy())])) <= {-1.0, 0.0, 1.0}
    table = write_report_tree(tmp_path, 5, seed=2)
    files = sorted((tmp_path / "files").glob("p*/p*/s*.txt"))
    assert len(files) == 5
    written = pd.read_csv(tmp_path / "labels.csv")
    assert list(written.columns[:2]) == ["subject_id", "study_id"]
    assert {f"s{s}" for s in written["study_id"]} == {f.stem for f in files}
    assert len(table) == 5
    for file in files:
        assert file.parent.name.startswith("p") and file.parent.parent.name == file.parent.name[:3]
        read_report(file)  # every generated report is usable
