"""A remote hub is the direct-mode managers over a real ``confman serve``: reads from
memory, changes as they are committed elsewhere, writes through the API with the same
exceptions, explain() with the server's layers and the local ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from confman import (
    ConcurrencyConflict,
    ConfigChange,
    ConfigHub,
    Layer,
    PermissionDenied,
    ValidationFailed,
)
from confman.managers import CacheConfigurationManager, ModelProviderConfigurationManager
from confman.remote import RemoteHub

from ..api.servers import Server, unique
from .support import until

MANAGERS = [CacheConfigurationManager, ModelProviderConfigurationManager]


def remote(server: Server, token: str = "service", **options: Any) -> Any:
    options.setdefault("env", {})
    options.setdefault("env_files", [])
    options.setdefault("managers", MANAGERS)
    return ConfigHub.connect(server.url, token=server.tokens[token], **options)


async def test_connect_reads_follows_and_writes(server: Server) -> None:
    key = unique("openai")
    with server.client("editor") as editor:
        created = editor.put(
            f"/api/v1/namespaces/model_provider/documents/{key}",
            json={"type": "openai", "api_key": "sk-start"},
        )
        assert created.status_code == 201, created.text
    async with remote(server, "editor") as hub:
        assert isinstance(hub, RemoteHub)
        providers = hub.manager(ModelProviderConfigurationManager)
        assert providers.get(key).api_key is not None
        assert providers.version(key) == 1
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        # A change made elsewhere arrives on the stream, document included.
        with server.client("editor") as editor:
            answer = editor.patch(
                f"/api/v1/namespaces/model_provider/documents/{key}",
                json={"timeout_seconds": 42},
                headers={"If-Match": '"1"'},
            )
            assert answer.status_code == 200, answer.text
        await until(lambda: providers.version(key) == 2)
        assert providers.get(key).timeout_seconds == 42
        assert [c.version for c in seen] == [2]
        # A write through the hub: the same exceptions as in direct mode.
        change = await providers.update({"timeout_seconds": 7}, key=key)
        assert change.version == 3 and providers.get(key).timeout_seconds == 7
        with pytest.raises(ConcurrencyConflict) as lost:
            await providers.update({"timeout_seconds": 8}, key=key, expected_version=1)
        assert lost.value.current_version == 3
        with pytest.raises(ValidationFailed) as refused:
            await providers.update({"timeout_seconds": -1}, key=key)
        assert any("timeout_seconds" in e.path for e in refused.value.errors)
        await asyncio.sleep(0.5)  # the own write's event comes too: not emitted twice
        assert [c.version for c in seen] == [2, 3]


async def test_service_token_reads_secrets_and_cannot_write(server: Server) -> None:
    key = unique("openai")
    with server.client("editor") as editor:
        assert (
            editor.put(
                f"/api/v1/namespaces/model_provider/documents/{key}",
                json={"type": "openai", "api_key": "sk-clear-for-services"},
            ).status_code
            == 201
        )
    async with remote(server, "service") as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        secret = providers.get(key).api_key
        assert secret is not None and secret.get_secret_value() == "sk-clear-for-services"
        with pytest.raises(PermissionDenied):
            await providers.update({"timeout_seconds": 9}, key=key)
    async with remote(server, "viewer") as hub:
        secret = hub.manager(ModelProviderConfigurationManager).get(key).api_key
        assert secret is not None and secret.get_secret_value().startswith("**********#")


async def test_a_change_set_commits_through_the_server(server: Server) -> None:
    a, b = unique("set-a"), unique("set-b")
    async with remote(server, "editor") as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        async with hub.change_set(actor="ops", reason="two at once") as cs:
            cs.create(ModelProviderConfigurationManager, a, {"type": "openai", "api_key": "k1"})
            cs.create(ModelProviderConfigurationManager, b, {"type": "openai", "api_key": "k2"})
        assert len({c.change_set for c in cs.changes}) == 1
        assert providers.version(a) == 1 and providers.version(b) == 1
    with server.client("admin") as admin:
        history = admin.get(f"/api/v1/namespaces/model_provider/documents/{a}/history").json()
        assert history[0]["change_set"] == cs.changes[0].change_set
        assert history[0]["reason"] == "two at once"


async def test_explain_history_and_validate_on_a_remote_hub(server: Server) -> None:
    """explain() names the server's layer with its version and the local variable; the
    async reads and validate() answer as in direct mode."""
    env = {"CONFMAN_CACHE__MAX_ENTRIES": "321"}
    async with remote(server, "editor", env=env) as hub:
        cache = hub.manager(CacheConfigurationManager)
        start = cache.version()
        await cache.update({"default_ttl_seconds": 77}, reason="explain me")
        sources = {s.path: s for s in cache.explain()}
        assert sources["max_entries"].layer == Layer.ENVIRONMENT
        assert sources["max_entries"].detail == "environment variable CONFMAN_CACHE__MAX_ENTRIES"
        ttl = sources["default_ttl_seconds"]
        assert ttl.value == 77 and f"v{start + 1}" in (ttl.detail or "")
        assert cache.current.max_entries == 321  # the local layer, as in direct mode
        history = await cache.history()
        assert history[0].version == start + 1 and history[0].reason == "explain me"
        assert cache.validate({"default_ttl_seconds": 5}).default_ttl_seconds == 5
        with pytest.raises(ValidationFailed):
            cache.validate({"default_ttl_seconds": 0})
