"""Label matrix throughput: medssl's shared-annotation labeling (serial and parallel) vs one-LF-at-a-time labeling.

The corpus is generated MIMIC-style reports (``medssl.data.synth.report_text.generate_corpus``) and the LFs are the
shipped rule set (``chexpert_lfs()``: 64 LFs over 13 observations). Methods:

- ``baseline``: what a user writing independent labeling functions over raw text gets (a Snorkel-style applier):
  every LF parses the report and finds its mentions and cues on its own (``lf(AnnotatedReport(parse_report(t)))``
  for each LF), one process;
- ``medssl serial``: ``label_matrix(texts, n_jobs=1)``: one parse and one annotation per report shared by all LFs;
- ``medssl parallel``: ``label_matrix(texts, n_jobs=--jobs)``: the same in worker processes (joblib), chunks of
  ``--chunk-size`` reports.

The baseline runs on the first ``--baseline-n`` reports (it is slow) and must give the same votes as medssl. Printed:
reports per second, the speed-up over the baseline measured in the same run, and the time 100,000 reports would take.
The load average is printed too: on a shared machine other processes slow every method.

    python benchmarks/bench_label_matrix.py --n 100000 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="reports labelled by medssl")
    parser.add_argument("--baseline-n", type=int, default=400, help="reports labelled by the baseline")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the parallel run")
    parser.add_argument("--chunk-size", type=int, default=2000, help="reports per parallel task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.baseline_n, args.chunk_size = 4000, 150, 1000

    from medssl.data.reports import parse_report
    from medssl.data.synth.report_text import generate_corpus
    from medssl.weak import AnnotatedReport, chexpert_lfs, label_matrix

    started = time.perf_counter()
    texts, _ = generate_corpus(args.n, seed=args.seed)
    print(
        f"generated {args.n} reports in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} cores"
    )
    lfs = chexpert_lfs()
    subset = texts[: args.baseline_n]

    started = time.perf_counter()
    baseline = np.full((len(subset), len(lfs)), -1, dtype=np.int8)
    for i, text in enumerate(subset):
        for j, lf in enumerate(lfs):
            baseline[i, j] = lf(AnnotatedReport(parse_report(text)))
    baseline_rate = len(subset) / (time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    serial, errors = label_matrix(texts, n_jobs=1)
    serial_wall, serial_cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not errors and np.array_equal(serial.votes[: len(subset)], baseline), "medssl and baseline disagree"
    rows = [("baseline (each LF parses)", len(subset), baseline_rate), ("medssl serial", args.n, args.n / serial_wall)]
    if args.jobs != 1:
        started = time.perf_counter()
        parallel, _ = label_matrix(texts, n_jobs=args.jobs, chunk_size=args.chunk_size)
        rows.append((f"medssl parallel ({args.jobs} jobs)", args.n, args.n / (time.perf_counter() - started)))
        assert np.array_equal(parallel.votes, serial.votes), "parallel and serial label matrices differ"

    print(f"{len(lfs)} labeling functions; serial CPU time {serial_cpu / args.n * 1000:.2f} ms per report")
    print(f"{'method':<28} {'reports':>8} {'reports/s':>10} {'x baseline':>11} {'100k reports':>13}")
    for name, n, rate in rows:
        print(f"{name:<28} {n:>8} {rate:>10.0f} {rate / baseline_rate:>11.1f} {100_000 / rate / 60:>10.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
