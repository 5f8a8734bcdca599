"""The end-to-end stack for alert and dashboard tests: the daemon on the simulated node, real
Prometheus and Alertmanager, a webhook receiver and a vLLM-format metrics stub.

Everything listens on 127.0.0.1 with free ports and is waited for with deadlines (no sleeps as
synchronisation). Rules run in a documented time-scaled copy (`scale_rules`): minutes of the
production rules become seconds, so a `for: 10m` alert fires in 10 s of test time.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import wait_for

# --- time scaling of rules --------------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:ms|s|m|h|d|w))+")
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def seconds(text: str) -> float:
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))


def _scaled(text: str, factor: float, minimum: float) -> str:
    return f"{max(minimum, round(seconds(text) * factor))}s"


def scale_rules(document: str, factor: float = 1 / 60, min_range: float = 6,
                min_for: float = 1) -> str:
    """A copy of a rules file with every duration multiplied by `factor`: `for:`, range
    selectors `[5m]` and subqueries `[1h:5m]`, `offset`. Ranges keep at least `min_range`
    seconds, so a rate over 1 s scrapes still has several samples."""
    data = yaml.safe_load(document)
    for group in data.get("groups", []):
        if "interval" in group:
            group["interval"] = "1s"
        for rule in group.get("rules", []):
            if "for" in rule:
                rule["for"] = _scaled(str(rule["for"]), factor, min_for)
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = _scaled(str(rule["keep_firing_for"]), factor, min_for)
            rule["expr"] = _scale_expr(str(rule["expr"]), factor, min_range)
    return yaml.safe_dump(data, sort_keys=False)


def _scale_expr(expr: str, factor: float, min_range: float) -> str:
    def ranges(m: re.Match[str]) -> str:
        inner = m.group(1)
        parts = inner.split(":")
        out = [_scaled(p, factor, min_range) if p else "" for p in parts]
        return "[" + ":".join(out) + "]"

    expr = re.sub(r"\[((?:\d+(?:ms|s|m|h|d|w))+(?::(?:\d+(?:ms|s|m|h|d|w))*)?)\]", ranges, expr)
    return re.sub(r"\boffset\s+((?:\d+(?:ms|s|m|h|d|w))+)",
                  lambda m: f"offset {_scaled(m.group(1), factor, 1)}", expr)


# --- small servers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # the test output is not a web server log
        pass


class WebhookReceiver(_Server):
    """Alertmanager's webhook target: each receiver posts to /<receiver name>."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict[str, Any]]] = []  # (receiver path, alert)

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                owner = self.server.owner  # type: ignore[attr-defined]
                with owner.lock:
                    for alert in body.get("alerts", []):
                        owner.received.append((self.path.strip("/"), alert))
                self.send_response(200)
                self.end_headers()

        super().__init__(Handler)

    def alerts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(receiver, alertname, labels) of firing alerts received so far."""
        with self.lock:
            return [(r, a["labels"].get("alertname", ""), a["labels"]) for r, a in self.received
                    if a.get("status") == "firing"]


class VllmStub(_Server):
    """vLLM's metrics as a serving pod exports them, moving with time: tokens, requests, TTFT
    and TPOT histograms, KV cache use, preemptions."""

    def __init__(self, model: str = "llama-3-70b", kv_cache: float = 0.42,
                 preemptions_per_second: float = 0.0, ttft_seconds: float = 0.25) -> None:
        self.start, self.model, self.kv_cache = time.monotonic(), model, kv_cache
        self.preemptions_per_second, self.ttft_seconds = preemptions_per_second, ttft_seconds

        class Handler(_Quiet):
            def do_GET(self) -> None:
                owner = self.server.owner  # type: ignore[attr-defined]
                body = owner.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    def exposition(self) -> str:
        t = time.monotonic() - self.start
        m = f'model_name="{self.model}"'
        lines = [
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{m}}} {2500 * t:.0f}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{m}}} {6000 * t:.0f}",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{{{m}}} {int(t * self.preemptions_per_second)}",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{m}}} 24",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{m}}} 3",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{m}}} {self.kv_cache}",
        ]
        n = max(1.0, 10 * t)  # requests so far
        for name, typical in (("time_to_first_token_seconds", self.ttft_seconds),
                              ("inter_token_latency_seconds", 0.03),
                              ("request_time_per_output_token_seconds", 0.03),
                              ("e2e_request_latency_seconds", 8.0)):
            lines.append(f"# TYPE vllm:{name} histogram")
            for le in (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0):
                share = min(1.0, le / (typical * 2))
                lines.append(f'vllm:{name}_bucket{{{m},le="{le:g}"}} {n * share:.0f}')
            lines.append(f'vllm:{name}_bucket{{{m},le="+Inf"}} {n:.0f}')
            lines.append(f"vllm:{name}_sum{{{m}}} {n * typical:.3f}")
            lines.append(f"vllm:{name}_count{{{m}}} {n:.0f}")
        return "\n".join(lines) + "\n"


# --- the daemon on the simulated node ---------------------------------------------------------
@contextlib.contextmanager
def sim_node(tmp: Path, scenario: str | None, overrides: dict[str, Any] | None = None,
             gpus: int = 4, model: str = "h100-sxm", seed: int = 3) -> Iterator[tuple[str, Any]]:
    """The exporter on the simulated node, in-process under the daemon's own server (web config,
    QuietServer); yields (URL, Daemon) once /readyz answers 200."""
    from exporter.backends import OpenedBackends
    from exporter.backends.sim import SimBackend, load_scenario
    from exporter.config import load_settings
    from exporter.daemon import Daemon

    loaded = None
    if scenario is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "scenario.yaml").write_text(scenario)
        loaded = load_scenario(tmp / "scenario.yaml")
    backend = SimBackend(gpus=gpus, model=model, seed=seed, scenario=loaded)
    backend.start()
    settings = load_settings(overrides={
        "collection": {"fast_interval": 0.5, "slow_interval": 1.0},
        **(overrides or {})})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, list(backend.devices()))]))
    with serving(daemon) as url:
        yield url, daemon


@contextlib.contextmanager
def serving(daemon: Any) -> Iterator[str]:
    """Any Daemon under its own server (web config, QuietServer) on a free loopback port, in a
    thread; yields the URL once /readyz answers 200, and stops the server (so the daemon) after."""
    server = daemon.server(host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the exporter to start")
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, what="exporter ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def sim_daemon(tmp: Path, scenario: str | None, overrides: dict[str, Any] | None = None,
               gpus: int = 4, model: str = "h100-sxm", seed: int = 3) -> Iterator[str]:
    """`sim_node`, yielding only the URL."""
    with sim_node(tmp, scenario, overrides, gpus, model, seed) as (url, _):
        yield url


# --- Prometheus and Alertmanager ------------------------------------------------------------
class Tool:
    def __init__(self, cmd: list[str], ready_url: str, log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or _ok(ready_url), timeout=30,
                 what=f"{Path(cmd[0]).name} to be ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def alertmanager_config(example: Path, receiver_url: str) -> str:
    """The example configuration with every receiver pointed at the test's webhook, and
    grouping timers in seconds."""
    cfg = yaml.safe_load(example.read_text())
    for r in cfg.get("receivers", []):
        for key in [k for k in r if k.endswith("_configs")]:
            del r[key]
        r["webhook_configs"] = [{"url": f"{receiver_url}/{r['name']}", "send_resolved": False}]
    route = cfg["route"]
    for node in _routes(route):
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"),
                           ("repeat_interval", "1h")):
            if key in node or node is route:
                node[key] = value
    return yaml.safe_dump(cfg, sort_keys=False)


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from _routes(child)


class Prometheus(Tool):
    def __init__(self, binary: str, tmp: Path, targets: dict[str, tuple[str, dict[str, str]]],
                 rule_files: list[Path], alertmanager: str | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "metrics_path": "/metrics", "honor_labels": True,
                 "static_configs": [{"targets": [address.removeprefix("http://")],
                                     "labels": labels}]}
                for job, (address, labels) in targets.items()],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager.removeprefix("http://")]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__([binary, f"--config.file={tmp / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         self.url + "/-/ready", tmp / "prometheus.log")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        if r.get("status") != "success":
            raise AssertionError(f"{expr}: {r.get('error')}")
        return r["data"]["result"]


class Alertmanager(Tool):
    def __init__(self, binary: str, tmp: Path, config: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        (tmp / "alertmanager.yml").write_text(config)
        super().__init__([binary, f"--config.file={tmp / 'alertmanager.yml'}",
                          f"--storage.path={tmp / 'am'}",
                          f"--web.listen-address=127.0.0.1:{port}",
                          "--cluster.listen-address="],
                         self.url + "/-/ready", tmp / "alertmanager.log")
