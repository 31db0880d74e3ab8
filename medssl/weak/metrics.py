"""Scores of weak labels against gold labels: per-observation precision, recall and F1.

Both sides are CheXpert-coded (1 / 0 / -1 / blank) tables indexed by report key. Blank counts as negative (a
finding not mentioned is absent, the training convention), so each observation is a three-class problem: negative,
positive, uncertain. :func:`label_metrics` reports, for the positive and the uncertain class of each observation,
scikit-learn's precision, recall and F1 (one class against the rest), and a ``macro`` row averaging the
observations.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from medssl.weak.matrix import from_chexpert
from medssl.weak.negex import POSITIVE, UNCERTAIN

__all__ = ["label_metrics"]


def label_metrics(
    predicted: pd.DataFrame,
    gold: pd.DataFrame,
    observations: Sequence[str] | None = None,
    classes: Sequence[str] = ("positive", "uncertain"),
) -> pd.DataFrame:
    """Precision, recall and F1 of predicted labels on the reports that have gold labels.

    Args:
        predicted: CheXpert-coded labels indexed by report key.
        gold: CheXpert-coded gold labels indexed by report key (only the keys in both tables are scored).
        observations: columns to score (default: those in both tables).
        classes: which classes to score: ``"positive"`` and/or ``"uncertain"``.

    Returns:
        Rows ``observation``, ``label``, ``precision``, ``recall``, ``f1``, ``support`` (gold count), ``n``
        (reports scored), then one ``macro`` row per class.
    """
    from sklearn.metrics import precision_recall_fscore_support

    codes = {"positive": POSITIVE, "uncertain": UNCERTAIN}
    predicted = predicted.copy()
    gold = gold.copy()
    predicted.index = predicted.index.astype(str)
    gold.index = gold.index.astype(str)
    common = predicted.index.intersection(gold.index)
    if observations is None:
        observations = [o for o in predicted.columns if o in gold.columns]
    rows = []
    for observation in observations:
        y_pred = from_chexpert(predicted.loc[common, observation].to_numpy())
        y_true = from_chexpert(gold.loc[common, observation].to_numpy())
        for name in classes:
            cls = codes[name]
            precision, recall, f1, _ = precision_recall_fscore_support(
                y_true == cls, y_pred == cls, average="binary", zero_division=0.0
            )
            rows.append(
                {
                    "observation": observation,
                    "label": name,
                    "precision": precision,
                    "recall": recall,
                    "f1": f1,
                    "support": int((y_true == cls).sum()),
                    "n": len(common),
                }
            )
    table = pd.DataFrame(rows, columns=["observation", "label", "precision", "recall", "f1", "support", "n"])
    macro = []
    for name in classes:
        part = table[(table["label"] == name) & (table["support"] > 0)]
        if len(part):
            macro.append(
                {
                    "observation": "macro",
                    "label": name,
                    "precision": part["precision"].mean(),
                    "recall": part["recall"].mean(),
                    "f1": part["f1"].mean(),
                    "support": int(part["support"].sum()),
                    "n": len(common),
                }
            )
    if macro:
        table = pd.concat([table, pd.DataFrame(macro)], ignore_index=True)
    return table
