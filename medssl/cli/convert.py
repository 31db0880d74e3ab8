"""``medssl convert``: a manifest's DICOM series to NIfTI, or one stacked multi-sequence NIfTI per MR study."""

from __future__ import annotations

import argparse

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run"]

COMMAND = "convert"
HELP = "convert the series of a manifest to NIfTI (one per series, or one stacked MR image per study)"
DESCRIPTION = """\
Convert the DICOM series listed in a manifest (from `medssl index`) to NIfTI with correct RAS affines: slices
ordered along the slice normal, spacing from slice positions, modality LUT applied, compressed transfer syntaxes
decoded.

Without --stack, every series is written as
  OUT/<patient_key>/<study_key>/<series_key>_<sequence or modality>.nii.gz
with a JSON sidecar (same name, .json) of PHI-free metadata (keys, modality, sequence, geometry, acquisition
parameters). Planar images (MG, DX, CR) are written as plain 2D NIfTI with a note in the sidecar.

With --stack T1C,T1,T2,FLAIR, each MR study is written as one 4D NIfTI
  OUT/<patient_key>/<study_key>/<study_key>_stack.nii.gz
on the grid of the --reference sequence (default: the first of --stack), channels in the given order; the sidecar
holds channel_def, presence and the series used. When a study has several series of one sequence, the one with
usable geometry, then the most slices, then the highest SeriesNumber is used (the others are listed).

A series or study that fails (unreadable file, broken geometry, missing sequence under --missing error) is logged
with its key, written to OUT/convert_errors.csv and skipped. OUT/converted.csv lists what was written. The exit
status is 0 when anything was written, 1 otherwise.

examples:
  medssl convert manifest.csv --out nifti/
  medssl convert manifest.csv --out stacks/ --stack T1C,T1,T2,FLAIR --reference T1C --missing zeros --workers 4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``medssl convert``.

    Args:
        parser: the subcommand's parser.
    """
    parser.add_argument("manifest", help="manifest written by `medssl index` (CSV or Parquet)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--root", default=None, help="where the export lives now, if it moved since indexing")
    parser.add_argument(
        "--stack",
        default=None,
        metavar="SEQ,SEQ,...",
        help="stack these MR sequences (comma-separated, in channel order) into one NIfTI per study",
    )
    parser.add_argument(
        "--reference", default=None, help="sequence whose grid the stack uses (default: the first of --stack)"
    )
    parser.add_argument(
        "--missing",
        choices=("error", "zeros"),
        default="error",
        help="a study lacking a stacked sequence: skip it and report (error, default) or stack a zero channel with "
        "presence 0 (zeros)",
    )
    parser.add_argument(
        "--planar-format",
        choices=("png", "nifti"),
        default="png",
        help="planar images (MG, DX, CR) are written display-ready (modality LUT, VOI window, MONOCHROME1 inverted, "
        "not flipped) as 16-bit PNG (default) or float NIfTI in [0, 1]",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes converting in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")


def run(args: argparse.Namespace) -> int:
    """Convert the manifest.

    Args:
        args: parsed arguments.

    Returns:
        0 when at least one file was written, 1 when nothing was.
    """
    from medssl.data.manifest import read_manifest
    from medssl.data.nifti import convert_manifest
    from medssl.exceptions import MedsslError

    stack = [s.strip() for s in args.stack.split(",") if s.strip()] if args.stack else None
    if args.stack is not None and not stack:
        raise MedsslError("--stack needs at least one sequence name, e.g. --stack T1C,T1,T2,FLAIR")
    if args.reference and not stack:
        raise MedsslError("--reference only applies with --stack")
    manifest = read_manifest(args.manifest, root=args.root)
    result = convert_manifest(
        manifest,
        args.out,
        stack=stack,
        reference=args.reference,
        missing=args.missing,
        workers=max(1, args.workers),
        overwrite=args.overwrite,
        planar_format=args.planar_format,
    )
    print(f"medssl convert: {result.summary_line()}; outputs listed in {result.converted_path}")
    return 0 if result.converted else 1
