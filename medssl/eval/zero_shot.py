"""Zero-shot classification and image <-> report retrieval with a pretrained image-report model (ConVIRT, GLoRIA).

Zero-shot: each class is described by prompts; an image's score for a class comes from its similarities to the
prompts' embeddings (the model's own ``similarity``: cosine for ConVIRT, the training logits for GLoRIA), averaged
over the prompts. Two forms:

* **binary** (``{"Pleural Effusion": {"positive": [...], "negative": [...]}}``): per class, the probability is the
  two-way softmax of the mean positive and mean negative similarity; the classes are scored independently
  (multi-label findings);
* **multiclass** (``{"Atelectasis": [...], "Cardiomegaly": [...]}``): the softmax over the classes' mean similarities.

Every image is scored on its own against the prompt embeddings: no normalisation of similarities over the test set
(GLoRIA's published zero-shot code standardises them over the test images, which makes a case's score depend on the
other cases).

Retrieval: every image against every report of the evaluation set (and the reverse), Recall@K, mean and median rank
and, with a relevance matrix, Precision@K, with bootstrap CIs over queries (:func:`medssl.eval.metrics.bootstrap_ci`,
ties broken pessimistically by :func:`medssl.eval.retrieval.retrieval_ranks`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medssl.eval.metrics import Estimate, MetricInputError, auroc, bootstrap_ci
from medssl.eval.retrieval import retrieval_ranks
from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "ZeroShotError",
    "CHEXPERT_BINARY_PROMPTS",
    "CHEXPERT_5X200_PROMPTS",
    "embed_images",
    "embed_texts",
    "zero_shot_scores",
    "zero_shot_evaluation",
    "similarity_retrieval_metrics",
    "retrieval_evaluation",
    "paired_eval_transforms",
    "embed_pairs",
    "estimates_table",
]

logger = get_logger(__name__)


class ZeroShotError(MedsslError):
    """Prompts, labels or embeddings that zero-shot classification or retrieval cannot use."""


#: Binary prompts for CheXpert observations: what a report says when the finding is there, and when it is not.
CHEXPERT_BINARY_PROMPTS: dict[str, dict[str, list[str]]] = {
    "Atelectasis": {
        "positive": ["Bibasilar atelectasis.", "Plate-like atelectasis at the left base.", "Mild atelectasis."],
        "negative": ["No atelectasis.", "The lungs are clear.", "No focal consolidation or atelectasis."],
    },
    "Cardiomegaly": {
        "positive": ["The heart is enlarged.", "Moderate cardiomegaly.", "Cardiomegaly is present."],
        "negative": ["Heart size is normal.", "No cardiomegaly.", "The cardiac silhouette is within normal limits."],
    },
    "Consolidation": {
        "positive": ["Right lower lobe consolidation.", "Focal consolidation is seen.", "Dense consolidation."],
        "negative": ["No focal consolidation.", "The lungs are clear.", "No consolidation."],
    },
    "Edema": {
        "positive": ["Moderate pulmonary edema.", "Mild interstitial edema.", "Pulmonary vascular congestion."],
        "negative": ["No pulmonary edema.", "No vascular congestion.", "No edema."],
    },
    "Pleural Effusion": {
        "positive": ["Small left pleural effusion.", "Moderate bilateral pleural effusions.", "Pleural effusion."],
        "negative": ["No pleural effusion.", "No effusion.", "The costophrenic angles are sharp."],
    },
    "Pneumothorax": {
        "positive": ["Small right apical pneumothorax.", "There is a pneumothorax.", "Large left pneumothorax."],
        "negative": ["No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."],
    },
}

#: Multiclass prompts of the CheXpert 5x200 task (one finding per image), built from the positive prompts above.
CHEXPERT_5X200_PROMPTS: dict[str, list[str]] = {
    name: list(CHEXPERT_BINARY_PROMPTS[name]["positive"])
    for name in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
}


def _cat(parts: list[dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    return torch.cat([p[key] for p in parts])


def _pad_words(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate word features of batches with different word counts (padded, mask false)."""
    longest = max(p["words"].shape[1] for p in parts)
    words, masks = [], []
    for p in parts:
        extra = longest - p["words"].shape[1]
        words.append(torch.nn.functional.pad(p["words"], (0, 0, 0, extra)))
        masks.append(torch.nn.functional.pad(p["word_mask"], (0, extra), value=False))
    return {"words": torch.cat(words), "word_mask": torch.cat(masks)}


