from __future__ import annotations

import copy
import io

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import MeanEnsemble

from medssl.exceptions import MedsslError
from medssl.networks import (
    MAMMO_VIEWS,
    MR_SEQUENCES,
    BackboneConfigError,
    EarlyFusion,
    EncoderStateError,
    FusionConfigError,
    FusionInputError,
    JointFusion,
    LateFusion,
    ModalityDropout,
    build_encoder,
    build_fusion_model,
    count_flops,
    count_parameters,
    draw_keep_mask,
    load_encoder_state,
    masked_mean_ensemble,
)

TINY = {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125}}  # 8-16-32-64 channels
VIEWS = list(MAMMO_VIEWS)
SEQS = list(MR_SEQUENCES)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tiny models: intra-op threads only add contention on the shared CI cores (the suite runs with -n 2).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def mammo_batch(batch: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    return {v: torch.randn(batch, 1, size, size) for v in VIEWS}


def assert_outputs_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, equal_nan=True), key


# ------------------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_early_fusion_classification_shapes_and_input_forms(spatial_dims):
    size = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    model = EarlyFusion(SEQS, spatial_dims, num_classes=3, **TINY).eval()
    stacked = torch.randn(2, 4, *size)
    out = model(stacked)
    assert out.shape == (2, 3)
    as_views = model(stacked.unsqueeze(2))
    as_dict = model({name: stacked[:, i : i + 1] for i, name in enumerate(SEQS)})
    assert torch.allclose(out, as_views) and torch.allclose(out, as_dict)
    assert model.get_encoders()["encoder"](stacked).shape == (2, model.encoder.out_features)


