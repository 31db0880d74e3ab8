"""ConVIRT loss (function and module) against a straightforward per-sample reference."""

from __future__ import annotations

import json
import math
import pydoc

import pytest
import torch

from medssl.losses import ConVIRTLoss, DistributedLossError, LossInputError, convirt_loss, gather_with_grad


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_convirt(image, text, temperature, lambda_weight):
    """Per-sample sums written out as in the ConVIRT paper (float64, small B: plain exp is fine here)."""
    batch = image.shape[0]
    total = image.new_zeros(())
    for i in range(batch):
        sim_row = [
            torch.dot(image[i], text[k]) / (image[i].norm() * text[k].norm()) / temperature for k in range(batch)
        ]
        sim_col = [
            torch.dot(image[k], text[i]) / (image[k].norm() * text[i].norm()) / temperature for k in range(batch)
        ]
        v_to_u = -torch.log(torch.exp(sim_row[i]) / sum(torch.exp(s) for s in sim_row))
        u_to_v = -torch.log(torch.exp(sim_col[i]) / sum(torch.exp(s) for s in sim_col))
        total = total + lambda_weight * v_to_u + (1 - lambda_weight) * u_to_v
    return total / batch


def embeddings(batch=6, features=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, features, generator=gen, dtype=torch.float64, requires_grad=True)
    text = torch.randn(batch, features, generator=gen, dtype=torch.float64, requires_grad=True)
    return image, text


@pytest.mark.parametrize("temperature,lambda_weight", [(0.1, 0.75), (0.5, 0.0), (0.07, 1.0), (1.0, 0.3)])
def test_convirt_matches_reference(temperature, lambda_weight):
    image, text = embeddings()
    expected = reference_convirt(image, text, temperature, lambda_weight)
    expected_grads = torch.autograd.grad(expected, (image, text))
    actual = convirt_loss(image, text, temperature, lambda_weight)
    actual_grads = torch.autograd.grad(actual, (image, text))
    assert torch.allclose(actual, expected, rtol=1e-12)
    for a, e in zip(actual_grads, expected_grads):
        assert torch.allclose(a, e, rtol=1e-10, atol=1e-12)


def test_convirt_lambda_weights_the_directions():
    image, text = embeddings(seed=1)
    image_to_text = convirt_loss(image, text, 0.1, 1.0)
    text_to_image = convirt_loss(image, text, 0.1, 0.0)
    assert not torch.allclose(image_to_text, text_to_image)  # the two directions differ on random data
    assert torch.allclose(convirt_loss(image, text, 0.1, 0.75), 0.75 * image_to_text + 0.25 * text_to_image)
    assert torch.allclose(convirt_loss(text, image, 0.1, 0.0), image_to_text)  # swapping inputs swaps directions


def test_convirt_batch_of_one_and_scale_invariance():
    image, text = embeddings(batch=1, seed=2)
    assert convirt_loss(image, text) == 0.0
    image, text = embeddings(seed=3)
    assert torch.allclose(convirt_loss(image * 7.0, text * 0.01), convirt_loss(image, text))  # cosine similarities


def test_convirt_is_finite_at_low_temperature():
    image, text = embeddings(batch=32, features=8, seed=4)
    image32, text32 = image.detach().float(), text.detach().float()
    value = convirt_loss(image32, text32, temperature=0.001)
    assert torch.isfinite(value)
    assert torch.allclose(value.double(), reference_logsumexp_convirt(image, text, 0.001, 0.75), rtol=1e-4)


def reference_logsumexp_convirt(image, text, temperature, lambda_weight):
    image, text = image.detach().double(), text.detach().double()
    sims = (image / image.norm(dim=1, keepdim=True)) @ (text / text.norm(dim=1, keepdim=True)).t() / temperature
    diag = sims.diagonal()
    v_to_u = torch.logsumexp(sims, dim=1) - diag
    u_to_v = torch.logsumexp(sims, dim=0) - diag
    return (lambda_weight * v_to_u + (1 - lambda_weight) * u_to_v).mean()


def test_convirt_module_equals_function_and_learns_temperature():
    image, text = embeddings(seed=5)
    module = ConVIRTLoss(temperature=0.2, lambda_weight=0.6, output_dict=True)
    out = module(image, text)
    assert torch.allclose(out["loss"], convirt_loss(image, text, 0.2, 0.6))
    assert torch.allclose(out["image_to_text"], convirt_loss(image, text, 0.2, 1.0))

    learnable = ConVIRTLoss(temperature=0.2, lambda_weight=0.6, learnable_temperature=True).double()
    assert math.isclose(float(learnable.logit_scale.detach().exp()), 5.0, rel_tol=1e-6)  # created in float32
    value = learnable(image, text)
    assert torch.allclose(value, convirt_loss(image, text, 0.2, 0.6))
    value.backward()
    assert learnable.logit_scale.grad is not None and learnable.logit_scale.grad != 0
    # the clamp: a scale pushed beyond max_logit_scale is used as max_logit_scale
    with torch.no_grad():
        learnable.logit_scale.fill_(10.0)
    assert torch.allclose(learnable(image, text), convirt_loss(image, text, 0.01, 0.6))


def test_convirt_module_from_json_config_and_labels_cache():
    config = json.loads('{"_target_": "medssl.losses.ConVIRTLoss", "temperature": 0.1, "lambda_weight": 0.75}')
    module = pydoc.locate(config.pop("_target_"))(**config)
    image, text = embeddings(seed=6)
    assert torch.allclose(module(image, text), convirt_loss(image, text))
    first = module.labels(6, 0, image.device)
    assert module.labels(6, 0, image.device) is first  # cached per device
    assert module.labels(4, 0, image.device).tolist() == [0, 1, 2, 3]


def test_convirt_rejects_bad_inputs():
    image, text = embeddings()
    with pytest.raises(LossInputError, match="same shape"):
        convirt_loss(image, text[:4])
    with pytest.raises(LossInputError, match=r"\(B, F\)"):
        convirt_loss(image[0], text[0])
    with pytest.raises(LossInputError, match="lambda_weight"):
        convirt_loss(image, text, lambda_weight=1.5)
    with pytest.raises(LossInputError, match="temperature"):
        convirt_loss(image, text, temperature=0.0)
    with pytest.raises(LossInputError, match="max_logit_scale"):
        ConVIRTLoss(temperature=0.001, learnable_temperature=True)


def test_single_process_gather_is_identity_and_world_size_is_checked():
    image, _ = embeddings()
    assert gather_with_grad(image) is image
    module = ConVIRTLoss(world_size=2)
    with pytest.raises(DistributedLossError, match="not initialised"):
        module(*embeddings())
