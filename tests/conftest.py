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
