"""Word-piece -> word aggregation: one ``index_add`` over the batch vs the per-token Python loop it replaces.

``medssl.networks.encoders.aggregate_word_pieces`` pools BERT's word-piece features into word features (GLoRIA's
local text features) with one scatter over ``word_index``. The baseline is GLoRIA's way: a Python loop over captions
and tokens that sums the pieces of each word. Both run on the same random features and real ``word_index`` rows
(synthetic reports tokenized by a WordPiece tokenizer trained on them), same process, same device; outputs are
checked equal first. Read the ratio (absolute times depend on the machine).

    python benchmarks/bench_wordpiece_aggregation.py --batch 48 --tokens 128 --hidden 768
    python benchmarks/bench_wordpiece_aggregation.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def loop_aggregate(features: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """The baseline: sum the pieces of each word token by token (what GLoRIA's aggregate_tokens does)."""
    batch, n_tokens, hidden = features.shape
    n_words = int(word_index.max()) + 1
    out = features.new_zeros(batch, n_words, hidden)
    index = word_index.tolist()
    for b in range(batch):
        for t in range(n_tokens):
            w = index[b][t]
            if w >= 0:
                out[b, w] += features[b, t]
    return out


def _once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _time_alternating(fns: dict, repeats: int, device: torch.device) -> dict[str, tuple[float, float]]:
    """``{name: (minimum, median)}`` seconds; the functions alternate, so a busy machine slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_once(fn, device))
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=48, help="captions per batch")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per caption")
    parser.add_argument("--hidden", type=int, default=768, help="feature width (BERT-base: 768)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each (alternating)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="16 captions, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 16, 3
    if args.threads:
        torch.set_num_threads(args.threads)

    from medssl.data.synth.report_text import generate_corpus
    from medssl.networks.encoders import aggregate_word_pieces
    from medssl.transforms.text import Tokenize, train_wordpiece_tokenizer

    device = torch.device(args.device)
    texts, _ = generate_corpus(max(args.batch, 64), seed=0)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = train_wordpiece_tokenizer(texts, folder, vocab_size=1000)
        word_index = Tokenize(str(tokenizer), max_length=args.tokens)(texts[: args.batch])["word_index"].to(device)
    torch.manual_seed(0)
    features = torch.randn(args.batch, args.tokens, args.hidden, device=device)

    words, _ = aggregate_word_pieces(features, word_index)
    reference = loop_aggregate(features, word_index)
    torch.testing.assert_close(words, reference, rtol=1e-5, atol=1e-5)

    timed = _time_alternating(
        {
            "tensor": lambda: aggregate_word_pieces(features, word_index),
            "loop": lambda: loop_aggregate(features, word_index),
        },
        args.repeats,
        device,
    )
    (tensor_s, tensor_med), (loop_s, loop_med) = timed["tensor"], timed["loop"]
    pieces = int((word_index >= 0).sum())
    result = {
        "batch": args.batch,
        "tokens": args.tokens,
        "hidden": args.hidden,
        "word_pieces": pieces,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "tensor_ms": tensor_s * 1e3,
        "loop_ms": loop_s * 1e3,
        "tensor_median_ms": tensor_med * 1e3,
        "loop_median_ms": loop_med * 1e3,
        "speedup": loop_s / tensor_s,
        "speedup_median": loop_med / tensor_med,
    }
    print(
        f"word-piece aggregation, {args.batch} captions x {args.tokens} tokens x {args.hidden} features "
        f"({pieces} word pieces) on {device}, {result['threads']} threads; minimum (median) of {args.repeats} runs"
    )
    print(f"  per-token loop (baseline): {result['loop_ms']:8.2f} ms ({result['loop_median_ms']:.2f})")
    print(f"  index_add (medssl):        {result['tensor_ms']:8.2f} ms ({result['tensor_median_ms']:.2f})")
    print(f"  speed-up: {result['speedup']:.0f}x ({result['speedup_median']:.0f}x on medians)")
    return result


if __name__ == "__main__":
    main()