@pytest.mark.parametrize("spatial_dims,backbone", [(2, "unet"), (3, "segresnet")])
def test_early_fusion_segmentation_shapes(spatial_dims, backbone):
    size = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    model = EarlyFusion(SEQS, spatial_dims, num_classes=3, task="segmentation", backbone=backbone, width=0.5).eval()
    assert model(torch.randn(2, 4, *size)).shape == (2, 3, *size)
    encoders = model.get_encoders()
    if backbone == "segresnet":  # a view sharing the SegResNet's own encoder modules
        assert encoders["encoder"].convInit is model.network.convInit
        assert encoders["encoder"](torch.randn(1, 4, *size)).shape == (1, encoders["encoder"].out_features)
    else:
        assert encoders == {}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_joint_and_late_fusion_shapes(spatial_dims):
    if spatial_dims == 2:
        x, names, extra = mammo_batch(), VIEWS, {"breasts": "laterality"}
    else:
        x, names, extra = torch.randn(2, 4, 16, 16, 16), SEQS, {}
    joint = JointFusion(names, spatial_dims, num_classes=3, share="all", **TINY, **extra).eval()
    late = LateFusion(names, spatial_dims, num_classes=3, **TINY, **extra).eval()
    out_joint, out_late = joint(x), late(x)
    for out in (out_joint, out_late):
        assert out["logits"].shape == (2, 3)
        assert out["view_logits"].shape == (2, 4, 3)
        assert out["presence"].shape == (2, 4)
        if spatial_dims == 2:
            assert out["breast_logits"].shape == (2, 2, 3)
            assert out["breast_presence"].shape == (2, 2)
    assert out_late["probs"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------------- weight sharing
def test_weight_sharing_groups_share_parameter_objects():
    projection = JointFusion(VIEWS, 2, share="projection", **TINY)
    assert list(projection.branches) == ["CC", "MLO"]
    assert projection.encoder_for("L-CC") is projection.encoder_for("R-CC")
    assert projection.encoder_for("L-CC") is not projection.encoder_for("L-MLO")
    cc = dict(projection.encoder_for("L-CC").named_parameters())
    for name, param in projection.encoder_for("R-CC").named_parameters():
        assert param is cc[name]

    unshared = JointFusion(VIEWS, 2, share="none", **TINY)
    ids = [{id(p) for p in unshared.encoder_for(v).parameters()} for v in VIEWS]
    assert all(ids[i].isdisjoint(ids[j]) for i in range(4) for j in range(i + 1, 4))

    shared = JointFusion(VIEWS, 2, share="all", **TINY)
    assert len(shared.branches) == 1
    branch = count_parameters(shared.branches["all"])  # trunk + per-view head
    assert count_parameters(unshared) - count_parameters(shared) == 3 * branch


def test_shared_trunk_gradient_is_sum_of_view_contributions():
    shared = JointFusion(VIEWS, 2, num_classes=2, share="projection", **TINY).eval()
    unshared = JointFusion(VIEWS, 2, num_classes=2, share="none", **TINY).eval()
    # Same function: every per-view branch of `unshared` is a copy of its group's branch in `shared`.
    for view in VIEWS:
        unshared.branches[view].load_state_dict(shared.branches[view.split("-")[1]].state_dict())
    unshared.head.load_state_dict(shared.head.state_dict())
    x = mammo_batch()
    out_shared, out_unshared = shared(x), unshared(x)
    assert_outputs_equal(out_shared, out_unshared)
    (out_shared["logits"].sum() + out_shared["view_logits"].pow(2).sum()).backward()
    (out_unshared["logits"].sum() + out_unshared["view_logits"].pow(2).sum()).backward()
    name, param = next(iter(shared.branches["CC"].encoder.named_parameters()))
    left = dict(unshared.branches["L-CC"].encoder.named_parameters())[name].grad
    right = dict(unshared.branches["R-CC"].encoder.named_parameters())[name].grad
    assert param.grad is not None and left.abs().sum() > 0 and right.abs().sum() > 0
    assert torch.allclose(param.grad, left + right, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(param.grad, left, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ missing views
@pytest.mark.parametrize(
    "cls,options",
    [
        (JointFusion, {"share": "projection", "breasts": "laterality"}),
        (JointFusion, {"share": "all", "pooling": "attention"}),
        (LateFusion, {"share": "none", "breasts": "laterality"}),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_missing_views_do_not_influence_outputs(cls, options, train):
    model = cls(VIEWS, 2, num_classes=2, **TINY, **options).train(train)
    presence = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0]])
    x = mammo_batch()
    changed = {k: v.clone() for k, v in x.items()}
    changed["L-MLO"][0] = torch.randn(1, 32, 32) * 100  # missing in sample 0
    changed["R-CC"][1] = 55.0  # missing in sample 1
    state = copy.deepcopy(model.state_dict())  # batch-norm running stats change in train mode
    first = model(x, presence)
    model.load_state_dict(state)
    second = model(changed, presence)
    assert_outputs_equal(first, second)
    assert torch.equal(first["presence"], presence.float())
    assert (first["view_logits"][0, 2] == 0).all() and (first["view_logits"][1, 1] == 0).all()
    # A present view's pixels do matter (the test could fail).
    changed["L-CC"][0] = 7.0
    model.load_state_dict(state)
    assert not torch.allclose(model(changed, presence)["logits"][0], first["logits"][0])


def test_dict_without_a_view_equals_presence_zero():
    model = JointFusion(VIEWS, 2, share="projection", **TINY).eval()
    x = mammo_batch()
    presence = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    partial = {k: v for k, v in x.items() if k != "R-MLO"}
    assert_outputs_equal(model(x, presence), model(partial))


def test_breast_outputs_use_only_their_own_views_and_missing_cases():
    model = JointFusion(VIEWS, 2, share="projection", breasts="laterality", **TINY).eval()
    x = mammo_batch()
    out = model(x)
    changed = dict(x, **{"R-CC": torch.randn(2, 1, 32, 32), "R-MLO": torch.randn(2, 1, 32, 32)})
    out_changed = model(changed)
    assert model.breast_names == ["L", "R"]
    assert torch.allclose(out["breast_logits"][:, 0], out_changed["breast_logits"][:, 0])
    assert not torch.allclose(out["breast_logits"][:, 1], out_changed["breast_logits"][:, 1])
    # No right breast in sample 0, no view at all in sample 1.
    presence = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]])
    out = model(x, presence)
    assert torch.equal(out["breast_presence"], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert (out["breast_logits"][0, 1] == 0).all() and torch.isfinite(out["breast_logits"]).all()
    assert torch.isfinite(out["logits"][0]).all() and torch.isnan(out["logits"][1]).all()


# -------------------------------------------------------------------------------------------------------- late fusion
def test_late_fusion_averages_over_present_views_only():
    weights = [1.0, 2.0, 0.5, 1.5]
    model = LateFusion(VIEWS, 2, num_classes=2, share="all", view_weights=weights, **TINY).eval()
    presence = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]])
    out = model(mammo_batch(), presence)
    probs = torch.sigmoid(out["view_logits"])
    w = presence.float() * torch.tensor(weights)
    manual = (probs * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)
    assert torch.allclose(out["probs"], manual, atol=1e-6)
    assert torch.allclose(out["logits"], torch.logit(manual, eps=1e-6), atol=1e-4)
    # Sample 1 has one view: the fused probability is that view's.
    assert torch.allclose(out["probs"][1], probs[1, 1], atol=1e-6)


