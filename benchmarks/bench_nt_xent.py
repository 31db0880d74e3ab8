"""NT-Xent: ``medssl.losses.nt_xent_loss`` vs MONAI's ``ContrastiveLoss`` (the loss a MONAI user would pick).

Part 1, forward + backward time and peak memory at B = 256, F = 2048 (temperature 0.1). Every (method) runs in a
fresh worker process (this script with ``--worker``): a warm-up step, then ``--iters`` timed steps (minimum
reported). CPU memory is the peak resident set during the timed steps minus the resident set before them (``VmHWM``
reset through ``/proc/self/clear_refs``; glibc's mmap threshold fixed at 64 KiB so freed tensors leave the process);
on CUDA ``max_memory_allocated`` minus ``memory_allocated`` before. Ratios are MONAI / ours.

Part 2, low temperatures: value of both losses on the same random float32 views, against a float64 log-sum-exp
reference. MONAI exponentiates similarities directly, so ``exp(1 / tau)`` overflows float32 once ``1 / tau > 88``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def views(batch, features, device, seed=0):
    """Two views per sample: the second is the first plus noise (as after augmentations)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, features, generator=gen)
    z2 = z1 + 0.5 * torch.randn(batch, features, generator=gen)
    return z1.to(device).requires_grad_(), z2.to(device).requires_grad_()


def worker(args) -> None:
    import torch

    from medssl.losses import nt_xent_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    z1, z2 = views(args.batch, args.features, device)
    if args.worker == "monai":
        from monai.losses import ContrastiveLoss

        monai_loss = ContrastiveLoss(temperature=args.temperature)

        def loss_fn():
            return monai_loss(z1, z2)

    else:

        def loss_fn():
            return nt_xent_loss(z1, z2, args.temperature)

    def step():
        z1.grad = z2.grad = None
        loss = loss_fn()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    loss = step()
    z1.grad = z2.grad = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        base = _status_kib("VmRSS") * 1024
    times = []
    for _ in range(args.iters):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_kib("VmHWM") * 1024
    print(json.dumps({"time_s": min(times), "peak_mib": (peak - base) / 2**20, "loss": loss}))


def run_worker(method, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", method, "--batch", str(args.batch)]
    command += ["--features", str(args.features), "--temperature", str(args.temperature), "--iters", str(args.iters)]
    command += ["--device", args.device, "--threads", str(args.threads)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"worker {method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def low_temperature_table(args) -> None:
    import torch
    import torch.nn.functional as F
    from monai.losses import ContrastiveLoss

    from medssl.losses import nt_xent_loss

    gen = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(64, 128, generator=gen), torch.randn(64, 128, generator=gen)  # unrelated views: large loss
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z.shape[0]
    print("\n| temperature | float64 log-sum-exp reference | medssl nt_xent_loss (float32) | MONAI ContrastiveLoss |")
    print("|---|---|---|---|")
    for temperature in (0.5, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001):
        sims = (z @ z.t() / temperature).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        reference = (torch.logsumexp(sims, 1) - sims[torch.arange(n), (torch.arange(n) + n // 2) % n]).mean()
        ours = nt_xent_loss(z1, z2, temperature)
        theirs = ContrastiveLoss(temperature=temperature)(z1, z2)
        print(f"| {temperature} | {float(reference):.6g} | {float(ours):.6g} | {float(theirs):.6g} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="workers per method (minimum time reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="B = 128, F = 1024, one timed step")
    parser.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.batch, args.features, args.iters = 128, 1024, 1
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"NT-Xent forward + backward, B={args.batch} pairs, F={args.features}, temperature {args.temperature}")
    print(f"device {args.device}, {threads} thread(s), {os.cpu_count()} CPU(s), torch {torch.__version__}")
    results = {"ours": [], "monai": []}
    for _ in range(args.rounds):
        for method in ("monai", "ours"):
            results[method].append(run_worker(method, args))
    ours = min(results["ours"], key=lambda r: r["time_s"])
    monai = min(results["monai"], key=lambda r: r["time_s"])
    ours_peak = max(r["peak_mib"] for r in results["ours"])
    monai_peak = max(r["peak_mib"] for r in results["monai"])
    print("| method | time s | peak MiB | loss |")
    print("|---|---|---|---|")
    print(f"| MONAI ContrastiveLoss | {monai['time_s']:.4f} | {monai_peak:.1f} | {monai['loss']:.6f} |")
    print(f"| medssl nt_xent_loss | {ours['time_s']:.4f} | {ours_peak:.1f} | {ours['loss']:.6f} |")
    print(f"speed-up {monai['time_s'] / ours['time_s']:.1f}x, memory ratio {monai_peak / max(ours_peak, 1e-3):.1f}x")
    low_temperature_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
