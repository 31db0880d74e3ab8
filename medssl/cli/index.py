"""``medssl index``: index a PACS export into a PHI-free manifest (one row per series)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run"]

COMMAND = "index"
HELP = "index a DICOM export (any layout) into a manifest, one row per series"
DESCRIPTION = """Index a PACS/CD/DICOMDIR export into a manifest with one row per series.

Walks every file under ROOT (DICOMDIR file-sets, patient/study/series folders, flat mixed folders, files with or
without extensions), reads headers only, in parallel, and groups instances by SeriesInstanceUID. Patients, studies
and series are named by salted keys; names, IDs, dates, accession numbers and UIDs never reach the outputs.
Files that cannot be used are listed in the errors file with the reason, and indexing goes on.

examples:
  medssl index /data/export --out manifest.csv
  MEDSSL_SALT=site-secret medssl index /data/export --out manifest.parquet --errors errors.csv --workers 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``medssl index``."""
    parser.add_argument("root", help="the export folder")
    parser.add_argument("--out", required=True, help="manifest to write (.csv, or .parquet)")
    parser.add_argument("--errors", help="where to list the files not used (default: <out stem>_errors.csv)")
    parser.add_argument("--workers", type=int, default=None, help="header-reading processes (default: all cores)")
    parser.add_argument("--salt", default=None, help="secret salt of the keys (default: $MEDSSL_SALT)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Index, write the manifest and the errors file, print a one-line summary."""
    from pathlib import Path

    from medssl.data.index import index_export
    from medssl.data.manifest import ERROR_COLUMNS, write_manifest, write_table

    out = Path(args.out)
    errors_path = Path(args.errors) if args.errors else out.with_name(f"{out.name.split('.')[0]}_errors.csv")
    result = index_export(
        args.root, salt=args.salt, workers=args.workers, progress=not args.no_progress and sys.stderr.isatty()
    )
    write_manifest(result.manifest, out)
    write_table(result.errors[list(ERROR_COLUMNS)], errors_path)
    print(result.summary_line())
    print(f"manifest: {out}  errors: {errors_path}")
    return 0 if result.summary["n_series"] else 1
