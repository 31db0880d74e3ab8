from __future__ import annotations

import pytest

from medssl.data.reports import parse_report
from medssl.weak import (
    ABSTAIN,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    AnnotatedReport,
    LabelingFunction,
    MentionLF,
    NormalStudyLF,
    SpecificLF,
    chexpert_lfs,
    chexpert_rule_votes,
    label_matrix,
    labeling_function,
)
from medssl.weak.negex import SentenceCues, combine_votes, naive_status

P, N, U = POSITIVE, NEGATIVE, UNCERTAIN


def rule_votes(sentence: str) -> dict[str, int]:
    doc = AnnotatedReport(parse_report(f"FINDINGS: {sentence}", min_words=1))
    return {k: v for k, v in chexpert_rule_votes(doc).items() if v != ABSTAIN}


@pytest.mark.parametrize(
    "sentence, expected",
    [
        # negation and its scope
        ("No pleural effusion.", {"Pleural Effusion": N}),
        ("No effusion, but consolidation is present.", {"Pleural Effusion": N, "Consolidation": P}),
        ("No pneumothorax; small left apical pleural thickening.", {"Pneumothorax": N, "Pleural Other": P}),
        ("There is no pneumothorax and the heart is enlarged.", {"Pneumothorax": N, "Cardiomegaly": P}),
        ("Moderate cardiomegaly without pulmonary edema.", {"Cardiomegaly": P, "Edema": N}),
        ("The lungs are free of focal consolidation.", {"Consolidation": N}),
        ("The previously seen left effusion has resolved.", {"Pleural Effusion": N}),
        ("Interval resolution of edema.", {"Edema": N}),
        ("The endotracheal tube has been removed.", {"Support Devices": N}),
        ("The nodule is no longer seen.", {"Lung Lesion": N}),
        ("Pneumothorax is not seen.", {"Pneumothorax": N}),
        # lists
        (
            "No pleural effusion, pneumothorax or focal consolidation.",
            {"Pleural Effusion": N, "Pneumothorax": N, "Consolidation": N},
        ),
        (
            "No evidence of focal consolidation, pleural effusion, pulmonary edema, or pneumothorax.",
            {"Consolidation": N, "Pleural Effusion": N, "Edema": N, "Pneumothorax": N},
        ),
        # uncertainty and double negatives
        ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
        ("Cannot exclude a small pneumothorax.", {"Pneumothorax": U}),
        ("Pneumothorax is not ruled out.", {"Pneumothorax": U}),
        ("Mild edema is not excluded.", {"Edema": U}),
        ("Possible small left pleural effusion.", {"Pleural Effusion": U}),
        ("Likely left basilar atelectasis.", {"Atelectasis": U}),
        ("Opacities are concerning for pneumonia.", {"Lung Opacity": P, "Pneumonia": U}),
        (
            "Right basilar opacity may represent atelectasis vs. pneumonia.",
            {"Lung Opacity": P, "Atelectasis": U, "Pneumonia": U},
        ),
        ("Atelectasis versus pneumonia at the left base.", {"Atelectasis": U, "Pneumonia": U}),
        ("Edema may be present.", {"Edema": U}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
        # two observations, pseudo-negations, neutral and excluded phrases
        ("Small left effusion with adjacent atelectasis.", {"Pleural Effusion": P, "Atelectasis": P}),
        ("No significant change in the moderate right pleural effusion.", {"Pleural Effusion": P}),
        ("No interval change in mild pulmonary edema.", {"Edema": P}),
        ("Heart size is normal.", {"Cardiomegaly": N}),
        ("The heart is not enlarged.", {"Cardiomegaly": N}),
        ("The cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": N}),
        ("Heart size is stable.", {}),
        ("No pericardial effusion.", {}),
        ("The heart is normal in size, with a new left effusion.", {"Cardiomegaly": N, "Pleural Effusion": P}),
        # specific phrases
        ("Blunting of the left costophrenic angle.", {"Pleural Effusion": P}),
        ("The costophrenic angles are sharp.", {"Pleural Effusion": N}),
        ("Kerley B lines.", {"Edema": P}),
        ("A right deep sulcus sign is present.", {"Pneumothorax": P}),
        ("Dense consolidation with air bronchograms.", {"Consolidation": P}),
    ],
)
def test_rule_votes_on_hand_written_sentences(sentence, expected):
    assert rule_votes(sentence) == expected


