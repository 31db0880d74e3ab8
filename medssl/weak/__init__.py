"""Weak labels from radiology reports: labeling functions, the label matrix, majority vote and a label model.

The pieces, in the order data flows through them (see ``docs/weak_labels.md``):

- :mod:`medssl.weak.negex`: votes (:class:`Vote`) and the negation / uncertainty scope of mentions in a sentence;
- :mod:`medssl.weak.vocabulary`: the phrases of the 14 CheXpert observations;
- :mod:`medssl.weak.labeling`: labeling functions over an :class:`AnnotatedReport`, the shipped rule set
  (:func:`chexpert_lfs`);
- :mod:`medssl.weak.matrix`: the label matrix over a corpus (:func:`label_matrix`, parallel) and LF diagnostics
  (:func:`lf_summary`);
- :mod:`medssl.weak.aggregate`: :func:`majority_vote`, the :class:`DawidSkene` label model, optional Snorkel,
  the derived No Finding, and :func:`soft_targets` (U-Ones / U-Zeros / ignore) for training;
- :mod:`medssl.weak.metrics`: precision / recall / F1 against gold labels;
- :mod:`medssl.weak.training`: the noise-aware loss (:class:`NoiseAwareBCELoss`), weak labels on datalist items
  (:func:`attach_weak_labels`, :func:`write_weak_datalist`) and the weak-vs-gold comparison
  (:func:`run_weak_comparison`, ``medssl weak-train``). It needs torch, so it is imported on first use of one of
  its names: label-matrix workers import this package without torch.
"""

from __future__ import annotations

from medssl.weak.aggregate import (
    DawidSkene,
    OptionalDependencyError,
    SnorkelLabelModel,
    WeakLabels,
    add_no_finding,
    aggregate,
    majority_vote,
    probs_from_chexpert,
    snorkel_available,
    soft_targets,
    to_chexpert,
    vote_proportions,
)
from medssl.weak.labeling import (
    AnnotatedReport,
    LabelingFunction,
    MentionLF,
    NormalStudyLF,
    SpecificLF,
    chexpert_lfs,
    chexpert_rule_votes,
    labeling_function,
)
from medssl.weak.matrix import LabelMatrix, from_chexpert, label_matrix, lf_summary
from medssl.weak.metrics import label_metrics
from medssl.weak.negex import ABSTAIN, NEGATIVE, POSITIVE, UNCERTAIN, Vote
from medssl.weak.vocabulary import Vocabulary, default_vocabulary

_TRAINING = (
    "NoiseAwareBCELoss",
    "WeakTrainingError",
    "attach_weak_labels",
    "write_weak_datalist",
    "read_gold_labels",
    "WeakTrainingConfig",
    "WeakComparisonResult",
    "run_weak_comparison",
)

__all__ = [
    "ABSTAIN",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "Vote",
    "Vocabulary",
    "default_vocabulary",
    "AnnotatedReport",
    "LabelingFunction",
    "labeling_function",
    "MentionLF",
    "SpecificLF",
    "NormalStudyLF",
    "chexpert_lfs",
    "chexpert_rule_votes",
    "LabelMatrix",
    "label_matrix",
    "lf_summary",
    "from_chexpert",
    "majority_vote",
    "vote_proportions",
    "DawidSkene",
    "SnorkelLabelModel",
    "snorkel_available",
    "OptionalDependencyError",
    "WeakLabels",
    "aggregate",
    "add_no_finding",
    "to_chexpert",
    "probs_from_chexpert",
    "soft_targets",
    "label_metrics",
    *_TRAINING,
]


def __getattr__(name: str) -> object:
    """The names of :mod:`medssl.weak.training`, imported lazily (it imports torch)."""
    if name in _TRAINING:
        from medssl.weak import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
