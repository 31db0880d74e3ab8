"""Report text transforms: load a report, sample sentences (ConVIRT, GLoRIA), tokenize with a Hugging Face tokenizer.

Array transforms and their dictionary twins, MONAI style:

=========================  ==========================  ==========================================================
array                      dictionary                  what it does
=========================  ==========================  ==========================================================
:class:`LoadReport`        :class:`LoadReportd`        a report file (or the text itself) -> chosen section text
:class:`SampleSentence`    :class:`SampleSentenced`    one random sentence (ConVIRT)
:class:`SampleSentencesUpTo`  :class:`SampleSentencesUpTod`  sentences in order (or shuffled) up to a word budget
                                                       (GLoRIA)
:class:`Tokenize`          :class:`Tokenized`          text -> ``input_ids``, ``attention_mask``, ``word_index``
=========================  ==========================  ==========================================================

Random transforms take their seed through MONAI's ``Randomizable.set_random_state`` (``Compose.set_random_state``
seeds a whole pipeline). Tokenizers load with ``AutoTokenizer.from_pretrained(name_or_dir)``; local folders always
work, hub names only when already in the local cache unless ``local_files_only=False``.
:func:`train_wordpiece_tokenizer` builds a small WordPiece tokenizer folder from a corpus, for tests and demos.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from medssl.data.reports import (
    DEFAULT_PRIORITY,
    ParsedReport,
    ReportError,
    count_words,
    parse_report,
    read_report,
    split_sentences,
    truncate_words,
)
from medssl.exceptions import MedsslError

__all__ = [
    "TokenizerError",
    "LoadReport",
    "LoadReportd",
    "LoadReportD",
    "LoadReportDict",
    "SampleSentence",
    "SampleSentenced",
    "SampleSentenceD",
    "SampleSentenceDict",
    "SampleSentencesUpTo",
    "SampleSentencesUpTod",
    "SampleSentencesUpToD",
    "SampleSentencesUpToDict",
    "Tokenize",
    "Tokenized",
    "TokenizeD",
    "TokenizeDict",
    "load_tokenizer",
    "train_wordpiece_tokenizer",
    "BERT_SPECIAL_TOKENS",
]

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerError(MedsslError):
    """A tokenizer cannot be loaded or cannot give word indices (not a fast tokenizer)."""


def _is_path_like(value: Any) -> bool:
    """True for a path object, or a one-line string naming an existing file."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and "\n" not in value and len(value) < 4096 and os.path.isfile(value)


def _sentences_of(value: Any, where: str) -> list[str]:
    """Sentences of a text, a list of sentences, or a parsed report."""
    if isinstance(value, ParsedReport):
        return list(value.sentences)
    if isinstance(value, str):
        return split_sentences(value)
    if isinstance(value, Sequence) and all(isinstance(s, str) for s in value):
        return [s for s in value if s.strip()]
    raise ReportError(f"{where} expects report text, a list of sentences or a ParsedReport, got {type(value).__name__}")


class LoadReport(Transform):
    """Read a report (a file path, or the text itself) and return the text of its chosen section.

    A value is read as a file when it is a path object, or a one-line string naming an existing file; any other
    string is taken as the report text (``source`` forces either reading).

    Args:
        priority: sections to take the text from, in order (see :func:`medssl.data.reports.report_text`);
            ``["findings+impression"]`` gives the full text GLoRIA uses.
        min_words: fewest words the chosen text may have.
        deid_placeholder: replacement of ``___`` marks; None keeps them.
        source: ``"auto"``, ``"path"`` or ``"text"``.
        output: ``"text"`` (the chosen text), ``"sentences"`` (its sentences) or ``"parsed"`` (the
            :class:`~medssl.data.reports.ParsedReport`).

    Raises:
        ReportError: when called on an unreadable or unusable report (the message names the file).
    """

    backend = ["numpy"]

    def __init__(
        self,
        priority: Sequence[str] = DEFAULT_PRIORITY,
        min_words: int = 2,
        deid_placeholder: str | None = None,
        source: str = "auto",
        output: str = "text",
    ) -> None:
        if source not in ("auto", "path", "text"):
            raise ValueError(f"source must be 'auto', 'path' or 'text', got {source!r}")
        if output not in ("text", "sentences", "parsed"):
            raise ValueError(f"output must be 'text', 'sentences' or 'parsed', got {output!r}")
        self.priority = tuple(priority)
        self.min_words = min_words
        self.deid_placeholder = deid_placeholder
        self.source = source
        self.output = output

    def __call__(self, report: str | os.PathLike | ParsedReport) -> str | list[str] | ParsedReport:
        """Load one report.

        Args:
            report: a path, the report text, or an already parsed report (returned in the requested form).

        Returns:
            The chosen text, its sentences, or the parsed report (see ``output``).
        """
        if isinstance(report, ParsedReport):
            parsed = report
        elif self.source == "path" or (self.source == "auto" and _is_path_like(report)):
            parsed = read_report(
                report, priority=self.priority, min_words=self.min_words, deid_placeholder=self.deid_placeholder
            )
        else:
            parsed = parse_report(
                report, priority=self.priority, min_words=self.min_words, deid_placeholder=self.deid_placeholder
            )
        if self.output == "text":
            return parsed.text
        if self.output == "sentences":
            return list(parsed.sentences)
        return parsed


