"""What our Prometheus rules cost to evaluate as the number of GPU nodes grows, measured.

    .venv/bin/python bench/recording_rule_cost.py [--nodes 10,50,100,200] [--interval 15]
        [--history 300] [--evaluations 6] [--pool-size 100] [--gpus 8]

One simulated node's exposition is built as bench/fleet_scale.py builds it (8 H100, every
collector on, probes run once), as Prometheus asks for it (OpenMetrics + gzip). A local HTTP
server serves N copies of it at /node/<i>/metrics, each with its GPUs' UUIDs made unique so
joins on `uuid` see N distinct nodes, pre-rendered and pre-compressed so the server is not what
is measured. For each N a fresh Prometheus scrapes them as N targets of the job
`gpu-fleet-exporter` (target labels cluster, pool, node, instance: what the rules group by) and
evaluates alerts/recording.rules.yml and alerts/gpu.rules.yml; scrape and evaluation interval
are both --interval.

Once every target is up and --history seconds of samples are in the head (so 5m windows are
full), Prometheus' own /metrics is polled: each new
`prometheus_rule_group_last_evaluation_timestamp_seconds` of a group is one evaluation, and
`prometheus_rule_group_last_duration_seconds` beside it its duration (the rules API gives each
rule's). After --evaluations new evaluations of every group the medians are taken. Prints
markdown tables: per N, the series scraped, the series the recording rules output, the rule
time per interval, Prometheus' RSS; per group, the median evaluation; the output series by
level; the costliest rules; then a linear extrapolation to 10,000 nodes.
Exits 2 when prometheus is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, free_port, machine, table
from fleet_scale import node_exposition

# gpu.rules.yml's exporter alerts select up{job=~".*gpu-fleet-exporter.*"}.
JOB = "gpu-fleet-exporter"
RULE_FILES = (REPO / "alerts/recording.rules.yml", REPO / "alerts/gpu.rules.yml")
CLUSTER = "bench"
FLEET = 10_000
# Prometheus 2.42 held about 4.6 KiB of RSS per head series at 400 nodes here; twice that,
# and refuse a run that would not fit in half of the memory available, rather than let the
# kernel pick something to kill.
BYTES_PER_SERIES_GUESS = 8192
UUID = re.compile(rb"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# --- the fleet: N node bodies behind one HTTP server --------------------------------------------
def node_bodies(gpus: int, nodes: int) -> tuple[list[bytes], int]:
    """N gzip'd OpenMetrics bodies of the simulated node, and the series in one. Each node's GPU
    UUIDs are its own: identical UUIDs would make the `on (uuid)` joins of the rules match
    across nodes, which no real fleet does."""
    text, om = node_exposition(gpus)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    uuids = sorted(set(UUID.findall(om)))
    bodies = []
    for i in range(nodes):
        body = om
        for uuid in uuids:
            # Same length and shape, node index in the first group: unique per node and GPU.
            body = body.replace(uuid, b"GPU-%08x" % i + uuid[12:])
        bodies.append(gzip.compress(body, compresslevel=6))
    return bodies, series


class FleetServer:
    """Serves /node/<i>/metrics from prepared gzip'd bytes, one thread per connection."""

    PATH = re.compile(r"^/node/(\d+)/metrics$")

    def __init__(self, bodies: list[bytes]) -> None:
        path, payloads = self.PATH, bodies

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes

            def do_GET(self) -> None:
                m = path.match(self.path)
                if m is None or int(m.group(1)) >= len(payloads):
                    self.send_error(404)
                    return
                body = payloads[int(m.group(1))]
                gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
                if not gzipped:  # a person with curl; Prometheus always asks for gzip
                    body = gzip.decompress(body)
                self.send_response(200)
                self.send_header("Content-Type",
                                 "application/openmetrics-text; version=1.0.0; charset=utf-8")
                if gzipped:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # not a web server log
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- Prometheus ---------------------------------------------------------------------------------
def find_prometheus() -> str | None:
    local = REPO / ".tools/bin/prometheus"
    return shutil.which("prometheus") or (str(local) if local.exists() else None)


