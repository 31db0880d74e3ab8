"""The label matrix (reports x labeling functions) over a corpus, and labeling-function diagnostics.

:func:`label_matrix` parses each report once, annotates it once (mentions and cues shared by all LFs) and applies
every LF; chunks of reports go to worker processes with joblib when ``n_jobs > 1``. Reports that cannot be parsed
are reported (``ReportError`` with the report's key) and skipped.

:func:`lf_summary` is the diagnostics table, one row per LF: coverage (share of reports it votes on), overlaps
(share where it votes and another LF of the same observation votes too), conflicts (share where another LF of the
same observation votes differently), vote counts, and, when gold labels are given, the empirical accuracy on the
gold reports it votes on. Gold labels use CheXpert's coding (1 / 0 / -1 / blank) and blank counts as negative, the
usual training convention (a finding not mentioned is taken as absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medssl.data.reports import DEFAULT_PRIORITY, ParsedReport, ReportError, parse_report
from medssl.weak.labeling import AnnotatedReport, LabelingFunction, chexpert_lfs
from medssl.weak.negex import ABSTAIN, NEGATIVE, POSITIVE, UNCERTAIN, VOTE_NAMES
from medssl.weak.vocabulary import Vocabulary

__all__ = ["LabelMatrix", "label_matrix", "lf_summary", "gold_classes", "from_chexpert"]


@dataclass
class LabelMatrix:
    """Votes of labeling functions on reports.

    Attributes:
        votes: ``(n_reports, n_lfs)`` int8 array of votes (-1 abstain, 0 negative, 1 positive, 2 uncertain).
        keys: the report keys, one per row.
        lf_names: LF names, one per column.
        lf_observations: the observation of each column.
    """

    votes: np.ndarray
    keys: list[str]
    lf_names: list[str]
    lf_observations: list[str]

    @property
    def observations(self) -> list[str]:
        """The observations with at least one LF, in column order."""
        return list(dict.fromkeys(self.lf_observations))

    def columns_of(self, observation: str) -> np.ndarray:
        """Column indices of one observation's LFs."""
        return np.flatnonzero(np.asarray(self.lf_observations) == observation)

    def for_observation(self, observation: str) -> np.ndarray:
        """The ``(n_reports, k)`` sub-matrix of one observation's LFs."""
        return self.votes[:, self.columns_of(observation)]

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a DataFrame indexed by report key, one column per LF."""
        return pd.DataFrame(self.votes, index=pd.Index(self.keys, name="report_key"), columns=self.lf_names)


def _label_chunk(
    items: Sequence[str | ParsedReport],
    keys: Sequence[str],
    lfs: Sequence[LabelingFunction],
    priority: Sequence[str],
    min_words: int,
    vocabulary: Vocabulary | None,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Parse, annotate and label one chunk; returns (votes of kept rows, kept positions, (key, problem) errors)."""
    votes = np.full((len(items), len(lfs)), ABSTAIN, dtype=np.int8)
    kept: list[int] = []
    errors: list[tuple[str, str]] = []
    for row, (item, key) in enumerate(zip(items, keys)):
        try:
            parsed = (
                item
                if isinstance(item, ParsedReport)
                else parse_report(item, source=key, priority=priority, min_words=min_words)
            )
        except ReportError as error:
            errors.append((key, error.problem))
            continue
        doc = AnnotatedReport(parsed, vocabulary)
        for column, lf in enumerate(lfs):
            votes[row, column] = lf(doc)
        kept.append(row)
    return votes[kept], kept, errors


def label_matrix(
    reports: Sequence[str | ParsedReport],
    keys: Sequence[str] | None = None,
    lfs: Sequence[LabelingFunction] | None = None,
    n_jobs: int = 1,
    chunk_size: int = 2000,
    priority: Sequence[str] = DEFAULT_PRIORITY,
    min_words: int = 2,
    vocabulary: Vocabulary | None = None,
) -> tuple[LabelMatrix, list[ReportError]]:
    """Apply labeling functions to a corpus.

    Args:
        reports: report texts or parsed reports.
        keys: one PHI-free key per report (default ``"0"``, ``"1"`` ...), used in the matrix and in errors.
        lfs: the LFs (default :func:`~medssl.weak.labeling.chexpert_lfs`).
        n_jobs: worker processes (joblib); 1 runs in this process, -1 uses every core.
        chunk_size: reports per task.
        priority: see :func:`medssl.data.reports.parse_report` (which section counts as the report's text; the LFs
            read sections themselves, this only decides which reports are usable).
        min_words: reports whose chosen text has fewer words are skipped as unusable.
        vocabulary: phrases (default vocabulary when None).

    Returns:
        ``(matrix, errors)``: the matrix has the usable reports only, in input order; ``errors`` the others, each
        naming its key.

    Raises:
        ValueError: ``keys`` of the wrong length or duplicated LF names.
    """
    lfs = list(lfs) if lfs is not None else chexpert_lfs(vocabulary=vocabulary)
    names = [lf.name for lf in lfs]
    if len(set(names)) != len(names):
        raise ValueError("labeling function names must be unique")
    keys = [str(k) for k in keys] if keys is not None else [str(i) for i in range(len(reports))]
    if len(keys) != len(reports):
        raise ValueError(f"{len(keys)} keys for {len(reports)} reports")
    chunks = [(start, min(start + chunk_size, len(reports))) for start in range(0, len(reports), chunk_size)]
    args = [(reports[a:b], keys[a:b], lfs, tuple(priority), min_words, vocabulary) for a, b in chunks]
    if n_jobs == 1 or len(chunks) <= 1:
        results = [_label_chunk(*a) for a in args]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs)(delayed(_label_chunk)(*a) for a in args)
    blocks, kept_keys, errors = [], [], []
    for (start, _), (votes, kept, chunk_errors) in zip(chunks, results):
        blocks.append(votes)
        kept_keys.extend(keys[start + i] for i in kept)
        errors.extend(ReportError(problem, key) for key, problem in chunk_errors)
    votes = np.concatenate(blocks) if blocks else np.zeros((0, len(lfs)), dtype=np.int8)
    return LabelMatrix(votes, kept_keys, names, [lf.observation for lf in lfs]), errors