class LoadReportd(MapTransform):
    """Dictionary version of :class:`LoadReport`: replaces each key's path (or text) by the chosen text.

    Args:
        keys: keys of the report paths or texts (usually ``"report"``).
        priority: see :class:`LoadReport`.
        min_words: see :class:`LoadReport`.
        deid_placeholder: see :class:`LoadReport`.
        source: see :class:`LoadReport`.
        output: see :class:`LoadReport`.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = LoadReport.backend

    def __init__(
        self,
        keys: KeysCollection,
        priority: Sequence[str] = DEFAULT_PRIORITY,
        min_words: int = 2,
        deid_placeholder: str | None = None,
        source: str = "auto",
        output: str = "text",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadReport(
            priority=priority, min_words=min_words, deid_placeholder=deid_placeholder, source=source, output=output
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to each key (see the class docstring)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class SampleSentence(Randomizable, Transform):
    """Pick one sentence of a report text at random (ConVIRT's text view).

    Args:
        min_words: sample among sentences with at least this many words; when none has, among all sentences.

    Raises:
        ReportError: when called on a text without any sentence.
    """

    backend = ["numpy"]

    def __init__(self, min_words: int = 1) -> None:
        self.min_words = min_words
        self._index = 0

    def randomize(self, data: int) -> None:
        """Draw the index of the sentence among ``data`` candidates."""
        self._index = int(self.R.randint(data))

    def __call__(self, text: str | Sequence[str] | ParsedReport, randomize: bool = True) -> str:
        """Sample one sentence.

        Args:
            text: report text, a list of sentences, or a parsed report (its chosen text's sentences).
            randomize: draw a new sentence; False reuses the last index (clipped to the number of candidates).

        Returns:
            The sentence.
        """
        sentences = _sentences_of(text, type(self).__name__)
        if not sentences:
            raise ReportError(f"{type(self).__name__}: the text has no sentence to sample")
        candidates = [s for s in sentences if count_words(s) >= self.min_words] or sentences
        if randomize:
            self.randomize(len(candidates))
        return candidates[min(self._index, len(candidates) - 1)]


class SampleSentenced(Randomizable, MapTransform):
    """Dictionary version of :class:`SampleSentence`; each key gets its own draw.

    Args:
        keys: keys of report texts (or sentence lists).
        min_words: see :class:`SampleSentence`.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = SampleSentence.backend

    def __init__(self, keys: KeysCollection, min_words: int = 1, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.sampler = SampleSentence(min_words=min_words)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SampleSentenced:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen per key in :meth:`__call__`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to each key (see the class docstring)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.sampler(d[key])
        return d


class SampleSentencesUpTo(Randomizable, Transform):
    """Keep sentences, in report order or shuffled, while their words fit a budget (GLoRIA's text input).

    Sentences are added while the running word count stays within ``max_words``; the first sentence is always
    kept, cut after ``max_words`` words if it alone is longer. Sentences shorter than ``min_sentence_words`` are
    dropped first.

    Args:
        max_words: word budget (words as counted by :func:`medssl.data.reports.count_words`).
        shuffle: shuffle the sentence order before filling the budget (a random permutation per call).
        min_sentence_words: drop sentences with fewer words.
        separator: joins the kept sentences.

    Raises:
        ReportError: when called on a text without any sentence.
    """

    backend = ["numpy"]

    def __init__(
        self, max_words: int = 100, shuffle: bool = False, min_sentence_words: int = 1, separator: str = " "
    ) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.max_words = max_words
        self.shuffle = shuffle
        self.min_sentence_words = min_sentence_words
        self.separator = separator
        self._order: np.ndarray | None = None

    def randomize(self, data: int) -> None:
        """Draw the sentence order among ``data`` sentences (identity without ``shuffle``)."""
        self._order = self.R.permutation(data) if self.shuffle else np.arange(data)

    def __call__(self, text: str | Sequence[str] | ParsedReport, randomize: bool = True) -> str:
        """Fill the word budget.

        Args:
            text: report text, a list of sentences, or a parsed report.
            randomize: draw a new order (only matters with ``shuffle``).

        Returns:
            The kept sentences joined by ``separator``.
        """
        sentences = _sentences_of(text, type(self).__name__)
        sentences = [s for s in sentences if count_words(s) >= self.min_sentence_words] or sentences
        if not sentences:
            raise ReportError(f"{type(self).__name__}: the text has no sentence")
        if randomize or self._order is None or len(self._order) != len(sentences):
            self.randomize(len(sentences))
        kept: list[str] = []
        total = 0
        for index in self._order:
            sentence = sentences[int(index)]
            n = count_words(sentence)
            if not kept and n > self.max_words:
                kept.append(truncate_words(sentence, self.max_words))
                break
            if total + n > self.max_words:
                break
            kept.append(sentence)
            total += n
        return self.separator.join(kept)


class SampleSentencesUpTod(Randomizable, MapTransform):
    """Dictionary version of :class:`SampleSentencesUpTo`; each key gets its own draw.

    Args:
        keys: keys of report texts (or sentence lists).
        max_words: see :class:`SampleSentencesUpTo`.
        shuffle: see :class:`SampleSentencesUpTo`.
        min_sentence_words: see :class:`SampleSentencesUpTo`.
        separator: see :class:`SampleSentencesUpTo`.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = SampleSentencesUpTo.backend

    def __init__(
        self,
        keys: KeysCollection,
        max_words: int = 100,
        shuffle: bool = False,
        min_sentence_words: int = 1,
        separator: str = " ",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.sampler = SampleSentencesUpTo(
            max_words=max_words, shuffle=shuffle, min_sentence_words=min_sentence_words, separator=separator
        )

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> SampleSentencesUpTod:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen per key in :meth:`__call__`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to each key (see the class docstring)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.sampler(d[key])
        return d


def load_tokenizer(tokenizer: str | os.PathLike, local_files_only: bool = True) -> Any:
    """Load a Hugging Face tokenizer from a local folder or a hub name (``AutoTokenizer.from_pretrained``).

    Args:
        tokenizer: a folder written by ``save_pretrained`` or a hub model name.
        local_files_only: never download (hub names must be in the local cache); False allows downloads.

    Returns:
        The tokenizer (a fast, ``tokenizers``-backed one when the folder has ``tokenizer.json``).

    Raises:
        TokenizerError: the tokenizer cannot be found or read.
    """
    from transformers import AutoTokenizer

    name = os.fspath(tokenizer)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        hint = "" if os.path.isdir(name) else " (not a local folder; hub names must be cached when offline)"
        raise TokenizerError(f"cannot load tokenizer{hint}: {error}", name) from error


class Tokenize(Transform):
    """Tokenize text into ``input_ids``, ``attention_mask`` and ``word_index`` tensors.

    ``word_index[i]`` is the index of the word (as the tokenizer's pre-tokenizer splits words: for BERT, punctuation
    marks are words of their own) that token ``i`` belongs to, and -1 for special and padding tokens; word-piece
    features are pooled into word features with it (GLoRIA's local alignment).

    Args:
        tokenizer: local folder or hub name (see :func:`load_tokenizer`); a tokenizer object also works from Python.
        max_length: tokens per text, special tokens included.
        padding: ``"max_length"`` (fixed shape, collates), ``"longest"`` (for lists of texts) or ``False``.
        truncation: cut texts longer than ``max_length``.
        local_files_only: see :func:`load_tokenizer`.

    Raises:
        TokenizerError: the tokenizer cannot be loaded or is not a fast tokenizer (no word ids).
    """

    backend = ["torch"]

    def __init__(
        self,
        tokenizer: str | os.PathLike | Any,
        max_length: int = 128,
        padding: str | bool = "max_length",
        truncation: bool = True,
        local_files_only: bool = True,
    ) -> None:
        self.tokenizer_name = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
        self._tokenizer = None if self.tokenizer_name is not None else tokenizer
        self.max_length = max_length
        self.padding = padding
        self.truncation = truncation
        self.local_files_only = local_files_only

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use (so that a pipeline pickles to DataLoader workers cheaply)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name, local_files_only=self.local_files_only)
        if not getattr(self._tokenizer, "is_fast", False):
            raise TokenizerError("word_index needs a fast (tokenizers-backed) tokenizer", self.tokenizer_name)
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.tokenizer_name is not None:
            state["_tokenizer"] = None
        return state

    def __call__(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize one text (1-D tensors) or a list of texts (2-D tensors, one row per text).

        Args:
            text: the text or texts.

        Returns:
            ``{"input_ids": long, "attention_mask": long, "word_index": long}``.
        """
        single = isinstance(text, str)
        texts = [text] if single else [str(t) for t in text]
        encoding = self.tokenizer(
            texts,
            max_length=self.max_length,
            padding=self.padding,
            truncation=self.truncation,
            return_attention_mask=True,
        )
        rows = []
        for i in range(len(texts)):
            rows.append([-1 if w is None else w for w in encoding.word_ids(i)])
        out = {
            "input_ids": torch.as_tensor(encoding["input_ids"], dtype=torch.long),
            "attention_mask": torch.as_tensor(encoding["attention_mask"], dtype=torch.long),
            "word_index": torch.as_tensor(rows, dtype=torch.long),
        }
        if single:
            out = {k: v[0] for k, v in out.items()}
        return out


class Tokenized(MapTransform):
    """Dictionary version of :class:`Tokenize`.

    The text stays under its key; the tensors go to ``{prefix}input_ids``, ``{prefix}attention_mask`` and
    ``{prefix}word_index``, where the prefix is ``output_prefix`` or, when None, ``"{key}_"`` (``report_input_ids``
    ...).

    Args:
        keys: keys of the texts.
        tokenizer: see :class:`Tokenize`.
        max_length: see :class:`Tokenize`.
        padding: see :class:`Tokenize`.
        truncation: see :class:`Tokenize`.
        local_files_only: see :class:`Tokenize`.
        output_prefix: prefix of the output keys; ``""`` gives plain ``input_ids`` (one key only).
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = Tokenize.backend

    def __init__(
        self,
        keys: KeysCollection,
        tokenizer: str | os.PathLike | Any,
        max_length: int = 128,
        padding: str | bool = "max_length",
        truncation: bool = True,
        local_files_only: bool = True,
        output_prefix: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_prefix is not None and len(self.keys) > 1:
            raise ValueError("output_prefix applies to one key only; leave it None to prefix by each key")
        self.tokenize = Tokenize(
            tokenizer, max_length=max_length, padding=padding, truncation=truncation, local_files_only=local_files_only
        )
        self.output_prefix = output_prefix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to each key (see the class docstring)."""
        d = dict(data)
        for key in self.key_iterator(d):
            prefix = f"{key}_" if self.output_prefix is None else self.output_prefix
            for name, value in self.tokenize(d[key]).items():
                d[f"{prefix}{name}"] = value
        return d


def train_wordpiece_tokenizer(
    corpus: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 1000,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> Path:
    """Train a small BERT-style WordPiece tokenizer and save it as a Hugging Face tokenizer folder.

    The folder loads with ``AutoTokenizer.from_pretrained(out_dir)`` exactly like a hub model, so tests and demos
    run the same code path as production without a download.

    Args:
        corpus: training texts (report sentences).
        out_dir: the folder to write (created).
        vocab_size: vocabulary size, special tokens included.
        min_frequency: fewest occurrences of a merged piece.
        lowercase: lower-case and strip accents (uncased BERT).

    Returns:
        The folder.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    pad, unk, cls, sep, mask = BERT_SPECIAL_TOKENS
    model = Tokenizer(models.WordPiece(unk_token=unk))
    model.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    model.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        show_progress=False,
    )
    model.train_from_iterator((str(t) for t in corpus), trainer=trainer)
    model.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, model.token_to_id(cls)), (sep, model.token_to_id(sep))],
    )
    model.decoder = decoders.WordPiece()
    wrapped = BertTokenizerFast(
        tokenizer_object=model,
        unk_token=unk,
        pad_token=pad,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        do_lower_case=lowercase,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(out)
    return out


LoadReportD = LoadReportDict = LoadReportd
SampleSentenceD = SampleSentenceDict = SampleSentenced
SampleSentencesUpToD = SampleSentencesUpToDict = SampleSentencesUpTod
TokenizeD = TokenizeDict = Tokenized
