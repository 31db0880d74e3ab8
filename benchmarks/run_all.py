"""Run every benchmark (`make bench`): each `benchmarks/bench_*.py` in a fresh process, outputs kept in --out.

Quick settings by default so that the whole run takes minutes on a laptop; `--full` uses each script's defaults.
The figures quoted in docs/benchmarks.md come from these scripts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench_output", help="folder for each benchmark's output")
    parser.add_argument("--full", action="store_true", help="each script's full default sizes")
    parser.add_argument("--only", nargs="*", help="names of benchmarks to run (e.g. bench_index)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    failed = []
    for script in scripts:
        command = [sys.executable, str(script)] + ([] if args.full else ["--quick"])
        print(f"== {script.stem}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        text = completed.stdout + (completed.stderr if completed.returncode else "")
        (out / f"{script.stem}.txt").write_text(text)
        print(text.rstrip())
        status = "ok" if completed.returncode == 0 else "FAILED"
        print(f"-- {script.stem}: {status} in {time.perf_counter() - started:.0f} s")
        if completed.returncode:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
