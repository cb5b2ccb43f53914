"""ModelProviderConfigurationManager: constraints per provider type, router refusals,
change stream, history, masking of credentials."""

from __future__ import annotations

from typing import Any

import pytest

from confman import Action, ConcurrencyConflict, ConfigHub, NotFound, ValidationFailed
from confman.managers import (
    ModelProvider,
    ModelProviderConfigurationManager,
    ProviderType,
    RouterConfigurationManager,
)
from confman.testing import record_changes

from .conftest import assert_nothing_written

API_KEY = "sk-live-provider-secret-0123456789"

OPENAI: dict[str, Any] = {"type": "openai", "api_key": API_KEY, "models": ["gpt-4o", "gpt-4o-mini"]}


def deployment(provider: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"type": "openai"}, "api_key", "required for type 'openai'"),
        ({"type": "anthropic"}, "api_key", "required for type 'anthropic'"),
        ({"type": "google"}, "api_key", "required for type 'google'"),
        (
            {"type": "azure_openai", "api_key": API_KEY, "api_version": "2024-06-01"},
            "base_url",
            "required for type 'azure_openai'",
        ),
        (
            {"type": "azure_openai", "api_key": API_KEY, "base_url": "https://x.openai.azure.com"},
            "api_version",
            "required for type 'azure_openai'",
        ),
        ({"type": "ollama"}, "base_url", "required for type 'ollama'"),
        ({"type": "openai_compatible"}, "base_url", "required for type 'openai_compatible'"),
        ({"type": "bedrock"}, "aws_region", "required for type 'bedrock'"),
        (
            {"type": "bedrock", "aws_region": "us-east-1", "aws_access_key_id": "AKIAEXAMPLE"},
            "aws_secret_access_key",
            "come together",
        ),
        ({"type": "bedrock", "aws_region": "moon"}, "aws_region", "should match pattern"),
        ({**OPENAI, "aws_region": "us-east-1"}, "aws_region", "only for type 'bedrock'"),
        ({**OPENAI, "api_version": "v1"}, "api_version", "type 'openai' has no API version"),
        ({"type": "telepathy", "api_key": API_KEY}, "type", "Input should be"),
        ({**OPENAI, "base_url": "not a url"}, "base_url", "URL"),
        ({**OPENAI, "base_url": "ftp://example.com"}, "base_url", "URL scheme"),
        ({**OPENAI, "rpm_limit": 0}, "rpm_limit", "greater than 0"),
        ({**OPENAI, "tpm_limit": -10}, "tpm_limit", "greater than 0"),
        ({**OPENAI, "timeout_seconds": 0}, "timeout_seconds", "greater than 0"),
        ({**OPENAI, "models": ["a", "a"]}, "models", "lists a model twice"),
        ({**OPENAI, "modles": ["a"]}, "modles", "no such field"),
    ],
)
async def test_each_constraint_refuses_and_writes_nothing(
    ghub: ConfigHub, doc: dict[str, Any], path: str, message: str
) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    seen = record_changes(providers)
    with pytest.raises(ValidationFailed) as caught:
        await providers.create("main", doc)
    assert path in caught.value.paths, caught.value
    assert message in str(caught.value)
    assert API_KEY not in str(caught.value)
    await assert_nothing_written(providers, "main")
    assert seen.changes == [] and "main" not in providers


@pytest.mark.parametrize("name", ["Main", "has space", "a__b", "-lead", "x" * 64, "ü"])
async def test_provider_names_are_checked(ghub: ConfigHub, name: str) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    with pytest.raises(ValidationFailed, match="bad provider name"):
        await providers.create(name, OPENAI)
    await assert_nothing_written(providers, name)


@pytest.mark.parametrize(
    "doc",
    [
        OPENAI,
        {"type": "azure_openai", "api_key": API_KEY, "base_url": "https://x.openai.azure.com",
         "api_version": "2024-06-01"},
        {"type": "anthropic", "api_key": API_KEY, "api_version": "2023-06-01"},
        {"type": "google", "api_key": API_KEY},
        {"type": "bedrock", "aws_region": "eu-west-1"},
        {"type": "bedrock", "aws_region": "eu-west-1", "aws_access_key_id": "AKIA1",
         "aws_secret_access_key": "abc"},
        {"type": "ollama", "base_url": "http://localhost:11434"},
        {"type": "openai_compatible", "base_url": "https://llm.internal/v1",
         "extra_headers": {"X-Tenant": "t1"}},
    ],
)  # fmt: skip
async def test_every_provider_type_has_a_valid_shape(ghub: ConfigHub, doc: dict[str, Any]) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    change = await providers.create("p-1", doc)
    assert change.action is Action.CREATE
    assert providers.get("p-1").type is ProviderType(doc["type"])


