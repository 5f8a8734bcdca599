"""`--web.config.file`: real TLS handshakes and basic auth against the daemon under uvicorn.

Certificates are made at test time with the openssl command; clients are Python's ssl and httpx.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from conftest import require_tool, wait_for

from exporter import webconfig
from exporter.backends import OpenedBackends
from exporter.backends.sim import SimBackend
from exporter.cli import main
from exporter.config import ConfigError, load_settings
from exporter.daemon import Daemon
from exporter.webconfig import BasicAuth, load_web_config

PASSWORD = "correct horse battery staple"


class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost, client certificates; a rogue CA."""

    def __init__(self, root: Path) -> None:
        self.root, self.openssl = root, require_tool("openssl")
        self.ca("ca")
        self.ca("rogue")
        self.leaf("server", "ca", 0x1001, "IP:127.0.0.1,DNS:localhost", "serverAuth")
        self.leaf("client", "ca", 0x2001, "DNS:scraper.example", "clientAuth")
        self.leaf("other", "ca", 0x2002, "DNS:intruder.example", "clientAuth")
        self.leaf("rogueclient", "rogue", 0x3001, "DNS:scraper.example", "clientAuth")

    def run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], cwd=self.root, check=True, capture_output=True)

    def ca(self, name: str) -> None:
        self.run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN=test {name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(self, name: str, ca: str, serial: int, san: str, usage: str,
             out: str | None = None) -> None:
        out = out or name
        ext = self.root / f"{out}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
                       "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
        self.run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{out}.key", "-out", f"{out}.csr", "-subj", f"/CN={name}")
        self.run("x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-set_serial", str(serial), "-days", "2", "-extfile", ext.name,
                 "-out", f"{out}.pem")

    def client_context(self, cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.root / "ca.pem"))
        if cert:
            ctx.load_cert_chain(self.root / f"{cert}.pem", self.root / f"{cert}.key")
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


class Node:
    def __init__(self, port: int, pki: PKI, server) -> None:
        self.port, self.pki, self.server = port, pki, server
        self.url = f"https://127.0.0.1:{port}"

    def get(self, path: str, cert: str | None = None, **kw) -> httpx.Response:
        with httpx.Client(verify=self.pki.client_context(cert), timeout=5) as c:
            return c.get(self.url + path, **kw)

    def serial(self) -> int:
        ctx = self.pki.client_context()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


