"""Secrets at rest: no plaintext in the database (tables, change log, SQLite file and WAL),
in logs, errors or displays; a missing, wrong or malformed key is a clear start-up error."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from confman import ConfigHub, SecretsUnavailable, ValidationFailed
from confman.managers import (
    CacheConfigurationManager,
    ModelProviderConfigurationManager,
    VirtualKeyConfigurationManager,
)
from confman.secrets import generate_key
from confman.store.engine import sqlite_path
from confman.testing import migrated_sqlite

from .conftest import connect_gateway, raw_table_text

API_KEY_1 = "sk-first-provider-key-AAAAAAAAAAAAAAAA"
API_KEY_2 = "sk-second-provider-key-BBBBBBBBBBBBBBB"
HEADER = "header-token-CCCCCCCCCCCCCCCCCCCC"
AWS_SECRET = "aws-secret-DDDDDDDDDDDDDDDDDDDDDDDD"
REDIS_PASSWORD = "redis-password-EEEEEEEEEEEEEEE"
PLAINTEXTS = [API_KEY_1, API_KEY_2, HEADER, AWS_SECRET, REDIS_PASSWORD]


async def write_secrets(hub: ConfigHub) -> str:
    """Write every kind of secret, change one and roll back; return a virtual key."""
    providers = hub.manager(ModelProviderConfigurationManager)
    await providers.create(
        "openai", {"type": "openai", "api_key": API_KEY_1, "extra_headers": {"X-T": HEADER}}
    )
    await providers.update({"api_key": API_KEY_2}, key="openai")
    await providers.rollback("openai", to_version=1)
    await providers.create(
        "aws",
        {
            "type": "bedrock",
            "aws_region": "us-east-1",
            "aws_access_key_id": "AKIA-ID",
            "aws_secret_access_key": AWS_SECRET,
        },
    )
    await hub.manager(CacheConfigurationManager).update(
        {"backend": "redis", "redis_url": f"redis://:{REDIS_PASSWORD}@cache:6379/0"}
    )
    issued = await hub.manager(VirtualKeyConfigurationManager).issue({"name": "client"})
    return issued.plaintext


def sqlite_files(database_url: str) -> list[Path]:
    path = sqlite_path(database_url)
    assert path is not None
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()]


def assert_no_plaintext(blob: bytes | str, plaintexts: list[str]) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in plaintexts:
        assert secret.encode() not in data, f"plaintext {secret[:6]}… found at rest"


async def test_no_plaintext_secret_in_any_table(database_url: str, hub_env: dict[str, str]) -> None:
    async with connect_gateway(database_url, hub_env) as hub:
        virtual_key = await write_secrets(hub)
        rows = await raw_table_text(database_url)
    text = "\n".join(rows)
    assert_no_plaintext(text, [*PLAINTEXTS, virtual_key])
    assert "$fernet" in text  # encrypted, not dropped
    assert "**********#" in text  # the change log shows masks


async def test_no_plaintext_in_the_sqlite_file_or_its_wal(
    tmp_path: Path, hub_env: dict[str, str]
) -> None:
    url = await migrated_sqlite(tmp_path)
    async with connect_gateway(url, hub_env) as hub:
        virtual_key = await write_secrets(hub)
        files = sqlite_files(url)
        assert any(p.name.endswith("-wal") for p in files)  # read while it is live
        for path in files:
            assert_no_plaintext(path.read_bytes(), [*PLAINTEXTS, virtual_key])
    for path in sqlite_files(url):
        assert_no_plaintext(path.read_bytes(), [*PLAINTEXTS, virtual_key])


async def test_secrets_stay_out_of_logs_errors_and_displays(
    database_url: str, hub_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with connect_gateway(database_url, hub_env) as hub:
        await write_secrets(hub)
        providers = hub.manager(ModelProviderConfigurationManager)
        with pytest.raises(ValidationFailed) as caught:
            await providers.update({"api_key": "sk-refused-FFFF", "rpm_limit": 0}, key="openai")
        shown: list[Any] = [
            caught.value,
            providers.get("openai"),
            providers.explain("openai"),
            await providers.history("openai"),
            hub.manager(CacheConfigurationManager).current,
            hub.manager(CacheConfigurationManager).explain(),
        ]
    text = "\n".join([caplog.text, *map(repr, shown), *map(str, shown)])
    assert_no_plaintext(text, [*PLAINTEXTS, "sk-refused-FFFF"])


async def test_a_missing_key_is_a_start_up_error(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with connect_gateway(database_url, hub_env) as hub:
        await write_secrets(hub)
    for managers in ([ModelProviderConfigurationManager], [VirtualKeyConfigurationManager]):
        with pytest.raises(SecretsUnavailable, match="CONFMAN_ENCRYPTION_KEY"):
            async with connect_gateway(database_url, {}, managers=managers):
                pass


async def test_a_wrong_key_is_a_clear_error(database_url: str, hub_env: dict[str, str]) -> None:
    async with connect_gateway(database_url, hub_env) as hub:
        await write_secrets(hub)
    with pytest.raises(SecretsUnavailable, match="cannot be decrypted with any configured key"):
        async with connect_gateway(database_url, {"CONFMAN_ENCRYPTION_KEY": generate_key()}):
            pass
    with pytest.raises(SecretsUnavailable, match="malformed"):
        async with connect_gateway(database_url, {"CONFMAN_ENCRYPTION_KEY": "not-a-key"}):
            pass


async def test_a_namespace_without_secrets_needs_no_key(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with connect_gateway(database_url, hub_env) as hub:
        await write_secrets(hub)
    async with connect_gateway(database_url, {}, managers=[]) as hub:
        assert hub.managers() == []


async def test_sqlite_default_key_file(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path)
    key_file = tmp_path / "confman.key"
    async with connect_gateway(url, {}) as hub:
        assert not key_file.exists()  # created on first use, not at start
        virtual_key = await write_secrets(hub)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for path in sqlite_files(url):
        assert_no_plaintext(path.read_bytes(), [*PLAINTEXTS, virtual_key])
    async with connect_gateway(url, {}) as hub:  # the same key file reads them back
        provider = hub.manager(ModelProviderConfigurationManager).get("openai")
        assert provider.api_key is not None
        assert provider.api_key.get_secret_value() == API_KEY_1
        assert await hub.manager(VirtualKeyConfigurationManager).authenticate(virtual_key)
    key_file.unlink()
    with pytest.raises(SecretsUnavailable, match="no key"):
        async with connect_gateway(url, {}):
            pass