def test_masked_mean_ensemble_matches_monai_mean_ensemble_when_all_present():
    predictions = torch.rand(3, 4, 2)  # (B, V, K)
    weights = torch.tensor([1.0, 3.0, 0.5, 2.0])
    everyone = torch.ones(3, 4)
    for w in (None, weights):
        monai_mean = torch.stack([MeanEnsemble(w)(predictions[b].unsqueeze(-1)).squeeze(-1) for b in range(3)])
        assert torch.allclose(masked_mean_ensemble(predictions, everyone, w), monai_mean, atol=1e-6)
    presence = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    poisoned = predictions.clone()
    poisoned[0, 1] = float("nan")  # a missing member's value is never read
    mean = masked_mean_ensemble(poisoned, presence)
    assert torch.allclose(mean[0], predictions[0, [0, 3]].mean(0))
    assert torch.isnan(mean[1]).all()


def test_late_fusion_tta_is_mean_over_flips_in_eval_only():
    plain = LateFusion(VIEWS, 2, share="all", **TINY).eval()
    tta = LateFusion(VIEWS, 2, share="all", tta_flips=[[1]], **TINY).eval()
    tta.load_state_dict(plain.state_dict())
    x = mammo_batch()
    flipped = {k: torch.flip(v, [3]) for k, v in x.items()}
    expected = (plain(x)["view_probs"] + plain(flipped)["view_probs"]) / 2
    assert torch.allclose(tta(x)["view_probs"], expected, atol=1e-6)
    assert not torch.allclose(plain(x)["view_probs"], expected, atol=1e-6)
    tta.train()
    plain.train()
    assert torch.allclose(tta(x)["view_probs"], plain(x)["view_probs"], atol=1e-6)


def test_single_view_baseline_ignores_other_views():
    model = build_fusion_model("single_view", VIEWS, 2, views_used=["L-CC", "R-CC"], **TINY).eval()
    assert list(model.branches) == ["all"]
    x = mammo_batch()
    out = model(x)
    changed = dict(x, **{"L-MLO": torch.randn(2, 1, 32, 32)})
    assert torch.allclose(out["probs"], model(changed)["probs"])
    assert torch.equal(out["presence"], torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2))


# ---------------------------------------------------------------------------------------------- modality dropout
def test_modality_dropout_never_drops_every_modality():
    generator = torch.Generator().manual_seed(1)
    presence = (torch.rand(4000, 4, generator=generator) > 0.3).float()
    presence[:5] = 0.0  # samples with nothing to keep
    keep = draw_keep_mask(presence, 0.7, torch.Generator().manual_seed(2))
    assert ((keep <= presence).all()) and keep.dtype == presence.dtype
    has_any = presence.sum(1) > 0
    assert (keep.sum(1)[has_any] >= 1).all()
    assert (keep[~has_any] == 0).all()
    dropped = 1 - keep[presence > 0].mean()
    assert 0.5 < dropped < 0.75  # something is dropped, less than p*present because one is always kept
    again = draw_keep_mask(presence, 0.7, torch.Generator().manual_seed(2))
    assert torch.equal(keep, again)


def test_modality_dropout_off_in_eval_and_respects_presence():
    layer = ModalityDropout(p=0.9, seed=0)
    views = torch.rand(64, 4, 1, 8, 8) + 1
    presence = torch.ones(64, 4)
    presence[:, 2] = 0
    out, keep = layer(views, presence)
    assert (out[:, 2] == 0).all() and (keep[:, 2] == 0).all()
    assert ((out != 0).flatten(2).all(2).float() == keep).all()  # kept views untouched, dropped ones zero
    assert (keep.sum(1) >= 1).all() and keep.sum() < presence.sum()
    layer.eval()
    out, keep = layer(views, presence)
    assert torch.equal(keep, presence) and torch.equal(out, views * presence[..., None, None, None])
    rescale = ModalityDropout(p=0.9, scaling="rescale", seed=0)
    out, keep = rescale(views, presence)
    factor = presence.sum(1) / keep.sum(1)
    assert torch.allclose(out, views * (keep * factor[:, None])[..., None, None, None])


