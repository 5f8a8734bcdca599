"""Alerting and recording rules (alerts/): checked and unit-tested with the real promtool, the
Alertmanager example with amtool and a real Alertmanager, and statically: every alert covered by
a firing and a quiet promtool case, every metric a rule names in the catalog, every alert with
its labels, annotations and runbook (docs/alerts.md)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, require_tool, wait_for

from exporter.catalog import BY_NAME, Kind

ALERTS = REPO / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
GPU_RULES = ALERTS / "gpu.rules.yml"
DCGM_RULES = ALERTS / "dcgm-compat.rules.yml"
TEST_FILES = sorted((ALERTS / "tests").glob("*.yml"))
RUNBOOKS = ALERTS / "runbooks"
AM_EXAMPLE = ALERTS / "alertmanager.example.yml"
RUNBOOK_BASE = "https://github.com/gpu-fleet-exporter/gpu-fleet-exporter/blob/main/alerts/runbooks/"

SEVERITIES = {"page", "ticket", "info"}
# vLLM's metric names (its production-metrics documentation) the rules may read.
VLLM_METRICS = {
    "vllm:time_to_first_token_seconds", "vllm:generation_tokens_total",
    "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total", "vllm:num_requests_waiting",
    "vllm:num_requests_running", "vllm:prompt_tokens_total",
    "vllm:request_time_per_output_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
}
VLLM_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds", "vllm:request_time_per_output_token_seconds",
    "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds",
}
# Alerts about one node or pool rather than one GPU, and the LLM-serving alerts: every other
# alert of gpu.rules.yml is about one GPU and must carry node, gpu and uuid.
NOT_PER_GPU = {
    "GpuExporterDown", "GpuExporterReleasedForRepairs", "GpuExporterCollectionStale",
    "GpuExporterBackendDown", "GpuExporterEventSourceDown", "GpuMissing",
    "GpuDriverVersionDrift", "GpuVbiosVersionDrift",
}
WITH_ACTION = {"GpuXidCritical", "GpuXidError", "GpuAppXidRecurring",
               "GpuRecoveryActionRequested", "GpuRecoveryDrainP2P"}
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## Confirm", "## Remediation")
LADDER = ("drain", "release", "reset", "reboot", "rma")


# --- helpers -------------------------------------------------------------------------------------
def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in _rules(GPU_RULES) if "alert" in r}


def _group_of() -> dict[str, str]:
    return {r["alert"]: g["name"] for g in _load(GPU_RULES)["groups"]
            for r in g["rules"] if "alert" in r}


def _recorded() -> set[str]:
    return {r["record"] for path in RULE_FILES for r in _rules(path) if "record" in r}


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (in `{...}` matchers and grouping lists), strings or durations."""
    text = re.sub(r"#[^\n]*", "", _STRING.sub('""', expr))
    text = _LABEL_LISTS.sub("", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def _known_metric(name: str, recorded: set[str]) -> bool:
    if name in BY_NAME or name in recorded or name in VLLM_METRICS or name == "up":
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and (base in VLLM_HISTOGRAMS or (
                base in BY_NAME and BY_NAME[base].kind is Kind.HISTOGRAM)):
            return True
    return False


def _run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60)


