"""Synthetic data in the public datasets' real layouts, with a learnable signal.

Each generator module defines ``LAYOUT`` (the name used by ``medssl synth LAYOUT``), ``HELP``,
``add_arguments(parser)`` for its own options and ``generate(out, n, seed, **options) -> dict`` returning a summary.
"""

from __future__ import annotations

__all__: list[str] = []
