"""Faults: the database cut and restored, restart from the snapshot while it is down,
and a hub used across os.fork."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confman import ConfmanError, StoreUnavailable
from confman.testing import record_changes

from ..faults import FaultProxy, fault_proxy
from ..support import connect
from .models import CountersManager

SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture
def pg_proxy(database_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the test's PostgreSQL database, and the URL through it."""
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a database server to cut off")
    with fault_proxy("127.0.0.1", 5432) as proxy:
        yield proxy, database_url.replace("127.0.0.1:5432", proxy.address())


async def eventually(predicate: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_database_cut_and_restored(
    pg_proxy: tuple[FaultProxy, str], database_url: str, hub_env: dict[str, str]
) -> None:
    proxy, via_proxy = pg_proxy
    async with (
        connect(via_proxy, hub_env, managers=[CountersManager], catch_up_interval=0.2) as hub,
        connect(database_url, hub_env, managers=[CountersManager]) as direct,
    ):
        counters = hub.manager(CountersManager)
        await counters.create("k", {"value": 1})
        seen = record_changes(counters)
        proxy.cut()
        assert counters.get("k").value == 1  # reads serve from memory
        with pytest.raises(StoreUnavailable):
            await counters.update({"value": 2}, key="k")
        with pytest.raises(StoreUnavailable, match="not retried yet"):
            await counters.update({"value": 2}, key="k")  # at once, no waiting
        assert not hub.store.available
        # Meanwhile another instance writes.
        await direct.catch_up()
        await direct.manager(CountersManager).update({"value": 5}, key="k")
        await asyncio.sleep(0.5)
        assert counters.get("k").value == 1
        proxy.restore()
        await eventually(lambda: counters.version("k") == 2)  # the hub recovered alone
        assert counters.get("k").value == 5
        assert hub.store.available
        change = await counters.update({"value": 6}, key="k")
        assert change.version == 3
        assert seen.versions("k") == [2, 3]


async def test_restart_from_snapshot_while_the_database_is_down(
    pg_proxy: tuple[FaultProxy, str],
    database_url: str,
    hub_env: dict[str, str],
    tmp_path: Path,
) -> None:
    proxy, via_proxy = pg_proxy
    snapshot = tmp_path / "instance-a.snapshot.json"
    options: dict[str, Any] = {"snapshot_path": snapshot, "catch_up_interval": 0.2}
    async with connect(via_proxy, hub_env, managers=[CountersManager], **options) as hub:
        await hub.manager(CountersManager).create("k", {"value": 1, "token": SECRET})
        await hub.write_snapshot()
    text = await asyncio.to_thread(snapshot.read_text)
    assert '"k"' in text and SECRET not in text  # secrets stay encrypted
    assert not list(tmp_path.glob(".instance-a.snapshot.json.*"))  # noqa: ASYNC240

    proxy.cut()
    with pytest.raises(StoreUnavailable):  # no snapshot: nothing to serve
        await connect(via_proxy, hub_env, managers=[CountersManager])
    async with connect(via_proxy, hub_env, managers=[CountersManager], **options) as hub:
        counters = hub.manager(CountersManager)
        assert hub.degraded
        value = counters.get("k")
        assert value.value == 1
        assert value.token is not None and value.token.get_secret_value() == SECRET
        with pytest.raises(StoreUnavailable):
            await counters.update({"value": 2}, key="k")
        async with connect(database_url, hub_env, managers=[CountersManager]) as direct:
            await direct.manager(CountersManager).update({"value": 7}, key="k")
        proxy.restore()
        await eventually(lambda: not hub.degraded and counters.version("k") == 2)
        assert counters.get("k").value == 7
        await counters.update({"value": 8}, key="k")
        await hub.write_snapshot()
    assert '"version":3' in await asyncio.to_thread(snapshot.read_text)


def _child_uses_forked_hub(hub: Any) -> int:
    """In a forked child: 0 if the hub refuses database work with the fork message."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            asyncio.run(hub.manager(CountersManager).update({"value": 2}, key="f"))
        except ConfmanError as e:
            code = 0 if "forked" in str(e) and hub._forked_from is not None else 3
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


async def test_a_forked_copy_fails_clearly(database_url: str, hub_env: dict[str, str]) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("fork behaviour does not depend on the database")
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        await hub.manager(CountersManager).create("f", {"value": 1})
        assert await asyncio.to_thread(_child_uses_forked_hub, hub) == 0
        # The parent is unaffected.
        assert hub._forked_from is None
        await hub.manager(CountersManager).update({"value": 3}, key="f")
