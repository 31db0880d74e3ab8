"""Radiology reports: sections, sentences and words of free-text (MIMIC-CXR style) reports.

A MIMIC-CXR report is a plain-text file with upper-case section headers (``EXAMINATION:``, ``INDICATION:``,
``FINDINGS:``, ``IMPRESSION:`` ...), lines wrapped at about 80 columns and ``___`` where the de-identification removed
a name, a date or a number. This module turns such a text into:

- :func:`split_sections`: ``{normalised section name: text}``;
- :func:`split_sentences`: the sentences of a section (numbered lists, abbreviations, decimals and wrapped lines
  handled);
- :func:`report_text`: the text that image-text pretraining and weak labels use, chosen by a documented priority
  (impression, then findings, then the last-paragraph fallback);
- :func:`parse_report` / :func:`read_report` / :func:`parse_reports`: all of the above in a :class:`ParsedReport`,
  raising :class:`ReportError` for empty or unusable reports (the batch helper reports and skips them).

Section rules (see ``docs/reports.md`` for the full table):

- A header is a known section name at the start of a line, in any case, followed by a colon (``FINDINGS:``,
  ``Impression: text``), or alone on its line without a colon (``IMPRESSION``), or upper-case after a sentence end in
  the middle of a line (``... prior. IMPRESSION: ...``). Unknown ``LABEL:`` lines (``HEART:``, ``LINES/TUBES:``) are
  kept as text of the current section, so structured findings stay in ``findings``.
- Names are normalised to lower case; synonyms map to one name (``conclusion(s)``, ``findings and impression`` and
  ``findings/impression`` -> ``impression``, as MIMIC-CXR's own section parser does; ``clinical history`` ->
  ``history``; ``reason for exam`` -> ``indication``; ``comparisons`` -> ``comparison``; ``recommendation(s)`` ->
  ``recommendations`` ...), and one-word typos (``IMPRESSON``, ``FINDNGS``, ``COMPARISION``) map to the closest
  known name (difflib ratio >= 0.85).
- Text before the first header is ``preamble``; ``FINAL REPORT`` lines and separator lines of underscores are
  dropped; repeated sections are merged (paragraph break between them); addenda go under ``addendum``.
- Last-paragraph fallback: when a report has neither ``findings`` nor ``impression``, its last paragraph of free
  text (from the preamble, or a paragraph following the first paragraph of a metadata section such as
  ``comparison``; addenda, wet reads, notifications and recommendations excluded) is moved to ``last_paragraph``.
  This is MIMIC-CXR's approach, but kept under its own name so that a caller can tell it from a real impression.
- ``___`` de-identification marks are kept as they are, or replaced by ``deid_placeholder`` when one is given.

The :data:`CHEXPERT_OBSERVATIONS` live here because the weak labellers, the synthetic report generator and the
MIMIC-CXR/CheXpert layouts all need them and all import this light module (standard library only).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from medssl.exceptions import MedsslError

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "SECTION_SYNONYMS",
    "CONTENT_SECTIONS",
    "DEFAULT_PRIORITY",
    "DEID_MARK",
    "ReportError",
    "ParsedReport",
    "normalize_section_name",
    "normalize_deid",
    "split_sections",
    "split_sentences",
    "tokenize_words",
    "count_words",
    "truncate_words",
    "choose_section",
    "report_text",
    "parse_report",
    "read_report",
    "parse_reports",
]

CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations, in the column order of CheXpert's and MIMIC-CXR-JPG's label CSVs."""

DEID_MARK = "___"
"""What MIMIC-CXR writes where the de-identification removed a name, date, time or number."""

DEFAULT_PRIORITY: tuple[str, ...] = ("impression", "findings", "last_paragraph")
"""Sections :func:`report_text` tries, in order: the first one present (with text) is used."""

CONTENT_SECTIONS: tuple[str, ...] = ("findings", "impression", "last_paragraph")
"""Sections that describe the image (as opposed to metadata such as ``indication`` or ``comparison``)."""

