"""The end-to-end demo behind ``make demo``: every capability of medssl on data it generates, in a few minutes on a CPU.

Each stage is a function ``stage(out, seed) -> dict`` that generates data in a public layout, runs the library on it
as a user would, prints what it found and returns a summary (written to ``out/demo_summary.json``). Stages are
independent, so ``medssl demo --stages pacs`` runs one of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["STAGES", "run_demo", "stage_cxr", "stage_fusion", "stage_pacs"]


SALT = "medssl-demo"  # the demo's data is synthetic; real exports take a secret --salt or $MEDSSL_SALT


def _say(message: str) -> None:
    print(message, flush=True)


def _medssl(*args: Any) -> None:
    """Run one ``medssl`` subcommand in this process, exactly as typed on a command line."""
    from medssl.cli.main import main

    argv = [str(a) for a in args]
    _say("[cmd] medssl " + " ".join(argv))
    code = main(argv)
    if code:
        raise RuntimeError(f"`medssl {' '.join(argv)}` failed with exit code {code}")


def stage_pacs(out: Path, seed: int) -> dict[str, Any]:
    """PACS export -> manifest -> datalist -> one study stacked as a 4-channel tensor on its T1C grid."""
    from medssl.data.index import index_export
    from medssl.data.layouts.dicom_export import dicom_export_items
    from medssl.data.manifest import write_manifest, write_table
    from medssl.data.synth import mr_dicom
    from medssl.transforms.mr import mr_stack_transforms

    root = out / "pacs"
    mr_dicom.generate(root, n=3, seed=seed, matrix=48)
    export = root / "export"
    _say(f"[pacs] synthesized a PACS export of 3 patients in {export}")
    result = index_export(export, salt=SALT)
    write_manifest(result.manifest, root / "manifest.csv")
    write_table(result.errors, root / "manifest_errors.csv")
    _say(f"[pacs] {result.summary_line()}")
    _say(f"[pacs] manifest: {root / 'manifest.csv'}, files not used and why: {root / 'manifest_errors.csv'}")
    sequences = ("T1C", "T1", "T2", "FLAIR")
    items, problems = dicom_export_items(result.manifest, sequences=sequences, missing="skip")
    _say(f"[pacs] {len(items)} MR studies have all of {', '.join(sequences)}; {len(problems)} studies skipped")
    if not items:
        raise RuntimeError("the synthetic export yielded no complete MR study")
    stack = mr_stack_transforms(sequences=sequences, reference="T1C", missing="error", salt=SALT)
    study = stack(items[0])
    image = study["image"]
    spacing = [round(float(v), 2) for v in image.pixdim]
    _say(f"[pacs] study {items[0]['case_key']}: image {tuple(image.shape)} (channels, x, y, z), spacing {spacing} mm")
    _say(f"[pacs]   channels: {image.meta['channel_def']}  presence: {study['presence'].tolist()}")
    _say(f"[pacs]   affine (RAS) of the T1C grid:\n{image.affine.numpy().round(2)}")
    return {
        "series": result.summary["n_series"],
        "files_not_used": result.summary["n_errors"],
        "complete_studies": len(items),
        "stacked_shape": list(image.shape),
        "channel_def": image.meta["channel_def"],
    }


def stage_fusion(out: Path, seed: int) -> dict[str, Any]:
    """BraTS-layout MR studies -> early vs late fusion vs the best single sequence, cross-validated with CIs."""
    import pandas as pd

    from medssl.data.synth.brats import generate

    root = out / "fusion"
    generate(root / "brats", 48, seed, size=32, no_tumour=0.3)
    _say(f"[fusion] synthesized 48 multi-sequence MR cases in the BraTS 2021 layout in {root / 'brats'}")
    # fmt: off
    _medssl(
        "compare-fusion", root / "brats", "--out", root / "compare", "--label", "tumour",
        "--strategies", "early,late,single:FLAIR", "--folds", 3, "--epochs", 6, "--image-size", 16,
        "--backbone", "resnet10", "--width", 0.25, "--n-boot", 500, "--seed", seed, "--threads", 1,
        "--salt", SALT, "--no-progress",
    )
    # fmt: on
    results = pd.read_csv(root / "compare" / "results.csv")
    auroc = results[results["metric"].str.lower() == "auroc"]
    summary = {}
    for row in auroc.itertuples():
        summary[row.strategy] = [round(float(v), 3) for v in (row.value, row.ci_low, row.ci_high)]
        _say(f"[fusion] {row.strategy:>12}: AUROC {row.value:.3f} (95% CI {row.ci_low:.3f}-{row.ci_high:.3f})")
    _say(f"[fusion] DeLong tests, ROC curves, reliability diagrams: {root / 'compare' / 'report.md'}")
    return {"auroc": summary}


def stage_cxr(out: Path, seed: int) -> dict[str, Any]:
    """Chest X-rays with reports (MIMIC-CXR-JPG layout) -> weak labels from the reports -> ConVIRT pretraining."""
    import pandas as pd

    from medssl.data.synth.cxr import generate
    from medssl.engines import load_training_items
    from medssl.networks.encoders import build_tiny_text_model

    root = out / "cxr"
    data = root / "mimic-cxr-jpg"
    generate(data, 80, seed, size=64, lateral=0.0, max_studies=2)
    _say(f"[cxr] synthesized 80 patients' chest X-rays and reports in the MIMIC-CXR-JPG layout in {data}")
    _medssl("datalist", "mimic-cxr", data, "--out", root / "datalist.json", "--seed", seed, "--salt", SALT)
    # fmt: off
    _medssl(
        "label-reports", data / "files", "--out", root / "weak" / "labels.csv",
        "--gold", data / "mimic-cxr-2.0.0-chexpert.csv", "--jobs", 2,
    )
    # fmt: on
    metrics = pd.read_csv(root / "weak" / "metrics.csv")
    positive = metrics[(metrics["label"] == "positive") & (metrics["support"] > 0)]
    mean_f1 = float(positive["f1"].mean())
    _say(f"[cxr] weak labels vs the generator's CheXpert labels: macro F1 (positive) {mean_f1:.3f}")
    reports = [Path(item["report"]).read_text() for item in load_training_items(root / "datalist.json")]
    bert = build_tiny_text_model(reports, root / "tiny-bert")
    _say(f"[cxr] a 2-layer BERT with a WordPiece vocabulary trained offline on the reports: {bert}")
    # Settings of the learning test in tests/test_zero_shot_probe.py: a small embedding, whole reports as text.
    # fmt: off
    _medssl(
        "pretrain", "--method", "convirt", "--data", root / "datalist.json", "--out", root / "convirt",
        "--text-model", bert, "--image-backbone", "resnet10", "--image-width", 0.25, "--image-size", 64,
        "--embed-dim", 32, "--max-length", 64, "--option", "max_words=50", "--option", 'text_sampling="words"',
        "--option", "trainable_layers=null", "--option", "blur_prob=0.0", "--option", "crop_scale=[0.8,1.0]",
        "--batch-size", 32, "--max-steps", 100, "--lr", "2e-3", "--warmup-steps", 5, "--seed", seed,
        "--checkpoint-every", 50, "--log-every", 10, "--no-progress",
    )
    # fmt: on
    logged = pd.read_csv(root / "convirt" / "metrics.csv")
    loss = logged.loc[logged["name"] == "train/loss", "value"].astype(float)
    first, last = float(loss.iloc[0]), float(loss.iloc[-1])
    _say(f"[cxr] ConVIRT loss {first:.3f} -> {last:.3f} (chance: ln 32 = 3.466); encoders in {root / 'convirt'}")
    # fmt: off
    _medssl(
        "evaluate", "retrieval", "--model", root / "convirt" / "encoders", "--data", root / "datalist.json",
        "--split", "training", "--ks", 1, 10, "--n-boot", 200, "--out", root / "eval",
    )
    # fmt: on
    table = pd.read_csv(next((root / "eval").glob("*.csv")))
    _say("[cxr] image -> report retrieval on the pretraining pairs (held-out figures: docs/evaluation.md):")
    _say(table.to_string(index=False, max_colwidth=40))
    return {"weak_label_mean_f1": round(mean_f1, 3), "convirt_loss_first": first, "convirt_loss_last": last}


STAGES: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "pacs": stage_pacs,
    "fusion": stage_fusion,
    "cxr": stage_cxr,
}


def run_demo(out: str | Path, stages: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the demo stages in order, each on freshly generated data under ``out``.

    Args:
        out: output folder (created).
        stages: names from :data:`STAGES` (all by default).
        seed: seed of every generator and training run.

    Returns:
        ``{stage: summary}``, also written to ``out/demo_summary.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = stages or list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown demo stages {unknown}; choose from {list(STAGES)}")
    summary: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        _say(f"== {name}")
        summary[name] = STAGES[name](out, seed)
        summary[name]["seconds"] = round(time.perf_counter() - started, 1)
        _say(f"== {name} done in {summary[name]['seconds']} s")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
