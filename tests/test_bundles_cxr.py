"""Chest X-ray bundles: checks beyond the generic ones of ``tests/test_bundles.py``.

``tests/test_bundles.py`` runs every bundle's smoke test (train, evaluate, inference, metadata, verify_net_in_out,
TorchScript export). Here: the classifier really starts from a pretraining bundle's exported encoder, the weak-label
path (labels from the reports, gold labels kept for the test split, one training step on them), the per-observation
AUROC handler against scikit-learn, and the pretraining networks against the inputs and outputs their metadata
documents (they take an image and a tokenized report).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.bundle import harness
from medssl.bundle.cxr import (
    CXRBundleError,
    MultiLabelAUCMetric,
    cxr_datalist,
    init_from_pretrained,
    observation_indices,
    resolve_encoder_folder,
)

REPO = Path(__file__).resolve().parents[1]
CLASSIFICATION = REPO / "bundles" / "cxr_classification"
PRETRAINING = [REPO / "bundles" / "cxr_convirt_pretraining", REPO / "bundles" / "cxr_gloria_pretraining"]
SMALL = {"backbone": "resnet10", "width": 0.125, "image_size": 32, "num_workers": 0, "batch_size": 8}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pretraining bundles' smoke-test data: synthetic MIMIC-CXR-JPG and a tiny BERT trained on its reports."""
    spec = harness.load_spec(PRETRAINING[0])
    return harness.make_data(spec, tmp_path_factory.mktemp("cxr-data"))


def _parser(bundle: Path, workflow: str, dataset: Path, out: Path, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(harness.config_files(bundle, workflow)[0])
    values = {"bundle_root": str(bundle), "dataset_dir": str(dataset), "output_dir": str(out), **overrides}
    for key, value in values.items():
        parser[key] = value
    return parser


# ------------------------------------------------------------------------------------------------ pretrained init
def _export_encoder(folder: Path, width: float = 0.125) -> Path:
    from medssl.networks.encoders import ImageEncoder, export_image_encoder

    torch.manual_seed(123)
    encoder = ImageEncoder("resnet10", 2, 1, width)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn_like(parameter))  # far from any default initialisation
    export_image_encoder(encoder, folder / "models" / "encoders", preprocessing={"image_size": 32})
    return folder


def test_classifier_starts_from_the_exported_encoder(tmp_path: Path, dataset: Path):
    bundle_like = _export_encoder(tmp_path / "pretrained")  # what a pretraining bundle leaves in models/encoders
    exported = torch.load(bundle_like / "models" / "encoders" / "image.pt", weights_only=True)
    for where in (bundle_like, bundle_like / "models", bundle_like / "models" / "encoders"):
        assert resolve_encoder_folder(where) == bundle_like / "models" / "encoders"
        parser = _parser(CLASSIFICATION, "train", dataset, tmp_path / "out", pretrained_encoder=str(where), **SMALL)
        network = parser.get_parsed_content("network")
        trunk = network.get_encoders()["encoder"].state_dict()
        assert set(trunk) == set(exported)
        for name, value in exported.items():
            torch.testing.assert_close(trunk[name].cpu(), value)

    random = _parser(CLASSIFICATION, "train", dataset, tmp_path / "out", **SMALL).get_parsed_content("network")
    weight = next(k for k in exported if k.endswith("weight") and exported[k].dim() == 4)
    assert not torch.equal(random.get_encoders()["encoder"].state_dict()[weight].cpu(), exported[weight])


def test_an_encoder_of_another_architecture_is_refused_by_name(tmp_path: Path, dataset: Path):
    bundle_like = _export_encoder(tmp_path / "wide", width=0.25)
    parser = _parser(CLASSIFICATION, "train", dataset, tmp_path / "out", pretrained_encoder=str(bundle_like), **SMALL)
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the error of a config expression
        parser.get_parsed_content("network")
    error = info.value
    while error.__cause__ is not None and not isinstance(error, CXRBundleError):
        error = error.__cause__
    assert isinstance(error, CXRBundleError) and "does not fit the configured backbone" in str(error)
    assert "resnet10" in str(error) and "0.25" in str(error)
    with pytest.raises(CXRBundleError, match="no exported image encoder"):
        init_from_pretrained(torch.nn.Linear(1, 1), tmp_path)
    layer = torch.nn.Linear(1, 1)
    assert init_from_pretrained(layer, "") is layer


