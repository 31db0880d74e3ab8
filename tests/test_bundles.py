"""Every bundle under ``bundles/``: metadata, targets, a tiny train/evaluate/inference run, network I/O, export.

The tests are parametrised over :func:`medssl.bundle.harness.discover_bundles`; each bundle's
``configs/smoke_test.json`` says how to make its tiny synthetic data and how to shrink it, so a new bundle is picked
up without changing this file. The workflows run in this process through ``monai.bundle.run`` (cheap); one bundle
is also run through the literal ``python -m monai.bundle run`` command line with ``--tracking mlflow``, and the
two-process ``torchrun`` run of ``multi_gpu_train.json`` is marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.bundle import harness

REPO = Path(__file__).resolve().parents[1]
BUNDLES_ROOT = REPO / "bundles"
SCHEMA = REPO / "tests" / "data" / "monai_meta_schema_20240725.json"
BUNDLES = harness.discover_bundles(BUNDLES_ROOT)
SPECS = {b.name: harness.load_spec(b) for b in BUNDLES}
FIRST_WAVE = (
    "brats_mri_early_fusion_segmentation",
    "mr_early_fusion_classification",
    "mammo_joint_fusion_classification",
    "mammo_late_fusion_classification",
)
CLI_BUNDLE = "mr_early_fusion_classification"  # the one run through the literal command line


def _with(flag: str) -> list[Path]:
    return [b for b in BUNDLES if SPECS[b.name].get(flag)]


def _ids(bundles: list[Path]) -> list[str]:
    return [b.name for b in bundles]


RUNNABLE = [b for b in BUNDLES if SPECS[b.name]["data"] and SPECS[b.name]["workflows"]]


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundle-data")


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """Run each bundle's workflows once per session (in process) and remember where their outputs went."""
    runs: dict[str, dict] = {}

    def get(bundle: Path) -> dict:
        if bundle.name not in runs:
            spec = SPECS[bundle.name]
            dataset = harness.make_data(spec, data_root)
            out = tmp_path_factory.mktemp(bundle.name)
            overrides = {}
            for workflow in spec["workflows"]:
                overrides[workflow] = harness.workflow_overrides(bundle, spec, workflow, dataset, out)
                harness.run_workflow(bundle, workflow, overrides[workflow])
            runs[bundle.name] = {"spec": spec, "dataset": dataset, "out": out, "overrides": overrides}
        return runs[bundle.name]

    return get


# ------------------------------------------------------------------------------------------------ static checks
def test_the_first_wave_bundles_are_discovered():
    assert set(FIRST_WAVE) <= set(_ids(BUNDLES))
    assert set(FIRST_WAVE) <= set(_ids(RUNNABLE))


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_metadata_validates_against_the_schema_copy(bundle: Path):
    metadata = harness.validate_metadata(bundle, SCHEMA)
    assert metadata["network_data_format"]["inputs"]


