"""Exceptions raised by medssl.

Every error names the file (or case) it is about and the problem, so that a message read in a log of a 10,000-file
export is enough to find and fix the input. Batch jobs catch :class:`MedsslError`, report it and go on; single-item
calls let it propagate.
"""

from __future__ import annotations

import os

__all__ = [
    "MedsslError",
    "InputFileError",
    "DicomReadError",
    "SeriesGeometryError",
    "MissingSequenceError",
    "ManifestError",
    "DatalistError",
]


class MedsslError(ValueError):
    """Base class of every error medssl raises on bad input.

    Args:
        problem: what is wrong, in words a user can act on.
        path: the file, folder or case the problem is about (shown first in the message).
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class InputFileError(MedsslError):
    """A file cannot be read or used (missing, truncated, wrong format)."""


class DicomReadError(InputFileError):
    """A DICOM file cannot be used: not DICOM, truncated, no pixel data, unsupported transfer syntax ..."""


class SeriesGeometryError(MedsslError):
    """A DICOM series cannot form one volume: mixed orientations, missing slices, inconsistent spacing ..."""


class MissingSequenceError(MedsslError):
    """A study lacks an MR sequence (or a view) that the missing-input policy requires."""


class ManifestError(MedsslError):
    """A manifest (one row per series) does not follow its schema."""


class DatalistError(MedsslError):
    """A datalist (MONAI list of dicts) does not follow its schema."""
