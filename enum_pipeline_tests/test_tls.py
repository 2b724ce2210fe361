"""A code host over TLS, for real: a loopback HTTPS server whose certificate a test CA signed.
Every client of a process shares one verifying context (loading the CA bundle once), which
honours ``SSL_CERT_FILE`` as httpx does; a certificate the trust store does not vouch for fails
the page, never an unverified read."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enum_pipeline.sources.http import HttpClient, PageError
from enum_pipeline.sources.httpdeadline import shared_ssl_context

pytestmark = pytest.mark.timeout(60)


def _cert(subject: str, key, issuer_key, issuer: x509.Name | None, *, ca: bool):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, *objects) -> Path:
    data = b""
    for obj in objects:
        if isinstance(obj, x509.Certificate):
            data += obj.public_bytes(serialization.Encoding.PEM)
        else:
            data += obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path.write_bytes(data)
    return path


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"served": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def https(tmp_path):
    """(URL of a loopback HTTPS server, the PEM of the CA that signed its certificate)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("enum_pipeline test CA", ca_key, ca_key, None, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_key, ca.subject, ca=False)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_pem(tmp_path / "server.pem", cert, key))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", _pem(tmp_path / "ca.pem", ca)
    finally:
        server.shutdown()
        server.server_close()


def test_clients_verify_the_host_with_the_trust_store_ssl_cert_file_names(https, monkeypatch):
    url, ca = https
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    first, second = HttpClient(max_retries=0), HttpClient(max_retries=0)
    try:
        assert first.get_json(f"{url}/orgs/acme").data == {"served": "/orgs/acme"}
        assert second.get_json(f"{url}/orgs/beta").data == {"served": "/orgs/beta"}
        # one context for the process: the CA bundle is loaded once, not per client or run
        contexts = {id(c._http()._transport._pool._ssl_context) for c in (first, second)}
        assert contexts == {id(shared_ssl_context())}
    finally:
        first.close()
        second.close()


def test_a_certificate_the_trust_store_does_not_vouch_for_fails_the_page(https, monkeypatch):
    url, _ = https
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = HttpClient(max_retries=0)
    try:
        with pytest.raises(PageError) as failed:
            client.get_json(f"{url}/orgs/acme")
    finally:
        client.close()
    assert "CERTIFICATE_VERIFY_FAILED" in failed.value.reason, failed.value.reason
