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

__all__ = ["STAGES", "run_demo", "stage_pacs"]


def _say(message: str) -> None:
    print(message, flush=True)


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
    result = index_export(export, salt="medssl-demo")
    write_manifest(result.manifest, root / "manifest.csv")
    write_table(result.errors, root / "manifest_errors.csv")
    _say(f"[pacs] {result.summary_line()}")
    _say(f"[pacs] manifest: {root / 'manifest.csv'}, files not used and why: {root / 'manifest_errors.csv'}")
    sequences = ("T1C", "T1", "T2", "FLAIR")
    items, problems = dicom_export_items(result.manifest, sequences=sequences, missing="skip")
    _say(f"[pacs] {len(items)} MR studies have all of {', '.join(sequences)}; {len(problems)} studies skipped")
    if not items:
        raise RuntimeError("the synthetic export yielded no complete MR study")
    stack = mr_stack_transforms(sequences=sequences, reference="T1C", missing="error", salt="medssl-demo")
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


STAGES: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "pacs": stage_pacs,
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
