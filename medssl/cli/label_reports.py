"""``medssl label-reports``: weak CheXpert labels for a folder, CSV or datalist of radiology reports."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from medssl.exceptions import MedsslError

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run", "read_reports_input"]

COMMAND = "label-reports"
HELP = "weak CheXpert labels (1/0/-1/blank + probabilities) from free-text reports"
DESCRIPTION = """\
Label radiology reports with the 14 CheXpert observations using medssl's labeling functions, aggregated by
majority vote or by a label model that learns each rule's accuracy without gold labels.

REPORTS is one of:
  - a MIMIC-CXR reports folder (files/p10/p10000032/s50414267.txt ...; any folder of .txt reports works);
  - a CSV with one report per row (--text-column, optional --id-column);
  - a medssl datalist JSON whose items have a "report" (a path relative to the datalist, or the text).

Outputs, all in the folder of --out:
  labels.csv        one row per report: report_key, the 14 observations (1, 0, -1, blank like CheXpert) and
                    "<observation>_p_pos" / "<observation>_p_unc" probabilities;
  lf_summary.csv    coverage, overlaps, conflicts of every labeling function (and accuracy with --gold);
  metrics.csv       with --gold: precision / recall / F1 per observation (positive and uncertain);
  label_errors.csv  reports that could not be parsed (skipped).

Keys, without PHI: MIMIC-CXR files are keyed by their study id (sNNNNNNNN, de-identified by PhysioNet), with
subject_id and study_id columns that join MIMIC-CXR-JPG's chexpert CSV; CSV rows by a salted hash of --id-column
(rep-...; --keep-ids also writes the raw ids, only for ids that are already de-identified) or by row number; datalist
items by their case_key. --gold is a CSV with the 14 observation columns keyed the same way: study_id (MIMIC),
the --id-column (CSV), case_key (datalist), or report_key.

examples:
  medssl label-reports mimic-cxr-reports/ --out weak/labels.csv --jobs 2
  medssl label-reports reports.csv --text-column report --id-column accession --out labels.csv --gold gold.csv
