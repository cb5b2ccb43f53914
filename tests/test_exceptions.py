"""One root, clear messages, no secret values."""

from __future__ import annotations

import confman.exceptions as exc
from confman import ConcurrencyConflict, ConfmanError, FieldError, ValidationFailed


def test_every_exception_derives_from_the_root() -> None:
    for name in exc.__all__:
        cls = getattr(exc, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, ConfmanError), name


def test_hierarchy_drawn_in_the_module_doc_matches_the_code() -> None:
    doc = exc.__doc__ or ""
    for name in exc.__all__:
        cls = getattr(exc, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert name in doc, f"{name} missing from the hierarchy drawing"


def test_messages_name_field_source_and_versions() -> None:
    failed = ValidationFailed("cache", "default", [FieldError("a.b", "bad")], source="update")
    assert str(failed) == "cache/default refused (source: update): a.b: bad"
    conflict = ConcurrencyConflict("cache", "default", expected=3, current=5)
    assert "expected version 3" in str(conflict) and "version is 5" in str(conflict)
    assert str(ConcurrencyConflict("items", "x", expected=0, current=2)) == (
        "items/x already exists (version 2)"
    )


def test_an_error_about_other_namespaces_is_withheld_from_who_may_not_read_them() -> None:
    neutral = FieldError("a.provider", "not available")
    precise = FieldError("a.model", "p lacks m", concerns=frozenset({"p"}), withheld=neutral)
    plain = FieldError("b", "bad")
    failed = exc.ConfigSourceError("r", "default", [precise, plain], source="rule")
    assert failed.seen_by(lambda _ns: True) is failed  # nothing to withhold
    told = failed.seen_by(lambda ns: ns != "p")
    assert type(told) is exc.ConfigSourceError and told.source == "rule"
    assert told.errors == (neutral, plain) and "lacks" not in str(told)
    # Who is told what is no part of what was refused.
    assert precise == FieldError("a.model", "p lacks m")
    bare = FieldError("c", "secret reason", concerns=frozenset({"p"}))
    assert "secret" not in bare.seen_by(lambda _ns: False).message


def test_permission_denied_tells_401_from_403() -> None:
    assert issubclass(exc.PermissionDenied, ConfmanError)
    refused = exc.PermissionDenied("writing needs the editor role; token 'svc' is service")
    assert refused.status == 403 and "editor role" in str(refused)
    assert exc.PermissionDenied("the token is unknown or revoked", status=401).status == 401
