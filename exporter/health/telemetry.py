"""Verdict reasons read from one GPU's telemetry: memory reliability, throttling, links.

State the hardware reports (a failed row remap, a recovery action) counts at once; behaviour
(throttling, a slow link, replays, new ECC errors) counts only over a window, so one sample
never moves the verdict. `GpuTracker` keeps the few windows one GPU needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..backends.base import Sample
from ..config import HealthSettings
from .verdict import Reason, Status
from .windows import BusyRun, CounterWindow, DutyWindow

# The HW reasons that slow a GPU down regardless of its workload (the SW power cap and SW
# thermal slowdown are the driver managing a busy GPU, which is normal). NVML sets hw_slowdown
# together with the thermal and power-brake bits, so it is named only when neither explains it.
THROTTLE_REASONS = {
    "hw_thermal_slowdown": "throttle_hw_thermal",
    "hw_power_brake_slowdown": "throttle_power_brake",
    "hw_slowdown": "throttle_hw_slowdown",
}

# NVML's recovery actions (nvmlDeviceGetGpuRecoveryAction): value -> (reason, severity).
RECOVERY_ACTIONS = {
    1: ("recovery_reset_gpu", Status.FAIL, "the driver asks for a GPU reset"),
    2: ("recovery_reboot_node", Status.FAIL, "the driver asks for a node reboot"),
    3: ("recovery_drain_p2p", Status.WARN, "the driver asks to drain peer-to-peer traffic"),
    4: ("recovery_drain_and_reset", Status.FAIL, "the driver asks to drain, then reset the GPU"),
}


@dataclass
class Latest:
    """The samples of one cycle, indexed the way the rules ask."""

    plain: dict[str, float] = field(default_factory=dict)  # families without labels
    by_label: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (family, k, v)
    samples: tuple[Sample, ...] = ()

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> Latest:
        out = cls(samples=tuple(samples))
        for s in out.samples:
            if not s.labels:
                out.plain[s.family] = s.value
            elif len(s.labels) == 1:
                (k, v), = s.labels
                out.by_label[(s.family, k, v)] = s.value
        return out

    def uncorrected_ecc(self) -> float | None:
        """Uncorrectable ECC errors, aggregate (lifetime) if the GPU reports it, else volatile."""
        found: dict[str, float] = {}
        for s in self.samples:
            if s.family == "gpu_ecc_errors_total":
                labels = dict(s.labels)
                if labels.get("type") == "uncorrected" and labels.get("location") == "total":
                    found[labels.get("scope", "")] = s.value
        return found.get("aggregate", found.get("volatile"))

    def nvlinks(self) -> dict[str, bool]:
        return {v: value == 1 for (fam, k, v), value in self.by_label.items()
                if fam == "gpu_nvlink_up" and k == "link"}


@dataclass
class GpuTracker:
    settings: HealthSettings
    throttle: dict[str, DutyWindow] = field(default_factory=dict)
    pcie: BusyRun = field(default_factory=BusyRun)
    replays: CounterWindow | None = None
    ecc: CounterWindow | None = None
    links_seen_up: set[str] = field(default_factory=set)

    def observe(self, t: float, latest: Latest) -> None:
        """One cycle's samples of an up GPU (monotonic time `t`)."""
        h = self.settings
        keep = max(h.throttle_window, h.throttle_fail_window)
        bits = {r: latest.by_label.get(("gpu_clock_event_active", "reason", r))
                for r in THROTTLE_REASONS}
        for reason, active in bits.items():
            if active is None:
                continue
            if reason == "hw_slowdown" and 1 in (bits["hw_thermal_slowdown"],
                                                 bits["hw_power_brake_slowdown"]):
                active = 0  # set together with one of them, which explains it: not counted
            counter = latest.by_label.get(("gpu_clock_event_seconds_total", "reason", reason))
            self.throttle.setdefault(reason, DutyWindow(keep)).add(t, active == 1, counter)
        util = latest.plain.get("gpu_utilization_ratio")
        below = _link_below_max(latest.plain)
        if util is not None and below is not None:
            self.pcie.add(t, util >= h.pcie_busy_utilization, below)
        if (replays := latest.plain.get("gpu_pcie_replay_total")) is not None:
            if self.replays is None:
                self.replays = CounterWindow(h.pcie_replay_window)
            self.replays.add(t, replays)
        if (ecc := latest.uncorrected_ecc()) is not None:
            if self.ecc is None:
                self.ecc = CounterWindow(h.ecc_window)
            self.ecc.add(t, ecc)
        self.links_seen_up |= {link for link, up in latest.nvlinks().items() if up}

    # --- reasons ------------------------------------------------------------------------------
    def state_reasons(self, latest: Latest, peer_links_up: set[str]) -> list[Reason]:
        """What the hardware reports right now."""
        p = latest.plain
        out = []
        if p.get("gpu_row_remap_failure") == 1:
            out.append(Reason("row_remap_failure", Status.FAIL,
                              "row remapping failed: a memory bank has no spare row (RMA)"))
        if p.get("gpu_row_remap_pending") == 1:
            out.append(Reason("row_remap_pending", Status.WARN,
                              "a row remap waits for the next GPU reset"))
        if p.get("gpu_sram_ecc_threshold_exceeded") == 1:
            out.append(Reason("sram_threshold_exceeded", Status.FAIL,
                              "SRAM ECC errors passed the RMA threshold"))
        if p.get("gpu_retired_pages_pending") == 1:
            out.append(Reason("retired_pages_pending", Status.WARN,
                              "a retired page waits for the next GPU reset"))
        action = p.get("gpu_recovery_action")
        if action is not None and int(action) in RECOVERY_ACTIONS:
            name, severity, detail = RECOVERY_ACTIONS[int(action)]
            out.append(Reason(name, severity, detail))
        # A link counts as down when it was up before, or another GPU of the model has it up:
        # links a board never trained (no bridge, unused ports) are not faults.
        down = sorted((link for link, up in latest.nvlinks().items()
                       if not up and (link in self.links_seen_up or link in peer_links_up)),
                      key=lambda x: int(x) if x.isdigit() else x)
        if down:
            out.append(Reason("nvlink_down", Status.FAIL,
                              f"NVLink link(s) {', '.join(down)} down"))
        return out

    def window_reasons(self, now: float, wall: float, contained_ecc: bool) -> list[Reason]:
        """Behaviour over the configured windows (`now` monotonic, `wall` unix time)."""
        h = self.settings
        out = []
        sustained = {}
        for reason, duty in self.throttle.items():
            long = duty.fraction(now, h.throttle_fail_window)
            short = duty.fraction(now, h.throttle_window)
            if long is not None and long >= h.throttle_min_fraction:
                sustained[reason] = (Status.FAIL, long, h.throttle_fail_window)
            elif short is not None and short >= h.throttle_min_fraction:
                sustained[reason] = (Status.WARN, short, h.throttle_window)
        if "hw_thermal_slowdown" in sustained or "hw_power_brake_slowdown" in sustained:
            sustained.pop("hw_slowdown", None)
        for reason, (severity, share, window) in sustained.items():
            out.append(Reason(THROTTLE_REASONS[reason], severity,
                              f"{reason} {share:.0%} of the last {_minutes(window)}"))
        window = max(h.pcie_downtrain_window, 1e-9)
        if self.pcie.seconds >= window:
            out.append(Reason("pcie_downtrained", Status.WARN,
                              f"PCIe link below its maximum while busy for "
                              f"{_minutes(self.pcie.seconds)}", _wall(self.pcie.since, now, wall)))
        if self.replays is not None:
            n, first = self.replays.increase(now, h.pcie_replay_window)
            rate = n / (h.pcie_replay_window / 60)
            if rate >= h.pcie_replay_rate:
                out.append(Reason("pcie_replay_rate", Status.WARN,
                                  f"{n:.0f} PCIe replays in {_minutes(h.pcie_replay_window)} "
                                  f"({rate:.1f}/min, limit {h.pcie_replay_rate:g}/min)",
                                  _wall(first, now, wall)))
        if self.ecc is not None:
            n, first = self.ecc.increase(now, h.ecc_window)
            if n > 0 and contained_ecc:
                out.append(Reason("ecc_uncorrectable_contained", Status.WARN,
                                  f"{n:.0f} new uncorrectable ECC error(s), contained (Xid 94): "
                                  "reset the GPU when convenient", _wall(first, now, wall)))
            elif n > 0:
                out.append(Reason("ecc_uncorrectable", Status.FAIL,
                                  f"{n:.0f} new uncorrectable ECC error(s) in the last "
                                  f"{_minutes(h.ecc_window)}", _wall(first, now, wall)))
        return out


def _link_below_max(p: dict[str, float]) -> bool | None:
    pairs = [(p.get("gpu_pcie_link_generation"), p.get("gpu_pcie_link_max_generation")),
             (p.get("gpu_pcie_link_width_lanes"), p.get("gpu_pcie_link_max_width_lanes"))]
    known = [(cur, top) for cur, top in pairs if cur is not None and top is not None and top > 0]
    if not known:
        return None
    return any(cur < top for cur, top in known)


def _wall(t: float | None, now: float, wall: float) -> float | None:
    """A monotonic instant as unix time."""
    return None if t is None else wall - (now - t)


def _minutes(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