def test_combine_votes_follows_chexpert_precedence():
    assert combine_votes([N, U, P]) == P
    assert combine_votes([N, U]) == U
    assert combine_votes([N, N]) == N
    assert combine_votes([]) == ABSTAIN


def test_sentence_cues_classify_arbitrary_spans():
    cues = SentenceCues("No effusion, but consolidation is present.")
    low = cues.lower
    assert cues.status(low.index("effusion"), low.index("effusion") + 8, "Pleural Effusion") == N
    assert cues.status(low.index("consolidation"), low.index("consolidation") + 13, "Consolidation") == P
    assert cues.naive == N  # the coarse sentence-level status differs: that is the point of the naive LF
    assert naive_status("pneumonia cannot be excluded") == U


def _doc(text: str) -> AnnotatedReport:
    return AnnotatedReport(parse_report(text, min_words=1))


def test_section_lfs_read_their_sections_and_impression_wins():
    doc = _doc("FINDINGS: Opacity may represent pneumonia.\nIMPRESSION: Right lower lobe pneumonia.")
    assert MentionLF("Pneumonia", ("impression",))(doc) == P
    assert MentionLF("Pneumonia", ("findings",))(doc) == U
    assert chexpert_rule_votes(doc)["Pneumonia"] == P  # the impression is preferred over the findings
    doc = _doc("FINDINGS: Small left effusion.\nIMPRESSION: No acute cardiopulmonary process.")
    assert MentionLF("Pleural Effusion", ("impression",))(doc) == ABSTAIN
    assert chexpert_rule_votes(doc)["Pleural Effusion"] == P  # findings used when the impression is silent
    assert NormalStudyLF("Pleural Effusion")(doc) == N


def test_naive_lf_errs_where_the_scoped_lf_does_not():
    doc = _doc("FINDINGS: No pneumothorax, but there is a small left pleural effusion.")
    assert MentionLF("Pleural Effusion", ("findings",))(doc) == P
    assert MentionLF("Pleural Effusion", ("impression", "findings"), status="naive")(doc) == N


def test_last_paragraph_fallback_counts_as_impression():
    doc = _doc("Two views of the chest.\n\nSmall right pneumothorax.")
    assert doc.report.section == "last_paragraph"
    assert MentionLF("Pneumothorax", ("impression",))(doc) == P


def test_specific_lf_and_rule_set_shape():
    doc = _doc("FINDINGS: Blunting of the right costophrenic angle. No blunting of the left costophrenic angle.")
    assert SpecificLF("Pleural Effusion")(doc) == P
    assert doc.specific_votes("Pleural Effusion", "findings") == [P, N]
    lfs = chexpert_lfs()
    names = [lf.name for lf in lfs]
    assert len(names) == len(set(names))
    observations = {lf.observation for lf in lfs}
    assert "No Finding" not in observations and len(observations) == 13
    assert "normal:Support Devices" not in names and "specific:Pleural Effusion" in names
    assert all(sum(lf.observation == o for lf in lfs) >= 4 for o in observations)


def test_custom_labeling_function_in_a_label_matrix():
    @labeling_function("Pleural Effusion")
    def meniscus(doc):
        """Meniscus sign means fluid."""
        return POSITIVE if doc.contains(r"meniscus sign") else ABSTAIN

    assert isinstance(meniscus, LabelingFunction)
    assert meniscus.name == "meniscus:Pleural Effusion" and meniscus.description == "Meniscus sign means fluid."
    texts = ["FINDINGS: Meniscus sign at the left base.", "FINDINGS: Clear lungs bilaterally."]
    matrix, errors = label_matrix(texts, ["a", "b"], lfs=[meniscus, MentionLF("Pleural Effusion")])
    assert not errors and matrix.votes.tolist() == [[P, ABSTAIN], [ABSTAIN, ABSTAIN]]
    with pytest.raises(ValueError, match="unique"):
        label_matrix(texts, lfs=[meniscus, meniscus])