# Synonyms and spellings met in radiology reports, each mapped to the one name medssl uses. Keys are normalised by
# normalize_section_name's first steps (lower case, single spaces, no trailing "(s)"). None marks a line that is not
# a section (the "FINAL REPORT" banner). Written for medssl after the header frequencies reported for MIMIC-CXR.
SECTION_SYNONYMS: dict[str, str | None] = {
    "final report": None,
    "examination": "examination",
    "exam": "examination",
    "exams": "examination",
    "examinations": "examination",
    "type of examination": "examination",
    "type of exam": "examination",
    "study": "examination",
    "procedure": "examination",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "reason for the exam": "indication",
    "clinical question": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "clinical info": "history",
    "patient history": "history",
    "medical history": "history",
    "technique": "technique",
    "techniques": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison exams": "comparison",
    "comparison study": "comparison",
    "comparison studies": "comparison",
    "comparison film": "comparison",
    "comparison films": "comparison",
    "reference exam": "comparison",
    "prior studies": "comparison",
    "prior study": "comparison",
    "findings": "findings",
    "finding": "findings",
    "reference findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings / impression": "impression",
    "impression and recommendation": "impression",
    "impression and recommendations": "impression",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "notification": "notification",
    "notifications": "notification",
    "communication": "notification",
    "addendum": "addendum",
    "addenda": "addendum",
    "final addendum": "addendum",
    "wet read": "wet read",
    "wetread": "wet read",
    "provisional findings impression": "wet read",
    "provisional findings impression (pfi)": "wet read",
    "pfi": "wet read",
    "comment": "comment",
    "comments": "comment",
}

# One-word names a typo can be matched against (difflib), e.g. IMPRESSON, FINDNGS, COMPARISION, NDICATION.
_FUZZY_TARGETS = (
    "impression",
    "findings",
    "comparison",
    "indication",
    "examination",
    "technique",
    "history",
    "conclusion",
    "recommendations",
    "notification",
    "addendum",
)
_FUZZY_CUTOFF = 0.85
_METADATA_SECTIONS = ("examination", "indication", "history", "technique", "comparison", "comment")
_NOT_FALLBACK_SECTIONS = ("addendum", "wet read", "notification", "recommendations")

# A header at the start of a (stripped) line: a name of letters, spaces and a few signs, then a colon.
_COLON_HEADER = re.compile(r"^(?P<name>[A-Za-z][A-Za-z /&()',-]{0,60}?)\s*:\s*(?P<rest>.*)$")
# A line that is nothing but a name (no colon): accepted only for known names written in upper or title case.
_BARE_HEADER = re.compile(r"^(?P<name>[A-Za-z][A-Za-z /&()',-]{0,60}?)\s*$")
# An upper-case header in the middle of a line, after a sentence end: "... prior. IMPRESSION: ...".
_INLINE_HEADER = re.compile(r"(?<=[.!?])\s+(?=(?P<name>[A-Z][A-Z /&()-]{2,40}?)\s*:)")
_ADDENDUM_BANNER = re.compile(r"(?:FINAL )?ADDEND(?:UM|A)\b[^a-z]*$")
_SEPARATOR = re.compile(r"^\s*_{10,}\s*$")
_DEID_RUN = re.compile(r"_{3,}")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_ALNUM = re.compile(r"[A-Za-z0-9]")
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.'\u2019-][A-Za-z0-9]+)*")


class ReportError(MedsslError):
    """A report cannot be used: empty, only headers or ``___`` marks, no usable section, too few words."""


