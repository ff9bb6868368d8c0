"""Real servers on loopback for the alert tests: an SMTP server (aiosmtpd) with STARTTLS
and a login, and Slack's Web API behind an HTTPS proxy.

Dagster's e-mail sensor and dagster-slack's client verify TLS with Python's default
context, so both servers present certificates from a test CA that the tests trust
through SSL_CERT_FILE. dagster-slack builds its WebClient with Slack's fixed address;
slack_sdk reads HTTPS_PROXY, so the "proxy" here answers CONNECT slack.com:443 itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from financial_etl_tests.servers import free_port


@dataclass
class LoopbackCA:
    folder: Path

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "financial_etl test CA")])
        self.cert = (
            self._builder(name, name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = self.folder / "ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject, issuer, public_key) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context whose certificate names `host` (a DNS name or an IP)."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        cert = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]), self.cert.subject, key.public_key()
            )
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.folder / f"{host}.pem", self.folder / f"{host}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


# --- SMTP -------------------------------------------------------------------------------


@dataclass
class SmtpServer:
    """Accepts mail from one login; `refuse` answers the next N messages with 451."""

    user: str
    password: str
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    messages: list[bytes] = field(default_factory=list)
    refused: int = 0
    refuse: int = 0
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        if self.refuse:
            self.refuse -= 1
            self.refused += 1
            return "451 4.3.0 mail server busy, try again later"
        self.messages.append(envelope.content)
        return "250 OK"

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:  # the authenticator
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user
            and auth_data.password.decode() == self.password
        )
        self.logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535

    def start(self, ca: LoopbackCA) -> None:
        self.controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            tls_context=ca.server_context(self.host),
            require_starttls=True,
            authenticator=self,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN"],  # PLAIN only: one login per attempt to count
        )
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


# --- Slack ------------------------------------------------------------------------------


class _ThreadingServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class SlackApi:
    """chat.postMessage behind an HTTPS proxy on loopback. `fail` answers the next N posts
    with HTTP 503 and a body that quotes the request's Authorization header, as a broken
    gateway might: the test's way to see that an error never carries the token."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    posts: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    fail: int = 0
    tunnels: list[str] = field(default_factory=list)

    def start(self, ca: LoopbackCA) -> None:
        api, tls = self, ca.server_context("slack.com")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_CONNECT(self) -> None:  # the proxy: become slack.com:443 on this socket
                api.tunnels.append(self.path)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.connection = tls.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                self.close_connection = False
                while not self.close_connection:
                    self.handle_one_request()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                fields = (
                    json.loads(body)
                    if self.headers.get("Content-Type", "").startswith("application/json")
                    else {k: v[0] for k, v in parse_qs(body).items()}
                )
                post = {"path": self.path, "authorization": self.headers.get("Authorization"), **fields}
                if api.fail:
                    api.fail -= 1
                    api.failed.append(post)
                    self._answer(503, {"ok": False, "error": f"gateway rejected {post['authorization']}"})
                else:
                    api.posts.append(post)
                    self._answer(200, {"ok": True, "channel": fields.get("channel"), "ts": "1700000000.000100"})

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self.server = _ThreadingServer((self.host, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
