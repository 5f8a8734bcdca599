"""Grafana dashboards (dashboards/*.json) and the recording rules they read
(alerts/recording.rules.yml).

- Structure: loadable by Grafana's sidecar (no `__inputs`), a `datasource` variable every
  query uses, cluster / pool / node / GPU variables, unique panel ids, units and descriptions.
- Names: every metric a query names exists in the catalog, is a recording rule, or is one of
  vLLM's; every rule reads real metrics and is read by a dashboard or another rule.
- promtool: the rules load, and their arithmetic is checked by a rule unit test.
- Schema: each dashboard type-checks against the `@grafana/schema` npm package with TypeScript
  (dashboards/schema-check), and a broken dashboard does not.
- Data: every panel query returns data from a real Prometheus that scrapes two simulated nodes
  (NVIDIA and AMD, with faults) and vLLM pods on them, with the recording rules loaded.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import IN_CI, REPO, require_tool, wait_for
from e2e_stack import Prometheus, VllmStub, sim_daemon
from prometheus_client.parser import text_string_to_metric_families

from exporter.catalog import BY_NAME, Kind

DASHBOARDS = REPO / "dashboards"
SCHEMA_CHECK = DASHBOARDS / "schema-check"
RULES = REPO / "alerts" / "recording.rules.yml"
REQUIRED = ("fleet-overview.json", "node-detail.json", "llm-serving.json")
FILES = tuple(sorted(p.name for p in DASHBOARDS.glob("*.json")))

VLLM_SIMPLE = {"vllm:generation_tokens_total", "vllm:prompt_tokens_total",
               "vllm:num_requests_running", "vllm:num_requests_waiting",
               "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total"}
VLLM_HISTOGRAMS = {"vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                   "vllm:request_time_per_output_token_seconds",
                   "vllm:e2e_request_latency_seconds"}
RULE_LEVELS = {"cluster", "pool", "node", "model", "gpu", "pod", "pool_model_name"}
MAY_BE_EMPTY = "may be empty"  # in a panel's description: its queries may return nothing

RULE_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
VLLM_NAME = re.compile(r"\bvllm:[a-z0-9_:]+")
GPU_NAME = re.compile(r"\bgpu_[a-z0-9_]+")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


# --- reading the dashboards ---------------------------------------------------------------------
def _load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of a collapsed row


def _queries(dash: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            yield panel, target


def _variables(dash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dash.get("templating", {}).get("list", [])}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def _names_in(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(recording rules, vLLM metrics, gpu_ metrics) an expression names. Strings (label
    values such as reason="gpu_idle") are not names; rule names are taken out before the
    metrics inside them (pool:gpu_up:count holds `gpu_up`) could be mistaken for uses."""
    expr = STRING.sub('""', expr)
    rules = set(RULE_NAME.findall(expr))
    expr = RULE_NAME.sub(" ", expr)
    return rules, set(VLLM_NAME.findall(expr)), set(GPU_NAME.findall(expr))


def _unknown_names(expr: str, rules: set[str]) -> list[str]:
    used_rules, vllm, gpu = _names_in(expr)
    bad = sorted(used_rules - rules)
    for name in vllm:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in VLLM_SIMPLE and not (base in VLLM_HISTOGRAMS and base != name):
            bad.append(name)
    for name in gpu:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in BY_NAME and not (base in BY_NAME and BY_NAME[base].kind is Kind.HISTOGRAM):
            bad.append(name)
    return bad


# --- structure ----------------------------------------------------------------------------------
def test_the_dashboards_exist_with_distinct_uids() -> None:
    assert set(REQUIRED) <= set(FILES), FILES
    uids = [_load(name)["uid"] for name in FILES]
    assert len(set(uids)) == len(uids) and all(0 < len(u) <= 40 for u in uids), uids


