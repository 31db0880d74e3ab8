from __future__ import annotations

import warnings

import pytest

from medssl.data.keys import DEFAULT_SALT, DefaultSaltWarning, Keyer, make_key, resolve_salt


def test_keys_are_stable_prefixed_and_salt_dependent():
    a = Keyer("site-a", warn=False)
    b = Keyer("site-b", warn=False)
    assert a.patient("12345678") == Keyer("site-a", warn=False).patient("12345678")
    assert a.patient("12345678") != b.patient("12345678")
    assert a.patient("12345678").startswith("pat-") and len(a.patient("12345678")) == 20
    assert a.study("1.2.3").startswith("stu-") and a.series("1.2.3").startswith("ser-")
    # the same identifier in two roles gives two different keys
    assert a.study("1.2.3")[4:] != a.series("1.2.3")[4:]
    assert "12345678" not in a.patient("12345678")


def test_salt_resolution(monkeypatch):
    monkeypatch.setenv("MEDSSL_SALT", "from-env")
    assert resolve_salt("explicit") == "explicit"
    assert resolve_salt(None) == "from-env"
    monkeypatch.delenv("MEDSSL_SALT")
    with pytest.warns(DefaultSaltWarning):
        assert resolve_salt(None) == DEFAULT_SALT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_salt(None, warn=False) == DEFAULT_SALT


def test_bad_key_requests():
    with pytest.raises(ValueError, match="unknown key kind"):
        make_key("doctor", "x", "s")
    with pytest.raises(ValueError, match="empty identifier"):
        make_key("patient", "  ", "s")
