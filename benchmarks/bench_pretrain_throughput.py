"""Pretraining throughput (image-report pairs per second) and where the time goes: data, image tower, text tower, loss.

Builds a real :class:`medssl.engines.Pretraining` run (synthetic MIMIC-CXR-JPG data, the method's transforms, a
BERT from ``--text-model`` or a small one trained here) and measures, on the same batches:

* **data**: time to get a batch from the loader (loading, resizing, augmentation, sentence sampling, tokenization);
* **image tower**, **text tower**: forward + backward of each tower with its projection alone;
* **loss**: forward + backward of the loss on the embeddings;
* **engine step**: :class:`medssl.engines.PretrainStep` (all of the above but the data, plus the optimizer step);
* **plain loop**: the same model, loss and optimizer in a hand-written ``zero_grad / forward / backward / step``
  loop, the baseline the engine's overhead is read against (``engine / plain``, 1.0 = no overhead).

GPU timings synchronise before each clock read. Absolute numbers depend on the machine; read the shares and ratios.

    python benchmarks/bench_pretrain_throughput.py --method convirt --image-size 224 --backbone resnet50
    python benchmarks/bench_pretrain_throughput.py --method gloria --device cuda --batch-size 32 --text-model DIR
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _clocks(device: torch.device) -> tuple[float, float]:
    """Wall time and this process's CPU time (on a shared CPU the latter is less disturbed by other jobs)."""
    wall = _clock(device)
    return wall, time.process_time()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="convirt", choices=("convirt", "gloria"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=0.5, help="image backbone width multiplier")
    parser.add_argument("--text-model", default=None, help="text model folder (default: a small BERT built here)")
    parser.add_argument("--patients", type=int, default=60, help="synthetic patients to generate")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6, help="measured batches (after one warm-up)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch_size, args.image_size, args.backbone, args.width, args.patients, args.steps = (
            8,
            64,
            "resnet10",
            0.25,
            16,
            3,
        )

    from medssl.data.layouts.mimic_cxr import mimic_cxr_datalist
    from medssl.data.synth.cxr import generate
    from medssl.engines import Pretraining, load_training_items
    from medssl.networks.encoders import build_tiny_text_model

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(root / "cxr", args.patients, seed=0, size=max(args.image_size, 64), lateral=0.0)
        datalist, _ = mimic_cxr_datalist(
            root / "cxr",
            root / "datalist.json",
            frontal_only=True,
            require_report=True,
            resplit=True,
            val_fraction=0.0,
            test_fraction=0.0,
            salt="bench",
        )
        text_model = args.text_model
        if text_model is None:
            texts = [Path(i["report"]).read_text() for i in load_training_items(datalist)]
            text_model = str(
                build_tiny_text_model(
                    texts,
                    root / "bert",
                    hidden_size=128,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    intermediate_size=256,
                )
            )
        options = {
            "text_model": text_model,
            "image_backbone": args.backbone,
            "image_width": args.width,
            "image_size": args.image_size,
        }
        run = Pretraining(
            method=args.method,
            data=str(datalist),
            out=str(root / "run"),
            options=options,
            batch_size=args.batch_size,
            max_steps=args.steps + 1,
            device=args.device,
            amp=args.amp,
            num_workers=args.num_workers,
            progress=False,
            tracking=["csv"],
            export=False,
            checkpoint_every=0,
        ).setup()
        model, loss_fn, method, step = run.model, run.loss, run.method, run.step_function
        amp = step.amp_dtype

        run.sampler.set_epoch(0)
        iterator = iter(run.loader)
        batches, data_times, data_cpu = [], [], []
        for _ in range(args.steps + 1):
            start, start_cpu = _clocks(device)
            batches.append(next(iterator))
            end, end_cpu = _clocks(device)
            data_times.append(end - start)
            data_cpu.append(end_cpu - start_cpu)

        def autocast():
            return torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None)

        inputs = [method.model_inputs(b, device) for b in batches]

        def image_tower(x):
            with autocast():
                out = model.encode_image(x["image"])
            sum(v.float().sum() for v in out.values()).backward()

        def text_tower(x):
            with autocast():
                out = model.encode_text(x["input_ids"], x["attention_mask"], x["word_index"])
            sum(v.float().sum() for k, v in out.items() if k != "word_mask").backward()

        with torch.no_grad(), autocast():
            embeddings = [model(**x) for x in inputs]

        def loss_only(e):
            leaves = {k: (v.detach().float().requires_grad_() if v.is_floating_point() else v) for k, v in e.items()}
            keys = (
                ("image_emb", "text_emb")
                if args.method == "convirt"
                else ("image_emb", "text_emb", "regions", "words", "word_mask")
            )
            loss_fn(*(leaves[k] for k in keys))["loss"].backward()

        optimizer = run.optimizer

        def plain_step(b):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = method.forward_loss(model, loss_fn, b)
            out["loss"].backward()
            optimizer.step()

        model.train()
        timings, cpu = {}, {}
        for name, fn, items in (
            ("image tower", image_tower, inputs),
            ("text tower", text_tower, inputs),
            ("loss", loss_only, embeddings),
            ("engine step", lambda b: step(run.engine, b), batches),
            ("plain loop", plain_step, batches),
        ):
            fn(items[0])  # warm-up
            times, cpu_times = [], []
            for item in items[1:]:
                start, start_cpu = _clocks(device)
                fn(item)
                end, end_cpu = _clocks(device)
                times.append(end - start)
                cpu_times.append(end_cpu - start_cpu)
            timings[name], cpu[name] = statistics.median(times), statistics.median(cpu_times)
            model.zero_grad(set_to_none=True)
        timings["data"], cpu["data"] = statistics.median(data_times[1:]), statistics.median(data_cpu[1:])

    pairs_per_s = args.batch_size / (timings["data"] + timings["engine step"])
    pairs_per_cpu_s = args.batch_size / (cpu["data"] + cpu["engine step"])
    parts = ("data", "image tower", "text tower", "loss")
    total, total_cpu = sum(timings[p] for p in parts), sum(cpu[p] for p in parts)
    print(
        f"{args.method} on {device} (amp: {amp}), batch {args.batch_size}, {args.backbone} x{args.width} at "
        f"{args.image_size} px, text model {'small BERT' if args.text_model is None else args.text_model}, "
        f"{args.num_workers} workers, {torch.get_num_threads()} threads; medians of {args.steps} batches"
    )
    print(
        f"  throughput: {pairs_per_s:.1f} pairs/s wall, {pairs_per_cpu_s:.1f} pairs per CPU-second "
        "(data + engine step, no overlap of loading and compute)"
    )
    print(f"  {'part':<12} {'wall ms':>9} {'share':>6} {'CPU ms':>9} {'share':>6}")
    for part in parts:
        print(
            f"  {part:<12} {timings[part] * 1e3:9.1f} {100 * timings[part] / total:5.1f}% "
            f"{cpu[part] * 1e3:9.1f} {100 * cpu[part] / total_cpu:5.1f}%"
        )
    print(
        f"  engine step {timings['engine step'] * 1e3:.1f} ms vs plain loop {timings['plain loop'] * 1e3:.1f} ms: "
        f"ratio {timings['engine step'] / timings['plain loop']:.2f} (CPU time: "
        f"{cpu['engine step'] / cpu['plain loop']:.2f})"
    )
    return {
        "pairs_per_s": pairs_per_s,
        "pairs_per_cpu_s": pairs_per_cpu_s,
        **{k: v * 1e3 for k, v in timings.items()},
        **{f"{k} cpu": v * 1e3 for k, v in cpu.items()},
    }


if __name__ == "__main__":
    main()