async def test_create_update_delete_stream_and_history(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    seen = record_changes(providers)
    await providers.create("openai-main", OPENAI, actor="ops", reason="onboard")
    await providers.update({"rpm_limit": 500}, key="openai-main", actor="ops")
    with pytest.raises(ConcurrencyConflict):
        await providers.create("openai-main", OPENAI)
    await providers.delete("openai-main", actor="ops", reason="offboard")

    assert [(c.action, c.version) for c in seen.changes] == [
        (Action.CREATE, 1),
        (Action.UPDATE, 2),
        (Action.DELETE, 3),
    ]
    assert seen.changes[1].changed_fields == ("rpm_limit",)
    assert seen.changes[2].new is None
    assert "openai-main" not in providers
    with pytest.raises(NotFound):
        providers.get("openai-main")
    history = await providers.history("openai-main")
    assert [h.action for h in history] == [Action.DELETE, Action.UPDATE, Action.CREATE]
    assert history[-1].reason == "onboard"
    assert API_KEY not in repr(history)
    assert history[-1].after is not None and history[-1].after["api_key"].startswith("*****")


async def test_credentials_are_masked_everywhere_they_are_shown(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    seen = record_changes(providers)
    await providers.create(
        "bedrock",
        {
            "type": "bedrock",
            "aws_region": "us-east-1",
            "aws_access_key_id": "AKIA-ID-1",
            "aws_secret_access_key": "aws-secret-key-material",
            "extra_headers": {"Authorization": "Bearer header-token-material"},
        },
    )
    value = providers.get("bedrock")
    assert value.aws_secret_access_key is not None
    assert value.aws_secret_access_key.get_secret_value() == "aws-secret-key-material"
    shown = [repr(value), str(value), repr(seen.changes), repr(providers.explain("bedrock"))]
    shown.append(repr(await providers.history("bedrock")))
    for text in shown:
        for secret in ("aws-secret-key-material", "header-token-material", "AKIA-ID-1"):
            assert secret not in text


async def test_enabled_helper_and_offers(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    await providers.create("a", OPENAI)
    await providers.create("b", {**OPENAI, "enabled": False, "models": []})
    assert list(providers.enabled()) == ["a"]
    assert providers.get("a").offers("gpt-4o") and not providers.get("a").offers("o1")
    assert providers.get("b").offers("anything")


async def _route(ghub: ConfigHub, aliases: dict[str, list[dict[str, Any]]]) -> None:
    router = ghub.manager(RouterConfigurationManager)
    await router.update(
        {"aliases": {name: {"deployments": deps} for name, deps in aliases.items()}}
    )


async def test_delete_of_a_routed_provider_is_refused_naming_the_aliases(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    await providers.create("openai-main", OPENAI)
    await providers.create("spare", OPENAI)
    await _route(
        ghub,
        {
            "gpt-4o": [deployment("openai-main")],
            "chat": [deployment("spare"), deployment("openai-main", "gpt-4o-mini")],
            "other": [deployment("spare")],
        },
    )
    seen = record_changes(providers)
    with pytest.raises(ValidationFailed) as caught:
        await providers.delete("openai-main", actor="ops")
    assert "cannot delete provider 'openai-main': router aliases use it: chat, gpt-4o" in str(
        caught.value
    )
    await assert_nothing_written(providers, "openai-main", version=1)

    with pytest.raises(ValidationFailed) as caught:
        await providers.update({"enabled": False}, key="openai-main")
    assert caught.value.paths == ("enabled",)
    assert "cannot disable provider 'openai-main': router aliases use it: chat, gpt-4o" in str(
        caught.value
    )
    await assert_nothing_written(providers, "openai-main", version=1)
    assert providers.get("openai-main").enabled
    assert seen.changes == []


async def test_dropping_a_deployed_model_is_refused(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    await providers.create("openai-main", OPENAI)
    await _route(ghub, {"mini": [deployment("openai-main", "gpt-4o-mini")]})
    with pytest.raises(ValidationFailed) as caught:
        await providers.update({"models": ["gpt-4o"]}, key="openai-main")
    assert caught.value.paths == ("models",)
    assert "model 'gpt-4o-mini' is deployed on provider 'openai-main' by router aliases: mini" in (
        str(caught.value)
    )
    await assert_nothing_written(providers, "openai-main", version=1)
    # Widening to "any model" and adding models are fine.
    await providers.update({"models": ["gpt-4o", "gpt-4o-mini", "o1"]}, key="openai-main")
    await providers.update({"models": None}, key="openai-main")


async def test_unused_provider_can_be_disabled_and_deleted(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    await providers.create("used", OPENAI)
    await providers.create("unused", OPENAI)
    await _route(ghub, {"gpt-4o": [deployment("used")]})
    await providers.update({"enabled": False}, key="unused")
    await providers.delete("unused")
    assert "unused" not in providers


async def test_without_a_router_loaded_providers_stand_alone(
    database_url: str, hub_env: dict[str, str]
) -> None:
    from .conftest import connect_gateway

    async with connect_gateway(
        database_url, hub_env, managers=[ModelProviderConfigurationManager]
    ) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await providers.create("solo", OPENAI)
        await providers.update({"enabled": False}, key="solo")
        await providers.delete("solo")


async def test_model_instances_are_accepted(ghub: ConfigHub) -> None:
    providers = ghub.manager(ModelProviderConfigurationManager)
    value = ModelProvider.model_validate({"type": "ollama", "base_url": "http://gpu-1:11434"})
    await providers.create("local", value)
    assert str(providers.get("local").base_url) == "http://gpu-1:11434/"