"""

_MIMIC_FILE = re.compile(r"^s(\d+)$")
_MIMIC_SUBJECT = re.compile(r"^p(\d+)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``label-reports``."""
    parser.add_argument("reports", metavar="REPORTS", help="reports folder, CSV file, or datalist JSON")
    parser.add_argument("--out", required=True, help="labels CSV to write (other outputs go next to it)")
    parser.add_argument("--gold", help="CSV of gold labels (CheXpert coding) for LF accuracies and metrics.csv")
    parser.add_argument(
        "--model",
        choices=("label-model", "majority", "snorkel"),
        default="label-model",
        help="aggregation: the built-in Dawid-Skene label model (default), majority vote, or Snorkel's LabelModel "
        "(needs medssl[snorkel])",
    )
    parser.add_argument("--text-column", default=None, help="CSV column with the report text (default: text/report)")
    parser.add_argument("--id-column", default=None, help="CSV column identifying a report (hashed with --salt)")
    parser.add_argument(
        "--keep-ids",
        action="store_true",
        help="also write raw identifiers: the --id-column, and file names of non-MIMIC folders in label_errors.csv "
        "(only for identifiers that are already de-identified)",
    )
    parser.add_argument("--split", default=None, help="datalist split to label (default: every split)")
    parser.add_argument("--salt", default=None, help="salt of report keys (default: $MEDSSL_SALT)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the label matrix (-1: all cores)")
    parser.add_argument(
        "--priority",
        default="impression,findings,last_paragraph",
        help="sections that make a report usable, in order (comma separated)",
    )
    parser.add_argument("--min-words", type=int, default=2, help="skip reports whose text has fewer words")
    parser.add_argument(
        "--tie-policy",
        choices=("priority", "abstain", "random"),
        default="priority",
        help="majority-vote ties: CheXpert precedence positive > uncertain > negative (default), blank, or random",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random tie breaks and of Snorkel")


def _mimic_ids(path: Path) -> tuple[int, int] | None:
    study = _MIMIC_FILE.match(path.stem)
    subject = _MIMIC_SUBJECT.match(path.parent.name)
    if study and subject:
        return int(subject.group(1)), int(study.group(1))
    return None


def read_reports_input(
    source: str | os.PathLike,
    salt: str | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    keep_ids: bool = False,
    split: str | None = None,
) -> tuple[list[str], list[str], Any, Any, list[tuple[str, str, str]]]:
    """Read the reports of a folder, CSV or datalist.

    Args:
        source: the REPORTS argument.
        salt: salt of hashed keys.
        text_column: CSV text column.
        id_column: CSV id column.
        keep_ids: keep the raw ids as a column, and non-MIMIC file names as error sources.
        split: datalist split (None: all).

    Returns:
        ``(texts, keys, meta, gold_key, errors)``: ``meta`` is a DataFrame of extra output columns (one row per
        text), ``gold_key`` a function mapping a gold DataFrame to one indexed by report key, ``errors`` a list of
        ``(report_key, source, problem)`` for unreadable inputs.

    Raises:
        MedsslError: the input does not exist, is of an unknown kind, or lacks the text column.
    """
    import pandas as pd

    from medssl.data.keys import Keyer

    path = Path(source)
    texts: list[str] = []
    keys: list[str] = []
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str, str]] = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise MedsslError("no .txt reports in this folder", path)
        keyer = None
        for file in files:
            ids = _mimic_ids(file)
            relative = file.relative_to(path).as_posix()
            if ids is not None:
                key = f"s{ids[1]}"
                row = {"subject_id": ids[0], "study_id": ids[1]}
                where = relative  # MIMIC-CXR paths hold de-identified ids only
            else:
                keyer = keyer or Keyer(salt)
                key = keyer("report", relative)
                row = {}
                where = relative if keep_ids else "(file name withheld; --keep-ids shows it)"
            try:
                raw = file.read_bytes()
            except OSError as error:
                errors.append((key, where, f"cannot read: {error.strerror or error}"))
                continue
            texts.append(raw.decode("utf-8", errors="replace"))
            keys.append(key)
            rows.append({"source": where, **row})

        def gold_key(gold: pd.DataFrame) -> pd.DataFrame:
            if "study_id" in gold.columns:
                gold = gold.assign(report_key="s" + gold["study_id"].astype("Int64").astype(str))
            return _index_by(gold, "report_key", path)

    elif path.suffix.lower() in (".csv", ".tsv") and path.is_file():
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        column = text_column or next((c for c in ("text", "report", "report_text") if c in table.columns), None)
        if column is None or column not in table.columns:
            raise MedsslError(f"no text column {text_column or 'text/report'} (columns: {list(table.columns)})", path)
        if id_column is not None and id_column not in table.columns:
            raise MedsslError(f"no id column {id_column!r} (columns: {list(table.columns)})", path)
        keyer = Keyer(salt) if id_column is not None else None
        for index, record in table.iterrows():
            text = record[column]
            text = "" if not isinstance(text, str) else text
            if id_column is not None:
                raw_id = str(record[id_column])
                key = keyer("report", raw_id)
                row = {id_column: raw_id} if keep_ids else {}
            else:
                key, row = f"row{index}", {}
            texts.append(text)
            keys.append(key)
            rows.append({"source": f"row {index}", **row})

        def gold_key(gold: pd.DataFrame) -> pd.DataFrame:
            if id_column is not None and id_column in gold.columns:
                gold = gold.assign(report_key=[keyer("report", str(v)) for v in gold[id_column]])
            return _index_by(gold, "report_key", path)

    elif path.suffix.lower() == ".json" and path.is_file():
        from medssl.data.datalist import SPLITS, read_datalist

        data = read_datalist(path)
        splits = [split] if split else [s for s in SPLITS if s in data]
        for name in splits:
            if name not in data:
                raise MedsslError(f"no {name!r} split", path)
            for index, item in enumerate(data[name]):
                key = str(item["case_key"])
                report = item.get("report")
                where = f"{name}[{index}]"
                row = {"case_key": key, "patient_key": item.get("patient_key"), "split": name, "source": where}
                if not isinstance(report, str) or not report.strip():
                    errors.append((key, where, "item has no 'report' path or text"))
                    continue
                candidate = Path(report) if os.path.isabs(report) else path.parent / report
                if "\n" not in report and len(report) < 4096 and report.lower().endswith(".txt"):
                    try:
                        report = candidate.read_text(errors="replace")
                    except OSError as error:
                        errors.append((key, f"{where}: {report}", f"cannot read: {error.strerror or error}"))
                        continue
                texts.append(report)
                keys.append(key)
                rows.append(row)

        def gold_key(gold: pd.DataFrame) -> pd.DataFrame:
            if "case_key" in gold.columns:
                gold = gold.assign(report_key=gold["case_key"].astype(str))
            return _index_by(gold, "report_key", path)

    else:
        raise MedsslError("REPORTS must be a folder of .txt reports, a .csv/.tsv file, or a datalist .json", path)
    meta = pd.DataFrame(rows, index=pd.Index(keys, name="report_key"))
    for column in ("subject_id", "study_id"):
        if column in meta.columns:
            meta[column] = meta[column].astype("Int64")
    return texts, keys, meta, gold_key, errors