def test_metadata_check_rejects_a_broken_metadata(tmp_path: Path):
    copy = tmp_path / "broken"
    shutil.copytree(BUNDLES_ROOT / FIRST_WAVE[1], copy, ignore=shutil.ignore_patterns("eval", "*.pt"))
    meta = json.loads((copy / "configs" / "metadata.json").read_text())
    del meta["copyright"]
    (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(harness.BundleCheckError, match="copyright"):
        harness.validate_metadata(copy, SCHEMA)
    meta["copyright"] = "x"
    meta["network_data_format"]["inputs"]["image"]["channel_def"] = {"0": "T1"}
    (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(harness.BundleCheckError, match="channel_def"):
        harness.validate_metadata(copy, SCHEMA)


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_every_target_resolves(bundle: Path):
    assert harness.unresolved_targets(bundle) == []


def test_an_unknown_target_is_reported(tmp_path: Path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLES_ROOT / FIRST_WAVE[1], copy, ignore=shutil.ignore_patterns("eval", "*.pt"))
    config = json.loads((copy / "configs" / "train.json").read_text())
    config["loss"]["_target_"] = "medssl.bundle.NoSuchLoss"
    config["train_datalist"] = "$medssl.bundle.no_such_builder(@dataset_dir)"
    (copy / "configs" / "train.json").write_text(json.dumps(config))
    problems = harness.unresolved_targets(copy)
    assert any("NoSuchLoss" in p for p in problems) and any("no_such_builder" in p for p in problems)


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_every_expression_parses(bundle: Path):
    assert harness.expression_problems(bundle) == []


def test_an_expression_that_cannot_parse_is_reported(tmp_path: Path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLES_ROOT / FIRST_WAVE[1], copy, ignore=shutil.ignore_patterns("eval", "*.pt"))
    config = json.loads((copy / "configs" / "multi_gpu_train.json").read_text())
    config["device"] = "$torch.device(f'cuda:{@local_rank}')"  # '@local_rank' becomes __local_refs['local_rank']
    (copy / "configs" / "multi_gpu_train.json").write_text(json.dumps(config))
    problems = harness.expression_problems(copy)
    assert len(problems) == 1 and problems[0].startswith("multi_gpu_train.json: device ->")


@pytest.mark.parametrize("bundle", RUNNABLE, ids=_ids(RUNNABLE))
def test_workflows_share_network_and_preprocessing(bundle: Path):
    """Evaluate and inference must rebuild exactly the trained network, and read data the way training did."""
    configs = {w: harness.read_config(bundle, w) for w in ("train", "evaluate", "inference")}
    for key in ("network_def", "datalist_options", "seed"):
        values = [json.dumps(c.get(key), sort_keys=True) for c in configs.values()]
        assert len(set(values)) == 1, f"{key} differs between train, evaluate and inference"
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    inputs = metadata["network_data_format"]["inputs"]
    names = configs["train"]["network_def"].get("view_names")
    if names is not None:  # fusion networks: inputs named like the network's views or channels
        names = configs["train"][names[1:]] if isinstance(names, str) else names
        if "image" in inputs:  # channel-stacked input: channels named in the network's order
            assert list(inputs["image"]["channel_def"].values()) == names
        else:  # view-keyed input: one input per view
            assert [k for k in inputs if k != "presence"] == names
    multi = harness.read_config(bundle, "multi_gpu_train")
    if "network" in multi:  # supervised bundles wrap the network in DDP; the pretraining engine wraps its own
        assert multi["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
        assert multi["train"]["dataloader"]["sampler"] == "@train#sampler"


# ------------------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("bundle", RUNNABLE, ids=_ids(RUNNABLE))
def test_train_evaluate_inference_on_tiny_synthetic_data(bundle: Path, smoke_runs):
    run = smoke_runs(bundle)
    out, spec = run["out"], run["spec"]
    for workflow in spec["workflows"]:
        harness.check_outputs(out, spec["expect"].get(workflow, {}))
    checkpoint = out / "models" / "model.pt"
    assert harness.checkpoint_changed(bundle, run["overrides"]["train"], checkpoint), "training left the weights"
    splits = harness.read_splits(out)
    assert splits["training"] and splits["test"]
    assert not set(splits["training"]) & set(splits["test"])
    for workflow in spec["workflows"]:
        expect = spec["expect"].get(workflow, {})
        if expect.get("metrics"):
            metrics = harness.read_metrics(out)
            assert set(expect["metrics"]) <= set(metrics)
        if expect.get("predictions_csv"):
            check = expect["predictions_csv"]
            rows = harness.read_predictions(out / check["file"])
            assert set(rows) == set(splits[check["split"]])  # one row per case of the split, named by its key
            values = np.asarray([v[:1] for v in rows.values()])
            assert np.all((values >= 0) & (values <= 1))
            assert all(len(v) == check["columns"] for v in rows.values())


@pytest.mark.parametrize("bundle", _with("verify_net_in_out"), ids=_ids(_with("verify_net_in_out")))
def test_verify_net_in_out(bundle: Path):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "train.json"),
        device="cpu",
    )
    with pytest.raises(ValueError, match="channel"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "train.json"),
            device="cpu",
            **{"_meta_#network_data_format#outputs#pred#num_channels": 7},
        )


NETWORK_IO = [b for b in BUNDLES if "network_io" in SPECS[b.name]]