@pytest.fixture
def serve(tmp_path: Path, pki: PKI, monkeypatch) -> Iterator:
    """Start the daemon on the simulated node with a web config written into the PKI directory
    (relative paths in it resolve there, as the toolkit's do)."""
    started: list[tuple] = []
    monkeypatch.setattr(webconfig, "RELOAD_INTERVAL", 0.0)  # look at every tick

    def start(text: str) -> Node:
        path = pki.root / f"web-{len(started)}-{os.getpid()}.yml"
        path.write_text(text)
        backend = SimBackend(gpus=2, seed=7)
        backend.start()
        settings = load_settings(overrides={
            "collection": {"fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 0.3},
            "web": {"listen_address": "127.0.0.1:0", "config_file": str(path)},
        })
        daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
        server = daemon.server("127.0.0.1", 0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        wait_for(lambda: server.started, what="uvicorn to start")
        return Node(server.servers[0].sockets[0].getsockname()[1], pki, server)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(10)


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"


def test_tls_scrape_headers_and_plain_http_refused(serve) -> None:
    node = serve(TLS + "  min_version: TLS12\nhttp_server_config:\n  headers:\n"
                 "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
                 "    Content-Security-Policy: default-src 'self'\n")
    r = node.get("/metrics")
    assert r.status_code == 200 and "gpu_up" in r.text
    assert r.headers["x-frame-options"] == "deny"
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert node.get("/healthz").headers["x-frame-options"] == "deny"
    # The status page keeps its own, stricter policy (the handler's header wins).
    assert node.get("/").headers["content-security-policy"].startswith("default-src 'none'")
    assert node.serial() == 0x1001
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{node.port}/metrics", timeout=5)
    assert node.get("/readyz").status_code in (200, 503)  # still serving TLS


def test_client_certificate_required(serve) -> None:
    node = serve(MTLS)
    assert node.get("/metrics", cert="client").status_code == 200
    for cert in (None, "rogueclient"):  # no certificate; one from a CA we do not trust
        with pytest.raises(httpx.TransportError):
            node.get("/metrics", cert=cert)
    assert node.get("/healthz", cert="client").status_code == 200


def test_client_allowed_sans(serve) -> None:
    node = serve(MTLS + "  client_allowed_sans: [scraper.example]\n")
    assert node.get("/metrics", cert="client").status_code == 200
    with pytest.raises(httpx.TransportError):
        node.get("/metrics", cert="other")  # trusted CA, but not an allowed SAN


def test_basic_auth_and_bcrypt_cache(serve, monkeypatch) -> None:
    calls: list[bytes] = []
    real = webconfig._verify_bcrypt

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_verify_bcrypt", counting)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    node = serve(TLS + f"basic_auth_users:\n  prometheus: '{hashed}'\n")

    r = node.get("/metrics")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Basic realm="gpu-fleet-exporter"')
    assert calls == []  # no credentials: no bcrypt
    for path in ("/health", "/probes", "/", "/openapi.json"):
        assert node.get(path).status_code == 401, path
    for path in ("/healthz", "/readyz"):
        assert node.get(path).status_code in (200, 503), path
    # Bearer-token endpoints keep their own auth (403: disabled, no token configured).
    assert httpx.post(node.url + "/admin/release", verify=node.pki.client_context()) \
        .status_code == 403

    assert node.get("/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert node.get("/metrics", auth=("nobody", PASSWORD)).status_code == 401
    assert len(calls) == 2  # an unknown user pays bcrypt too: timing does not tell
    calls.clear()
    assert node.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    assert len(calls) == 1
    assert node.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    assert node.get("/health", auth=("prometheus", PASSWORD)).status_code in (200, 503)
    assert len(calls) == 1, "second scrape paid bcrypt again"
    assert node.get("/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert len(calls) == 1  # the recent failure is cached too (for a while)


def test_certificate_reload(serve, pki: PKI) -> None:
    node = serve(TLS.replace("server.", "reload."))
    # reload.* starts as a copy of the server pair.
    assert node.serial() == 0x1001
    pki.leaf("server", "ca", 0x1002, "IP:127.0.0.1,DNS:localhost", "serverAuth", out="next")
    for suffix in ("key", "pem"):  # replaced as a secret mount does: new files, renamed in
        os.replace(pki.root / f"next.{suffix}", pki.root / f"reload.{suffix}")
    wait_for(lambda: node.serial() == 0x1002, what="the new certificate on a new handshake")
    assert node.get("/metrics").status_code == 200


@pytest.fixture(autouse=True)
def _reload_pair(pki: PKI) -> None:
    for suffix in ("key", "pem"):
        (pki.root / f"reload.{suffix}").write_bytes((pki.root / f"server.{suffix}").read_bytes())


BAD = {
    "unknown key": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                    "  client_auth: RequireAndVerifyClientCert\n", "unknown key"),
    "unknown top-level key": ("basic_auth:\n  a: b\n", "unknown key"),
    "curve_preferences": (TLS + "  curve_preferences: [X25519]\n", "curve_preferences"),
    "RequireAnyClientCert": (TLS + "  client_auth_type: RequireAnyClientCert\n"
                             "  client_ca_file: ca.pem\n", "cannot accept a client certificate"),
    "TLS 1.3 cipher": (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "TLS 1.3 suite"),
    "unknown cipher": (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown"),
    "max below min": (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "below"),
    "TLS 1.0": (TLS + "  min_version: TLS10\n", "deprecated"),
    "sans without required cert": (TLS + "  client_allowed_sans: [a]\n", "client_allowed_sans"),
    "verify without CA": (TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
                          "needs client_ca_file"),
    "CA without client auth": (TLS + "  client_ca_file: ca.pem\n", "NoClientCert"),
    "inline key": (TLS + "  key: secret\n", "inline"),
    "no cert_file": ("tls_server_config:\n  min_version: TLS13\n", "both required"),
    "missing cert file": (TLS.replace("server.pem", "absent.pem"), "absent.pem: not found"),
    "key of another cert": (TLS.replace("server.key", "client.key"), "not a pair"),
    "header not allowed": ("http_server_config:\n  headers:\n    Server: x\n",
                           "cannot be configured"),
    "header value": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                     "must be one of"),
    "not bcrypt": ("basic_auth_users:\n  alice: plaintext\n", "not a bcrypt hash"),
    "rate_limit": ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit"),
    "not yaml": ("tls_server_config: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_web_config_exits_2_with_one_line(case: str, pki: PKI, capsys) -> None:
    text, expected = BAD[case]
    path = pki.root / f"bad-{case.replace(' ', '-')}.yml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--web.config.file", str(path), "--collection.backend", "sim"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu-fleet-exporter: web config file"), err
    assert expected in err, err


def test_missing_web_config_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["serve", "--web.config.file", str(tmp_path / "nope.yml")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yml: not found" in err


def test_good_config_parses_with_relative_paths(pki: PKI) -> None:
    path = pki.root / "good.yml"
    path.write_text(MTLS + "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
                    "  prefer_server_cipher_suites: false\nhttp_server_config:\n  http2: false\n")
    web = load_web_config(path)
    assert web.tls is not None and web.tls.cert_file == pki.root / "server.pem"
    assert web.tls.verify_mode == ssl.CERT_REQUIRED and web.tls.client_ca_file == pki.root / \
        "ca.pem"
    assert load_web_config(_write(pki.root / "empty.yml", "")).tls is None


def test_settings_flag_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[from --web\.config\.file\]"):
        load_settings(overrides={"web": {"config_file": ["not", "a", "path"]}})


def test_failures_expire_and_cache_is_bounded(monkeypatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(webconfig, "_verify_bcrypt",
                        lambda p, h: calls.append(p) or p == b"good")
    now = [0.0]
    auth = BasicAuth({"u": b"$2b$04$" + b"x" * 53}, size=2, failure_ttl=10.0,
                     clock=lambda: now[0])

    async def scenario() -> None:
        assert not await auth.check(b"u", b"bad")
        assert not await auth.check(b"u", b"bad")
        assert len(calls) == 1
        now[0] = 11.0  # the failure expired: bcrypt again
        assert not await auth.check(b"u", b"bad")
        assert len(calls) == 2
        for i in range(5):
            await auth.check(b"u", b"bad%d" % i)
        assert len(auth._failed) == 2 and len(auth._ok) == 0
        assert await auth.check(b"u", b"good")
        assert await auth.check(b"u", b"good")
        assert calls.count(b"good") == 1

    asyncio.run(scenario())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
