"""Leader election: one Redis lease per cluster, with a fencing token.

Keys (``<p>`` is the cluster prefix):

- ``<p>:leader`` — the lease: ``"<holder>|<token>"`` with a TTL of ``ttl`` seconds.
- ``<p>:fence`` — a counter; every acquisition takes the next value (``INCR``) as its
  fencing token, atomically with the ``SET NX PX`` (one Lua script), so tokens strictly
  increase across leaders. It expires ``fence_ttl`` after the last acquisition or
  renewal: it only has to outlive a hand-over, because the database, not Redis, is what
  guards against a counter that starts over (below).

A leader renews (compare-and-extend, Lua) every ``renew_interval`` (a third of the TTL
by default). It counts its lease from *before* it sent the request that won or renewed
it, and steps down on its own — without asking Redis — ``margin`` seconds before that
lease could have expired, so an unreachable Redis never leaves two instances that both
think they lead. It releases (compare-and-delete) on clean shutdown so a successor need
not wait for the TTL.

Redis restarted without its data (or a fence key that expired) hands out a token that
may already have been used, while the previous leader, cut off, still believes it leads
until its own lease runs out. So every new leader first records its token in the
database (``claim``: the *database floor*, `ConfigStore.claim_fencing_token`). A
candidate whose token is not above that floor, or who finds the counter gone and cannot
read the floor, knows a previous lease may still run: it takes a token above the floor,
holds (and renews) the lease, and believes it leads only once a full ``ttl`` has passed,
by when any earlier leader has stepped down.

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
  local fresh = 1 - redis.call('EXISTS', KEYS[2])
  local token = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if token <= floor then
    token = floor + 1
    redis.call('SET', KEYS[2], token)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return {token, fresh}
end
return {0, 0}
"""

