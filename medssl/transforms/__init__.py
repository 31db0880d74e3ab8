"""medssl transforms, MONAI style: array transforms and their dictionary twins, and topical chains (MR stacking)."""

from __future__ import annotations

from medssl.transforms.array import (
    MISSING_POLICIES,
    MR_SEQUENCES,
    LoadVolume,
    RaisingCompose,
    StackSequences,
    find_medssl_error,
    same_grid,
)
from medssl.transforms.dictionary import (
    LoadVolumeD,
    LoadVolumed,
    LoadVolumeDict,
    StackSequencesD,
    StackSequencesd,
    StackSequencesDict,
)
from medssl.transforms.mr import mr_stack_transforms

__all__ = [
    "MR_SEQUENCES",
    "MISSING_POLICIES",
    "LoadVolume",
    "LoadVolumed",
    "LoadVolumeD",
    "LoadVolumeDict",
    "StackSequences",
    "StackSequencesd",
    "StackSequencesD",
    "StackSequencesDict",
    "mr_stack_transforms",
    "RaisingCompose",
    "find_medssl_error",
    "same_grid",
]
