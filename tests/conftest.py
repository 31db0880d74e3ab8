"""Shared fixtures: where the real DICOM and NIfTI test files of pydicom and nibabel live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MEDSSL_SALT", "medssl-test-salt")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """pydicom's bundled test files (real files written by scanners and toolkits, not by us)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("MR_small.dcm")).parent


@pytest.fixture(scope="session")
def dicomdir_tests_dir(pydicom_data_dir: Path) -> Path:
    """pydicom's `dicomdirtests` file-set: a DICOMDIR, CT/MR/CR series of two patients, and TINY_ALPHA."""
    return pydicom_data_dir / "dicomdirtests"


@pytest.fixture(scope="session")
def nibabel_data_dir() -> Path:
    """nibabel's bundled test data (anatomical.nii, example4d.nii.gz, ...)."""
    from nibabel.testing import data_path

    return Path(data_path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine several threads per process slow tiny models down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cxr_pretraining_data(
    root: Path,
    bert_dir: Path,
    n: int,
    seed: int,
    *,
    max_studies: int = 1,
    test_fraction: float = 0.0,
    **bert_options,
) -> dict:
    """Synthetic MIMIC-CXR-JPG patients (frontal images with reports), a patient-split datalist and a tiny BERT.

    The BERT's WordPiece vocabulary is trained on the datalist's reports and saved to ``bert_dir``, so the tests load
    it through the same ``from_pretrained`` path as a hub model.
    """
    from medssl.data.layouts.mimic_cxr import mimic_cxr_datalist
    from medssl.data.synth.cxr import generate
    from medssl.engines import load_training_items
    from medssl.networks.encoders import build_tiny_text_model

    generate(root, n, seed=seed, size=48, lateral=0.0, max_studies=max_studies)
    datalist, _ = mimic_cxr_datalist(
        root,
        root / "datalist.json",
        frontal_only=True,
        require_report=True,
        resplit=True,
        val_fraction=0.0,
        test_fraction=test_fraction,
        salt="test-salt",
    )
    items = load_training_items(datalist)
    texts = [Path(item["report"]).read_text() for item in items]
    bert = build_tiny_text_model(texts, bert_dir, vocab_size=250, hidden_size=16, **bert_options)
    return {"root": root, "datalist": datalist, "items": items, "bert": bert}
