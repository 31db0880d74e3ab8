"""GLoRIA local loss: batched, tiled ``medssl.losses.gloria_local_loss`` vs the original per-caption loop.

Forward + backward time and peak memory at GLoRIA's sizes (D = 768, 19 x 19 regions, up to 40 words per caption,
lengths drawn from a clipped normal, mean 28, sd 8, in [8, 40], seeded).

Method: every (method, batch size) runs in a fresh worker process (this script with ``--worker``): one warm-up
forward + backward, then ``--iters`` timed ones (the minimum is reported). The CPU time of the process
(``time.process_time``) is compared as well: on a shared machine it is less disturbed by other work than wall time.
Memory on CPU is the peak resident set during the timed iterations minus the resident set just before them (``VmHWM``
of ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``), with glibc's mmap threshold fixed at
64 KiB so that freed tensors go back to the system and cannot hide in the heap; it counts every allocation made by the
step (activations, input gradients, temporaries) and nothing allocated before it (the inputs). On CUDA it is
``max_memory_allocated`` minus ``memory_allocated`` before the step. The workers of the two methods alternate, so a
busy machine slows both alike. The ratio columns are loop / batched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def make_inputs(batch, dim, grid, max_words, device, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    lengths = (torch.randn(batch, generator=gen) * 8 + 28).round().long().clamp(min(8, max_words), max_words)
    regions = torch.randn(batch, dim, grid, grid, generator=gen).to(device).requires_grad_()
    words = torch.randn(batch, dim, max_words, generator=gen).to(device).requires_grad_()
    mask = (torch.arange(max_words) < lengths.unsqueeze(1)).to(device)
    return regions, words, mask, lengths.tolist()


def loop_local_loss(img_features, words_emb, cap_lens, temp1=4.0, temp2=5.0, temp3=10.0):
    """A faithful port of GLoRIA's ``local_loss`` + ``attention_fn`` (per-caption loop, features copied per caption)."""
    import torch
    import torch.nn.functional as F

    batch_size = img_features.shape[0]
    ih, iw = img_features.shape[2], img_features.shape[3]
    similarities = []
    for i in range(words_emb.shape[0]):
        words_num = cap_lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous().repeat(batch_size, 1, 1)  # (B, D, L_i)
        # attention_fn(query=word, context=img_features, temp1)
        context = img_features.view(batch_size, -1, ih * iw)
        attn = torch.bmm(context.transpose(1, 2).contiguous(), word)  # (B, N, L_i)
        attn = torch.softmax(attn.view(batch_size * ih * iw, words_num), dim=-1).view(batch_size, ih * iw, words_num)
        attn = attn.transpose(1, 2).contiguous().view(batch_size * words_num, ih * iw)
        attn = torch.softmax(attn * temp1, dim=-1).view(batch_size, words_num, ih * iw)
        weighted = torch.bmm(context, attn.transpose(1, 2).contiguous())  # (B, D, L_i)
        # cosine_similarity(word, weighted) over D, clamped norm product
        word_rows = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        weighted_rows = weighted.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        dot = (word_rows * weighted_rows).sum(dim=1)
        norms = (word_rows.norm(dim=1) * weighted_rows.norm(dim=1)).clamp(min=1e-8)
        row_sim = (dot / norms).view(batch_size, words_num)
        row_sim = torch.log(row_sim.mul(temp2).exp().sum(dim=1, keepdim=True))
        similarities.append(row_sim)
    similarities = torch.cat(similarities, 1) * temp3
    labels = torch.arange(batch_size, device=similarities.device)
    return F.cross_entropy(similarities, labels), F.cross_entropy(similarities.t(), labels)


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args) -> None:
    import torch

    from medssl.losses import gloria_local_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    regions, words, mask, lengths = make_inputs(args.batch, args.dim, args.grid, args.max_words, device)

    def step():
        if args.worker == "loop":
            image_to_text, text_to_image = loop_local_loss(regions, words, lengths)
        else:
            image_to_text, text_to_image = gloria_local_loss(regions, words, mask, chunk_size=args.chunk_size)
        loss = image_to_text + text_to_image
        loss.backward()
        return float(loss)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    loss = step()
    regions.grad = words.grad = None
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = _status_kib("VmRSS") * 1024
    times, cpu_times = [], []
    for _ in range(args.iters):
        regions.grad = words.grad = None
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_kib("VmHWM") * 1024
    result = {"time_s": min(times), "cpu_s": min(cpu_times), "peak_mib": (peak - base) / 2**20, "loss": loss}
    print(json.dumps(result))


def run_worker(method, batch, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", method, "--batch", str(batch)]
    command += ["--dim", str(args.dim), "--grid", str(args.grid), "--max-words", str(args.max_words)]
    command += ["--iters", str(args.iters), "--device", args.device, "--threads", str(args.threads)]
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"worker {method} B={batch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--dim", type=int, default=768, help="feature size D")
    parser.add_argument("--grid", type=int, default=19, help="regions per side (N = grid^2)")
    parser.add_argument("--max-words", type=int, default=40, help="padded caption length L")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per worker (minimum reported)")
    parser.add_argument("--rounds", type=int, default=1, help="workers per configuration (minimum time reported)")
    parser.add_argument("--chunk-size", type=int, default=None, help="tile size of the batched loss (default: auto)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--skip-loop-above", type=int, default=0, help="do not run the loop above this batch size")
    parser.add_argument("--quick", action="store_true", help="B = 8, 16 and one timed iteration")
    parser.add_argument("--worker", choices=["loop", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.batch_sizes, args.iters = [8, 16], 1
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"GLoRIA local loss, forward + backward: D={args.dim}, {args.grid}x{args.grid} regions, L<={args.max_words}")
    print(f"device {args.device}, {threads} thread(s), {os.cpu_count()} CPU(s), torch {torch.__version__}")
    print(
        "| B | loop s | batched s | speed-up | CPU-time speed-up | loop peak MiB | batched peak MiB | memory ratio "
        "| loss rel. diff |"
    )
    print("|" + "---|" * 9)
    for batch in args.batch_sizes:
        results = {"loop": [], "batched": []}
        for _ in range(args.rounds):
            for method in ("loop", "batched"):
                if method == "loop" and args.skip_loop_above and batch > args.skip_loop_above:
                    continue
                results[method].append(run_worker(method, batch, args))
        fast = min(results["batched"], key=lambda r: r["time_s"])
        peak = max(r["peak_mib"] for r in results["batched"])
        if results["loop"]:
            slow = min(results["loop"], key=lambda r: r["time_s"])
            slow_peak = max(r["peak_mib"] for r in results["loop"])
            diff = abs(fast["loss"] - slow["loss"]) / abs(slow["loss"])
            cpu_ratio = min(r["cpu_s"] for r in results["loop"]) / min(r["cpu_s"] for r in results["batched"])
            print(
                f"| {batch} | {slow['time_s']:.3f} | {fast['time_s']:.3f} | {slow['time_s'] / fast['time_s']:.2f}x "
                f"| {cpu_ratio:.2f}x | {slow_peak:.0f} | {peak:.0f} | {slow_peak / peak:.2f}x | {diff:.1e} |",
                flush=True,
            )
        else:
            print(f"| {batch} | - | {fast['time_s']:.3f} | - | - | - | {peak:.0f} | - | - |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
