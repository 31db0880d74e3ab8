"""Mentions, negation and uncertainty in report sentences (a NegEx-style scope detector written for medssl).

A sentence is analysed once: mention phrases are found with one compiled pattern (the vocabulary, see
:mod:`medssl.weak.vocabulary`), and three kinds of cues with one pattern each, in this order:

1. pseudo-negations (``no change in``, ``no significant interval change``, ``not increased``): masked, no effect;
2. uncertainty cues (``may``, ``possible``, ``cannot exclude``, ``cannot be excluded``, ``not ruled out``,
   ``versus``, ``concerning for`` ...): masked before negations are searched, so that double negatives
   (``cannot be excluded``, ``not ruled out``) read as uncertain, never as negated;
3. negation cues (``no``, ``not``, ``without``, ``free of``, ``negative for``, ``resolution of``, ``has resolved``,
   ``has been removed``, ``is not seen``, ``no longer seen``, and ``normal`` / ``within normal limits`` for the
   heart, mediastinum and bones only).

Every cue has a direction: ``pre`` cues reach mentions after them (``no effusion``), ``post`` cues mentions before
them (``effusion has resolved``), ``both`` either way (``atelectasis versus pneumonia``), within a window of words and
never across a clause boundary (``;``, ``:``, ``but``, ``however``, ``although``, ``except``, ``other than``,
``and there`` ...). A cue inside the mention's own span applies too. So in ``no effusion, pneumothorax or
consolidation`` the ``no`` reaches all three mentions, while in ``no effusion, but consolidation is present`` it
stops at ``but``.

A mention is uncertain when an uncertainty cue reaches it (negated and uncertain is uncertain, as in CheXpert),
negated when only a negation cue does, positive otherwise. "Neutral" mentions (``heart size``,
``cardiomediastinal silhouette``) say nothing by themselves: they count only when a cue reaches them.

:func:`naive_status` is the deliberately simple alternative used by one family of labeling functions: any
uncertainty word in the sentence makes every mention uncertain, else any negation word makes it negated.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "Vote",
    "ABSTAIN",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "VOTE_NAMES",
    "Cue",
    "CUES",
    "Mention",
    "SentenceCues",
    "combine_votes",
    "analyse_sentence",
    "naive_status",
    "cue_pattern",
]


class Vote(IntEnum):
    """What a labeling function says about one observation in one report.

    The values are the class indices of the label models (abstain is -1, classes 0..2), as Snorkel also codes
    them; :func:`medssl.weak.aggregate.to_chexpert` turns them into CheXpert's 1 / 0 / -1 / blank.
    """

    ABSTAIN = -1
    NEGATIVE = 0
    POSITIVE = 1
    UNCERTAIN = 2


ABSTAIN = int(Vote.ABSTAIN)
NEGATIVE = int(Vote.NEGATIVE)
POSITIVE = int(Vote.POSITIVE)
UNCERTAIN = int(Vote.UNCERTAIN)
VOTE_NAMES = {ABSTAIN: "abstain", NEGATIVE: "negative", POSITIVE: "positive", UNCERTAIN: "uncertain"}


def combine_votes(votes: Iterable[int]) -> int:
    """CheXpert's precedence over several mentions: positive, else uncertain, else negative, else abstain.

    Args:
        votes: per-mention votes.

    Returns:
        The combined vote.
    """
    best = ABSTAIN
    for vote in votes:
        if vote == POSITIVE:
            return POSITIVE
        if vote == UNCERTAIN:
            best = UNCERTAIN
        elif vote == NEGATIVE and best == ABSTAIN:
            best = NEGATIVE
    return best


@dataclass(frozen=True)
class Cue:
    """One negation, uncertainty, pseudo-negation or clause-boundary cue.

    Attributes:
        pattern: regular expression (lower case; non-capturing groups only).
        kind: ``"negation"``, ``"uncertainty"``, ``"pseudo"`` or ``"boundary"``.
        direction: ``"pre"`` (reaches later words), ``"post"`` (earlier words) or ``"both"``.
        window: how many words away a mention may be.
        observations: observations the cue applies to; empty for all.
    """

    pattern: str
    kind: str
    direction: str = "pre"
    window: int = 8
    observations: tuple[str, ...] = ()


_CARDIAC = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Fracture")
_VERBS_NOT = r"(?:is|are|was|were|has|have|has been|have been)"
_SEEN = (
    r"(?:seen|identified|visualized|visible|appreciated|present|evident|demonstrated|detected|noted|enlarged|widened)"
)

CUES: tuple[Cue, ...] = (
    # Pseudo-negations: "no change in the effusion" says the effusion is there.
    Cue(
        r"no (?:significant |substantial |appreciable |definite |major |other |further )?(?:interval )?"
        r"(?:change|changes|increase|decrease|progression|worsening|improvement|difference)",
        "pseudo",
    ),
    Cue(r"not (?:significantly |substantially |markedly )?(?:changed|increased|decreased|improved|worsened)", "pseudo"),
    Cue(r"without (?:significant |interval |appreciable )?(?:interval )?(?:change|changes)", "pseudo"),
    Cue(r"not only", "pseudo"),
    Cue(r"gram[- ]negative", "pseudo"),
    # Uncertainty, double negatives first.
    Cue(
        r"(?:can ?not|can't|could not) (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
        "uncertainty",
        "post",
        6,
    ),
    Cue(
        r"(?:is|are)? ?not (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
        "uncertainty",
        "post",
        6,
    ),
    Cue(
        r"(?:can ?not|can't|could not) (?:entirely |completely |definitely )?(?:exclude|rule out)",
        "uncertainty",
        "pre",
        8,
    ),
    Cue(r"(?:difficult|hard) to (?:exclude|rule out)", "uncertainty", "both", 6),
    Cue(
        r"(?:may|might|could|can) (?:be|also be) (?:present|seen|developing|noted|there|superimposed)",
        "uncertainty",
        "post",
        5,
    ),
    Cue(
        r"(?:is|are) (?:possible|possibly present|suspected|questioned|questionable|likely|probable|not excluded)",
        "uncertainty",
        "post",
        5,
    ),
    Cue(r"versus|vs\.?|and/or", "uncertainty", "both", 3),
    Cue(r"\?", "uncertainty", "post", 3),
    Cue(r"may|might|could", "uncertainty", "pre", 6),
    Cue(
        r"possibl[ey]|probabl[ey]|likely|presumabl[ey]|presumed|questionabl[ey]|suspected|equivocal|indeterminate",
        "uncertainty",
        "pre",
        5,
    ),
    Cue(r"borderline|top normal|top-normal|upper limits? of normal", "uncertainty", "pre", 4),
    Cue(
        r"question of|suspicious (?:for|of)|suspicion (?:for|of)|concerning (?:for|of)|concern for|worrisome for",
        "uncertainty",
        "pre",
        6,
    ),
    Cue(
        r"suggest(?:s|ed|ing|ive of)?|raises? the possibility of|differential (?:diagnosis )?(?:includes?|of)",
        "uncertainty",
        "pre",
        6,
    ),
    Cue(r"(?:evaluate|evaluation|assess|assessment|eval) for|rule out|r/o", "uncertainty", "pre", 6),
    # Negation.
    Cue(
        r"no longer (?:seen|identified|visualized|visible|appreciated|present|evident|demonstrated)",
        "negation",
        "post",
        6,
    ),
    Cue(
        r"no (?:radiographic |definite |convincing |new |acute |focal |significant |residual )*"
        r"(?:evidence|signs?|findings?) (?:of|for|to suggest)",
        "negation",
        "pre",
        10,
    ),
    Cue(
        rf"{_VERBS_NOT} (?:now |since )?(?:resolved|cleared|been removed|been withdrawn|been discontinued|resolving)",
        "negation",
        "post",
        6,
    ),
    Cue(
        rf"(?:is|are|was|were) (?:now )?(?:absent|resolved|removed|gone|not {_SEEN}|no longer {_SEEN})",
        "negation",
        "post",
        6,
    ),
    Cue(rf"not {_SEEN}", "negation", "post", 4),
    Cue(r"resolved|removed|removal|cleared", "negation", "post", 2),
    Cue(
        r"no|not|without|nor|never|negative for|free of|clear of|absence of|absent|resolution of|removal of|"
        r"resolved|rather than|exclude[sd]?|ruled out",
        "negation",
        "pre",
        10,
    ),
    Cue(
        r"(?:is|are|appears?|remains?) (?:normal|unremarkable|within normal limits|not enlarged|normal in size)|"
        r"within normal limits|normal in size|unremarkable",
        "negation",
        "post",
        5,
        _CARDIAC,
    ),
    Cue(r"normal|unremarkable", "negation", "pre", 3, _CARDIAC),
    # Clause boundaries.
    Cue(
        r";|:|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b|\bwhile\b|\byet\b|\bexcept\b|\baside from\b|"
        r"\bapart from\b|\bother than\b|\bnevertheless\b|\band (?:the|there)\b|, there (?:is|are|has been|have been)\b|"
        r"\bwith (?:the )?exception of\b",
        "boundary",
    ),
)
"""Cue lists written for medssl after the cue families of NegEx, NegBio and the CheXpert labeler."""


def cue_pattern(patterns: Sequence[str]) -> re.Pattern[str]:
    """Compile phrases into one alternation, each a capturing group, bounded by word boundaries where it has letters.

    When every phrase starts with a letter (or a group), one shared "word start" check guards the whole
    alternation: the engine then tries the alternatives at word starts only, several times faster on long lists.

    Args:
        patterns: regular expressions without capturing groups; group ``i + 1`` of a match is phrase ``i``.

    Returns:
        The compiled pattern.
    """

    def right(p: str) -> str:
        return r"(?![\w])" if re.search(r"[\w)?\]]$", p) and not p.endswith(r"\?") else ""

    starts_word = [bool(re.match(r"[\w(]", p)) for p in patterns]
    n_word = starts_word.index(False) if False in starts_word else len(patterns)
    if n_word and not any(starts_word[n_word:]):
        # Phrases starting with a letter first (under one guard), then the others (";", "?").
        guarded = "|".join(f"((?:{p}){right(p)})" for p in patterns[:n_word])
        rest = "".join(f"|((?:{p}){right(p)})" for p in patterns[n_word:])
        return re.compile(r"(?:(?<![\w])(?=[\w(])(?:" + guarded + ")" + rest + ")")
    parts = []
    for p in patterns:
        left = r"(?<![\w])" if re.match(r"[\w(]", p) else ""
        parts.append(f"({left}(?:{p}){right(p)})")
    return re.compile("|".join(parts))


def _compile_cues(kind: str) -> tuple[re.Pattern[str], list[Cue]]:
    # Longest first; phrases that do not start with a letter ("?") last, so that cue_pattern can guard the others.
    cues = sorted(
        (c for c in CUES if c.kind == kind), key=lambda c: (not re.match(r"[\w(]", c.pattern), -len(c.pattern))
    )
    return cue_pattern([c.pattern for c in cues]), cues


_PSEUDO, _PSEUDO_CUES = _compile_cues("pseudo")
_UNCERTAINTY, _UNCERTAINTY_CUES = _compile_cues("uncertainty")
_NEGATION, _NEGATION_CUES = _compile_cues("negation")
_BOUNDARY = re.compile("|".join(c.pattern for c in CUES if c.kind == "boundary"))
_WORD_SPAN = re.compile(r"\S+")
_NAIVE_UNCERTAIN = re.compile(
    r"\b(?:may|might|could|possible|possibly|probable|probably|likely|versus|vs|cannot|questionable|suspicious|"
    r"concerning|suggest\w*|borderline|equivocal)\b"
)
_NAIVE_NEGATIVE = re.compile(
    r"\b(?:no|not|without|free of|negative|resolved|resolution|removed|removal|normal|absent|unremarkable)\b"
)


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in one sentence.

    Attributes:
        observation: the CheXpert observation.
        start: character offset in the sentence.
        end: character offset of the end.
        text: the words matched.
        status: :data:`POSITIVE`, :data:`NEGATIVE` or :data:`UNCERTAIN` by cue scope; :data:`ABSTAIN` for a neutral
            mention no cue reaches.
        naive: the sentence-level status (:func:`naive_status`); :data:`ABSTAIN` for neutral mentions.
    """

    observation: str
    start: int
    end: int
    text: str
    status: int
    naive: int