@pytest.mark.parametrize("name", FILES)
def test_dashboard_structure(name: str) -> None:
    text = (DASHBOARDS / name).read_text()
    dash = json.loads(text)
    # The Grafana sidecar loads a file as is: an exported-for-sharing dashboard (`__inputs`,
    # ${DS_...} placeholders) would reach it with its data source unresolved.
    assert "__inputs" not in dash and "${DS_" not in text
    assert dash["title"] and dash["uid"] and dash.get("id") is None

    variables = _variables(dash)
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for var in ("cluster", "pool", "node", "gpu"):
        v = variables[var]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", var
        assert f'{var}=~"${var}"' not in v["query"], f"{var} filters on itself"

    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dash):
        if panel["type"] == "row":
            continue
        assert panel.get("title"), panel
        if panel["type"] == "text":
            continue
        where = f"{name}: {panel['title']}"
        assert panel.get("description"), f"{where}: no description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where
            # Windows come from Grafana, so a zoomed-out range stays cheap and the data test
            # can substitute short ones; fixed windows belong in recording rules.
            for window in re.findall(r"\[([^\]]*)\]", target["expr"]):
                assert window in ("$__rate_interval", "$__interval", "$__range"), \
                    f"{where}: fixed window [{window}]"
        if panel["type"] in ("timeseries", "stat", "bargauge"):
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"].get("unit"), f"{where}: no unit"
    _assert_no_overlap(name, [p for p in dash["panels"]])


def _assert_no_overlap(name: str, panels: list[dict[str, Any]]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name}: {panel.get('title')} too wide"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), panel.get("title", ""))
                assert other == panel.get("title", ""), f"{name}: {other} overlaps {panel}"


@pytest.mark.parametrize("name", FILES)
def test_every_metric_a_dashboard_names_exists(name: str) -> None:
    dash = _load(name)
    rules = {r["record"] for r in _rules()}
    queries = [(p["title"], t["expr"]) for p, t in _queries(dash)]
    queries += [(f"variable {v['name']}", v["query"]) for v in _variables(dash).values()
                if v["type"] == "query"]
    assert len(queries) > 20
    unknown = {title: bad for title, expr in queries if (bad := _unknown_names(expr, rules))}
    assert unknown == {}


def test_recording_rules_are_named_by_level_and_read_real_metrics() -> None:
    rules = _rules()
    recorded = {r["record"] for r in rules}
    defined: set[str] = set()
    for rule in rules:
        level, metric, operation = rule["record"].split(":")
        assert level in RULE_LEVELS, rule["record"]
        # The middle part is the family the rule derives from (vLLM's colon as underscore).
        assert metric in BY_NAME or metric.replace("vllm_", "vllm:", 1) in (
            VLLM_SIMPLE | {h + "_bucket" for h in VLLM_HISTOGRAMS}), rule["record"]
        assert operation, rule["record"]
        used_rules, _, _ = _names_in(rule["expr"])
        # A rule reads rules above it (in its group: the same evaluation; across groups, which
        # Prometheus runs independently: one evaluation later), never one below.
        assert used_rules <= defined, rule["record"]
        assert _unknown_names(rule["expr"], recorded) == [], rule["record"]
        defined.add(rule["record"])
    read = set()
    for name in FILES:
        for _, target in _queries(_load(name)):
            read |= _names_in(target["expr"])[0]
        for v in _variables(_load(name)).values():
            read |= _names_in(str(v.get("query", "")))[0]
    for rule in rules:
        read |= _names_in(rule["expr"])[0]
    assert sorted(recorded - read) == [], "recording rules nothing reads"


