"""The fields of the simulated GPUs: one reader per vendor call, and what each reports.

A reader turns (GPU, simulated time) into samples: telemetry from the GPU's model, counts and
states from the scenario's faults. Each field takes the tier and collector that its families have
in the catalog; a field whose families the GPU model lacks raises Unsupported, as NVML would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ...catalog import Tier
from ...catalog import family as catalog_family
from ..base import Device, Field, Sample, Unsupported, sample
from .node import GpuLayout, seeded_unit
from .profiles import GPM, GpuProfile
from .scenario import Scenario
from .telemetry import ALL_REASONS, Counters, GpuTelemetry

_NVLINK_ERROR_TYPES = ("crc_flit", "crc_data", "replay", "recovery")
_THRESHOLDS = ("slowdown", "shutdown", "max_operating", "memory_max")

Reader = Callable[["SimGpu", float], Iterable[Sample]]


@dataclass
class SimGpu:
    """One simulated GPU: who it is, its telemetry model, its counters and its hang state."""

    layout: GpuLayout
    telemetry: GpuTelemetry
    counters: Counters
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards counters
    hangs_started: set[int] = field(default_factory=set)  # ids of hang faults already used
    hang: threading.Event | None = None  # set while a read is blocked by a hang fault

    @property
    def index(self) -> int:
        return self.layout.index


class FieldTable:
    """Every field a simulated GPU offers; `enter` applies hang and lost faults to each read."""

    def __init__(
        self,
        profile: GpuProfile,
        scenario: Scenario,
        seed: int,
        gpus: Sequence[SimGpu],
        enter: Callable[[SimGpu], float],
    ) -> None:
        self.profile, self.scenario, self.seed = profile, scenario, seed
        self.gpus, self.enter = gpus, enter
        self.fields = self._build()

    def _field(self, name: str, read: Reader, *families: str, tier: Tier | None = None) -> Field:
        """A field in the tier and collector its families have in the catalog."""
        homes = {(catalog_family(f).tier, catalog_family(f).collector) for f in families}
        if len(homes) != 1:  # one field is one sampler call: it cannot span tiers or collectors
            raise ValueError(f"field {name}: families in different tiers/collectors: {homes}")
        home_tier, collector = next(iter(homes))
        supported = any(self.profile.has(f) for f in families)
        model = self.profile.key

        def read_field(device: Device) -> list[Sample]:
            gpu = self.gpus[device.index]
            t = self.enter(gpu)
            if not supported:  # what NVML answers as NotSupported: the sampler remembers it
                raise Unsupported(f"{name} is not supported on the simulated {model}")
            return [s for s in read(gpu, t) if self.profile.has(s.family)]

        return Field(name, tier or home_tier, collector, read_field)

    def _build(self) -> tuple[Field, ...]:
        f = self._field
        return (
            # identity: at start and on re-enumeration
            f("identity", self._identity, "gpu_info"),
            f("max_clocks", self._max_clocks, "gpu_clock_max_hertz"),
            f("pcie_max", self._pcie_max, "gpu_pcie_link_max_generation",
              "gpu_pcie_link_max_width_lanes"),
            f("numa_node", lambda g, t: [sample("gpu_numa_node", g.layout.numa_node)],
              "gpu_numa_node"),
            f("mig", self._mig, "gpu_mig_info"),
            # fast
            f("utilization", self._utilization, "gpu_performance_state", "gpu_utilization_ratio",
              "gpu_memory_activity_ratio", "gpu_encoder_utilization_ratio",
              "gpu_decoder_utilization_ratio"),
            f("processes", lambda g, t: [sample("gpu_processes",
                                                g.telemetry.reading(t).processes)],
              "gpu_processes"),
            f("gpm", self._gpm, *sorted(GPM)),
            f("memory_info", self._memory, "gpu_memory_total_bytes", "gpu_memory_used_bytes",
              "gpu_memory_free_bytes", "gpu_memory_reserved_bytes"),
            f("temperature", self._temperature, "gpu_temperature_celsius"),
            f("fans", lambda g, t: [], "gpu_fan_speed_ratio"),
            f("power", lambda g, t: [sample("gpu_power_watts",
                                            g.telemetry.reading(t).power_watts)],
              "gpu_power_watts"),
            f("clocks", self._clocks, "gpu_clock_hertz"),
            f("clock_events_mask", self._clock_events, "gpu_clock_event_active"),
            f("mig_memory", self._mig_memory, "gpu_mig_memory_used_bytes",
              "gpu_mig_memory_total_bytes"),
            # gpu_pod_info is DERIVED in the catalog (the daemon joins the kubelet's answer), but
            # the sampler reads only identity/fast/slow: the simulated allocation rides in fast.
            f("pods", self._pods, "gpu_pod_info", tier=Tier.FAST),
            f("pod_memory", self._pod_memory, "gpu_pod_memory_used_bytes"),
            # slow
            f("temperature_thresholds", self._thresholds, "gpu_temperature_threshold_celsius"),
            f("power_limits", self._power_limits, "gpu_power_limit_watts"),
            f("energy", self._energy, "gpu_energy_joules_total"),
            f("clock_event_counters", self._clock_event_counters,
              "gpu_clock_event_seconds_total"),
            f("violations", self._violations, "gpu_violation_seconds_total"),
            f("pcie_link", self._pcie_link, "gpu_pcie_link_generation",
              "gpu_pcie_link_width_lanes"),
            f("pcie_replay", self._pcie_replay, "gpu_pcie_replay_total"),
            f("nvlink_state", self._nvlink_state, "gpu_nvlink_up"),
            f("nvlink_errors", self._nvlink_errors, "gpu_nvlink_errors_total"),
            f("xgmi", self._xgmi, "gpu_xgmi_data_bytes_total"),
            f("ecc", self._ecc, "gpu_ecc_errors_total"),
            f("sram_ecc", self._sram_ecc, "gpu_sram_ecc_threshold_exceeded"),
            f("row_remap", self._row_remap, "gpu_remapped_rows_total", "gpu_row_remap_pending",
              "gpu_row_remap_failure"),
            f("row_remap_histogram", self._row_remap_banks, "gpu_row_remap_banks"),
            f("retired_pages", self._retired_pages, "gpu_retired_pages_total",
              "gpu_retired_pages_pending"),
            f("recovery_action", self._recovery_action, "gpu_recovery_action"),
            f("checklist", self._checklist, "gpu_persistence_mode_enabled",
              "gpu_ecc_mode_enabled", "gpu_mig_mode_enabled", "gpu_compute_mode",
              "gpu_applications_clocks_locked"),
        )

    # --- readers: (gpu, simulated time) -> samples ------------------------------------------
    def _identity(self, gpu: SimGpu, t: float) -> list[Sample]:
        p, layout = self.profile, gpu.layout
        return [sample("gpu_info", 1, vendor=p.vendor, model=p.name, pci_bus_id=layout.pci_bus_id,
                       serial=layout.serial, driver_version=p.driver_version,
                       vbios_version=p.vbios_version, cuda_version=p.cuda_version,
                       rocm_version=p.rocm_version,
                       compute_partition="SPX" if p.vendor == "amd" else "",
                       memory_partition="NPS1" if p.vendor == "amd" else "")]

    def _max_clocks(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_clock_max_hertz", mhz * 1e6, clock=domain)
                for domain, mhz in self.profile.clock_max_mhz.items()]

    def _pcie_max(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_pcie_link_max_generation", self.profile.pcie_max_generation),
                sample("gpu_pcie_link_max_width_lanes", self.profile.pcie_max_width)]

    def _mig(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_mig_info", 1, mig_uuid=m.uuid, gpu_instance=m.gpu_instance,
                       compute_instance=m.compute_instance, profile=m.profile)
                for m in gpu.layout.mig]

    def _utilization(self, gpu: SimGpu, t: float) -> list[Sample]:
        r = gpu.telemetry.reading(t)
        return [sample("gpu_performance_state", 0),  # P0: datacenter boards with persistence on
                sample("gpu_utilization_ratio", r.utilization),
                sample("gpu_memory_activity_ratio", r.memory_activity),
                sample("gpu_encoder_utilization_ratio", 0),
                sample("gpu_decoder_utilization_ratio", 0)]

    def _gpm(self, gpu: SimGpu, t: float) -> list[Sample]:
        g = gpu.telemetry.reading(t).gpm
        out = [sample(f"gpu_{name}_ratio", g[name])
               for name in ("sm_active", "sm_occupancy", "tensor_active", "dram_active")]
        out += [sample("gpu_pipe_active_ratio", g[f"pipe_{p}"], pipe=p)
                for p in ("fp64", "fp32", "fp16")]
        for link in ("pcie", "nvlink"):
            out += [sample(f"gpu_{link}_throughput_bytes_per_second", g[f"{link}_{d}"],
                           direction=d) for d in ("tx", "rx")]
        return out

    def _memory(self, gpu: SimGpu, t: float) -> list[Sample]:
        p = self.profile
        used = gpu.telemetry.reading(t).memory_used_bytes
        return [sample("gpu_memory_total_bytes", p.memory_total_bytes),
                sample("gpu_memory_used_bytes", used),
                sample("gpu_memory_free_bytes",
                       p.memory_total_bytes - p.memory_reserved_bytes - used),
                sample("gpu_memory_reserved_bytes", p.memory_reserved_bytes)]

    def _temperature(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_temperature_celsius", c, sensor=s)
                for s, c in gpu.telemetry.temperatures(t).items()]

    def _clocks(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_clock_hertz", mhz * 1e6, clock=domain)
                for domain, mhz in gpu.telemetry.reading(t).clocks_mhz.items()]

    def _clock_events(self, gpu: SimGpu, t: float) -> list[Sample]:
        mask = gpu.telemetry.reading(t).reasons
        return [sample("gpu_clock_event_active", int(r in mask), reason=r) for r in ALL_REASONS]

    def _mig_memory(self, gpu: SimGpu, t: float) -> list[Sample]:
        mig = gpu.layout.mig
        used = gpu.telemetry.reading(t).memory_used_bytes // max(1, len(mig))
        out = []
        for m in mig:
            out += [sample("gpu_mig_memory_used_bytes", used, mig_uuid=m.uuid),
                    sample("gpu_mig_memory_total_bytes", m.memory_total_bytes, mig_uuid=m.uuid)]
        return out

    def _pods(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_pod_info", 1, mig_uuid=a.mig_uuid, namespace=a.namespace, pod=a.pod,
                       container=a.container) for a in gpu.layout.pods]

    def _pod_memory(self, gpu: SimGpu, t: float) -> list[Sample]:
        r = gpu.telemetry.reading(t)
        holders = gpu.layout.pods[:r.processes]  # a pod with no process holds no memory
        return [sample("gpu_pod_memory_used_bytes", r.memory_used_bytes // len(holders),
                       namespace=a.namespace, pod=a.pod, container=a.container)
                for a in holders]

    def _thresholds(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_temperature_threshold_celsius", self.profile.thresholds_c[name],
                       threshold=name) for name in _THRESHOLDS]

    def _power_limits(self, gpu: SimGpu, t: float) -> list[Sample]:
        limit = self.profile.power_limit_watts
        return [sample("gpu_power_limit_watts", limit, limit=kind)
                for kind in ("enforced", "default")]

    def _advance(self, gpu: SimGpu, t: float) -> Counters:
        with gpu.lock:
            gpu.counters.advance(gpu.telemetry, t)
            return gpu.counters

    def _energy(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_energy_joules_total", round(self._advance(gpu, t).energy_joules, 3))]

    def _clock_event_counters(self, gpu: SimGpu, t: float) -> list[Sample]:
        seconds = self._advance(gpu, t).event_seconds
        return [sample("gpu_clock_event_seconds_total", round(s, 3), reason=r)
                for r, s in seconds.items()]

    def _violations(self, gpu: SimGpu, t: float) -> list[Sample]:
        seconds = self._advance(gpu, t).violation_seconds
        return [sample("gpu_violation_seconds_total", round(s, 3), policy=p)
                for p, s in seconds.items()]

    def _pcie_link(self, gpu: SimGpu, t: float) -> list[Sample]:
        generation = gpu.telemetry.reading(t).pcie_generation
        width = self.profile.pcie_max_width
        for fault in self.scenario.active(gpu.index, "pcie_downtrain", t):
            generation = min(generation, fault.generation or generation)
            width = min(width, fault.width or width)
        return [sample("gpu_pcie_link_generation", generation),
                sample("gpu_pcie_link_width_lanes", width)]

    def _pcie_replay(self, gpu: SimGpu, t: float) -> list[Sample]:
        base = int(4 * seeded_unit(self.seed, gpu.index, "replays"))  # a few, from manufacturing
        injected = sum(f.count for f in self.scenario.instant_events(gpu.index, "pcie_replays", t))
        return [sample("gpu_pcie_replay_total", base + injected)]

    def _nvlink_state(self, gpu: SimGpu, t: float) -> list[Sample]:
        down = {f.link for f in self.scenario.active(gpu.index, "nvlink_down", t)}
        return [sample("gpu_nvlink_up", int(link not in down), link=link)
                for link in range(self.profile.nvlink_links)]

    def _xgmi(self, gpu: SimGpu, t: float) -> list[Sample]:
        """Peer traffic grows with the work done, which the energy counter already integrates:
        monotonic, deterministic, and busier GPUs move more (about 20 MB per joule)."""
        energy = self._advance(gpu, t).energy_joules
        return [sample("gpu_xgmi_data_bytes_total", round(energy * 2e7 * share * (1 + link / 50)),
                       link=link, direction=direction)
                for link in range(self.profile.xgmi_links)
                for direction, share in (("read", 1.0), ("write", 0.8))]

    def _nvlink_errors(self, gpu: SimGpu, t: float) -> list[Sample]:
        counts = dict.fromkeys(
            ((link, kind) for link in range(self.profile.nvlink_links)
             for kind in _NVLINK_ERROR_TYPES), 0)
        for fault in self.scenario.instant_events(gpu.index, "nvlink_errors", t):
            counts[(fault.link, fault.type)] += fault.count
        return [sample("gpu_nvlink_errors_total", n, link=link, type=kind)
                for (link, kind), n in counts.items()]

    def _ecc(self, gpu: SimGpu, t: float) -> list[Sample]:
        p = self.profile
        # Lifetime corrected DRAM errors a healthy board collects; never uncorrected ones.
        lifetime = int(30 * seeded_unit(self.seed, gpu.index, "ecc") ** 3)
        counts = {(kind, where): 0 for kind in p.ecc_types for where in ("dram", "sram")}
        for kind, fault_kind in (("corrected", "ecc_corrected"),
                                 ("uncorrected", "ecc_uncorrectable")):
            for fault in self.scenario.instant_events(gpu.index, fault_kind, t):
                counts[(kind, fault.location)] += fault.count
        out = []
        for kind in p.ecc_types:
            for scope in p.ecc_scopes:
                for location in p.ecc_locations:
                    out.append(sample("gpu_ecc_errors_total",
                                      self._ecc_count(counts, kind, scope, location, lifetime),
                                      type=kind, scope=scope, location=location))
        return out

    def _ecc_count(self, counts: dict[tuple[str, str], int], kind: str, scope: str,
                   location: str, lifetime: int) -> int:
        # NVIDIA: total = dram + sram. AMD RAS blocks: HBM errors land in umc, SRAM ones in gfx.
        where = {"total": ("dram", "sram"), "dram": ("dram",), "sram": ("sram",),
                 "umc": ("dram",), "gfx": ("sram",)}.get(location, ())
        n = sum(counts.get((kind, w), 0) for w in where)
        if scope == "aggregate" and kind == "corrected" and "dram" in where:
            n += lifetime
        return n

    def _sram_ecc(self, gpu: SimGpu, t: float) -> list[Sample]:
        exceeded = bool(self.scenario.active(gpu.index, "sram_threshold", t))
        return [sample("gpu_sram_ecc_threshold_exceeded", int(exceeded))]

    def _remaps(self, gpu: SimGpu, t: float) -> tuple[int, bool, bool]:
        """(rows remapped so far, a remap pending, a remap failed) from the scenario."""
        rows = len(self.scenario.instant_events(gpu.index, "row_remap_pending", t))
        pending = bool(self.scenario.active(gpu.index, "row_remap_pending", t))
        failed = bool(self.scenario.active(gpu.index, "row_remap_failure", t))
        return rows, pending, failed

    def _row_remap(self, gpu: SimGpu, t: float) -> list[Sample]:
        rows, pending, failed = self._remaps(gpu, t)
        return [sample("gpu_remapped_rows_total", 0, cause="correctable"),
                sample("gpu_remapped_rows_total", rows, cause="uncorrectable"),
                sample("gpu_row_remap_pending", int(pending)),
                sample("gpu_row_remap_failure", int(failed))]

    def _row_remap_banks(self, gpu: SimGpu, t: float) -> list[Sample]:
        rows, _, failed = self._remaps(gpu, t)
        banks = self.profile.row_remap_banks
        # Each remap uses a spare row of a bank (max -> high); a failure means a bank ran out.
        high, none = min(rows, banks), int(failed)
        classes = {"max": banks - high - none, "high": high, "partial": 0, "low": 0, "none": none}
        return [sample("gpu_row_remap_banks", n, availability=a) for a, n in classes.items()]

    def _retired_pages(self, gpu: SimGpu, t: float) -> list[Sample]:
        # AMD retires bad pages where NVIDIA remaps rows: the same faults drive both.
        rows, pending, _ = self._remaps(gpu, t)
        return [sample("gpu_retired_pages_total", 0, cause="single_bit"),
                sample("gpu_retired_pages_total", rows, cause="double_bit"),
                sample("gpu_retired_pages_pending", int(pending))]

    def _recovery_action(self, gpu: SimGpu, t: float) -> list[Sample]:
        active = self.scenario.active(gpu.index, "recovery_action", t)
        return [sample("gpu_recovery_action", active[-1].action if active else 0)]

    def _checklist(self, gpu: SimGpu, t: float) -> list[Sample]:
        return [sample("gpu_persistence_mode_enabled", 1),
                sample("gpu_ecc_mode_enabled", 1),
                sample("gpu_mig_mode_enabled", int(bool(gpu.layout.mig))),
                sample("gpu_compute_mode", 0),
                sample("gpu_applications_clocks_locked", 0)]
