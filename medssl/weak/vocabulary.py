"""Phrases of the 14 CheXpert observations: mentions, specific phrases, normal-study statements.

Written for medssl from the observations' radiological vocabulary (CheXpert's definitions, Fleischner glossary
terms); regular expressions in lower case with non-capturing groups only.

- :data:`MENTIONS`: generic mention phrases per observation; their status comes from the negation/uncertainty
  scope (:mod:`medssl.weak.negex`). Phrases marked neutral (``heart size``, ``cardiomediastinal silhouette``)
  count only when a cue reaches them (``heart size is normal``, ``possible enlargement``).
- :data:`EXCLUSIONS`: phrases that contain a mention word but are not the observation (``pericardial effusion``,
  ``soft tissue edema``, ``mass effect``); matched first and ignored.
- :data:`SPECIFIC`: narrow phrases with their own labeling functions (``blunting of the costophrenic angle``,
  ``kerley b lines``, ``deep sulcus sign``, ``air bronchograms``, ``the costophrenic angles are sharp``), each either
  taking its status from the cue scope or voting a fixed value.
- :data:`NORMAL_STUDY`: whole-study normal statements (``no acute cardiopulmonary process``).

:class:`Vocabulary` compiles them; a custom vocabulary (a site's own phrasing) is a :class:`Vocabulary` built from
edited copies of these dictionaries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.weak.negex import NEGATIVE, UNCERTAIN, cue_pattern

__all__ = [
    "MENTIONS",
    "NEUTRAL",
    "EXCLUSIONS",
    "SpecificPhrase",
    "SPECIFIC",
    "NORMAL_STUDY",
    "Vocabulary",
    "default_vocabulary",
]

_S = (
    r"(?:left|right|bilateral|bibasilar|basilar|apical|small|moderate|large|mild|severe|trace|tiny|minimal|new|"
    r"increased|decreased|persistent|residual|layering|loculated|subpulmonic|dependent)"
)

MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"widen(?:ed|ing) (?:of the )?(?:superior )?mediastin(?:um|al)",
        r"mediastinal (?:widening|enlargement|lymphadenopathy|mass)",
        r"(?:widened|enlarged) (?:superior )?mediastinum",
        r"mediastinum (?:is|appears|remains|may be|may be slightly|is slightly|is mildly) widened",
        r"enlarge(?:d|ment of the) cardiomediastinal (?:silhouette|contours?)",
        r"cardiomediastinal (?:silhouette|contours?) (?:is|are|appears|remains) (?:\w+ )?enlarged",
        r"enlarged cardiomediastinum",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"cardiac enlargement",
        r"enlarge(?:d|ment of the) (?:heart|cardiac silhouette)",
        r"(?:heart|cardiac silhouette)(?: size)? (?:is|appears|remains|are) (?:\w+ )?(?:enlarged|large|increased)",
    ),
    "Lung Lesion": (
        r"(?:pulmonary |lung |spiculated |cavitary |calcified )?nodules?",
        r"nodular (?:densit(?:y|ies)|opacit(?:y|ies)|lesions?)",
        r"(?:pulmonary |lung |hilar |spiculated |cavitary )?mass(?:es)?",
        r"(?:pulmonary |lung |cavitary )?lesions?",
        r"tumou?rs?|neoplasms?|metastas[ie]s|granulomas?|carcinoma",
    ),
    "Lung Opacity": (
        r"opacit(?:y|ies)|opacification",
        r"infiltrates?|infiltration",
        r"airspace (?:disease|process)",
        r"haziness|hazy",
        r"ground[- ]glass",
        r"(?:reticular|interstitial|increased) (?:markings|abnormalit(?:y|ies)|prominence)",
        r"increased densit(?:y|ies)|densit(?:y|ies)",
    ),
    "Edema": (
        r"(?:pulmonary |interstitial |alveolar |perihilar )?edema",
        r"(?:pulmonary )?vascular (?:congestion|engorgement|redistribution)",
        r"congestive heart failure|chf|fluid overload",
        r"pulmonary venous (?:hypertension|congestion)",
    ),
    "Consolidation": (r"consolidations?", r"consolidative (?:opacit(?:y|ies)|process|changes?)"),
    "Pneumonia": (
        r"(?:broncho)?pneumonias?",
        r"pneumonitis",
        r"infectious (?:process|etiology)|infections?",
        r"aspiration(?! precautions)",
    ),
    "Atelectasis": (
        r"atelectas[ie]s|atelectatic (?:changes?|lung)?",
        r"(?:lobar |lobe |lung )collapse|collapsed? (?:lobe|lung)",
    ),
    "Pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)|ptx",),
    "Pleural Effusion": (
        r"(?:pleural )?effusions?",
        r"hydrothorax|hydrothoraces",
        r"pleural fluid",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|scarring|calcifications?)",
        r"fibrothorax",
        r"apical (?:pleural )?(?:thickening|capping|cap)",
    ),
    "Fracture": (
        r"fractures?|fx",
        r"compression deformit(?:y|ies)",
        r"broken rib",
    ),
    "Support Devices": (
        r"(?:endotracheal|et|nasogastric|ng|og|orogastric|enteric|feeding|chest|tracheostomy|dobhoff|gastric|"
        r"nasoenteric|pleural) tubes?",
        r"tubes?",
        r"(?:central venous|central|venous|arterial|picc|midline|dialysis|hemodialysis|swan[- ]ganz|"
        r"internal jugular|ij|subclavian|pulmonary artery|pa) (?:catheters?|lines?)",
        r"picc|catheters?",
        r"pacemakers?|pacers?|(?:pacing|pacemaker|icd|dual[- ]lead|single[- ]lead) (?:wires?|leads?)|icd|defibrillator",
        r"(?:sternotomy|sternal) wires?",
        r"port-a-cath|portacath|(?:chest|power) port",
        r"drains?|stents?|devices?",
        r"lines (?:and|or) tubes|tubes (?:and|or) lines|lines/tubes",
    ),
}
"""Generic mention phrases per observation (No Finding has none: it is derived from the others)."""

NEUTRAL: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"cardiomediastinal (?:silhouette|contours?|size)",
        r"mediastinal (?:silhouette|contours?)",
        r"mediastinum",
    ),
    "Cardiomegaly": (r"heart size|heart|cardiac (?:silhouette|size)",),
    "Fracture": (r"osseous structures|bones|ribs",),
}
"""Neutral phrases: they count only when a negation or uncertainty cue reaches them."""

EXCLUSIONS: tuple[str, ...] = (
    r"pericardial effusions?",
    r"(?:joint|knee|middle ear) effusions?",
    r"(?:soft tissue|subcutaneous|chest wall) edema",
    r"mass effect",
    r"nipple shadows?",
    r"kerley b lines?|kerley lines|septal lines",
    r"pleural lines?",
    r"tube (?:feeds|feeding)",
    r"aspiration precautions",
    r"lung volumes?",
    r"densit(?:y|ies) (?:of|in) the (?:bones|spine)",
)
"""Phrases that are not the observation their words suggest."""


@dataclass(frozen=True)
class SpecificPhrase:
    """A narrow phrase with its own labeling function.

    Attributes:
        observation: the observation.
        pattern: the phrase (regular expression).
        vote: a fixed vote, or None to take the status from the cue scope.
    """

    observation: str
    pattern: str
    vote: int | None = None


SPECIFIC: tuple[SpecificPhrase, ...] = (
    SpecificPhrase(
        "Enlarged Cardiomediastinum", r"(?:widened|widening of the) (?:superior )?mediastinum|mediastinal widening"
    ),
    SpecificPhrase(
        "Enlarged Cardiomediastinum",
        r"(?:normal|unremarkable) (?:cardio)?mediastinal (?:silhouette|contours?)|(?:cardio)?mediastinal "
        r"(?:silhouette|contours?) (?:is|are) (?:normal|unremarkable|within normal limits)",
        NEGATIVE,
    ),
    SpecificPhrase("Cardiomegaly", r"(?:mild|moderate|severe|marked|massive|stable|persistent) cardiomegaly"),
    SpecificPhrase("Cardiomegaly", r"normal heart size|heart size is (?:normal|within normal limits)", NEGATIVE),
    SpecificPhrase("Cardiomegaly", r"borderline cardiomegaly|(?:top normal|borderline) heart size", UNCERTAIN),
    SpecificPhrase(
        "Lung Lesion", r"(?:\d+(?:\.\d+)? ?(?:cm|mm) )(?:nodule|mass|lesion)|spiculated|cavitary (?:lesion|mass)"
    ),
    SpecificPhrase(
        "Lung Opacity", r"(?:patchy|hazy|streaky|airspace|ground[- ]glass|basilar|lower lung) opacit(?:y|ies)"
    ),
    SpecificPhrase("Edema", r"kerley b lines?|kerley lines|cephalization|peribronchial cuffing|perihilar haziness"),
    SpecificPhrase("Edema", r"(?:mild|moderate|severe) (?:pulmonary|interstitial) edema"),
    SpecificPhrase("Consolidation", r"air bronchograms?|(?:lobar|dense|focal) consolidation"),
    SpecificPhrase(
        "Pneumonia", r"(?:multifocal|lobar|aspiration|lower lobe|upper lobe|middle lobe|lingular) pneumonia"
    ),
    SpecificPhrase("Atelectasis", r"volume loss|plate[- ]?like|linear atelectasis|subsegmental atelectasis|discoid"),
    SpecificPhrase("Atelectasis", r"(?:bibasilar|basilar|bibasal) atelectasis"),
    SpecificPhrase("Pneumothorax", r"deep sulcus sign|(?:apical|tension) pneumothorax"),
    SpecificPhrase("Pleural Effusion", r"blunting of (?:the )?(?:\w+ )?costophrenic (?:angles?|sulc[iu]s?)"),
    SpecificPhrase(
        "Pleural Effusion",
        r"(?:costophrenic (?:angles?|sulci) (?:is|are) (?:sharp|clear|preserved))|" r"sharp costophrenic angles?",
        NEGATIVE,
    ),
    SpecificPhrase("Pleural Effusion", rf"{_S} (?:pleural )?effusions?|layering (?:pleural )?fluid|meniscus sign"),
    SpecificPhrase("Pleural Other", r"calcified pleural plaques?|apical pleural thickening|pleural plaques?"),
    SpecificPhrase(
        "Fracture",
        r"(?:acute|displaced|nondisplaced|non-displaced|healed|old|healing|chronic) "
        r"(?:\w+ )?(?:rib )?fractures?|callus formation|compression fracture",
    ),
    SpecificPhrase("Fracture", r"no acute (?:osseous|bony|skeletal) (?:abnormality|abnormalities|injury)", NEGATIVE),
    SpecificPhrase("Support Devices", r"(?:endotracheal|et|tracheostomy|nasogastric|ng|og|enteric|feeding|chest) tube"),
    SpecificPhrase("Support Devices", r"(?:tip|catheter|line|tube) (?:\w+ ){0,3}(?:terminates|projects|ends|courses)"),
    SpecificPhrase("Support Devices", r"pacemaker|icd|defibrillator|sternotomy wires?|picc"),
)
"""Specific phrases: one labeling function per observation combines its phrases."""

NORMAL_STUDY: tuple[str, ...] = (
    r"no acute (?:cardiopulmonary|intrathoracic|chest|pulmonary|cardiothoracic) (?:process|abnormality|abnormalities|"
    r"disease|findings?|pathology|change)",
    r"normal (?:chest )?(?:radiograph|x-ray|study|examination|exam|chest)",
    r"no (?:radiographic )?evidence of (?:acute )?(?:cardiopulmonary|intrathoracic) (?:disease|process|abnormality)",
    r"unremarkable (?:chest )?(?:radiograph|study|examination|exam)",
    r"(?:chest|study|examination) is (?:normal|unremarkable)",
)
"""Whole-study normal statements."""


@dataclass
class Vocabulary:
    """Compiled phrases of the observations.

    Args:
        mentions: generic phrases per observation (default :data:`MENTIONS`).
        neutral: neutral phrases per observation (default :data:`NEUTRAL`).
        exclusions: phrases to ignore (default :data:`EXCLUSIONS`).
        specific: specific phrases (default :data:`SPECIFIC`).
        normal_study: normal statements (default :data:`NORMAL_STUDY`).
    """

    mentions: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(MENTIONS))
    neutral: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(NEUTRAL))
    exclusions: Sequence[str] = EXCLUSIONS
    specific: Sequence[SpecificPhrase] = SPECIFIC
    normal_study: Sequence[str] = NORMAL_STUDY

    def __post_init__(self) -> None:
        entries: list[tuple[str, str | None, bool]] = []
        for observation, phrases in self.mentions.items():
            if observation not in CHEXPERT_OBSERVATIONS:
                raise ValueError(f"unknown observation {observation!r} in the vocabulary")
            entries.extend((p, observation, False) for p in phrases)
        for observation, phrases in self.neutral.items():
            entries.extend((p, observation, True) for p in phrases)
        entries.extend((p, None, False) for p in self.exclusions)
        for pattern, _, _ in entries:
            if re.compile(pattern).groups:
                raise ValueError(f"vocabulary phrase {pattern!r} has a capturing group; use (?:...)")
        # Longest phrase first, so that "pericardial effusion" wins over "effusion" and "heart size is enlarged"
        # over "heart size".
        entries.sort(key=lambda e: -len(e[0]))
        self.mention_pattern = cue_pattern([e[0] for e in entries])
        self.mention_groups = [(e[1], e[2]) for e in entries]
        self.observations = tuple(o for o in CHEXPERT_OBSERVATIONS if o in self.mentions or o in self.neutral)
        # All specific phrases in one pattern: group i + 1 is specific_groups[i] = (observation, fixed vote or None).
        # Phrases of different observations may overlap ("chest tube" in a device phrase and elsewhere), so there is
        # one pattern per observation, each scanned once per sentence.
        self.specific_patterns: dict[str, tuple[re.Pattern[str], list[int | None]]] = {}
        by_observation: dict[str, list[SpecificPhrase]] = {}
        for phrase in self.specific:
            by_observation.setdefault(phrase.observation, []).append(phrase)
        for observation, phrases in by_observation.items():
            self.specific_patterns[observation] = (
                cue_pattern([p.pattern for p in phrases]),
                [p.vote for p in phrases],
            )
        self.normal_pattern = cue_pattern(list(self.normal_study))


_DEFAULT: Vocabulary | None = None


def default_vocabulary() -> Vocabulary:
    """The shared default :class:`Vocabulary` (compiled once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Vocabulary()
    return _DEFAULT