def prometheus_config(address: str, nodes: int, pool_size: int, interval: float) -> dict[str, Any]:
    """One job, one static target per node. All targets share the server's address, so each
    gets its own path (`__metrics_path__`) and `instance`, and the labels the rules group by."""
    targets = [{"targets": [address],
                "labels": {"__metrics_path__": f"/node/{i}/metrics",
                           "instance": f"node-{i:05d}:9835", "cluster": CLUSTER,
                           "pool": f"pool-{i // pool_size}", "node": f"node-{i:05d}"}}
               for i in range(nodes)]
    every = f"{interval:g}s"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every,
                   "scrape_timeout": f"{min(interval, 10):g}s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": JOB, "honor_labels": True, "static_configs": targets}],
    }


class Prometheus:
    def __init__(self, binary: str, tmp: Path, config: dict[str, Any]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = tmp / "prometheus.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, params: dict[str, str] | None = None) -> bytes:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"prometheus exited with {self.proc.returncode}: {tail}")
        try:
            return self.get("/-/ready") is not None
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = json.loads(self.get("/api/v1/query", {"query": expr}))
        if answer.get("status") != "success":
            raise SystemExit(f"query {expr!r} failed: {answer.get('error')}")
        return answer["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def own_metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_exposition(self.get("/metrics").decode())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus' own text exposition: family name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def by_group(metrics: dict[str, list[tuple[dict[str, str], float]]],
             name: str) -> dict[str, float]:
    return {labels["rule_group"]: value for labels, value in metrics.get(name, [])}


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               poll: float = 1.0) -> None:
    """Poll with a deadline: synchronisation on Prometheus' state, not a guess of how long."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# --- one measurement ----------------------------------------------------------------------------
@dataclass
class Result:
    nodes: int
    scraped: float
    head: float
    recorded: float
    empty_records: list[str]
    durations: dict[str, list[float]]  # rule group -> seconds per evaluation
    rules: dict[tuple[str, int, str], dict[str, float]]  # see Evaluations
    recorded_by_level: dict[str, float]  # recording-rule output series by level (name prefix)
    intervals: dict[str, float]
    rule_quantiles: dict[str, float]  # quantile -> seconds, over every rule's evaluation
    rss: float
    missed: float
    failures: dict[str, float]
    errors: list[str] = field(default_factory=list)

    def median_ms(self, group: str) -> float:
        return statistics.median(self.durations[group]) * 1000

    def share_of_interval(self) -> float:
        """Rule time per evaluation interval, % of it (summed over groups: each group runs on
        its own, so this is the CPU time the rules need, not a wall-clock deadline)."""
        return sum(statistics.median(d) / self.intervals[g]
                   for g, d in self.durations.items()) * 100

    def total_ms(self, rules_file: str = "") -> float:
        """Sum of the group medians, of one rules file's groups when it is named."""
        return sum(self.median_ms(g) for g in self.durations
                   if g.split(";", 1)[0].endswith(rules_file))


def settle(prom: Prometheus, nodes: int, history: float, interval: float) -> None:
    """Every target up, and `history` seconds of samples in the head, so range windows up to
    that long are as full as in a Prometheus that has been running for a while."""
    wait_until(prom.ready, 60, "prometheus to be ready", poll=0.2)
    wait_until(lambda: prom.scalar(f'count(up{{job="{JOB}"}} == 1)') >= nodes,
               max(60, 4 * interval), f"all {nodes} targets up")
    # count_over_time of `up` over the history window counts scrapes; a full window holds
    # history / interval of them (one less at the window's edge).
    need = history / interval - 1
    window = f"{history:g}s"
    wait_until(lambda: prom.scalar(f'min(count_over_time(up{{job="{JOB}"}}[{window}]))') >= need,
               history + 10 * interval, f"{window} of samples from every target", poll=2.0)


@dataclass
class Evaluations:
    groups: dict[str, list[float]] = field(default_factory=dict)  # group -> seconds each
    # (group name, rule index, rule name) -> {evaluation timestamp: seconds}
    rules: dict[tuple[str, int, str], dict[str, float]] = field(default_factory=dict)


