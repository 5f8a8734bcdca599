"""Files an operator or a scenario author names cannot run code, hang the start or leak.

Config, scenario, threshold and web config files are YAML; token files are text. Every one is
read through exporter/safefiles.py: a regular file only, at most 1 MiB, YAML as plain data within
bounds, and a one-line error that quotes none of the file. A reader blocked on a FIFO or a
"billion laughs" being expanded would hang, so each load runs against a deadline: a thread
joined with a timeout here, a subprocess with a timeout for the command.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_config import run_cli

from exporter.backends.sim import load_scenario
from exporter.config import ConfigError, load_settings, read_token
from exporter.events.kmsg import KmsgDevice
from exporter.events.state import STATE_FILE, StateStore
from exporter.safefiles import MAX_BYTES, FileRefused
from exporter.webconfig import load_web_config
from probes.thresholds import Thresholds

DEADLINE = 30.0  # seconds; a refusal takes milliseconds, a hang takes forever

LOADERS: dict[str, Callable[[Path], Any]] = {
    "config": load_settings,
    "scenario": load_scenario,
    "thresholds": Thresholds.load,
    "web config": load_web_config,
}
# Each format with `VALUE` where a value of a known key goes, so a payload is not refused
# merely for being an unknown key at the top.
TEMPLATES = {
    "config": "web:\n  listen_address: VALUE\n",
    "scenario": "faults:\n  - kind: xid\n    gpu: 0\n    xid: VALUE\n",
    "thresholds": "warn_band: VALUE\n",
    "web config": "basic_auth_users:\n  alice: VALUE\n",
}
# How `gpu-fleet-exporter check-config` is told about each kind of file.
CHECK_CONFIG = {
    "config": lambda p: ["check-config", str(p)],
    "scenario": lambda p: ["check-config", os.devnull, "--collection.backend=sim",
                           f"--sim.scenario={p}"],
    "thresholds": lambda p: ["check-config", os.devnull, f"--probes.thresholds-file={p}"],
    "web config": lambda p: ["check-config", os.devnull, f"--web.config.file={p}"],
}


def refusal(load: Callable[[Path], Any], path: Path) -> str:
    """The one-line error of `load(path)`, which must come within the deadline."""
    outcome: dict[str, BaseException | None] = {}

    def attempt() -> None:
        try:
            load(path)
            outcome["error"] = None
        except BaseException as e:  # anything but a clean refusal fails below
            outcome["error"] = e

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"loading {path} still running after {DEADLINE}s"
    error = outcome["error"]
    assert error is not None, f"{path} was accepted"
    assert isinstance(error, (ConfigError, FileRefused)), repr(error)
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    return message


def _token(path: Path) -> str:
    return read_token(path, "admin.token_file")


def write(tmp_path: Path, kind: str, value: str) -> Path:
    path = tmp_path / f"{kind.replace(' ', '-')}.yaml"
    path.write_text(TEMPLATES[kind].replace("VALUE", value))
    return path


# --- no code runs --------------------------------------------------------------------------------
def payloads(marker: Path) -> list[str]:
    """YAML that runs a command (or names a function) under an unsafe loader."""
    return [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f"!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
        f"!!python/object/new:subprocess.Popen [[touch, {marker}]]",
        "!!python/name:os.system",
        "!!python/module:os",
    ]


@pytest.mark.parametrize("kind", LOADERS)
def test_python_tags_are_refused_and_never_run(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "payload-ran"
    for payload in payloads(marker):
        message = refusal(LOADERS[kind], write(tmp_path, kind, payload))
        assert "could not determine a constructor for the tag" in message, message
        top = tmp_path / "top.yaml"  # the whole document a payload
        top.write_text(payload + "\n")
        refusal(LOADERS[kind], top)
    assert not marker.exists()


@pytest.mark.parametrize("kind", CHECK_CONFIG)
def test_the_command_exits_2_on_a_python_tag(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "payload-ran"
    path = write(tmp_path, kind, payloads(marker)[0])
    r = run_cli(*CHECK_CONFIG[kind](path))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "python/object/apply:os.system" in r.stderr, r.stderr
    assert not marker.exists()


# --- no document can make the loader (or whoever walks the data) work without end ----------------
LAUGHS = "[" + ", ".join(
    ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "]"


@pytest.mark.parametrize("kind", CHECK_CONFIG)
def test_billion_laughs_is_refused(tmp_path: Path, kind: str) -> None:
    """9^10 values by aliases; the walk that validates (or reports) them would never end.
    The command runs under run_cli's timeout: a hang fails the test."""
    r = run_cli(*CHECK_CONFIG[kind](write(tmp_path, kind, LAUGHS)))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "aliases counted as what they expand to" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", LOADERS)
def test_recursive_and_deep_documents_are_refused(tmp_path: Path, kind: str) -> None:
    message = refusal(LOADERS[kind], write(tmp_path, kind, "&a [*a]"))
    assert "refers to a node that contains it" in message
    message = refusal(LOADERS[kind], write(tmp_path, kind, "[" * 10_000 + "]" * 10_000))
    assert "nested deeper than" in message  # was a RecursionError traceback, exit 1


