"""Index throughput: `medssl index` (parallel header scan) vs the plain sequential pydicom header loop.

The baseline is what a user would otherwise write: ``for f in files: dcmread(f, stop_before_pixels=True)`` over the
same files, then grouping by SeriesInstanceUID. Both run on the same synthetic export, page cache warmed first, in
the same process run; the ratio is what to read (absolute numbers depend on the disk and CPU).

    python benchmarks/bench_index.py --files 4000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def make_export(root: Path, n_files: int, slices_per_series: int = 40, size: int = 64, seed: int = 0) -> list[Path]:
    from medssl.data.synth.dicom_writer import new_uid, write_series

    rng = np.random.default_rng(seed)
    written: list[Path] = []
    series = 0
    while len(written) < n_files:
        n = min(slices_per_series, n_files - len(written))
        tags = {
            "PatientID": f"P{series // 4}",
            "PatientName": "Bench^Patient",
            "StudyInstanceUID": new_uid(rng),
            "SeriesInstanceUID": new_uid(rng),
            "SeriesDescription": "t2_tse_tra",
            "StudyDate": "20240101",
        }
        volume = rng.integers(0, 1000, size=(size, size, n)).astype(float)
        names = [root / f"s{series:04d}" / f"{rng.integers(1e12):x}" for _ in range(n)]
        written += write_series(volume, names, spacing=(0.5, 0.5, 3.0), tags=tags, rng=rng)
        series += 1
    return written


def plain_loop(files: list[Path]) -> int:
    from pydicom import dcmread

    groups: dict[str, list[str]] = defaultdict(list)
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        groups[str(ds.SeriesInstanceUID)].append(str(path))
    return len(groups)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1000 files, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.repeats = 1000, 2

    from medssl.data.index import find_files, index_export

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_export(root, args.files)
        files = find_files(root)
        plain_loop(files)  # warm the page cache
        timings: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.repeats):
            start = time.perf_counter()
            n_plain = plain_loop(files)
            timings["plain pydicom loop (1 process)"].append(time.perf_counter() - start)
            for workers in sorted({1, args.workers}):
                start = time.perf_counter()
                result = index_export(root, salt="bench", workers=workers)
                timings[f"medssl index, {workers} worker(s)"].append(time.perf_counter() - start)
                assert result.summary["n_series"] == n_plain
    baseline = statistics.median(timings["plain pydicom loop (1 process)"])
    print(
        f"index throughput on {len(files)} files ({os.cpu_count()} CPUs visible, {args.workers} workers), "
        f"median of {args.repeats}"
    )
    print(f"{'method':<36} {'seconds':>8} {'files/s':>9} {'vs loop':>8}")
    rows = {}
    for name, values in timings.items():
        seconds = statistics.median(values)
        rows[name] = {"seconds": seconds, "files_per_s": len(files) / seconds, "ratio": baseline / seconds}
        print(f"{name:<36} {seconds:8.2f} {len(files) / seconds:9.0f} {baseline / seconds:7.2f}x")
    return rows


if __name__ == "__main__":
    main()