@torch.no_grad()
def embed_images(
    model: Any, batches: Iterable[Mapping[str, Any]], device: str | torch.device = "cpu", image_key: str = "image"
) -> dict[str, torch.Tensor]:
    """Run ``model.encode_image`` over batches of images (eval mode); results on the CPU.

    Args:
        model: an image-report model (:class:`medssl.networks.vlp.ImageTextModel`).
        batches: collated batches holding ``image_key`` (a DataLoader).
        device: where to compute.
        image_key: the image key.

    Returns:
        ``{"global": (N, D)}`` and, for local models, ``"regions"``.
    """
    model.eval().to(device)
    parts = []
    for batch in batches:
        if batch is None:
            continue
        image = batch[image_key]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        parts.append({k: v.float().cpu() for k, v in model.encode_image(image.to(device)).items()})
    if not parts:
        raise ZeroShotError("no image could be embedded")
    return {k: _cat(parts, k) for k in parts[0]}


@torch.no_grad()
def embed_texts(
    model: Any,
    texts: Sequence[str] | Iterable[Mapping[str, Any]],
    tokenizer: Any = None,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    report_key: str = "report",
) -> dict[str, torch.Tensor]:
    """Run ``model.encode_text`` over texts (tokenized here) or over batches already tokenized.

    Args:
        model: an image-report model.
        texts: a list of strings, or collated batches with ``{report_key}_input_ids`` ... (from ``Tokenized``).
        tokenizer: a tokenizer folder, name or object (:class:`medssl.transforms.text.Tokenize`); needed for strings.
        max_length: tokens per text.
        device: where to compute.
        batch_size: texts per forward pass.
        report_key: prefix of the tokenized keys in batches.

    Returns:
        ``{"global": (N, D)}`` and, for local models, ``"words"`` ``(N, W, D)`` and ``"word_mask"``.
    """
    from medssl.transforms.text import Tokenize

    model.eval().to(device)
    if isinstance(texts, Sequence) and all(isinstance(t, str) for t in texts):
        if tokenizer is None:
            raise ZeroShotError("a tokenizer is needed to embed plain texts")
        tokenize = Tokenize(tokenizer, max_length=max_length, padding="longest")
        texts = list(texts)
        batches: Iterable[Mapping[str, Any]] = (
            {f"{report_key}_{k}": v for k, v in tokenize(texts[i : i + batch_size]).items()}
            for i in range(0, len(texts), batch_size)
        )
    else:
        batches = texts
    parts = []
    for batch in batches:
        if batch is None:
            continue
        ids, mask, words = (
            torch.as_tensor(batch[f"{report_key}_{k}"]).to(device)
            for k in ("input_ids", "attention_mask", "word_index")
        )
        parts.append(
            {
                k: v.float().cpu() if v.is_floating_point() else v.cpu()
                for k, v in model.encode_text(ids, mask, words).items()
            }
        )
    if not parts:
        raise ZeroShotError("no text could be embedded")
    out = {"global": _cat(parts, "global")}
    if "words" in parts[0]:
        out.update(_pad_words(parts))
    return out