# ------------------------------------------------------------------------------------------------------ weak labels
def test_weak_labels_from_reports_for_training_gold_for_test(tmp_path: Path, dataset: Path):
    observations = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    options = {"splits_file": tmp_path / "splits.json", "observations": observations}
    gold = {s: cxr_datalist(dataset, s, **options) for s in ("training", "test")}
    weak = {s: cxr_datalist(dataset, s, label_source="weak", **options) for s in ("training", "test")}
    assert [i["case_key"] for i in weak["training"]] == [i["case_key"] for i in gold["training"]]
    assert weak["test"] == gold["test"]  # evaluation stays on the dataset's labels
    y_weak = np.array([i["label"] for i in weak["training"]])
    y_gold = np.array([i["label"] for i in gold["training"]])
    mask = np.array([i["label_mask"] for i in weak["training"]])
    assert y_weak.shape == (len(gold["training"]), 3) and ((y_weak >= 0) & (y_weak <= 1)).all()
    assert not np.array_equal(y_weak, y_gold)  # soft targets of the label model, not the CSV's labels
    known = mask > 0
    agreement = ((y_weak >= 0.5) == (y_gold >= 0.5))[known].mean()
    assert agreement >= 0.8, agreement  # the synthetic reports state their findings: the rules recover them


def test_one_training_step_on_weak_labels(tmp_path: Path, dataset: Path):
    parser = _parser(
        CLASSIFICATION,
        "train",
        dataset,
        tmp_path,
        label_source="weak",
        observations=["Cardiomegaly", "Pleural Effusion"],
        **SMALL,
    )
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    image, targets, args, kwargs = parser.get_parsed_content("prepare_batch")(batch, torch.device("cpu"))
    assert image.shape == (8, 1, 32, 32) and targets["target"].shape == targets["weight"].shape == (8, 2)
    network = parser.get_parsed_content("network")
    loss = parser.get_parsed_content("loss")(network(image, *args, **kwargs), targets)
    loss.backward()
    assert torch.isfinite(loss.detach()) and float(loss.detach()) > 0
    assert all(p.grad is not None for p in network.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------------- metrics
def test_per_observation_auroc_against_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, (40, 3)).astype(float)
    label[:5, 0] = -1  # unknown: left out
    label[:, 2] = 1  # one class only: undefined
    pred = rng.random((40, 3))
    metric = MultiLabelAUCMetric()
    metric(torch.as_tensor(pred), torch.as_tensor(label))
    values = metric.aggregate()
    np.testing.assert_allclose(values[0], roc_auc_score(label[5:, 0], pred[5:, 0]))
    np.testing.assert_allclose(values[1], roc_auc_score(label[:, 1], pred[:, 1]))
    assert np.isnan(values[2])
    assert observation_indices(["Pleural Effusion", "No Finding"]) == [10, 0]
    with pytest.raises(CXRBundleError, match="Effusion"):
        observation_indices(["Effusion"])


# ------------------------------------------------------------------------------------- pretraining network inputs
@pytest.mark.parametrize("bundle", PRETRAINING, ids=[b.name for b in PRETRAINING])
def test_pretraining_network_matches_its_documented_inputs_and_outputs(tmp_path: Path, dataset: Path, bundle: Path):
    from medssl.transforms.text import Tokenize

    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]
    defaults = harness.read_config(bundle, "train")
    assert all(o["num_channels"] == defaults["embed_dim"] for k, o in metadata["outputs"].items() if k != "word_mask")
    spec = harness.load_spec(bundle)
    overrides = {k: v for k, v in spec["overrides"].items() if k in ("image_backbone", "image_width", "embed_dim")}
    parser = _parser(bundle, "train", dataset, tmp_path, text_model=str(dataset / "text_model"), **overrides)
    network = parser.get_parsed_content("network_def").eval()
    tokens = Tokenize(str(dataset / "text_model"), max_length=24)(["No acute process.", "Small left effusion."])
    inputs = {"image": torch.rand(2, metadata["inputs"]["image"]["num_channels"], 64, 64)}
    inputs.update({k: torch.as_tensor(tokens[k]) for k in ("input_ids", "attention_mask", "word_index")})
    assert list(inputs) == list(metadata["inputs"])
    with torch.no_grad():
        outputs = network(**inputs)
    assert list(outputs) == list(metadata["outputs"])
    for name, value in outputs.items():
        expected = 1 if name == "word_mask" else overrides["embed_dim"]
        assert value.shape[0] == 2 and (value.shape[1] == expected or name == "word_mask"), name
        assert str(value.dtype).replace("torch.", "") == metadata["outputs"][name]["dtype"], name
