"""ConVIRT and GLoRIA models: outputs, similarity, export round trip, and a fast loss-decreases smoke test."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.losses import ConVIRTLoss, GloriaLoss, gloria_local_similarity
from medssl.networks.encoders import EncoderConfigError, build_tiny_text_model
from medssl.networks.vlp import ConVIRT, GLoRIA, build_vlp_model, export_vlp_model, load_vlp_model
from medssl.transforms.text import Tokenize

IMAGE = {"image_backbone": "resnet10", "image_width": 0.25}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from medssl.data.synth.report_text import generate_corpus

    corpus, _ = generate_corpus(30, seed=5)
    return corpus


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, texts):
    return str(build_tiny_text_model(texts, tmp_path_factory.mktemp("bert"), vocab_size=300, dropout=0.0))


@pytest.fixture(scope="module")
def batch(text_model, texts):
    torch.manual_seed(0)
    tokens = Tokenize(text_model, max_length=40)(texts[:6])
    return {"image": torch.rand(6, 1, 64, 64), **tokens}


def _inputs(batch):
    return batch["image"], batch["input_ids"], batch["attention_mask"], batch["word_index"]


def test_convirt_outputs_and_similarity(text_model, batch):
    model = ConVIRT(text_model, embed_dim=16, trainable_layers=1, **IMAGE)
    out = model(*_inputs(batch))
    assert out["image_emb"].shape == (6, 16) and out["text_emb"].shape == (6, 16)
    assert set(out) == {"image_emb", "text_emb"}
    sim = model.similarity({"global": out["image_emb"]}, {"global": out["text_emb"]})
    assert sim.shape == (6, 6) and sim.abs().max() <= 1 + 1e-6
    with pytest.raises(EncoderConfigError):
        model.similarity({"global": out["image_emb"]}, {"global": out["text_emb"]}, mode="local")
    # the projection is non-linear: one hidden layer with ReLU
    assert any(isinstance(m, torch.nn.ReLU) for m in model.image_projection.modules())


def test_gloria_outputs_feed_the_loss(text_model, batch):
    model = GLoRIA(text_model, embed_dim=16, region_layer="layer3", **IMAGE)
    out = model(*_inputs(batch))
    n_words = int(batch["word_index"].max()) + 1
    assert out["regions"].shape == (6, 16, 4, 4)
    assert out["words"].shape == (6, 16, n_words) and out["word_mask"].shape == (6, n_words)
    assert torch.equal(out["word_mask"].sum(1), batch["word_index"].amax(1) + 1)
    loss = GloriaLoss(chunk_size=3)(out["image_emb"], out["text_emb"], out["regions"], out["words"], out["word_mask"])
    assert torch.isfinite(loss)
    # GLoRIA sums the last 4 layers: capped at the 2 layers of the test model
    assert model.text_encoder.last_n_layers == 2


def test_gloria_similarity_modes_add_up(text_model, batch):
    model = GLoRIA(text_model, embed_dim=16, **IMAGE).eval()
    with torch.no_grad():
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"], batch["word_index"])
        both = model.similarity(image, text)
        global_ = model.similarity(image, text, "global")
        local = model.similarity(image, text, "local")
        reference = gloria_local_similarity(image["regions"], text["words"].transpose(1, 2), text["word_mask"]) * 10.0
    torch.testing.assert_close(both, global_ + local)
    torch.testing.assert_close(local, reference)
    # each image's row does not depend on which other images are scored with it
    torch.testing.assert_close(model.similarity({k: v[:2] for k, v in image.items()}, text), both[:2])
    with pytest.raises(EncoderConfigError):
        model.encode_text(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("method", ["convirt", "gloria"])
def test_export_and_load_round_trip(text_model, batch, tmp_path, method):
    model = build_vlp_model(method, text_model=text_model, embed_dim=16, **IMAGE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = export_vlp_model(model, tmp_path / "enc", preprocessing={"image_size": 64})
    assert torch.load(folder / "heads.pt", weights_only=True)  # plain tensors
    assert json.loads((folder / "model.json").read_text())["config"]["text_model"] == "text"
    loaded = load_vlp_model(folder)
    assert loaded.preprocessing == {"image_size": 64}
    with torch.no_grad():
        expected = model.similarity(model.encode_image(batch["image"]), model.encode_text(*_inputs(batch)[1:]))
        actual = loaded.similarity(loaded.encode_image(batch["image"]), loaded.encode_text(*_inputs(batch)[1:]))
    torch.testing.assert_close(actual, expected)


def test_build_vlp_model_reports_unknown_methods_and_arguments(text_model):
    with pytest.raises(EncoderConfigError, match="unknown"):
        build_vlp_model("clip", text_model=text_model)
    with pytest.raises(EncoderConfigError, match="cannot build"):
        build_vlp_model("convirt", text_model=text_model, colour="blue")


@pytest.mark.parametrize("method", ["convirt", "gloria"])
def test_loss_decreases_on_a_fixed_batch(text_model, batch, method):
    """Fast smoke version of the learning test: a few steps fit a fixed batch of pairs."""
    torch.manual_seed(0)
    model = build_vlp_model(method, text_model=text_model, embed_dim=16, trainable_layers=None, **IMAGE)
    if method == "convirt":
        loss_fn, keys = ConVIRTLoss(), ("image_emb", "text_emb")
    else:
        loss_fn, keys = GloriaLoss(), ("image_emb", "text_emb", "regions", "words", "word_mask")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        out = model(*_inputs(batch))
        loss = loss_fn(*(out[k] for k in keys))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
