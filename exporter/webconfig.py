"""`--web.config.file`: TLS, basic auth and response headers in the Prometheus exporter-toolkit
format (docs/security.md says what is accepted, what is refused and why).

The file is read once at start; anything Python's `ssl` or this server cannot honour exactly is
refused then, with one line (a `ConfigError`, exit code 2), rather than served differently from
what the file says. The server certificate and key are watched: when either file changes, the
live `SSLContext` loads the new pair and new handshakes present it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .config import ConfigError, read_yaml
from .safefiles import shown

log = logging.getLogger(__name__)

REALM = "gpu-fleet-exporter"
RELOAD_INTERVAL = 30.0  # seconds between looks at the certificate and key files
# Answer without basic auth: probes of liveness and readiness, and the endpoints that take a
# bearer token of their own (one Authorization header cannot carry both).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
BEARER_PATHS = frozenset({"/admin/release", "/admin/resume", "/probes/run"})

# The toolkit's fixed set of configurable headers (values: None = any, else the allowed ones).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

# Go's tls.CipherSuites() names for TLS 1.0-1.2 -> OpenSSL names. TLS 1.3 suites are not
# configurable in Go either (it ignores them); we refuse them rather than ignore them.
CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                 "TLS_CHACHA20_POLY1305_SHA256")
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "RequireClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
VERIFY_MODES = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TLSServerConfig(_Strict):
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: str = ""
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] | None = None
    curve_preferences: list[str] | None = None
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: list[str] | None = None


class HTTPServerConfig(_Strict):
    http2: bool = True
    headers: dict[str, str] | None = None


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None
    rate_limit: dict[str, Any] | None = None


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    verify_mode: ssl.VerifyMode
    client_ca_file: Path | None
    client_ca: str | None
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    ciphers: str | None
    prefer_server_ciphers: bool
    allowed_sans: tuple[str, ...] | None


@dataclass(frozen=True)
class WebConfig:
    path: Path
    tls: TLSSettings | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file, its certificates and keys; any problem is one ConfigError."""
    where = f"web config file {path}"
    data = read_yaml(path, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping, not {type(data).__name__}")
    try:
        raw = WebConfigFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {_describe(e)}") from None
    try:
        return _check(raw, path)
    except _Refused as e:
        raise ConfigError(f"{where}: {e}") from None


class _Refused(Exception):
    pass


def _describe(error: ValidationError) -> str:
    err = error.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    more = f" (and {error.error_count() - 1} more problem(s))" if error.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        model: Any = WebConfigFile
        for part in err["loc"][:-1]:
            model = model.model_fields[part].annotation.__args__[0]
        return f"{key}: unknown key; known: {', '.join(model.model_fields)}{more}"
    return f"{key}: {err['msg']} (got {shown(err.get('input'))}){more}"


def _check(raw: WebConfigFile, path: Path) -> WebConfig:
    base = path.parent
    if raw.rate_limit is not None:
        raise _Refused("rate_limit: not supported by gpu-fleet-exporter; rate-limit in front of "
                       "it (a scrape every few seconds needs none)")
    http = raw.http_server_config or HTTPServerConfig()
    headers = _check_headers(http.headers or {})
    users = _check_users(raw.basic_auth_users or {})
    tls = _check_tls(raw.tls_server_config, base) if raw.tls_server_config else None
    if http.http2 and "http2" in http.model_fields_set:
        log.info("http_server_config.http2: this server speaks HTTP/1.1 only; clients negotiate "
                 "it through ALPN")
    web = WebConfig(path=path, tls=tls, users=users, headers=headers)
    if tls is not None:
        build_ssl_context(tls)  # loads every file now: a bad pair fails the start, not a scrape
    elif users:
        log.warning("basic_auth_users without tls_server_config: passwords cross the network "
                    "in the clear")
    return web


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name not in ALLOWED_HEADERS:
            raise _Refused(f"http_server_config.headers: header {name!r} cannot be configured; "
                           f"allowed: {', '.join(ALLOWED_HEADERS)}")
        allowed = ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise _Refused(f"http_server_config.headers.{name}: must be one of "
                           f"{', '.join(allowed)} (got {shown(value)})")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
            raise _Refused(f"http_server_config.headers.{name}: control or non-ASCII "
                           "characters in the value")
        if value:  # blank: unset, as the toolkit does
            out[name] = value
    return out


def _check_users(users: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for user, hashed in users.items():
        m = BCRYPT_HASH.fullmatch(hashed)
        if not m or not 4 <= int(m[1]) <= 31:
            raise _Refused(f"basic_auth_users.{user}: not a bcrypt hash ($2y$10$... from "
                           "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")
        if ":" in user:
            raise _Refused(f"basic_auth_users: user name {user!r} contains ':', which basic "
                           "auth cannot carry")
        out[user] = hashed.encode()
    return out


def _resolve(base: Path, value: str, key: str) -> Path:
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise _Refused(f"tls_server_config.{key}: {p}: not found")
    return p


def _check_tls(t: TLSServerConfig, base: Path) -> TLSSettings:
    k = "tls_server_config"
    if t.cert is not None or t.key is not None:
        raise _Refused(f"{k}.cert/key: inline certificates and keys are not supported (Python's "
                       "ssl loads a key pair only from files); use cert_file and key_file")
    if t.curve_preferences:
        raise _Refused(f"{k}.curve_preferences: not supported: Python's ssl cannot set a list "
                       "of key-exchange groups; leave it out (OpenSSL's defaults are X25519, "
                       "P-256, P-384, P-521)")
    if t.client_auth_type in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        raise _Refused(f"{k}.client_auth_type: {t.client_auth_type} is not supported: Python's "
                       "ssl cannot accept a client certificate without verifying it; use "
                       "RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with "
                       "client_ca_file")
    if not t.cert_file or not t.key_file:
        raise _Refused(f"{k}: cert_file and key_file are both required (a "
                       "tls_server_config without them would serve plain HTTP)")
    for name in ("min_version", "max_version"):
        if getattr(t, name) in ("TLS10", "TLS11"):
            raise _Refused(f"{k}.{name}: TLS 1.0 and 1.1 are deprecated (RFC 8996) and "
                           "refused; use TLS12 or TLS13")
    lo, hi = VERSIONS[t.min_version], VERSIONS[t.max_version]
    if hi < lo:
        raise _Refused(f"{k}: max_version {t.max_version} is below min_version {t.min_version}")
    ciphers = None
    if t.cipher_suites:
        names = []
        for c in t.cipher_suites:
            if c in TLS13_CIPHERS:
                raise _Refused(f"{k}.cipher_suites: {c} is a TLS 1.3 suite, which cannot be "
                               "chosen (Go ignores it, Python's ssl cannot set it); list only "
                               "TLS 1.2 suites")
            if c not in CIPHERS:
                raise _Refused(f"{k}.cipher_suites: unknown or insecure cipher {c!r}; known: "
                               f"{', '.join(CIPHERS)}")
            names.append(CIPHERS[c])
        ciphers = ":".join(names)
    mode = VERIFY_MODES[t.client_auth_type]
    has_ca = bool(t.client_ca_file or t.client_ca)
    if t.client_ca_file and t.client_ca:
        raise _Refused(f"{k}: set one of client_ca_file and client_ca, not both")
    if has_ca and mode == ssl.CERT_NONE:
        raise _Refused(f"{k}: client CAs are configured but client_auth_type is NoClientCert")
    if mode != ssl.CERT_NONE and not has_ca:
        raise _Refused(f"{k}.client_auth_type: {t.client_auth_type} needs client_ca_file "
                       "(verifying against the system's public roots would admit any "
                       "certificate a public CA issued)")
    if t.client_allowed_sans is not None and mode != ssl.CERT_REQUIRED:
        raise _Refused(f"{k}.client_allowed_sans: requires client_auth_type "
                       "RequireAndVerifyClientCert")
    return TLSSettings(
        cert_file=_resolve(base, t.cert_file, "cert_file"),
        key_file=_resolve(base, t.key_file, "key_file"),
        verify_mode=mode,
        client_ca_file=_resolve(base, t.client_ca_file, "client_ca_file")
        if t.client_ca_file else None,
        client_ca=t.client_ca,
        min_version=lo, max_version=hi, ciphers=ciphers,
        prefer_server_ciphers=t.prefer_server_cipher_suites,
        allowed_sans=tuple(t.client_allowed_sans) if t.client_allowed_sans is not None else None,
    )


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal


def _load_pair(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    except (ssl.SSLError, OSError) as e:
        raise _Refused(f"tls_server_config: cannot load cert_file {tls.cert_file} with key_file "
                       f"{tls.key_file} (not PEM, encrypted, or not a pair): {e}") from None


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """The server context; `_Refused` (inside load_web_config) on any unusable file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = tls.min_version, tls.max_version
    if tls.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.ciphers:
        try:
            ctx.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise _Refused("tls_server_config.cipher_suites: this OpenSSL supports none of "
                           "them") from None
        have = {c["name"] for c in ctx.get_ciphers()}
        missing = [c for c in tls.ciphers.split(":") if c not in have]
        if missing:
            raise _Refused(f"tls_server_config.cipher_suites: this OpenSSL lacks "
                           f"{', '.join(missing)}")
    ctx.set_alpn_protocols(["http/1.1"])  # uvicorn speaks HTTP/1.1 only
    _load_pair(ctx, tls)
    ctx.verify_mode = tls.verify_mode
    if tls.verify_mode != ssl.CERT_NONE:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise _Refused(f"tls_server_config: client CA has no usable certificate: {e}") \
                from None
    return ctx


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows links: a Kubernetes secret swaps its ..data link
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class CertReloader:
    """Reloads the server's certificate and key into the live context when either file changes.

    `tick()` runs on the event loop (QuietServer's tick), the thread that starts handshakes: the
    context never changes under a handshake being set up. The pair is first loaded into a
    scratch context, so a half-replaced pair (new certificate, old key) never reaches the live
    one; the next look tries again.
    """

    def __init__(self, ctx: ssl.SSLContext, tls: TLSSettings, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx, self.tls, self.interval, self.clock = ctx, tls, interval, clock
        self._stamps = self._current()
        self._next = clock() + interval
        self.reloads = 0

    def _current(self) -> tuple[Any, Any]:
        return _stamp(self.tls.cert_file), _stamp(self.tls.key_file)

    def tick(self) -> None:
        if self.clock() < self._next:
            return
        self._next = self.clock() + self.interval
        stamps = self._current()
        if stamps == self._stamps or None in stamps:
            return
        try:
            _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.tls)
            _load_pair(self.ctx, self.tls)
        except _Refused as e:
            log.warning("certificate reload failed; serving the previous one", extra={
                "error": str(e)})
            return
        self._stamps = stamps
        self.reloads += 1
        log.info("certificate reloaded", extra={"cert_file": str(self.tls.cert_file)})


class BasicAuth:
    """bcrypt basic auth with a bounded cache, so a scrape does not pay bcrypt every time.

    The cache key is (user, HMAC-SHA256 of the password under a per-process random key): the
    cache never holds a password, nor an unsalted hash of one. Successes stay until evicted;
    failures expire after `failure_ttl` and live in their own LRU, so a flood of wrong
    passwords cannot evict the scraper's entry. bcrypt runs off the event loop, one at a time.
    """

    # bcrypt of a random password: unknown users cost as much as known ones.
    _DUMMY = b"$2b$10$GgqARX739qBaiLwopKQSP.1ADN47BDvs6PBvJizLIPagpK9eoXP/G"

    def __init__(self, users: dict[str, bytes], size: int = 256, failure_ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self.size, self.failure_ttl, self.clock = size, failure_ttl, clock
        self._key = secrets.token_bytes(32)
        self._ok: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._failed: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        self._limiter: Any = None

    def _lookup(self, user: bytes) -> bytes | None:
        found = None
        for name, hashed in self.users.items():  # no early exit: the time does not tell
            if hmac.compare_digest(name.encode(), user):
                found = hashed
        return found

    async def check(self, user: bytes, password: bytes) -> bool:
        key = (user, hmac.new(self._key, password, hashlib.sha256).digest())
        if key in self._ok:
            self._ok.move_to_end(key)
            return True
        until = self._failed.get(key)
        if until is not None:
            if self.clock() < until:
                return False
            del self._failed[key]
        hashed = self._lookup(user)
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        ok = await anyio.to_thread.run_sync(
            _verify_bcrypt, password, hashed or self._DUMMY, limiter=self._limiter)
        ok = ok and hashed is not None
        if ok:
            self._ok[key] = None
            if len(self._ok) > self.size:
                self._ok.popitem(last=False)
        else:
            self._failed[key] = self.clock() + self.failure_ttl
            if len(self._failed) > self.size:
                self._failed.popitem(last=False)
        return ok


def _verify_bcrypt(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # only where basic auth is configured: a daemon without it needs no bcrypt

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # over 72 bytes, or a hash bcrypt refuses
        return False


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _credentials(scope: Scope) -> tuple[bytes, bytes] | None:
    values = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, encoded = values[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class WebMiddleware:
    """ASGI: the configured headers on every response; basic auth on all but OPEN_PATHS and
    BEARER_PATHS."""

    def __init__(self, app: Any, headers: dict[str, str], auth: BasicAuth | None) -> None:
        self.app, self.auth = app, auth
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.headers:
            send = self._adding_headers(send)
        path = scope["path"]
        if self.auth is not None and path not in OPEN_PATHS and path not in BEARER_PATHS:
            creds = _credentials(scope)
            if creds is None or not await self.auth.check(*creds):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
                    (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body", "body": b"Unauthorized\n"})
                return
        await self.app(scope, receive, send)

    def _adding_headers(self, send: Send) -> Send:
        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", ())}
                # The handler's own value wins, as with the toolkit (the status page keeps
                # its stricter Content-Security-Policy).
                message["headers"] = [*message.get("headers", ()),
                                      *((k, v) for k, v in self.headers if k not in have)]
            await send(message)
        return wrapped


def _san_protocol(allowed: tuple[str, ...]) -> type[asyncio.Protocol]:
    """The HTTP protocol class, closing a connection whose verified client certificate has no
    Subject Alternative Name in `allowed` (exact match: DNS, IP, e-mail or URI)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    ips = set()
    for a in allowed:
        with contextlib.suppress(ValueError):
            ips.add(ipaddress.ip_address(a))
    names = set(allowed)

    def permitted(cert: dict[str, Any] | None) -> bool:
        for kind, value in (cert or {}).get("subjectAltName", ()):
            if kind == "IP Address":
                try:
                    if ipaddress.ip_address(value.strip()) in ips:
                        return True
                except ValueError:
                    continue
            elif kind in ("DNS", "email", "URI") and value in names:
                return True
        return False

    class SANCheckingProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not permitted(transport.get_extra_info("peercert")):
                log.info("client certificate refused: no allowed SAN",
                         extra={"client": str(transport.get_extra_info("peername"))})
                transport.abort()

    return SANCheckingProtocol


@dataclass
class Serving:
    """What the HTTP server needs from the web config: the app to serve, extra uvicorn.Config
    arguments and a housekeeping tick."""

    app: Any
    config_kwargs: dict[str, Any]
    tick: Callable[[], None]
    reloader: CertReloader | None = None


def apply_web_config(web: WebConfig | None, app: Any,
                     reload_interval: float | None = None) -> Serving:
    if web is None:
        return Serving(app, {}, lambda: None)
    auth = BasicAuth(web.users) if web.users else None
    if auth is not None or web.headers:
        app = WebMiddleware(app, web.headers, auth)
    if web.tls is None:
        log.info("TLS is disabled", extra={"basic_auth_users": len(web.users)})
        return Serving(app, {}, lambda: None)
    try:
        ctx = build_ssl_context(web.tls)
    except _Refused as e:
        raise ConfigError(f"web config file {web.path}: {e}") from None
    reloader = CertReloader(ctx, web.tls, RELOAD_INTERVAL if reload_interval is None
                            else reload_interval)
    kwargs: dict[str, Any] = {"ssl_context_factory": lambda config, default: ctx}
    if web.tls.allowed_sans is not None:
        kwargs["http"] = _san_protocol(web.tls.allowed_sans)
    log.info("TLS is enabled", extra={
        "client_auth": web.tls.verify_mode.name, "basic_auth_users": len(web.users)})
    return Serving(app, kwargs, reloader.tick, reloader)
