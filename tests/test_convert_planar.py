from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.cli.main import main
from medssl.data.display import display_image
from medssl.data.index import index_export
from medssl.data.manifest import read_manifest, series_files, write_manifest
from medssl.data.synth import mammo


@pytest.fixture(scope="module")
def mammo_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("vindr")
    mammo.generate(root, n=2, seed=5, size="48x36", monochrome1=0.5, missing=0.0)
    result = index_export(root / "images", salt="s", workers=1)
    path = write_manifest(result.manifest, root / "manifest.csv")
    manifest = read_manifest(path)
    assert set(manifest["modality"]) == {"MG"} and len(manifest) == 8
    assert "MONOCHROME1" in set(manifest["photometric"])
    return path, manifest


def test_planar_series_are_written_display_ready_png(mammo_manifest, tmp_path):
    path, manifest = mammo_manifest
    assert main(["convert", str(path), "--out", str(tmp_path)]) == 0
    for row in manifest.to_dict("records"):
        pngs = list(tmp_path.glob(f"{row['patient_key']}/{row['study_key']}/{row['series_key']}_*.png"))
        assert len(pngs) == 1, row["series_key"]
        png = np.asarray(Image.open(pngs[0]))
        assert png.dtype == np.uint16
        expected, info = display_image(series_files(row)[0])
        # the same display pipeline (MONOCHROME1 inverted, VOI window), quantised to 16 bits, and not flipped
        np.testing.assert_allclose(png / 65535.0, expected, atol=1.0 / 65535 + 1e-6)
        sidecar = json.loads(pngs[0].with_suffix("").with_suffix(".json").read_text())
        assert sidecar["view"] == row["view"] and sidecar["laterality"] == row["laterality"]
        assert "PatientID" not in json.dumps(sidecar)
    # a second run finds the outputs and writes nothing new
    converted = (tmp_path / "converted.csv").read_text()
    assert main(["convert", str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "converted.csv").read_text() == converted


def test_planar_series_as_float_nifti(mammo_manifest, tmp_path):
    path, manifest = mammo_manifest
    assert main(["convert", str(path), "--out", str(tmp_path), "--planar-format", "nifti"]) == 0
    row = manifest.iloc[0]
    (image_path,) = tmp_path.glob(f"{row['patient_key']}/{row['study_key']}/{row['series_key']}_*.nii.gz")
    image = nib.load(image_path)
    expected, info = display_image(series_files(row)[0])
    np.testing.assert_allclose(np.asarray(image.dataobj).T, expected, atol=1e-6)
    assert np.allclose(np.diag(image.affine)[:2], [info["pixel_spacing"][1], info["pixel_spacing"][0]])