def record_evaluations(prom: Prometheus, evaluations: int, interval: float) -> Evaluations:
    """`evaluations` new evaluations of every group, and each rule's own evaluation time from
    the rules API. An evaluation is known by its start timestamp, which Prometheus sets with
    the duration once the group has run (its iteration counter moves when a run starts, so a
    poll during a long run would pair the new count with the previous run's duration)."""
    stamp, duration = ("prometheus_rule_group_last_evaluation_timestamp_seconds",
                       "prometheus_rule_group_last_duration_seconds")
    before = by_group(prom.own_metrics(), stamp)
    runs: dict[str, dict[float, float]] = {g: {} for g in before}  # group -> {start: seconds}
    found = Evaluations()

    def enough() -> bool:
        metrics = prom.own_metrics()
        last = by_group(metrics, duration)
        new = False
        for group, started in by_group(metrics, stamp).items():
            if started > before.get(group, 0.0) and started not in runs.setdefault(group, {}):
                runs[group][started] = last[group]
                new = True
        if new:
            record_rules(prom, found.rules)
        return all(len(r) >= evaluations for r in runs.values())

    # Polled well inside the interval, so no evaluation is passed over between two polls.
    wait_until(enough, (evaluations + 3) * interval, f"{evaluations} evaluations of every group",
               poll=min(1.0, interval / 5))
    found.groups = {g: list(r.values()) for g, r in runs.items()}
    return found


def record_rules(prom: Prometheus, rules: dict[tuple[str, int, str], dict[str, float]]) -> None:
    """Each rule's evaluation time, keyed by its evaluation's timestamp so a rule whose group
    has not run again since the last look is not counted twice."""
    for group in json.loads(prom.get("/api/v1/rules"))["data"]["groups"]:
        for i, rule in enumerate(group["rules"]):
            if rule.get("lastEvaluation", "").startswith("0001-"):  # not evaluated yet
                continue
            times = rules.setdefault((group["name"], i, rule["name"]), {})
            times[rule["lastEvaluation"]] = float(rule.get("evaluationTime", 0))


def recording_names() -> list[str]:
    names = {rule["record"] for path in RULE_FILES
             for group in yaml.safe_load(path.read_text())["groups"]
             for rule in group["rules"] if "record" in rule}
    return sorted(names)


def levels(prom: Prometheus, selector: str) -> dict[str, float]:
    """Output series per level, the part of a rule's name before the first colon: `pool`,
    `model` and `cluster` do not grow with nodes, `node`, `gpu` and `uuid` do."""
    out: dict[str, float] = {}
    for r in prom.query(f"count by (__name__) ({selector})"):
        level = r["metric"]["__name__"].split(":", 1)[0]
        out[level] = out.get(level, 0) + float(r["value"][1])
    return out


def rule_errors(prom: Prometheus) -> list[str]:
    answer = json.loads(prom.get("/api/v1/rules"))
    return [f"{g['name']}: {r['name']}: {r.get('lastError', '')}"
            for g in answer["data"]["groups"] for r in g["rules"] if r.get("health") == "err"]


def measure(prom: Prometheus, nodes: int, args: argparse.Namespace) -> Result:
    settle(prom, nodes, args.history, args.interval)
    found = record_evaluations(prom, args.evaluations, args.interval)
    metrics = prom.own_metrics()
    names = recording_names()
    selector = "{__name__=~\"" + "|".join(re.escape(n) for n in names) + "\"}"
    present = {r["metric"]["__name__"] for r in prom.query(f"count by (__name__) ({selector})")}
    return Result(
        nodes=nodes,
        scraped=prom.scalar(f'sum(scrape_samples_scraped{{job="{JOB}"}})'),
        head=metrics["prometheus_tsdb_head_series"][0][1],
        recorded=prom.scalar(f"count({selector})"),
        empty_records=[n for n in names if n not in present],
        durations=found.groups,
        rules=found.rules,
        recorded_by_level=levels(prom, selector),
        intervals=by_group(metrics, "prometheus_rule_group_interval_seconds"),
        rule_quantiles={labels["quantile"]: value for labels, value
                        in metrics.get("prometheus_rule_evaluation_duration_seconds", [])},
        rss=metrics["process_resident_memory_bytes"][0][1],
        missed=sum(by_group(metrics, "prometheus_rule_group_iterations_missed_total").values()),
        failures={g: v for g, v in by_group(
            metrics, "prometheus_rule_evaluation_failures_total").items() if v},
        errors=rule_errors(prom),
    )


