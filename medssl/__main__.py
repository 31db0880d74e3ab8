"""``python -m medssl`` runs the command line."""

from __future__ import annotations

import sys

from medssl.cli.main import main

__all__: list[str] = []

sys.exit(main())
