"""NVIDIA's Xid catalog as data: what an Xid code means and what an operator should do about it.

`gpu_xid_errors_total{gpu,uuid,xid,action}` carries `action` so that an alert can route on it
(reset the GPU, reboot the node, fix the application) without a lookup table of its own. The
table lives in `xid_catalog.yaml` beside this module; its header names the NVIDIA source, the
revision we transcribed, its terms, and how NVIDIA's "Resolution Bucket" vocabulary maps to ours.

The file is checked when it is first loaded, not when an Xid arrives: a bad entry is a packaging
bug, and failing at start (ValueError) beats mislabelling a live event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import yaml

ACTIONS: Final = frozenset(
    {"none", "restart_app", "reset_gpu", "reboot_node", "check_link", "contact_support", "unknown"}
)
CAUSES: Final = frozenset(
    {"application", "hardware", "driver", "sympathetic", "thermal", "power", "unknown"}
)
SEVERITIES: Final = frozenset({"info", "warning", "critical"})

# A bucket the map cannot turn into one action; each entry using it says why in its `note`.
_PER_ENTRY: Final = "per_entry"
_FIELDS: Final = frozenset(
    {"name", "description", "nvidia_action", "nvidia_investigatory", "action", "cause",
     "severity", "note"}
)

# Xid 154's message names the recovery action the driver now requires, in NVML's words
# (NVML_GPU_RECOVERY_ACTION_*): "GPU recovery action changed from 0x0 (None) to 0x2 (Node
# Reboot Required)". "Drain P2P" asks to stop the processes doing peer-to-peer traffic, which
# is a restart of applications, not of the GPU.
_RECOVERY_ACTIONS: Final = MappingProxyType({
    "none": "none",
    "drain p2p": "restart_app",
    "drain and reset": "reset_gpu",
    "gpu reset required": "reset_gpu",
    "node reboot required": "reboot_node",
})
_XID154_TO = re.compile(r"\bto\s+0x[0-9a-fA-F]+\s*\(([^)]*)\)")


@dataclass(frozen=True, slots=True)
class XidInfo:
    """One catalog row. `known` is False for codes the catalog does not list."""

    code: int
    name: str
    description: str
    cause: str
    action: str
    severity: str
    nvidia_action: str | None = None
    nvidia_investigatory: str | None = None
    note: str = ""
    known: bool = True


def _unknown(code: int) -> XidInfo:
    # A code NVIDIA has not catalogued (a newer driver, or garbage): someone should look, but
    # nothing says the GPU is unusable, hence warning rather than critical.
    return XidInfo(
        code=code,
        name=f"XID_{code}",
        description="not in the NVIDIA Xid catalog this exporter ships",
        cause="unknown",
        action="unknown",
        severity="warning",
        known=False,
    )


def _entry(code: Any, raw: Any, action_map: Mapping[Any, str]) -> XidInfo:
    where = f"xid {code!r}"
    if isinstance(code, bool) or not isinstance(code, int) or code < 0:
        raise ValueError(f"{where}: the key must be a non-negative integer")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a mapping")
    extra = set(raw) - _FIELDS
    if extra:
        raise ValueError(f"{where}: unknown field(s) {sorted(extra)}")
    for field in ("name", "description", "action", "cause", "severity"):
        if not isinstance(raw.get(field), str) or not raw[field]:
            raise ValueError(f"{where}: `{field}` must be a non-empty string")
    info = XidInfo(
        code=code,
        name=raw["name"],
        description=raw["description"],
        cause=raw["cause"],
        action=raw["action"],
        severity=raw["severity"],
        nvidia_action=raw.get("nvidia_action"),
        nvidia_investigatory=raw.get("nvidia_investigatory"),
        note=raw.get("note") or "",
    )
    if info.action not in ACTIONS:
        raise ValueError(f"{where}: action {info.action!r} is not one of {sorted(ACTIONS)}")
    if info.cause not in CAUSES:
        raise ValueError(f"{where}: cause {info.cause!r} is not one of {sorted(CAUSES)}")
    if info.severity not in SEVERITIES:
        raise ValueError(f"{where}: severity {info.severity!r} is not one of {sorted(SEVERITIES)}")
    if info.nvidia_action not in action_map:
        raise ValueError(f"{where}: NVIDIA bucket {info.nvidia_action!r} is not in the map")
    mapped = action_map[info.nvidia_action]
    # The map is the documented contract between NVIDIA's words and ours; an entry may only
    # leave it where the bucket is conditional, and then it must say why.
    if mapped == _PER_ENTRY:
        if not info.note:
            raise ValueError(f"{where}: bucket {info.nvidia_action!r} needs a `note`")
    elif mapped != info.action:
        raise ValueError(
            f"{where}: {info.nvidia_action} maps to {mapped!r}, the entry says {info.action!r}"
        )
    return info


def parse_catalog(document: Any) -> dict[int, XidInfo]:
    """Validate a loaded catalog document and return code -> XidInfo (ValueError if bad)."""
    if not isinstance(document, dict):
        raise ValueError("the Xid catalog must be a mapping")
    action_map = document.get("nvidia_action_map")
    xids = document.get("xids")
    if not isinstance(action_map, dict) or not isinstance(xids, dict) or not xids:
        raise ValueError("the Xid catalog needs `nvidia_action_map` and a non-empty `xids`")
    for bucket, action in action_map.items():
        if action != _PER_ENTRY and action not in ACTIONS:
            raise ValueError(f"nvidia_action_map: {bucket!r} maps to unknown action {action!r}")
    return {code: _entry(code, raw, action_map) for code, raw in xids.items()}


@lru_cache(maxsize=1)
def catalog() -> Mapping[int, XidInfo]:
    """Every catalogued code, read once from the packaged YAML."""
    text = resources.files(__package__).joinpath("xid_catalog.yaml").read_text(encoding="utf-8")
    return MappingProxyType(parse_catalog(yaml.safe_load(text)))


def lookup(code: int) -> XidInfo:
    """The catalog row for `code`, or an `unknown` row (action and cause "unknown")."""
    return catalog().get(code) or _unknown(code)


def recovery_action_154(message: str) -> str | None:
    """Our action for the recovery action an Xid 154 message announces, None if unreadable."""
    match = _XID154_TO.search(message or "")
    if match is None:
        return None
    return _RECOVERY_ACTIONS.get(" ".join(match.group(1).split()).lower())


def resolve_action(code: int, message: str = "") -> str:
    """The `action` label for one event: the catalog's, except where the message carries it.

    Xid 154 is the one code whose action is in the line itself; any other code, or a 154 whose
    message cannot be read, gets the catalog action (unknown codes: "unknown").
    """
    if code == 154:
        action = recovery_action_154(message)
        if action is not None:
            return action
    return lookup(code).action