# --- promtool -----------------------------------------------------------------------------------
@pytest.mark.integration
def test_recording_rules_pass_promtool_check() -> None:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def _expect(expr: str, *samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    name = expr if re.fullmatch(r"[a-z_:0-9]+", expr) else ""
    return {"expr": expr, "eval_time": "50m", "exp_samples": [
        {"labels": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
         "value": value} for labels, value in samples]}


def _rule_test() -> dict[str, Any]:
    """Node n1 of pool p: GPU 0 ok and busy, GPU 1 failing and idle; node n2: GPU 0 warning
    and not readable. n1's GPU 0 draws 300 J a minute and is time-sliced by vLLM pods a and
    b; vLLM's series carry no pool. GPU 1's first GEMM failure appears at 30 min."""
    p = {"cluster": "c", "pool": "p"}
    g0, g1 = {**p, "node": "n1", "gpu": "0", "uuid": "u0"}, {**p, "node": "n1", "gpu": "1",
                                                             "uuid": "u1"}
    g2 = {**p, "node": "n2", "gpu": "0", "uuid": "u2"}
    bw = {"probe": "pcie_bandwidth", "direction": "h2d"}
    pod = {"cluster": "c", "node": "n1", "namespace": "s", "pod": "a", "model_name": "m"}
    series = [
        _series("gpu_health_status", "0x60", **g0), _series("gpu_health_status", "2x60", **g1),
        _series("gpu_health_status", "1x60", **g2),
        _series("gpu_up", "1x60", **g0), _series("gpu_up", "1x60", **g1),
        _series("gpu_up", "0x60", **g2),
        _series("gpu_utilization_ratio", "0.95x60", **g0),
        _series("gpu_utilization_ratio", "0.05x60", **g1),
        *(_series("gpu_info", "1x60", **g, model="H100") for g in (g0, g1, g2)),
        _series("gpu_probe_bandwidth_bytes_per_second", "50e9x60", **g0, **bw),
        _series("gpu_probe_bandwidth_bytes_per_second", "50e9x60", **g1, **bw),
        _series("gpu_probe_bandwidth_bytes_per_second", "20e9x60", **g2, **bw),
        _series("gpu_energy_joules_total", "0+300x60", **g0),
        _series("gpu_hourly_price_dollars", "3x60", **g0),
        _series("gpu_pod_info", "1x60", **g0, namespace="s", pod="a"),
        _series("gpu_pod_info", "1x60", **g0, namespace="s", pod="b"),
        _series("vllm:generation_tokens_total", "0+600x60", **pod),
        _series("vllm:num_requests_running", "4x60", **pod),
        _series("gpu_probe_runs_total", "_x30 1x30", **g1, probe="gemm", outcome="fail"),
        _series("gpu_probe_runs_total", "0+1x60", **g0, probe="gemm", outcome="pass"),
    ]
    m = {**p, "model_name": "m"}
    ratio = "gpu:gpu_probe_bandwidth_bytes_per_second:ratio_to_model_median"
    tests = [
        _expect("pool:gpu_health_status:count", ({**p, "status": "ok"}, 1),
                ({**p, "status": "warn"}, 1), ({**p, "status": "fail"}, 1)),
        _expect("cluster:gpu_up:count - cluster:gpu_up:sum", ({"cluster": "c"}, 1)),
        _expect("pool:gpu_utilization_ratio:bucket", *(
            ({**p, "le": le}, n) for le, n in (("0.1", 1), ("0.2", 1), ("0.3", 1), ("0.4", 1),
                                               ("0.5", 1), ("0.6", 1), ("0.7", 1), ("0.8", 1),
                                               ("0.9", 1), ("1", 2)))),
        _expect(ratio, ({**g0, "model": "H100", **bw}, 1), ({**g1, "model": "H100", **bw}, 1),
                ({**g2, "model": "H100", **bw}, 0.4)),
        _expect("pod:gpu_energy_joules_total:rate5m", ({**p, "node": "n1", "namespace": "s",
                                                        "pod": "a"}, 2.5),
                ({**p, "node": "n1", "namespace": "s", "pod": "b"}, 2.5)),
        _expect("pool_model_name:vllm_generation_tokens_total:rate5m", (m, 10)),
        _expect("pool_model_name:gpu_energy_joules_total:rate5m", (m, 2.5)),
        _expect("pool_model_name:gpu_hourly_price_dollars:sum", (m, 1.5)),
        _expect("pool:gpu_probe_runs_total:increase1h",
                ({**p, "probe": "gemm", "outcome": "fail"}, 1),
                ({**p, "probe": "gemm", "outcome": "pass"}, 50)),
    ]
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series, "promql_expr_test": tests}]}


