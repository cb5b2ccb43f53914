"""S3: the API's paged collection listing with 100,000 virtual keys, first and last page.

``GET /api/v1/namespaces/virtual_key/documents?limit=1000[&after=<key>]`` through the
app `confman serve` runs (`confman.api.create_app`), in this process over
``httpx.ASGITransport`` (the listing's cost, not the network's), with an admin token.
The last page's cursor is found by walking every page once; then the first and the last
page are fetched in alternating rounds. Paging is by key (``key > after``), so the last
page should cost what the first does: target last <= 1.5x first (p50).
"""

from __future__ import annotations

import time

from .common import Check, Context, FigureResult, latency
from .gateway import managers, seed_gateway

ID = "S3"
TITLE = "API listing, 100,000 virtual keys: first page vs last page"

PAGE = 1000


async def run(ctx: Context, result: FigureResult) -> None:
    import httpx

    from confman import ConfigHub
    from confman.api import create_app
    from confman.api.tokens import ApiTokenManager

    m = managers()
    keys = ctx.scale(5_000, 100_000)
    rounds = ctx.scale(5, 30)
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    result.facts.update(database=backend, virtual_keys=keys, page=PAGE)
    path = f"/api/v1/namespaces/{m['virtual_key'].namespace}/documents"
    async with ctx.database(backend) as url:
        await seed_gateway(ctx, url, providers=0, virtual_keys=keys, log_keys=False)
        async with ConfigHub.connect(
            url, managers=[m["virtual_key"], ApiTokenManager], **ctx.hub_options()
        ) as hub:
            token = await hub.manager(ApiTokenManager).create_token("bench-s3", "admin")
            app = create_app(hub)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://bench",
                    headers={"Authorization": f"Bearer {token.plaintext}"},
                    timeout=60,
                ) as client,
            ):

                async def page(after: str | None) -> dict[str, object]:
                    params: dict[str, str | int] = {"limit": PAGE}
                    if after is not None:
                        params["after"] = after
                    response = await client.get(path, params=params)
                    response.raise_for_status()
                    body: dict[str, object] = response.json()
                    return body

                cursors: list[str | None] = [None]
                seen = 0
                while True:
                    body = await page(cursors[-1])
                    seen += len(body["documents"])  # type: ignore[arg-type]
                    if body["next_after"] is None:
                        break
                    cursors.append(str(body["next_after"]))
                assert seen == keys, (seen, keys)
                last = cursors[-1]
                took: dict[str, list[int]] = {"first": [], "last": []}
                for _ in range(rounds):
                    for side, after in (("first", None), ("last", last)):
                        began = time.perf_counter_ns()
                        body = await page(after)
                        took[side].append(time.perf_counter_ns() - began)
                        assert body["documents"]
    first = result.add(latency(f"first page ({PAGE} keys)", took["first"], kind="baseline"))
    final = result.add(
        latency(f"last page of {len(cursors)} (after={last[:12] if last else ''}...)", took["last"])
    )
    result.check(Check.at_most("last page / first page (p50)", final.value / first.value, 1.5))
