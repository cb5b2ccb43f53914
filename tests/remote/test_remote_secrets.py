"""Secrets through remote hubs: a viewer's and an editor's hub never receive a plaintext
(every byte of every answer and event they are sent is looked at), a service's always
does, and an editor's hub can change a document's other fields without losing its
secret (the server puts back the masks it sent)."""

from __future__ import annotations

import asyncio
import gzip
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from confman import ConfigChange
from confman.managers import ModelProviderConfigurationManager

from ..api.servers import Server, unique
from .support import remote, until

MANAGERS = [ModelProviderConfigurationManager]
PATH = "/api/v1/namespaces/model_provider/documents/{}"


@dataclass
class Exchange:
    """One request the hub sent and the answer's raw bytes, as they arrived."""

    method: str
    url: str
    sent: bytes
    status: int = 0
    encoding: str = ""
    chunks: list[bytes] = field(default_factory=list)

    def received(self) -> bytes:
        raw = b"".join(self.chunks)
        if self.encoding in ("", "identity"):
            return raw
        if self.encoding == "gzip":
            return gzip.decompress(raw)
        if self.encoding == "deflate":
            return zlib.decompress(raw)
        raise AssertionError(f"{self.url}: an encoding this test cannot read: {self.encoding}")


class _Recorded(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: Exchange) -> None:
        self.inner = inner
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.exchange.chunks.append(bytes(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncHTTPTransport`, keeping every request body and every response body
    (streamed ones, the SSE stream included, chunk by chunk as they are read)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request.method, str(request.url), await request.aread())
        self.exchanges.append(exchange)
        response = await self.inner.handle_async_request(request)
        exchange.status = response.status_code
        exchange.encoding = response.headers.get("content-encoding", "").lower()
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Recorded(response.stream, exchange),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def received(self) -> bytes:
        return b"\n".join(e.received() for e in self.exchanges)

    def streamed(self) -> bytes:
        return b"".join(e.received() for e in self.exchanges if e.url.endswith("/events") or
                        "/events?" in e.url)  # fmt: skip


def secret(label: str) -> str:
    return f"sk-{label}-{uuid.uuid4().hex}"


async def test_viewer_and_editor_hubs_never_receive_a_plaintext(server: Server) -> None:
    key = unique("secret")
    stored, header = secret("first"), secret("header")
    with server.client("editor") as editor:
        body = {"type": "openai", "api_key": stored, "extra_headers": {"X-Auth": header}}
        assert editor.put(PATH.format(key), json=body).status_code == 201
    stored = await receives_no_plaintext(server, "viewer", key, [stored, header])
    await receives_no_plaintext(server, "editor", key, [stored, header])


async def receives_no_plaintext(server: Server, role: str, key: str, known: list[str]) -> str:
    """A ``role`` hub starts, follows a change of the secret made elsewhere and (an
    editor) makes one itself; no byte it received holds a plaintext. The stored key."""
    transport = RecordingTransport()
    plaintexts = list(known)
    async with remote(server, role, MANAGERS, transport=transport) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        version = providers.version(key)
        held = providers.get(key).api_key
        assert held is not None and held.get_secret_value().startswith("**********")
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        # A change made elsewhere, secrets and all, comes on the stream: masked.
        stored = secret(f"rotated-by-api-{role}")
        plaintexts.append(stored)
        with server.client("editor") as editor:
            answer = editor.patch(PATH.format(key), json={"api_key": stored, "timeout_seconds": 30})
            assert answer.status_code == 200, answer.text
        await until(lambda: providers.version(key) == version + 1, 10, "the change")
        assert providers.get(key).timeout_seconds == 30
        held = providers.get(key).api_key
        assert held is not None and held.get_secret_value().startswith("**********")
        if role == "editor":
            # The editor's own write sends a plaintext; neither the answer nor the
            # event of it may send it back.
            stored = secret("rotated-by-hub")
            plaintexts.append(stored)
            events = hub.remote_stats.events
            await providers.update({"api_key": stored}, key=key)
            # Its event comes too (skipped: the hub holds that version already).
            await until(lambda: hub.remote_stats.events > events, 10, "the own write's event")
        await asyncio.sleep(0.3)  # whatever else the stream sends
    assert [c.version for c in seen][:1] == [version + 1]
    received = transport.received()
    assert b"event: change" in transport.streamed(), transport.streamed()[:500]
    assert b"**********" in received  # the masks did arrive
    for plaintext in plaintexts:
        assert plaintext.encode() not in received, (role, plaintext)
    refused = [(e.method, e.url, e.status) for e in transport.exchanges if e.status >= 400]
    assert refused == []
    return stored


async def test_a_service_hub_receives_secrets_in_clear(server: Server) -> None:
    key = unique("service")
    start, later = secret("start"), secret("later")
    with server.client("editor") as editor:
        assert (
            editor.put(PATH.format(key), json={"type": "openai", "api_key": start}).status_code
            == 201
        )
    transport = RecordingTransport()
    async with remote(server, "service", MANAGERS, transport=transport) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        api_key = providers.get(key).api_key
        assert api_key is not None and api_key.get_secret_value() == start
        await hub.wait_streaming(10)
        with server.client("editor") as editor:
            answer = editor.patch(PATH.format(key), json={"api_key": later})
            assert answer.status_code == 200, answer.text
        await until(lambda: providers.version(key) == 2, 10, "the change")
        api_key = providers.get(key).api_key
        assert api_key is not None and api_key.get_secret_value() == later
    assert later.encode() in transport.streamed()  # in clear, in the event itself


async def test_an_editor_hub_keeps_a_secret_it_only_sees_masked(server: Server) -> None:
    key = unique("keep")
    kept, header = secret("kept"), secret("kept-header")
    with server.client("editor") as editor:
        body = {"type": "openai", "api_key": kept, "extra_headers": {"X-Auth": header}}
        assert editor.put(PATH.format(key), json=body).status_code == 201
    transport = RecordingTransport()
    async with remote(server, "editor", MANAGERS, transport=transport) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        events = hub.remote_stats.events
        change = await providers.update({"timeout_seconds": 12, "rpm_limit": 9}, key=key)
        assert change.version == 2
        await until(lambda: hub.remote_stats.events > events, 10, "the own write's event")
        assert providers.get(key).rpm_limit == 9
    sent = b"".join(e.sent for e in transport.exchanges if e.method == "PUT")
    assert b"**********" in sent and kept.encode() not in sent  # it sent the masks back
    # A service reads the stored document: the secrets are the ones it had.
    async with remote(server, "service", MANAGERS) as hub:
        provider = hub.manager(ModelProviderConfigurationManager).get(key)
        assert provider.timeout_seconds == 12 and provider.rpm_limit == 9
        assert provider.api_key is not None and provider.api_key.get_secret_value() == kept
        assert provider.extra_headers["X-Auth"].get_secret_value() == header
    assert kept.encode() not in transport.received()
