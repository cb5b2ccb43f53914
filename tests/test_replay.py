"""Replaying the change log (`ConfigHub.changes_since`): pages filtered by the database.

Found: a replay read every row of every namespace, document data included, and filtered
in Python, so one resumed stream over a long log held pages of documents it never sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from confman.managers import CacheConfigurationManager, ModelProviderConfigurationManager

from .support import connect

PAGE = 40


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs meanwhile (the real ones, as the driver gets them)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])  # (conn, cursor, statement, parameters, context, executemany)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


async def test_a_replay_reads_filtered_pages_without_document_data(
    database_url: str, hub_env: dict[str, str], statements: list[str]
) -> None:
    managers = [CacheConfigurationManager, ModelProviderConfigurationManager]
    async with connect(database_url, hub_env, managers=managers) as hub:
        cache = hub.manager(CacheConfigurationManager)
        providers = hub.manager(ModelProviderConfigurationManager)
        wanted: list[int] = []
        for i in range(3 * PAGE):  # mostly the other namespace: a filter in Python reads on
            created = await providers.create(
                f"p-{i}", {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
            )
            assert created.seq is not None
            if i % 4 == 0:
                change = await cache.update({"max_entries": 1000 + i})
                wanted.append(change.seq)

        statements.clear()
        got: list[int] = []
        pages = 0
        cursor = 0
        while True:
            page = await hub.changes_since(
                cursor, namespaces=["cache"], limit=PAGE, with_values=False
            )
            pages += 1
            assert len(page) <= PAGE
            assert {r.namespace for r in page} <= {"cache"}
            assert all(r.before is None and r.after is None for r in page)
            got += [r.seq for r in page]
            if len(page) < PAGE:
                break
            cursor = page[-1].seq
        assert got == wanted

        reads = [s for s in statements if "config_changes" in s and s.lstrip().startswith("SELECT")]
        assert len(reads) == pages, reads  # one statement per page, no reading on
        for sql in reads:
            selected = sql.split("FROM", 1)[0]
            for column in ("data", "before", "after"):  # an event carries none of them
                assert f"config_changes.{column}" not in selected, sql
            assert "config_changes.namespace IN" in sql, sql  # filtered by the database
            assert "LIMIT" in sql, sql

        # With values (history readers): before/after come along, still one page, no data.
        statements.clear()
        page = await hub.changes_since(0, namespaces=["cache"], limit=PAGE, with_values=True)
        assert [r.seq for r in page] == wanted[:PAGE]
        assert all(r.after is not None for r in page)
        (sql,) = [s for s in statements if "config_changes" in s]
        assert "config_changes.data" not in sql.split("FROM", 1)[0], sql

        assert await hub.changes_since(0, namespaces=[], limit=PAGE) == []
        everything = await hub.changes_since(0, limit=10 * PAGE)
        assert [r.seq for r in everything] == sorted(r.seq for r in everything)
        assert len(everything) == 3 * PAGE + len(wanted)
