"""From LF votes to (probabilistic) labels: majority vote, a Dawid-Skene label model, policies for uncertain labels.

Classes are indexed like the votes: 0 negative, 1 positive, 2 uncertain (abstain -1). Each observation is
aggregated on its own columns of the label matrix; a report no LF of an observation votes on gets no label for it
(blank, probabilities NaN): the observation is not mentioned.

**Majority vote** (:func:`majority_vote`): the most frequent vote; ties are broken by CheXpert's precedence
(positive > uncertain > negative) by default, or left unlabelled (``tie_policy="abstain"``), or drawn at random
(seeded).

**Label model** (:class:`DawidSkene`): the latent class ``y`` of a report has a prior ``pi`` (the class balance) and
each LF ``j`` a confusion matrix ``theta[j, y, v] = P(LF j votes v | y)``; LFs are conditionally independent given
``y`` and an abstention says nothing (``abstain="ignore"``, the default; ``"model"`` gives abstentions a per-class
rate). EM starts from the majority-vote posteriors: the E-step computes ``P(y | votes) ∝ pi[y] * prod_j theta[j, y,
v_j]``, the M-step re-estimates ``theta`` from the posteriors, with Dirichlet pseudo-counts (``prior_strength`` votes
that the LF is right with probability ``prior_accuracy``). No gold labels are used. The defaults were chosen on
generated reports with known labels (``docs/weak_labels.md``) for stability:

- ``parametrization="one-coin"``: each LF has one accuracy ``a_j`` (``theta[j, y, y] = a_j``, other votes share
  ``1 - a_j``). ``"class"`` gives one accuracy per class, ``"full"`` the whole confusion matrix; both can learn
  systematic confusions (an LF that calls uncertain findings negative) but, with correlated LFs and rare classes,
  EM can converge to swapped classes;
- ``overlap_only=True``: accuracies are estimated on reports where at least two LFs vote (a report with one vote
  only confirms that vote);
- ``min_accuracy=0.5``: accuracies are kept above chance, so an LF that votes alone is never overruled by its own
  estimated unreliability;
- ``class_balance="majority"``: the class balance is the (add-one smoothed) share of each majority-vote label,
  fixed during EM. Learning it with EM (``class_balance=None``) drifts when many reports have a single vote (their
  posterior follows the prior); ``"uniform"`` (Snorkel's default) is stable too but leaves a lone vote of an LF whose
  estimated accuracy is low (the normal-study LF, whose overlaps with other LFs are mostly the chronic findings it
  misses) at probabilities near 0.5: poor soft targets. A sequence fixes a known balance.

- ``decision="likelihood"``: the label is the class under which the votes are most likely, the class balance left
  out, so that a rare finding stated by a reliable LF is not voted down by its rarity; the probabilities are the
  posteriors, balance included, which makes them calibrated soft targets. So a rare finding can be labelled positive
  with ``P(pos) < 0.5``. ``decision="posterior"`` labels by the posterior.

The learned accuracies weigh the votes: two agreeing LFs no longer outvote one precise LF automatically. On
generated reports (``docs/weak_labels.md``) the label model matches majority vote on positive labels (within 0.01
F1), is better on uncertain ones, and its probabilities are better calibrated; on a few hundred reports the
accuracies are poorly estimated and majority vote is the safer choice.

**Snorkel** (:class:`SnorkelLabelModel`): Snorkel's ``LabelModel`` behind ``optional_import`` (``pip install
medssl[snorkel]``); never required.

**Uncertain labels** (:func:`soft_targets`): CheXpert's policies applied to probabilities: ``ones`` (U-Ones:
uncertain counts as positive), ``zeros`` (U-Zeros) and ``ignore`` (uncertain mass left out of the loss through a
weight); not-mentioned observations get ``blank`` (0: absent).

**No Finding** (:func:`add_no_finding`) is derived, as in CheXpert: positive when no other observation but Support
Devices is positive or uncertain; its probability is the smallest ``1 - P(pos) - P(unc)`` over the pathologies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.exceptions import MedsslError
from medssl.weak.matrix import LabelMatrix
from medssl.weak.negex import ABSTAIN, NEGATIVE, POSITIVE, UNCERTAIN

__all__ = [
    "N_CLASSES",
    "OptionalDependencyError",
    "majority_vote",
    "vote_proportions",
    "DawidSkene",
    "SnorkelLabelModel",
    "snorkel_available",
    "WeakLabels",
    "aggregate",
    "add_no_finding",
    "to_chexpert",
    "probs_from_chexpert",
    "soft_targets",
    "UNCERTAIN_POLICIES",
]

N_CLASSES = 3
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
_PATHOLOGIES = tuple(o for o in CHEXPERT_OBSERVATIONS if o not in ("No Finding", "Support Devices"))


class OptionalDependencyError(MedsslError):
    """An optional package (an extra of medssl) is needed for what was asked and is not installed."""


def _snorkel_label_model() -> tuple[Any, bool]:
    # Imported on use: medssl.weak stays light (no monai or torch import) for the label-matrix worker processes.
    from monai.utils import optional_import

    return optional_import("snorkel.labeling.model", name="LabelModel")


def snorkel_available() -> bool:
    """True when Snorkel's ``LabelModel`` can be imported."""
    return bool(_snorkel_label_model()[1])


