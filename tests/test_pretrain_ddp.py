"""DDP: one step of two gloo processes (torchrun) equals the single-process step on the same global batch.

The fast test runs the DDP code path (wrapper, no_sync accumulation, collective skip check, gathered random states)
in one process with a one-rank gloo group; the other launches ``torchrun --nproc_per_node=2 -m medssl pretrain``.
Both use a GroupNorm image tower (SegResNet's encoder) and a BERT without dropout: BatchNorm statistics and dropout
masks are per rank by design (SyncBatchNorm is offered for GPUs), everything else must agree.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from conftest import make_cxr_pretraining_data

from medssl.engines import CheckpointManager, Pretraining, read_metrics

# SegResNet's encoder: GroupNorm throughout (MONAI's ResNet takes ``norm`` for its stem only)
OPTIONS = {"image_backbone": "segresnet", "image_width": 0.5, "image_size": 32, "embed_dim": 8, "max_length": 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    """Synthetic MIMIC-CXR-JPG patients (one frontal study each), a datalist and a tiny BERT."""
    return make_cxr_pretraining_data(
        tmp_path_factory.mktemp("cxr"), tmp_path_factory.mktemp("bert"), 12, 8, dropout=0.0
    )


def _settings(cxr, out, **overrides):
    settings = dict(
        method="convirt",
        data=str(cxr["datalist"]),
        out=str(out),
        options={**OPTIONS, "text_model": str(cxr["bert"])},
        batch_size=6,
        max_steps=1,
        lr=0.1,
        optimizer="sgd",
        progress=False,
        tracking=["csv"],
        export=False,
        checkpoint_every=1,
        seed=3,
        device="cpu",
    )
    settings.update(overrides)
    return settings


def test_one_rank_process_group_takes_the_plain_step(cxr, tmp_path):
    plain = Pretraining(_settings(cxr, tmp_path / "plain", max_steps=2, batch_size=3, accumulate=2))
    plain.run()
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        wrapped = Pretraining(_settings(cxr, tmp_path / "ddp", max_steps=2, batch_size=3, accumulate=2))
        wrapped.run()
        assert isinstance(wrapped.wrapped, torch.nn.parallel.DistributedDataParallel)
        assert dist.is_initialized()  # a group the run did not create is left alone
    finally:
        dist.destroy_process_group()
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(wrapped.model.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    assert CheckpointManager(tmp_path / "ddp" / "checkpoints").load()["rng"][0]["torch"].dtype == torch.uint8


def test_two_gloo_processes_equal_one_process_on_the_global_batch(cxr, tmp_path):
    single = Pretraining(_settings(cxr, tmp_path / "single"))
    single.run()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medssl"]
    command += ["pretrain", "--method", "convirt", "--data", str(cxr["datalist"]), "--out", str(tmp_path / "ddp")]
    command += ["--text-model", str(cxr["bert"]), "--image-backbone", "segresnet", "--image-width", "0.5"]
    command += ["--image-size", "32", "--embed-dim", "8", "--max-length", "32", "--batch-size", "3"]
    command += ["--max-steps", "1", "--lr", "0.1", "--optimizer", "sgd", "--seed", "3", "--device", "cpu"]
    command += ["--checkpoint-every", "1", "--tracking", "csv", "--no-progress", "--no-export"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = CheckpointManager(tmp_path / "ddp" / "checkpoints").load()
    assert state["hyperparameters"]["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank random streams
    reference = single.model.state_dict()
    initial = Pretraining(_settings(cxr, tmp_path / "initial")).setup().model.state_dict()
    for name, value in state["model"].items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-6, msg=name)
    assert sum(not torch.equal(initial[k], reference[k]) for k in reference) > len(reference) // 2  # the step moved
    loss_ddp = read_metrics(tmp_path / "ddp")["train/loss"][0][1]
    loss_single = read_metrics(tmp_path / "single")["train/loss"][0][1]
    assert loss_ddp == pytest.approx(loss_single, rel=1e-5)
