from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from medssl.data.reports import ReportError, count_words, split_sentences
from medssl.transforms.text import (
    LoadReport,
    LoadReportd,
    SampleSentence,
    SampleSentenced,
    SampleSentencesUpTo,
    SampleSentencesUpTod,
    Tokenize,
    Tokenized,
    TokenizerError,
    load_tokenizer,
    train_wordpiece_tokenizer,
)

DATA = Path(__file__).parent / "data" / "reports"
REPORT = (
    "FINDINGS: The heart size is normal. There is a small left pleural effusion. No pneumothorax is seen.\n"
    "Mild bibasilar atelectasis.\n"
    "IMPRESSION: 1. Small left pleural effusion. 2. Mild bibasilar atelectasis. 3. No pneumothorax."
)
CORPUS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion with adjacent atelectasis.",
    "The heart size is normal. No pneumothorax is seen.",
    "Moderate pulmonary edema. Right internal jugular line in the mid SVC.",
    "Mild bibasilar atelectasis, likely due to low lung volumes.",
] * 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return train_wordpiece_tokenizer(CORPUS, tmp_path_factory.mktemp("tok"), vocab_size=150)


def test_load_report_from_path_text_and_outputs():
    path = DATA / "addendum_numbered.txt"
    assert LoadReport()(path) == LoadReport()(str(path)) == LoadReport(source="text")(path.read_text())
    assert LoadReport(output="sentences")(REPORT) == [
        "Small left pleural effusion.",
        "Mild bibasilar atelectasis.",
        "No pneumothorax.",
    ]
    assert LoadReport(priority=("findings",))(REPORT).startswith("The heart size is normal.")
    parsed = LoadReport(output="parsed")(path)
    assert parsed.section == "impression" and parsed.source == str(path)
    with pytest.raises(ReportError, match="empty.txt: empty report"):
        LoadReport()(DATA / "empty.txt")
    with pytest.raises(ValueError):
        LoadReport(output="tokens")


def test_load_reportd_keys_and_missing():
    out = LoadReportd(["report", "other"], allow_missing_keys=True)({"report": REPORT, "image": 1})
    assert out["report"].startswith("1. Small left pleural effusion.") and out["image"] == 1 and "other" not in out


def test_sample_sentence_is_seeded_and_returns_sentences():
    sentences = split_sentences(REPORT.split("IMPRESSION:")[0].replace("FINDINGS:", ""))
    sampler = SampleSentence().set_random_state(7)
    draws = [sampler(sentences) for _ in range(40)]
    again = SampleSentence().set_random_state(7)
    assert draws == [again(sentences) for _ in range(40)]
    assert set(draws) == set(sentences)  # every sentence is drawn, nothing else
    long_only = SampleSentence(min_words=4).set_random_state(0)
    assert all(count_words(long_only(sentences)) >= 4 for _ in range(20))
    with pytest.raises(ReportError, match="no sentence"):
        SampleSentence()("")


def test_sample_sentenced_keys_draw_independently_and_compose_seeds():
    data = {"a": REPORT, "b": REPORT}
    pipeline = Compose([LoadReportd(["a", "b"], priority=("findings",)), SampleSentenced(["a", "b"])])
    pipeline.set_random_state(seed=3)
    first = [pipeline(data) for _ in range(20)]
    pipeline.set_random_state(seed=3)
    assert first == [pipeline(data) for _ in range(20)]
    assert any(d["a"] != d["b"] for d in first)


def test_sample_sentences_up_to_budget_order_and_shuffle():
    text = REPORT.split("IMPRESSION:")[0].replace("FINDINGS:", "")
    sentences = split_sentences(text)
    in_order = SampleSentencesUpTo(max_words=12)(text)
    assert count_words(in_order) <= 12
    assert in_order == " ".join(sentences[:2])  # 5 + 7 words fit, the next sentence would not
    shuffled = SampleSentencesUpTo(max_words=100, shuffle=True).set_random_state(1)
    outputs = {shuffled(text) for _ in range(20)}
    assert len(outputs) > 1
    assert all(sorted(split_sentences(o)) == sorted(sentences) for o in outputs)
    assert SampleSentencesUpTo(max_words=3)(text) == "The heart size"  # first sentence cut at the budget
    out = SampleSentencesUpTod("report", max_words=5)({"report": sentences})
    assert out["report"] == sentences[0]


def test_train_wordpiece_tokenizer_loads_like_a_hub_model(tokenizer_dir):
    assert (tokenizer_dir / "tokenizer.json").is_file()
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokenizer.is_fast
    ids = tokenizer("No pneumothorax.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]" and tokenizer.convert_ids_to_tokens(ids)[-1] == "[SEP]"
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(tokenizer_dir / "missing")


def test_tokenize_shapes_mask_and_word_index(tokenizer_dir):
    tokenize = Tokenize(tokenizer_dir, max_length=48)
    text = "Small left pleural effusion, unchanged cardiomegaly."
    out = tokenize(text)
    assert set(out) == {"input_ids", "attention_mask", "word_index"}
    assert all(v.shape == (48,) and v.dtype == torch.long for v in out.values())
    n_tokens = int(out["attention_mask"].sum())
    word_index = out["word_index"].tolist()
    assert word_index[0] == -1 and word_index[n_tokens - 1] == -1 and set(word_index[n_tokens:]) == {-1}
    # Word pieces grouped by word_index spell the pre-tokenized words back.
    tokenizer = load_tokenizer(tokenizer_dir)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"][:n_tokens].tolist())
    words: dict[int, str] = {}
    for token, w in zip(tokens, word_index[:n_tokens]):
        if w >= 0:
            words[w] = words.get(w, "") + token.removeprefix("##")
    expected = [w for w, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text.lower())]
    assert [words[i] for i in sorted(words)] == expected
    batch = tokenize(["No effusion.", text])
    assert batch["input_ids"].shape == (2, 48) and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()


def test_tokenized_keys_prefix_pickling_and_collation(tokenizer_dir):
    transform = Tokenized("report", tokenizer=str(tokenizer_dir), max_length=16)
    clone = pickle.loads(pickle.dumps(transform))  # DataLoader workers receive a copy without the tokenizer
    assert clone.tokenize._tokenizer is None
    out = clone({"report": "No pneumothorax."})
    assert out["report"] == "No pneumothorax." and out["report_input_ids"].shape == (16,)
    plain = Tokenized("report", tokenizer=str(tokenizer_dir), max_length=16, output_prefix="")({"report": "Edema."})
    assert {"input_ids", "attention_mask", "word_index"} <= set(plain)
    with pytest.raises(ValueError):
        Tokenized(["a", "b"], tokenizer=str(tokenizer_dir), output_prefix="")
    pipeline = Compose(
        [LoadReportd("report"), SampleSentenced("report"), Tokenized("report", str(tokenizer_dir), max_length=16)]
    )
    pipeline.set_random_state(seed=0)
    loader = DataLoader(Dataset([{"report": REPORT}] * 4, transform=pipeline), batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert batch["report_input_ids"].shape == (4, 16) and len(batch["report"]) == 4
    assert np.all(batch["report_attention_mask"].sum(1).numpy() > 2)


def test_tokenize_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        Tokenize(tmp_path / "nothing")("text")