def test_aliases_within_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("faults:\n  - {kind: busy, gpu: &both [0, 1]}\n  - {kind: hang, gpu: *both}\n")
    scenario = load_scenario(path)
    assert [f.kind for f in scenario.faults_of(1, "hang")] == ["hang"]


@pytest.mark.parametrize("kind", LOADERS)
def test_an_oversized_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, kind, "1")
    with path.open("a") as f:
        f.write("# " + "x" * MAX_BYTES + "\n")  # a comment: valid, only too big
    assert refusal(LOADERS[kind], path).endswith(f"larger than 1 MiB ({path.stat().st_size} "
                                                 "bytes)")


def test_an_oversized_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t" * 5000)
    assert "larger than 4096 bytes" in refusal(_token, path)


# --- a path must be what it claims ---------------------------------------------------------------
def not_files(tmp_path: Path) -> dict[str, Path]:
    os.mkfifo(tmp_path / "fifo")  # opened for reading the usual way, this blocks forever
    (tmp_path / "dir").mkdir()
    return {"a FIFO": tmp_path / "fifo", "a directory": tmp_path / "dir",
            "a device": Path("/dev/zero")}


@pytest.mark.parametrize("kind", [*LOADERS, "token"])
def test_a_fifo_directory_or_device_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    load = _token if kind == "token" else LOADERS[kind]
    for what, path in not_files(tmp_path).items():
        assert refusal(load, path).endswith(f"not a regular file but {what}")


def test_the_null_device_still_reads_as_an_empty_file() -> None:
    assert load_settings(Path(os.devnull)).web.listen_address == ":9472"


def test_event_state_that_is_a_fifo_starts_at_the_present(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / STATE_FILE)
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(StateStore(tmp_path).load()),
                              daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert found and found[0].seq is None


def test_a_kernel_log_that_is_not_a_device_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "kmsg")
    for path in (tmp_path / "kmsg", tmp_path):
        with pytest.raises(OSError, match="not a character device"):
            KmsgDevice(path).open(at_end=False)


# --- errors quote nothing of the file ------------------------------------------------------------
def secret_files(tmp_path: Path, secret: str) -> list[Path]:
    """Files that are not what they are named as, each holding the secret."""
    files = {
        "token": f"{secret}\n",
        "key.pem": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n",
        "broken.yaml": f"{secret}: [unclosed\n",
        "tabs.yaml": f"a: {secret}\n\tb: 1\n",
    }
    paths = []
    for name, text in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_text(text)
    paths.append(tmp_path / "binary")
    paths[-1].write_bytes(b"\xff\xfe" + secret.encode() + b"\x80")
    return paths


@pytest.mark.parametrize("kind", [*LOADERS, "token"])
def test_errors_do_not_quote_the_file(tmp_path: Path, kind: str) -> None:
    secret = "SECRET-" + secrets.token_hex(12)
    load = _token if kind == "token" else LOADERS[kind]
    for path in secret_files(tmp_path, secret):
        if kind == "token" and path.name != "binary":
            continue  # text of 16 characters or more: a token, as far as anyone can tell
        assert secret not in refusal(load, path), path.name
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    assert "hunter2" not in refusal(_token, short)


def test_a_web_config_naming_a_secret_as_its_certificate_does_not_quote_it(
        tmp_path: Path) -> None:
    secret = "SECRET-" + secrets.token_hex(12)
    (tmp_path / "secret").write_text(secret + "\n")
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: secret\n  key_file: secret\n")
    message = refusal(load_web_config, path)
    assert "cannot load cert_file" in message and secret not in message


def test_a_huge_value_is_quoted_short(tmp_path: Path) -> None:
    path = write(tmp_path, "config", "[" + ", ".join(["x" * 50] * 5000) + "]")
    message = refusal(load_settings, path)
    assert "web.listen_address" in message and len(message) < 1000, len(message)


# --- nothing names more files or code to load ----------------------------------------------------
@pytest.mark.parametrize(("kind", "text"), [
    ("config", "include: other.yaml\n"),
    ("config", "web:\n  listen_address: ':1'\n  import: os\n"),
    ("config", "collection:\n  backend: mymodule:Backend\n"),
    ("scenario", "include: other.yaml\n"),
    ("scenario", "faults:\n  - {kind: busy, gpu: 0, module: os}\n"),
    ("scenario", "faults:\n  - {kind: os.system, gpu: 0}\n"),
    ("web config", "include: other.yml\n"),
    ("web config", "tls_server_config:\n  cert_file: a\n  key_file: b\n  loader: os\n"),
])
def test_unknown_keys_and_values_are_refused(tmp_path: Path, kind: str, text: str) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    message = refusal(LOADERS[kind], path)
    assert "unknown" in message or "Input should be" in message, message


def test_a_thresholds_file_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("include: other.yaml\n")
    r = run_cli(*CHECK_CONFIG["thresholds"](path))
    assert r.returncode == 2 and "must be a mapping with the keys of" in r.stderr, r.stderr
