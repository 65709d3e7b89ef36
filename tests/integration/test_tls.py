"""``depositd serve`` terminates TLS itself with a certificate and key from the config."""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from depositd.config import load_config
from depositd.db.engine import Database
from depositd.errors import ConfigError
from depositd.services import merchants, users

from ..conftest import free_port
from .test_callbacks import ACK, Setup, payload, signed
from .test_callbacks_crash import config_file, start_server, wait_until_serving


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A fresh key and a certificate for 127.0.0.1, made here for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "depositd test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_serve_speaks_https_with_the_configured_certificate(
    db: Database, tmp_path: Path
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(
        db,
        config_file(tmp_path, merchant.id),
        port,
        log,
        DEPOSITD_SERVER__TLS_CERT_FILE=str(cert),
        DEPOSITD_SERVER__TLS_KEY_FILE=str(key),
    )
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        await wait_until_serving(port, server, scheme="https", verify=trusting)
        body = payload()
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trusting) as c:
            answer = await c.post("/v1/callbacks/custody", content=body, headers=signed(body))
        assert (answer.status_code, answer.text) == (200, ACK["body"]), log.read_text()
        # a client that does not trust the certificate refuses it; plain http gets nowhere
        async with httpx.AsyncClient() as default:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default.get(f"https://127.0.0.1:{port}/healthz")
            with pytest.raises(httpx.HTTPError):
                await default.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    (deposit,) = await Setup(db, merchant.id, httpx.AsyncClient()).deposits()
    assert deposit["status"] == "credited"


def test_a_certificate_without_its_key_or_that_does_not_load_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    only_cert = {"DEPOSITD_SERVER__TLS_CERT_FILE": str(cert)}
    with pytest.raises(ConfigError, match="set both or neither"):
        load_config(None, only_cert)
    other_key = tmp_path / "other"
    other_key.mkdir()
    _, wrong_key = self_signed(other_key)
    mismatched = {**only_cert, "DEPOSITD_SERVER__TLS_KEY_FILE": str(wrong_key)}
    with pytest.raises(ConfigError, match="cannot load them"):
        load_config(None, mismatched)
    assert load_config(None, {**only_cert, "DEPOSITD_SERVER__TLS_KEY_FILE": str(key)})
