"""Generate the references from the code: `python -m exporter.docgen` rewrites
docs/metrics.md (from the catalog) and docs/configuration.md (from the settings model).

A test regenerates both and fails when a committed file differs, so the references can never
describe metrics or settings the code does not have.
"""

from __future__ import annotations

import sys

from .catalog import (
    AMD_ONLY,
    AMD_SOURCES,
    CONTRACT_ADDITIONS,
    CONTRACT_LABEL_ADDITIONS,
    CONTRACT_RENAMES,
    FAMILIES,
    GPU_LABELS,
    Tier,
)
from .config import FLAG_NAMES

HEADER = """# Metrics reference

Generated from the code's catalog (`exporter/catalog.py`) by `python -m exporter.docgen`; do not
edit by hand. Per-GPU families carry `gpu` (the index the vendor's tool shows) and `uuid` before
the labels listed here. Node identity (`node`, `cluster`, `pool`) comes from Prometheus target
labels, never from the exporter. An unsupported or unreadable value is an absent series, never
NaN. Collectors can be switched with `--collector.<name>` / `--no-collector.<name>`.

Tiers: `fast` every `collection.fast_interval` (5 s), `slow` every `collection.slow_interval`
(30 s), `identity` at start and when a GPU comes back, `event` as events arrive, `probe` after a
probe run, `derived` computed by the daemon.

The NVIDIA and AMD columns say which vendor provides a family and from which library call; "-"
means that vendor's GPUs do not have it. The AMD backend has run only against a fake of amdsmi
built from the library's source and documentation, never on AMD hardware (docs/amd.md).

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [HEADER.rstrip("\n"), ""]
    lines.append("| family | type | unit | labels | tier | collector | NVIDIA (NVML) | AMD "
                 "(amdsmi) | help |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for f in FAMILIES:
        labels = ", ".join(f.labels) if f.labels else ""
        if f.per_gpu:
            labels = ", ".join(GPU_LABELS) + (f"; {labels}" if labels else "")
        if f.tier is Tier.DERIVED:
            nvidia = amd = f"both: {f.source}"
        else:
            nvidia = "-" if f.name in AMD_ONLY else f.source
            amd = AMD_SOURCES.get(f.name, "-")
        lines.append(
            f"| `{f.name}` | {f.kind.value} | {f.unit} | {labels} | {f.tier.value} | "
            f"{f.collector} | {_cell(nvidia)} | {_cell(amd)} | {_cell(f.help)} |"
        )
    lines += ["", "## Departures from the metric contract (METRICS.md v1)", ""]
    for old, (new, why) in CONTRACT_RENAMES.items():
        lines.append(f"- `{old}` is `{new}`: {why}.")
    for name, why in CONTRACT_ADDITIONS.items():
        lines.append(f"- `{name}` is new: {why}.")
    for name, (labels, why) in CONTRACT_LABEL_ADDITIONS.items():
        lines.append(f"- `{name}` has labels {', '.join(sorted(labels))} besides the "
                     f"contract's: {why}.")
    return "\n".join(lines) + "\n"


CONFIG_HEADER = """# Configuration reference

Generated from the settings model (`exporter/config.py`) by `python -m exporter.docgen`; do not
edit by hand.

Settings come from one YAML file (`--config.file FILE`), environment variables and flags.
Flags win over environment, environment over the file, the file over defaults. Every key below
can be set in each of the three places:

```yaml
# /etc/gpu-fleet-exporter/config.yaml
web:
  listen_address: ":9472"
collection:
  fast_interval: 5s
collectors:
  nvlink: false
cost:
  gpu_hourly_price_dollars: 2.49
```

is the same as `GPU_FLEET_EXPORTER_WEB__LISTEN_ADDRESS=:9472`,
`GPU_FLEET_EXPORTER_COLLECTION__FAST_INTERVAL=5s`, `GPU_FLEET_EXPORTER_COLLECTORS__NVLINK=false`
and `GPU_FLEET_EXPORTER_COST__GPU_HOURLY_PRICE_DOLLARS=2.49`, or the flags
`--web.listen-address=:9472 --collection.fast-interval=5s --no-collector.nvlink
--cost.gpu-hourly-price-dollars=2.49`.

Durations are seconds or strings such as `500ms`, `5s`, `1m30s`. Unknown keys (in the file, or
environment variables starting with `GPU_FLEET_EXPORTER_`), wrong types and impossible values
stop the daemon with one line naming the key and where it came from, and exit code 2.
`gpu-fleet-exporter check-config FILE` validates a file (and a simulated node's scenario) and
prints the effective settings.

"""


def render_config() -> str:
    from .config import ENV_PREFIX, Settings, setting_fields

    lines = [CONFIG_HEADER.rstrip("\n"), ""]
    lines.append("| key | default | environment | flag | meaning |")
    lines.append("|---|---|---|---|---|")
    for section, info in Settings.model_fields.items():
        for path, field in setting_fields(info.annotation, (section,)):
            key = path[-1]
            env = ENV_PREFIX + "__".join(p.upper() for p in path)
            if section == "collectors":
                flag = f"`--collector.{key}` / `--no-collector.{key}`"
                meaning = f"collect the {key} families"
            else:
                flag = "`--" + FLAG_NAMES.get(tuple(path), ".".join(
                    [section, *(p.replace("_", "-") for p in path[1:])])) + "`"
                meaning = field.description or ""
            default = field.default
            shown = "unset" if default is None else f"`{default}`"
            lines.append(f"| `{'.'.join(path)}` | {shown} | `{env}` | {flag} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


DOCS = {"metrics.md": render, "configuration.md": render_config}


def main() -> int:
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    for name, make in DOCS.items():
        (docs / name).write_text(make())
        sys.stdout.write(f"wrote docs/{name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
