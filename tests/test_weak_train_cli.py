"""``medssl weak-train``: arguments, errors, the pretrained-encoder arm's wiring, and light imports of medssl.weak."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from medssl.cli.main import build_parser, main
from medssl.weak.training import (
    MODELS,
    WeakTrainingConfig,
    WeakTrainingError,
    build_classifier,
    run_weak_comparison,
)

SALT = "weak-train-cli-test-salt"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_medssl_weak_imports_without_torch_and_exports_training_lazily():
    code = (
        "import sys, medssl.weak as w\n"
        "assert 'torch' not in sys.modules, 'medssl.weak imported torch'\n"
        "assert w.NoiseAwareBCELoss.__module__ == 'medssl.weak.training'\n"
        "assert 'torch' in sys.modules\n"
        "try:\n    w.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["weak-train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "medssl weak-train" in text
    for model in MODELS:
        assert model in text

    from medssl.cli.weak_train import config_from_args

    args = build_parser().parse_args(["weak-train", "data", "--out", "runs/w"])
    config = config_from_args(args)
    assert config.models == ["weak", "gold-subset"]
    assert config == WeakTrainingConfig(source="data", out="runs/w")  # the CLI's defaults are the config's
    args = build_parser().parse_args(["weak-train", "data", "--out", "o", "--pretrain-steps", "5", "--all-views"])
    config = config_from_args(args)
    assert config.models == ["weak", "gold-subset", "pretrained-weak"] and not config.frontal_only
    args = build_parser().parse_args(
        ["weak-train", "d", "--out", "o", "--observations", "Edema, Cardiomegaly", "--backbone-kwargs", '{"a": 1}']
    )
    config = config_from_args(args)
    assert config.observations == ["Edema", "Cardiomegaly"] and config.backbone_kwargs == {"a": 1}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "weak,pretrained-weak"], "pretrained-weak model needs"),
        (["--models", "weak,weak"], "distinct"),
        (["--models", "weak,silver"], "distinct"),
        (["--observations", "Cardiomegaly,Broken Heart"], "unknown observations"),
        (["--gold-fraction", "0"], "gold_fraction"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(tmp_path, capsys, extra, message):
    assert main(["weak-train", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_sources_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["weak-train", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "MIMIC-CXR(-JPG) folder or a medssl datalist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["weak-train", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err


def test_config_refuses_unknown_keys():
    with pytest.raises(WeakTrainingError, match="unknown setting"):
        WeakTrainingConfig.from_dict({"source": "x", "epoch": 3})
    assert WeakTrainingConfig(salt="secret").to_dict()["salt"] == "(given)"


@pytest.fixture(scope="module")
def tiny_cxr(tmp_path_factory):
    from medssl.data.synth.cxr import generate

    root = tmp_path_factory.mktemp("tiny") / "mimic"
    generate(root, 24, seed=1, size=24, lateral=0.0)
    return root


def test_given_encoders_are_fine_tuned_in_the_pretrained_arm(tiny_cxr, tmp_path, monkeypatch):
    """Wiring, not learning: an exported encoder is loaded for pretrained-weak, and every model gets a row."""
    from medssl.networks.encoders import ImageEncoder, export_image_encoder

    monkeypatch.setenv("MEDSSL_SALT", SALT)
    torch.manual_seed(5)
    encoder = ImageEncoder("resnet10", 2, 1, 0.25, None, {})
    export_image_encoder(encoder, tmp_path / "encoders", preprocessing={"image_size": 24})
    loaded = build_classifier(2, encoder=tmp_path / "encoders")
    fresh = build_classifier(2, seed=0)
    for name, value in encoder.trunk.state_dict().items():
        assert torch.equal(loaded.trunk.state_dict()[name], value), name
    assert not all(torch.equal(fresh.trunk.state_dict()[k], v) for k, v in encoder.trunk.state_dict().items())

    result = run_weak_comparison(
        source=str(tiny_cxr),
        out=str(tmp_path / "run"),
        observations=["Cardiomegaly", "Pleural Effusion"],
        models=["weak", "weak-hard", "gold-subset", "gold-all", "pretrained-weak"],
        encoders=str(tmp_path / "encoders"),
        image_size=24,
        epochs=1,
        batch_size=16,
        test_fraction=0.4,
        gold_fraction=0.3,
        min_test_positives=1,
        n_boot=20,
    )
    assert list(dict.fromkeys(result.results.model)) == [
        "weak",
        "weak-hard",
        "gold-subset",
        "gold-all",
        "pretrained-weak",
    ]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["encoders_used"] is True and config["salt"] is None
    assert set(result.differences.comparison) == {
        f"{m} - gold-subset" for m in ("weak", "weak-hard", "gold-all", "pretrained-weak")
    }
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history.groupby("model").step.max().nunique() == 1  # the same number of steps for every model
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Pretrained encoder: encoders (given)" in report and "| pretrained-weak |" in report