@contextlib.contextmanager
def fleet(binary: str, bodies: list[bytes], nodes: int, args: argparse.Namespace) -> Iterator[
        Prometheus]:
    """The server and a fresh Prometheus for N nodes; both stopped and the tmp dir removed
    whatever happens."""
    server = FleetServer(bodies[:nodes])
    try:
        with tempfile.TemporaryDirectory(prefix="rule-cost-") as tmp:
            prom = Prometheus(binary, Path(tmp), prometheus_config(
                server.address, nodes, args.pool_size, args.interval))
            try:
                yield prom
            finally:
                prom.stop()
    finally:
        server.close()


# --- report -------------------------------------------------------------------------------------
def short(group: str) -> str:
    """`/path/alerts/gpu.rules.yml;gpu-fleet-exporter.links` -> `gpu.rules.yml: links`."""
    path, name = group.split(";", 1)
    return f"{Path(path).name}: {name.removeprefix('gpu-fleet-exporter.')}"


def summary_table(results: list[Result]) -> str:
    rows = [[f"{r.nodes}", f"{r.scraped:,.0f}", f"{r.head:,.0f}", f"{r.recorded:,.0f}",
             f"{r.total_ms():.1f}", f"{r.share_of_interval():.2f} %",
             f"{r.rule_quantiles.get('0.5', 0) * 1000:.2f} / "
             f"{r.rule_quantiles.get('0.99', 0) * 1000:.2f}",
             f"{r.rss / 2**20:.0f} MiB", f"{r.missed:.0f}", f"{sum(r.failures.values()):.0f}"]
            for r in results]
    return table(["nodes", "scraped series", "head series", "recording-rule output series",
                  "rule time per evaluation, ms (sum of group medians)", "% of the interval",
                  "per-rule p50 / p99 ms", "Prometheus RSS", "missed iterations",
                  "failed evaluations"], rows)


def group_table(results: list[Result]) -> str:
    groups = sorted({g for r in results for g in r.durations}, key=short)
    rows = [[short(g)] + [f"{r.median_ms(g):.2f}" if g in r.durations else "-" for r in results]
            for g in groups]
    rows += [[f"{path.name}, all groups"] + [f"{r.total_ms(path.name):.2f}" for r in results]
             for path in RULE_FILES]
    return table(["rule group, median ms per evaluation"] + [f"{r.nodes} nodes" for r in results],
                 rows)


def level_table(results: list[Result]) -> str:
    found = sorted({lv for r in results for lv in r.recorded_by_level})
    rows = [[f"`{lv}`"] + [f"{r.recorded_by_level.get(lv, 0):,.0f}" for r in results]
            for lv in found]
    return table(["recording-rule output series, by level"]
                 + [f"{r.nodes} nodes" for r in results], rows)


def costliest_rules(result: Result, top: int) -> str:
    """The rules that take most of the time at the largest N, median of their evaluations."""
    medians = sorted(((statistics.median(t.values()), g, name)
                      for (g, _, name), t in result.rules.items() if t), reverse=True)
    total = sum(m for m, _, _ in medians) or 1.0
    rows = [[f"{g.removeprefix('gpu-fleet-exporter.')}", f"`{name}`", f"{m * 1000:.2f}",
             f"{m / total * 100:.0f} %"] for m, g, name in medians[:top]]
    return table([f"costliest rules at {result.nodes} nodes: group", "rule",
                  "median ms", "share of all rules"], rows)


