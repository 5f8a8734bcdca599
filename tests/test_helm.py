"""The Helm chart (helm/gpu-fleet-exporter): linted and rendered by the real helm, validated
against Kubernetes' own schemas by kubernetes-validate, and the rendered objects checked against
what DESIGN.md asks of them: least privilege, no GPU requests, probes that do not kill a busy
exporter, monitors whose relabelings keep series stable across rollouts, and rules and
dashboards that are the repository's own files.

Custom resources (ServiceMonitor, PodMonitor, PrometheusRule) have no schema in
kubernetes-validate (it only warns), so they are checked structurally here; their relabelings
are also applied to a target the way Prometheus does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, require_tool

pytestmark = pytest.mark.integration

CHART = REPO / "helm" / "gpu-fleet-exporter"
OLDEST_KUBERNETES = "1.27.0"  # Chart.yaml's kubeVersion
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
NAMESPACE = "gpu-monitoring"
CACHE_MOUNT = "/var/cache/gpu-fleet-exporter"
# Where the chart may mount host paths in the container, and whether the mount may be writable.
HOST_PATHS = {
    "/var/lib/gpu-fleet-exporter": True,  # the kernel-log cursor (state)
    "/var/lib/kubelet/pod-resources": False,
    "/var/log/pods": False,
    "/var/log/containers": False,
    "/dev/kfd": True,  # device files: opened read-write by amdsmi
    "/dev/dri": True,
}
SAFE_RESOURCES = {"cpu", "memory", "ephemeral-storage"}

# Value sets rendered by every test below; each is also linted and schema-validated.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "kernel-log": {"kernelLog": {"enabled": True}},
    "kernel-log-unprivileged": {"kernelLog": {"enabled": True, "privileged": False}},
    "per-process": {"kubernetes": {"perProcess": True}},
    "service-monitor": {
        "monitoring": {"serviceMonitor": {"enabled": True},
                       "prometheusRule": {"enabled": True, "dcgmCompat": True},
                       "additionalLabels": {"release": "kube-prometheus-stack"}},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "GPU"}},
    },
    "pod-monitor": {"monitoring": {"podMonitor": {"enabled": True},
                                   "prometheusRule": {"enabled": True}}},
    "pool-label": {"monitoring": {"serviceMonitor": {"enabled": True},
                                  "poolNodeLabel": "node.kubernetes.io/instance-type"}},
    "existing-secret": {"tokens": {"existingSecret": "gpu-fleet-exporter-tokens-of-mine"}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "amd-only": {"gpu": {"nvidia": {"enabled": False}, "amd": {"enabled": True}},
                 "image": {"variant": "rocm"}},
    "amd-runtime": {"gpu": {"nvidia": {"enabled": False},
                            "amd": {"enabled": True, "runtimeClassName": "amd",
                                    "hostDevices": False}},
                    "image": {"variant": "rocm"}},
    "settings": {
        "config": {"collection": {"fast_interval": "10s"}, "probes": {"enabled": False},
                   "log": {"format": "json"}},
        "tokens": {"admin": "a" * 24, "probe": "p" * 24},
        "runAs": {"user": 65532, "group": 65532, "fsGroup": 65532},
        "priorityClassName": "",
        "kubernetes": {"kubeletRootDir": "/var/snap/microk8s/common/var/lib/kubelet/"},
    },
}


# --- tools and rendering -------------------------------------------------------------------------
def tool(name: str) -> str:
    """helm from PATH or .tools/bin; the pip-installed tools from this interpreter's venv."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else require_tool(name)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def helm() -> str:
    return tool("helm")


