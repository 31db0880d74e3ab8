r"""Labeling functions over parsed reports, and the rule set for the 14 CheXpert observations.

A labeling function (LF) looks at one report and votes on one observation: :data:`~medssl.weak.negex.POSITIVE`,
:data:`~medssl.weak.negex.NEGATIVE`, :data:`~medssl.weak.negex.UNCERTAIN` or
:data:`~medssl.weak.negex.ABSTAIN`. It receives an :class:`AnnotatedReport`, which carries the parsed report
(sections, sentences, words) and computes the mentions of every observation once, on first use, for all LFs::

    from medssl.weak import POSITIVE, ABSTAIN, labeling_function

    @labeling_function("Pleural Effusion")
    def costophrenic_blunting(doc):
        return POSITIVE if doc.contains(r"blunting of the \w+ costophrenic angle") else ABSTAIN

:func:`chexpert_lfs` returns the shipped rule set: for each observation (No Finding is derived, see
:func:`medssl.weak.aggregate.add_no_finding`)

- ``impression:<obs>``: mentions in the impression (or the last-paragraph fallback), status by cue scope;
- ``findings:<obs>``: the same in the findings;
- ``sentence:<obs>``: mentions in impression and findings, status by the whole sentence's cue words (coarser: wrong
  on ``no effusion, but consolidation``, right on simple sentences), a differently-erring voter;
- ``specific:<obs>``: the observation's specific phrases (``blunting of the costophrenic angle``, ``kerley b
  lines``, ``the costophrenic angles are sharp`` ...);
- ``normal:<obs>``: negative when the impression states a normal study (``no acute cardiopulmonary process``); not
  for Support Devices (lines are listed in normal studies).

Within one LF several mentions combine with CheXpert's precedence (positive, then uncertain, then negative).
:func:`chexpert_rule_votes` is the deterministic CheXpert-style labeler built from the same pieces (impression
preferred over findings), for comparison with the label models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from medssl.data.reports import ParsedReport
from medssl.weak.negex import ABSTAIN, NEGATIVE, Mention, SentenceCues, analyse_sentence, combine_votes
from medssl.weak.vocabulary import Vocabulary, default_vocabulary

__all__ = [
    "AnnotatedReport",
    "LabelingFunction",
    "labeling_function",
    "MentionLF",
    "SpecificLF",
    "NormalStudyLF",
    "chexpert_lfs",
    "chexpert_rule_votes",
    "BODY_SECTIONS",
]

BODY_SECTIONS: tuple[str, ...] = ("impression", "findings")
"""The sections LFs read by default (``impression`` includes the last-paragraph fallback)."""


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class AnnotatedReport:
    """A parsed report with the mentions of each section found once and shared by all labeling functions.

    Args:
        report: the parsed report.
        vocabulary: the phrases (default: :func:`medssl.weak.vocabulary.default_vocabulary`).
    """

    def __init__(self, report: ParsedReport, vocabulary: Vocabulary | None = None) -> None:
        self.report = report
        self.vocabulary = vocabulary or default_vocabulary()
        self._cues: dict[str, list[SentenceCues]] = {}
        self._mentions: dict[str, list[tuple[int, Mention]]] = {}
        self._by_observation: dict[str, dict[str, list[Mention]]] = {}
        self._specific: dict[tuple[str, str], list[int]] = {}
        self._normal: bool | None = None

    @property
    def sections(self) -> dict[str, str]:
        """``{section name: text}`` of the report."""
        return self.report.sections

    @property
    def source(self) -> str | None:
        """The report's file or identifier."""
        return self.report.source

    def section_text(self, section: str) -> str:
        """Text of a section; ``impression`` falls back to the last paragraph when there are no findings either."""
        if section == "impression":
            return self.report.impression
        return self.report.sections.get(section, "")

    def sentences(self, section: str) -> list[str]:
        """Sentences of a section (``impression`` with its fallback)."""
        if section == "impression" and "impression" not in self.report.sections:
            return self.report.sentences_of("last_paragraph") if not self.report.findings else []
        return self.report.sentences_of(section)

    def cues(self, section: str) -> list[SentenceCues]:
        """The :class:`~medssl.weak.negex.SentenceCues` of each sentence of a section, made once."""
        if section not in self._cues:
            self._cues[section] = [SentenceCues(s) for s in self.sentences(section)]
        return self._cues[section]

    def mentions(self, section: str) -> list[tuple[int, Mention]]:
        """``(sentence index, mention)`` pairs of a section, computed once."""
        if section not in self._mentions:
            vocab = self.vocabulary
            found = [
                (index, mention)
                for index, cues in enumerate(self.cues(section))
                for mention in analyse_sentence(cues, vocab.mention_pattern, vocab.mention_groups)
            ]
            self._mentions[section] = found
            by_observation: dict[str, list[Mention]] = {}
            for _, mention in found:
                by_observation.setdefault(mention.observation, []).append(mention)
            self._by_observation[section] = by_observation
        return self._mentions[section]

    def mentions_of(self, observation: str, sections: Sequence[str] = BODY_SECTIONS) -> list[Mention]:
        """Mentions of one observation in the given sections."""
        out: list[Mention] = []
        for section in sections:
            if section not in self._by_observation:
                self.mentions(section)
            out.extend(self._by_observation[section].get(observation, ()))
        return out

    def specific_votes(self, observation: str, section: str) -> list[int]:
        """Votes of the observation's specific phrases in one section (fixed vote, or the cue-scope status)."""
        key = (observation, section)
        if key not in self._specific:
            votes: list[int] = []
            entry = self.vocabulary.specific_patterns.get(observation)
            if entry is not None:
                pattern, fixed = entry
                for cues in self.cues(section):
                    for match in pattern.finditer(cues.lower):
                        vote = fixed[match.lastindex - 1]
                        votes.append(vote if vote is not None else cues.status(*match.span(), observation))
            self._specific[key] = votes
        return self._specific[key]

    def is_normal_study(self) -> bool:
        """True when the impression (or the fallback paragraph) states a normal study."""
        if self._normal is None:
            text = self.section_text("impression").lower()
            self._normal = bool(text) and self.vocabulary.normal_pattern.search(text) is not None
        return self._normal

    def contains(self, pattern: str, sections: Sequence[str] = BODY_SECTIONS) -> bool:
        """True when a regular expression (searched in lower case) occurs in one of the sections."""
        compiled = _compiled(pattern)
        return any(compiled.search(self.section_text(s).lower()) for s in sections)


