"""``medssl demo``: run medssl end to end on data it generates (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run"]

COMMAND = "demo"
HELP = "run medssl end to end on generated data (what `make demo` runs)"
DESCRIPTION = """Run every capability of medssl end to end on data it generates in the public layouts, on a CPU in
minutes (--list shows the stages):
  pacs    a PACS-style MR export indexed, one study stacked as a named 4-channel tensor
  fusion  BraTS-layout cases: early vs late fusion vs FLAIR alone, cross-validated, with CIs and DeLong tests
  cxr     MIMIC-CXR-JPG images + reports: weak labels from the reports, a tiny offline BERT, ConVIRT pretraining

examples:
  medssl demo --out demo_output
  medssl demo --out demo_output --stages pacs
  medssl demo --out demo_output --stages cxr --seed 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``medssl demo``."""
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    parser.add_argument("--stages", nargs="+", help="run only these stages (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all generators and training runs")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from medssl.demo import STAGES, run_demo

    if args.list:
        for name, stage in STAGES.items():
            print(f"{name:12s} {(stage.__doc__ or '').strip().splitlines()[0]}")
        return 0
    run_demo(args.out, args.stages, args.seed)
    print(f"demo finished: outputs in {args.out}")
    return 0
