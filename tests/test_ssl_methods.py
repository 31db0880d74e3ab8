"""Image-only SSL methods: registry, presets, method wiring (SimSiam stop-gradient, MAE masked-only, BYOL target),
items from a manifest or a folder, and every method through the pretraining engine in 2D and 3D (export, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.engines import MethodConfigError, available_methods, create_method
from medssl.engines.pretrain import Pretraining
from medssl.ssl import RandSSLAugment, RandSSLAugmentd, resolve_preset, ssl_augmentations
from medssl.ssl.augment import SSL_PRESETS, AugmentConfigError
from medssl.ssl.networks import patchify, rotate_batch

SSL_METHODS = ("simclr", "micle", "simsiam", "byol", "mae", "rotation")
TINY_CNN = {"image_backbone": "resnet10", "image_width": 0.125, "image_size": 16}
TINY_VIT = {
    "image_size": 16,
    "patch_size": 8,
    "hidden_size": 24,
    "mlp_dim": 24,
    "num_layers": 1,
    "num_heads": 2,
    "decoder_hidden_size": 24,
    "decoder_mlp_dim": 24,
    "decoder_num_layers": 1,
    "decoder_num_heads": 2,
}
HEADS = {"simclr": {"proj_dim": 8}, "micle": {"proj_dim": 8}, "simsiam": {"proj_dim": 16}, "byol": {"proj_dim": 8}}
HEADS["byol"]["hidden"] = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _options(name: str, **extra) -> dict:
    base = dict(TINY_VIT) if name == "mae" else {**TINY_CNN, **HEADS.get(name, {})}
    return {**base, **extra}


# ------------------------------------------------------------------------------------------- registry, presets


def test_every_method_is_registered():
    assert set(SSL_METHODS) <= set(available_methods())
    method = create_method("micle", **_options("micle"))
    assert method.positive_mode() == "patient"
    with pytest.raises(MethodConfigError, match="positives"):
        create_method("simclr", positives="site")
    with pytest.raises(MethodConfigError, match="3D but spatial_dims is 2"):
        create_method("simclr", preset="mr3d")
    with pytest.raises(MethodConfigError, match="unknown augmentation field"):
        create_method("simclr", augment={"colour_jitter": 0.4})


def test_presets_flip_only_where_anatomy_allows():
    assert resolve_preset("cxr")["flip_axes"] == [] and resolve_preset("cxr")["flip_prob"] == 0
    assert resolve_preset("mammo")["flip_axes"] == [1]  # left-right after orientation, never up-down
    assert resolve_preset("mr3d")["flip_axes"] == [0]  # RAS left-right only
    for name, preset in SSL_PRESETS.items():
        assert preset["rationale"]
        names = {type(t).__name__ for t in ssl_augmentations(name, 16)}
        assert not names & {"ColorJitter", "RandomGrayscale", "RandHistogramShift"}
        flips = [t for t in ssl_augmentations(name, 16) if type(t).__name__ == "RandFlip"]
        assert [f.flipper.spatial_axis for f in flips] == resolve_preset(name)["flip_axes"]
    assert {type(t).__name__ for t in ssl_augmentations("mr3d", 16)} >= {"RandCoarseDropout", "RandCoarseShuffle"}
    with pytest.raises(AugmentConfigError, match="flip_axes"):
        resolve_preset("cxr", flip_axes=[2])
    with pytest.raises(AugmentConfigError, match="unknown augmentation preset"):
        resolve_preset("imagenet")
    with pytest.raises(AugmentConfigError, match="probability"):
        resolve_preset("cxr", noise_prob=2)


def test_augmentation_is_seeded_per_key_and_keeps_the_input():
    image = torch.rand(1, 20, 24)
    keep = image.clone()
    out = RandSSLAugmentd(["a", "b"], "cxr", 16).set_random_state(3)({"a": image, "b": image})
    assert out["a"].shape == (1, 16, 16) and out["a"].dtype == torch.float32
    assert not torch.equal(out["a"], out["b"])  # two keys, two views
    again = RandSSLAugmentd(["a", "b"], "cxr", 16).set_random_state(3)({"a": image, "b": image})
    assert torch.equal(out["a"], again["a"]) and torch.equal(out["b"], again["b"])
    assert torch.equal(image, keep)
    volume = torch.rand(1, 12, 12, 10)
    assert RandSSLAugment("mr3d", 8).set_random_state(0)(volume).shape == (1, 8, 8, 8)


# ------------------------------------------------------------------------------------------- method wiring


def _two_view_batch(b: int = 4, size: int = 16, dims: int = 2) -> dict:
    torch.manual_seed(0)
    shape = (b, 1) + (size,) * dims
    return {"image": torch.rand(shape), "image_positive": torch.rand(shape)}


def test_simsiam_forward_loss_stops_the_gradient_of_the_projections():
    method = create_method("simsiam", **_options("simsiam"))
    model, loss = method.build_model(), method.build_loss()
    batch = _two_view_batch()
    out = method.forward_loss(model, loss, batch)
    assert set(out) == {"loss", "z_std"}
    model.zero_grad()
    out["loss"].backward()
    got = [p.grad.clone() for p in model.parameters()]

    def reference(detach: bool):
        model.zero_grad()
        res = model(torch.cat([batch["image"], batch["image_positive"]]))
        z1, z2 = res["z"].chunk(2)
        p1, p2 = res["p"].chunk(2)
        if detach:
            z1, z2 = z1.detach(), z2.detach()
        value = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
        value.backward()
        return [p.grad.clone() for p in model.parameters()]

    stopped, flowing = reference(True), reference(False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, stopped))
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(got, flowing))


def test_mae_forward_loss_looks_at_masked_patches_only():
    method = create_method("mae", **_options("mae", norm_pix_loss=False))
    model, loss = method.build_model(), method.build_loss()
    images = torch.rand(2, 1, 16, 16)
    torch.manual_seed(0)
    pred, mask = model(images)
    assert mask.sum(dim=1).tolist() == [3, 3]  # 75 % of 4 patches

    class Fixed(torch.nn.Module):
        def __init__(self, pred):
            super().__init__()
            self.pred = torch.nn.Parameter(pred.detach().clone())

        def forward(self, x):
            return self.pred, mask

    fixed = Fixed(pred)
    base = method.forward_loss(fixed, loss, {"image": images})["loss"]
    target = patchify(images, 8)
    expected = (((pred - target) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    assert torch.allclose(base, expected, atol=1e-6)
    visible = (mask == 0).unsqueeze(-1).float()
    with torch.no_grad():
        fixed.pred += 5.0 * visible  # change only the visible patches' predictions
    assert torch.allclose(method.forward_loss(fixed, loss, {"image": images})["loss"], base, atol=1e-6)
    with torch.no_grad():
        fixed.pred += 5.0 * (1 - visible)
    assert not torch.allclose(method.forward_loss(fixed, loss, {"image": images})["loss"], base)


def test_patchify_follows_the_patch_grid_in_raster_order():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(image, 2)
    assert patches[0, 0].tolist() == [0, 1, 4, 5] and patches[0, 1].tolist() == [2, 3, 6, 7]
    assert patches[0, 2].tolist() == [8, 9, 12, 13]
    assert patchify(torch.rand(2, 3, 4, 4, 4), 2).shape == (2, 8, 24)


def test_rotation_labels_and_axial_plane():
    images = torch.rand(2, 1, 4, 4, 3)
    rotated, labels = rotate_batch(images)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[2], torch.rot90(images[0], 1, dims=(1, 2)))
    assert torch.equal(rotated[:, :, :, :, 1], torch.cat([torch.rot90(images[..., 1], k, (2, 3)) for k in range(4)]))


def test_byol_target_follows_the_online_network_after_each_optimizer_step():
    method = create_method("byol", **_options("byol", base_momentum=0.5))
    model, loss = method.build_model(), method.build_loss()
    assert not any(p.requires_grad for p in model.target_parameters())
    before = [p.detach().clone() for p in model.target_parameters()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = method.forward_loss(model, loss, _two_view_batch())
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_parameters())
    optimizer.step()
    assert int(model.ema_updates) == 1
    for old, new, online in zip(before, model.target_parameters(), model.online_parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * online.detach(), atol=1e-6)
    assert "ema_updates" in model.state_dict()


# ------------------------------------------------------------------------------------------- data sources


def _png_folder(folder: Path, n: int, size: int = 20) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"sub{i % 2}" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((rng.random((size, size + 2)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_items_from_a_folder_of_images_and_a_manifest(tmp_path):
    import pandas as pd

    from medssl.exceptions import DatalistError
    from medssl.ssl.data import load_ssl_items, manifest_image_items

    paths = _png_folder(tmp_path / "pngs", 5)
    items = load_ssl_items(tmp_path / "pngs")
    assert sorted(i["image"] for i in items) == sorted(str(p.resolve()) for p in paths)
    assert all(i["case_key"].startswith("img-") and "img" not in i["case_key"][4:] for i in items)
    with pytest.raises(DatalistError, match="no datalist.json and no"):
        load_ssl_items(tmp_path / "pngs", spatial_dims=3)
    with pytest.raises(DatalistError, match="no such"):
        load_ssl_items(tmp_path / "nothing")

    manifest = pd.DataFrame(
        {
            "patient_key": ["pat-1", "pat-1", "pat-2"],
            "study_key": ["stu-1", "stu-1", "stu-2"],
            "series_key": ["ser-1", "ser-2", "ser-3"],
            "modality": ["MR", "MG", "MR"],
            "sequence": ["T1", "", "FLAIR"],
            "geometry": ["ok", "ok", "irregular"],
            "root": [str(tmp_path)] * 3,
            "files": [["a/1.dcm", "a/2.dcm"], ["b/1.dcm"], ["c/1.dcm"]],
        }
    )
    mr = manifest_image_items(manifest, "mr", 3)
    assert [i["case_key"] for i in mr] == ["ser-1"]  # the series that does not stack is left out
    assert mr[0]["image"] == [str(tmp_path / "a/1.dcm"), str(tmp_path / "a/2.dcm")]
    assert mr[0]["patient_key"] == "pat-1" and mr[0]["sequence"] == "T1"
    mammo = manifest_image_items(manifest, "mammo", 2)
    assert mammo[0]["image"] == str(tmp_path / "b/1.dcm")
    with pytest.raises(DatalistError, match="no CR/DX series"):
        manifest_image_items(manifest, "cxr", 2)
    with pytest.raises(DatalistError, match="of T2"):
        manifest_image_items(manifest, "mr", 3, sequences=["T2"])


# ------------------------------------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A folder of 2D PNGs and a BraTS-like 3D datalist (4 cases of 2 patients, 4 sequences each)."""
    from medssl.data.datalist import write_datalist
    from medssl.data.layouts.brats import brats_items
    from medssl.data.synth.brats import generate

    root = tmp_path_factory.mktemp("ssl")
    _png_folder(root / "pngs", 8)
    generate(root / "brats", 4, seed=1, layout="2023", size=16, timepoints=0.5)
    items, _ = brats_items(root / "brats")
    write_datalist(root / "brats.json", {"training": items})
    return root


