"""`RemoteHub`: the same managers, fed by a ``confman serve`` server instead of the database.

``ConfigHub.connect("https://config.internal:8400", token=...)`` returns one. Its managers
are the direct-mode classes, unchanged, on the `HttpBackend` seam (`confman.backend`):

- **Start-up** is one read, ``GET /api/v1/layers``: every stored document the hub loads
  and the seq it includes. The managers apply their local env files and variables on
  top, exactly as in direct mode, and ``explain()`` names every layer.
- **Following** is ``GET /api/v1/events`` from that seq. Each event carries the stored
  document it wrote, so no change costs another request. The server marks safe resume
  points (``applied`` events); after a dropped stream the hub reconnects with backoff and
  full jitter and resumes from the last one with ``Last-Event-ID``. What comes twice is
  skipped by version, so nothing is emitted twice, and no document misses a change
  (like any instance, the server may jump over versions committed close together). A resume the
  server cannot serve (409: pruned, or another database) becomes a fresh read.
- **Degraded:** while the stream is down (the server away, the token refused) the hub
  keeps serving its last values and says so: ``hub.degraded``, ``hub.last_error``, a log
  line at each change of state, and ``hub.remote_stats``. With ``snapshot_path`` it also
  keeps a last-known-good file (secrets encrypted with a key of its own) and can start
  from it while the server is unreachable.

Writes go through the same manager code and end as ``PUT /api/v1/layers/...`` (a change
set as ``POST /api/v1/layers``, one server-side change set), validated on the server; the
server's refusals come back as the exceptions of direct mode.

Not here: environments' administration, promotion, comparison, fleet status and
housekeeping are the server's business (`confman serve`'s API).

Why one module past 500 lines: start-up, the stream follower, the degraded state and the
refusals of server-side operations all work on the hub's one resume point and stream
state; split, each part would reach into the others' private state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
from httpx_sse import aconnect_sse

from .change import Action, ChangeRecord
from .environments import Environment
from .exceptions import ConfmanError, PermissionDenied, StoreUnavailable
from .gcpause import full_collections_paused
from .http_backend import HttpBackend, raise_for_problem
from .hub import (
    ConfigHub,
    HubStats,
    _Connection,
    _default_instance_id,
    _live_hubs,
    local_layers,
)
from .limits import DEFAULT_LIMITS, Limits
from .secrets import KeyRing, generate_key
from .sources import OverrideSource
from .store import LoggedChange, StoredDocument

if TYPE_CHECKING:
    from .bus import ChangeNotice
    from .manager import ConfigurationManager

__all__ = ["RemoteHub", "RemoteStats"]

log = logging.getLogger("confman.remote")

TOKEN_VARIABLE = "CONFMAN_TOKEN"


@dataclass(slots=True)
class RemoteStats:
    """What a remote hub's stream did (a metric source: export what you need)."""

    connects: int = 0  # streams opened
    drops: int = 0  # streams lost or refused
    resyncs: int = 0  # fresh reads after a resume the server could not serve
    events: int = 0  # change events applied (or skipped as already held)
    fetched: int = 0  # documents read on their own (too large for an event)
    degraded_since: float | None = None  # time.time() the hub became degraded


class _Resync(Exception):
    """The server cannot resume from our seq: read everything afresh."""