@dataclass
class ParsedReport:
    """A report split into sections, with the text chosen for downstream use and its sentences and words.

    Attributes:
        sections: ``{normalised section name: text}`` (see :func:`split_sections`).
        section: the section (or ``"a+b"`` joined sections) that ``text`` comes from.
        text: the chosen text (see :func:`report_text`).
        sentences: the sentences of ``text``.
        words: the lower-case words of ``text`` (:func:`tokenize_words`).
        source: the file (or identifier) the report came from, for error messages; None when unknown.
    """

    sections: dict[str, str]
    section: str
    text: str
    sentences: list[str]
    words: list[str]
    source: str | None = None
    _sentence_cache: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def sentences_of(self, section: str) -> list[str]:
        """Return the sentences of one section (empty when the section is absent); cached.

        Args:
            section: a normalised section name (``findings``, ``impression`` ...).

        Returns:
            The section's sentences.
        """
        if section not in self._sentence_cache:
            text = self.sections.get(section, "")
            self._sentence_cache[section] = split_sentences(text) if text else []
        return self._sentence_cache[section]

    @property
    def impression(self) -> str:
        """The impression, or the last-paragraph fallback when there is neither impression nor findings."""
        return self.sections.get("impression") or (
            "" if "findings" in self.sections else self.sections.get("last_paragraph", "")
        )

    @property
    def findings(self) -> str:
        """The findings section ('' when absent)."""
        return self.sections.get("findings", "")


@lru_cache(maxsize=4096)
def normalize_section_name(name: str) -> str | None:
    """Map a header as written to medssl's section name.

    Args:
        name: the header text without its colon (``"IMPRESSON"``, ``"Clinical History"``, ``"RECOMMENDATION(S)"``).

    Returns:
        The normalised name (``"impression"``, ``"history"``, ``"recommendations"``), ``""`` for a line that is a
        banner rather than a section (``FINAL REPORT``), or None when the name is not a known section.
    """
    key = re.sub(r"\s+", " ", name.strip().lower())
    key = re.sub(r"\(s\)$", "s", key).strip(" -,")
    if key in SECTION_SYNONYMS:
        value = SECTION_SYNONYMS[key]
        return "" if value is None else value
    if re.fullmatch(r"(final )?addend(um|a)( #?\d+)?", key):
        return "addendum"
    if " " not in key and "/" not in key and len(key) >= 6:
        close = difflib.get_close_matches(key, _FUZZY_TARGETS, n=1, cutoff=_FUZZY_CUTOFF)
        if close:
            return normalize_section_name(close[0])
    return None


def normalize_deid(text: str, placeholder: str | None = None) -> str:
    """Replace runs of three or more underscores (de-identification marks) by one placeholder.

    Args:
        text: report text.
        placeholder: the replacement; None keeps the text unchanged.

    Returns:
        The text.
    """
    if placeholder is None:
        return text
    return _DEID_RUN.sub(placeholder, text)


def _header_of(line: str) -> tuple[str, str] | None:
    """Return ``(section name, rest of line)`` when a stripped line starts a section, else None."""
    match = _COLON_HEADER.match(line)
    if match:
        name = normalize_section_name(match.group("name"))
        return None if name is None else (name, match.group("rest"))
    match = _BARE_HEADER.match(line)
    if match:
        raw = match.group("name")
        if raw.isupper() or raw.istitle():
            name = normalize_section_name(raw)
            if name is not None:
                return name, ""
        return None
    if _ADDENDUM_BANNER.match(line):
        # "ADDENDUM ___ 10:15 AM" style banner: an addendum starts, the banner itself is not text.
        return "addendum", ""
    return None