class LabelingFunction:
    """One labeling function: a name, the observation it votes on, and the function.

    Args:
        name: unique name (shown in the LF summary), e.g. ``"specific:Edema"``.
        observation: a CheXpert observation.
        function: ``function(doc: AnnotatedReport) -> vote``; the vote is an int of
            :class:`~medssl.weak.negex.Vote`. None for subclasses that define :meth:`vote`.
        description: one line for the summary table.
    """

    def __init__(
        self,
        name: str,
        observation: str,
        function: Callable[[AnnotatedReport], int] | None = None,
        description: str = "",
    ) -> None:
        self.name = name
        self.observation = observation
        self.function = function
        if not description and function is not None:
            description = (function.__doc__ or "").strip().split("\n")[0]
        self.description = description

    def vote(self, doc: AnnotatedReport) -> int:
        """The vote on one report."""
        if self.function is None:
            raise NotImplementedError(f"{type(self).__name__} {self.name!r} has no function")
        return int(self.function(doc))

    def __call__(self, doc: AnnotatedReport) -> int:
        """The vote on one report (:meth:`vote`)."""
        return self.vote(doc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, observation={self.observation!r})"


def labeling_function(
    observation: str, name: str | None = None, description: str = ""
) -> Callable[[Callable[[AnnotatedReport], int]], LabelingFunction]:
    """Decorator turning ``f(doc) -> vote`` into a :class:`LabelingFunction`.

    Args:
        observation: the observation the function votes on.
        name: LF name; defaults to ``"<function name>:<observation>"``.
        description: summary line; defaults to the docstring's first line.

    Returns:
        The decorator.
    """

    def wrap(function: Callable[[AnnotatedReport], int]) -> LabelingFunction:
        return LabelingFunction(name or f"{function.__name__}:{observation}", observation, function, description)

    return wrap


