"""``medssl pretrain``: settings precedence, method registry, a stopped and resumed run, GLoRIA, errors."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import make_cxr_pretraining_data

from medssl.cli.main import build_parser, main
from medssl.engines import (
    ConVIRTMethod,
    MethodConfigError,
    PretrainMethod,
    available_methods,
    create_method,
    get_method,
    read_metrics,
    register_method,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    """Synthetic MIMIC-CXR-JPG patients (one frontal study each), a datalist and a tiny BERT."""
    return make_cxr_pretraining_data(tmp_path_factory.mktemp("cxr"), tmp_path_factory.mktemp("bert"), 10, 2)


def _tiny(cxr) -> list[str]:
    return [
        "--data",
        str(cxr["datalist"]),
        "--text-model",
        str(cxr["bert"]),
        "--image-backbone",
        "resnet10",
        "--image-width",
        "0.125",
        "--image-size",
        "32",
        "--embed-dim",
        "8",
        "--max-length",
        "32",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--tracking",
        "csv",
        "--log-every",
        "1",
    ]


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["pretrain", *argv])


def test_help_lists_the_main_options(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for flag in ("--method", "--resume", "--accumulate", "--amp", "--tracking", "--checkpoint-every", "torchrun"):
        assert flag in text


def test_flags_override_the_settings_file(tmp_path):
    from medssl.cli.pretrain import settings_from_args

    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"method": "gloria", "lr": 0.5, "batch_size": 9, "options": {"embed_dim": 4}}))
    settings = settings_from_args(
        _args(
            [
                "--config",
                str(config),
                "--lr",
                "0.01",
                "--embed-dim",
                "12",
                "--option",
                "temp1=3.5",
                "--option",
                'report_priority=["impression"]',
                "--option",
                "fit=crop",
                "--resume",
            ]
        )
    )
    assert settings["method"] == "gloria" and settings["batch_size"] == 9 and settings["lr"] == 0.01
    assert settings["options"] == {"embed_dim": 12, "temp1": 3.5, "report_priority": ["impression"], "fit": "crop"}
    assert settings["resume"] == "latest"


def test_registry_has_both_methods_and_takes_plugins():
    assert {"convirt", "gloria"} <= set(available_methods())
    assert get_method("convirt") is ConVIRTMethod
    with pytest.raises(MethodConfigError, match="unknown pretraining method"):
        get_method("no-such-method")
    with pytest.raises(MethodConfigError, match="unknown option"):
        create_method("convirt", text_model="x", colour="blue")
    with pytest.raises(MethodConfigError, match="text model"):
        create_method("gloria")

    class Rotation(PretrainMethod):
        name = "test-rotation"

        @classmethod
        def defaults(cls):
            return {"angles": 4}

    register_method(Rotation)
    assert create_method("test-rotation").options == {"angles": 4}
    with pytest.raises(MethodConfigError, match="already registered"):
        register_method(type("Other", (PretrainMethod,), {"name": "test-rotation"}))
    assert get_method(f"{__name__}:ConVIRTMethod") is ConVIRTMethod  # package.module:Class form


def test_list_methods(capsys):
    assert main(["pretrain", "--list-methods"]) == 0
    text = capsys.readouterr().out
    assert "convirt:" in text and "gloria:" in text and "temp1 = 4.0" in text


def test_stopped_run_resumes_through_the_cli(cxr, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["pretrain", "--method", "convirt", "--out", str(out), *_tiny(cxr), "--max-steps", "4"]
    assert main([*common, "--stop-after", "2"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not (out / "encoders").exists()
    assert main([*common, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "finished at step 4/4" in printed
    assert [s for s, _ in read_metrics(out)["train/loss"]] == [1, 2, 3, 4]
    for name in ("image.pt", "image.json", "heads.pt", "model.json", "text/config.json"):
        assert (out / "encoders" / name).is_file(), name
    image = json.loads((out / "encoders" / "image.json").read_text())
    assert image["backbone"] == "resnet10" and image["preprocessing"]["image_size"] == 32
    config = json.loads((out / "config.json").read_text())
    assert config["resume"] == "latest" and config["options"]["embed_dim"] == 8


def test_gloria_runs_through_the_cli(cxr, tmp_path):
    out = tmp_path / "gloria"
    argv = [
        "pretrain",
        "--method",
        "gloria",
        "--out",
        str(out),
        *_tiny(cxr),
        "--max-steps",
        "2",
        "--option",
        "region_layer=layer2",
        "--option",
        "max_words=40",
        "--accumulate",
        "1",
    ]
    assert main(argv) == 0
    losses = read_metrics(out)
    assert {"train/loss", "train/local_image_to_text", "train/global_text_to_image"} <= set(losses)
    model = json.loads((out / "encoders" / "model.json").read_text())
    assert model["method"] == "gloria" and model["config"]["region_layer"] == "layer2"


def test_bad_settings_exit_with_status_2(cxr, tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "x"), *_tiny(cxr), "--option", "colour=blue"]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "y"), *_tiny(cxr), "--batch-size", "64"]) == 2
    assert "cannot fill one global batch" in capsys.readouterr().err