def _blocks(text: str, deid_placeholder: str | None) -> list[tuple[str, str]]:
    """Split a report into ordered ``(section name, text)`` blocks, before merging and fallback."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    lines: list[str] = []
    for raw in text.split("\n"):
        # Break lines at upper-case inline headers of known sections ("... prior. IMPRESSION: ...").
        pieces = [raw]
        for match in reversed(list(_INLINE_HEADER.finditer(raw))):
            if normalize_section_name(match.group("name")):
                head = pieces.pop(0)
                pieces = [head[: match.start()], head[match.end() :], *pieces]
        lines.extend(pieces)
    blocks: list[tuple[str, list[str]]] = [("preamble", [])]
    for raw in lines:
        line = raw.strip()
        if _SEPARATOR.match(line):
            blocks.append(("preamble", []))
            continue
        header = _header_of(line) if line else None
        if header is not None:
            name, rest = header
            blocks.append((name or "preamble", []))
            if rest.strip():
                blocks[-1][1].append(rest.strip())
            continue
        blocks[-1][1].append(line)
    out = []
    for name, body in blocks:
        joined = _BLANK_LINES.sub("\n\n", "\n".join(body)).strip()
        joined = normalize_deid(joined, deid_placeholder)
        if _has_words(joined):
            out.append((name, joined))
    return out


def _has_words(text: str) -> bool:
    """True when the text has a letter or digit outside de-identification marks."""
    return _ALNUM.search(_DEID_RUN.sub(" ", text)) is not None


def split_sections(text: str, deid_placeholder: str | None = None) -> dict[str, str]:
    """Split a report into normalised sections.

    Args:
        text: the whole report.
        deid_placeholder: replacement of ``___`` marks; None keeps them.

    Returns:
        ``{section name: text}`` in the order the sections first appear; only sections with text. When there is
        neither ``findings`` nor ``impression``, the last free-text paragraph is moved to ``last_paragraph`` (see
        the module docstring). An empty dict when the report has no text at all.
    """
    blocks = _blocks(text, deid_placeholder)
    names = {name for name, _ in blocks}
    if "findings" not in names and "impression" not in names:
        blocks = _last_paragraph_fallback(blocks)
    sections: dict[str, str] = {}
    for name, body in blocks:
        sections[name] = f"{sections[name]}\n\n{body}" if name in sections else body
    return sections


def _last_paragraph_fallback(blocks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Move the last free-text paragraph of the report body to a ``last_paragraph`` block."""
    for index in range(len(blocks) - 1, -1, -1):
        name, body = blocks[index]
        if name in _NOT_FALLBACK_SECTIONS:
            continue
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(body)]
        # The first paragraph of a metadata section is its own text ("COMPARISON: None."), never the fallback.
        first_allowed = 1 if name in _METADATA_SECTIONS else 0
        candidates = [i for i in range(first_allowed, len(paragraphs)) if _has_words(paragraphs[i])]
        if not candidates:
            continue
        last = paragraphs[candidates[-1]]
        remaining = "\n\n".join(p for i, p in enumerate(paragraphs) if i != candidates[-1] and p)
        new_blocks = list(blocks)
        if remaining:
            new_blocks[index] = (name, remaining)
        else:
            del new_blocks[index]
        new_blocks.append(("last_paragraph", last))
        return new_blocks
    return blocks


# Sentence splitting is hand-written: nltk's punkt and spaCy's sentencizer are not dependencies of medssl and need
# downloaded models; neither knows MIMIC's wrapped lines, "___" marks or inline numbered impressions.
_LIST_MARKER = re.compile(r"^(?:\(?\d{1,2}[.)]|[-*\u2022\u25cf]|\(?[a-hA-H]\))\s+")
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
# Tokens after which a period never ends a sentence.
_ABBREVIATIONS = frozenset(
    {
        "dr",
        "drs",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "vs",
        "approx",
        "e.g",
        "i.e",
        "eg",
        "ie",
        "cf",
        "fig",
        "incl",
        "resp",
        "apprx",
        "est",
        "ca",
        "nos",
        "pt",
        "pts",
        "hx",
        "sx",
        "dx",
        "tx",
        "appt",
    }
)
# Tokens after which a period ends a sentence only when an upper-case letter, a digit or a mark follows.
_CONDITIONAL = frozenset({"cm", "mm", "m", "etc", "a.m", "p.m", "am", "pm", "in", "no", "min", "sec", "hr", "hrs"})


def _is_boundary(before: str, punctuation: str, after: str) -> bool:
    """Decide whether the punctuation ending ``before`` ends a sentence, given the text that follows."""
    token = before.rsplit(" ", 1)[-1].lstrip("([\"'").lower()
    if token.isdigit() and len(token) <= 2 and before.strip().lstrip("(") == token:
        return False  # "1." opening a numbered item
    if punctuation.startswith(".") and punctuation.count(".") == 1:
        if token in _ABBREVIATIONS:
            return False
        if token in _CONDITIONAL or _DOTTED.fullmatch(token):
            return bool(after) and (after[0].isupper() or after[0].isdigit() or after[0] in "_(\"'")
    return True