def _one_hot(votes: np.ndarray, n_values: int) -> np.ndarray:
    """``(n, m)`` votes -> ``(n, m, n_values)`` float indicators; abstains (-1) are all-zero rows."""
    votes = np.asarray(votes, dtype=np.int64)
    out = np.zeros((*votes.shape, n_values), dtype=np.float64)
    n_idx, m_idx = np.nonzero(votes >= 0)
    out[n_idx, m_idx, votes[n_idx, m_idx]] = 1.0
    return out


def vote_proportions(votes: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Share of each class among the non-abstaining votes of each row (NaN rows when all abstain).

    Args:
        votes: ``(n, m)`` votes.
        n_classes: number of classes.

    Returns:
        ``(n, n_classes)`` proportions.
    """
    counts = _one_hot(votes, n_classes).sum(axis=1)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.maximum(total, 1), np.nan)


def majority_vote(
    votes: np.ndarray,
    tie_policy: str = "priority",
    priority: Sequence[int] = (POSITIVE, UNCERTAIN, NEGATIVE),
    n_classes: int = N_CLASSES,
    seed: int = 0,
    abstain: int = ABSTAIN,
) -> np.ndarray:
    """Majority vote per row.

    Args:
        votes: ``(n, m)`` votes (-1 abstain).
        tie_policy: ``"priority"`` (first tied class in ``priority``), ``"abstain"`` (no label) or ``"random"``
            (uniform among the tied classes, seeded).
        priority: class order for ``"priority"`` (default CheXpert's precedence).
        n_classes: number of classes.
        seed: seed of the ``"random"`` policy.
        abstain: label of rows where every LF abstains (ABSTAIN: no label; NEGATIVE reads silence as absence).

    Returns:
        ``(n,)`` labels.
    """
    if tie_policy not in ("priority", "abstain", "random"):
        raise ValueError(f"tie_policy must be 'priority', 'abstain' or 'random', got {tie_policy!r}")
    counts = _one_hot(votes, n_classes).sum(axis=1)
    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top) & (top > 0)
    labels = np.full(len(counts), ABSTAIN, dtype=np.int64)
    n_tied = tied.sum(axis=1)
    single = n_tied == 1
    labels[single] = tied[single].argmax(axis=1)
    several = np.flatnonzero(n_tied > 1)
    if tie_policy == "priority":
        for row in several:
            labels[row] = next(c for c in priority if tied[row, c])
    elif tie_policy == "random":
        rng = np.random.default_rng(seed)
        for row in several:
            labels[row] = rng.choice(np.flatnonzero(tied[row]))
    labels[top[:, 0] == 0] = abstain
    return labels


class DawidSkene:
    """Dawid-Skene label model fitted by EM on one observation's votes (see the module docstring).

    Args:
        n_classes: number of classes (3: negative, positive, uncertain).
        max_iter: EM iterations at most.
        tol: stop when no posterior moves by more than this.
        prior_accuracy: prior probability that an LF's vote is right.
        prior_strength: pseudo-votes behind ``prior_accuracy`` (per class row for ``"full"``).
        class_prior: pseudo-counts per class on a learned class balance.
        class_balance: ``"majority"`` (majority-vote label shares, fixed), ``"uniform"``, None (learned by EM) or a
            fixed sequence of ``n_classes`` shares.
        abstain: ``"ignore"`` (abstentions carry no information) or ``"model"`` (their rate depends on the class).
        parametrization: ``"one-coin"``, ``"class"``, ``"full"``, or ``"auto"`` (one coin for LFs that emit one
            value only, per-class accuracies for the others).
        overlap_only: estimate LF accuracies on reports with two votes or more.
        min_accuracy: lower bound of the one-coin and per-class accuracies.
        decision: labels from the ``"likelihood"`` of the votes under each class (the class balance left out) or
            from the ``"posterior"`` (see the module docstring); probabilities are posteriors either way.

    Attributes:
        class_balance_: learned (or fixed) class balance.
        confusion_: ``(n_lfs, n_classes, n_values)`` LF confusion matrices.
        kind_: the parametrization of each LF.
        n_iter_: EM iterations run.
    """

    def __init__(
        self,
        n_classes: int = N_CLASSES,
        max_iter: int = 100,
        tol: float = 1e-5,
        prior_accuracy: float = 0.7,
        prior_strength: float = 2.0,
        class_prior: float = 1.0,
        class_balance: Sequence[float] | str | None = "majority",
        abstain: str = "ignore",
        parametrization: str = "one-coin",
        overlap_only: bool = True,
        min_accuracy: float = 0.5,
        decision: str = "likelihood",
    ) -> None:
        if decision not in ("likelihood", "posterior"):
            raise ValueError(f"decision must be 'likelihood' or 'posterior', got {decision!r}")
        self.decision = decision
        if parametrization not in ("auto", "full", "class", "one-coin"):
            raise ValueError(f"parametrization must be 'auto', 'full', 'class' or 'one-coin', got {parametrization!r}")
        if abstain not in ("ignore", "model"):
            raise ValueError(f"abstain must be 'ignore' or 'model', got {abstain!r}")
        if not 0 < prior_accuracy < 1:
            raise ValueError("prior_accuracy must be in (0, 1)")
        self.n_classes = n_classes
        self.max_iter = max_iter
        self.tol = tol
        self.prior_accuracy = prior_accuracy
        self.prior_strength = prior_strength
        self.class_prior = class_prior
        self.balance_mode = "fixed"
        if isinstance(class_balance, str):
            if class_balance not in ("uniform", "majority"):
                raise ValueError(
                    f"class_balance must be 'uniform', 'majority', None or a sequence, got {class_balance!r}"
                )
            self.balance_mode = class_balance
            class_balance = np.full(n_classes, 1.0 / n_classes)
        elif class_balance is None:
            self.balance_mode = "learned"
        self.class_balance = None if class_balance is None else np.asarray(class_balance, dtype=float)
        self.min_accuracy = min_accuracy
        self.abstain = abstain
        self.parametrization = parametrization
        self.overlap_only = overlap_only
        self.class_balance_: np.ndarray | None = None
        self.confusion_: np.ndarray | None = None
        self.kind_: np.ndarray | None = None
        self.n_iter_ = 0

    def _observations(self, votes: np.ndarray) -> np.ndarray:
        votes = np.asarray(votes, dtype=np.int64)
        if self.abstain == "model":
            votes = np.where(votes < 0, self.n_classes, votes)
            return _one_hot(votes, self.n_classes + 1)
        return _one_hot(votes, self.n_classes)

    def _pseudo_counts(self, n_values: int) -> np.ndarray:
        k = self.n_classes
        beta = np.full((k, n_values), self.prior_strength * (1 - self.prior_accuracy) / (k - 1))
        beta[np.arange(k), np.arange(k)] = self.prior_strength * self.prior_accuracy
        if n_values > k:
            beta[:, k] = 1.0
        return beta

    def _m_step(self, post: np.ndarray, observed: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """LF confusion matrices from posteriors (with pseudo-counts), in each LF's parametrization."""
        k = self.n_classes
        diag = np.arange(k)
        cells = np.einsum("nk,njv->jkv", post, observed)
        full = cells + beta[None]
        confusion = full / full.sum(axis=2, keepdims=True)
        votes = cells[:, :, :k]
        strength, accuracy_prior = self.prior_strength, self.prior_accuracy
        # "class": P(vote = y | y) = a_jy, the other votes share 1 - a_jy.
        per_class = (votes[:, diag, diag] + strength * accuracy_prior) / (votes.sum(axis=2) + strength)
        # LFs are assumed better than chance (identifiability; an LF alone never votes against itself).
        per_class = np.clip(per_class, self.min_accuracy, 1.0)
        # "one-coin": one accuracy a_j for every class.
        one = (votes[:, diag, diag].sum(axis=1) + strength * accuracy_prior) / (votes.sum(axis=(1, 2)) + strength)
        one = np.clip(one, self.min_accuracy, 1.0)
        for rows, accuracy in ((self.kind_ == "class", per_class), (self.kind_ == "one-coin", one[:, None])):
            if not rows.any():
                continue
            acc = np.broadcast_to(accuracy, (len(votes), k))[rows]
            part = np.empty((int(rows.sum()), k, cells.shape[2]))
            part[:, :, :k] = ((1 - acc) / (k - 1))[:, :, None]
            part[:, diag, diag] = acc
            if cells.shape[2] > k:
                # Modelled abstentions keep a per-class rate.
                rate = (cells[rows, :, k] + 1.0) / (cells[rows].sum(axis=2) + 2.0)
                part[:, :, :k] *= (1 - rate)[:, :, None]
                part[:, :, k] = rate
            confusion[rows] = part
        return confusion

    def _posteriors(self, observed: np.ndarray) -> np.ndarray:
        log_post = np.log(self.class_balance_)[None, :] + np.einsum("njv,jkv->nk", observed, np.log(self.confusion_))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        return post / post.sum(axis=1, keepdims=True)

    def fit(self, votes: np.ndarray) -> DawidSkene:
        """Fit on ``(n, m)`` votes; rows where every LF abstains are left out.

        Args:
            votes: the votes.

        Returns:
            self.
        """
        votes = np.asarray(votes, dtype=np.int64)
        covered = (votes >= 0).any(axis=1)
        votes = votes[covered]
        k = self.n_classes
        observed = self._observations(votes)
        n_values = observed.shape[2]
        beta = self._pseudo_counts(n_values)
        emitted = np.array([len(np.unique(column[column >= 0])) for column in votes.T], dtype=int)
        if self.parametrization == "auto":
            # A unipolar LF (one vote value) has no identifiable per-class accuracies: give it one coin.
            self.kind_ = np.where(emitted <= 1, "one-coin", "class")
        else:
            self.kind_ = np.full(votes.shape[1], self.parametrization)
        if len(votes) == 0:
            self.class_balance_ = (
                self.class_balance / self.class_balance.sum() if self.class_balance is not None else np.full(k, 1 / k)
            )
            self.confusion_ = np.broadcast_to(beta / beta.sum(axis=1, keepdims=True), (votes.shape[1], k, n_values))
            return self
        overlap = (votes >= 0).sum(axis=1) >= (2 if self.overlap_only else 1)
        if self.balance_mode == "majority":
            # Plug-in class balance: the majority-vote label shares (add-one smoothed), fixed during EM.
            shares = np.bincount(majority_vote(votes, n_classes=k), minlength=k)[:k] + 1.0
            self.class_balance = shares / shares.sum()
        # Initial posteriors: smoothed vote shares (majority vote).
        counts = _one_hot(votes, k).sum(axis=1) + 1e-2
        post = counts / counts.sum(axis=1, keepdims=True)
        for iteration in range(1, self.max_iter + 1):
            if self.class_balance is not None:
                self.class_balance_ = self.class_balance / self.class_balance.sum()
            else:
                mass = post.sum(axis=0) + self.class_prior
                self.class_balance_ = mass / mass.sum()
            # Rows with a single vote say nothing about that LF's accuracy (it would only confirm itself).
            self.confusion_ = self._m_step(post[overlap], observed[overlap], beta)
            new_post = self._posteriors(observed)
            shift = np.abs(new_post - post).max()
            post = new_post
            self.n_iter_ = iteration
            if shift < self.tol:
                break
        return self

    def predict_proba(self, votes: np.ndarray) -> np.ndarray:
        """Class probabilities per row; NaN rows where every LF abstains.

        Args:
            votes: ``(n, m)`` votes, the same LFs as in :meth:`fit`.

        Returns:
            ``(n, n_classes)`` probabilities.
        """
        if self.confusion_ is None:
            raise RuntimeError("DawidSkene.predict_proba called before fit")
        votes = np.asarray(votes, dtype=np.int64)
        out = np.full((len(votes), self.n_classes), np.nan)
        covered = (votes >= 0).any(axis=1)
        if covered.any():
            out[covered] = self._posteriors(self._observations(votes[covered]))
        return out

    def decision_scores(self, votes: np.ndarray) -> np.ndarray:
        """Scores whose argmax is the label.

        With ``decision="posterior"`` the posteriors; with ``"likelihood"`` the posteriors divided by the class
        balance and normalised, i.e. the likelihood of the votes under each class. NaN rows where every LF abstains.

        Args:
            votes: ``(n, m)`` votes.

        Returns:
            ``(n, n_classes)`` scores.
        """
        proba = self.predict_proba(votes)
        if self.decision == "posterior":
            return proba
        scores = proba / self.class_balance_[None, :]
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, votes: np.ndarray) -> np.ndarray:
        """The label of each row: argmax of :meth:`decision_scores` (ABSTAIN where every LF abstains)."""
        scores = self.decision_scores(votes)
        labels = np.full(len(scores), ABSTAIN, dtype=np.int64)
        covered = ~np.isnan(scores).any(axis=1)
        labels[covered] = scores[covered].argmax(axis=1)
        return labels

    def lf_accuracies(self) -> np.ndarray:
        """Estimated accuracy of each LF when it votes: ``sum_y pi[y] theta[j, y, y] / sum_y pi[y] P(vote | y)``."""
        if self.confusion_ is None:
            raise RuntimeError("fit first")
        k = self.n_classes
        right = (self.class_balance_[None, :] * self.confusion_[:, np.arange(k), np.arange(k)]).sum(axis=1)
        votes = (self.class_balance_[None, :, None] * self.confusion_[:, :, :k]).sum(axis=(1, 2))
        return right / votes


class SnorkelLabelModel:
    """Snorkel's ``LabelModel`` with the :class:`DawidSkene` interface (optional: ``pip install medssl[snorkel]``).

    Args:
        n_classes: cardinality.
        n_epochs: training epochs.
        seed: Snorkel's seed.

    Raises:
        OptionalDependencyError: Snorkel is not installed.
    """

    def __init__(self, n_classes: int = N_CLASSES, n_epochs: int = 200, seed: int = 0) -> None:
        label_model, available = _snorkel_label_model()
        if not available:
            raise OptionalDependencyError(
                "Snorkel is not installed: pip install 'medssl[snorkel]', or use the built-in DawidSkene label model"
            )
        self.n_classes = n_classes
        self.n_epochs = n_epochs
        self.seed = seed
        self.model = label_model(cardinality=n_classes, verbose=False)

    def fit(self, votes: np.ndarray) -> SnorkelLabelModel:
        """Fit on ``(n, m)`` votes (Snorkel's coding is the same: -1 abstain)."""
        votes = np.asarray(votes, dtype=np.int64)
        covered = (votes >= 0).any(axis=1)
        self.model.fit(votes[covered], n_epochs=self.n_epochs, seed=self.seed, progress_bar=False)
        return self

    def predict_proba(self, votes: np.ndarray) -> np.ndarray:
        """Class probabilities; NaN rows where every LF abstains."""
        votes = np.asarray(votes, dtype=np.int64)
        out = np.full((len(votes), self.n_classes), np.nan)
        covered = (votes >= 0).any(axis=1)
        if covered.any():
            out[covered] = self.model.predict_proba(votes[covered])
        return out


@dataclass
class WeakLabels:
    """Aggregated labels of a corpus.

    Attributes:
        keys: report keys, one per row.
        observations: the observation of each column.
        probs: ``(n, n_observations, 3)`` probabilities of negative, positive, uncertain; NaN when not mentioned.
        labels: ``(n, n_observations)`` class indices, ABSTAIN (-1) when not mentioned.
        method: ``"majority"``, ``"label-model"`` or ``"snorkel"``.
    """

    keys: list[str]
    observations: list[str]
    probs: np.ndarray
    labels: np.ndarray
    method: str

    def chexpert(self) -> pd.DataFrame:
        """Labels in CheXpert coding (1, 0, -1, NaN for blank), indexed by report key."""
        return pd.DataFrame(
            to_chexpert(self.labels), index=pd.Index(self.keys, name="report_key"), columns=self.observations
        )

    def to_frame(self) -> pd.DataFrame:
        """CheXpert-coded labels plus ``<obs>_p_pos`` and ``<obs>_p_unc`` probability columns."""
        frame = self.chexpert()
        for j, observation in enumerate(self.observations):
            frame[f"{observation}_p_pos"] = np.round(self.probs[:, j, POSITIVE], 4)
            frame[f"{observation}_p_unc"] = np.round(self.probs[:, j, UNCERTAIN], 4)
        return frame


def _label_model(model: str, seed: int, **options: object) -> DawidSkene | SnorkelLabelModel:
    if model == "label-model":
        return DawidSkene(**options)  # type: ignore[arg-type]
    if model == "snorkel":
        return SnorkelLabelModel(seed=seed, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown model {model!r}; expected 'majority', 'label-model' or 'snorkel'")


def aggregate(
    matrix: LabelMatrix,
    model: str = "label-model",
    tie_policy: str = "priority",
    seed: int = 0,
    no_finding: bool = True,
    **options: object,
) -> WeakLabels:
    """Aggregate a label matrix into labels and probabilities, one observation at a time.

    Args:
        matrix: the label matrix.
        model: ``"majority"`` (probabilities are vote shares), ``"label-model"`` (:class:`DawidSkene`) or
            ``"snorkel"`` (:class:`SnorkelLabelModel`).
        tie_policy: majority-vote ties (see :func:`majority_vote`); label models break exact ties the same way.
        seed: seed of random tie breaks and of Snorkel.
        no_finding: add the derived No Finding column (:func:`add_no_finding`).
        options: keyword arguments of the label model.

    Returns:
        The weak labels, observations in CheXpert's column order.
    """
    observations = [o for o in CHEXPERT_OBSERVATIONS if o in matrix.observations]
    n = len(matrix.keys)
    probs = np.full((n, len(observations), N_CLASSES), np.nan)
    labels = np.full((n, len(observations)), ABSTAIN, dtype=np.int64)
    for j, observation in enumerate(observations):
        votes = matrix.for_observation(observation)
        if model == "majority":
            labels[:, j] = majority_vote(votes, tie_policy=tie_policy, seed=seed)
            probs[:, j] = vote_proportions(votes)
        else:
            estimator = _label_model(model, seed, **options).fit(votes)
            p = estimator.predict_proba(votes)
            probs[:, j] = p
            scores = estimator.decision_scores(votes) if hasattr(estimator, "decision_scores") else p
            covered = ~np.isnan(scores).any(axis=1)
            top = np.where(covered[:, None], scores, -1.0)
            # Exact ties (identical probabilities) follow the majority-vote tie policy.
            tied = np.isclose(top, top.max(axis=1, keepdims=True)) & covered[:, None]
            ties = tied.sum(axis=1) > 1
            labels[covered, j] = top[covered].argmax(axis=1)
            if ties.any():
                fallback = majority_vote(np.where(tied, np.arange(N_CLASSES), ABSTAIN), tie_policy, seed=seed)
                labels[ties, j] = fallback[ties]
    weak = WeakLabels(list(matrix.keys), observations, probs, labels, model)
    return add_no_finding(weak) if no_finding else weak


def add_no_finding(weak: WeakLabels) -> WeakLabels:
    """Add (or replace) the derived No Finding column, CheXpert's way.

    No Finding is positive when no pathology (every observation but No Finding and Support Devices) is positive or
    uncertain, and blank otherwise. Its probability of being positive is ``min (1 - P(pos) - P(unc))`` over the
    pathologies (not-mentioned ones count as absent): their labels come from the same text and rules, so their
    errors are dependent and the product would understate it.

    Args:
        weak: weak labels.

    Returns:
        New weak labels with No Finding first.
    """
    keep = [j for j, o in enumerate(weak.observations) if o != "No Finding"]
    observations = [weak.observations[j] for j in keep]
    probs = weak.probs[:, keep]
    labels = weak.labels[:, keep]
    pathology = [j for j, o in enumerate(observations) if o in _PATHOLOGIES]
    abnormal = np.isin(labels[:, pathology], (POSITIVE, UNCERTAIN)).any(axis=1)
    mass = np.nan_to_num(probs[:, pathology, POSITIVE] + probs[:, pathology, UNCERTAIN], nan=0.0)
    # The pathologies of one report are labelled from the same text by the same rules, so their errors go together:
    # the Frechet upper bound min(1 - p) (fully dependent errors), not the product (independent errors), which would
    # shrink with the number of observations.
    p_normal = np.min(1 - np.clip(mass, 0, 1), axis=1) if pathology else np.ones(len(labels))
    nf_probs = np.stack([1 - p_normal, p_normal, np.zeros_like(p_normal)], axis=1)
    nf_labels = np.where(abnormal, ABSTAIN, POSITIVE)
    return WeakLabels(
        weak.keys,
        ["No Finding", *observations],
        np.concatenate([nf_probs[:, None], probs], axis=1),
        np.concatenate([nf_labels[:, None], labels], axis=1),
        weak.method,
    )


def to_chexpert(labels: np.ndarray) -> np.ndarray:
    """Class indices to CheXpert coding: POSITIVE -> 1, NEGATIVE -> 0, UNCERTAIN -> -1, ABSTAIN -> NaN."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, np.nan)
    out[labels == POSITIVE] = 1.0
    out[labels == NEGATIVE] = 0.0
    out[labels == UNCERTAIN] = -1.0
    return out


def probs_from_chexpert(values: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Hard CheXpert-coded labels (1, 0, -1, NaN) as one-hot probabilities (NaN rows for blanks).

    Args:
        values: ``(n, n_observations)`` labels.

    Returns:
        ``(n, n_observations, 3)`` probabilities, usable with :func:`soft_targets`.
    """
    array = np.asarray(values, dtype=float)
    out = np.full((*array.shape, N_CLASSES), np.nan)
    for code, cls in ((1.0, POSITIVE), (0.0, NEGATIVE), (-1.0, UNCERTAIN)):
        hit = array == code
        out[hit] = 0.0
        out[..., cls][hit] = 1.0
    return out


def soft_targets(probs: np.ndarray, policy: str = "ones", blank: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Training targets and loss weights from label probabilities, with an uncertain-label policy.

    Args:
        probs: ``(..., 3)`` probabilities of negative, positive, uncertain (NaN where not mentioned), e.g.
            ``WeakLabels.probs`` or :func:`probs_from_chexpert`.
        policy: ``"ones"`` (U-Ones: target ``P(pos) + P(unc)``), ``"zeros"`` (U-Zeros: ``P(pos)``) or ``"ignore"``
            (target ``P(pos) / (P(pos) + P(neg))``, weight ``1 - P(unc)``: a surely-uncertain label drops out of
            the loss).
        blank: target of not-mentioned observations (0: absent, CheXpert's usual reading); None gives them weight 0.

    Returns:
        ``(targets, weights)``, float32 arrays of shape ``probs.shape[:-1]``; use ``weights`` as the per-element
        weight of a binary cross-entropy.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"policy must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    probs = np.asarray(probs, dtype=np.float64)
    mentioned = ~np.isnan(probs).any(axis=-1)
    p = np.nan_to_num(probs, nan=0.0)
    p_neg, p_pos, p_unc = p[..., NEGATIVE], p[..., POSITIVE], p[..., UNCERTAIN]
    weights = np.ones(p_pos.shape)
    if policy == "ones":
        targets = p_pos + p_unc
    elif policy == "zeros":
        targets = p_pos.copy()
    else:
        certain = p_pos + p_neg
        with np.errstate(invalid="ignore", divide="ignore"):
            targets = np.where(certain > 0, p_pos / np.maximum(certain, 1e-12), 0.0)
        weights = 1.0 - p_unc
    targets = np.where(mentioned, targets, 0.0 if blank is None else blank)
    weights = np.where(mentioned, weights, 0.0 if blank is None else 1.0)
    return targets.astype(np.float32), weights.astype(np.float32)
