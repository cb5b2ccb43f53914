"""`confman.sync` over a remote hub: a threaded WSGI app serves values that stream in
from ``confman serve`` while another client writes through the server."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from typing import Any

import httpx
from werkzeug.serving import make_server

from confman import sync
from confman.managers import CacheConfigurationManager

from ..api.servers import Server


def test_sync_remote_hub_under_a_threaded_wsgi_server(server: Server) -> None:
    writes = 15
    with sync.connect(
        server.url,
        token=server.tokens["service"],
        env={},
        env_files=[],
        managers=[CacheConfigurationManager],
    ) as hub:
        cache = hub.manager(CacheConfigurationManager)
        start = cache.version()

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            body = json.dumps(
                {"version": cache.version(), "ttl": cache.current.default_ttl_seconds}
            )
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body.encode()]

        wsgi = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=wsgi.serve_forever, daemon=True)
        serving.start()
        url = f"http://127.0.0.1:{wsgi.server_port}/"
        done = threading.Event()

        def client() -> list[tuple[int, int]]:
            seen: list[tuple[int, int]] = []
            with httpx.Client(timeout=5) as http:
                while not done.is_set() or len(seen) < 5:
                    answer = http.get(url).json()
                    seen.append((answer["version"], answer["ttl"]))
            return seen

        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                clients = [pool.submit(client) for _ in range(4)]
                try:
                    with server.client("editor") as editor:
                        path = "/api/v1/namespaces/cache/documents/default"
                        for n in range(1, writes + 1):
                            version = start + n - 1
                            answer = editor.patch(
                                path,
                                json={"default_ttl_seconds": 100 + n},
                                headers={"If-Match": f'"{version}"'},
                            )
                            assert answer.status_code == 200, answer.text
                    deadline = time.monotonic() + 10
                    while cache.version() < start + writes and time.monotonic() < deadline:
                        time.sleep(0.02)
                finally:
                    done.set()
                results = [c.result(timeout=30) for c in clients]
            final = httpx.get(url).json()
        finally:
            wsgi.shutdown()
            serving.join(5)
    assert final == {"version": start + writes, "ttl": 100 + writes}
    for seen in results:
        versions = [v for v, _ in seen]
        assert versions == sorted(versions), "a client saw a version go backwards"
        for version, ttl in seen:  # each value belongs to its version
            assert version == start or ttl == 100 + version - start
