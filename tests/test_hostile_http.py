"""Hostile HTTP against the real server: the token limiter, then nasty requests over raw
sockets to the daemon's own uvicorn (Daemon.server) on the simulated node.

DESIGN.md: a bad HTTP request gets a 4xx; a probe trigger without the token gets 401;
nothing crashes the daemon. Order of events, not durations: the slow client is still
dribbling when the concurrent scrape completes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import wait_for
from e2e_stack import sim_node
from fastapi.testclient import TestClient

from exporter.auth import FailureLimiter
from exporter.daemon import Daemon, ReleaseResult
from exporter.publisher import Publisher
from exporter.server import MAX_BODY, Readiness, ServerContext, create_app

TOKEN = "probe-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the limiter, driven directly ------------------------------------------------------------

def test_limiter_locks_out_after_burst_and_lets_in_after_lockout() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=10, window=60, lockout=30, clock=clock)
    for _ in range(9):
        limiter.failed("10.0.0.1")
        assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")  # the tenth within the window
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30)
    assert limiter.retry_after("10.0.0.2") is None  # per address
    clock.now += 29.5
    assert limiter.retry_after("10.0.0.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.retry_after("10.0.0.1") is None


def test_limiter_refills_slow_failures_never_lock_out() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=10, window=60, lockout=30, clock=clock)
    for _ in range(100):  # one typo every 6 s is the refill rate: never locked out
        limiter.failed("10.0.0.1")
        assert limiter.retry_after("10.0.0.1") is None
        clock.now += 6.0


def test_limiter_memory_is_bounded_lru() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=2, window=60, lockout=60, max_clients=3, clock=clock)
    limiter.failed("a")
    for client in ("b", "c", "d"):
        limiter.failed(client)
    assert len(limiter) == 3
    limiter.failed("a")  # "a" was forgotten: a full bucket again, not locked out
    assert limiter.retry_after("a") is None
    for n in range(10_000):
        limiter.failed(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
    assert len(limiter) == 3


# --- the limiter and the audit line, over HTTP ---------------------------------------------

_RESULT = ReleaseResult(released=True, detail="test")


def _app(limiter: FailureLimiter) -> TestClient:
    ctx = ServerContext(publisher=Publisher(), readiness=lambda: Readiness(True, ""),
                        admin_token=ADMIN, release=lambda who: _RESULT, resume=lambda who: _RESULT,
                        token_limiter=limiter)
    return TestClient(create_app(ctx))


def test_failed_tokens_get_429_with_retry_after_and_an_audit_line(caplog) -> None:
    clock = Clock()
    client = _app(FailureLimiter(burst=10, window=60, lockout=45, clock=clock))
    caplog.set_level(logging.INFO, logger="exporter.audit")
    for n in range(10):
        r = client.post("/admin/resume", headers={"authorization": f"Bearer wrong-{n}"})
        assert r.status_code == 401
    # Locked out: even the right token is not looked at.
    r = client.post("/admin/release", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "45"
    assert "detail" in r.json()
    outcomes = [(rec.path, rec.outcome, rec.client) for rec in caplog.records
                if rec.name == "exporter.audit"]
    assert outcomes[:10] == [("/admin/resume", "bad token", "testclient")] * 10
    assert outcomes[10] == ("/admin/release", "rate-limited", "testclient")
    clock.now += 45
    caplog.clear()
    r = client.post("/admin/resume", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code != 401 and r.status_code != 429
    assert [rec.outcome for rec in caplog.records if rec.name == "exporter.audit"] == ["ok"]
    # No token, right or wrong, in any log record.
    for rec in caplog.records:
        text = rec.getMessage() + repr(vars(rec))
        assert ADMIN not in text and "wrong-" not in text


# --- the real server ------------------------------------------------------------------------

class Node:
    def __init__(self, port: int, daemon: Daemon) -> None:
        self.port, self.daemon = port, daemon
        self.url = f"http://127.0.0.1:{port}"

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send `data` on a fresh connection; everything the server answers before it closes
        (or b"" when it closes at once). A reset while sending counts as a close."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
            return _read_all(s)

    def status(self, data: bytes) -> int | None:
        return _status(self.raw(data))

    def metrics_ok(self) -> bool:
        return httpx.get(self.url + "/metrics", timeout=5).status_code == 200


def _read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def _status(response: bytes) -> int | None:
    if not response:
        return None  # closed without an answer
    return int(response.split(b" ", 2)[1])


def _body(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak, KiB on Linux


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "probe-token").write_text(TOKEN)
    (tmp / "admin-token").write_text(ADMIN)
    with sim_node(tmp, None, {  # the daemon's own server: QuietServer, web config, limits
        "collection": {"fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 0.3},
        "probes": {"runtime": "sim", "token_file": str(tmp / "probe-token"),
                   "quiet_period": 0.0, "max_utilization": 1.0, "max_memory_used_bytes": 1e15},
        "admin": {"token_file": str(tmp / "admin-token")},
        "events": {"kmsg": False, "state_dir": str(tmp / "events")},
    }, gpus=2, seed=7) as (url, daemon):
        n = Node(int(url.rsplit(":", 1)[1]), daemon)
        # Warm every thread pool the tests below use, then take the baselines.
        for _ in range(3):
            assert n.metrics_ok()
        httpx.get(n.url + "/")
        n.threads, n.rss = threading.active_count(), _rss_kib()
        yield n


def _post(path: str, body: bytes, token: str | None = TOKEN, extra: bytes = b"") -> bytes:
    auth = b"" if token is None else f"Authorization: Bearer {token}\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode() \
        + auth + extra + b"\r\n" + body


def test_probe_trigger_without_token_is_401(node: Node) -> None:
    assert node.status(_post("/probes/run", b'{"probe": "gemm"}', token=None)) == 401


def test_oversized_header_is_refused_and_the_daemon_serves_on(node: Node) -> None:
    big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    status = node.status(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert status is None or 400 <= status < 500
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    status = node.status(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status is None or 400 <= status < 500
    assert node.metrics_ok()


@pytest.mark.parametrize("token", [TOKEN, None])
def test_oversized_body_is_refused_without_reading_it(node: Node, token: str | None) -> None:
    head = (b"POST /probes/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n")
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(head + b"\r\n" + b"{" * 65536)  # 64 KiB of the 10 MB, then wait
        response = _read_all(s)
    assert _status(response) == (413 if token else 401)
    assert b"Traceback" not in response


def test_oversized_chunked_body_is_refused(node: Node) -> None:
    chunk = b"%x\r\n%s\r\n" % (32768, b" " * 32768)
    head = (b"POST /probes/run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode() + b"\r\n")
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(head + chunk * (MAX_BODY // 32768 + 2))
        response = _read_all(s)
    assert _status(response) == 413


def test_slow_client_does_not_block_scrapes(node: Node) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 40 + b"\r\n"
    sent = threading.Event()
    done = threading.Event()
    stop = threading.Event()

    def dribble() -> None:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
            for i, byte in enumerate(request):
                if stop.wait(0.1):
                    break
                s.sendall(bytes([byte]))
                if i == 3:
                    sent.set()
        done.set()

    slow = threading.Thread(target=dribble, daemon=True)
    slow.start()
    assert sent.wait(5)
    for _ in range(3):  # while it dribbles, scrapes answer
        assert node.metrics_ok()
    assert not done.is_set(), "the slow client finished before the scrapes: no overlap shown"
    stop.set()
    slow.join(5)


def test_unknown_methods(node: Node) -> None:
    for method in (b"PROPFIND", b"TRACE", b"BREW", b"DELETE"):
        status = node.status(method + b" / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status in (404, 405), method
        status = node.status(method + b" /metrics HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
        assert status in (404, 405), method


@pytest.mark.parametrize("target", [
    b"/metrics/../admin/release", b"//metrics", b"/%2e%2e/", b"/%2e%2e/admin/release",
    b"/..%2fadmin%2frelease", b"/admin/release/..", b"/./metrics", b"/metrics%00",
    b"/" + b"a" * 8000, b"/" + b"a" * 200_000, b"http://evil.example/metrics", b"*",
    b"/probes?" + b"a=1&" * 2000, b"/%ff%fe", b"/\xff",
])
def test_path_tricks_are_never_a_server_error(node: Node, target: bytes) -> None:
    for method in (b"GET", b"POST"):
        response = node.raw(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        status = _status(response)
        assert status is None or status < 500, (method, target[:60], response[:200])
        if method == b"POST" and b"admin" in target:
            assert status != 200, "a path trick reached the admin API without a token"
        assert b"Traceback" not in response


@pytest.mark.parametrize("query", [
    b"%", b"%%%", b"a=%zz", b"&&&==&", b"a=" + b"%00" * 100, b"gpu=-1&gpu=x", b"a[]=1&a[b]=2",
    b"%ff%fe=%c3%28",
])
@pytest.mark.parametrize("path", [b"/health", b"/probes", b"/readyz", b"/healthz", b"/metrics"])
def test_malformed_query_strings(node: Node, path: bytes, query: bytes) -> None:
    response = node.raw(b"GET " + path + b"?" + query + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")
    status = _status(response)
    assert status is not None and status < 500, response[:200]
    assert b"Traceback" not in response


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b"42", b'"gemm"', b'{"probe": 1}', b'{"probe": null}',
    b'{"probe": "gemm", "gpu": -1}', b'{"probe": "gemm", "gpu": 1e400}',
    b'{"probe": "gemm", "gpu": 99999999999999999999999999}', b'{"probe": "gemm", "x": 1}',
    b'{"probe": "nope"}', b'{"probe": "gemm", "gpu": 7}', b"\xff\xfe\x00{",
    b'{"probe": "\xff"}',
    b"[" * 50_000 + b"]" * 50_000, b'{"probe": "' + b"\\u0000" * 1000 + b'"}',
    b'{"probe": "gemm", "probe": "gemm", "force": "yes please"}',
])
def test_malformed_json_bodies_get_4xx_json(node: Node, body: bytes) -> None:
    response = node.raw(_post("/probes/run", body))
    status = _status(response)
    assert status is not None and 400 <= status < 500, response[:300]
    payload = json.loads(_body(response))
    assert "detail" in payload
    assert b"Traceback" not in response and b'File "' not in response


def test_admin_json_endpoints_ignore_junk_bodies(node: Node) -> None:
    response = node.raw(_post("/admin/resume", b"\xff{{{", token=ADMIN))
    status = _status(response)
    assert status is not None and status < 500
    json.loads(_body(response))


def test_probe_run_with_token_works(node: Node) -> None:
    r = httpx.post(node.url + "/probes/run", json={"probe": "gemm", "gpu": 0},
                   headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code in (200, 409), r.text


def test_after_all_of_it_the_daemon_is_whole(node: Node) -> None:
    """Last in the module: the scrape answers, memory and threads are back within bounds."""
    for _ in range(20):  # a burst of connections each closed at once
        with socket.create_connection(("127.0.0.1", node.port), timeout=5):
            pass
    assert node.metrics_ok()
    assert node.daemon.sampler.view is not None
    wait_for(lambda: httpx.get(node.url + "/readyz", timeout=5).status_code == 200,
             what="/readyz 200 again")
    grown = _rss_kib() - node.rss
    assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"
    # Worker threads of the pool may have been added by concurrent requests; no thread per
    # connection is left behind.
    wait_for(lambda: threading.active_count() <= node.threads + 4, timeout=15,
             what=f"threads back near {node.threads} (now {threading.active_count()})")