def from_chexpert(values: np.ndarray | pd.Series | pd.DataFrame, blank: int = NEGATIVE) -> np.ndarray:
    """CheXpert coding (1, 0, -1, blank) to class indices (POSITIVE, NEGATIVE, UNCERTAIN, ``blank``).

    Args:
        values: CheXpert-coded labels (floats with NaN for blank).
        blank: class given to blanks (NEGATIVE by default; ABSTAIN keeps them apart).

    Returns:
        Integer class indices of the same shape.
    """
    array = np.asarray(values, dtype=float)
    out = np.full(array.shape, blank, dtype=np.int64)
    out[array == 1] = POSITIVE
    out[array == 0] = NEGATIVE
    out[array == -1] = UNCERTAIN
    return out


def gold_classes(gold: pd.DataFrame, keys: Sequence[str], observation: str) -> np.ndarray:
    """Gold class indices of one observation for the given keys (ABSTAIN where the key has no gold row).

    Args:
        gold: CheXpert-coded labels indexed by report key, one column per observation.
        keys: report keys (matrix rows).
        observation: the column.

    Returns:
        ``(len(keys),)`` class indices; blanks of gold rows count as NEGATIVE.
    """
    out = np.full(len(keys), ABSTAIN, dtype=np.int64)
    if observation not in gold.columns:
        return out
    column = gold[observation]
    positions = pd.Index(gold.index.astype(str)).get_indexer([str(k) for k in keys])
    present = positions >= 0
    out[present] = from_chexpert(column.to_numpy()[positions[present]])
    return out


def lf_summary(
    matrix: LabelMatrix,
    gold: pd.DataFrame | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Diagnostics of each labeling function.

    Args:
        matrix: the label matrix.
        gold: optional CheXpert-coded gold labels indexed by report key (a few rows are enough).
        descriptions: optional ``{lf name: description}`` column.

    Returns:
        One row per LF: ``lf``, ``observation``, ``polarity`` (votes it emitted), ``coverage``, ``overlaps``,
        ``conflicts``, ``n_positive``, ``n_negative``, ``n_uncertain`` and, with gold, ``n_gold`` (gold reports it
        votes on), ``correct``, ``incorrect``, ``empirical_accuracy``.
    """
    n = max(len(matrix.keys), 1)
    rows = []
    for observation in matrix.observations:
        columns = matrix.columns_of(observation)
        sub = matrix.votes[:, columns].astype(np.int64)
        voted = sub != ABSTAIN
        n_voting = voted.sum(axis=1)
        truth = gold_classes(gold, matrix.keys, observation) if gold is not None else None
        for j, column in enumerate(columns):
            mine = voted[:, j]
            others_vote = n_voting - mine > 0
            conflict = np.zeros(len(sub), dtype=bool)
            for k in range(sub.shape[1]):
                if k != j:
                    conflict |= voted[:, k] & (sub[:, k] != sub[:, j])
            conflict &= mine
            emitted = sorted({int(v) for v in np.unique(sub[mine, j])})
            row = {
                "lf": matrix.lf_names[column],
                "observation": observation,
                "polarity": ",".join(VOTE_NAMES[v] for v in emitted),
                "coverage": mine.sum() / n,
                "overlaps": (mine & others_vote).sum() / n,
                "conflicts": conflict.sum() / n,
                "n_positive": int((sub[:, j] == POSITIVE).sum()),
                "n_negative": int((sub[:, j] == NEGATIVE).sum()),
                "n_uncertain": int((sub[:, j] == UNCERTAIN).sum()),
            }
            if truth is not None:
                scored = mine & (truth != ABSTAIN)
                correct = int((sub[scored, j] == truth[scored]).sum())
                row.update(
                    n_gold=int(scored.sum()),
                    correct=correct,
                    incorrect=int(scored.sum()) - correct,
                    empirical_accuracy=correct / scored.sum() if scored.any() else np.nan,
                )
            if descriptions is not None:
                row["description"] = descriptions.get(matrix.lf_names[column], "")
            rows.append(row)
    return pd.DataFrame(rows)
