"""Leader election: one Redis lease per cluster, with a fencing token.

Keys (``<p>`` is the cluster prefix):

- ``<p>:leader`` — the lease: ``"<holder>|<token>"`` with a TTL of ``ttl`` seconds.
- ``<p>:fence`` — a counter; every acquisition takes the next value (``INCR``) as its
  fencing token, atomically with the ``SET NX PX`` (one Lua script), so tokens strictly
  increase across leaders.

A leader renews (compare-and-extend, Lua) every ``renew_interval`` (a third of the TTL
by default). It counts its lease from *before* it sent the request that won or renewed
it, and steps down on its own — without asking Redis — ``margin`` seconds before that
lease could have expired, so an unreachable Redis never leaves two instances that both
think they lead. It releases (compare-and-delete) on clean shutdown so a successor need
not wait for the TTL.

Work done as leader carries `LeaderLease.fencing_token`; the store checks it against
the highest token it has seen in the same transaction (see ``ConfigStore.prune_changes``),
so a deposed leader's late action is rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from reactivex.subject import BehaviorSubject
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ._tasks import stop_task

__all__ = ["LeaderLease"]

log = logging.getLogger("confman.cluster.lease")

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if token <= floor then
    token = floor + 1
    redis.call('SET', KEYS[2], token)
  end
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return token
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    """Campaigns for, holds and gives up the leadership of one cluster.

    Args:
        redis: a client; the lease never closes it.
        prefix: the cluster name.
        holder: this instance's id (shown as the leader).
        ttl: lease length in seconds; a dead leader is replaced within it.
        renew_interval: seconds between renewals (default ``ttl / 3``).
        campaign_interval: seconds between a follower's attempts to acquire (default
            ``ttl / 10``), so a dead leader is replaced within one lease period.
        margin: a leader steps down this long before its lease could expire (default
            ``ttl / 5``), covering clock-rate differences and a slow event loop.
        floor: returns the highest token already used (e.g. recorded in the database);
            asked on each acquisition, so tokens keep increasing even if Redis lost its
            counter.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        holder: str,
        ttl: float = 10.0,
        renew_interval: float | None = None,
        campaign_interval: float | None = None,
        margin: float | None = None,
        floor: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.redis = redis
        self.key = f"{prefix}:leader"
        self.fence_key = f"{prefix}:fence"
        self.holder = holder
        self.ttl = ttl
        self.renew_interval = renew_interval if renew_interval is not None else ttl / 3
        self.campaign_interval = campaign_interval if campaign_interval is not None else ttl / 10
        self.margin = margin if margin is not None else ttl / 5
        if self.renew_interval >= ttl - self.margin:
            raise ValueError("renew_interval must be well below ttl - margin")
        self.leadership: BehaviorSubject[bool] = BehaviorSubject(False)
        self.acquisitions = 0
        self.renew_failures = 0
        #: Tokens handed out are always above this (see ``floor``).
        self.token_floor = 0
        self.floor = floor
        self._token: int | None = None
        self._value: str | None = None  # what the lease key holds while we lead
        # Monotonic time at which we stop leading at the latest: the lease's own expiry
        # (counted from before the request that won or renewed it) less ``margin``.
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"<LeaderLease {self.key} holder={self.holder!r} leader={self.is_leader}>"

    # ----------------------------------------------------------------- state

    @property
    def is_leader(self) -> bool:
        """True only while our lease is certainly valid (checked against the clock)."""
        return self._token is not None and time.monotonic() < self._valid_until

    @property
    def fencing_token(self) -> int | None:
        """The token of our current leadership; ``None`` when not leading."""
        return self._token if self.is_leader else None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"confman-lease-{self.key}"
            )

    async def close(self) -> None:
        """Stop campaigning; release the lease if we hold it (compare-and-delete)."""
        self._stopping = True
        task, self._task = self._task, None
        await stop_task(task)
        value = self._value
        self._step_down("shutting down")
        if value is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._release(keys=[self.key], args=[value]), 2.0)
        self.leadership.on_completed()

    # ----------------------------------------------------------------- campaign

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if self._token is None:
                    await self._try_acquire()
                else:
                    await self._try_renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader lease %s: unexpected failure", self.key)
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        if self._token is None:
            return self.campaign_interval
        # Wake up in time to step down even if every renewal fails.
        left = self._valid_until - time.monotonic()
        return max(0.0, min(self.renew_interval, left))

    async def _try_acquire(self) -> None:
        holder = f"{self.holder}#{secrets.token_hex(4)}"
        sent = time.monotonic()
        try:
            result: Any = await asyncio.wait_for(
                self._acquire(
                    keys=[self.key, self.fence_key], args=[holder, self._ttl_ms, self.token_floor]
                ),
                self.ttl - self.margin,
            )
        except (RedisError, OSError, TimeoutError) as e:
            log.debug("leader lease %s: cannot campaign (%s)", self.key, e)
            return
        token = int(result or 0)
        if token <= 0:
            return
        floor = await self._floor()
        if token <= floor:
            # Redis lost its counter (a restart without persistence): a token we would
            # act with is no higher than one already used. Give the lease back and take
            # it again above the floor.
            log.warning(
                "leader lease %s: token %d is not above %d already used; re-acquiring",
                self.key,
                token,
                floor,
            )
            self.token_floor = floor
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(
                    self._release(keys=[self.key], args=[f"{holder}|{token}"]), 2.0
                )
            return
        self._token = token
        self._value = f"{holder}|{token}"
        self._valid_until = sent + self.ttl - self.margin
        self.acquisitions += 1
        log.info("%s is now the leader of %s (fencing token %d)", self.holder, self.key, token)
        self.leadership.on_next(True)

    async def _try_renew(self) -> None:
        value = self._value
        assert value is not None
        now = time.monotonic()
        left = self._valid_until - now
        if left <= 0:
            self._step_down("the lease ran out before it could be renewed")
            return
        try:
            renewed: Any = await asyncio.wait_for(
                self._renew(keys=[self.key], args=[value, self._ttl_ms]), left
            )
        except (RedisError, OSError, TimeoutError) as e:
            self.renew_failures += 1
            if time.monotonic() >= self._valid_until:
                self._step_down(f"renewal failed ({type(e).__name__}) and the lease ran out")
            else:
                log.warning("leader lease %s: renewal failed (%s); retrying", self.key, e)
            return
        if not renewed:
            self.renew_failures += 1
            self._step_down("the lease was lost (expired or taken)")
            return
        self._valid_until = now + self.ttl - self.margin

    def _step_down(self, why: str) -> None:
        if self._token is None:
            return
        log.warning("%s steps down as leader of %s: %s", self.holder, self.key, why)
        self._token = None
        self._value = None
        self._valid_until = 0.0
        self.leadership.on_next(False)

    def check(self) -> None:
        """Step down now if the lease has run out (called before leader work)."""
        if self._token is not None and time.monotonic() >= self._valid_until:
            self._step_down("the lease ran out")

    async def _floor(self) -> int:
        if self.floor is None:
            return self.token_floor
        try:
            found = await asyncio.wait_for(self.floor(), max(0.1, self.ttl / 2))
        except Exception as e:  # the database may be down: Redis' counter must do
            log.debug("leader lease %s: cannot read the token floor (%s)", self.key, e)
            return self.token_floor
        self.token_floor = max(self.token_floor, found)
        return self.token_floor

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def current_leader(self) -> tuple[str, int] | None:
        """Who holds the lease now, by Redis: ``(instance id, fencing token)``."""
        raw: Any = await self.redis.get(self.key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        holder, _, token = text.rpartition("|")
        return holder.rsplit("#", 1)[0], int(token or 0)