@pytest.mark.integration
def test_recording_rules_compute_what_the_panels_say(tmp_path: Path) -> None:
    """GPUs by verdict count zeros too, heatmap buckets are cumulative, a probe figure is
    compared with its model's median, a time-sliced GPU's watts and price are split among its
    pods, vLLM's series get their pool from the node, a probe's first failure is counted."""
    promtool = require_tool("promtool")
    test = tmp_path / "recording.test.yml"
    test.write_text(yaml.safe_dump(_rule_test(), sort_keys=False))
    r = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- @grafana/schema ----------------------------------------------------------------------------
def _installed() -> bool:
    """node_modules holds the versions package-lock.json pins."""
    lock = json.loads((SCHEMA_CHECK / "package-lock.json").read_text())
    for path, entry in lock.get("packages", {}).items():
        if not path.startswith("node_modules/"):
            continue
        manifest = SCHEMA_CHECK / path / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != entry["version"]:
            return False
    return True


@pytest.fixture(scope="module")
def schema_check() -> Path:
    """dashboards/schema-check with its npm packages installed from the lock file (once; the
    npm cache makes a reinstall work offline)."""
    npm = require_tool("npm")
    require_tool("node")
    if not _installed():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                           cwd=SCHEMA_CHECK, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not _installed():
            message = f"npm ci in {SCHEMA_CHECK} failed: {(r.stdout + r.stderr)[-2000:]}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    return SCHEMA_CHECK


def _typecheck(folder: Path, dashboards: list[Path]) -> subprocess.CompletedProcess[str]:
    """gen.mjs wraps each JSON file in a typed module; tsc judges them."""
    out = folder / f".gen-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["node", "gen.mjs", str(out), *map(str, dashboards)], cwd=folder,
                       check=True, capture_output=True, text=True, timeout=60)
        return subprocess.run(["node", "node_modules/typescript/bin/tsc", "-p", str(out)],
                              cwd=folder, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.integration
def test_dashboards_type_check_against_grafana_schema(schema_check: Path) -> None:
    r = _typecheck(schema_check, [DASHBOARDS / name for name in FILES])
    assert r.returncode == 0, r.stdout + r.stderr


def _first(dash: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in _panels(dash) if p["type"] == kind)


BROKEN = {
    "gridpos_string": lambda d: _first(d, "stat")["gridPos"].update(h="8"),
    "threshold_mode": lambda d: _first(d, "stat")["fieldConfig"]["defaults"]["thresholds"]
    .update(mode="absolut"),
    "stat_option": lambda d: _first(d, "stat")["options"].update(colorMode="rainbow"),
    "draw_style": lambda d: _first(d, "timeseries")["fieldConfig"]["defaults"]["custom"]
    .update(drawStyle="area"),
    "target_field": lambda d: _first(d, "timeseries")["targets"][0].update(exp="up"),
    "variable_type": lambda d: d["templating"]["list"][0].update(type="datasources"),
}


@pytest.mark.integration
def test_a_broken_dashboard_fails_the_type_check(schema_check: Path, tmp_path: Path) -> None:
    """Each file breaks one thing (a gridPos height as a string, an enum value that does not
    exist, a misspelt field); tsc must reject every one of them."""
    files = []
    for name, breaks in BROKEN.items():
        dash = copy.deepcopy(_load("fleet-overview.json"))
        breaks(dash)
        (tmp_path / f"{name}.json").write_text(json.dumps(dash, indent=2))
        files.append(tmp_path / f"{name}.json")
    r = _typecheck(schema_check, files)
    assert r.returncode != 0
    failed = {m for m in re.findall(r"([a-z_]+)\.ts\(\d+,\d+\): error TS", r.stdout)}
    assert failed == set(BROKEN), r.stdout
    assert "Type 'string' is not assignable to type 'number'" in r.stdout  # the gridPos


# --- every query against a real Prometheus ------------------------------------------------------
H100_FAULTS = """
faults:
  - {at: 0s, gpu: 2, kind: probe, probe: pcie_bandwidth, values: {h2d_bytes_per_second: 20e9}}
  - {at: 0s, gpu: 0, kind: clock_event, reason: hw_thermal_slowdown}
  - {at: 0s, gpu: 3, kind: pcie_downtrain, generation: 3, width: 8}
  - {at: 0s, gpu: 1, kind: nvlink_down, link: 3}
  - {at: 1s, gpu: 3, kind: hang, duration: 1s}
  - {at: 2s, gpu: 0, kind: ecc_corrected, count: 12}
  - {at: 2s, gpu: 3, kind: pcie_replays, count: 500}
  - {at: 2s, gpu: 1, kind: nvlink_errors, link: 3, type: crc_flit, count: 100}
  - {at: 2s, gpu: 0, kind: xid, xid: 13}
  - {at: 3s, gpu: 1, kind: ecc_uncorrectable, count: 1}
  - {at: 3s, gpu: 1, kind: xid, xid: 94}
  - {at: 3s, gpu: 1, kind: row_remap_pending}
  - {at: 3s, gpu: 1, kind: recovery_action, action: 1}
"""
NODES = {  # node -> (pool, simulated model, seed, scenario)
    "node-h100": ("pool-h100", "h100-sxm", 7, H100_FAULTS),
    "node-mi300x": ("pool-mi300x", "mi300x", 3, "faults:\n  - {at: 2s, gpu: 1, kind: "
                    "ecc_corrected, count: 3}\n"),
}
MODELS = {"70b": "meta-llama/Llama-3.1-70B-Instruct", "8b": "meta-llama/Llama-3.1-8B-Instruct"}
SUBSTITUTE = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}