def _index_by(gold: Any, column: str, where: Path) -> Any:
    if column not in gold.columns:
        raise MedsslError(
            "gold labels need a key column matching the reports: study_id (MIMIC folder), the --id-column (CSV), "
            f"case_key (datalist) or report_key; found {list(gold.columns)}",
            where,
        )
    return gold.set_index(gold[column].astype(str))


def run(args: argparse.Namespace) -> int:
    """Label the reports and write the outputs."""
    import pandas as pd

    from medssl.data.reports import CHEXPERT_OBSERVATIONS
    from medssl.log import get_logger
    from medssl.weak import aggregate, label_matrix, label_metrics, lf_summary
    from medssl.weak.labeling import chexpert_lfs

    logger = get_logger(__name__)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    texts, keys, meta, gold_key, errors = read_reports_input(
        args.reports,
        salt=args.salt,
        text_column=args.text_column,
        id_column=args.id_column,
        keep_ids=args.keep_ids,
        split=args.split,
    )
    duplicated = meta.index[meta.index.duplicated()].unique()
    if len(duplicated):
        raise MedsslError(
            f"{len(duplicated)} report keys appear twice (e.g. {duplicated[0]}); ids must be unique", args.reports
        )
    n_inputs = len(texts) + len(errors)
    priority = [p.strip() for p in args.priority.split(",") if p.strip()]
    lfs = chexpert_lfs()
    matrix, parse_errors = label_matrix(
        texts, keys, lfs=lfs, n_jobs=args.jobs, priority=priority, min_words=args.min_words
    )
    for error in parse_errors:
        key = error.path
        errors.append((key, str(meta.loc[key, "source"]) if key in meta.index else "", error.problem))
    for key, _source, problem in errors:
        logger.warning("report %s skipped: %s", key, problem)
    error_path = out.parent / "label_errors.csv"
    if errors:
        pd.DataFrame(errors, columns=["report_key", "source", "problem"]).to_csv(error_path, index=False)
    elif error_path.exists():
        error_path.unlink()
    if not matrix.keys:
        print(f"no usable report among {n_inputs} inputs; see {error_path}")
        return 1

    weak = aggregate(matrix, model=args.model, tie_policy=args.tie_policy, seed=args.seed)
    frame = weak.to_frame()
    extra = meta.loc[frame.index].drop(columns=["source"], errors="ignore")
    labels = pd.concat([extra, frame], axis=1)
    labels.index.name = "report_key"
    labels.to_csv(out)

    gold = None
    if args.gold:
        gold_path = Path(args.gold)
        if not gold_path.is_file():
            raise MedsslError("no such gold file", gold_path)
        gold = gold_key(pd.read_csv(gold_path))
        observations = [o for o in CHEXPERT_OBSERVATIONS if o in gold.columns]
        if not observations:
            raise MedsslError(f"no observation column (expected some of {list(CHEXPERT_OBSERVATIONS)})", gold_path)
        gold = gold[observations]
    summary = lf_summary(matrix, gold=gold, descriptions={lf.name: lf.description for lf in lfs})
    summary.to_csv(out.parent / "lf_summary.csv", index=False)
    message = f"labelled {len(matrix.keys)} reports ({weak.method}); {len(errors)} skipped; wrote {out}"
    if gold is not None:
        metrics = label_metrics(weak.chexpert(), gold)
        metrics.to_csv(out.parent / "metrics.csv", index=False)
        n_scored = int(metrics["n"].iloc[0]) if len(metrics) else 0
        macro = metrics[(metrics["observation"] == "macro") & (metrics["label"] == "positive")]
        f1 = f", macro F1 (positive) {macro['f1'].iloc[0]:.3f}" if len(macro) else ""
        message += f"; {n_scored} gold reports scored{f1}"
    print(message)
    return 0
