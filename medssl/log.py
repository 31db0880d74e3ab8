"""Logging for medssl: one named logger per module, a single configuration point for the CLI.

Log records carry salted keys, never patient names, IDs, dates or raw UIDs (see :mod:`medssl.data.keys`).
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["get_logger", "configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """Return the logger of a medssl module (``medssl.<...>``).

    Args:
        name: usually ``__name__`` of the calling module.

    Returns:
        The logger; it has no handler of its own, the application configures them.
    """
    return logging.getLogger(name if name.startswith("medssl") else f"medssl.{name}")


def configure_logging(verbosity: int = 0, stream=None) -> None:
    """Configure the ``medssl`` logger for command-line use.

    Args:
        verbosity: 0 prints warnings and above, 1 info, 2 or more debug.
        stream: where to write (standard error by default).
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("medssl")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print warnings as one line (``medssl: warning: ...``) on the command line, without source lines."""
    print(f"medssl: warning: {message}", file=file or sys.stderr)
