"""`confman.sealed`: what a notice may carry, and what a receiver refuses to trust.

The transport side (a listener applying sealed changes over Redis, forgeries on the
channel) is in ``tests/cluster/test_sealed.py``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

from cryptography.fernet import Fernet

from confman.bus import ChangeNotice
from confman.bus.wire import decode_notice, encode_notice
from confman.change import Action, ChangeRecord
from confman.sealed import MAX_SEALED_BYTES, SEAL_TTL_SECONDS, seal, unseal
from confman.secrets import KeyRing, generate_key

KEY = generate_key()


def record(**changes: object) -> ChangeRecord:
    base = ChangeRecord(
        seq=41, namespace="cache", key="default", version=3, action=Action.UPDATE,
        actor="ops", reason="warm", before={"ttl": 1}, after={"ttl": 2}, changed=("ttl",),
        origin="writer", committed_at=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
        environment="production",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def notice_of(r: ChangeRecord, change: str | None) -> ChangeNotice:
    return ChangeNotice(
        r.namespace, r.key, r.version, r.seq, r.origin, r.environment or "", None, True, change
    )


def test_a_sealed_change_opens_as_the_change_log_row_catch_up_reads() -> None:
    keys = KeyRing([KEY])
    r = record()
    data = {"ttl": 2, "api_key": {"$encrypted": "gAAAA..."}}
    token = seal(keys, r, data)
    assert token is not None and "warm" not in token and "ttl" not in token  # ciphertext
    # Through the wire, as every transport carries it.
    received = decode_notice(encode_notice(notice_of(r, token)))
    logged = unseal(KeyRing([generate_key(), KEY]), received)  # any key of the ring opens
    assert logged is not None
    assert logged.data == data
    assert logged.record == dataclasses.replace(r, before=None, after=None)


def test_what_is_not_sealed() -> None:
    assert seal(KeyRing([]), record(), {"ttl": 2}) is None  # no key: notices stay hints
    assert seal(KeyRing([KEY]), record(change_set="set-1"), {"ttl": 2}) is None
    big = {"blob": "x" * MAX_SEALED_BYTES}
    assert seal(KeyRing([KEY]), record(), big) is None
    assert seal(KeyRing([KEY]), record(), {"blob": "x" * (MAX_SEALED_BYTES // 2)})


def test_a_receiver_refuses_what_it_cannot_trust() -> None:
    keys = KeyRing([KEY])
    r = record()
    token = seal(keys, r, {"ttl": 2})
    assert token is not None
    assert unseal(KeyRing([generate_key()]), notice_of(r, token)) is None  # another key
    assert unseal(KeyRing([]), notice_of(r, token)) is None  # no key here
    assert unseal(keys, notice_of(r, None)) is None  # nothing carried
    # A real sealed change moved onto another document's (or version's, or seq's) notice.
    for moved in ({"key": "other"}, {"version": 4}, {"seq": 42}, {"environment": ""}):
        other = dataclasses.replace(notice_of(r, token), **moved)  # type: ignore[arg-type]
        assert unseal(keys, other) is None, moved
    # Sealed long ago (a captured notice replayed), or not a token at all.
    old = Fernet(KEY).encrypt_at_time(b"[]", int(time.time()) - SEAL_TTL_SECONDS - 5)
    assert unseal(keys, notice_of(r, old.decode())) is None
    assert unseal(keys, notice_of(r, "not a token")) is None
    assert unseal(keys, notice_of(r, "A" * 100_000)) is None  # never decoded: too long
    # Sealed with the right key but not a change: refused, not raised.
    for body in (b"[]", b"{}", b"not json", b'["cache"]'):
        assert unseal(keys, notice_of(r, Fernet(KEY).encrypt(body).decode())) is None
