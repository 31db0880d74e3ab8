"""GLoRIA global and local losses against a per-caption loop that mirrors the original implementation."""

from __future__ import annotations

import json
import pydoc

import pytest
import torch
import torch.nn.functional as F

from medssl.exceptions import MedsslError
from medssl.losses import (
    GloriaLoss,
    LossInputError,
    gloria_attention_maps,
    gloria_global_loss,
    gloria_local_loss,
    gloria_local_similarity,
)
from medssl.losses.gloria import _LocalSimilarity, _prepare_words


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-offs that dominate on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# References: straightforward loops with the original's semantics (variable caption lengths, no padding at all)
# ---------------------------------------------------------------------------------------------------------------


def reference_local_similarities(regions, words, word_mask, temp1=4.0, temp2=5.0):
    """similarities[j, i] of GLoRIA's ``local_loss``: loop over captions, each with only its real words."""
    batch_images, dim = regions.shape[:2]
    context = regions.reshape(batch_images, dim, -1)  # (B, D, N)
    columns = []
    for i in range(words.shape[0]):
        word = words[i][:, word_mask[i]]  # (D, L_i): the caption's real words only
        n_words = word.shape[1]
        word = word.unsqueeze(0).repeat(batch_images, 1, 1)  # (B, D, L_i) as in the original
        attn = torch.bmm(context.transpose(1, 2), word)  # (B, N, L_i)
        attn = torch.softmax(attn, dim=-1)  # over words, per region
        attn = torch.softmax(attn.transpose(1, 2) * temp1, dim=-1)  # over regions, per word: (B, L_i, N)
        weighted = torch.bmm(context, attn.transpose(1, 2))  # (B, D, L_i)
        dot = (word * weighted).sum(dim=1)
        cosine = dot / (word.norm(dim=1) * weighted.norm(dim=1)).clamp(min=1e-8)  # (B, L_i)
        assert cosine.shape == (batch_images, n_words)
        columns.append(torch.log(torch.exp(cosine * temp2).sum(dim=1, keepdim=True)))
    return torch.cat(columns, dim=1)


def reference_local_loss(regions, words, word_mask, temp1=4.0, temp2=5.0, temp3=10.0):
    sims = reference_local_similarities(regions, words, word_mask, temp1, temp2) * temp3
    labels = torch.arange(sims.shape[0])
    return F.cross_entropy(sims, labels), F.cross_entropy(sims.t(), labels)


def reference_global_loss(image_emb, text_emb, temperature):
    norms = image_emb.norm(dim=1, keepdim=True) * text_emb.norm(dim=1, keepdim=True).t()
    scores = image_emb @ text_emb.t() / norms.clamp(min=1e-8) / temperature
    labels = torch.arange(image_emb.shape[0])
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def make_inputs(batch=5, dim=8, grid=(3, 4), max_words=6, lengths=None, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    regions = torch.randn(batch, dim, *grid, generator=gen, dtype=dtype)
    words = torch.randn(batch, dim, max_words, generator=gen, dtype=dtype)
    if lengths is None:
        lengths = torch.randint(1, max_words + 1, (batch,), generator=gen)
    mask = torch.arange(max_words) < torch.as_tensor(lengths).unsqueeze(1)
    return regions.requires_grad_(), words.requires_grad_(), mask


def value_and_grads(fn, regions, words):
    image_to_text, text_to_image = fn(regions, words)
    # different weights so that an error in either direction, or a swap of the two, shows up
    grads = torch.autograd.grad(image_to_text + 2.0 * text_to_image, (regions, words))
    return (image_to_text.detach(), text_to_image.detach()), grads


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=rtol, atol=atol), (a - e).abs().max()


# ---------------------------------------------------------------------------------------------------------------
# Local loss
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 5])
def test_local_loss_matches_reference_loop(chunk_size):
    regions, words, mask = make_inputs(lengths=[6, 2, 4, 1, 5])
    expected = value_and_grads(lambda r, w: reference_local_loss(r, w, mask), regions, words)
    actual = value_and_grads(lambda r, w: gloria_local_loss(r, w, mask, chunk_size=chunk_size), regions, words)
    assert_close(actual[0], expected[0])
    assert_close(actual[1], expected[1])


