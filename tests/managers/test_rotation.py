"""`confman.rotation.rotate_keys`: every stored secret (documents and change log)
re-encrypted under the first key, in one transaction, audited once."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from confman import Action, ConfigHub, SecretsUnavailable
from confman.managers import (
    ModelProviderConfigurationManager,
    VirtualKeyConfigurationManager,
)
from confman.rotation import AUDIT_KEY, AUDIT_NAMESPACE, rotate_keys
from confman.secrets import generate_key
from confman.testing import record_changes

from .conftest import connect_gateway, raw_table_text
from .test_secrets import API_KEY_1, API_KEY_2, write_secrets


def tokens_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"$fernet"}:
            return [value["$fernet"]]
        return [t for v in value.values() for t in tokens_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in tokens_in(v)]
    return []


async def stored_tokens(hub: ConfigHub) -> list[str]:
    """Every encrypted token in the documents and in the change log."""
    found = [t async for doc in hub.store.all_documents() for t in tokens_in(doc.data)]
    found += [t for c in await hub.store.changes_since(0) for t in tokens_in(c.data)]
    return found


def env(*keys: str) -> dict[str, str]:
    return {"CONFMAN_ENCRYPTION_KEY": ",".join(keys)}


async def test_rotation_re_encrypts_documents_and_change_log(database_url: str) -> None:
    old, new = generate_key(), generate_key()
    async with connect_gateway(database_url, env(old)) as hub:
        virtual_key = await write_secrets(hub)
        before = await stored_tokens(hub)
        versions = {doc.key: doc.version async for doc in hub.store.all_documents()}
    assert len(before) >= 8

    async with connect_gateway(database_url, env(new, old)) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        seen = record_changes(providers)
        rotated = await rotate_keys(hub, actor="ops", reason="quarterly rotation")
        assert rotated == len(before)
        after = await stored_tokens(hub)
        assert len(after) == len(before) and not set(after) & set(before)
        for token in after:
            Fernet(new).decrypt(token.encode())
            with pytest.raises(InvalidToken):
                Fernet(old).decrypt(token.encode())
        assert seen.changes == []  # values did not change: nothing to tell anyone
        assert {d.key: d.version async for d in hub.store.all_documents()} == versions
        (audit,) = await hub.store.history(AUDIT_NAMESPACE, AUDIT_KEY)
        assert audit.action is Action.UPDATE and audit.actor == "ops"
        assert audit.reason == "quarterly rotation" and audit.version == 1
        assert audit.after == {
            "rotated": {
                "secrets": rotated,
                "documents": 4,
                "changes": audit.after["rotated"]["changes"],
            }
        }
        assert audit.after["rotated"]["changes"] >= 5
        # A running instance keeps working (it holds plaintext in memory).
        await providers.update({"rpm_limit": 10}, key="openai")

    # The old key can go: everything, history included, reads with the new key alone.
    async with connect_gateway(database_url, env(new)) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        api_key = providers.get("openai").api_key
        assert api_key is not None and api_key.get_secret_value() == API_KEY_1
        await providers.rollback("openai", to_version=2)  # from the change log's data
        api_key = providers.get("openai").api_key
        assert api_key is not None and api_key.get_secret_value() == API_KEY_2
        assert await hub.manager(VirtualKeyConfigurationManager).authenticate(virtual_key)
    with pytest.raises(SecretsUnavailable):
        async with connect_gateway(database_url, env(old)):
            pass


async def test_rotation_is_all_or_nothing(database_url: str) -> None:
    a, b, c = generate_key(), generate_key(), generate_key()
    async with connect_gateway(database_url, env(a)) as hub:
        await write_secrets(hub)
    async with connect_gateway(database_url, env(b, a)) as hub:
        await hub.manager(ModelProviderConfigurationManager).update(
            {"api_key": "sk-under-key-b-0000000000"}, key="openai"
        )
    snapshot = sorted(await raw_table_text(database_url))
    # Key b is missing: its tokens cannot be rotated, so nothing may be.
    async with connect_gateway(database_url, env(c, a), managers=[]) as hub:
        with pytest.raises(SecretsUnavailable):
            await rotate_keys(hub, actor="ops")
    assert sorted(await raw_table_text(database_url)) == snapshot


async def test_each_rotation_is_one_audit_entry(database_url: str) -> None:
    key = generate_key()
    async with connect_gateway(database_url, env(key), managers=[]) as hub:
        assert await rotate_keys(hub) == 0  # nothing stored yet; still audited
        assert await rotate_keys(hub, actor="ops") == 0
        history = await hub.store.history(AUDIT_NAMESPACE, AUDIT_KEY)
        assert [(h.version, h.actor) for h in history] == [(2, "ops"), (1, None)]
        assert history[0].after == {"rotated": {"secrets": 0, "documents": 0, "changes": 0}}


async def test_other_instances_skip_the_audit_row(database_url: str) -> None:
    key = generate_key()
    async with (
        connect_gateway(database_url, env(key)) as a,
        connect_gateway(database_url, env(key)) as b,
    ):
        await write_secrets(a)
        await rotate_keys(a)
        assert await b.catch_up() >= 1
        assert b.problems() == []
        await b.manager(ModelProviderConfigurationManager).update({"rpm_limit": 5}, key="openai")
