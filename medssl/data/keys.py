"""PHI-free keys: salted hashes of patient IDs and DICOM UIDs.

Patient names, IDs, dates, accession numbers and raw UIDs never leave the reader. Everything downstream (manifests,
datalists, logs, checkpoints, plots) names patients, studies and series by keys made here. A key is an HMAC-SHA256 of
the identifier under a salt, truncated to 16 hex digits and prefixed with its kind (``pat-``, ``stu-``, ``ser-``,
``ins-``), so keys are stable across runs with the same salt, differ between sites with different salts, and cannot be
reversed by hashing a list of candidate IDs without the salt.

The salt comes from the ``salt`` argument, else the ``MEDSSL_SALT`` environment variable, else a fixed default with a
warning (the keys are then stable but anyone with medssl can recompute them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings

__all__ = ["SALT_ENV", "DEFAULT_SALT", "DefaultSaltWarning", "resolve_salt", "Keyer", "make_key"]

SALT_ENV = "MEDSSL_SALT"
DEFAULT_SALT = "medssl-default-salt-v1"
KEY_PREFIXES = {"patient": "pat", "study": "stu", "series": "ser", "instance": "ins", "case": "cas", "report": "rep"}


class DefaultSaltWarning(UserWarning):
    """Keys are being made with medssl's public default salt."""


def resolve_salt(salt: str | None = None, warn: bool = True) -> str:
    """Return the salt to use: the argument, else ``$MEDSSL_SALT``, else the default (with a warning).

    Args:
        salt: an explicit salt; empty strings count as missing.
        warn: warn when falling back to the default salt.

    Returns:
        The salt.
    """
    if salt:
        return salt
    env = os.environ.get(SALT_ENV)
    if env:
        return env
    if warn:
        warnings.warn(
            f"no salt given (--salt or ${SALT_ENV}): using medssl's default salt. Keys are stable but anyone with "
            "medssl can recompute them from patient IDs; set a secret salt for real exports.",
            DefaultSaltWarning,
            stacklevel=2,
        )
    return DEFAULT_SALT


def make_key(kind: str, identifier: str, salt: str) -> str:
    """Hash one identifier into a key of the given kind.

    Args:
        kind: ``patient``, ``study``, ``series``, ``instance``, ``case`` or ``report``.
        identifier: the raw identifier (PatientID, a UID, a dataset's case name ...).
        salt: the salt (see :func:`resolve_salt`).

    Returns:
        ``"<prefix>-<16 hex digits>"``.

    Raises:
        ValueError: unknown kind or empty identifier.
    """
    if kind not in KEY_PREFIXES:
        raise ValueError(f"unknown key kind {kind!r}; expected one of {sorted(KEY_PREFIXES)}")
    identifier = str(identifier).strip()
    if not identifier:
        raise ValueError(f"cannot make a {kind} key from an empty identifier")
    digest = hmac.new(salt.encode(), f"{kind}:{identifier}".encode(), hashlib.sha256).hexdigest()
    return f"{KEY_PREFIXES[kind]}-{digest[:16]}"


class Keyer:
    """Makes the keys of one run with one salt.

    Args:
        salt: explicit salt; see :func:`resolve_salt` for the fallbacks.
        warn: warn when the default salt is used.

    Example:
        >>> keyer = Keyer("site-secret", warn=False)
        >>> keyer.patient("12345678").startswith("pat-")
        True
    """

    def __init__(self, salt: str | None = None, warn: bool = True) -> None:
        self.salt = resolve_salt(salt, warn=warn)

    def __call__(self, kind: str, identifier: str) -> str:
        """The key of ``identifier`` (see :func:`make_key`)."""
        return make_key(kind, identifier, self.salt)

    def patient(self, patient_id: str) -> str:
        """Key of a patient ID."""
        return make_key("patient", patient_id, self.salt)

    def study(self, study_uid: str) -> str:
        """Key of a StudyInstanceUID."""
        return make_key("study", study_uid, self.salt)

    def series(self, series_uid: str) -> str:
        """Key of a SeriesInstanceUID."""
        return make_key("series", series_uid, self.salt)

    def case(self, case_id: str) -> str:
        """Key of a case name in a public layout (e.g. ``BraTS2021_00000``)."""
        return make_key("case", case_id, self.salt)