class VllmPod(VllmStub):
    """One serving pod's vLLM metrics, and the evaluation score the quality panel reads."""

    def exposition(self) -> str:
        return super().exposition() + (
            "# TYPE llm_eval_score gauge\n"
            f'llm_eval_score{{model_name="{self.model}",benchmark="mmlu"}} 0.812\n')


def _exporter(tmp: Path, model: str, seed: int, scenario: str):  # type: ignore[no-untyped-def]
    """The daemon on a simulated node under real uvicorn, probes run at start; yields its URL."""
    return sim_daemon(tmp, scenario, {
        "collection": {"fast_interval": 0.2, "slow_interval": 0.5, "call_deadline": 0.3},
        "cost": {"gpu_hourly_price_dollars": 3.1},
        "probes": {"run_at_start": True, "jitter": 0, "quiet_period": 0, "timeout": 20},
    }, gpus=4, model=model, seed=seed)


def _serving_pods(url: str) -> list[tuple[str, str]]:
    """(namespace, pod) of the vLLM pods the simulated node allocates GPUs to."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return sorted({(s.labels["namespace"], s.labels["pod"])
                   for family in text_string_to_metric_families(text)
                   if family.name == "gpu_pod_info" for s in family.samples
                   if s.labels["pod"].startswith("vllm-")})


def _grafana_regex(value: str) -> str:
    """A variable's value as Grafana writes it into a Prometheus regex matcher."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def _substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values[name] if name in values else m.group(0)

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)
    assert "$" not in out, f"a variable was left in {out}"
    return out


def _query(url: str, expr: str) -> tuple[str | None, list[Any]]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    if body.get("status") != "success":
        return body.get("error", str(body)), []
    return None, body["data"]["result"]