def _split_segment(segment: str) -> list[str]:
    """Split one paragraph segment (wrapped lines already joined) at sentence ends."""
    segment = _SPACES.sub(" ", segment).strip()
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(segment):
        before = segment[start : match.start()]
        after = segment[match.end() :].lstrip()
        if _is_boundary(before, match.group(), after):
            pieces.append(segment[start : match.end()].strip())
            start = match.end()
    pieces.append(segment[start:].strip())
    out = []
    for piece in pieces:
        piece = _LIST_MARKER.sub("", piece).strip()
        if _has_words(piece):
            out.append(piece)
    return out


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences.

    Paragraphs (blank-line separated) and list items (lines starting with ``1.``, ``2)``, ``-``, ``*``, ``•``) always
    end a sentence; other line breaks are wraps and are joined with a space. Within a segment a sentence ends at
    ``.``, ``!`` or ``?`` followed by white space, except after abbreviations (``Dr.``, ``e.g.``, ``approx.``,
    ``vs.`` ...), after the number of an inline numbered item (``1. No effusion. 2. ...``), and after ``cm.``,
    ``mm.``, ``etc.``, ``a.m.`` unless an upper-case letter or digit follows. Decimals (``1.5 cm``) never split.
    List markers are removed from the sentences; sentences without a letter or digit (``1.``, ``___.``) are dropped.

    Args:
        text: section or report text.

    Returns:
        The sentences, white space collapsed, in order.
    """
    sentences: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        segments: list[list[str]] = []
        for line in paragraph.split("\n"):
            line = line.strip()
            if not line:
                continue
            if not segments or _LIST_MARKER.match(line):
                segments.append([line])
            else:
                segments[-1].append(line)
        for segment in segments:
            sentences.extend(_split_segment(" ".join(segment)))
    return sentences


def tokenize_words(text: str) -> list[str]:
    """Lower-case words of a text: letters and digits, keeping ``1.5``, ``x-ray`` and ``patient's`` whole.

    ``___`` marks and punctuation are not words.

    Args:
        text: any text.

    Returns:
        The words.
    """
    return [w.lower() for w in _WORD.findall(text)]


def count_words(text: str) -> int:
    """Number of :func:`tokenize_words` words of a text."""
    return len(_WORD.findall(text))


def truncate_words(text: str, max_words: int) -> str:
    """Cut a text after its ``max_words``-th word (as counted by :func:`tokenize_words`), keeping its spelling.

    Args:
        text: any text.
        max_words: words to keep (0 gives ``""``).

    Returns:
        The text up to the end of that word, or the whole text when it is shorter.
    """
    if max_words <= 0:
        return ""
    for index, match in enumerate(_WORD.finditer(text), start=1):
        if index == max_words:
            return text[: match.end()]
    return text


def choose_section(sections: Mapping[str, str], priority: Sequence[str] = DEFAULT_PRIORITY) -> tuple[str, str] | None:
    """Pick the text of the first section of ``priority`` that the report has.

    Args:
        sections: ``{section name: text}`` from :func:`split_sections`.
        priority: section names to try in order. An entry ``"findings+impression"`` joins those sections that are
            present (paragraph break between them) and counts as present when any of them is.

    Returns:
        ``(entry, text)``, or None when no entry is present.
    """
    for entry in priority:
        parts = [sections[name] for name in entry.split("+") if sections.get(name, "").strip()]
        if parts:
            return entry, "\n\n".join(parts)
    return None


def report_text(
    sections: Mapping[str, str],
    priority: Sequence[str] = DEFAULT_PRIORITY,
    source: str | os.PathLike | None = None,
) -> str:
    """Return the report text used downstream: the first present section of ``priority``.

    The default priority is impression, then findings, then the last-paragraph fallback: the impression is the
    radiologist's summary (what CheXpert's labeller reads), findings stand in for it in findings-only reports.
    For GLoRIA-style full text use ``priority=("findings+impression",)``.

    Args:
        sections: ``{section name: text}`` from :func:`split_sections`.
        priority: see :func:`choose_section`.
        source: the report named in the error.

    Returns:
        The text.

    Raises:
        ReportError: none of the sections is present.
    """
    chosen = choose_section(sections, priority)
    if chosen is None:
        raise ReportError(f"no {' / '.join(priority)} section (has {sorted(sections) or 'no text'})", source)
    return chosen[1]


def parse_report(
    text: str,
    source: str | os.PathLike | None = None,
    priority: Sequence[str] = DEFAULT_PRIORITY,
    min_words: int = 2,
    deid_placeholder: str | None = None,
) -> ParsedReport:
    """Parse one report text.

    Args:
        text: the report.
        source: file or identifier named in errors and kept on the result.
        priority: sections to take the text from (see :func:`report_text`).
        min_words: fewest words the chosen text may have.
        deid_placeholder: replacement of ``___`` marks; None keeps them.

    Returns:
        The parsed report.

    Raises:
        ReportError: empty text, only headers or de-identification marks, no section of ``priority``, or fewer
            than ``min_words`` words.
    """
    where = None if source is None else os.fspath(source)
    if not isinstance(text, str):
        raise ReportError(f"report text is {type(text).__name__}, expected str", where)
    if not text.strip():
        raise ReportError("empty report", where)
    if not _has_words(text):
        raise ReportError("report has only de-identification marks (___) and punctuation", where)
    sections = split_sections(text, deid_placeholder=deid_placeholder)
    if not sections:
        raise ReportError("report has section headers but no text under them", where)
    chosen = choose_section(sections, priority)
    if chosen is None:
        raise ReportError(f"no {' / '.join(priority)} section (has {sorted(sections)})", where)
    name, chosen_text = chosen
    words = tokenize_words(chosen_text)
    if len(words) < min_words:
        raise ReportError(f"only {len(words)} word(s) in {name} (minimum {min_words})", where)
    return ParsedReport(
        sections=sections,
        section=name,
        text=chosen_text,
        sentences=split_sentences(chosen_text),
        words=words,
        source=where,
    )


def read_report(
    path: str | os.PathLike,
    priority: Sequence[str] = DEFAULT_PRIORITY,
    min_words: int = 2,
    deid_placeholder: str | None = None,
) -> ParsedReport:
    """Read and parse one report file (UTF-8; undecodable bytes replaced).

    Args:
        path: the ``.txt`` report.
        priority: see :func:`report_text`.
        min_words: see :func:`parse_report`.
        deid_placeholder: see :func:`parse_report`.

    Returns:
        The parsed report, ``source`` set to the path.

    Raises:
        ReportError: missing or unreadable file, binary content, or an unusable report.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ReportError(f"cannot read report: {error.strerror or error}", path) from error
    if b"\x00" in raw[:4096]:
        raise ReportError("not a text file (NUL bytes)", path)
    return parse_report(
        raw.decode("utf-8", errors="replace"),
        source=path,
        priority=priority,
        min_words=min_words,
        deid_placeholder=deid_placeholder,
    )


def parse_reports(
    paths: Iterable[str | os.PathLike],
    priority: Sequence[str] = DEFAULT_PRIORITY,
    min_words: int = 2,
    deid_placeholder: str | None = None,
) -> tuple[list[ParsedReport], list[ReportError]]:
    """Parse many report files, reporting and skipping the unusable ones.

    Args:
        paths: report files.
        priority: see :func:`report_text`.
        min_words: see :func:`parse_report`.
        deid_placeholder: see :func:`parse_report`.

    Returns:
        ``(parsed reports, errors)``; each error names its file (``error.path``) and the problem
        (``error.problem``).
    """
    parsed: list[ParsedReport] = []
    errors: list[ReportError] = []
    for path in paths:
        try:
            parsed.append(read_report(path, priority=priority, min_words=min_words, deid_placeholder=deid_placeholder))
        except ReportError as error:
            errors.append(error)
    return parsed, errors
