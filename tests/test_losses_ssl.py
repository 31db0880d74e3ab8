"""Image-only SSL losses: NT-Xent (against naive and MONAI references), SimSiam, BYOL, MAE."""

from __future__ import annotations

import json
import pydoc

import pytest
import torch
import torch.nn.functional as F

from medssl.losses import (
    BYOLLoss,
    LossInputError,
    MaskedPatchLoss,
    NTXentLoss,
    SimSiamLoss,
    byol_loss,
    masked_patch_loss,
    nt_xent_loss,
    simsiam_loss,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def views(batch=8, features=6, seed=0, dtype=torch.float64, count=2):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, features, generator=gen, dtype=dtype, requires_grad=True) for _ in range(count)]


def naive_nt_xent(z1, z2, temperature):
    """The textbook formula with ``exp`` (overflows at low temperature)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z.shape[0]
    total = z.new_zeros(())
    for k in range(n):
        positive = (k + n // 2) % n
        numerator = torch.exp(z[k] @ z[positive] / temperature)
        denominator = sum(torch.exp(z[k] @ z[m] / temperature) for m in range(n) if m != k)
        total = total - torch.log(numerator / denominator)
    return total / n


def logsumexp_nt_xent(z1, z2, temperature):
    """Float64 log-sum-exp reference."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z.shape[0]
    sims = z @ z.t() / temperature
    sims = sims.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    positives = sims[torch.arange(n), (torch.arange(n) + n // 2) % n]
    return (torch.logsumexp(sims, dim=1) - positives).mean()


# ---------------------------------------------------------------------------------------------------------------
# NT-Xent
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_naive_reference(temperature):
    z1, z2 = views()
    expected = naive_nt_xent(z1, z2, temperature)
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    actual = nt_xent_loss(z1, z2, temperature)
    actual_grads = torch.autograd.grad(actual, (z1, z2))
    assert torch.allclose(actual, expected, rtol=1e-12)
    for a, e in zip(actual_grads, expected_grads):
        assert torch.allclose(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # importing monai costs ~12 s of CPU here
def test_nt_xent_matches_monai_contrastive_loss():
    from monai.losses import ContrastiveLoss

    z1, z2 = views(seed=1)
    assert torch.allclose(nt_xent_loss(z1, z2, 0.5), ContrastiveLoss(temperature=0.5)(z1, z2), rtol=1e-12)


def test_nt_xent_stable_at_temperature_0001():
    z1, z2 = views(batch=16, features=32, seed=2, dtype=torch.float32)
    # the naive formula overflows: exp(1/0.001) is inf, inf/inf is NaN
    assert not torch.isfinite(naive_nt_xent(z1.detach(), z2.detach(), 0.001))
    value = nt_xent_loss(z1, z2, 0.001)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    reference = logsumexp_nt_xent(z1.detach(), z2.detach(), 0.001)
    assert value > 1.0  # random views: the loss is large at this temperature, not a trivial 0
    assert torch.allclose(value.double(), reference, rtol=1e-4)


@pytest.mark.slow  # importing monai costs ~12 s of CPU here
def test_monai_contrastive_loss_is_nan_at_temperature_0001_where_ours_is_finite():
    from monai.losses import ContrastiveLoss

    z1, z2 = views(batch=16, features=32, seed=2, dtype=torch.float32)
    assert torch.isnan(ContrastiveLoss(temperature=0.001)(z1, z2))
    assert torch.isfinite(nt_xent_loss(z1, z2, 0.001))


def test_nt_xent_module_and_learnable_temperature():
    z1, z2 = views(seed=3)
    module = pydoc.locate("medssl.losses.NTXentLoss")(**json.loads('{"temperature": 0.2}'))
    assert torch.allclose(module(z1, z2), nt_xent_loss(z1, z2, 0.2))
    learnable = NTXentLoss(temperature=0.2, learnable_temperature=True).double()
    value = learnable(z1, z2)
    assert torch.allclose(value, nt_xent_loss(z1, z2, 0.2))
    value.backward()
    assert learnable.logit_scale.grad != 0


def test_nt_xent_batch_of_one_and_bad_inputs():
    z1, z2 = views(batch=1, seed=4)
    # one anchor per view, its only candidate is its positive: loss 0
    assert torch.allclose(nt_xent_loss(z1, z2), torch.zeros((), dtype=torch.float64))
    with pytest.raises(LossInputError, match="same shape"):
        nt_xent_loss(views(batch=3)[0], views(batch=4)[0])
    with pytest.raises(LossInputError, match="temperature"):
        nt_xent_loss(z1, z2, temperature=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# SimSiam and BYOL
# ---------------------------------------------------------------------------------------------------------------


def test_simsiam_value_and_stop_gradient():
    p1, p2, z1, z2 = views(seed=5, count=4)
    value = simsiam_loss(p1, p2, z1, z2)
    expected = -0.5 * F.cosine_similarity(p1, z2.detach()).mean() - 0.5 * F.cosine_similarity(p2, z1.detach()).mean()
    assert torch.allclose(value, expected, rtol=1e-12)
    for g, e in zip(torch.autograd.grad(value, (p1, p2), retain_graph=True), torch.autograd.grad(expected, (p1, p2))):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-14)
    value.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient: nothing reaches the projections
    assert p1.grad is not None and torch.count_nonzero(p1.grad) > 0
    # through a shared encoder: the only path to the parameters is via the predictions
    encoder = torch.nn.Linear(6, 6).double()
    x1, x2 = views(seed=6)
    z1, z2 = encoder(x1), encoder(x2)
    SimSiamLoss()(z1 * 2, z2 * 2, z1, z2).backward()  # "predictions" = 2 z
    with_stop = encoder.weight.grad.clone()
    encoder.zero_grad()
    z1, z2 = encoder(x1), encoder(x2)
    (-0.5 * F.cosine_similarity(z1 * 2, z2).mean() - 0.5 * F.cosine_similarity(z2 * 2, z1).mean()).backward()
    assert not torch.allclose(with_stop, encoder.weight.grad)  # without stop-gradient the gradient differs


def test_byol_value_range_and_stop_gradient():
    p1, p2, z1, z2 = views(seed=7, count=4)
    value = BYOLLoss()(p1, p2, z1, z2)
    expected = (
        (F.normalize(p1, dim=1) - F.normalize(z2.detach(), dim=1)).square().sum(1)
        + (F.normalize(p2, dim=1) - F.normalize(z1.detach(), dim=1)).square().sum(1)
    ).mean()
    assert torch.allclose(value, expected, rtol=1e-12)
    for g, e in zip(torch.autograd.grad(value, (p1, p2), retain_graph=True), torch.autograd.grad(expected, (p1, p2))):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-14)
    value.backward()
    assert z1.grad is None and z2.grad is None
    assert torch.count_nonzero(p2.grad) > 0
    a, b = z1.detach(), z2.detach()
    zero, eight = torch.zeros((), dtype=torch.float64), torch.full((), 8.0, dtype=torch.float64)
    assert torch.allclose(byol_loss(a, b, b * 3, a * 3), zero, atol=1e-12)  # predictions along their targets
    assert torch.allclose(byol_loss(a, b, -b, -a), eight)  # opposite directions: the maximum, 2 x 4


# ---------------------------------------------------------------------------------------------------------------
# MAE
# ---------------------------------------------------------------------------------------------------------------


def patches(seed=8):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    return pred, target, mask


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_masked_patch_loss_value(norm_pix_loss):
    pred, target, mask = patches()
    value = masked_patch_loss(pred, target, mask, norm_pix_loss=norm_pix_loss)
    terms = []
    for b in range(2):
        for p in range(5):
            if mask[b, p]:
                t = target[b, p]
                if norm_pix_loss:
                    t = (t - t.mean()) / torch.sqrt(t.var(unbiased=True) + 1e-6)
                terms.append(((pred[b, p] - t) ** 2).mean())
    expected = torch.stack(terms).mean()
    assert torch.allclose(value, expected, rtol=1e-12)
    grad, expected_grad = torch.autograd.grad(value, pred)[0], torch.autograd.grad(expected, pred)[0]
    assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_masked_patch_loss_ignores_visible_patches():
    pred, target, mask = patches()
    value = masked_patch_loss(pred, target, mask)
    changed = pred.detach().clone()
    changed[~mask] += 100.0  # visible patches' predictions change
    assert torch.equal(masked_patch_loss(changed, target, mask), value.detach())
    changed[mask] += 0.1  # a masked one changes: the loss changes
    assert not torch.equal(masked_patch_loss(changed, target, mask), value.detach())
    value.backward()
    assert torch.count_nonzero(pred.grad[~mask]) == 0 and torch.count_nonzero(pred.grad[mask]) > 0
    assert torch.allclose(MaskedPatchLoss()(pred, target, mask.float()), value)


def test_masked_patch_loss_rejects_bad_inputs():
    pred, target, mask = patches()
    with pytest.raises(LossInputError, match="no patch"):
        masked_patch_loss(pred, target, torch.zeros_like(mask))
    with pytest.raises(LossInputError, match=r"\(B, P\)"):
        masked_patch_loss(pred, target, mask[:, :3])
    with pytest.raises(LossInputError, match=r"\(B, P, K\)"):
        masked_patch_loss(pred, target[:, :, :2], mask)