def _label_values(url: str, query: str, values: dict[str, str]) -> list[str]:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert m, query
    body = httpx.get(f"{url}/api/v1/label/{m.group(2)}/values",
                     params={"match[]": _substitute(m.group(1), values)}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


@pytest.mark.integration
def test_every_panel_query_returns_data_from_prometheus(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    dashboards = {name: _load(name) for name in FILES}
    with contextlib.ExitStack() as stack:
        targets: dict[str, tuple[str, dict[str, str]]] = {}
        for node, (pool, model, seed, scenario) in NODES.items():
            url = stack.enter_context(_exporter(tmp_path / node, model, seed, scenario))
            targets[f"exporter-{node}"] = (url, {"cluster": "test", "pool": pool, "node": node})
            for namespace, pod in _serving_pods(url):
                kind = "70b" if "-70b-" in pod else "8b"
                stub = VllmPod(model=MODELS[kind], kv_cache=0.91 if kind == "8b" else 0.42)
                stack.callback(stub.close)
                # vLLM's own scrape: node relabeled from the pod's node, no pool label.
                targets[f"vllm-{node}-{pod}"] = (stub.url, {
                    "cluster": "test", "node": node, "namespace": namespace, "pod": pod})
        assert sum(1 for job in targets if job.startswith("vllm-")) >= 4
        prom = Prometheus(prometheus, tmp_path, targets, [RULES])
        stack.callback(prom.stop)

        everything = {v: ".*" for v in ("cluster", "pool", "node", "gpu", "model_name")}
        queries: dict[tuple[str, str, str], str] = {}
        allowed_empty: set[tuple[str, str, str]] = set()
        for name, dash in dashboards.items():
            values = {**everything, **SUBSTITUTE, **_defaults(dash)}
            for panel, target in _queries(dash):
                key = (name, panel["title"], target["refId"])
                queries[key] = _substitute(target["expr"], values)
                if MAY_BE_EMPTY in panel.get("description", "").lower():
                    allowed_empty.add(key)
        assert len(queries) > 100

        empty = dict(queries)
        errors: dict[tuple[str, str, str], str] = {}

        def all_have_data() -> bool:
            for key in list(empty):
                error, result = _query(prom.url, empty[key])
                if error:
                    errors[key] = f"{error}: {empty.pop(key)}"
                elif result:
                    del empty[key]
            return not (set(empty) - allowed_empty) or bool(errors)

        with contextlib.suppress(AssertionError):  # the report below says what is missing
            wait_for(all_have_data, timeout=50, what="data for every panel query")
        assert errors == {}
        assert {k: q for k, q in empty.items() if k not in allowed_empty} == {}

        # The variables offer the simulated fleet, and queries stay valid with real values.
        dash = dashboards["llm-serving.json"]
        values = {**everything, **SUBSTITUTE, **_defaults(dash)}
        offered = {v: _label_values(prom.url, _variables(dash)[v]["query"], values)
                   for v in ("cluster", "pool", "node", "gpu", "model_name")}
        assert offered["cluster"] == ["test"]
        assert offered["pool"] == ["pool-h100", "pool-mi300x"]
        assert offered["node"] == sorted(NODES)
        assert offered["gpu"] == ["0", "1", "2", "3"]
        assert offered["model_name"] == sorted(MODELS.values())
        real = {"cluster": "test", "pool": "pool-h100", "node": "node-h100", "gpu": "(0|1)",
                "model_name": _grafana_regex(MODELS["70b"])}
        for name, dash in dashboards.items():
            values = {**real, **SUBSTITUTE, **_defaults(dash)}
            for panel, target in _queries(dash):
                error, _ = _query(prom.url, _substitute(target["expr"], values))
                assert error is None, f"{name}: {panel['title']}: {error}"


def _defaults(dash: dict[str, Any]) -> dict[str, str]:
    """Text variables (the eval score's metric name) at their default."""
    return {v["name"]: v["query"] for v in _variables(dash).values() if v["type"] == "textbox"}