@pytest.mark.parametrize("bundle", NETWORK_IO, ids=_ids(NETWORK_IO))
def test_multi_input_network_matches_its_metadata(bundle: Path):
    outputs = harness.check_network_io(bundle, None, **SPECS[bundle.name]["network_io"])
    presence = outputs["presence"]
    assert presence[0, -1] == 0 and presence[1].all()  # the input built from the metadata drops one view
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["network_data_format"]["outputs"]["logits"]["num_channels"] = 3
    broken = bundle.parent / f".{bundle.name}-broken-{os.getpid()}"
    try:
        shutil.copytree(bundle, broken, ignore=shutil.ignore_patterns("eval", "*.pt"))
        (broken / "configs" / "metadata.json").write_text(json.dumps(metadata))
        with pytest.raises(harness.BundleCheckError, match="logits"):
            harness.check_network_io(broken, None, **SPECS[bundle.name]["network_io"])
    finally:
        shutil.rmtree(broken, ignore_errors=True)


EXPORTABLE = [b for b in _with("ckpt_export") if b in RUNNABLE]


@pytest.mark.parametrize("bundle", EXPORTABLE, ids=_ids(EXPORTABLE))
def test_ckpt_export_to_torchscript(bundle: Path, smoke_runs, tmp_path: Path):
    run = smoke_runs(bundle)
    overrides = run["overrides"]["train"]
    checkpoint = run["out"] / "models" / "model.pt"
    exported = harness.export_torchscript(bundle, checkpoint, tmp_path / "model.ts", overrides)
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(exported), _extra_files=extra).eval()
    assert json.loads(extra["inference.json"])["network_def"]["_target_"].startswith("medssl.networks.")
    eager = harness.load_checkpoint(harness.build_network(bundle, overrides), checkpoint)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]
    torch.manual_seed(0)
    presence = torch.tensor([[1.0] * (metadata["presence"]["num_channels"] - 1) + [0.0]])
    if "image" in metadata:
        channels = metadata["image"]["num_channels"]
        x = torch.rand(1, channels, *([16] * len(metadata["image"]["spatial_shape"])))
    else:
        x = {name: torch.rand(1, 1, 32, 24) for name in metadata if name != "presence"}
    with torch.no_grad():
        expected, got = eager(x, presence), scripted(x, presence)
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], equal_nan=True)
    else:
        torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------------------------- bundle-specific checks
SEGMENTATION = "brats_mri_early_fusion_segmentation"


def test_segmentation_label_maps_on_the_reference_grid(smoke_runs):
    import nibabel as nib

    from medssl.bundle import brats_datalist

    bundle = BUNDLES_ROOT / SEGMENTATION
    run = smoke_runs(bundle)
    check = run["spec"]["expect"]["inference"]["label_maps"]
    options = {"val_fraction": 0.25, "test_fraction": 0.25, "splits_file": run["out"] / "splits.json"}
    cases = brats_datalist(run["dataset"], check["split"], **options)
    assert cases
    for case in cases:
        saved = nib.load(run["out"] / check["pattern"].format(case_key=case["case_key"]))
        reference = nib.load(case["T1"])
        assert saved.shape == reference.shape
        np.testing.assert_allclose(saved.affine, reference.affine, atol=1e-5)
        assert set(np.unique(np.asarray(saved.dataobj)).tolist()) <= {0, 1, 2, 4}  # 2021 naming: ET is 4


def test_segmentation_reads_brats_2023_with_et_label_3(tmp_path: Path):
    import nibabel as nib
    from monai.bundle import ConfigParser

    from medssl.bundle import brats_et_label
    from medssl.data.synth.brats import generate

    generate(tmp_path, 2, 1, layout="2023", size=16, no_tumour=0.0, low_grade=0.0)
    assert brats_et_label(tmp_path) == 3
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_ROOT / SEGMENTATION / "configs" / "train.json"))
    parser["dataset_dir"] = str(tmp_path)
    parser["output_dir"] = str(tmp_path / "out")
    parser["datalist_options#val_fraction"] = 0.0
    parser["datalist_options#test_fraction"] = 0.0
    items = parser.get_parsed_content("train_datalist")
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    out = preprocessing(items[0])
    seg = np.asarray(nib.load(items[0]["label"]).dataobj)
    assert (seg == 3).any()
    np.testing.assert_array_equal(out["label"][2].numpy() > 0, seg == 3)  # ET channel
    np.testing.assert_array_equal(out["label"][1].numpy() > 0, seg > 0)  # WT channel
    assert out["image"].shape[0] == 4


