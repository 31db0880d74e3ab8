"""Engine: atomic checkpoints keeping the last K, random states, resumable data order, exact resume, no PHI."""

from __future__ import annotations

import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cxr_pretraining_data

from medssl.engines import (
    CheckpointError,
    CheckpointManager,
    FailedItem,
    Pretraining,
    ResumableBatchSampler,
    SeededDataset,
    capture_rng_state,
    collate_dropping_failures,
    read_metrics,
    restore_rng_state,
)
from medssl.engines.checkpoint import CHECKPOINT_FORMAT


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    """12 synthetic patients (one frontal study each) in the MIMIC-CXR-JPG layout, a datalist and a tiny BERT."""
    return make_cxr_pretraining_data(
        tmp_path_factory.mktemp("cxr"), tmp_path_factory.mktemp("bert"), 12, 4, dropout=0.1
    )


def _settings(cxr, out, **overrides):
    options = {
        "text_model": str(cxr["bert"]),
        "image_backbone": "resnet10",
        "image_width": 0.125,
        "image_size": 32,
        "embed_dim": 8,
        "max_length": 32,
        "blur_prob": 0.5,
    }
    settings = dict(
        method="convirt",
        data=str(cxr["datalist"]),
        out=str(out),
        options=options,
        batch_size=2,
        accumulate=2,
        max_steps=5,
        warmup_steps=2,
        lr=1e-3,
        checkpoint_every=2,
        keep_last=2,
        log_every=1,
        progress=False,
        tracking=["csv"],
        export=False,
        seed=7,
    )
    settings.update(overrides)
    return settings


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoints_keep_the_last_k_and_load_weights_only(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 10):
        manager.save({"format": CHECKPOINT_FORMAT, "step": step, "w": torch.full((2,), float(step))}, step)
    assert [p.name for p in manager.checkpoints()] == ["checkpoint_00000003.pt", "checkpoint_00000010.pt"]
    assert manager.latest() == tmp_path / "checkpoint_00000010.pt"
    state = manager.load()
    assert state["step"] == 10 and torch.equal(state["w"], torch.full((2,), 10.0))