class MentionLF(LabelingFunction):
    """Votes from the generic mentions of an observation in some sections.

    Args:
        observation: the observation.
        sections: sections read (``impression`` includes the last-paragraph fallback).
        status: ``"scope"`` (cue scope per mention) or ``"naive"`` (cue words anywhere in the sentence).
        name: LF name (default ``"<first section>:<obs>"`` or ``"sentence:<obs>"`` for naive).
    """

    def __init__(
        self, observation: str, sections: Sequence[str] = ("impression",), status: str = "scope", name: str = ""
    ) -> None:
        if status not in ("scope", "naive"):
            raise ValueError(f"status must be 'scope' or 'naive', got {status!r}")
        default = f"sentence:{observation}" if status == "naive" else f"{sections[0]}:{observation}"
        super().__init__(
            name or default,
            observation,
            description=f"mentions in {'+'.join(sections)}, {'sentence-level' if status == 'naive' else 'scoped'} cues",
        )
        self.sections = tuple(sections)
        self.naive = status == "naive"

    def vote(self, doc: AnnotatedReport) -> int:
        """Combine the mentions' statuses (CheXpert precedence)."""
        mentions = doc.mentions_of(self.observation, self.sections)
        return combine_votes(m.naive if self.naive else m.status for m in mentions)


class SpecificLF(LabelingFunction):
    """Votes from an observation's specific phrases (see :data:`medssl.weak.vocabulary.SPECIFIC`).

    Args:
        observation: the observation.
        sections: sections read.
        name: LF name (default ``"specific:<obs>"``).
    """

    def __init__(self, observation: str, sections: Sequence[str] = BODY_SECTIONS, name: str = "") -> None:
        super().__init__(name or f"specific:{observation}", observation, description="specific phrases")
        self.sections = tuple(sections)

    def vote(self, doc: AnnotatedReport) -> int:
        """Combine the phrases' votes (CheXpert precedence)."""
        return combine_votes(v for s in self.sections for v in doc.specific_votes(self.observation, s))


class NormalStudyLF(LabelingFunction):
    """Votes negative when the impression states a normal study, abstains otherwise.

    Args:
        observation: the observation.
        name: LF name (default ``"normal:<obs>"``).
    """

    def __init__(self, observation: str, name: str = "") -> None:
        super().__init__(name or f"normal:{observation}", observation, description="normal-study statement")

    def vote(self, doc: AnnotatedReport) -> int:
        """NEGATIVE for a normal study, else ABSTAIN."""
        return NEGATIVE if doc.is_normal_study() else ABSTAIN


def chexpert_lfs(
    observations: Iterable[str] | None = None, vocabulary: Vocabulary | None = None
) -> list[LabelingFunction]:
    """The shipped rule set: impression, findings, sentence-level, specific-phrase and normal-study LFs.

    Args:
        observations: observations to cover (default: all of the vocabulary's, i.e. the 13 besides No Finding).
        vocabulary: used only to know which observations have specific phrases.

    Returns:
        The LFs, grouped by observation.
    """
    vocabulary = vocabulary or default_vocabulary()
    chosen = list(observations) if observations is not None else list(vocabulary.observations)
    lfs: list[LabelingFunction] = []
    for observation in chosen:
        if observation == "No Finding":
            continue
        lfs.append(MentionLF(observation, ("impression",)))
        lfs.append(MentionLF(observation, ("findings",)))
        lfs.append(MentionLF(observation, BODY_SECTIONS, status="naive"))
        if observation in vocabulary.specific_patterns:
            lfs.append(SpecificLF(observation))
        if observation != "Support Devices":
            lfs.append(NormalStudyLF(observation))
    return lfs


def chexpert_rule_votes(doc: AnnotatedReport, observations: Iterable[str] | None = None) -> dict[str, int]:
    """CheXpert-style rule labels: impression mentions (generic and specific) if any, else the findings'.

    Args:
        doc: the annotated report.
        observations: observations to label (default: the vocabulary's).

    Returns:
        ``{observation: vote}`` (ABSTAIN when not mentioned).
    """
    chosen = list(observations) if observations is not None else list(doc.vocabulary.observations)
    out = {}
    for observation in chosen:
        vote = ABSTAIN
        for section in BODY_SECTIONS:
            statuses = [m.status for m in doc.mentions_of(observation, (section,))]
            statuses += doc.specific_votes(observation, section)
            vote = combine_votes(statuses)
            if vote != ABSTAIN:
                break
        out[observation] = vote
    return out