def _prompt_groups(prompts: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """``(mode, class names, prompt lists)``; binary classes give two lists (positive, negative) each."""
    if not prompts:
        raise ZeroShotError("no prompts given")
    values = list(prompts.values())
    if all(isinstance(v, Mapping) for v in values):
        groups = []
        for name, v in prompts.items():
            if not v.get("positive") or not v.get("negative"):
                raise ZeroShotError(f"class {name!r} needs 'positive' and 'negative' prompt lists")
            groups += [list(v["positive"]), list(v["negative"])]
        return "binary", list(prompts), groups
    if all(isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0 for v in values):
        return "multiclass", list(prompts), [list(v) for v in values]
    raise ZeroShotError(
        "prompts must map each class to a list of prompts, or to {'positive': [...], 'negative': [...]}"
    )


@torch.no_grad()
def zero_shot_scores(
    model: Any,
    image_features: Mapping[str, torch.Tensor],
    prompts: Mapping[str, Any],
    tokenizer: Any,
    max_length: int = 64,
    mode: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, list[str]]:
    """Zero-shot class probabilities of each image, scored independently against the prompt embeddings.

    Args:
        model: an image-report model.
        image_features: :func:`embed_images` output.
        prompts: binary or multiclass prompts (see the module docstring).
        tokenizer: the model's tokenizer (folder, name or object).
        max_length: tokens per prompt.
        mode: the model's similarity mode (GLoRIA: ``global``, ``local``, ``both``; ``None``: its default).
        device: where to compute.

    Returns:
        ``(probabilities (N, C), class names)``: per-class probabilities (binary) or a distribution over the classes
        (multiclass).
    """
    form, names, groups = _prompt_groups(prompts)
    flat = [p for group in groups for p in group]
    text = embed_texts(model, flat, tokenizer, max_length, device)
    image = {k: v.to(device) for k, v in image_features.items()}
    text = {k: v.to(device) for k, v in text.items()}
    sim = model.similarity(image, text, mode) if mode is not None else model.similarity(image, text)
    sim = sim.float().cpu()
    means, start = [], 0
    for group in groups:
        means.append(sim[:, start : start + len(group)].mean(dim=1))
        start += len(group)
    logits = torch.stack(means, dim=1)
    if form == "binary":
        pairs = logits.view(logits.shape[0], -1, 2)
        probs = torch.softmax(pairs, dim=-1)[..., 0]
    else:
        probs = torch.softmax(logits, dim=1)
    return probs.numpy().astype(np.float64), names


def zero_shot_evaluation(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """AUROC of each class (one-vs-rest) and their macro average, with bootstrap CIs (patients resampled).

    Args:
        probabilities: ``(N, C)`` scores.
        labels: ``(N, C)`` 0/1 labels, NaN where unknown (left out of that class's AUROC).
        class_names: the ``C`` names.
        groups: patient key of each row (resampling unit).
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        alpha: one minus the confidence level.

    Returns:
        ``{"auroc/<class>": Estimate, ..., "auroc/macro": Estimate}`` (classes with one label value are skipped,
        logged).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if probabilities.shape != labels.shape or probabilities.shape[1] != len(class_names):
        raise ZeroShotError(
            f"probabilities {probabilities.shape}, labels {labels.shape} and {len(class_names)} classes do not fit"
        )
    group_arr = None if groups is None else np.asarray(groups, dtype=object)
    out: dict[str, Estimate] = {}
    usable = []
    for j, name in enumerate(class_names):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if y.size == 0 or np.unique(y).size < 2:
            logger.warning("zero-shot: %s has a single label value on the evaluation set: no AUROC", name)
            continue
        usable.append(j)
        out[f"auroc/{name}"] = bootstrap_ci(
            auroc, y, probabilities[known, j], None if group_arr is None else group_arr[known], n_boot, alpha, seed
        )
    if usable:
        out["auroc/macro"] = bootstrap_ci(
            _macro_auroc(usable), labels, probabilities, group_arr, n_boot=n_boot, alpha=alpha, seed=seed
        )
    return out


def _macro_auroc(columns: Sequence[int]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(y: np.ndarray, s: np.ndarray) -> float:
        values = []
        for j in columns:
            known = ~np.isnan(y[:, j])
            if np.unique(y[known, j]).size < 2:
                raise MetricInputError("a class has a single label value in this resample", "macro AUROC")
            values.append(auroc(y[known, j], s[known, j]))
        return float(np.mean(values))

    return metric


def similarity_retrieval_metrics(
    similarity: np.ndarray | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    relevance: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Image -> text and text -> image retrieval metrics from any similarity matrix (rows: images).

    :func:`medssl.eval.retrieval.retrieval_metrics` does the same from embeddings with cosine similarity; this form
    takes the model's own similarity (GLoRIA's local word-region score is not a cosine of two vectors).

    Args:
        similarity: ``(n_images, n_texts)``.
        ks: cut-offs.
        relevance: boolean ``(n_images, n_texts)``; default: image ``i`` matches text ``i``.
        n_boot: bootstrap resamples of the queries.
        seed: seed of the resampling.
        alpha: one minus the confidence level.

    Returns:
        ``{"i2t_recall@k", "i2t_mean_rank", "i2t_median_rank", ("i2t_precision@k" with relevance), "t2i_..."}``.
    """
    sim = similarity.detach().cpu().numpy() if torch.is_tensor(similarity) else np.asarray(similarity)
    sim = sim.astype(np.float64)
    if relevance is None:
        if sim.shape[0] != sim.shape[1]:
            raise ZeroShotError(
                f"{sim.shape[0]} images and {sim.shape[1]} texts: paired retrieval needs a square matrix"
            )
        rel = np.eye(sim.shape[0], dtype=bool)
    else:
        rel = np.asarray(relevance, dtype=bool)
    out: dict[str, Estimate] = {}
    common = dict(n_boot=n_boot, alpha=alpha, seed=seed)
    for direction, s, r in (("i2t", sim, rel), ("t2i", sim.T, rel.T)):
        ranks = retrieval_ranks(s, r).astype(np.float64)
        for k in ks:
            if not 1 <= k <= s.shape[1]:
                logger.warning("retrieval: k=%d skipped for %s, the gallery has %d items", k, direction, s.shape[1])
                continue
            out[f"{direction}_recall@{k}"] = bootstrap_ci(lambda x, k=k: float(np.mean(x <= k)), ranks, None, **common)
            if relevance is not None:
                top = np.argsort(-s, axis=1, kind="stable")[:, :k]
                hits = np.take_along_axis(r, top, axis=1).mean(axis=1)
                out[f"{direction}_precision@{k}"] = bootstrap_ci(lambda x: float(np.mean(x)), hits, None, **common)
        out[f"{direction}_mean_rank"] = bootstrap_ci(lambda x: float(np.mean(x)), ranks, None, **common)
        out[f"{direction}_median_rank"] = bootstrap_ci(lambda x: float(np.median(x)), ranks, None, **common)
    return out


@torch.no_grad()
def retrieval_evaluation(
    model: Any,
    image_features: Mapping[str, torch.Tensor],
    text_features: Mapping[str, torch.Tensor],
    ks: Sequence[int] = (1, 5, 10),
    relevance: np.ndarray | None = None,
    mode: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Estimate]:
    """Retrieval metrics of paired image and text features under the model's similarity.

    Args:
        model: the image-report model (its ``similarity``).
        image_features: :func:`embed_images` output.
        text_features: :func:`embed_texts` output (row ``i`` is image ``i``'s report).
        ks: cut-offs.
        relevance: optional relevance matrix.
        mode: the model's similarity mode.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        device: where to compute the similarity.

    Returns:
        See :func:`similarity_retrieval_metrics`.
    """
    image = {k: v.to(device) for k, v in image_features.items()}
    text = {k: v.to(device) for k, v in text_features.items()}
    sim = model.similarity(image, text, mode) if mode is not None else model.similarity(image, text)
    return similarity_retrieval_metrics(sim, ks, relevance, n_boot, seed)


def paired_eval_transforms(
    preprocessing: Mapping[str, Any], tokenizer: str | os.PathLike | Any, keep_keys: Sequence[str] = ()
) -> list[Callable]:
    """Deterministic transforms of an evaluation item (no augmentation), keeping only tensors.

    The image is prepared as in training, the report's sentences are kept in order up to the word budget and
    tokenized.

    Args:
        preprocessing: the ``preprocessing`` of an exported model (``model.json``).
        tokenizer: the model's tokenizer.
        keep_keys: other item keys to keep (e.g. an index).

    Returns:
        The transforms.
    """
    from monai.transforms import SelectItemsd

    from medssl.engines.methods import image_load_transforms
    from medssl.transforms.cxr import PairReportd
    from medssl.transforms.text import SampleSentencesUpTod, Tokenized

    p = dict(preprocessing)
    image_key, report_key = p.get("image_key", "image"), p.get("report_key", "report")
    size = int(p.get("image_size", 224))
    steps = image_load_transforms(
        image_key, int(p.get("load_size", size)), p.get("fit", "pad"), int(p.get("in_channels", 1)), final_size=size
    )
    steps += [
        PairReportd(report_key, image_key=image_key, priority=p.get("report_priority", ["impression", "findings"])),
        SampleSentencesUpTod(report_key, max_words=int(p.get("max_words", 97)), shuffle=False),
        Tokenized(report_key, tokenizer=tokenizer, max_length=int(p.get("max_length", 128))),
        SelectItemsd(
            [
                image_key,
                f"{report_key}_input_ids",
                f"{report_key}_attention_mask",
                f"{report_key}_word_index",
                *keep_keys,
            ]
        ),
    ]
    return steps


def embed_pairs(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    tokenizer: str | os.PathLike | Any,
    preprocessing: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], np.ndarray]:
    """Embed the images and reports of evaluation items; items that fail to load are reported and left out.

    Args:
        model: an image-report model (its ``preprocessing`` is used unless given).
        items: datalist items with ``image`` (and ``report`` or a report found from the image path).
        tokenizer: the model's tokenizer.
        preprocessing: how to prepare images and reports (default: ``model.preprocessing``).
        batch_size: pairs per forward pass.
        num_workers: loader workers.
        device: where to compute.

    Returns:
        ``(image_features, text_features, index)``: row ``r`` of both is item ``index[r]``.

    Raises:
        ZeroShotError: no item could be loaded.
    """
    from monai.data import Dataset
    from monai.transforms import Compose
    from torch.utils.data import DataLoader

    from medssl.engines.data import SeededDataset, collate_dropping_failures

    prep = dict(preprocessing if preprocessing is not None else getattr(model, "preprocessing", {}))
    image_key, report_key = prep.get("image_key", "image"), prep.get("report_key", "report")
    indexed = [dict(item, _eval_index=i) for i, item in enumerate(items)]
    pipeline = Compose(paired_eval_transforms(prep, tokenizer, keep_keys=["_eval_index"]))
    loader = DataLoader(
        SeededDataset(Dataset(indexed), pipeline),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_dropping_failures,
    )
    batches = [b for b in loader if b is not None]
    if not batches:
        raise ZeroShotError(f"none of the {len(items)} evaluation pairs could be loaded")
    image_features = embed_images(model, ({"image": b[image_key]} for b in batches), device)
    text_features = embed_texts(model, batches, device=device, report_key=report_key)
    index = np.concatenate([np.asarray(b["_eval_index"]).reshape(-1) for b in batches]).astype(int)
    return image_features, text_features, index


def estimates_table(estimates: Mapping[str, Estimate], **columns: Any) -> list[dict[str, Any]]:
    """Rows ``{**columns, "metric", "value", "ci_low", "ci_high", "n", "n_boot_used"}`` of a results table."""
    return [
        {
            **columns,
            "metric": name,
            "value": e.value,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "n": e.n,
            "n_boot_used": e.n_boot_used,
        }
        for name, e in estimates.items()
    ]
