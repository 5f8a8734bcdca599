"""Shared test helpers: repo paths, tool lookup (a failure under CI=true, a skip elsewhere)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Path of an integration tool; missing is a failure under CI=true and a skip elsewhere."""
    path = shutil.which(name) or _local_tool(name)
    if path:
        return path
    message = f"{name} not found (tests/run.sh installs it)"
    if IN_CI:
        pytest.fail(message + "; under CI=true a missing tool is a failure")
    pytest.skip(message)


def _local_tool(name: str) -> str | None:
    candidate = REPO / ".tools" / "bin" / name
    return str(candidate) if candidate.exists() else None


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll until `predicate()` is truthy, with a deadline: synchronisation, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "METRICS.md").exists():
        if IN_CI:
            pytest.fail(f"{SHARED}/METRICS.md is missing; CI runs with shared/ beside the clone")
        pytest.skip("../shared/METRICS.md not present beside the checkout")
    return SHARED


@pytest.fixture(autouse=True)
def _no_host_kernel_log(monkeypatch, tmp_path: Path) -> None:
    """No test follows the host's /dev/kmsg or writes event state under /var/lib; tests of
    the follower pass their own log and state directory explicitly."""
    monkeypatch.setenv("GPU_FLEET_EXPORTER_EVENTS__KMSG", "false")
    monkeypatch.setenv("GPU_FLEET_EXPORTER_EVENTS__STATE_DIR", str(tmp_path / "event-state"))