def test_early_fusion_zeroes_missing_modalities():
    model = EarlyFusion(SEQS, 2, num_classes=2, modality_dropout=0.5, dropout_seed=3, **TINY).eval()
    x = torch.randn(2, 4, 32, 32)
    presence = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]])
    changed = x.clone()
    changed[0, 1] = 100.0
    changed[1, 3] = -4.0
    assert torch.allclose(model(x, presence), model(changed, presence))
    model.train()
    seen = []
    for _ in range(6):  # dropout varies the output in training, from a seeded generator
        seen.append(model(x, presence).detach())
    assert any(not torch.allclose(seen[0], s) for s in seen[1:])


def test_joint_view_dropout_drops_views_in_training_only():
    model = JointFusion(VIEWS, 2, view_dropout=0.6, dropout_seed=0, **TINY)
    x = mammo_batch(8, 16)
    presence = torch.ones(8, 4)
    presence[:, 3] = 0
    used = model.train()(x, presence)["presence"]
    assert (used <= presence).all() and (used.sum(1) >= 1).all() and used.sum() < presence.sum()
    assert torch.equal(model.eval()(x, presence)["presence"], presence)


# ------------------------------------------------------------------------------------------------ config, profile
@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "medssl.networks.EarlyFusion", "view_names": SEQS, "spatial_dims": 2, "modality_dropout": 0.25},
        {
            "_target_": "medssl.networks.JointFusion",
            "view_names": VIEWS,
            "spatial_dims": 2,
            "share": {"L-CC": "CC", "R-CC": "CC", "L-MLO": "MLO", "R-MLO": "MLO"},
            "breasts": {"L": ["L-CC", "L-MLO"], "R": ["R-CC", "R-MLO"]},
            "head_hidden": [16],
        },
        {"_target_": "medssl.networks.LateFusion", "view_names": VIEWS, "spatial_dims": 2, "tta_flips": [[1]]},
        {"_target_": "medssl.networks.build_fusion_model", "strategy": "joint", "view_names": VIEWS, "spatial_dims": 2},
    ],
)
def test_builds_from_bundle_config(config):
    config = dict(config, num_classes=2, **copy.deepcopy(TINY))
    model = ConfigParser({"network": config}).get_parsed_content("network")
    x = torch.randn(2, 4, 32, 32)
    out = model.eval()(x)
    logits = out if isinstance(out, torch.Tensor) else out["logits"]
    assert logits.shape == (2, 2)
    if "share" in config:
        assert model.encoder_for("L-CC") is model.encoder_for("R-CC")


def test_parameter_count_matches_manual_sum_and_flops_are_counted():
    model = JointFusion(VIEWS, 2, share="projection", **TINY)
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert count_parameters(model) == sum(unique.values())
    model.encoder_for("L-CC").requires_grad_(False)
    frozen = sum(p.numel() for p in model.encoder_for("L-CC").parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen
    linear = torch.nn.Linear(10, 5)
    assert count_flops(linear, torch.randn(2, 10)) == 2 * 2 * 10 * 5
    x = mammo_batch()
    flops = count_flops(model.eval(), x)
    assert flops > 0
    # Sharing changes parameters, not compute; missing views are not computed.
    unshared = JointFusion(VIEWS, 2, share="none", **TINY).eval()
    assert count_flops(unshared, x) == flops
    assert count_flops(model, x, torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])) < flops
    assert count_flops(linear, torch.randn(2, 10), include_backward=True) > 200


def test_equal_budget_builder_respects_the_budget():
    budget = 150_000
    counts = {}
    for strategy in ("early", "joint", "single_view"):  # late fits exactly as single_view (same class)
        model = build_fusion_model(strategy, VIEWS, 2, param_budget=budget, output="dict", **TINY)
        counts[strategy] = count_parameters(model)
        assert counts[strategy] <= budget
        wider = build_fusion_model(strategy, VIEWS, 2, width=model.fusion_width * 1.25, **TINY)
        assert count_parameters(wider) > budget  # the width found is close to the largest that fits
        assert "logits" in model.eval()(mammo_batch(1))
    with pytest.raises(FusionConfigError, match="budget"):
        build_fusion_model("joint", VIEWS, 2, param_budget=100, **TINY)