def naive_status(sentence_lower: str) -> int:
    """Sentence-level status: uncertain if any uncertainty word, else negated if any negation word, else positive.

    Args:
        sentence_lower: the sentence in lower case.

    Returns:
        The vote.
    """
    if _NAIVE_UNCERTAIN.search(sentence_lower):
        return UNCERTAIN
    if _NAIVE_NEGATIVE.search(sentence_lower):
        return NEGATIVE
    return POSITIVE


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


class SentenceCues:
    """The cues of one sentence, found once; :meth:`status` classifies any span of it.

    Args:
        sentence: the sentence (any case).
    """

    __slots__ = ("sentence", "lower", "_word_starts", "_boundaries", "_cues", "_naive")

    def __init__(self, sentence: str) -> None:
        self.sentence = sentence
        self.lower = sentence.lower()
        self._word_starts: list[int] | None = None
        self._boundaries: list[int] = []
        self._cues: list[tuple[bool, Cue, int, int]] = []
        self._naive: int | None = None

    def _analyse(self) -> None:
        low = self.lower
        self._word_starts = [m.start() for m in _WORD_SPAN.finditer(low)]
        # A boundary belongs to the first word starting at or after it ("effusion; edema": "edema" opens a clause).
        self._boundaries = [bisect_left(self._word_starts, m.start()) for m in _BOUNDARY.finditer(low)]
        masked = _mask(low, [m.span() for m in _PSEUDO.finditer(low)])
        spans = []
        for match in _UNCERTAINTY.finditer(masked):
            cue = _UNCERTAINTY_CUES[match.lastindex - 1]
            self._cues.append((True, cue, self._word_at(match.start()), self._word_at(max(match.end() - 1, 0))))
            spans.append(match.span())
        masked = _mask(masked, spans)
        for match in _NEGATION.finditer(masked):
            cue = _NEGATION_CUES[match.lastindex - 1]
            self._cues.append((False, cue, self._word_at(match.start()), self._word_at(max(match.end() - 1, 0))))

    def _word_at(self, offset: int) -> int:
        return max(bisect_right(self._word_starts, offset) - 1, 0)

    def _clause_of(self, word: int) -> int:
        return bisect_right(self._boundaries, word)

    @property
    def naive(self) -> int:
        """The sentence-level status (:func:`naive_status`)."""
        if self._naive is None:
            self._naive = naive_status(self.lower)
        return self._naive

    def status(self, start: int, end: int, observation: str, neutral: bool = False) -> int:
        """Status of the span ``[start, end)`` as a mention of ``observation``.

        Args:
            start: first character of the mention.
            end: end of the mention.
            observation: the observation (cues restricted to some observations check it).
            neutral: a neutral phrase: ABSTAIN unless a cue reaches it.

        Returns:
            UNCERTAIN when an uncertainty cue reaches the span, else NEGATIVE when a negation cue does, else
            POSITIVE (ABSTAIN for a neutral span).
        """
        if self._word_starts is None:
            self._analyse()
        first, last = self._word_at(start), self._word_at(max(end - 1, start))
        clause = self._clause_of(first)
        negated = False
        for uncertainty, cue, cue_first, cue_last in self._cues:
            if cue.observations and observation not in cue.observations:
                continue
            reaches = first <= cue_first <= last
            if not reaches and cue.direction != "post" and cue_last < first:
                reaches = first - cue_last <= cue.window and self._clause_of(cue_last) == clause
            if not reaches and cue.direction != "pre" and cue_first > last:
                reaches = cue_first - last <= cue.window and self._clause_of(cue_first) == clause
            if reaches:
                if uncertainty:
                    return UNCERTAIN
                negated = True
        if negated:
            return NEGATIVE
        return ABSTAIN if neutral else POSITIVE


def analyse_sentence(
    sentence: str | SentenceCues,
    mention_pattern: re.Pattern[str],
    mention_groups: Sequence[tuple[str | None, bool]],
) -> list[Mention]:
    """Find the mentions of a sentence and classify each by the cues that reach it.

    Args:
        sentence: one sentence, or its :class:`SentenceCues` (reused when the caller keeps it).
        mention_pattern: the vocabulary's compiled pattern (one capturing group per phrase).
        mention_groups: for each group, ``(observation or None for an exclusion, neutral)``.

    Returns:
        The mentions, in order.
    """
    cues = sentence if isinstance(sentence, SentenceCues) else SentenceCues(sentence)
    mentions = []
    for match in mention_pattern.finditer(cues.lower):
        observation, neutral = mention_groups[match.lastindex - 1]
        if observation is None:
            continue
        start, end = match.span()
        status = cues.status(start, end, observation, neutral)
        mentions.append(
            Mention(observation, start, end, cues.sentence[start:end], status, ABSTAIN if neutral else cues.naive)
        )
    return mentions
