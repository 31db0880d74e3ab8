"""Image and text towers: region grids, word-piece aggregation, frozen layers, layer sums, export round trips."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.networks.backbones import build_encoder, load_encoder_state
from medssl.networks.encoders import (
    EncoderConfigError,
    ImageEncoder,
    TextEncoder,
    aggregate_word_pieces,
    build_tiny_text_model,
    export_image_encoder,
    export_text_encoder,
    load_pretrained_image_encoder,
    projection_head,
)
from medssl.transforms.text import Tokenize


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: intra-op threads only add contention on a shared 2-core runner
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    from medssl.data.synth.report_text import generate_corpus

    texts, _ = generate_corpus(40, seed=3)
    return texts


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory, corpus):
    return build_tiny_text_model(corpus, tmp_path_factory.mktemp("tiny_bert"), vocab_size=300, num_hidden_layers=3)


@pytest.fixture(scope="module")
def tokens(text_model_dir, corpus):
    return Tokenize(str(text_model_dir), max_length=48)(corpus[:6])


def _loop_aggregate(features, word_index, mode):
    """Reference: a per-token Python loop."""
    batch, _, hidden = features.shape
    n_words = int(word_index.max()) + 1
    out = torch.zeros(batch, n_words, hidden, dtype=torch.float64)
    counts = torch.zeros(batch, n_words, dtype=torch.float64)
    for b in range(batch):
        for t in range(features.shape[1]):
            w = int(word_index[b, t])
            if w >= 0:
                out[b, w] += features[b, t].double()
                counts[b, w] += 1
    if mode == "mean":
        out = out / counts.clamp_min(1).unsqueeze(-1)
    return out, counts > 0


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_word_aggregation_matches_a_per_token_loop(tokens, mode):
    torch.manual_seed(0)
    word_index = tokens["word_index"]
    features = torch.randn(*word_index.shape, 8, requires_grad=True)
    words, mask = aggregate_word_pieces(features, word_index, mode)
    expected, expected_mask = _loop_aggregate(features.detach(), word_index, mode)
    assert words.shape == expected.shape
    torch.testing.assert_close(words.double(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(mask, expected_mask)
    # some words really are made of several pieces, so the test compares more than a copy
    assert any((word_index[b] == w).sum() > 1 for b in range(len(word_index)) for w in range(int(word_index[b].max())))
    words.sum().backward()  # differentiable
    assert features.grad is not None and torch.all(features.grad[word_index < 0] == 0)


def test_word_mask_marks_real_words_only(tokens):
    word_index = tokens["word_index"]
    _, mask = aggregate_word_pieces(torch.ones(*word_index.shape, 2), word_index)
    expected_counts = torch.tensor([int(row.max()) + 1 for row in word_index])
    assert torch.equal(mask.sum(dim=1), expected_counts)
    assert mask.shape[1] == int(expected_counts.max())


def test_word_aggregation_rejects_bad_input():
    with pytest.raises(EncoderConfigError):
        aggregate_word_pieces(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(EncoderConfigError):
        aggregate_word_pieces(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), mode="max")


def test_image_encoder_global_and_region_shapes():
    encoder = ImageEncoder("resnet10", 2, 1, width=0.25, region_layer="layer3")
    features, regions = encoder(torch.randn(2, 1, 64, 64))
    assert features.shape == (2, encoder.out_features)
    # stride-2 stem + max pool + layer2 + layer3: 64 / 16 = 4
    assert regions.shape == (2, encoder.region_features, 4, 4)
    assert encoder.region_features == 256 * 0.25 * 1  # layer3 of a basic-block ResNet: 256 x width


def test_image_encoder_region_grid_is_19_at_299_with_resnet50_layer3():
    encoder = ImageEncoder("resnet50", 2, 1, width=0.0625, region_layer="layer3")
    _, regions = encoder(torch.zeros(1, 1, 299, 299))
    assert tuple(regions.shape[2:]) == (19, 19)


def test_image_encoder_without_regions_and_unknown_layer():
    encoder = ImageEncoder("resnet10", 2, 1, width=0.25)
    assert encoder(torch.randn(2, 1, 32, 32))[1] is None
    with pytest.raises(EncoderConfigError, match="layer9"):
        ImageEncoder("resnet10", 2, 1, width=0.25, region_layer="layer9")


def test_image_encoder_probe_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    plain = build_encoder("resnet10", 2, 1, 0.25, conv1_t_stride=2)
    torch.manual_seed(0)
    encoder = ImageEncoder("resnet10", 2, 1, width=0.25, region_layer="layer2")
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(encoder.trunk.state_dict()[name], value)


def test_image_export_round_trip_weights_only(tmp_path):
    encoder = ImageEncoder("resnet10", 2, 1, width=0.25, region_layer="layer3")
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = export_image_encoder(encoder, tmp_path, preprocessing={"image_size": 64})
    state = torch.load(path, weights_only=True)  # plain tensors only
    assert set(state) == set(encoder.trunk.state_dict())
    meta = json.loads((tmp_path / "image.json").read_text())
    assert meta["backbone"] == "resnet10" and meta["preprocessing"] == {"image_size": 64}
    loaded = load_pretrained_image_encoder(tmp_path)
    x = torch.randn(2, 1, 64, 64)
    encoder.eval(), loaded.eval()
    a, b = encoder(x), loaded(x)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    # the same file loads into a trunk built the way the fusion networks build theirs
    trunk = build_encoder("resnet10", 2, 1, 0.25, conv1_t_stride=2)
    assert load_encoder_state(trunk, path) == ([], [])


def test_load_pretrained_image_encoder_reports_a_missing_description(tmp_path):
    with pytest.raises(EncoderConfigError, match="JSON"):
        load_pretrained_image_encoder(tmp_path / "image.pt")


def test_frozen_layers_get_no_gradient_and_do_not_change(text_model_dir, tokens):
    encoder = TextEncoder(text_model_dir, trainable_layers=1)
    frozen = encoder.frozen_parameter_names()
    assert any(n.startswith("embeddings.") for n in frozen)
    assert any(n.startswith("encoder.layer.0.") for n in frozen)
    assert any(n.startswith("encoder.layer.1.") for n in frozen)
    assert not any(n.startswith("encoder.layer.2.") for n in frozen)
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=1.0)
    out = encoder(tokens["input_ids"], tokens["attention_mask"])
    out["pooled"].pow(2).sum().backward()
    optimizer.step()
    for name, param in encoder.model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
            assert torch.equal(param, before[name]), name
    changed = [n for n, p in encoder.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(n.startswith("encoder.layer.2.") for n in changed)


def test_trainable_layers_none_and_zero(text_model_dir):
    assert TextEncoder(text_model_dir, trainable_layers=None).frozen_parameter_names() == [
        n for n, _ in TextEncoder(text_model_dir).model.named_parameters() if n.startswith("pooler.")
    ]
    frozen_all = TextEncoder(text_model_dir, trainable_layers=0)
    assert not any(p.requires_grad for p in frozen_all.parameters())
    # more layers than the model has: every layer trains, the embeddings stay frozen (ConVIRT's 6 on a small BERT)
    six = TextEncoder(text_model_dir, trainable_layers=6)
    assert all(n.startswith(("embeddings.", "pooler.")) for n in six.frozen_parameter_names())


def test_last_layers_are_summed_and_words_pooled(text_model_dir, tokens):
    encoder = TextEncoder(text_model_dir, last_n_layers=2, pooling="words").eval()
    with torch.no_grad():
        out = encoder(tokens["input_ids"], tokens["attention_mask"], tokens["word_index"])
        hidden = encoder.model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], output_hidden_states=True
        ).hidden_states
    torch.testing.assert_close(out["tokens"], hidden[-1] + hidden[-2])
    words, mask = out["words"], out["word_mask"].unsqueeze(-1)
    torch.testing.assert_close(out["pooled"], (words * mask).sum(1) / mask.sum(1))


def test_max_pooling_ignores_padding(text_model_dir, tokens):
    encoder = TextEncoder(text_model_dir, pooling="max").eval()
    with torch.no_grad():
        out = encoder(tokens["input_ids"], tokens["attention_mask"])
    real = tokens["attention_mask"][0].bool()
    torch.testing.assert_close(out["pooled"][0], out["tokens"][0][real].amax(dim=0))


def test_text_export_round_trip(text_model_dir, tokens, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    encoder = TextEncoder(text_model_dir, trainable_layers=1).eval()
    with torch.no_grad():
        encoder.model.encoder.layer[-1].output.dense.weight.add_(0.5)
    folder = export_text_encoder(encoder, tmp_path / "text")
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert (
        tokenizer("no effusion")["input_ids"]
        == Tokenize(str(text_model_dir))("no effusion")["input_ids"][
            : len(tokenizer("no effusion")["input_ids"])
        ].tolist()
    )
    with torch.no_grad():
        a = encoder.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        b = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    torch.testing.assert_close(a, b)


def test_text_encoder_reports_a_missing_model(tmp_path):
    with pytest.raises(EncoderConfigError, match="text model"):
        TextEncoder(tmp_path / "nothing-here")


def test_tiny_text_model_is_reproducible(corpus, tmp_path):
    a = build_tiny_text_model(corpus[:10], tmp_path / "a", vocab_size=200, seed=1)
    b = build_tiny_text_model(corpus[:10], tmp_path / "b", vocab_size=200, seed=1)
    state = torch.get_rng_state()
    c = build_tiny_text_model(corpus[:10], tmp_path / "c", vocab_size=200, seed=2)
    assert torch.equal(state, torch.get_rng_state())  # the global random state is untouched
    wa, wb, wc = (TextEncoder(p).model.embeddings.word_embeddings.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_projection_head_shapes():
    assert projection_head(16, 8)(torch.randn(3, 16)).shape == (3, 8)
    assert isinstance(projection_head(16, 8, hidden=0), torch.nn.Linear)
