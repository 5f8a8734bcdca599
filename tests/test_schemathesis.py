"""Schemathesis against the OpenAPI the daemon serves (/openapi.json), over real HTTP to the
daemon's own uvicorn on the simulated node: no 5xx, and every response conforms to the
schema (status codes, content types, bodies). Bounded: a few examples per operation.

Under CI=true a missing schemathesis is a failure, not a skip.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
from conftest import IN_CI, wait_for
from e2e_stack import sim_node

TOKEN = "probe-token-0123456789abcdef"
MAX_EXAMPLES = 15
BUDGET_S = 25.0


def require_module(name: str) -> ModuleType:
    """An integration package; missing is a failure under CI=true and a skip elsewhere."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"python package {name} not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message + "; under CI=true a missing tool is a failure")
        pytest.skip(message)


@pytest.fixture
def url(tmp_path) -> Iterator[str]:
    (tmp_path / "probe-token").write_text(TOKEN)
    (tmp_path / "admin-token").write_text("admin-token-not-given-to-schemathesis")
    with sim_node(tmp_path, None, {
        # Fast cycles, but a staleness limit a loaded CI machine cannot trip: /readyz must not
        # flap to 503 under schemathesis's own load (its 503 is for a stalled collector).
        "collection": {"fast_interval": 0.05, "slow_interval": 0.2, "call_deadline": 0.3,
                       "max_staleness": 30.0},
        "probes": {"runtime": "sim", "token_file": str(tmp_path / "probe-token"),
                   "quiet_period": 0.0, "max_utilization": 1.0, "max_memory_used_bytes": 1e15},
        "admin": {"token_file": str(tmp_path / "admin-token")},
        "events": {"kmsg": False, "state_dir": str(tmp_path / "events")},
    }, gpus=2, seed=7) as (base, _):
        wait_for(lambda: httpx.get(base + "/health").status_code == 200, what="a verdict")
        yield base


@pytest.mark.integration
def test_openapi_operations_conform_and_never_5xx(url: str) -> None:
    schemathesis = require_module("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"GET /healthz", "GET /readyz", "GET /health", "GET /probes",
            "POST /probes/run", "POST /admin/release", "POST /admin/resume"} <= labels
    deadline = time.monotonic() + BUDGET_S
    calls: dict[str, set[int]] = {}

    def checker(operation, headers, mode=None):
        label = operation.label + (" (negative)" if mode else "")

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode) if mode else operation.as_strategy())
        def check(case) -> None:
            if time.monotonic() > deadline:
                return  # the time bound: what ran is checked, the rest is left out
            response = case.call_and_validate(headers=headers, timeout=30)
            calls.setdefault(label, set()).add(response.status_code)
            assert response.status_code < 500 or (label, response.status_code) in {
                ("GET /readyz", 503), ("GET /health", 503)}, (label, response.status_code)
            assert "Traceback" not in response.text

        return check

    for operation in operations:
        # The probe trigger with its token, so generated bodies reach validation and the
        # probes; the admin API without one (a release would stop collection under the test).
        token = operation.path == "/probes/run"
        checker(operation, {"Authorization": f"Bearer {TOKEN}"} if token else None)()
        if token:  # invalid bodies: each must be refused with a 4xx
            checker(operation, {"Authorization": f"Bearer {TOKEN}"},
                    schemathesis.GenerationMode.NEGATIVE)()

    expected = labels | {"POST /probes/run (negative)"}
    assert set(calls) == expected, f"not called within {BUDGET_S}s: {expected - set(calls)}"
    assert calls["POST /admin/release"] <= {401, 429}, calls
    assert calls["POST /probes/run (negative)"] and all(
        400 <= c < 500 for c in calls["POST /probes/run (negative)"]), calls
    assert 200 in calls["POST /probes/run"] and calls["POST /probes/run"] & {404, 422}, calls
    assert httpx.get(url + "/metrics", timeout=5).status_code == 200
