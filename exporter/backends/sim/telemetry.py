"""Plausible, repeatable telemetry of one simulated GPU, as a function of simulated time.

Instantaneous values are pure functions of (seed, GPU index, t, conditions): the workload is
seeded value noise (smooth bursts of an LLM server), power follows the load, temperature follows
power with a lag, clocks sit at their maximum under load and drop when a power cap or a fault
holds them down. Cumulative counters (energy, clock-event and violation seconds) integrate those
functions between reads, so they are monotonic and identical for the same sequence of read times.

Time never comes from the wall clock here: the backend passes `t`, taken from its injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .node import GpuLayout, Role, seeded_unit
from .profiles import GpuProfile

# Clock-event reasons with an NVML cumulative counter (there is none for generic hw_slowdown).
COUNTED_REASONS = ("sw_power_cap", "sync_boost", "sw_thermal_slowdown", "hw_thermal_slowdown",
                   "hw_power_brake_slowdown")
ALL_REASONS = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown",
               "sync_boost", "sw_thermal_slowdown", "hw_thermal_slowdown",
               "hw_power_brake_slowdown", "display_clock_setting")
POLICIES = ("power", "thermal", "sync_boost", "board_limit", "low_utilization", "reliability",
            "total_app_clocks", "total_base_clocks")
_POLICY_OF = {
    "sw_power_cap": "power", "sw_thermal_slowdown": "thermal", "hw_thermal_slowdown": "thermal",
    "hw_power_brake_slowdown": "board_limit", "hw_slowdown": "board_limit",
    "sync_boost": "sync_boost", "gpu_idle": "low_utilization",
}
_HW = frozenset({"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})
# How far each reason holds the SM clock below its maximum: HW slowdown at least halves it.
_CLOCK_FACTOR = {"sw_power_cap": 0.9, "sw_thermal_slowdown": 0.8, "hw_slowdown": 0.45,
                 "hw_thermal_slowdown": 0.45, "hw_power_brake_slowdown": 0.45}
_POWER_FACTOR = {"sw_thermal_slowdown": 0.85, "hw_slowdown": 0.55, "hw_thermal_slowdown": 0.55,
                 "hw_power_brake_slowdown": 0.4}
# Above this demand (fraction of what the limit allows) the driver caps power: sw_power_cap.
_CAP_DEMAND = 0.97
# Temperature follows power through an exponential lag of this time constant (seconds).
_THERMAL_TAU = 45.0
_LAG = tuple((s, math.exp(-s / _THERMAL_TAU)) for s in range(0, 120, 10))  # (seconds ago, weight)
_MAX_SUBSTEP = 1.0  # counters integrate with at most this step (seconds)...
_MAX_SUBSTEPS = 120  # ...and at most this many steps per read, so a long gap stays cheap


@dataclass(frozen=True)
class Conditions:
    """What the scenario imposes on the GPU at one instant."""

    busy: bool = False  # a customer job: high load, a process, memory in use
    reasons: frozenset[str] = frozenset()  # clock-event reasons forced by faults


@dataclass(frozen=True)
class Reading:
    """Instantaneous telemetry, rounded the way the vendor library reports it."""

    utilization: float
    memory_activity: float
    processes: int
    memory_used_bytes: int
    power_watts: float
    clocks_mhz: dict[str, float]
    reasons: frozenset[str]  # the sampled clock-event mask
    pcie_generation: int
    gpm: dict[str, float]  # sm_active, sm_occupancy, tensor_active, dram_active, pipe_*, *_tx/rx


class GpuTelemetry:
    """The model of one GPU. `conditions(t)` says what faults impose at t."""

    def __init__(
        self,
        profile: GpuProfile,
        layout: GpuLayout,
        seed: int,
        conditions: Callable[[float], Conditions] = lambda t: Conditions(),
    ) -> None:
        self.profile, self.layout, self.conditions = profile, layout, conditions
        key = (seed, layout.index)
        self._key = key
        self._last_reading: tuple[float, Reading] | None = None
        lo, hi = profile.power_idle_watts
        self.idle_watts = lo + (hi - lo) * seeded_unit(*key, "idle_watts")
        self.period = 20.0 + 25.0 * seeded_unit(*key, "period")  # seconds between load swings
        self.phase = 1000.0 * seeded_unit(*key, "phase")
        self.temp_offset = -2.0 + 5.0 * seeded_unit(*key, "temp_offset")

    # --- the workload ---------------------------------------------------------------------
    def _noise(self, name: str, t: float, period: float) -> float:
        """Smooth value noise in [0, 1]: seeded knots every `period`, eased in between."""
        x = (t + self.phase) / period
        k = math.floor(x)
        f = x - k
        a, b = seeded_unit(*self._key, name, k), seeded_unit(*self._key, name, k + 1)
        return a + (b - a) * f * f * (3 - 2 * f)

    def _load(self, t: float, busy: bool) -> float:
        """Utilization in [0, 1] before rounding."""
        if busy:
            return 0.9 + 0.08 * self._noise("busy", t, 15.0)
        if self.layout.role is Role.IDLE:
            return 0.0
        raw = 0.75 * self._noise("load", t, self.period) + 0.25 * self._noise(
            "ripple", t, self.period / 5)
        shape = min(1.0, max(0.0, 0.5 + 1.6 * (raw - 0.5)))  # more contrast: real bursts
        return 0.3 + 0.68 * shape**0.7  # between ~30% and ~98%, mostly in the upper half

    def instant(self, t: float) -> tuple[float, float, frozenset[str]]:
        """(utilization, watts, clock-event reasons) at t: what counters integrate."""
        cond = self.conditions(t)
        util = self._load(t, cond.busy)
        limit = self.profile.power_limit_watts
        demand = util * 1.06
        reasons = set(cond.reasons)
        if util < 0.01 and not cond.busy:
            reasons.add("gpu_idle")
        if demand >= _CAP_DEMAND:
            reasons.add("sw_power_cap")
        watts = self.idle_watts + (limit - self.idle_watts) * min(demand, 1.0) ** 1.2
        watts += 3.0 * (self._noise("idle", t, 7.0) - 0.5)  # sensor noise, even at idle
        if "sw_power_cap" in reasons and util >= 0.01:
            watts = limit * (0.975 + 0.02 * self._noise("cap", t, 3.0))
        for reason in sorted(reasons):  # a set's order varies by process; floats must not
            watts = self.idle_watts + (watts - self.idle_watts) * _POWER_FACTOR.get(reason, 1.0)
        return util, watts, frozenset(reasons)

    # --- instantaneous readings ---------------------------------------------------------------
    def reading(self, t: float) -> Reading:
        """The GPU's state at t. A cycle reads a dozen fields within a millisecond: they share
        one reading per 10 ms instant (a real GPU's sensors update no faster)."""
        instant = round(t, 2)
        last = self._last_reading
        if last is not None and last[0] == instant:
            return last[1]
        value = self._reading(instant)
        self._last_reading = (instant, value)
        return value

    def _reading(self, t: float) -> Reading:
        p, layout = self.profile, self.layout
        cond = self.conditions(t)
        util, watts, reasons = self.instant(t)
        working = util >= 0.01

        # The sampled mask: HW thermal and power-brake slowdowns are subsets of HW slowdown.
        mask = reasons | ({"hw_slowdown"} if reasons & _HW else set())
        factor = min((_CLOCK_FACTOR.get(r, 1.0) for r in reasons), default=1.0)
        clocks: dict[str, float] = {}
        for domain, top in p.clock_max_mhz.items():
            if domain == "memory":
                clocks[domain] = top if working else p.clock_idle_mhz[domain]
            elif working:
                clocks[domain] = round(top * factor) if domain in ("graphics", "sm") else top
            else:
                clocks[domain] = p.clock_idle_mhz[domain]

        memory = layout.memory_used_bytes
        if cond.busy:
            memory = max(memory, int(p.memory_total_bytes * 0.55))
        if memory:
            wobble = (self._noise("memory", t, 90.0) - 0.5) * 384 * 1024 * 1024
            memory = int(min(memory + wobble, p.memory_total_bytes - p.memory_reserved_bytes))

        mem_activity = util * (0.45 + 0.25 * self._noise("dram", t, self.period / 2))
        sm_active = util * 0.82
        gpm = {
            "sm_active": sm_active,
            "sm_occupancy": sm_active * 0.4,
            "tensor_active": util * (0.35 + 0.2 * self._noise("tensor", t, self.period / 3)),
            "dram_active": min(1.0, mem_activity * 1.1),
            "pipe_fp64": 0.0,
            "pipe_fp32": util * 0.12,
            "pipe_fp16": util * 0.08,
            "pcie_rx": 2e5 + util * 180e6,
            "pcie_tx": 1e5 + util * 60e6,
            "nvlink_rx": util * 1.5e9,
            "nvlink_tx": util * 1.5e9,
        }
        return Reading(
            utilization=round(util, 2),
            memory_activity=round(mem_activity, 2),
            processes=max(layout.processes, 1) if cond.busy else layout.processes,
            memory_used_bytes=memory,
            power_watts=round(watts, 3),
            clocks_mhz=clocks,
            reasons=frozenset(mask),
            pcie_generation=p.pcie_max_generation if working else p.pcie_idle_generation,
            gpm={k: round(v, 4) for k, v in gpm.items()},
        )

    def temperatures(self, t: float) -> dict[str, float]:
        """Degrees Celsius by sensor: lagging power, pinned high during a thermal slowdown."""
        p = self.profile
        reasons = self.conditions(t).reasons
        # Heat follows power: a weighted look back over the last two minutes.
        lagged = sum(w * self.instant(t - s)[1] for s, w in _LAG) / sum(w for _, w in _LAG)
        heat = (lagged - self.idle_watts) / (p.power_limit_watts - self.idle_watts)
        heat = min(1.0, max(0.0, heat))
        out = {}
        for sensor in p.temperature_sensors:
            lo, hi = p.temperature_range_c[sensor]
            temp = lo + (hi - lo) * heat + self.temp_offset
            if sensor in ("gpu", "hotspot"):
                # A thermal slowdown means the die reached the threshold that triggers it.
                if "hw_thermal_slowdown" in reasons:
                    temp = max(temp, p.thresholds_c["slowdown"] + 1)
                elif "sw_thermal_slowdown" in reasons:
                    temp = max(temp, p.thresholds_c["max_operating"] + 1)
            out[sensor] = float(round(temp))
        return out


@dataclass
class Counters:
    """Cumulative counters of one GPU since its (simulated) driver load."""

    t: float  # simulated time they were last advanced to
    energy_joules: float
    event_seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(COUNTED_REASONS, 0.0))
    violation_seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(POLICIES, 0.0))

    @classmethod
    def since_driver_load(cls, telemetry: GpuTelemetry, seed: int, t: float) -> Counters:
        # The driver loaded days ago; energy has been counting since, at the GPU's mean draw.
        key = (seed, telemetry.layout.index)
        uptime = 86400.0 * (2 + 28 * seeded_unit(*key, "uptime"))
        p = telemetry.profile
        mean = telemetry.idle_watts
        if telemetry.layout.role is Role.SERVING:
            mean += 0.6 * (p.power_limit_watts - telemetry.idle_watts)
        return cls(t=t, energy_joules=round(uptime * mean))

    def advance(self, telemetry: GpuTelemetry, t: float) -> None:
        """Integrate power and clock events from the last read to t (midpoint rule)."""
        span = t - self.t
        if span <= 0:
            return
        steps = min(_MAX_SUBSTEPS, math.ceil(span / _MAX_SUBSTEP))
        dt = span / steps
        for i in range(steps):
            _, watts, reasons = telemetry.instant(self.t + (i + 0.5) * dt)
            self.energy_joules += watts * dt
            for reason in reasons:
                if reason in self.event_seconds:
                    self.event_seconds[reason] += dt
            for policy in _policies(reasons):
                self.violation_seconds[policy] += dt
        self.t = t


def _policies(reasons: frozenset[str]) -> set[str]:
    """Violation policies that hold the clocks down while these reasons are active."""
    policies = {_POLICY_OF[r] for r in reasons if r in _POLICY_OF}
    if reasons - {"gpu_idle"}:
        policies.add("total_app_clocks")
    if reasons & _HW:
        policies.add("total_base_clocks")
    return policies