def test_an_interrupted_save_leaves_the_previous_checkpoints_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save({"format": CHECKPOINT_FORMAT, "step": 1}, 1)
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        manager.save({"format": CHECKPOINT_FORMAT, "step": 2}, 2)
    monkeypatch.setattr(torch, "save", real_save)
    assert not manager.path_for(2).exists()
    assert manager.latest() == manager.path_for(1) and manager.load()["step"] == 1
    (tmp_path / ".checkpoint_00000003.pt.999.tmp").write_bytes(b"left by a killed process")
    assert manager.latest() == manager.path_for(1)  # temporary files are never taken for checkpoints
    manager.save({"format": CHECKPOINT_FORMAT, "step": 4}, 4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_rejects_foreign_files(tmp_path):
    manager = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        manager.load()
    torch.save({"model": {}}, tmp_path / "checkpoint_00000001.pt")
    with pytest.raises(CheckpointError, match="not a medssl"):
        manager.load()
    (tmp_path / "checkpoint_00000002.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        manager.load()


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    random.gauss(0, 1)  # a cached Gaussian in Python's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1), np.random.randn())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    actual = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1), np.random.randn())
    assert torch.equal(actual[0], expected[0]) and np.array_equal(actual[1], expected[1])
    assert actual[2:] == expected[2:]


# ------------------------------------------------------------------------------------------------ data position


def test_sampler_order_is_seeded_per_epoch_and_resumes_mid_epoch():
    sampler = ResumableBatchSampler(23, batch_size=4, seed=5)
    assert len(sampler) == 5  # the incomplete last batch is dropped
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 == list(ResumableBatchSampler(23, 4, seed=5).batches(1))
    assert epoch1 != sampler.batches(0) and epoch1 != ResumableBatchSampler(23, 4, seed=6).batches(1)
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == epoch1[3:]
    assert all(e == 1 for batch in epoch1 for e, _ in batch)
    assert len({i for batch in epoch1 for _, i in batch}) == 20


def test_rank_slices_make_up_the_single_process_batch():
    single = ResumableBatchSampler(30, batch_size=6, seed=1).batches(2)
    ranks = [ResumableBatchSampler(30, batch_size=3, seed=1, rank=r, world_size=2).batches(2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for b, batch in enumerate(single):
        assert batch == ranks[0][b] + ranks[1][b]


def test_augmentation_depends_on_seed_epoch_and_index_only():
    from monai.transforms import Compose

    from medssl.transforms.augment import RandConVIRTAugmentd

    data = [{"image": torch.rand(1, 40, 40)} for _ in range(4)]
    dataset = SeededDataset(data, Compose([RandConVIRTAugmentd("image", spatial_size=32)]), seed=3)
    forward = [dataset[(0, i)]["image"] for i in range(4)]
    backward = [dataset[(0, i)]["image"] for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a, b)
    assert not torch.equal(dataset[(1, 0)]["image"], forward[0])  # a new epoch draws anew
    assert not torch.equal(SeededDataset(data, dataset.transform, seed=4)[(0, 0)]["image"], forward[0])


def test_unloadable_items_are_reported_and_dropped(caplog):
    def load(item):
        if item["bad"]:
            raise FileNotFoundError("/site/patient-123/image.jpg")
        return {"x": torch.ones(2)}

    data = [{"bad": i == 1, "case_key": f"cas-{i}"} for i in range(3)]
    dataset = SeededDataset(data, load)
    items = [dataset[i] for i in range(3)]
    assert isinstance(items[1], FailedItem) and items[1].case_key == "cas-1"
    assert "cas-1" in caplog.text and "patient-123" not in caplog.text  # the key, never the path
    assert collate_dropping_failures(items)["x"].shape == (2, 2)
    assert collate_dropping_failures([items[1]]) is None
    with pytest.raises(FileNotFoundError):
        SeededDataset(data, load, skip_errors=False)[1]


# ------------------------------------------------------------------------------------------------ exact resume


def test_killed_run_resumes_to_the_uninterrupted_weights_and_losses(cxr, tmp_path):
    full = Pretraining(_settings(cxr, tmp_path / "full"))
    summary = full.run()
    assert summary["finished"] and summary["steps"] == 5 and full.steps_per_epoch == 3  # crosses an epoch

    stopped = Pretraining(_settings(cxr, tmp_path / "killed", stop_after=3))
    assert stopped.run()["steps"] == 3
    checkpoints = stopped.checkpoints.checkpoints()
    assert [p.name for p in checkpoints] == ["checkpoint_00000002.pt", "checkpoint_00000003.pt"]
    checkpoints[-1].unlink()  # killed after step 3, before its checkpoint: steps 3.. are done again

    resumed = Pretraining(_settings(cxr, tmp_path / "killed", resume="latest"))
    assert resumed.run()["steps"] == 5
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    moments = [run.optimizer.state_dict()["state"][0]["exp_avg"] for run in (full, resumed)]
    assert torch.equal(*moments)
    losses_full = read_metrics(tmp_path / "full")["train/loss"]
    losses_resumed = read_metrics(tmp_path / "killed")["train/loss"]
    assert [s for s, _ in losses_resumed] == [1, 2, 3, 4, 5]  # no step logged twice
    assert losses_resumed == losses_full
    assert len({v for _, v in losses_full}) == 5  # the trajectory is not constant


def _record_batches(run: Pretraining) -> dict[int, torch.Tensor]:
    from ignite.engine import Events

    seen: dict[int, torch.Tensor] = {}

    def record(engine):
        seen[engine.state.iteration] = torch.as_tensor(engine.state.batch["image"]).clone()

    run.engine.add_event_handler(Events.ITERATION_STARTED, record)
    return seen


def test_resume_restores_data_position_and_random_state(cxr, tmp_path):
    full = Pretraining(_settings(cxr, tmp_path / "full", max_steps=4, checkpoint_every=0)).setup()
    full_batches = _record_batches(full)
    full.run()
    first = Pretraining(_settings(cxr, tmp_path / "a", max_steps=4, stop_after=2, checkpoint_every=0))
    first.run()
    state = first.checkpoints.load()
    assert state["step"] == 2 and len(state["rng"]) == 1
    resumed = Pretraining(_settings(cxr, tmp_path / "a", max_steps=4, resume="latest")).setup()
    assert resumed.engine.state.iteration == 2
    assert torch.equal(torch.get_rng_state(), state["rng"][0]["torch"])
    resumed_batches = _record_batches(resumed)
    resumed.run()
    assert sorted(resumed_batches) == [3, 4]  # steps 1-2 are not loaded again
    for step in (3, 4):  # the same items with the same augmentation (step 4 starts the second epoch)
        assert torch.equal(resumed_batches[step], full_batches[step])
    assert not torch.equal(full_batches[3], full_batches[4])


def test_resume_refuses_settings_that_change_the_run(cxr, tmp_path):
    Pretraining(_settings(cxr, tmp_path / "b", max_steps=3, stop_after=1)).run()
    with pytest.raises(CheckpointError, match="batch_size"):
        Pretraining(_settings(cxr, tmp_path / "b", max_steps=3, batch_size=3, resume="latest")).setup()


def _strings(value, out):
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _strings(k, out), _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)
    return out


def test_checkpoints_and_logs_hold_no_phi(cxr, tmp_path):
    run = Pretraining(_settings(cxr, tmp_path / "phi", max_steps=2, tracking=["csv", "tensorboard"], export=True))
    run.run()
    identifiers = set()
    for item in cxr["items"]:
        for key in ("image", "report"):
            path = Path(item[key])
            identifiers |= {str(path), path.name, path.stem}
            identifiers |= set(re.findall(r"[ps]\d{8}", str(path)))  # MIMIC subject and study ids
        identifiers |= {item["patient_key"], item["case_key"], item["study_key"]}
    identifiers.add(str(cxr["root"]))
    checkpoint = run.checkpoints.latest()
    strings = _strings(torch.load(checkpoint, weights_only=True), [])
    assert not [s for s in strings for ident in identifiers if ident in s]
    blobs = [zipfile.ZipFile(checkpoint).read(name) for name in zipfile.ZipFile(checkpoint).namelist()]
    files = [p for p in (tmp_path / "phi").rglob("*") if p.is_file() and p.name != "config.json"]
    blobs += [p.read_bytes() for p in files]
    for ident in identifiers:
        assert not any(ident.encode() in blob for blob in blobs), ident
    assert (tmp_path / "phi" / "encoders" / "image.pt").is_file()
