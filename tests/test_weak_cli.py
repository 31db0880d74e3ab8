"""``medssl label-reports`` end to end on a MIMIC-style folder, a CSV and a datalist."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medssl.cli.main import main
from medssl.data.datalist import write_datalist
from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.data.synth.report_text import generate_corpus, write_report_tree


@pytest.fixture(autouse=True)
def salt(monkeypatch):
    monkeypatch.setenv("MEDSSL_SALT", "test-salt")


def test_help_describes_inputs_and_outputs(capsys):
    with pytest.raises(SystemExit) as info:
        main(["label-reports", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("REPORTS", "MIMIC-CXR", "--text-column", "--gold", "lf_summary.csv", "label-model"):
        assert word in text


def test_mimic_folder_with_gold(tmp_path, capsys):
    truth = write_report_tree(tmp_path / "mimic", 40, seed=3)
    broken = tmp_path / "mimic" / "files" / "p10" / "p10000001" / "s50000001.txt"
    broken.parent.mkdir(parents=True)
    broken.write_text("FINAL REPORT\n EXAMINATION:\n IMPRESSION:\n")
    out = tmp_path / "weak" / "labels.csv"
    code = main(
        ["label-reports", str(tmp_path / "mimic"), "--out", str(out), "--gold", str(tmp_path / "mimic" / "labels.csv")]
    )
    assert code == 0
    assert "labelled 40 reports (label-model); 1 skipped" in capsys.readouterr().out
    labels = pd.read_csv(out)
    assert list(labels.columns[:3]) == ["report_key", "subject_id", "study_id"]
    assert list(labels.columns[3:17]) == list(CHEXPERT_OBSERVATIONS)
    assert {"Edema_p_pos", "Edema_p_unc"} <= set(labels.columns)
    assert set(labels["study_id"]) == set(truth["study_id"])
    assert (labels["report_key"] == "s" + labels["study_id"].astype(str)).all()
    values = labels[list(CHEXPERT_OBSERVATIONS)].to_numpy()
    assert set(np.unique(values[~np.isnan(values)])) <= {-1.0, 0.0, 1.0}
    errors = pd.read_csv(tmp_path / "weak" / "label_errors.csv")
    assert errors["report_key"].tolist() == ["s50000001"] and "no text" in errors["problem"][0]
    summary = pd.read_csv(tmp_path / "weak" / "lf_summary.csv")
    assert {"lf", "coverage", "overlaps", "conflicts", "empirical_accuracy"} <= set(summary.columns)
    metrics = pd.read_csv(tmp_path / "weak" / "metrics.csv")
    macro = metrics[(metrics["observation"] == "macro") & (metrics["label"] == "positive")]["f1"].iloc[0]
    assert macro > 0.9 and (metrics["n"] == 40).all()


def test_csv_with_ids_is_keyed_without_phi(tmp_path, capsys):
    texts, gold = generate_corpus(30, seed=5)
    accession = [f"ACC{1000 + i}" for i in range(30)]
    texts[3] = ""
    pd.DataFrame({"accession": accession, "report": texts}).to_csv(tmp_path / "reports.csv", index=False)
    gold.insert(0, "accession", accession)
    gold.to_csv(tmp_path / "gold.csv", index=False)
    out = tmp_path / "labels.csv"
    args = [
        "label-reports",
        str(tmp_path / "reports.csv"),
        "--text-column",
        "report",
        "--id-column",
        "accession",
        "--out",
        str(out),
        "--gold",
        str(tmp_path / "gold.csv"),
        "--model",
        "majority",
    ]
    assert main(args) == 0
    assert "29 gold reports scored" in capsys.readouterr().out
    labels = pd.read_csv(out)
    assert labels["report_key"].str.startswith("rep-").all() and len(labels) == 29
    assert "accession" not in labels.columns and "ACC" not in out.read_text()
    errors = pd.read_csv(tmp_path / "label_errors.csv")
    assert errors["source"].tolist() == ["row 3"] and errors["problem"].tolist() == ["empty report"]
    assert main(args + ["--keep-ids"]) == 0
    assert pd.read_csv(out)["accession"].str.startswith("ACC").all()


def test_datalist_with_report_paths_and_texts(tmp_path, capsys):
    texts, _ = generate_corpus(4, seed=7)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "a.txt").write_text(texts[0])
    items = [
        {"patient_key": "pat-1", "case_key": "cas-a", "report": "reports/a.txt"},
        {"patient_key": "pat-2", "case_key": "cas-b", "report": texts[1]},
        {"patient_key": "pat-3", "case_key": "cas-c", "report": "reports/missing.txt"},
        {"patient_key": "pat-4", "case_key": "cas-d"},
    ]
    datalist = write_datalist(tmp_path / "datalist.json", {"training": items[:3], "test": items[3:]})
    out = tmp_path / "out" / "labels.csv"
    assert main(["label-reports", str(datalist), "--out", str(out)]) == 0
    labels = pd.read_csv(out)
    assert labels["report_key"].tolist() == ["cas-a", "cas-b"] and labels["split"].tolist() == ["training"] * 2
    errors = pd.read_csv(tmp_path / "out" / "label_errors.csv").set_index("report_key")
    assert "cannot read" in errors.loc["cas-c", "problem"] and "no 'report'" in errors.loc["cas-d", "problem"]
    assert json.loads(datalist.read_text())["numTraining"] == 3


def test_bad_inputs_exit_with_a_message(tmp_path, capsys):
    assert main(["label-reports", str(tmp_path / "nothing.parquet"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "must be a folder" in capsys.readouterr().err
    pd.DataFrame({"body": ["x"]}).to_csv(tmp_path / "r.csv", index=False)
    assert main(["label-reports", str(tmp_path / "r.csv"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no text column" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("   ")
    assert main(["label-reports", str(tmp_path / "empty"), "--out", str(tmp_path / "y.csv")]) == 1
    errors = pd.read_csv(tmp_path / "label_errors.csv")
    assert errors["report_key"][0].startswith("rep-") and "withheld" in errors["source"][0]
    assert "a.txt" not in (tmp_path / "label_errors.csv").read_text()  # file names may hold PHI
    assert main(["label-reports", str(tmp_path / "empty"), "--out", str(tmp_path / "y.csv"), "--keep-ids"]) == 1
    assert pd.read_csv(tmp_path / "label_errors.csv")["source"][0] == "a.txt"