# Still holding the lease (ARGV[1]), take a token above ARGV[3] and hold the lease with it.
_RAISE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. token, 'PX', ARGV[4])
return token
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
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
        fence_ttl: the token counter expires this long after the last acquisition or
            renewal (default ``10 * ttl``), so an abandoned cluster leaves nothing behind.
        claim: records a new leader's token (e.g. in the database) if it is above every
            token recorded, and returns the highest recorded before it (the *floor*).
            Without it, or while it fails, a candidate that finds no counter in Redis
            waits a full lease before it leads.
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
        fence_ttl: float | None = None,
        claim: Callable[[int], Awaitable[int]] | None = None,
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
        self.fence_ttl = fence_ttl if fence_ttl is not None else 10 * ttl
        if self.renew_interval >= ttl - self.margin:
            raise ValueError("renew_interval must be well below ttl - margin")
        if self.fence_ttl <= ttl:
            raise ValueError("fence_ttl must be longer than ttl")
        self.leadership: BehaviorSubject[bool] = BehaviorSubject(False)
        self.acquisitions = 0
        self.renew_failures = 0
        #: Times a candidate found the token counter reset and waited out a lease.
        self.resets = 0
        #: Tokens handed out are always above this (the highest floor seen).
        self.token_floor = 0
        self.claim = claim
        self._token: int | None = None
        self._value: str | None = None  # what the lease key holds while we hold it
        self._claimed = False  # our token is recorded by ``claim``
        # Monotonic times: we lead from ``_valid_from`` (later than the acquisition when
        # an earlier lease may still run) until ``_valid_until`` at the latest, the
        # lease's own expiry (counted from before the request that won or renewed it)
        # less ``margin``.
        self._valid_from = 0.0
        self._valid_until = 0.0
        self._announced = False  # ``leadership`` has said True for this holding
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._acquire = redis.register_script(_ACQUIRE)
        self._raise = redis.register_script(_RAISE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"<LeaderLease {self.key} holder={self.holder!r} leader={self.is_leader}>"

    # ----------------------------------------------------------------- state

    @property
    def is_leader(self) -> bool:
        """True only while our lease is certainly valid (checked against the clock)."""
        return self._token is not None and self._valid_from <= time.monotonic() < self._valid_until

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
                self._announce()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader lease %s: unexpected failure", self.key)
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        if self._token is None:
            return self.campaign_interval
        now = time.monotonic()
        # Wake up in time to step down even if every renewal fails, and to announce
        # the leadership once a wait for an earlier lease is over.
        delay = min(self.renew_interval, self._valid_until - now)
        if not self._announced and self._valid_from > now:
            delay = min(delay, self._valid_from - now)
        return max(0.0, delay)

    def _announce(self) -> None:
        if self._announced or not self.is_leader:
            return
        self._announced = True
        self.acquisitions += 1
        log.info(
            "%s is now the leader of %s (fencing token %d)", self.holder, self.key, self._token
        )
        self.leadership.on_next(True)

    async def _try_acquire(self) -> None:
        holder = f"{self.holder}#{secrets.token_hex(4)}"
        sent = time.monotonic()
        try:
            result: Any = await asyncio.wait_for(
                self._acquire(
                    keys=[self.key, self.fence_key],
                    args=[holder, self._ttl_ms, self.token_floor, self._fence_ttl_ms],
                ),
                self.ttl - self.margin,
            )
        except (RedisError, OSError, TimeoutError) as e:
            log.debug("leader lease %s: cannot campaign (%s)", self.key, e)
            return
        token, fresh = int(result[0] or 0), bool(result[1])
        if token <= 0:
            return
        value = f"{holder}|{token}"
        floor = await self._claim(token)
        wait = False
        if floor is not None and token <= floor:
            # The counter started over (Redis restarted empty, or the fence expired): a
            # token no higher than one already used, and an earlier leader may still
            # believe it leads. Keep the lease, take a token above the floor, and wait.
            log.warning(
                "leader lease %s: token %d is not above %d already used (Redis lost the "
                "counter); taking a higher one and waiting %.1fs before leading",
                self.key,
                token,
                floor,
                self.ttl,
            )
            self.token_floor = max(self.token_floor, floor)
            try:
                raised: Any = await asyncio.wait_for(
                    self._raise(
                        keys=[self.key, self.fence_key],
                        args=[value, holder, floor, self._ttl_ms, self._fence_ttl_ms],
                    ),
                    self.ttl - self.margin,
                )
            except (RedisError, OSError, TimeoutError) as e:
                log.debug("leader lease %s: cannot take a higher token (%s)", self.key, e)
                await self._give_back(value)
                return
            token = int(raised or 0)
            if token <= 0:
                return  # the lease ran out meanwhile
            value = f"{holder}|{token}"
            floor = await self._claim(token)
            if floor is not None and token <= floor:
                await self._give_back(value)  # yet another holder acted: try again later
                return
            wait = True
        elif floor is None and fresh:
            # No counter, and no floor to tell a first start from a restart: assume the
            # worst.
            wait = True
        if wait:
            self.resets += 1
        self._token = token
        self._value = value
        self._claimed = floor is not None
        self._announced = False
        # An earlier lease was renewed, at the latest, before Redis answered us (it lost
        # its data before that): a full ``ttl`` from now it has certainly run out.
        self._valid_from = time.monotonic() + self.ttl if wait else 0.0
        self._valid_until = sent + self.ttl - self.margin

    async def _give_back(self, value: str) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._release(keys=[self.key], args=[value]), 2.0)

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
                self._renew(
                    keys=[self.key, self.fence_key], args=[value, self._ttl_ms, self._fence_ttl_ms]
                ),
                left,
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
        if not self._claimed and self._token is not None:
            # The floor could not be recorded when we took the lease: until it is, a
            # Redis restart could go unnoticed by the next candidate.
            floor = await self._claim(self._token)
            if floor is not None:
                self._claimed = True
                if self._token <= floor:
                    self._step_down(f"token {self._token} was used already (floor {floor})")
                    await self._give_back(value)

    def _step_down(self, why: str) -> None:
        if self._token is None:
            return
        announced = self._announced
        if announced:
            log.warning("%s steps down as leader of %s: %s", self.holder, self.key, why)
        self._token = None
        self._value = None
        self._valid_from = self._valid_until = 0.0
        self._announced = False
        if announced:
            self.leadership.on_next(False)

    def step_down(self, why: str) -> None:
        """Stop leading now; the lease is left to expire (or be released at close)."""
        self._step_down(why)

    def check(self) -> None:
        """Step down now if the lease has run out (called before leader work)."""
        if self._token is not None and time.monotonic() >= self._valid_until:
            self._step_down("the lease ran out")

    async def _claim(self, token: int) -> int | None:
        """Record ``token`` with ``claim``; the floor before it, ``None`` if unknown."""
        if self.claim is None:
            return None
        try:
            found = await asyncio.wait_for(self.claim(token), max(0.1, self.ttl / 2))
        except Exception as e:  # the database may be down: Redis' counter must do
            log.debug("leader lease %s: cannot record the token (%s)", self.key, e)
            return None
        self.token_floor = max(self.token_floor, found)
        return found

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    @property
    def _fence_ttl_ms(self) -> int:
        return max(1, int(self.fence_ttl * 1000))

    async def current_leader(self) -> tuple[str, int] | None:
        """Who holds the lease now, by Redis: ``(instance id, fencing token)``."""
        raw: Any = await self.redis.get(self.key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        holder, _, token = text.rpartition("|")
        return holder.rsplit("#", 1)[0], int(token or 0)