def test_local_loss_padding_contributes_nothing():
    regions, words, mask = make_inputs(lengths=[6, 3, 4, 2, 5], seed=1)
    # scattered padding (real words need not come first) and padding vectors of any value, even huge ones
    mask[0] = torch.tensor([True, False, True, True, False, True])
    garbage = words.detach().clone()
    garbage[~mask.unsqueeze(1).expand_as(garbage)] = 1e6
    garbage.requires_grad_()
    expected = value_and_grads(lambda r, w: reference_local_loss(r, w, mask), regions, words)
    actual = value_and_grads(lambda r, w: gloria_local_loss(r, w, mask, chunk_size=2), regions, garbage)
    assert_close(actual[0], expected[0])
    assert_close(actual[1], expected[1])
    grad_words = actual[1][1]
    assert torch.count_nonzero(grad_words.transpose(1, 2)[~mask]) == 0
    assert torch.count_nonzero(grad_words.transpose(1, 2)[mask]) > 0


def test_local_loss_chunked_equals_unchunked_float32():
    regions, words, mask = make_inputs(batch=7, dim=16, grid=(4, 4), max_words=9, seed=2, dtype=torch.float32)
    whole = value_and_grads(lambda r, w: gloria_local_loss(r, w, mask, chunk_size=7), regions, words)
    for chunk_size in (1, 3):
        tiled = value_and_grads(lambda r, w, c=chunk_size: gloria_local_loss(r, w, mask, chunk_size=c), regions, words)
        assert_close(tiled[0], whole[0], rtol=1e-5, atol=1e-6)
        assert_close(tiled[1], whole[1], rtol=1e-4, atol=1e-6)
    # and float32 agrees with the float64 reference
    reference = value_and_grads(
        lambda r, w: reference_local_loss(r, w, mask), regions.detach().double().requires_grad_(), words.double()
    )
    assert_close([v.double() for v in whole[0]], reference[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("temps", [(4.0, 5.0, 10.0), (1.0, 2.0, 3.0), (10.0, 0.5, 20.0)])
def test_local_loss_temperatures(temps):
    regions, words, mask = make_inputs(seed=3)
    expected = value_and_grads(lambda r, w: reference_local_loss(r, w, mask, *temps), regions, words)
    actual = value_and_grads(lambda r, w: gloria_local_loss(r, w, mask, *temps, chunk_size=2), regions, words)
    assert_close(actual[0], expected[0])
    assert_close(actual[1], expected[1])


def test_local_loss_batch_of_one():
    regions, words, mask = make_inputs(batch=1, lengths=[3], seed=4)
    expected = value_and_grads(lambda r, w: reference_local_loss(r, w, mask), regions, words)
    actual = value_and_grads(lambda r, w: gloria_local_loss(r, w, mask), regions, words)
    assert_close(actual[0], expected[0])
    assert_close(actual[1], expected[1])
    assert float(actual[0][0]) == 0.0  # one caption: cross-entropy over a single column


def test_local_loss_with_one_side_frozen():
    regions, words, mask = make_inputs(seed=12)
    expected = torch.autograd.grad(sum(reference_local_loss(regions, words, mask)), (regions, words))
    frozen_regions = regions.detach()
    (grad_words,) = torch.autograd.grad(sum(gloria_local_loss(frozen_regions, words, mask, chunk_size=2)), words)
    assert torch.allclose(grad_words, expected[1], rtol=1e-10, atol=1e-12)
    frozen_words = words.detach()
    (grad_regions,) = torch.autograd.grad(sum(gloria_local_loss(regions, frozen_words, mask, chunk_size=2)), regions)
    assert torch.allclose(grad_regions, expected[0], rtol=1e-10, atol=1e-12)


def test_local_similarity_rectangular_and_order():
    regions, words, mask = make_inputs(batch=4, seed=5)
    more_words = torch.randn(6, 8, 6, dtype=torch.float64)
    more_mask = torch.arange(6) < torch.tensor([[2], [6], [1], [4], [3], [5]])
    sims = gloria_local_similarity(regions, more_words, more_mask, chunk_size=2, image_chunk_size=3)
    expected = reference_local_similarities(regions, more_words, more_mask)
    assert sims.shape == (4, 6)
    assert torch.allclose(sims, expected, rtol=1e-10, atol=1e-12)


def test_local_similarity_accepts_flat_regions():
    regions, words, mask = make_inputs(seed=6)
    flat = gloria_local_similarity(regions.flatten(2), words, mask)
    assert torch.allclose(flat, gloria_local_similarity(regions, words, mask))


def test_local_similarity_gradcheck():
    regions, words, mask = make_inputs(batch=3, dim=3, grid=(2, 2), max_words=3, lengths=[3, 1, 2], seed=7)
    flat = regions.detach().flatten(2).requires_grad_()
    wt, sorted_mask, lengths, _ = _prepare_words(words.detach(), mask)
    wt.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, w: _LocalSimilarity.apply(v, w, sorted_mask, lengths, 4.0, 5.0, 2, 2), (flat, wt)
    )


def test_local_loss_rejects_bad_inputs():
    regions, words, mask = make_inputs()
    with pytest.raises(LossInputError, match=r"no real word in caption\(s\) \[1\]"):
        bad = mask.clone()
        bad[1] = False
        gloria_local_loss(regions, words, bad)
    with pytest.raises(MedsslError, match="feature size"):
        gloria_local_loss(regions, words[:, :4], mask)
    with pytest.raises(LossInputError, match="word_mask"):
        gloria_local_loss(regions, words, mask[:, :3])
    with pytest.raises(LossInputError, match="same batch size"):
        gloria_local_loss(regions[:3], words, mask)


def test_attention_maps_match_reference():
    regions, words, mask = make_inputs(seed=8)
    maps = gloria_attention_maps(regions, words, mask)
    assert maps.shape == (5, 6, 3, 4)
    for i in range(5):
        real = words[i][:, mask[i]]
        attn = torch.softmax(regions[i].flatten(1).t() @ real, dim=-1)  # (N, L_i)
        attn = torch.softmax(attn.t() * 4.0, dim=-1)
        assert torch.allclose(maps[i][mask[i]].flatten(1), attn)
        assert torch.count_nonzero(maps[i][~mask[i]]) == 0


# ---------------------------------------------------------------------------------------------------------------
# Global loss and the module
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_global_loss_matches_reference(temperature):
    gen = torch.Generator().manual_seed(9)
    image = torch.randn(6, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    text = torch.randn(6, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    expected = value_and_grads(lambda a, b: reference_global_loss(a, b, temperature), image, text)
    actual = value_and_grads(lambda a, b: gloria_global_loss(a, b, temperature), image, text)
    assert_close(actual[0], expected[0])
    assert_close(actual[1], expected[1])


def test_gloria_module_combines_terms_and_learns_temperatures():
    regions, words, mask = make_inputs(seed=10)
    gen = torch.Generator().manual_seed(10)
    image, text = torch.randn(5, 12, generator=gen, dtype=torch.float64), torch.randn(5, 12, dtype=torch.float64)
    loss = GloriaLoss(global_weight=0.5, local_weight=2.0, chunk_size=2, output_dict=True)
    out = loss(image, text, regions, words, mask)
    g = gloria_global_loss(image, text, 0.1)
    local = reference_local_loss(regions, words, mask)
    assert torch.allclose(out["global_image_to_text"], g[0]) and torch.allclose(out["global_text_to_image"], g[1])
    assert torch.allclose(out["local_image_to_text"], local[0]) and torch.allclose(out["local_text_to_image"], local[1])
    assert torch.allclose(out["loss"], 0.5 * (g[0] + g[1]) + 2.0 * (local[0] + local[1]))

    learnable = GloriaLoss(learnable_temperature=True, chunk_size=2).double()
    value = learnable(image, text, regions, words, mask)
    assert torch.allclose(value, g[0] + g[1] + local[0] + local[1])
    value.backward()
    assert learnable.logit_scale.grad is not None and learnable.local_logit_scale.grad is not None
    assert learnable.logit_scale.grad.abs() > 0 and learnable.local_logit_scale.grad.abs() > 0
    # a skipped term has no parameter (DDP would reject one that never gets a gradient)
    names = [name for name, _ in GloriaLoss(learnable_temperature=True, global_weight=0.0).named_parameters()]
    assert names == ["local_logit_scale"]


def build_from_config(text):
    """What a bundle config does with an entry: locate ``_target_`` and call it with the plain JSON arguments."""
    config = json.loads(text)
    return pydoc.locate(config.pop("_target_"))(**config)


def test_gloria_module_from_config():
    loss = build_from_config('{"_target_": "medssl.losses.GloriaLoss", "local_weight": 0.0, "temperature": 0.2}')
    assert isinstance(loss, GloriaLoss) and loss.temperature == 0.2
    regions, words, mask = make_inputs(seed=11)
    image, text = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    expected = sum(gloria_global_loss(image, text, 0.2))
    assert torch.allclose(loss(image, text, regions, words, mask), expected)
    with pytest.raises(LossInputError, match="max_logit_scale"):
        GloriaLoss(temperature=0.001, learnable_temperature=True)


@pytest.mark.slow  # importing monai.bundle costs ~10 s of CPU
def test_gloria_module_from_monai_config_parser():
    from monai.bundle import ConfigParser

    parser = ConfigParser({"loss": {"_target_": "medssl.losses.GloriaLoss", "chunk_size": 4, "temp3": 20.0}})
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, GloriaLoss) and loss.chunk_size == 4 and loss.temp3 == 20.0