def _cases() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(test file, alertname, expected alerts) of every promtool alert case on gpu.rules.yml."""
    out = []
    for path in TEST_FILES:
        doc = _load(path)
        if not any(Path(f).name == GPU_RULES.name for f in doc.get("rule_files", [])):
            continue
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                out.append((path.name, case["alertname"], case.get("exp_alerts") or []))
    return out


# --- static checks -------------------------------------------------------------------------------
def test_metric_name_extraction() -> None:
    expr = """
      sum by (cluster, pool) (rate(gpu_pcie_replay_total{reason="gpu_idle"}[5m] offset 1h))
      > on (uuid) group_left (model) max by (uuid, model) (gpu_info) * 1e6
      and ignoring (sensor) uuid:gpu_probe_flop_per_second:with_model  # gpu_not_a_metric
      or label_replace(vllm:kv_cache_usage_perc, "x", "$1", "y", "(gpu_idle)") > bool 0.5
    """
    assert metric_names(expr) == {"gpu_pcie_replay_total", "gpu_info",
                                  "uuid:gpu_probe_flop_per_second:with_model",
                                  "vllm:kv_cache_usage_perc"}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_metric_a_rule_reads_exists(path: Path) -> None:
    recorded = _recorded()
    unknown = {}
    for rule in _rules(path):
        missing = sorted(n for n in metric_names(rule["expr"]) if not _known_metric(n, recorded))
        if missing:
            unknown[rule.get("alert") or rule.get("record")] = missing
    assert not unknown, f"{path.name}: not in the catalog (docs/metrics.md) nor recorded: {unknown}"


def test_own_rules_rely_on_no_recording_rule_of_another_file() -> None:
    """gpu.rules.yml and dcgm-compat.rules.yml stand alone: each loads without the others."""
    for path in (GPU_RULES, DCGM_RULES):
        own = {r["record"] for r in _rules(path) if "record" in r}
        used = {n for r in _rules(path) for n in metric_names(r["expr"])
                if ":" in n and not n.startswith("vllm:")}
        assert used <= own, f"{path.name} reads {sorted(used - own)}"


def test_every_alert_has_severity_annotations_and_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 30
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key, "").strip(), f"{name}: no {key}"
        assert ann["runbook_url"] == f"{RUNBOOK_BASE}{name}.md", name
        assert (RUNBOOKS / f"{name}.md").is_file(), f"{name}: no alerts/runbooks/{name}.md"
        if name not in NOT_PER_GPU and not name.startswith("Vllm"):
            # Name the GPU, and say what to do.
            for token in ("$labels.node", "$labels.gpu", "$labels.uuid"):
                assert token in ann["description"], f"{name}: description lacks {token}"
        assert "Next:" in ann["description"], f"{name}: the description names no next step"


def test_every_runbook_has_its_sections_and_alert() -> None:
    alerts = _alerts()
    groups = _group_of()
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(alerts), "a runbook without an alert, or an alert without a runbook"
    for name in alerts:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        positions = [text.find(s) for s in RUNBOOK_SECTIONS]
        assert -1 not in positions and positions == sorted(positions), f"{name}: sections"
        confirm = text[positions[2]:positions[3]]
        remediation = text[positions[3]:].lower()
        gpu_alert = groups[name] not in (
            "gpu-fleet-exporter.exporter", "gpu-fleet-exporter.fleet", "llm-serving.vllm"
        ) and name != "GpuProbesNotRunning"
        if gpu_alert:
            assert "gpu-fleet-exporter snapshot" in confirm and "/health" in confirm, name
            assert "nvidia-smi" in confirm or "amd-smi" in confirm, name
            for rung in LADDER:
                assert rung in remediation, f"{name}: the remediation ladder lacks {rung!r}"
            assert "/admin/release" in remediation, name


def test_gpu_alerts_carry_inhibition_labels() -> None:
    """Every firing case of a per-GPU alert has node, gpu and uuid (and action where it
    belongs), and the severity of its rule: Alertmanager groups and inhibits on them."""
    alerts = _alerts()
    seen = set()
    for file, name, expected in _cases():
        for alert in expected:
            labels = alert["exp_labels"]
            assert labels.get("severity") == alerts[name]["labels"]["severity"], (file, name)
            if name.startswith("Gpu") and name not in NOT_PER_GPU:
                assert {"node", "gpu", "uuid"} <= labels.keys(), (file, name, labels)
                seen.add(name)
            if name in WITH_ACTION:
                assert labels.get("action"), (file, name)
            if name.startswith("GpuExporter") or name == "GpuMissing":
                assert "node" in labels, (file, name)
    per_gpu = {n for n in alerts if n.startswith("Gpu") and n not in NOT_PER_GPU}
    assert seen == per_gpu


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for _, name, expected in _cases():
        (firing if expected else quiet).add(name)
    alerts = set(_alerts())
    assert not (firing | quiet) - alerts, "a promtool case for an alert that does not exist"
    assert alerts - firing == set(), "alerts with no promtool case where they fire"
    assert alerts - quiet == set(), "alerts with no promtool case where they stay quiet"


def test_every_dcgm_field_has_a_promtool_case() -> None:
    fields = {r["record"] for r in _rules(DCGM_RULES) if r["record"].startswith("DCGM_FI_")}
    assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_ROW_REMAP_FAILURE"} <= fields
    doc = _load(ALERTS / "tests" / "dcgm-compat.test.yml")
    tested = {case["expr"] for test in doc["tests"] for case in test["promql_expr_test"]}
    assert fields <= tested
    assert "DCGM_FI_DEV_XID_ERRORS" not in fields  # cannot be rebuilt: docs/alerts.md says why
    docs = (REPO / "docs" / "alerts.md").read_text()
    assert "DCGM_FI_DEV_XID_ERRORS" in docs and "DCGM_FI_DEV_XID_ERRORS" in DCGM_RULES.read_text()


def test_docs_list_every_alert_with_its_severity() -> None:
    docs = (REPO / "docs" / "alerts.md").read_text()
    for name, rule in _alerts().items():
        row = re.search(rf"^\| `{name}` \| (\w+) \|.*\]\(\.\./alerts/runbooks/{name}\.md\) \|$",
                        docs, re.M)
        assert row, f"docs/alerts.md has no row for {name}"
        assert row.group(1) == rule["labels"]["severity"], name


# --- promtool ----------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "rules", str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    assert lines[0] == f"Checking {path}" and lines[1].startswith("SUCCESS:") and len(lines) == 2, \
        output


@pytest.mark.integration
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(path: Path) -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- Alertmanager ------------------------------------------------------------------------------
@pytest.mark.integration
def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    result = _run(amtool, "check-config", str(AM_EXAMPLE))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(("labels", "receivers"), [
    ("alertname=GpuDown severity=page node=n1 gpu=0 uuid=GPU-a", "page"),
    ("alertname=GpuEccUncorrectableErrors severity=ticket node=n1", "ticket"),
    ("alertname=GpuHealthWarn severity=info node=n1", "info"),
    ("alertname=GpuXidCritical severity=page action=reboot_node xid=79", "gpu-repair,page"),
    ("alertname=GpuXidError severity=ticket action=check_link xid=74", "ticket"),
    ("alertname=SomethingElse", "ticket"),
])
def test_amtool_routes(labels: str, receivers: str) -> None:
    amtool = require_tool("amtool")
    result = _run(amtool, "config", "routes", "test", f"--config.file={AM_EXAMPLE}",
                  f"--verify.receivers={receivers}", *labels.split())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, "cluster": "c1", **labels}}


@pytest.mark.integration
def test_alertmanager_applies_the_inhibitions(tmp_path: Path) -> None:
    binary = require_tool("prometheus-alertmanager")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, f"--config.file={AM_EXAMPLE}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("w"))
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=15, what="alertmanager ready")
        gpu = {"node": "n1", "gpu": "0", "uuid": "GPU-a"}
        sent = [
            # n1 is released for repairs: its GPU alerts are silenced, the release is not.
            _alert("GpuExporterReleasedForRepairs", "info", node="n1"),
            _alert("GpuDown", "page", **gpu),
            _alert("GpuExporterCollectionStale", "ticket", node="n1", tier="fast"),
            # n2: GPU 0 fell off the bus, its Xid 79 and verdict follow; GPU 1 is unrelated.
            _alert("GpuFellOffBus", "page", node="n2", gpu="0", uuid="GPU-b"),
            _alert("GpuXidCritical", "page", node="n2", gpu="0", uuid="GPU-b", xid="79",
                   action="reboot_node"),
            _alert("GpuHealthFail", "ticket", node="n2", gpu="0", uuid="GPU-b"),
            _alert("GpuHwThrottling", "ticket", node="n2", gpu="1", uuid="GPU-c",
                   reason="hw_thermal_slowdown"),
            # n3: the ECC ticket names the cause, the verdict alert is silenced; the exporter of
            # n4 is down; the pool-level drift and LLM alerts are never inhibited by a node.
            _alert("GpuEccUncorrectableErrors", "ticket", node="n3", gpu="2", uuid="GPU-d"),
            _alert("GpuHealthFail", "ticket", node="n3", gpu="2", uuid="GPU-d"),
            _alert("GpuHealthWarn", "info", node="n3", gpu="3", uuid="GPU-e"),
            _alert("GpuExporterDown", "ticket", node="n4"),
            _alert("GpuMissing", "ticket", node="n5", pool="serving"),
            _alert("GpuDown", "page", node="n5", gpu="7", uuid="GPU-f"),
            _alert("GpuPcieReplayRateHigh", "ticket", node="n5", gpu="1", uuid="GPU-g"),
            _alert("GpuDriverVersionDrift", "ticket", pool="serving", vendor="nvidia"),
            _alert("VllmKvCacheNearFull", "ticket", node="n1", pod="llama-0"),
        ]
        request = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(sent).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200

        def states() -> dict[tuple[str, str, str], bool] | None:
            with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as r:
                got = json.load(r)
            if len(got) < len(sent):
                return None
            return {(a["labels"]["alertname"], a["labels"].get("node", ""),
                     a["labels"].get("uuid", "")): bool(a["status"]["inhibitedBy"]) for a in got}

        inhibited = wait_for(states, timeout=10, what="alerts stored")
        assert inhibited == {
            ("GpuExporterReleasedForRepairs", "n1", ""): False,
            ("GpuDown", "n1", "GPU-a"): True,
            ("GpuExporterCollectionStale", "n1", ""): True,
            ("GpuFellOffBus", "n2", "GPU-b"): False,
            ("GpuXidCritical", "n2", "GPU-b"): True,
            ("GpuHealthFail", "n2", "GPU-b"): True,
            ("GpuHwThrottling", "n2", "GPU-c"): False,
            ("GpuEccUncorrectableErrors", "n3", "GPU-d"): False,
            ("GpuHealthFail", "n3", "GPU-d"): True,
            ("GpuHealthWarn", "n3", "GPU-e"): False,
            ("GpuExporterDown", "n4", ""): False,
            ("GpuMissing", "n5", ""): False,
            ("GpuDown", "n5", "GPU-f"): False,
            ("GpuPcieReplayRateHigh", "n5", "GPU-g"): True,
            ("GpuDriverVersionDrift", "", ""): False,
            ("VllmKvCacheNearFull", "n1", ""): False,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