def test_missing_sequence_is_a_zero_channel_in_evaluation(tmp_path: Path):
    """Sliding-window validation runs without the presence mask: a missing sequence must already be zero."""
    from monai.bundle import ConfigParser

    from medssl.data.synth.brats import generate

    generate(tmp_path, 1, 2, size=16)
    next(tmp_path.rglob("*_t2.nii.gz")).unlink()
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_ROOT / SEGMENTATION / "configs" / "inference.json"))
    parser["dataset_dir"] = str(tmp_path)
    parser["missing_cases"] = "include"
    parser["infer_split"] = "all"
    items = parser.get_parsed_content("datalist_items")
    out = parser.get_parsed_content("preprocessing")(items[0])
    assert out["presence"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert float(out["image"][2].abs().max()) == 0.0 and float(out["image"][0].abs().max()) > 0


# ------------------------------------------------------------------------------- command line, DDP (subprocess)
def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MEDSSL_SALT", "medssl-test-salt")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_standard_command_line(tmp_path: Path, data_root: Path):
    """The literal ``python -m monai.bundle run --config_file configs/train.json --bundle_root B --dataset_dir D``.

    ``python -m monai.bundle`` parses its arguments with Python Fire (``pip install fire``).
    """
    pytest.importorskip("fire", reason="python -m monai.bundle needs Python Fire (pip install fire)")
    bundle = BUNDLES_ROOT / CLI_BUNDLE
    spec = SPECS[CLI_BUNDLE]
    dataset = harness.make_data(spec, data_root)
    out = tmp_path / "out"
    overrides = harness.workflow_overrides(bundle, spec, "train", dataset, out)
    command = harness.command_line(bundle, "train", overrides)
    assert command[1:6] == ["-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
    assert command[6:10] == ["--bundle_root", str(bundle), "--dataset_dir", str(dataset)]
    result = subprocess.run(command, cwd=bundle, env=_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    harness.check_outputs(out, spec["expect"]["train"])
    assert "Epoch: 1/1, Iter: 1/" in result.stdout + result.stderr  # the bundle's logging.conf applied


def test_mlflow_tracking(tmp_path: Path, data_root: Path):
    """``--tracking mlflow``: MONAI's MLflow handlers log the loss and the validation metric to OUTPUT/mlruns.db.

    MONAI's handler accepts a SQLite (or server) store only: a local run needs SQLAlchemy and Alembic next to
    ``mlflow-skinny``.
    """
    mlflow = pytest.importorskip("mlflow")
    for module in ("sqlalchemy", "alembic"):
        pytest.importorskip(module, reason="MLflow's local SQLite store (MONAI's default) needs SQLAlchemy and Alembic")
    from monai.utils import path_to_sqlite_uri

    bundle = BUNDLES_ROOT / CLI_BUNDLE
    spec = SPECS[CLI_BUNDLE]
    dataset = harness.make_data(spec, data_root)
    out = tmp_path / "out"
    harness.run_workflow(bundle, "train", harness.workflow_overrides(bundle, spec, "train", dataset, out), "mlflow")
    client = mlflow.tracking.MlflowClient(path_to_sqlite_uri(str(out / "mlruns.db")))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = {key for run in runs for key in run.data.metrics}
    assert {"train_loss", "val_auc"} <= logged


@pytest.mark.slow
@pytest.mark.parametrize("bundle", _with("distributed"), ids=_ids(_with("distributed")))
def test_torchrun_two_gloo_processes(bundle: Path, tmp_path: Path, data_root: Path):
    spec = SPECS[bundle.name]
    dataset = harness.make_data(spec, data_root)
    out = tmp_path / "out"
    overrides = harness.workflow_overrides(bundle, spec, "multi_gpu_train", dataset, out)
    command = harness.command_line(bundle, "multi_gpu_train", overrides, torchrun=2)
    env = _environment()
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU
    result = subprocess.run(command, cwd=bundle, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    harness.check_outputs(out, spec["expect"]["train"])
    assert harness.checkpoint_changed(bundle, overrides, out / "models" / "model.pt", "multi_gpu_train")
    # is_not_rank0 silences the stats handlers of rank 1: the first iteration is logged once, not twice.
    assert (result.stdout + result.stderr).count("Epoch: 1/1, Iter: 1/") == 1
