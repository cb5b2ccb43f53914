"""VirtualKeyConfigurationManager: issue/authenticate, revocation, expiry, the bounded
cache (negative entries, single-flight loads, exact invalidation), the server secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from confman import Action, ConfigHub, NotFound, SecretsUnavailable, ValidationFailed
from confman.bus import LocalBus
from confman.managers import (
    CacheConfigurationManager,
    VirtualKeyConfigurationManager,
    VirtualKeySecretManager,
)
from confman.managers.virtual_key import KEY_PREFIX, _hmac_sha256
from confman.store.engine import sqlite_path
from confman.testing import record_changes

from .conftest import GATEWAY_MANAGERS, connect_gateway, count_queries, raw_table_text


def vk(hub: ConfigHub) -> VirtualKeyConfigurationManager:
    return hub.manager(VirtualKeyConfigurationManager)


def isolated(database_url: str, env: dict[str, str], name: str, **options: Any) -> Any:
    """An instance that hears no bus notices: it learns changes only by catching up."""
    return connect_gateway(
        database_url, env, bus=LocalBus(f"isolated-{name}"), catch_up_interval=3600, **options
    )


async def test_issue_returns_the_plaintext_once_and_authenticate_finds_it(
    ghub: ConfigHub, database_url: str
) -> None:
    keys = vk(ghub)
    issued = await keys.issue(
        {"name": "team-a", "allowed_models": ["gpt-4o"], "budget": {"amount": 100}},
        actor="ops",
    )
    assert issued.plaintext.startswith(KEY_PREFIX) and len(issued.plaintext) >= 40
    assert len(issued.key_id) == 64 and issued.key_id == keys.key_id(issued.plaintext)
    assert issued.plaintext not in repr(issued)
    assert issued.value.hint == f"{KEY_PREFIX}…{issued.plaintext[-4:]}"
    assert issued.version == 1

    found = await keys.authenticate(issued.plaintext)
    assert found is not None and found.name == "team-a"
    assert found.allows("gpt-4o") and not found.allows("o1")
    assert found.budget is not None and found.budget.period == "monthly"
    assert await keys.authenticate(issued.plaintext + "x") is None
    assert await keys.authenticate("") is None
    assert await keys.authenticate("x" * 10_000) is None

    raw = "\n".join(await raw_table_text(database_url))
    assert issued.plaintext not in raw
    assert issued.plaintext[len(KEY_PREFIX) :] not in raw
    history = await keys.history(issued.key_id)
    assert [(h.action, h.actor) for h in history] == [(Action.CREATE, "ops")]


async def test_revoke_takes_effect_at_once(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "svc"})
    assert await keys.authenticate(issued.plaintext) is not None
    change = await keys.revoke(issued.key_id, actor="sec", reason="leaked")
    assert change.changed_fields == ("enabled",)
    assert await keys.authenticate(issued.plaintext) is None
    history = await keys.history(issued.key_id)
    assert history[0].reason == "leaked"
    # Re-enabling works as an ordinary update.
    await keys.update({"enabled": True}, key=issued.key_id)
    assert await keys.authenticate(issued.plaintext) is not None


async def test_deleted_and_disabled_keys_do_not_authenticate(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    disabled = await keys.issue({"name": "off", "enabled": False})
    assert await keys.authenticate(disabled.plaintext) is None
    doomed = await keys.issue({"name": "doomed"})
    await keys.delete(doomed.key_id)
    assert await keys.authenticate(doomed.plaintext) is None
    with pytest.raises(NotFound):
        keys.get(doomed.key_id)
    keys.clear_cache()
    assert await keys.authenticate(doomed.plaintext) is None


async def test_expired_keys_do_not_authenticate(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    now = datetime.now(UTC)
    issued = await keys.issue({"name": "temp", "expires_at": now + timedelta(hours=1)})
    assert await keys.authenticate(issued.plaintext) is not None
    assert await keys.authenticate(issued.plaintext, now=now + timedelta(hours=2)) is None
    past = await keys.issue({"name": "old", "expires_at": "2000-01-01T00:00:00"})
    assert past.value.expires_at == datetime(2000, 1, 1, tzinfo=UTC)  # naive means UTC
    assert await keys.authenticate(past.plaintext) is None
    # Extending the expiry brings it back.
    await keys.update({"expires_at": (now + timedelta(days=1)).isoformat()}, key=past.key_id)
    assert await keys.authenticate(past.plaintext) is not None


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "x", "budget": {"amount": 0}}, "budget.amount"),
        ({"name": "x", "budget": {"amount": -5}}, "budget.amount"),
        ({"name": "x", "budget": {"amount": 5, "period": "hourly"}}, "budget.period"),
        ({"name": "x", "budget": {"amount": 5, "currency": "usd"}}, "budget.currency"),
        ({"name": "x", "rpm_limit": 0}, "rpm_limit"),
        ({"name": "x", "tpm_limit": -1}, "tpm_limit"),
        ({"name": "x", "expires_at": "soon"}, "expires_at"),
        ({"name": "x", "allowed_models": [""]}, "allowed_models.0"),
        ({"name": "x", "owner": "me"}, "owner"),
    ],
)
async def test_invalid_settings_are_refused_and_nothing_is_written(
    ghub: ConfigHub, doc: dict[str, Any], path: str
) -> None:
    keys = vk(ghub)
    seen = record_changes(keys)
    with pytest.raises(ValidationFailed) as caught:
        await keys.issue(doc)
    assert path in caught.value.paths, caught.value
    assert await ghub.store.namespaces() == {}  # not even the server secret was generated
    assert seen.changes == []


async def test_unknown_keys_are_cached_as_unknown(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    await keys.issue({"name": "real"})
    before = keys.cache_info()
    with count_queries(ghub) as queries:
        assert await keys.authenticate("sk-cm-not-a-real-key") is None
        assert await keys.authenticate("sk-cm-not-a-real-key") is None
        assert await keys.authenticate("sk-cm-not-a-real-key") is None
    assert len(queries) == 1
    info = keys.cache_info()
    assert info.negative_hits - before.negative_hits == 2
    assert info.negative_size == 1 and info.misses - before.misses == 1


async def test_a_key_created_after_a_negative_lookup_authenticates(ghub: ConfigHub) -> None:
    # Exact invalidation covers unknown entries too: creating the key replaces it.
    keys = vk(ghub)
    await keys.issue({"name": "first"})  # makes the server secret
    plaintext = KEY_PREFIX + "chosen-by-test-0123456789abcdefghijklmnop"
    key_id = keys.key_id(plaintext)
    assert key_id is not None
    assert await keys.authenticate(plaintext) is None
    await keys.create(key_id, {"name": "late"})
    found = await keys.authenticate(plaintext)
    assert found is not None and found.name == "late"


@pytest.mark.parametrize("known", [True, False])
async def test_many_concurrent_misses_load_once(ghub: ConfigHub, known: bool) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "hot"})
    plaintext = issued.plaintext if known else KEY_PREFIX + "unknown"
    keys.clear_cache()
    before = keys.cache_info()
    with count_queries(ghub) as queries:
        results = await asyncio.gather(*(keys.authenticate(plaintext) for _ in range(50)))
    assert len(queries) == 1, queries
    assert all((r is not None) == known for r in results)
    info = keys.cache_info()
    assert info.loads - before.loads == 1
    assert info.misses - before.misses == 50


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "hot"})
    keys.clear_cache()
    first = asyncio.ensure_future(keys.authenticate(issued.plaintext))
    second = asyncio.ensure_future(keys.authenticate(issued.plaintext))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second) is not None
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cache_is_bounded(database_url: str, hub_env: dict[str, str]) -> None:
    class SmallCache(VirtualKeyConfigurationManager):
        cache_size = 5
        negative_cache_size = 3

    async with connect_gateway(database_url, hub_env, managers=[SmallCache]) as hub:
        keys = hub.manager(SmallCache)
        issued = [await keys.issue({"name": f"k{i}"}) for i in range(12)]
        for key in issued:
            assert await keys.authenticate(key.plaintext) is not None
        for i in range(10):
            assert await keys.authenticate(f"{KEY_PREFIX}bogus-{i}") is None
        info = keys.cache_info()
        assert info.size <= 5 and info.maxsize == 5
        assert info.negative_size <= 3 and info.negative_maxsize == 3
        assert info.memo_size <= 5 and info.memo_maxsize == 5  # the memo follows cache_size
        assert len(keys.keys()) <= 5


async def test_cached_entries_expire(database_url: str, hub_env: dict[str, str]) -> None:
    clock = [0.0]

    class Clocked(VirtualKeyConfigurationManager):
        def __init__(self, hub: ConfigHub) -> None:
            super().__init__(
                hub, cache_ttl_seconds=30, negative_cache_ttl_seconds=5, timer=lambda: clock[0]
            )

    async with connect_gateway(database_url, hub_env, managers=[Clocked]) as hub:
        keys = hub.manager(Clocked)
        issued = await keys.issue({"name": "k"})
        with count_queries(hub) as queries:
            assert await keys.authenticate(issued.plaintext) is not None
            assert await keys.authenticate(f"{KEY_PREFIX}nope") is None
            assert len(queries) == 1
            clock[0] = 10  # the unknown entry expired, the known one did not
            await keys.authenticate(issued.plaintext)
            await keys.authenticate(f"{KEY_PREFIX}nope")
            assert len(queries) == 2
            assert keys.cache_info().memo_size == 1  # the known key only
            clock[0] = 45  # presented plaintexts leave the memo with the cache's TTL
            assert keys.cache_info().memo_size == 0
            assert await keys.authenticate(issued.plaintext) is not None
            assert len(queries) == 3


async def test_memory_reads_see_only_cached_keys(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "k"})
    assert keys.get(issued.key_id).name == "k"
    assert issued.key_id in keys and keys.keys() == [issued.key_id]
    assert [s.path for s in keys.explain(issued.key_id)][:1] == ["name"]
    keys.clear_cache()
    with pytest.raises(NotFound, match="fetch"):
        keys.get(issued.key_id)
    assert keys.find(issued.key_id) is None and issued.key_id not in keys
    fetched = await keys.fetch(issued.key_id)
    assert fetched is not None and fetched.name == "k"
    assert keys.get(issued.key_id) == fetched
    assert await keys.fetch("0" * 64) is None


async def test_writes_to_an_uncached_key_load_it_first(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "k"})
    keys.clear_cache()
    change = await keys.update({"rpm_limit": 60}, key=issued.key_id, actor="ops")
    assert change.version == 2 and change.changed_fields == ("rpm_limit",)
    with pytest.raises(NotFound):
        await keys.update({"rpm_limit": 60}, key="f" * 64)
    # validate() previews against the cached document: fetch first.
    keys.clear_cache()
    await keys.fetch(issued.key_id)
    preview = keys.validate({"rpm_limit": 5}, key=issued.key_id)
    assert preview.rpm_limit == 5 and preview.name == "k"
    assert keys.version(issued.key_id) == 2


async def test_revocation_reaches_an_instance_through_the_bus(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        connect_gateway(database_url, hub_env) as a,
        connect_gateway(database_url, hub_env) as b,
    ):
        issued = await vk(a).issue({"name": "shared"})
        other = await vk(a).issue({"name": "bystander"})
        assert await vk(b).authenticate(issued.plaintext) is not None
        assert await vk(b).authenticate(other.plaintext) is not None
        seen = record_changes(vk(b))
        sealed = b.stats.sealed_applied
        await vk(a).revoke(issued.key_id)
        await seen.wait_for(version=2, key=issued.key_id)
        assert b.stats.sealed_applied > sealed  # the revocation came with its notice
        with count_queries(b) as queries:
            assert await vk(b).authenticate(issued.plaintext) is None
            assert await vk(b).authenticate(other.plaintext) is not None  # still cached
        assert queries == []
        assert vk(b).cache_info().invalidations == 1


async def test_revocation_reaches_an_instance_through_catch_up(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        isolated(database_url, hub_env, "a") as a,
        isolated(database_url, hub_env, "b") as b,
    ):
        issued = await vk(a).issue({"name": "shared"})
        other = await vk(a).issue({"name": "bystander"})
        assert await vk(b).authenticate(issued.plaintext) is not None
        assert await vk(b).authenticate(other.plaintext) is not None
        seen = record_changes(vk(b))
        await vk(a).revoke(issued.key_id)
        await vk(a).delete(other.key_id)
        third = await vk(a).issue({"name": "third"})
        await b.catch_up()
        assert await vk(b).authenticate(issued.plaintext) is None
        assert await vk(b).authenticate(other.plaintext) is None
        assert await vk(b).authenticate(third.plaintext) is not None
        # Every remote change is emitted once, in order, cached or not: catch-up applies
        # each version (the creates included), not only the newest of each key.
        assert sorted((c.key, c.version) for c in seen.changes) == sorted(
            [
                (issued.key_id, 1),
                (issued.key_id, 2),
                (other.key_id, 1),
                (other.key_id, 2),
                (third.key_id, 1),
            ]
        )
        await b.catch_up()
        assert len(seen.changes) == 5


async def test_an_own_write_during_a_catch_up_run_is_emitted_once(
    database_url: str, hub_env: dict[str, str]
) -> None:
    # A catch-up run reads another instance's row and waits for that key's lock; an own
    # write commits meanwhile, which moves applied_seq past what catch-up has read. The
    # next run reads the own write's row and must know it was emitted already.
    async with (
        isolated(database_url, hub_env, "a") as a,
        isolated(database_url, hub_env, "b") as b,
    ):
        remote = await vk(b).issue({"name": "remote"})
        seen = record_changes(vk(a))
        async with vk(a)._lock(remote.key_id):
            run = asyncio.create_task(a.catch_up())
            await asyncio.sleep(0.5)  # the run has read the row and waits for the lock
            own = await vk(a).issue({"name": "own"})
        await run
        await a.catch_up()
        await a.catch_up()
        assert seen.versions(own.key_id) == [1]
        assert seen.versions(remote.key_id) == [1]


async def test_own_changes_are_emitted_once_even_after_eviction(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    seen = record_changes(keys)
    issued = await keys.issue({"name": "k"})
    await keys.revoke(issued.key_id)
    keys.clear_cache()
    await ghub.catch_up()
    await ghub.catch_up()
    assert seen.versions(issued.key_id) == [1, 2]
    # Until the next catch-up run the version stays known (the hub acknowledges it) ...
    assert keys.version(issued.key_id) == 2
    # ... and what catch-up has passed is forgotten: memory stays bounded.
    other = await keys.issue({"name": "other"})
    await ghub.catch_up()
    assert keys.cache_info().pending_versions == 1
    assert seen.versions(issued.key_id) == [1, 2] and seen.versions(other.key_id) == [1]


async def test_the_server_secret_is_shared_and_cannot_change(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        isolated(database_url, hub_env, "a") as a,
        isolated(database_url, hub_env, "b") as b,
    ):
        issued = await vk(a).issue({"name": "k"})
        # b started before the secret existed and heard nothing: it looks it up.
        found = await vk(b).authenticate(issued.plaintext)
        assert found is not None
        secrets = a.manager(VirtualKeySecretManager)
        with pytest.raises(ValidationFailed, match="cannot be changed or removed"):
            await secrets.update({"hmac_key": "y" * 48})
        with pytest.raises(ValidationFailed, match="cannot be changed or removed"):
            await secrets.delete()
        assert secrets.version() == 1
        masked = (await secrets.history())[0].after
        assert masked is not None and masked["hmac_key"].startswith("**********#")


async def test_concurrent_first_issues_agree_on_one_secret(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        isolated(database_url, hub_env, "a") as a,
        isolated(database_url, hub_env, "b") as b,
    ):
        one, two = await asyncio.gather(vk(a).issue({"name": "1"}), vk(b).issue({"name": "2"}))
        for hub in (a, b):
            assert await vk(hub).authenticate(one.plaintext) is not None
            assert await vk(hub).authenticate(two.plaintext) is not None


async def test_the_server_secret_can_come_from_the_environment(
    database_url: str, hub_env: dict[str, str]
) -> None:
    secret = "s" * 40
    env = {**hub_env, "CONFMAN_VIRTUAL_KEY_SECRET__HMAC_KEY": secret}
    async with connect_gateway(database_url, env) as hub:
        issued = await vk(hub).issue({"name": "k"})
        expected = hmac.new(secret.encode(), issued.plaintext.encode(), hashlib.sha256)
        assert issued.key_id == expected.hexdigest()
        assert "virtual_key_secret" not in await hub.store.namespaces()
        assert await vk(hub).authenticate(issued.plaintext) is not None


async def test_no_key_authenticates_before_any_was_issued(ghub: ConfigHub) -> None:
    assert await vk(ghub).authenticate(f"{KEY_PREFIX}anything") is None
    assert vk(ghub).key_id("x") is None


async def test_overrides_apply_to_one_key(database_url: str, hub_env: dict[str, str]) -> None:
    async with connect_gateway(database_url, hub_env) as hub:
        issued = await vk(hub).issue({"name": "k"})
    env = {**hub_env, f"CONFMAN_VIRTUAL_KEY__{issued.key_id}__ENABLED": "false"}
    async with connect_gateway(
        database_url, env, managers=[*GATEWAY_MANAGERS, CacheConfigurationManager]
    ) as hub:
        assert await vk(hub).authenticate(issued.plaintext) is None
        fetched = await vk(hub).fetch(issued.key_id)
        assert fetched is not None and not fetched.enabled


async def test_a_remote_change_is_emitted_even_if_the_key_was_read_first(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        isolated(database_url, hub_env, "a") as a,
        isolated(database_url, hub_env, "b") as b,
    ):
        issued = await vk(a).issue({"name": "k"})
        seen = record_changes(vk(b))
        assert await vk(b).authenticate(issued.plaintext) is not None  # read at v1
        await b.catch_up()
        assert [(c.key, c.version) for c in seen.changes] == [(issued.key_id, 1)]
        await vk(a).revoke(issued.key_id)
        await b.catch_up()
        await b.catch_up()
        assert seen.versions(issued.key_id) == [1, 2]
        assert seen.changes[-1].old is not None and seen.changes[-1].old.enabled
        assert await vk(b).authenticate(issued.plaintext) is None


async def test_a_short_secret_override_is_refused_at_start(
    database_url: str, hub_env: dict[str, str]
) -> None:
    env = {**hub_env, "CONFMAN_VIRTUAL_KEY_SECRET__HMAC_KEY": "too-short"}
    with pytest.raises(ValidationFailed, match="CONFMAN_VIRTUAL_KEY_SECRET__HMAC_KEY"):
        async with connect_gateway(database_url, env):
            pass


async def test_issuing_without_any_key_is_a_clear_error(database_url: str) -> None:
    async with connect_gateway(database_url, {}) as hub:
        if sqlite_path(database_url) is not None:  # the embedded default makes a key file
            assert await vk(hub).issue({"name": "k"})
            return
        with pytest.raises(SecretsUnavailable, match="CONFMAN_ENCRYPTION_KEY"):
            await vk(hub).issue({"name": "k"})
        assert await hub.store.namespaces() == {}


# Keys around SHA-256's 64-byte block (a longer key is hashed first, a shorter one padded).
hmac_keys = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=0, max_value=130).map(lambda n: bytes(range(n))),  # every length
    st.text(max_size=80).map(str.encode),
)
hmac_messages = st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode))


@given(key=hmac_keys, message=hmac_messages)
@example(key=b"", message=b"")
@example(key=b"k" * 63, message=b"")
@example(key=b"k" * 64, message=b"m")
@example(key=b"k" * 65, message=b"m")
@example(key=bytes(range(256)) * 8, message=b"m" * 1000)
@example(key="clé-secrète-ü".encode(), message=f"{KEY_PREFIX}ключ-🔑".encode())
def test_the_precomputed_hmac_is_the_stdlib_hmac(key: bytes, message: bytes) -> None:
    # Issued keys are named by it: it must stay bit for bit HMAC-SHA256.
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    hexdigest = _hmac_sha256(key)
    assert hexdigest(message) == expected
    assert hexdigest(message) == expected  # the keyed states are copied, never consumed
    assert hexdigest(b"other") == hmac.new(key, b"other", hashlib.sha256).hexdigest()


async def test_key_ids_follow_the_secret(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    plaintext = f"{KEY_PREFIX}ünïcödé-🔑"
    assert keys.key_id(plaintext) is None  # no secret yet
    issued = await keys.issue({"name": "k"})  # generates and stores the secret
    secret = keys.secret_manager.secret()
    assert secret is not None
    for text in (plaintext, issued.plaintext, "x"):
        assert keys.key_id(text) == hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()
    found = await keys.authenticate(issued.plaintext)
    assert found is not None and found.name == "k"


async def test_a_hit_and_a_miss_answer_as_active_does(ghub: ConfigHub) -> None:
    # A hit checks what the cached entry precomputed; a miss asks the model itself.
    keys = vk(ghub)
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    issued = [
        await keys.issue(doc)
        for doc in (
            {"name": "plain"},
            {"name": "off", "enabled": False},
            {"name": "soon", "expires_at": now + hour},
            {"name": "off-soon", "enabled": False, "expires_at": now + hour},
            {"name": "past", "expires_at": now - hour},
        )
    ]
    instants = [None, now, now + hour - timedelta(microseconds=1), now + hour, now + 2 * hour]
    for cached in (True, False):
        for at in instants:
            for item in issued:
                if not cached:
                    keys.clear_cache()
                hits = keys.cache_info().hits
                found = await keys.authenticate(item.plaintext, now=at)
                assert (found is not None) == item.value.active(at), (item.value.name, at)
                assert found is None or found == item.value
                assert keys.cache_info().hits == hits + cached


def count_hashes(keys: VirtualKeyConfigurationManager) -> list[bytes]:
    """Record every HMAC `authenticate` computes (around the real one, keyed as it was)."""
    hashed: list[bytes] = []
    keying = keys._current_keying()
    hexdigest = keying.hexdigest
    assert hexdigest is not None

    def counted(message: bytes) -> str:
        hashed.append(message)
        return hexdigest(message)

    keys._keying = keying._replace(hexdigest=counted)
    return hashed


async def test_a_presented_key_is_hashed_once_while_remembered(ghub: ConfigHub) -> None:
    keys = vk(ghub)
    issued = await keys.issue({"name": "k"})
    hashed = count_hashes(keys)
    unknown = f"{KEY_PREFIX}unknown"
    for _ in range(3):
        assert await keys.authenticate(issued.plaintext) is not None
        assert await keys.authenticate(unknown) is None
    # A stored key is remembered; an unknown one is hashed each time and never kept.
    assert hashed == [issued.plaintext.encode()] + [unknown.encode()] * 3
    assert keys.cache_info().memo_size == 1
    # The memo names the key, the cache still decides: a revocation applies at once.
    await keys.revoke(issued.key_id)
    assert await keys.authenticate(issued.plaintext) is None
    assert len(hashed) == 4
    keys.clear_cache()
    assert keys.cache_info().memo_size == 0
    assert await keys.authenticate(issued.plaintext) is None  # read again, still revoked
    assert await keys.authenticate(issued.plaintext) is None
    assert len(hashed) == 5 and keys.cache_info().memo_size == 1


async def test_the_memo_can_be_turned_off(database_url: str, hub_env: dict[str, str]) -> None:
    class NoMemo(VirtualKeyConfigurationManager):
        key_id_memo_size = 0

    async with connect_gateway(database_url, hub_env, managers=[NoMemo]) as hub:
        keys = hub.manager(NoMemo)
        issued = await keys.issue({"name": "k"})
        hashed = count_hashes(keys)
        for _ in range(3):
            assert await keys.authenticate(issued.plaintext) is not None
        assert len(hashed) == 3
        info = keys.cache_info()
        assert info.memo_size == 0 and info.memo_maxsize == 0 and info.hits == 3


async def test_a_new_secret_value_starts_an_empty_memo(ghub: ConfigHub) -> None:
    # The stored secret cannot change, but its manager's value object can be replaced
    # (a reload): ids remembered under an earlier value are never trusted past it.
    keys = vk(ghub)
    issued = await keys.issue({"name": "k"})
    assert await keys.authenticate(issued.plaintext) is not None
    assert keys.cache_info().memo_size == 1
    secrets = keys.secret_manager
    before = keys._keying
    secrets._set_current(secrets.current.model_copy())
    assert await keys.authenticate(issued.plaintext) is not None
    after = keys._keying
    assert after.secret is secrets.current and after.memo is not before.memo
    assert list(after.memo) == [issued.plaintext]


async def test_a_negative_memo_size_is_refused(database_url: str, hub_env: dict[str, str]) -> None:
    class Negative(VirtualKeyConfigurationManager):
        key_id_memo_size = -1

    with pytest.raises(ValueError, match="key_id_memo_size must be >= 0, not -1"):
        async with connect_gateway(database_url, hub_env, managers=[Negative]):
            pass
