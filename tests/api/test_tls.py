"""``confman serve --tls-cert FILE --tls-key FILE``: HTTPS only, with a certificate the
test makes (a CA of its own, and a server certificate for 127.0.0.1 it signs)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import server_env
from .servers import (
    STANDARD_TOKENS,
    EventStream,
    Server,
    confman,
    create_tokens,
    start_server,
)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server-key.pem): a CA and a certificate for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("confman test CA"))
        .issuer_name(_name("confman test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def start_tls_server(database_url: str, directory: Path) -> tuple[Server, Path]:
    """A server over HTTPS with the standard tokens, and the CA bundle that verifies it."""
    ca, cert, key = make_certificates(directory)
    env = server_env()
    tokens = create_tokens(database_url, env, directory, STANDARD_TOKENS)
    trusted = ssl.create_default_context(cafile=str(ca))
    server = start_server(
        database_url, env, directory, tokens, "--tls-cert", str(cert), "--tls-key", str(key),
        tls=trusted,
    )  # fmt: skip
    return server, ca


async def test_serve_listens_with_tls_and_refuses_plain_http(
    database_url: str, tmp_path: Path
) -> None:
    server, _ca = start_tls_server(database_url, tmp_path)
    try:
        assert server.url.startswith("https://")
        service = server.client("service")
        answer = service.get("/api/v1/snapshot", params={"namespace": "cache"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["documents"][0]["namespace"] == "cache"
        async with server.aclient("viewer") as viewer, EventStream(viewer) as stream:
            assert stream.ready is not None  # the event stream works over TLS too
        assert f"https://127.0.0.1:{server.port}/" in server.output()

        plain = f"http://127.0.0.1:{server.port}/healthz"
        async with httpx.AsyncClient(timeout=5) as stranger:
            with pytest.raises(httpx.TransportError):
                await stranger.get(plain)
            # Certificates are verified: one this client has no CA for is refused.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.get(f"{server.url}/healthz")
        assert server.proc.poll() is None  # neither took the server down
        assert service.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_a_wrong_or_half_tls_pair_is_a_usage_error(database_url: str, tmp_path: Path) -> None:
    ca, cert, _ = make_certificates(tmp_path)
    env = server_env()
    run = ["serve", "--database-url", database_url, "--port", "0", "--no-bootstrap-token"]
    half = confman(*run, "--tls-cert", str(cert), env=env, cwd=tmp_path, code=2)
    assert "--tls-cert and --tls-key go together" in half.stderr
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    _, _, other = make_certificates(elsewhere)  # a key of another certificate
    wrong = confman(*run, "--tls-cert", str(cert), "--tls-key", str(other), env=env,
                    cwd=tmp_path, code=2)  # fmt: skip
    assert "cannot load" in wrong.stderr
    not_pem = confman(*run, "--tls-cert", str(ca), "--tls-key", str(ca), env=env,
                      cwd=tmp_path, code=2)  # fmt: skip
    assert "cannot load" in not_pem.stderr