def _run(data_path, out, method, options, **settings):
    config = dict(
        method=method,
        data=str(data_path),
        out=str(out),
        options=options,
        max_steps=2,
        batch_size=4,
        device="cpu",
        progress=False,
        tracking=["csv"],
        log_every=1,
        checkpoint_every=1,
        seed=0,
    )
    config.update(settings)
    return Pretraining(config).run()


@pytest.mark.parametrize("name", ["simclr", "simsiam", "byol", "mae", "rotation"])
def test_2d_methods_train_and_export_a_loadable_encoder(data, tmp_path, name):
    from medssl.ssl import load_ssl_image_encoder

    summary = _run(data / "pngs", tmp_path / name, name, _options(name))
    assert summary["finished"] and np.isfinite(summary["loss"])
    encoder, features, prep = load_ssl_image_encoder(tmp_path / name / "encoders")
    assert prep["modality"] == "cxr" and prep["image_size"] == 16
    out = encoder.eval()(torch.rand(2, 1, 16, 16))
    assert (out[0] if isinstance(out, tuple) else out).shape == (2, features)
    meta = json.loads((tmp_path / name / "encoders" / "image.json").read_text())
    assert str(data) not in json.dumps(meta)  # no site paths in the export


@pytest.mark.parametrize("name", ["micle", "mae"])
def test_3d_methods_on_mr_studies(data, tmp_path, name):
    extra = {"positives": "study"} if name == "micle" else {"hidden_size": 24, "decoder_hidden_size": 24}
    options = _options(name, spatial_dims=3, image_size=8, image_keys=["T1", "T1C", "T2", "FLAIR"], **extra)
    if name == "mae":
        options["patch_size"] = 4
    summary = _run(data / "brats.json", tmp_path / name, name, options)
    assert summary["finished"]
    prep = json.loads((tmp_path / name / "encoders" / "image.json").read_text())["preprocessing"]
    assert prep["spatial_dims"] == 3 and prep["modality"] == "mr" and prep["orientation"] == "RAS"
    if name == "micle":
        metrics = (tmp_path / name / "metrics.csv").read_text()
        assert "train/positive_is_other,1.0" in metrics  # every sequence has 3 others in its study