# ---------------------------------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize(
    "build",
    [
        lambda: EarlyFusion(VIEWS, 2, num_classes=2, modality_dropout=0.3, **TINY),
        lambda: EarlyFusion(VIEWS, 2, num_classes=2, task="segmentation", backbone="segresnet"),
        lambda: JointFusion(VIEWS, 2, share="projection", breasts="laterality", **TINY),
        lambda: JointFusion(VIEWS, 2, share="all", pooling="attention", **TINY),
        lambda: LateFusion(VIEWS, 2, tta_flips=[[0], [1]], breasts="laterality", **TINY),
        lambda: build_fusion_model("late", VIEWS, 2, output="logits", **TINY),
    ],
)
def test_torchscript_matches_eager(build):
    model = build().eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = mammo_batch()
    presence = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])
    for inputs in ((x, presence), (torch.stack([x[v] for v in VIEWS], 1), presence), (torch.cat(list(x.values()), 1),)):
        eager = model(*inputs)
        with torch.jit.optimized_execution(False):  # the interpreter without profiling runs: same graph, faster test
            script = loaded(*inputs)
        if isinstance(eager, torch.Tensor):
            assert torch.allclose(eager, script, atol=1e-5)
        else:
            assert_outputs_equal(eager, script)


def test_early_fusion_traces():
    model = EarlyFusion(SEQS, 3, num_classes=2, **TINY).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    traced = torch.jit.trace(model, x)
    other = torch.randn(3, 4, 16, 16, 16)
    with torch.jit.optimized_execution(False):
        assert torch.allclose(traced(other), model(other), atol=1e-5)


# ------------------------------------------------------------------------------------------------ encoders, errors
def test_load_encoder_state_checks_keys_and_shapes(tmp_path):
    source = build_encoder("resnet10", 2, 1, widen_factor=0.125)
    target = JointFusion(VIEWS, 2, share="projection", **TINY)
    path = tmp_path / "encoder.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target.load_encoder_state(path, key="model", strip_prefix="module.")
    for group in ("CC", "MLO"):
        for key, value in target.get_encoders()[group].state_dict().items():
            assert torch.equal(value, source.state_dict()[key])
    with_classifier = dict(source.state_dict(), **{"fc.weight": torch.zeros(3, 64), "fc.bias": torch.zeros(3)})
    with pytest.raises(EncoderStateError, match="unexpected keys: fc.bias, fc.weight"):
        load_encoder_state(target.encoder_for("L-CC"), with_classifier)
    load_encoder_state(target.encoder_for("L-CC"), with_classifier, ignore_prefixes=("fc.",))
    wrong = build_encoder("resnet10", 2, 2, widen_factor=0.125).state_dict()  # two input channels
    with pytest.raises(EncoderStateError, match=r"shape mismatch.*conv1\.weight"):
        load_encoder_state(target.encoder_for("L-CC"), wrong, strict=False)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4")}
    with pytest.raises(EncoderStateError, match="missing"):
        load_encoder_state(target.encoder_for("L-CC"), partial)
    missing, unexpected = load_encoder_state(target.encoder_for("L-CC"), partial, strict=False)
    assert missing and all(k.startswith("layer4") for k in missing) and unexpected == []
    with pytest.raises(EncoderStateError, match="cannot read"):
        load_encoder_state(target.encoder_for("L-CC"), tmp_path / "absent.pt")


def test_bad_inputs_and_configs_raise_medssl_errors():
    model = JointFusion(VIEWS, 2, **TINY)
    with pytest.raises(FusionInputError, match="unknown views"):
        model({"LCC": torch.randn(1, 1, 32, 32)})
    with pytest.raises(FusionInputError, match="4 views x 1 channels"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(FusionInputError, match="presence"):
        model(torch.randn(2, 4, 32, 32), torch.ones(2, 3))
    with pytest.raises(FusionConfigError, match="projection"):
        JointFusion(SEQS, 3, share="projection", **TINY)
    with pytest.raises(BackboneConfigError, match="never downloaded"):
        EarlyFusion(SEQS, 2, backbone="resnet18", backbone_kwargs={"pretrained": True})
    with pytest.raises(BackboneConfigError, match="segmentation network"):
        JointFusion(VIEWS, 2, backbone="unet")
    with pytest.raises(MedsslError, match="no channels"):
        build_encoder("resnet10", 2, 1, width=0.001)