class RemoteHub(ConfigHub):
    """A hub over a ``confman serve`` server. Use ``ConfigHub.connect(url, token=...)``."""

    restores_masked_secrets = True  # the server puts back what a masked reader sends

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        sources: Sequence[OverrideSource],
        keyring: KeyRing,
        instance_id: str,
        environment: str | None,
        stream_timeout: float,
        reconnect_delay: tuple[float, float],
        limits: Limits,
        snapshot_path: Path | None,
    ) -> None:
        # No engine, bus or catch-up here: ConfigHub.__init__ would open them. The state
        # below is what the shared parts (managers, change sets held whole, snapshots)
        # use; everything else is overridden further down.
        self.url = url
        self.client = client
        self.http = HttpBackend(client, keyring, environment)
        self.backend = self.http
        self.sources = tuple(sources)
        self.keyring = keyring
        self.instance_id = instance_id
        self.environment = environment
        self.known_environments = frozenset() if environment is None else frozenset({environment})
        self.limits = limits
        self.stats = HubStats()
        self.remote_stats = RemoteStats()
        self.stream_timeout = stream_timeout
        self.reconnect_delay = reconnect_delay
        self.cluster_name = "confman"
        self.catch_up_interval = reconnect_delay[0]
        self.gap_timeout = 0.0
        self.readiness_timeout = 2.0
        self.snapshot_path = snapshot_path
        self.snapshot_interval = 1.0
        self.started_at = time.time()
        self._managers: dict[type[Any], ConfigurationManager[Any]] = {}
        self._by_namespace: dict[str, ConfigurationManager[Any]] = {}
        self._seq = 0  # the newest seq applied
        self._resume = 0  # every change up to it applied: where a stream resumes
        self._gaps: dict[int, float] = {}
        self._late_gaps: dict[int, float] = {}
        self._applied_ahead: set[int] = set()
        self._pending_notices: dict[tuple[str, str, str], ChangeNotice] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._pid = os.getpid()
        self._forked_from: int | None = None
        _live_hubs.add(self)
        self._snapshot = None
        self._snapshot_lock = asyncio.Lock()
        self._held_changes = None
        self._held_applied = None
        self._cluster = None
        self._retention = None
        self._idle_leadership = None
        self._down: str | None = None  # why the stream is down (None: streaming)
        self._last_error: ConfmanError | None = None
        self._streaming = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def connect(  # type: ignore[override]
        cls,
        url: str,
        *,
        token: str | None = None,
        environment: str | None = None,
        env: Mapping[str, str] | None = None,
        env_files: Sequence[str | Path] | None = None,
        managers: Iterable[type[ConfigurationManager[Any]]] | None = None,
        instance_id: str | None = None,
        snapshot_path: str | os.PathLike[str] | None = None,
        encryption_keys: Sequence[str] | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        timeout: float = 10.0,
        stream_timeout: float = 45.0,
        reconnect_delay: tuple[float, float] = (0.5, 30.0),
        limits: Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> _Connection:
        """Open a hub over the server at ``url``: ``async with RemoteHub.connect(...)``.

        Args:
            url: the server, ``https://host:port`` (``http://`` on a trusted network).
            token: a bearer token (a ``service`` token reads secrets in clear); by
                default ``CONFMAN_TOKEN`` from ``env``.
            environment, env, env_files, managers, instance_id, limits: as for
                `ConfigHub.connect`. By default the managers are the registered ones
                whose namespace the token may read.
            snapshot_path: a last-known-good file, kept up to date; a start while the
                server is unreachable serves it, degraded. Its secrets are encrypted
                with ``encryption_keys`` (or ``CONFMAN_ENCRYPTION_KEY``), else with a
                key file created beside it.
            verify: verify the server's certificate (the default), or the path of a CA
                bundle to verify it with; ``False`` only for tests.
            timeout: seconds every request may take (connect, each read, each write).
            stream_timeout: seconds of silence after which the event stream counts as
                lost (the server pings every 15 s by default).
            reconnect_delay: the first and the longest wait between reconnects; each
                wait is drawn at random up to a bound that doubles (full jitter).
            transport: an httpx transport (tests, proxies, Unix sockets).
        """
        variables = dict(os.environ if env is None else env)
        token = token if token is not None else variables.get(TOKEN_VARIABLE)
        if not token:
            raise PermissionDenied(f"a token is required: pass token= or set {TOKEN_VARIABLE}")
        stage, sources = local_layers(variables, environment, env_files)
        snapshot = Path(snapshot_path) if snapshot_path is not None else None
        if encryption_keys is not None:
            keyring = KeyRing(encryption_keys)
        elif snapshot is not None:
            keyring = KeyRing.from_environment(variables, key_file=snapshot.with_suffix(".key"))
        else:
            keyring = KeyRing([generate_key()])  # memory only: nothing outlives the process
        low, high = reconnect_delay
        if not (0 < low <= high) or timeout <= 0 or stream_timeout <= 0:
            raise ConfmanError("timeouts and reconnect delays must be positive (first ≤ longest)")
        client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "confman-remote"},
            timeout=httpx.Timeout(timeout),
            verify=_tls_verification(verify),
            transport=transport,
            follow_redirects=False,
        )
        hub = cls(
            url,
            client,
            sources=sources,
            keyring=keyring,
            instance_id=instance_id or _default_instance_id(),
            environment=stage,
            stream_timeout=stream_timeout,
            reconnect_delay=(low, high),
            limits=limits or DEFAULT_LIMITS,
            snapshot_path=snapshot,
        )
        # No managers named: `_start` loads the registered ones the token may read.
        return _Connection(hub, [] if managers is None else list(managers))

    async def _start(self, managers: Sequence[type[ConfigurationManager[Any]]]) -> None:
        try:
            if not managers:
                managers = await self._readable_managers()
            wanted = sorted({ns for cls in managers for ns in _namespaces(cls)})
            seq, documents = await self.http.read_layers(namespaces=wanted)
            self.http.prefetch(documents)
            self._seq = self._resume = seq
        except StoreUnavailable as e:
            snapshot = self._read_snapshot()
            if snapshot is None:
                raise StoreUnavailable(f"{self.url}: {e}") from e
            log.error(
                "the server %s is unreachable (%s); serving the snapshot %s of %s (seq %d), "
                "degraded",
                self.url,
                e,
                self.snapshot_path,
                snapshot.written_at.isoformat(),
                snapshot.applied_seq,
            )
            self._snapshot = snapshot
            self._seq = self._resume = snapshot.applied_seq
            self._set_down(str(e), error=e)
            if not managers:
                managers = _registered_in(snapshot.documents)
        try:
            with full_collections_paused():  # see confman.gcpause
                for cls in managers:
                    await self.load(cls)
        finally:
            self.http.end_prefetch()
        self._spawn(self._follow(), name="confman-remote-stream")
        if self.snapshot_path is not None:
            self._spawn(self._snapshot_loop(), name="confman-snapshot")

    async def _readable_managers(self) -> list[type[ConfigurationManager[Any]]]:
        from .hub import registered_managers

        response = await self.http._call("GET", "/api/v1/namespaces", params=self._env_params())
        raise_for_problem(response)
        readable = {str(n["namespace"]) for n in response.json()}
        return [m for m in registered_managers() if _namespaces(m) <= readable]

    def _env_params(self) -> dict[str, str]:
        return {"environment": self.environment or "base"}

    async def close(self) -> None:
        """Stop following the server and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for manager in self._managers.values():
            manager._close()
        await self.client.aclose()

    # ----------------------------------------------------------------- state

    @property
    def degraded(self) -> bool:
        """The stream from the server is down (or never came up since a start from the
        snapshot file): values are the last ones received, perhaps stale."""
        return self._down is not None

    @property
    def last_error(self) -> ConfmanError | None:
        """Why the stream is down (`PermissionDenied` for a revoked token); None while
        streaming."""
        return self._last_error if self._down is not None else None

    async def wait_streaming(self, timeout: float) -> None:
        """Wait until the stream is up (tests, start-up checks). Raises TimeoutError."""
        async with asyncio.timeout(timeout):
            await self._streaming.wait()

    def _set_down(self, why: str, *, error: BaseException | None = None) -> None:
        self._streaming.clear()
        if isinstance(error, ConfmanError):
            self._last_error = error
        elif error is not None:
            self._last_error = StoreUnavailable(why)
        if self._down is None:
            self.remote_stats.degraded_since = time.time()
            log.error(
                "lost the stream from %s (%s); serving the last values, degraded", self.url, why
            )
        self._down = why

    def _set_up(self) -> None:
        if self._down is not None:
            log.warning("streaming from %s again; no longer degraded", self.url)
        self._down = None
        self._last_error = None
        self._snapshot = None
        self.remote_stats.degraded_since = None
        self._streaming.set()

    @property
    def applied_seq(self) -> int:
        """Every change up to this seq has been applied here (the stream's resume point)."""
        return self._resume

    @property
    def caught_up_seq(self) -> int:
        return self._resume

    def _applied(self, seq: int) -> None:
        """An own write: its event comes on the stream too (and is skipped there)."""

    def _seal(self, record: ChangeRecord, data: dict[str, Any] | None) -> str | None:
        return None

    def _unseal(self, notice: ChangeNotice) -> LoggedChange | None:
        return None

    async def _publish(self, notice: ChangeNotice) -> None:
        """The server tells every other instance itself."""

    async def check_ready(self) -> None:
        """Raise `StoreUnavailable` unless the stream is up and the server is ready."""
        if self._down is not None:
            raise StoreUnavailable(f"not streaming from {self.url}: {self._down}")
        response = await self.http._call("GET", "/readyz", timeout=self.readiness_timeout)
        raise_for_problem(response)

    async def catch_up(self) -> int:
        """Nothing to do: the stream is the catch-up (and reconnects on its own)."""
        return 0

    # ----------------------------------------------------------------- environments

    async def _read_environments(self) -> list[Environment]:
        response = await self.http._call("GET", "/api/v1/environments")
        raise_for_problem(response)
        found = [
            Environment(
                name=str(e["name"]),
                description=str(e.get("description") or ""),
                version=int(e["version"]),
                updated_at=datetime.fromisoformat(str(e["updated_at"])),
                updated_by=e.get("updated_by"),
            )
            for e in response.json()
        ]
        self.known_environments = frozenset(e.name for e in found)
        return found

    # ----------------------------------------------------------------- following

    async def _follow(self) -> None:
        low, high = self.reconnect_delay
        bound = low
        while not self._closed:
            error: BaseException | None
            try:
                await self._stream_once()
                why, error = "the server ended the stream", None
            except _Resync:
                try:
                    await self._resync()
                    continue
                except ConfmanError as e:
                    why, error = str(e), e
            except PermissionDenied as e:
                why, error = str(e), e
            except (httpx.HTTPError, StoreUnavailable, OSError) as e:
                why, error = f"{type(e).__name__}: {e}", e
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug here must not end the following for good
                log.exception("following %s failed unexpectedly", self.url)
                why, error = f"{type(e).__name__}: {e}", e
            self.remote_stats.drops += 1
            self._set_down(why, error=error)
            if (
                self._streaming_since is not None
                and time.monotonic() - self._streaming_since > high
            ):
                bound = low  # it streamed a good while: this is a new outage
            # Only the stream that was just lost counts: the failed attempts after it
            # must keep doubling the wait, not start over each time.
            self._streaming_since = None
            await asyncio.sleep(random.uniform(0, bound))  # full jitter: no herd
            bound = min(bound * 2, high)

    _streaming_since: float | None = None

    async def _stream_once(self) -> None:
        headers = {"Last-Event-ID": str(self._resume)}
        timeout = httpx.Timeout(self.client.timeout.connect, read=self.stream_timeout)
        async with aconnect_sse(
            self.client,
            "GET",
            "/api/v1/events",
            params=self._env_params(),
            headers=headers,
            timeout=timeout,
        ) as source:
            response = source.response
            if response.status_code == 409:
                raise _Resync
            if response.status_code != 200:
                await response.aread()
                raise_for_problem(response)
                raise StoreUnavailable(f"the stream answered {response.status_code}")
            self.remote_stats.connects += 1
            self._streaming_since = time.monotonic()
            self._set_up()
            held: list[dict[str, Any]] = []  # a change set's members, applied together
            async for sse in source.aiter_sse():
                if sse.event == "change":
                    event = json.loads(sse.data)
                    if held and event.get("change_set") != held[0].get("change_set"):
                        await self._apply_events(held)
                        held = []
                    if event.get("change_set"):
                        held.append(event)
                    else:
                        await self._apply_events([event])
                elif sse.event in ("applied", "ready"):
                    if held:
                        await self._apply_events(held)
                        held = []
                    self._resume = max(self._resume, int(json.loads(sse.data)["seq"]))
            if held:
                await self._apply_events(held)

    async def _apply_events(self, events: list[dict[str, Any]]) -> None:
        batch: list[LoggedChange] = []
        for event in events:
            if event.get("data_omitted"):
                self.remote_stats.fetched += 1
                fetched = await self.http.change_at(
                    event["namespace"],
                    event["key"],
                    int(event["version"]),
                    environment=event.get("environment") or "",
                )
                batch.append(LoggedChange(self.http.record(event), fetched.data))
            else:
                batch.append(self.http.logged(event))
        self.remote_stats.events += len(batch)
        if batch[0].record.change_set is not None:
            with self._holding():
                await self._apply_rows(batch)
        else:
            await self._apply_rows(batch)
        self._seq = max(self._seq, *(c.record.seq for c in batch))

    async def _resync(self) -> None:
        """The server cannot resume from our seq (pruned, or another database): read
        every document again and apply what is newer than what we hold."""
        self.remote_stats.resyncs += 1
        namespaces = sorted(self._by_namespace)
        seq, documents = await self.http.read_layers(namespaces=namespaces)
        log.warning("%s cannot resume from seq %d; read everything afresh (seq %d)",
                    self.url, self._resume, seq)  # fmt: skip
        await self._apply_rows([_as_change(d, seq) for d in documents])
        self._seq = self._resume = seq

    # ----------------------------------------------------------------- server-side only

    def _server_side(self, what: str) -> NoReturn:
        raise ConfmanError(
            f"{what} is done by the server, not through a remote hub: use {self.url}'s API "
            "or `confman` against the database"
        )

    async def create_environment(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("creating an environment")

    async def delete_environment(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("deleting an environment")

    async def promote(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("promoting")

    async def compare(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("comparing environments")

    async def changes_since(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("reading the change log")

    async def change_log_bounds(self) -> Any:
        self._server_side("reading the change log")

    async def change_set_records(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("reading a change set")

    async def rollback_change_set(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("rolling back a change set")

    async def run_housekeeping(self) -> int:
        self._server_side("housekeeping")

    async def wait_for_instances(self, *args: Any, **kwargs: Any) -> Any:
        self._server_side("waiting for the fleet")

    async def cluster_status(self) -> Any:
        self._server_side("the fleet's status")


def _tls_verification(
    verify: bool | str | os.PathLike[str] | ssl.SSLContext,
) -> bool | ssl.SSLContext:
    """``verify=`` as httpx takes it: a CA bundle's path (a file, or a directory of
    hashed certificates) becomes a context that trusts it; httpx's own ``verify=<str>``
    is deprecated."""
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    path = Path(verify)
    try:
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as e:
        raise ConfmanError(f"verify={verify!r}: cannot load the CA bundle: {e}") from e


def _namespaces(cls: type[ConfigurationManager[Any]]) -> set[str]:
    """``cls``'s namespace and those of the managers it requires."""
    found = {cls.namespace}
    for required in cls.requires:
        found |= _namespaces(required)
    return found


def _registered_in(documents: Iterable[StoredDocument]) -> list[type[ConfigurationManager[Any]]]:
    from .hub import registered_managers

    present = {d.namespace for d in documents}
    return [m for m in registered_managers() if _namespaces(m) <= present]


def _as_change(doc: StoredDocument, seq: int) -> LoggedChange:
    record = ChangeRecord(
        seq=seq,
        namespace=doc.namespace,
        key=doc.key,
        version=doc.version,
        action=Action.UPDATE if doc.data is not None else Action.DELETE,
        actor=doc.updated_by,
        reason=None,
        before=None,
        after=None,
        changed=(),
        origin="",
        committed_at=doc.updated_at,
        environment=doc.environment or None,
    )
    return LoggedChange(record, doc.data)