def _values_file(tmp: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp / f"values-{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(helm: str, values_file: Path, kube_version: str | None = None) -> str:
    cmd = [helm, "template", "gfe", str(CHART), "--namespace", NAMESPACE, "-f", str(values_file)]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    result = run(cmd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Each value set's objects, rendered once; the manifests also land in files for the
    validators (rendered_files)."""
    tmp = tmp_path_factory.mktemp("helm")
    out: dict[str, list[dict]] = {}
    for name, values in VALUE_SETS.items():
        text = render(helm, _values_file(tmp, name, values))
        (tmp / f"{name}.yaml").write_text(text)
        out[name] = [d for d in yaml.safe_load_all(text) if d]
    out["_dir"] = tmp  # type: ignore[assignment]
    return out


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def pod_spec(docs: list[dict]) -> dict:
    return only(docs, "DaemonSet")["spec"]["template"]["spec"]


def container(docs: list[dict]) -> dict:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(docs: list[dict]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def helm_fails(helm: str, tmp: Path, values: dict[str, Any]) -> str:
    result = run([helm, "template", "gfe", str(CHART), "-f", str(_values_file(tmp, "bad", values))])
    assert result.returncode != 0, f"rendered although it should not: {values}"
    return result.stderr


# --- helm lint -----------------------------------------------------------------------------------
def test_helm_lint_clean(helm: str, tmp_path: Path) -> None:
    for strict in ([], ["--strict"]):
        result = run([helm, "lint", *strict, str(CHART)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    for name, values in VALUE_SETS.items():
        result = run([helm, "lint", "--strict", str(CHART), "-f",
                      str(_values_file(tmp_path, name, values))])
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


# --- Kubernetes schemas --------------------------------------------------------------------------
def _newest_kubernetes() -> str:
    validate = tool("kubernetes-validate")
    # The package's bundled schemas are named v<version>-local-strict; its newest is the default.
    helptext = run([validate, "--help"]).stdout
    match = re.search(r"Defaults to (\d+\.\d+\.\d+)", helptext)
    assert match, helptext
    return match.group(1)


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_manifests_valid_for_kubernetes(rendered: dict, helm: str, which: str,
                                        tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    version = OLDEST_KUBERNETES if which == "oldest" else _newest_kubernetes()
    files = []
    for name, values in VALUE_SETS.items():  # rendered for that Kubernetes version
        path = tmp_path / f"{name}.yaml"
        path.write_text(render(helm, _values_file(tmp_path, name, values), version))
        files.append(str(path))
    result = run([validate, "--strict", "--quiet", "-k", version, *files])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for line in output.splitlines():
        # Only the custom resources may go unvalidated (checked structurally below).
        assert line.startswith("WARN") and re.search(
            r"schema for kind (ServiceMonitor|PodMonitor|PrometheusRule) ", line), line


def test_kubernetes_validate_rejects_unknown_fields(rendered: dict, tmp_path: Path) -> None:
    """The schema check above means something: a field Kubernetes does not know fails it."""
    daemonset = only(rendered["default"], "DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["gpus"] = "all"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(daemonset))
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", OLDEST_KUBERNETES,
                  str(bad)])
    assert result.returncode != 0 and "gpus" in result.stdout + result.stderr


# --- the DaemonSet -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALUE_SETS)
def test_daemonset_least_privilege(rendered: dict, name: str) -> None:
    docs, values = rendered[name], VALUE_SETS[name]
    spec, c = pod_spec(docs), container(docs)
    sc = c["securityContext"]
    kernel_log = values.get("kernelLog", {})
    privileged = kernel_log.get("enabled", False) and kernel_log.get("privileged", True)

    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"].get("add", [])
    assert added == (["SYSLOG"] if kernel_log.get("enabled") else []), added
    assert "SYS_ADMIN" not in added
    assert sc.get("privileged", False) is privileged
    if not privileged:
        assert sc["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"

    assert spec.get("hostPID", False) is values.get("kubernetes", {}).get("perProcess", False)
    assert not spec.get("hostNetwork") and not spec.get("hostIPC")
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False  # see test_service_links_would_stop_the_daemon

    # Host paths: only the known ones, read-only unless they must be written.
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in c["volumeMounts"]:
        if "hostPath" not in volumes[mount["name"]]:
            continue
        assert mount["mountPath"] in HOST_PATHS, mount
        if not HOST_PATHS[mount["mountPath"]]:
            assert mount.get("readOnly") is True, mount


@pytest.mark.parametrize("name", VALUE_SETS)
def test_daemonset_requests_no_gpu(rendered: dict, name: str) -> None:
    for c in pod_spec(rendered[name])["containers"]:
        for part in ("requests", "limits"):
            assert set(c["resources"].get(part, {})) <= SAFE_RESOURCES, c["resources"]


def test_daemonset_defaults(rendered: dict) -> None:
    docs = rendered["default"]
    daemonset = only(docs, "DaemonSet")
    spec, c, env = pod_spec(docs), container(docs), env_of(docs)

    # GPU nodes only, tolerating both vendors' taints; NVIDIA through its runtime.
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"] if e["operator"] == "In"}
    assert keys == {"nvidia.com/gpu.present", "feature.node.kubernetes.io/pci-10de.present"}
    for term in terms:  # every term excludes nodes an operator took the exporter off
        assert {"key": "gpu-fleet-exporter/disabled", "operator": "DoesNotExist"} in \
            term["matchExpressions"]
    tolerated = {t["key"] for t in spec["tolerations"]}
    assert {"nvidia.com/gpu", "amd.com/gpu"} <= tolerated
    assert spec["runtimeClassName"] == "nvidia"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert "AMD_VISIBLE_DEVICES" not in env
    assert spec["priorityClassName"] == "system-node-critical"

    # UID 0 without capabilities (docs/deploy-kubernetes.md says why), not privileged.
    assert spec["securityContext"]["runAsUser"] == 0
    assert c["securityContext"]["privileged"] is False

    # Probes: liveness /healthz, readiness /readyz, a startup probe; none shorter than 5 s.
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["timeoutSeconds"] >= 5, probe
        assert c[probe]["httpGet"]["port"] == "metrics"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # systemd: 2 min

    # Rolling updates replace a node's pod, never run two on one node.
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == 0 and rolling["maxUnavailable"]

    # The node name from the downward API; the state directory on the host; scratch in emptyDirs.
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert volumes["state"]["hostPath"] == {"path": "/var/lib/gpu-fleet-exporter",
                                            "type": "DirectoryOrCreate"}
    assert env["GPU_FLEET_EXPORTER_EVENTS__STATE_DIR"] == "/var/lib/gpu-fleet-exporter"
    for path in (CACHE_MOUNT, "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
        assert volumes[mounts[path]["name"]]["emptyDir"]["sizeLimit"]
    # The kernel cache is a directory inside the emptyDir: the probe runner refuses a directory
    # others can write to, and an emptyDir's root is mode 0777.
    cache = env["GPU_FLEET_EXPORTER_PROBES__CACHE_DIR"]
    assert cache.startswith(CACHE_MOUNT + "/")
    assert volumes["pod-resources"]["hostPath"] == {"path": "/var/lib/kubelet/pod-resources",
                                                    "type": "Directory"}
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    assert env["GPU_FLEET_EXPORTER_EVENTS__KMSG"] == "false"
    assert "/var/log/pods" not in mounts
    assert "dev-kfd" not in volumes

    # Requests from the measured idle footprint, a memory limit above the probe child's peak.
    resources = c["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert resources["limits"] == {"memory": "1Gi"}


def test_kernel_log_and_per_process(rendered: dict) -> None:
    env = env_of(rendered["kernel-log"])
    assert env["GPU_FLEET_EXPORTER_EVENTS__KMSG"] == "true"
    assert container(rendered["kernel-log"])["securityContext"]["privileged"] is True
    unprivileged = container(rendered["kernel-log-unprivileged"])["securityContext"]
    assert unprivileged["privileged"] is False and unprivileged["capabilities"]["add"] == ["SYSLOG"]

    docs = rendered["per-process"]
    env, mounts = env_of(docs), {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert pod_spec(docs)["hostPID"] is True
    assert env["GPU_FLEET_EXPORTER_KUBERNETES__PER_PROCESS"] == "true"
    assert env["GPU_FLEET_EXPORTER_KUBERNETES__LOG_DIR"] == "/var/log"
    assert mounts["/var/log/pods"]["readOnly"] and mounts["/var/log/containers"]["readOnly"]


def test_amd_nodes(rendered: dict) -> None:
    docs = rendered["amd-only"]
    spec, env = pod_spec(docs), env_of(docs)
    assert "runtimeClassName" not in spec
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert container(docs)["image"].endswith("-rocm")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dev-kfd"]["hostPath"] == {"path": "/dev/kfd", "type": "CharDevice"}
    assert volumes["dev-dri"]["hostPath"] == {"path": "/dev/dri", "type": "Directory"}
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"] if e["operator"] == "In"}
    assert keys == {"feature.node.kubernetes.io/amd-gpu",
                    "feature.node.kubernetes.io/pci-1002.present"}

    docs = rendered["amd-runtime"]
    assert pod_spec(docs)["runtimeClassName"] == "amd"
    assert env_of(docs)["AMD_VISIBLE_DEVICES"] == "all"
    assert "dev-kfd" not in {v["name"] for v in pod_spec(docs)["volumes"]}


def test_non_root_and_settings(rendered: dict) -> None:
    docs = rendered["settings"]
    security = pod_spec(docs)["securityContext"]
    assert security["runAsUser"] == 65532 and security["runAsNonRoot"] is True
    assert security["fsGroup"] == 65532
    assert "priorityClassName" not in pod_spec(docs)
    args = container(docs)["args"]
    assert args[0] == "serve" and "--config.file=/etc/gpu-fleet-exporter/config/config.yaml" in args
    config = yaml.safe_load(only(docs, "ConfigMap")["data"]["config.yaml"])
    assert config == VALUE_SETS["settings"]["config"]
    annotations = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"]
    # A kubelet with another root directory: the socket's host path moves, the container's not.
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["pod-resources"]["hostPath"]["path"] == \
        "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"
    assert env_of(docs)["GPU_FLEET_EXPORTER_KUBERNETES__POD_RESOURCES_SOCKET"] == \
        "/var/lib/kubelet/pod-resources/kubelet.sock"


# --- the daemon accepts what the chart gives it --------------------------------------------------
def _check_config(env: dict[str, str], config_file: Path | None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPU_FLEET_EXPORTER_")}
    args = [sys.executable, "-m", "exporter", "check-config"]
    args.append(str(config_file) if config_file else os.devnull)
    return run(args, env={**clean, **env}, cwd=REPO)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_daemon_accepts_the_chart_settings(rendered: dict, name: str, tmp_path: Path) -> None:
    """The environment and config file the chart renders pass the daemon's own check-config:
    no misspelt setting, no value it would stop on (exit 2)."""
    docs = rendered[name]
    env = {k: v for k, v in env_of(docs).items() if isinstance(v, str)}
    config_file = None
    config_maps = [d for d in docs
                   if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    if config_maps:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(config_maps[0]["data"]["config.yaml"])
    result = _check_config(env, config_file)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    values = VALUE_SETS[name]
    assert effective["web"]["listen_address"] == ":9472"
    assert effective["events"]["kmsg"] is values.get("kernelLog", {}).get("enabled", False)
    assert effective["probes"]["cache_dir"].startswith(CACHE_MOUNT + "/")
    assert effective["kubernetes"]["per_process"] is \
        values.get("kubernetes", {}).get("perProcess", False)
    tokens = "/etc/gpu-fleet-exporter/tokens/"
    assert effective["admin"]["token_file"] == tokens + "admin-token"
    assert effective["probes"]["token_file"] == tokens + "probe-token"
    if config_file:
        assert effective["collection"]["fast_interval"] == 10.0


def test_service_links_do_not_stop_the_daemon() -> None:
    """A Service named gpu-fleet-exporter in the namespace injects
    GPU_FLEET_EXPORTER_SERVICE_HOST and friends: the daemon ignores them (the pod also sets
    enableServiceLinks: false, so it does not get them in the first place)."""
    result = _check_config({"GPU_FLEET_EXPORTER_SERVICE_HOST": "10.0.0.1",
                            "GPU_FLEET_EXPORTER_PORT_9472_TCP": "tcp://10.0.0.1:9472"}, None)
    assert result.returncode == 0, result.stderr


# --- monitors ------------------------------------------------------------------------------------
def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str]:
    """Prometheus' target relabeling for the actions the chart uses (replace, labeldrop), then
    the removal of __-prefixed labels."""
    labels = dict(labels)
    for cfg in configs:
        action = cfg.get("action", "replace").lower()
        regex = re.compile(cfg.get("regex", "(.*)"))
        if action == "replace":
            value = cfg.get("separator", ";").join(labels.get(s, "")
                                                   for s in cfg.get("sourceLabels", []))
            match = regex.fullmatch(value)
            if match:
                replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", cfg.get("replacement", "$1"))
                result = match.expand(replacement)
                if result:
                    labels[cfg["targetLabel"]] = result
                else:
                    labels.pop(cfg["targetLabel"], None)
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.fullmatch(k)}
        else:
            raise AssertionError(f"relabel action {action} not simulated")
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def _target(pod: str, ip: str) -> dict[str, str]:
    """A target as the Prometheus Operator hands it to the monitor's relabelings: its own labels
    already set from the exporter pod (namespace, service, pod, container, endpoint, job)."""
    return {
        "__address__": f"{ip}:9472", "instance": f"{ip}:9472", "job": "gpu-fleet-exporter",
        "namespace": NAMESPACE, "service": "gfe-gpu-fleet-exporter", "pod": pod,
        "container": "exporter", "endpoint": "metrics",
        "__meta_kubernetes_pod_node_name": "gpu-node-7",
        "__meta_kubernetes_node_label_node_kubernetes_io_instance_type": "p5.48xlarge",
    }


@pytest.mark.parametrize("name,kind,endpoints", [
    ("service-monitor", "ServiceMonitor", "endpoints"),
    ("pod-monitor", "PodMonitor", "podMetricsEndpoints"),
    ("pool-label", "ServiceMonitor", "endpoints"),
])
def test_monitor(rendered: dict, name: str, kind: str, endpoints: str) -> None:
    docs = rendered[name]
    monitor = only(docs, kind)
    spec = monitor["spec"]
    pool = bool(VALUE_SETS[name]["monitoring"].get("poolNodeLabel"))
    (endpoint,) = spec[endpoints]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert spec["jobLabel"] == "app.kubernetes.io/name"  # job="gpu-fleet-exporter"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec.get("attachMetadata") == ({"node": True} if pool else None)

    # It selects this release's Service (ServiceMonitor) or pods (PodMonitor).
    selector = spec["selector"]["matchLabels"]
    selected = (only(docs, "Service")["metadata"]["labels"] if kind == "ServiceMonitor"
                else only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"])
    assert selector.items() <= selected.items()
    if kind == "ServiceMonitor":
        assert only(docs, "Service")["spec"]["clusterIP"] == "None"
    if name == "service-monitor":  # the label the Prometheus selects monitors by
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    # Two pods of one node (before and after a rollout) give the same target labels: the node
    # in node and instance, the pool, and none of the exporter pod's own labels.
    before = relabel(_target("gfe-gpu-fleet-exporter-abcde", "10.0.0.7"), endpoint["relabelings"])
    after = relabel(_target("gfe-gpu-fleet-exporter-fghij", "10.0.0.8"), endpoint["relabelings"])
    expected = {"job": "gpu-fleet-exporter", "node": "gpu-node-7", "instance": "gpu-node-7"}
    if pool:
        expected["pool"] = "p5.48xlarge"
    assert before == after == expected


def test_monitors_are_exclusive(helm: str, tmp_path: Path) -> None:
    stderr = helm_fails(helm, tmp_path, {"monitoring": {"serviceMonitor": {"enabled": True},
                                                        "podMonitor": {"enabled": True}}})
    assert "enable one, not both" in stderr


def test_no_monitoring_objects_by_default(rendered: dict) -> None:
    assert not CRD_KINDS & set(kinds(rendered["default"]))
    assert kinds(rendered["default"]) == ["DaemonSet", "Secret", "Service", "ServiceAccount"]


# --- rules and dashboards: the repository's own files --------------------------------------------
def _groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["groups"]


def test_prometheus_rule_groups_are_the_rule_files(rendered: dict) -> None:
    alerts = REPO / "alerts"
    base = _groups(alerts / "gpu.rules.yml") + _groups(alerts / "recording.rules.yml")
    dcgm = _groups(alerts / "dcgm-compat.rules.yml")
    assert only(rendered["pod-monitor"], "PrometheusRule")["spec"]["groups"] == base
    assert only(rendered["service-monitor"], "PrometheusRule")["spec"]["groups"] == base + dcgm
    # Every rule file of alerts/ is accounted for (a new one needs a place in the chart).
    assert {p.name for p in alerts.glob("*.rules.yml")} == {
        "gpu.rules.yml", "recording.rules.yml", "dcgm-compat.rules.yml"}


def test_dashboard_configmaps_are_the_dashboards(rendered: dict) -> None:
    docs = rendered["service-monitor"]
    maps = {d["metadata"]["name"]: d for d in docs
            if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]}
    sources = sorted((REPO / "dashboards").glob("*.json"))
    assert sources, "no dashboards/*.json"
    assert len(maps) == len(sources)
    for source in sources:
        cm = maps[f"gfe-gpu-fleet-exporter-dashboard-{source.stem}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "GPU"}
        assert json.loads(cm["data"][source.name]) == json.loads(source.read_text()), source.name


def test_chart_copies_match_the_sources() -> None:
    """helm/gpu-fleet-exporter/files/ mirrors alerts/*.rules.yml and dashboards/*.json, compared
    now (run tools/sync-chart.sh after changing either)."""
    files = CHART / "files"
    for source_dir, pattern, copy_dir in ((REPO / "alerts", "*.rules.yml", files / "alerts"),
                                          (REPO / "dashboards", "*.json", files / "dashboards")):
        sources = {p.name: p for p in source_dir.glob(pattern)}
        copies = {p.name: p for p in copy_dir.glob(pattern)}
        assert sorted(copies) == sorted(sources), "run: bash tools/sync-chart.sh"
        stale = [n for n in sources if sources[n].read_bytes() != copies[n].read_bytes()]
        assert not stale, f"stale chart copies {stale}; run: bash tools/sync-chart.sh"
    result = run(["bash", str(REPO / "tools" / "sync-chart.sh"), "--check"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_reads_only_its_own_files() -> None:
    for template in (CHART / "templates").iterdir():
        for path in re.findall(r'\.Files\.(?:Get|Glob) "([^"]+)"', template.read_text()):
            assert path.startswith("files/"), (template.name, path)
        for path in re.findall(r'"(files/[^"*\s]+)"', template.read_text()):
            assert (CHART / path).exists(), (template.name, path)


# --- tokens, network policy ----------------------------------------------------------------------
def _token_volume(docs: list[dict]) -> dict:
    return {v["name"]: v for v in pod_spec(docs)["volumes"]}["tokens"]["secret"]


def test_tokens(rendered: dict) -> None:
    docs = rendered["default"]
    secret = only(docs, "Secret")
    assert _token_volume(docs)["secretName"] == secret["metadata"]["name"]
    tokens = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(tokens) == {"admin-token", "probe-token"}
    assert all(len(t) >= 16 for t in tokens.values())  # the daemon's minimum
    assert "/etc/gpu-fleet-exporter/tokens" in {
        m["mountPath"] for m in container(docs)["volumeMounts"] if m.get("readOnly")}

    docs = rendered["existing-secret"]
    assert "Secret" not in kinds(docs)
    assert _token_volume(docs)["secretName"] == "gpu-fleet-exporter-tokens-of-mine"

    given = {k: base64.b64decode(v).decode()
             for k, v in only(rendered["settings"], "Secret")["data"].items()}
    assert given == {"admin-token": "a" * 24, "probe-token": "p" * 24}


def test_network_policy(rendered: dict) -> None:
    policy = only(rendered["network-policy"], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    selected = only(rendered["network-policy"], "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selected

# --- values.schema.json --------------------------------------------------------------------------
@pytest.mark.parametrize("values,message", [
    ({"replicas": 3}, "replicas"),
    ({"resources": {"requests": {"nvidia.com/gpu": 1}}}, "nvidia.com/gpu"),
    ({"livenessProbe": {"timeoutSeconds": 1}}, "timeoutSeconds"),
    ({"tokens": {"admin": "short"}}, "admin"),
    ({"config": {"probe": {"enabled": False}}}, "probe"),
    ({"image": {"variant": "cuda11"}}, "variant"),
    ({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "15s"}}}, "interval"),
])
def test_schema_rejects(helm: str, tmp_path: Path, values: dict, message: str) -> None:
    stderr = helm_fails(helm, tmp_path, values)
    assert "schema" in stderr and message in stderr, stderr


def test_schema_covers_every_value() -> None:
    """Every key of values.yaml is described in values.schema.json (which then forbids others)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict, path: str) -> None:
        if not isinstance(value, dict) or node.get("type") != "object" or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{path or 'top level'} is open"
        for key, child in value.items():
            assert key in node["properties"], f"{path}{key} has no schema"
            walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_schema_config_sections_are_the_settings() -> None:
    from exporter.config import Settings

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["config"]["properties"]) == set(Settings.model_fields)


def test_chart_versions() -> None:
    import exporter

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == exporter.__version__
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}-0"