def test_image_keys_that_match_nothing_are_named(data, tmp_path):
    with pytest.raises(MethodConfigError, match="image_keys"):
        _run(data / "brats.json", tmp_path / "x", "rotation", _options("rotation", spatial_dims=3, image_keys=["t1"]))


def test_byol_resumes_exactly_with_its_target(data, tmp_path):
    options = _options("byol")
    full = tmp_path / "full"
    _run(data / "pngs", full, "byol", options, max_steps=3)
    part = tmp_path / "part"
    _run(data / "pngs", part, "byol", options, max_steps=3, stop_after=1)
    _run(data / "pngs", part, "byol", options, max_steps=3, resume="latest")
    a = torch.load(sorted((full / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    b = torch.load(sorted((part / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    assert int(a["ema_updates"]) == 3
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_pretrain_simclr_on_a_folder(data, tmp_path, capsys):
    from medssl.cli.main import main

    code = main(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            str(data / "pngs"),
            "--out",
            str(tmp_path / "cli"),
            "--image-backbone",
            "resnet10",
            "--image-width",
            "0.125",
            "--image-size",
            "16",
            "--option",
            "proj_dim=8",
            "--option",
            'augment={"noise_std": 0.05}',
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--no-progress",
            "--tracking",
            "csv",
        ]
    )
    assert code == 0
    assert "simclr: finished at step 1/1" in capsys.readouterr().out
    assert (tmp_path / "cli" / "encoders" / "image.pt").is_file()
