"""Configuration: precedence flags > env > file > defaults; every mistake is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from exporter.cli import main
from exporter.config import ConfigError, load_settings, parse_listen_address


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `gpu-fleet-exporter` process; the timeout is a deadline, not a speed test."""
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_defaults() -> None:
    s = load_settings()
    assert s.web.listen_address == ":9472"
    assert s.collection.backend == "auto"
    assert s.collectors.utilization is True and s.collectors.library_calls is False
    assert s.collection.staleness_limit() == 3 * s.collection.fast_interval


def test_precedence_flag_over_env_over_file(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, "web:\n  listen_address: ':1111'\n  telemetry_path: /a\n"
                            "collection:\n  fast_interval: 7s\n")
    monkeypatch.setenv("GPU_FLEET_EXPORTER_WEB__LISTEN_ADDRESS", ":2222")
    monkeypatch.setenv("GPU_FLEET_EXPORTER_COLLECTION__SLOW_INTERVAL", "1m")
    s = load_settings(path, {"web": {"listen_address": ":3333"}})
    assert s.web.listen_address == ":3333"  # flag
    assert s.web.telemetry_path == "/a"  # file, untouched by env and flags
    assert s.collection.fast_interval == 7.0  # file duration string
    assert s.collection.slow_interval == 60.0  # env
    s = load_settings(path)
    assert s.web.listen_address == ":2222"  # env over file


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("web:\n  listen_adress: ':1'\n", "web.listen_adress: unknown setting; did you mean "
                                          "'listen_address'?"),
        ("webb:\n  listen_address: ':1'\n", "webb: unknown setting"),
        ("collection:\n  fast_interval: soon\n", "collection.fast_interval: must be a duration"),
        ("collection:\n  fast_interval: 0\n", "collection.fast_interval: Input should be greater"),
        ("sim:\n  gpus: many\n", "sim.gpus: Input should be a valid integer"),
        ("sim:\n  gpus: 1000\n", "sim.gpus: Input should be less than or equal to 64"),
        ("web:\n  listen_address: '1.2.3.4'\n", "web.listen_address: must be HOST:PORT"),
        ("web:\n  listen_address: ':70000'\n", "port must be between 0 (any free port) and 65535"),
        ("web:\n  telemetry_path: /healthz\n", "web.telemetry_path: must be an absolute URL path"),
        ("log:\n  level: loud\n", "log.level: Input should be 'debug'"),
        ("collectors:\n  utilisation: false\n", "collectors.utilisation: unknown setting"),
        ("collection:\n  backend: cuda\n", "collection.backend: Input should be"),
        ("cost:\n  gpu_hourly_price_dollars: -1\n", "cost.gpu_hourly_price_dollars"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("web: [unclosed\n", "not valid YAML at line"),
        ("web: !!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_value_origin_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GPU_FLEET_EXPORTER_SIM__GPUS", "0")
    with pytest.raises(ConfigError, match=r"\[from GPU_FLEET_EXPORTER_SIM__GPUS\]"):
        load_settings()
    monkeypatch.delenv("GPU_FLEET_EXPORTER_SIM__GPUS")
    path = _write(tmp_path, "sim:\n  gpus: 0\n")
    with pytest.raises(ConfigError, match=r"\[from .*config.yaml\]"):
        load_settings(path)
    with pytest.raises(ConfigError, match=r"\[from --sim.gpus\]"):
        load_settings(None, {"sim": {"gpus": "0"}})


@pytest.mark.parametrize("key", ["GPU_FLEET_EXPORTER_WEBB__LISTEN_ADDRESS",
                                 "GPU_FLEET_EXPORTER_LISTEN_ADDRESS",
                                 "GPU_FLEET_EXPORTER_WEB__LISTEN_ADRESS"])
def test_unknown_environment_variables_are_rejected(monkeypatch, key: str) -> None:
    monkeypatch.setenv(key, ":1")
    with pytest.raises(ConfigError, match=r"GPU_FLEET_EXPORTER_|web\.listen_adress"):
        load_settings()


def test_kubernetes_service_links_are_not_settings(monkeypatch) -> None:
    """A Service named gpu-fleet-exporter in the pod's namespace makes Kubernetes inject
    GPU_FLEET_EXPORTER_SERVICE_HOST and friends: they must not stop the daemon."""
    for key in ("GPU_FLEET_EXPORTER_SERVICE_HOST", "GPU_FLEET_EXPORTER_SERVICE_PORT_METRICS",
                "GPU_FLEET_EXPORTER_PORT", "GPU_FLEET_EXPORTER_PORT_9472_TCP_ADDR"):
        monkeypatch.setenv(key, "10.0.0.1")
    assert load_settings().web.listen_address == ":9472"
    monkeypatch.setenv("GPU_FLEET_EXPORTER_PORTS", "1")  # not a service link: still an error
    with pytest.raises(ConfigError, match="GPU_FLEET_EXPORTER_PORTS"):
        load_settings()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize("address, expected", [
    (":9472", ("0.0.0.0", 9472)), ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:9472", ("::1", 9472)), ("localhost:1", ("localhost", 1)),
])
def test_listen_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


def test_check_config_prints_effective_settings(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "sim:\n  gpus: 4\n")
    assert main(["check-config", str(path), "--collection.fast-interval", "2s",
                 "--no-collector.nvlink"]) == 0
    out = capsys.readouterr().out
    assert "gpus: 4" in out and "fast_interval: 2.0" in out and "nvlink: false" in out


def test_check_config_bad_file_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "collection:\n  call_deadline: -3\n")
    with pytest.raises(SystemExit) as exc:
        main(["check-config", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("gpu-fleet-exporter: invalid configuration: collection.call_deadline")


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The real process: bad usage and bad config exit 2 with one line on stderr."""
    bad = _write(tmp_path, "web:\n  listen_address: nowhere\n")
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "web.listen_address" in r.stderr
    r = run_cli("serve", "--config.file", str(bad))
    assert r.returncode == 2 and "web.listen_address" in r.stderr
    r = run_cli("serve", "--no-such-flag")
    assert r.returncode == 2
    r = run_cli("--version")
    assert r.returncode == 0 and "gpu-fleet-exporter" in r.stdout


@pytest.mark.parametrize("scenario, fragment", [
    ("faults:\n  - {at: 1s, gpu: 1, kind: xid}\n", "faults[0]"),
    ("faults:\n  - {at: 1s, gpu: 99, kind: xid, xid: 79}\n", "faults[0].gpu"),
    ("faults: [unclosed\n", "not valid YAML"),
])
def test_bad_scenario_exits_2_with_one_line(tmp_path: Path, scenario: str, fragment: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(scenario)
    for command in ("check-config", "snapshot"):
        args = [command, "--collection.backend=sim", f"--sim.scenario={path}"]
        if command == "check-config":
            config = _write(tmp_path, "")
            args.insert(1, str(config))
        r = run_cli(*args)
        assert r.returncode == 2, (command, r.stderr)
        assert r.stderr.count("\n") == 1 and fragment in r.stderr and "scenario" in r.stderr


@pytest.mark.parametrize("path", ["/probes", "/probes/run", "/admin/release", "/openapi.json",
                                  "/readyz/"])
def test_the_telemetry_path_cannot_hide_another_endpoint(path: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.telemetry_path"):
        load_settings(None, {"web": {"telemetry_path": path}})
