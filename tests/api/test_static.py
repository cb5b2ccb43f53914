"""The dashboard's files carry the same security headers as the page at ``/``."""

from __future__ import annotations

from confman.api.app import STATIC_DIRECTORY

from .servers import Server

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Cache-Control")


def test_every_static_file_gets_the_dashboards_headers(sqlite_server: Server) -> None:
    client = sqlite_server.client(None)
    page = client.get("/")
    assert page.status_code == 200, page.text
    wanted = {name: page.headers[name] for name in SECURITY_HEADERS}
    assert "frame-ancestors 'none'" in wanted["Content-Security-Policy"]
    assert wanted["X-Content-Type-Options"] == "nosniff"
    files = sorted(p.name for p in STATIC_DIRECTORY.iterdir() if p.is_file())
    assert "index.html" in files
    for name in files:
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200, (name, answer.status_code)
        got = {header: answer.headers.get(header) for header in SECURITY_HEADERS}
        assert got == wanted, name
        # A revalidation (304) must not drop them either.
        again = client.get(f"/static/{name}", headers={"If-None-Match": answer.headers["ETag"]})
        assert again.status_code == 304, (name, again.status_code)
        assert {header: again.headers.get(header) for header in SECURITY_HEADERS} == wanted, name
