"""Verdict reasons from Xid and bus events, by the Xid catalog's action.

- reset_gpu, reboot_node: fail. Held for `health.xid_hold` after the last occurrence: the
  condition lasts until the reset or reboot, which the node's boot id (a reboot starts a new
  list of occurrences) or an operator's resume after a release for repairs settles.
- check_link: the catalog's severity (Xid 74 critical -> fail; NVLink5 144-150 -> warn).
- contact_support, unknown: warn, held the same way.
- restart_app (13, 31, 94, ...): nothing for one occurrence; when application Xids on one GPU
  come from `app_xid_processes` distinct processes within `app_xid_window`, the GPU escalates
  (the catalog: repeats on one GPU across applications point at hardware). Occurrences without
  a process id (vendor events) count as one process together: never noise from what we cannot
  tell apart.
- none (43, 63, ...): nothing. Xid 63 (row remapping event) matters only through the remap
  state the telemetry reports.
- Xid 79 and the kernel's "fallen off the bus" line are one reason, `fell_off_bus`.
- AMD: a driver-initiated GPU reset (`gpu_pre_reset` event) warns for `app_xid_window`: the GPU
  came back, but jobs on it died and the reset's cause (hang, RAS error) needs a look. VM faults
  count like application Xids (without a process id: one process).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..config import HealthSettings
from ..events.watcher import Occurrence
from ..events.xid_catalog import lookup
from .verdict import Reason, Status

HELD_ACTIONS = {"reset_gpu": Status.FAIL, "reboot_node": Status.FAIL,
                "contact_support": Status.WARN, "unknown": Status.WARN}
FELL_OFF_BUS_XID = 79
CONTAINED_XID, UNCONTAINED_XIDS = 94, frozenset({48, 95})


def event_reasons(occurrences: Iterable[Occurrence], wall: float,
                  h: HealthSettings) -> list[Reason]:
    """Reasons of one GPU from its occurrences (oldest first), at unix time `wall`."""
    out: list[Reason] = []
    occurrences = list(occurrences)
    held = [o for o in occurrences if o.when >= wall - h.xid_hold]
    # Its own window, not capped by the hold: application Xids are not held.
    app = [o for o in occurrences
           if ((o.event == "xid" and o.action == "restart_app") or o.event == "vm_fault")
           and o.when >= wall - h.app_xid_window]
    for o in held:
        if o.event == "fell_off_bus" or o.xid == FELL_OFF_BUS_XID:
            out.append(Reason("fell_off_bus", Status.FAIL, "the GPU fell off the bus",
                              o.when))
        elif o.event == "xid" and o.xid is not None:
            severity = _held_severity(o)
            if severity is not None:
                out.append(Reason(f"xid_{o.xid}", severity, _describe(o, held), o.when))
    resets = [o for o in occurrences if o.event == "gpu_pre_reset"
              and o.when >= wall - h.app_xid_window]
    if resets:
        out.append(Reason("gpu_reset", Status.WARN,
                          f"the driver reset the GPU {len(resets)} time(s) within "
                          f"{h.app_xid_window / 60:g} min", resets[-1].when))
    if reason := _recurring(app, h):
        out.append(reason)
    return out


def contained_ecc(occurrences: Iterable[Occurrence], since: float) -> bool:
    """True when the uncorrectable ECC errors since `since` came with a contained-error Xid
    (94) and no uncontained one: the GPU goes on, a reset is due when convenient."""
    codes = {o.xid for o in occurrences if o.event == "xid" and o.when >= since}
    return CONTAINED_XID in codes and not codes & UNCONTAINED_XIDS


def _held_severity(o: Occurrence) -> Status | None:
    if o.action in HELD_ACTIONS:
        return HELD_ACTIONS[o.action]
    if o.action == "check_link":
        return Status.FAIL if lookup(o.xid or 0).severity == "critical" else Status.WARN
    return None  # none, restart_app: not held


def _describe(o: Occurrence, held: list[Occurrence]) -> str:
    n = sum(1 for x in held if x.xid == o.xid)
    info = lookup(o.xid or 0)
    times = f" ({n} times)" if n > 1 else ""
    return f"Xid {o.xid} {info.description}{times}; action: {o.action.replace('_', ' ')}"


def _recurring(app: list[Occurrence], h: HealthSettings) -> Reason | None:
    processes = {o.pid for o in app}  # None (no process named) is one "process" at most
    if len(processes) < h.app_xid_processes:
        return None
    codes = Counter(f"Xid {o.xid}" if o.xid is not None else "VM fault" for o in app)
    listed = ", ".join(f"{x} x{n}" for x, n in sorted(codes.items()))
    return Reason("app_xid_recurring", Status.parse(h.app_xid_severity),
                  f"application Xids ({listed}) from {len(processes)} processes within "
                  f"{h.app_xid_window / 60:g} min: run the probes or field diagnostics",
                  app[0].when)
