"""One training step per fusion strategy at an equal parameter budget: throughput and peak memory.

Every strategy is built by ``medssl.networks.build_fusion_model`` with the same ``param_budget`` (the parameter count
of the early-fusion model at ``--width``), then trained for ``--steps`` timed steps (forward, loss, backward, Adam step)
after ``--warmup`` untimed ones, each strategy in a fresh process so that peak memory is its own (CPU: peak resident
set size growth over the process's size before the first step; CUDA: ``torch.cuda.max_memory_allocated``). Images/s
counts the views a strategy looks at (one per exam for the single-view baseline). Ratios are against early fusion -
one plain MONAI network on the stacked views, what a user would otherwise build.

    python benchmarks/bench_fusion_step.py                      # 2D four-view mammography, CPU
    python benchmarks/bench_fusion_step.py --task mr --size 32  # 3D four-sequence MR
    python benchmarks/bench_fusion_step.py --device cuda --batch 32 --size 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

__all__ = ["main"]

STRATEGY_OPTIONS = {
    "early": ("early", {}),
    "joint-none": ("joint", {"share": "none"}),
    "joint-shared": ("joint", {"share": "projection"}),  # MR: replaced by share="all"
    "joint-attention": ("joint", {"share": "all", "pooling": "attention"}),
    "late": ("late", {"share": "none"}),
    "single-view": ("single_view", {}),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(args: argparse.Namespace, strategy: str, budget: int | None):
    from medssl.networks import MAMMO_VIEWS, MR_SEQUENCES, build_fusion_model

    kind, options = STRATEGY_OPTIONS[strategy]
    options = dict(options)
    views = list(MAMMO_VIEWS if args.task == "mammo" else MR_SEQUENCES)
    if args.task == "mr" and options.get("share") == "projection":
        options["share"] = "all"
    return build_fusion_model(
        kind,
        views,
        2 if args.task == "mammo" else 3,
        num_classes=1,
        backbone=args.backbone,
        backbone_kwargs={"conv1_t_stride": 2} if args.backbone.startswith("resnet") else {},
        width=args.width,
        param_budget=budget,
        output="dict",
        **options,
    )


def _worker(args: argparse.Namespace) -> dict:
    import torch

    from medssl.networks import count_flops, count_parameters

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = _build(args, args.worker, args.budget).to(device).train()
    spatial = (args.size,) * (2 if args.task == "mammo" else 3)
    images = torch.randn(args.batch, 4, *spatial, device=device)
    labels = torch.randint(0, 2, (args.batch, 1), device=device).float()
    presence = torch.ones(args.batch, 4, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(images, presence)
            loss = loss_fn(out["logits"].float(), labels)
            if "view_logits" in out:  # per-view heads are trained too (late fusion trains only these)
                view_labels = labels.unsqueeze(1).expand(-1, 4, -1)
                loss = loss + loss_fn(out["view_logits"].float(), view_labels)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        flops = count_flops(model.eval(), images[:1], presence[:1])
        seen = model(images[:1], presence[:1]).get("presence", presence[:1])  # single-view: the views it looks at
    views_per_exam = float(seen.sum())
    model.train()
    rss_before = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    seconds = (time.perf_counter() - start) / args.steps
    return {
        "strategy": args.worker,
        "parameters": count_parameters(model),
        "width": model.fusion_width,
        "forward_gflops_per_exam": flops / 1e9,
        "step_s": seconds,
        "exams_per_s": args.batch / seconds,
        "views_per_exam": views_per_exam,
        "images_per_s": views_per_exam * args.batch / seconds,
        "peak_mib": max(peak, 0) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("mammo", "mr"), default="mammo", help="2D 4-view or 3D 4-sequence input")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--backbone", default="resnet18", help="encoder name (medssl.networks.ENCODER_NAMES)")
    parser.add_argument("--width", type=float, default=0.5, help="early-fusion width that sets the parameter budget")
    parser.add_argument("--batch", type=int, default=4, help="exams per step")
    parser.add_argument("--size", type=int, default=96, help="image side (pixels or voxels)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_OPTIONS), choices=list(STRATEGY_OPTIONS))
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="64-pixel images, 2 timed steps (make bench)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.steps = 64, 2

    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    from medssl.networks import count_parameters

    budget = count_parameters(_build(args, "early", None))
    strategies = ["early"] + [s for s in args.strategies if s != "early"]
    results = []
    for strategy in strategies:
        command = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:])]
        command += ["--worker", strategy, "--budget", str(budget)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{strategy}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = next((r for r in results if r["strategy"] == "early"), None)
    print(
        f"task={args.task} device={args.device} backbone={args.backbone} batch={args.batch} size={args.size} "
        f"budget={budget} parameters (early fusion at width {args.width})"
    )
    header = (
        f"{'strategy':<16}{'params':>10}{'width':>8}{'GFLOP/exam':>12}{'step s':>9}{'images/s':>10}"
        f"{'x early':>9}{'peak MiB':>10}{'x early':>9}"
    )
    print(header)
    for r in results:
        speed = r["images_per_s"] / base["images_per_s"] if base else float("nan")
        memory = r["peak_mib"] / base["peak_mib"] if base and base["peak_mib"] > 0 else float("nan")
        print(
            f"{r['strategy']:<16}{r['parameters']:>10}{r['width']:>8.3f}{r['forward_gflops_per_exam']:>12.3f}"
            f"{r['step_s']:>9.3f}{r['images_per_s']:>10.1f}{speed:>9.2f}{r['peak_mib']:>10.0f}{memory:>9.2f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "budget": budget, "results": results}, handle, indent=2)
    return 0 if len(results) == len(strategies) else 1


if __name__ == "__main__":
    raise SystemExit(main())
