"""A seeded LLM-gateway configuration: the four managers confman ships, filled with data."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from .common import Context, NotAvailable
from .seed import Doc, seed

KEY_PREFIX = "sk-cm-"


def managers() -> dict[str, Any]:
    """The four shipped managers (and the secret manager), or `NotAvailable`."""
    found: dict[str, Any] = {}
    wanted = {
        "cache": ("confman.managers.cache", "CacheConfigurationManager"),
        "model_provider": ("confman.managers.model_provider", "ModelProviderConfigurationManager"),
        "router": ("confman.managers.router", "RouterConfigurationManager"),
        "virtual_key": ("confman.managers.virtual_key", "VirtualKeyConfigurationManager"),
        "virtual_key_secret": ("confman.managers.virtual_key", "VirtualKeySecretManager"),
    }
    missing: list[str] = []
    for name, (module, cls) in wanted.items():
        try:
            imported = __import__(module, fromlist=[cls])
            found[name] = getattr(imported, cls)
        except ModuleNotFoundError as e:
            missing.append(e.name or module)
        except (ImportError, AttributeError) as e:
            missing.append(f"{module}.{cls} ({type(e).__name__}: {e})")
    if missing:
        raise NotAvailable("missing module " + ", ".join(sorted(set(missing))))
    return found


def provider_document(i: int) -> dict[str, Any]:
    return {
        "type": "openai",
        "api_key": f"sk-bench-provider-{i:06d}",
        "models": ["gpt-4o", "gpt-4o-mini"],
        "rpm_limit": 10_000,
        "tpm_limit": 2_000_000,
    }


def provider_name(i: int) -> str:
    return f"provider-{i:04d}"


def router_document(providers: int, aliases: int = 100) -> dict[str, Any]:
    return {
        "strategy": "simple",
        "aliases": {
            f"alias-{a}": {
                "deployments": [
                    {
                        "provider": provider_name((a * 2 + d) % providers),
                        "model": "gpt-4o",
                        "weight": 1.0,
                        "priority": d,
                    }
                    for d in range(2)
                ]
            }
            for a in range(aliases)
        },
    }


def virtual_key_document(i: int) -> dict[str, Any]:
    return {
        "name": f"team-{i % 500}-app-{i}",
        "hint": f"{KEY_PREFIX}…{i % 10_000:04d}",
        "allowed_models": ["alias-1", "alias-2"],
        "rpm_limit": 600,
        "tpm_limit": 100_000,
        "budget": {"amount": "100", "period": "monthly", "currency": "USD"},
        "metadata": {"team": f"team-{i % 500}"},
    }


def plaintext(i: int) -> str:
    return f"{KEY_PREFIX}bench-{i:09d}"


def key_id(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


async def seed_gateway(
    ctx: Context,
    url: str,
    *,
    providers: int,
    virtual_keys: int,
    log_keys: bool = True,
) -> bytes:
    """Fill ``url`` with a cache policy, providers, a router and virtual keys.

    Returns the virtual-key server secret (plaintext ``i`` is `plaintext` ``(i)``).
    """
    m = managers()
    secret = secrets.token_urlsafe(48)
    key = ctx.encryption_key
    await seed(
        url,
        "virtual_key_secret",
        m["virtual_key_secret"].model,
        [Doc("default", 1, {"hmac_key": secret})],
        encryption_key=key,
    )
    await seed(
        url,
        "cache",
        m["cache"].model,
        [Doc("default", 1, {"default_ttl_seconds": 120})],
        encryption_key=key,
    )
    if providers:
        await seed(
            url,
            "model_provider",
            m["model_provider"].model,
            [Doc(provider_name(i), 1, provider_document(i)) for i in range(providers)],
            encryption_key=key,
        )
        await seed(
            url,
            "router",
            m["router"].model,
            [Doc("default", 1, router_document(providers))],
            encryption_key=key,
        )
    raw_secret = secret.encode()
    batch = 20_000
    for start in range(0, virtual_keys, batch):
        docs = [
            Doc(key_id(raw_secret, plaintext(i)), 1, virtual_key_document(i))
            for i in range(start, min(virtual_keys, start + batch))
        ]
        await seed(
            url, "virtual_key", m["virtual_key"].model, docs, encryption_key=key, log=log_keys
        )
    return raw_secret