def extrapolation(results: list[Result], interval: float) -> str:
    """Least-squares line through the measured points, evaluated at 10,000 nodes."""
    def ms(v: float) -> str:
        return f"{v:.3f} ms"

    def seconds(v: float) -> str:
        return f"{v / 1000:.1f} s ({v / 10 / interval:.0f} % of a {interval:g} s interval)"

    def count(v: float) -> str:
        return f"{v:,.0f}"

    def mib(v: float) -> str:
        return f"{v / 2**20:.2f} MiB"

    # (quantity, value per N, format of the slope, format of the value at 10,000 nodes)
    quantities: list[tuple[str, list[float], Callable[[float], str], Callable[[float], str]]] = [
        ("scraped series", [r.scraped for r in results], count, count),
        ("recording-rule output series", [r.recorded for r in results], count, count),
        ("rule time per evaluation, all rules", [r.total_ms() for r in results], ms, seconds),
        *[(f"rule time per evaluation, {path.name}", [r.total_ms(path.name) for r in results],
           ms, seconds) for path in RULE_FILES],
        ("Prometheus RSS", [r.rss for r in results], mib, lambda v: f"{v / 2**30:.1f} GiB"),
    ]
    xs = [float(r.nodes) for r in results]
    rows = []
    for name, ys, per_node, at_fleet in quantities:
        slope, intercept = statistics.linear_regression(xs, ys)
        rows.append([name, per_node(slope), at_fleet(slope * FLEET + intercept)])
    used = ", ".join(str(r.nodes) for r in results)
    return (f"Extrapolation, not measured: least-squares line through N = {used}, "
            f"evaluated at {FLEET:,} nodes.\n\n"
            + table(["quantity", "per node (slope)", f"at {FLEET:,} nodes"], rows))


def anomalies(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        for group, count in r.failures.items():
            lines.append(f"{r.nodes} nodes: {short(group)}: {count:.0f} failed evaluations")
        lines += [f"{r.nodes} nodes: rule unhealthy: {e}" for e in r.errors]
        if r.missed:
            lines.append(f"{r.nodes} nodes: {r.missed:.0f} missed group iterations")
    if results and results[-1].empty_records:
        lines.append("recording rules with no output series (their inputs are not in the "
                     "simulated node's exposition): "
                     + ", ".join(f"`{n}`" for n in results[-1].empty_records))
    return lines


# --- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--nodes", default="10,50,100,200",
                    help="comma-separated node counts, one Prometheus run each")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=15.0,
                    help="scrape and evaluation interval, seconds (the fleet figures' 15 s)")
    ap.add_argument("--history", type=float, default=300.0,
                    help="seconds of samples in the head before measuring (5m windows full)")
    ap.add_argument("--evaluations", type=int, default=6,
                    help="evaluations of every group to take the median over")
    ap.add_argument("--pool-size", type=int, default=100, help="nodes per `pool` label value")
    args = ap.parse_args()
    try:
        args.node_counts = sorted({int(n) for n in args.nodes.split(",") if n.strip()})
    except ValueError:
        ap.error(f"--nodes: not a comma-separated list of integers: {args.nodes!r}")
    if not args.node_counts or min(args.node_counts) < 1:
        ap.error("--nodes: node counts must be positive")
    return args


def check_memory(nodes: int, series: int) -> None:
    available = next(int(line.split()[1]) * 1024
                     for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    need = nodes * series * BYTES_PER_SERIES_GUESS
    if need > available / 2:
        raise SystemExit(f"{nodes} nodes x {series} series may need {need / 2**30:.1f} GiB; "
                         f"{available / 2**30:.1f} GiB available: use fewer --nodes")


def main() -> None:
    args = parse_args()
    binary = find_prometheus()
    if binary is None:
        print("prometheus not found on PATH or in .tools/bin (tests/install-tools.sh installs it)",
              file=sys.stderr)
        sys.exit(2)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    bodies, series = node_bodies(args.gpus, max(args.node_counts))
    check_memory(max(args.node_counts), series)
    print(f"{machine()}; {version.splitlines()[0] if version else binary}")
    print(f"One simulated node: {args.gpus} H100, {series} series, {len(bodies[0]) / 1024:.1f} KiB "
          f"gzip'd OpenMetrics; scrape and evaluation every {args.interval:g} s; "
          f"{args.history:g} s of history before measuring; median of {args.evaluations} "
          f"evaluations; {args.pool_size} nodes per pool.\n", flush=True)
    results = []
    for nodes in args.node_counts:
        with fleet(binary, bodies, nodes, args) as prom:
            results.append(measure(prom, nodes, args))
        print(f"measured {nodes} nodes", file=sys.stderr, flush=True)
    print(summary_table(results) + "\n")
    print(group_table(results) + "\n")
    print(level_table(results) + "\n")
    print(costliest_rules(results[-1], 10) + "\n")
    if len(results) >= 2:
        print(extrapolation(results, args.interval) + "\n")
    for line in anomalies(results):
        print(f"- {line}")


if __name__ == "__main__":
    main()
