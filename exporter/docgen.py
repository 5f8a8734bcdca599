"""Generate docs/metrics.md from the catalog: `python -m exporter.docgen > docs/metrics.md`.

A test regenerates it and fails when the committed file differs, so the reference can never
describe metrics the code does not emit.
"""

from __future__ import annotations

import sys

from .catalog import CONTRACT_RENAMES, FAMILIES, GPU_LABELS

HEADER = """# Metrics reference

Generated from the code's catalog (`exporter/catalog.py`) by `python -m exporter.docgen`; do not
edit by hand. Per-GPU families carry `gpu` (the index the vendor's tool shows) and `uuid` before
the labels listed here. Node identity (`node`, `cluster`, `pool`) comes from Prometheus target
labels, never from the exporter. An unsupported or unreadable value is an absent series, never
NaN. Collectors can be switched with `--collector.<name>` / `--no-collector.<name>`.

Tiers: `fast` every `collection.fast_interval` (5 s), `slow` every `collection.slow_interval`
(30 s), `identity` at start and when a GPU comes back, `event` as events arrive, `probe` after a
probe run, `derived` computed by the daemon.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [HEADER.rstrip("\n"), ""]
    lines.append("| family | type | unit | labels | tier | collector | source | help |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for f in FAMILIES:
        labels = ", ".join(f.labels) if f.labels else ""
        if f.per_gpu:
            labels = ", ".join(GPU_LABELS) + (f"; {labels}" if labels else "")
        lines.append(
            f"| `{f.name}` | {f.kind.value} | {f.unit} | {labels} | {f.tier.value} | "
            f"{f.collector} | {_cell(f.source)} | {_cell(f.help)} |"
        )
    lines += ["", "## Departures from the metric contract (METRICS.md v1)", ""]
    for old, (new, why) in CONTRACT_RENAMES.items():
        lines.append(f"- `{old}` is `{new}`: {why}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
