"""A remote hub over HTTPS (``confman serve --tls-cert --tls-key``, a CA of the test's
own): it connects and streams with ``verify=<the CA bundle>``, and without the CA it is
refused at once with an error that names the certificate problem."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confman import ConfmanError, StoreUnavailable
from confman.managers import ModelProviderConfigurationManager
from confman.remote import RemoteHub

from ..api.servers import Server, unique
from ..api.test_tls import start_tls_server
from .support import until

MANAGERS = [ModelProviderConfigurationManager]
PATH = "/api/v1/namespaces/model_provider/documents/{}"


@pytest.fixture
def tls_server(database_url: str, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server over HTTPS, and the CA bundle its certificate is verified with."""
    server, ca = start_tls_server(database_url, tmp_path)
    try:
        yield server, ca
    finally:
        server.stop()


@pytest.mark.filterwarnings("error::DeprecationWarning")  # httpx's verify=<str> is
async def test_a_hub_verifying_with_the_ca_connects_and_streams(
    tls_server: tuple[Server, Path],
) -> None:
    server, ca = tls_server
    assert server.url.startswith("https://")
    key = unique("tls")
    with server.client("editor") as editor:
        body = {"type": "openai", "api_key": "sk-over-tls", "rpm_limit": 1}
        assert editor.put(PATH.format(key), json=body).status_code == 201
    async with RemoteHub.connect(
        server.url, token=server.tokens["service"], managers=MANAGERS, env={}, env_files=[],
        verify=str(ca),
    ) as hub:  # fmt: skip
        providers = hub.manager(ModelProviderConfigurationManager)
        api_key = providers.get(key).api_key
        assert api_key is not None and api_key.get_secret_value() == "sk-over-tls"
        await hub.wait_streaming(10)
        with server.client("editor") as editor:
            assert editor.patch(PATH.format(key), json={"rpm_limit": 2}).status_code == 200
        await until(lambda: providers.get(key).rpm_limit == 2, 10, "the change over TLS")
        assert not hub.degraded


async def test_a_hub_without_the_ca_is_refused_promptly_and_clearly(
    tls_server: tuple[Server, Path], tmp_path: Path
) -> None:
    server, _ = tls_server
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        async with RemoteHub.connect(
            server.url, token=server.tokens["service"], managers=MANAGERS, env={},
            env_files=[],
        ):  # fmt: skip
            pass
    assert time.monotonic() - started < 5  # a refusal, not a wait for a timeout
    message = str(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate" in message.lower(), message
    assert server.url in message, message
    # With a snapshot to fall back on it starts degraded, and says why.
    snapshot = tmp_path / "snapshot.json"
    async with RemoteHub.connect(
        server.url, token=server.tokens["service"], managers=MANAGERS, env={}, env_files=[],
        verify=str(tls_server[1]), snapshot_path=snapshot,
    ):  # fmt: skip
        await until(snapshot.exists, 10, "the snapshot file")
    async with RemoteHub.connect(
        server.url, token=server.tokens["service"], managers=MANAGERS, env={}, env_files=[],
        snapshot_path=snapshot, reconnect_delay=(0.05, 0.2),
    ) as hub:  # fmt: skip
        assert hub.degraded
        assert isinstance(hub.last_error, ConfmanError)
        assert "certificate" in str(hub.last_error).lower(), hub.last_error
        # Retrying changes nothing (the certificate stays untrusted), and says so.
        started = time.monotonic()
        await until(lambda: hub.remote_stats.drops >= 3, 10, "the retries")
        assert hub.degraded and "certificate" in str(hub.last_error).lower(), hub.last_error
        assert time.monotonic() - started < 10
    assert server.proc.poll() is None


def test_a_ca_bundle_that_cannot_be_loaded_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ConfmanError, match="cannot load the CA bundle"):
        RemoteHub.connect("https://127.0.0.1:1", token="cmt_x", verify=str(missing), env={})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfmanError, match=r"garbage\.pem.*cannot load the CA bundle"):
        RemoteHub.connect("https://127.0.0.1:1", token="cmt_x", verify=str(garbage), env={})
