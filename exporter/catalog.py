"""The metric catalog: every family the exporter can emit, in one place.

This is the code form of the metric contract (METRICS.md). The renderer emits families in this
order and refuses samples of families or labels that are not here; `docs/metrics.md` is generated
from it (`python -m exporter.docgen`), and tests fail when the doc, the dashboards or the alerts
drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class Tier(str, Enum):
    """When a family's value is produced. Backends read `fast`, `slow` and `identity`."""

    FAST = "fast"  # every few seconds, cheap vendor calls
    SLOW = "slow"  # every 30-60 s, calls that cost milliseconds
    IDENTITY = "identity"  # at start and on re-enumeration
    EVENT = "event"  # kernel log and vendor events
    PROBE = "probe"  # active probes in a child process
    DERIVED = "derived"  # computed by the daemon (state, verdict, configuration)


# Labels every per-GPU series carries, before the family's own labels.
GPU_LABELS: tuple[str, ...] = ("gpu", "uuid")


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    tier: Tier
    collector: str
    source: str
    per_gpu: bool = True

    @property
    def unit(self) -> str:
        """The OpenMetrics unit: the base-unit suffix of the name, if it has one."""
        base = self.name.removesuffix("_total")
        for unit in _UNITS:
            if base.endswith("_" + unit):
                return unit
        return ""

    @property
    def all_labels(self) -> tuple[str, ...]:
        return (GPU_LABELS + self.labels) if self.per_gpu else self.labels


_UNITS = (
    "bytes_per_second",
    "flop_per_second",
    "bytes",
    "watts",
    "celsius",
    "hertz",
    "seconds",
    "joules",
    "ratio",
    "dollars",
    "lanes",
)

G, C, H = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM
FAST, SLOW, IDENT, EVENT, PROBE, DERIVED = (
    Tier.FAST,
    Tier.SLOW,
    Tier.IDENTITY,
    Tier.EVENT,
    Tier.PROBE,
    Tier.DERIVED,
)


def _f(name: str, kind: Kind, labels: str, tier: Tier, collector: str, source: str, help: str,
       per_gpu: bool = True) -> Family:
    return Family(name, kind, help, tuple(labels.split()) if labels else (), tier, collector,
                  source, per_gpu)


FAMILIES: tuple[Family, ...] = (
    # Identity and state
    _f("gpu_info", G, "vendor model pci_bus_id serial driver_version vbios_version cuda_version "
       "rocm_version compute_partition memory_partition", IDENT, "identity",
       "nvmlDeviceGetName/Serial/PciInfo/VbiosVersion, "
       "nvmlSystemGetDriverVersion, nvmlSystemGetCudaDriverVersion",
       "Descriptive attributes of a GPU; value is always 1."),
    _f("gpu_up", G, "", DERIVED, "exporter", "last cycle of this GPU succeeded",
       "1 when the last collection cycle of this GPU succeeded, 0 when it could not be read."),
    _f("gpu_performance_state", G, "", FAST, "utilization", "nvmlDeviceGetPerformanceState",
       "Performance state number (0 = maximum performance, 15 = minimum)."),
    _f("gpu_processes", G, "", FAST, "utilization", "nvmlDeviceGetComputeRunningProcesses",
       "Compute processes running on the GPU."),
    _f("gpu_hourly_price_dollars", G, "", DERIVED, "cost", "configuration (cost.gpu_hourly_price)",
       "Configured hourly price of the GPU in dollars, for cost panels."),
    # Utilization
    _f("gpu_utilization_ratio", G, "", FAST, "utilization", "nvmlDeviceGetUtilizationRates.gpu",
       "Fraction of the sample period during which one or more kernels ran (nvidia-smi GPU-Util)."),
    _f("gpu_memory_activity_ratio", G, "", FAST, "utilization",
       "nvmlDeviceGetUtilizationRates.memory",
       "Fraction of the sample period during which device memory was read or written."),
    _f("gpu_encoder_utilization_ratio", G, "", FAST, "utilization",
       "nvmlDeviceGetEncoderUtilization", "Video encoder utilization."),
    _f("gpu_decoder_utilization_ratio", G, "", FAST, "utilization",
       "nvmlDeviceGetDecoderUtilization", "Video decoder utilization."),
    _f("gpu_sm_active_ratio", G, "", FAST, "profiling", "GPM SM_ACTIVITY",
       "Fraction of time at least one warp was resident on an SM, averaged over SMs."),
    _f("gpu_sm_occupancy_ratio", G, "", FAST, "profiling", "GPM SM_OCCUPANCY",
       "Resident warps as a fraction of the maximum, averaged over SMs."),
    _f("gpu_tensor_active_ratio", G, "", FAST, "profiling", "GPM ANY_TENSOR_UTIL",
       "Fraction of cycles the tensor pipes were active."),
    _f("gpu_dram_active_ratio", G, "", FAST, "profiling", "GPM DRAM_BW_UTIL",
       "Fraction of peak device memory bandwidth used."),
    _f("gpu_pipe_active_ratio", G, "pipe", FAST, "profiling", "GPM FP64/FP32/FP16_UTIL",
       "Fraction of cycles a floating-point pipe was active."),
    _f("gpu_pcie_throughput_bytes_per_second", G, "direction", FAST, "profiling",
       "GPM PCIE_TX/RX_PER_SEC", "PCIe traffic of the GPU."),
    _f("gpu_xgmi_data_bytes_total", C, "link direction", SLOW, "xgmi",
       "amdsmi gpu_metrics xgmi_read_data_acc / xgmi_write_data_acc",
       "Data moved over an XGMI link (AMD), since the driver loaded."),
    _f("gpu_nvlink_throughput_bytes_per_second", G, "direction", FAST, "profiling",
       "GPM NVLINK_TOTAL_TX/RX_PER_SEC", "NVLink traffic of the GPU, all links."),
    # Memory
    _f("gpu_memory_total_bytes", G, "", FAST, "memory", "nvmlDeviceGetMemoryInfo(v2).total",
       "Device memory in total."),
    _f("gpu_memory_used_bytes", G, "", FAST, "memory", "nvmlDeviceGetMemoryInfo(v2).used",
       "Device memory in use."),
    _f("gpu_memory_free_bytes", G, "", FAST, "memory", "nvmlDeviceGetMemoryInfo(v2).free",
       "Device memory free."),
    _f("gpu_memory_reserved_bytes", G, "", FAST, "memory", "nvmlDeviceGetMemoryInfo(v2).reserved",
       "Device memory reserved by the driver and firmware."),
    # Thermal
    _f("gpu_temperature_celsius", G, "sensor", FAST, "thermal",
       "nvmlDeviceGetTemperature, field NVML_FI_DEV_MEMORY_TEMP", "Temperature of a sensor."),
    _f("gpu_temperature_threshold_celsius", G, "threshold", SLOW, "thermal",
       "nvmlDeviceGetTemperatureThreshold", "Temperature at which the GPU acts."),
    _f("gpu_fan_speed_ratio", G, "fan", FAST, "thermal", "nvmlDeviceGetFanSpeed_v2",
       "Fan speed as a fraction of its maximum."),
    # Power
    _f("gpu_power_watts", G, "", FAST, "power", "nvmlDeviceGetPowerUsage",
       "Power draw of the GPU board."),
    _f("gpu_power_limit_watts", G, "limit", SLOW, "power",
       "nvmlDeviceGetEnforcedPowerLimit, nvmlDeviceGetPowerManagementDefaultLimit",
       "Power limits."),
    _f("gpu_energy_joules_total", C, "", SLOW, "power", "nvmlDeviceGetTotalEnergyConsumption",
       "Energy consumed since the driver loaded."),
    # Clocks
    _f("gpu_clock_hertz", G, "clock", FAST, "clocks", "nvmlDeviceGetClockInfo",
       "Current clock frequency."),
    _f("gpu_clock_max_hertz", G, "clock", IDENT, "clocks", "nvmlDeviceGetMaxClockInfo",
       "Maximum clock frequency."),
    _f("gpu_clock_event_active", G, "reason", FAST, "clock_events",
       "nvmlDeviceGetCurrentClocksEventReasons",
       "1 while a clock-event (throttle) reason is active in the sampled bitmask."),
    _f("gpu_clock_event_seconds_total", C, "reason", SLOW, "clock_events",
       "NVML_FI_DEV_CLOCKS_EVENT_REASON_* field values",
       "Time the clocks were reduced for a reason, since the driver loaded."),
    _f("gpu_violation_seconds_total", C, "policy", SLOW, "clock_events",
       "nvmlDeviceGetViolationStatus", "Time a performance policy held the clocks down."),
    # Links
    _f("gpu_pcie_link_generation", G, "", SLOW, "pcie", "nvmlDeviceGetCurrPcieLinkGeneration",
       "Current PCIe link generation."),
    _f("gpu_pcie_link_max_generation", G, "", IDENT, "pcie",
       "nvmlDeviceGetGpuMaxPcieLinkGeneration", "Maximum PCIe link generation of the GPU."),
    _f("gpu_pcie_link_width_lanes", G, "", SLOW, "pcie", "nvmlDeviceGetCurrPcieLinkWidth",
       "Current PCIe link width."),
    _f("gpu_pcie_link_max_width_lanes", G, "", IDENT, "pcie", "nvmlDeviceGetMaxPcieLinkWidth",
       "Maximum PCIe link width."),
    _f("gpu_pcie_replay_total", C, "", SLOW, "pcie", "nvmlDeviceGetPcieReplayCounter",
       "PCIe replays (link-level retransmissions)."),
    _f("gpu_nvlink_up", G, "link", SLOW, "nvlink", "nvmlDeviceGetNvLinkState",
       "1 when an NVLink link is up."),
    _f("gpu_nvlink_errors_total", C, "link type", SLOW, "nvlink",
       "nvmlDeviceGetNvLinkErrorCounter", "NVLink errors by link and type."),
    # Memory reliability
    _f("gpu_ecc_errors_total", C, "type scope location", SLOW, "reliability",
       "nvmlDeviceGetTotalEccErrors, nvmlDeviceGetMemoryErrorCounter", "ECC errors."),
    _f("gpu_sram_ecc_threshold_exceeded", G, "", SLOW, "reliability",
       "nvmlDeviceGetSramEccErrorStatus", "1 when SRAM ECC errors passed the RMA threshold."),
    _f("gpu_remapped_rows_total", C, "cause", SLOW, "reliability", "nvmlDeviceGetRemappedRows",
       "Memory rows remapped."),
    _f("gpu_row_remap_pending", G, "", SLOW, "reliability", "nvmlDeviceGetRemappedRows",
       "1 when a row remap waits for a GPU reset."),
    _f("gpu_row_remap_failure", G, "", SLOW, "reliability", "nvmlDeviceGetRemappedRows",
       "1 when a row remap failed (an RMA criterion)."),
    _f("gpu_row_remap_banks", G, "availability", SLOW, "reliability",
       "nvmlDeviceGetRowRemapperHistogram", "Memory banks by remaining remap capacity."),
    _f("gpu_retired_pages_total", C, "cause", SLOW, "reliability", "nvmlDeviceGetRetiredPages",
       "Memory pages retired (pre-Ampere)."),
    _f("gpu_retired_pages_pending", G, "", SLOW, "reliability",
       "nvmlDeviceGetRetiredPagesPendingStatus", "1 when a page retirement waits for a reset."),
    _f("gpu_recovery_action", G, "", SLOW, "reliability",
       "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION",
       "Recovery the driver asks for: 0 none, 1 reset GPU, 2 reboot node, 3 drain P2P, "
       "4 drain and reset."),
    # Events
    _f("gpu_xid_errors_total", C, "xid action", EVENT, "events", "kernel log, NVML events",
       "Xid errors reported by the driver, with the catalog's recommended action."),
    _f("gpu_xid_last_timestamp_seconds", G, "xid", EVENT, "events", "kernel log, NVML events",
       "Unix time of the last Xid of this code."),
    _f("gpu_events_total", C, "event", EVENT, "events", "NVML/amdsmi events, kernel log",
       "Device events other than Xid."),
    # Health verdict
    _f("gpu_health_status", G, "", DERIVED, "health", "verdict",
       "Health verdict: 0 ok, 1 warn, 2 fail."),
    _f("gpu_health_reason", G, "reason severity", DERIVED, "health", "verdict",
       "One series per active reason behind the verdict; value is always 1."),
    # Node checklist
    _f("gpu_persistence_mode_enabled", G, "", SLOW, "checklist", "nvmlDeviceGetPersistenceMode",
       "1 when persistence mode is on."),
    _f("gpu_ecc_mode_enabled", G, "", SLOW, "checklist", "nvmlDeviceGetEccMode",
       "1 when ECC is on."),
    _f("gpu_mig_mode_enabled", G, "", SLOW, "checklist", "nvmlDeviceGetMigMode",
       "1 when MIG mode is on."),
    _f("gpu_compute_mode", G, "", SLOW, "checklist", "nvmlDeviceGetComputeMode",
       "NVML compute mode: 0 default, 2 prohibited, 3 exclusive process."),
    _f("gpu_applications_clocks_locked", G, "", SLOW, "checklist",
       "nvmlDeviceGetApplicationsClock vs default, locked clocks",
       "1 when application clocks or locked clocks are set."),
    _f("gpu_numa_node", G, "", IDENT, "checklist", "nvmlDeviceGetNumaNodeId, sysfs numa_node",
       "NUMA node the GPU is attached to."),
    _f("gpu_node_config_info", G, "kernel iommu aspm_policy cpu_governor transparent_hugepages",
       SLOW, "checklist", "/proc, /sys", "Host settings that GPU nodes of a pool should share.",
       per_gpu=False),
    _f("gpu_node_hugepages", G, "size", SLOW, "checklist", "/sys/kernel/mm/hugepages",
       "Huge pages configured on the host, by page size.", per_gpu=False),
    # MIG and Kubernetes
    _f("gpu_mig_info", G, "mig_uuid gpu_instance compute_instance profile", SLOW, "mig",
       "nvmlDeviceGetMigDeviceHandleByIndex", "A MIG instance of the GPU; value is always 1."),
    _f("gpu_mig_memory_used_bytes", G, "mig_uuid", FAST, "mig", "nvmlDeviceGetMemoryInfo(MIG)",
       "Memory in use in a MIG instance."),
    _f("gpu_mig_memory_total_bytes", G, "mig_uuid", FAST, "mig", "nvmlDeviceGetMemoryInfo(MIG)",
       "Memory of a MIG instance."),
    _f("gpu_pod_info", G, "mig_uuid namespace pod container", DERIVED, "pods",
       "kubelet pod-resources API", "A container the GPU is allocated to; value is always 1."),
    _f("gpu_pod_memory_used_bytes", G, "namespace pod container", FAST, "pods",
       "nvmlDeviceGetComputeRunningProcesses + /proc/<pid>/cgroup",
       "Device memory used by a container's processes."),
    # Probes
    _f("gpu_probe_success", G, "probe", PROBE, "probes", "probe runner",
       "1 when the last run of a probe that was not skipped passed."),
    _f("gpu_probe_runs_total", C, "probe outcome", PROBE, "probes", "probe runner",
       "Probe runs by outcome."),
    _f("gpu_probe_last_run_timestamp_seconds", G, "probe", PROBE, "probes", "probe runner",
       "Unix time of the last run of a probe."),
    _f("gpu_probe_duration_seconds", G, "probe phase", PROBE, "probes", "probe runner",
       "Duration of the last run: total includes the child's start, measure only the timed part."),
    _f("gpu_probe_bandwidth_bytes_per_second", G, "probe direction peer_uuid", PROBE, "probes",
       "probe result", "Bandwidth measured by a probe."),
    _f("gpu_probe_latency_seconds", G, "probe stat", PROBE, "probes", "probe result",
       "Latency measured by a probe."),
    _f("gpu_probe_jitter_ratio", G, "probe", PROBE, "probes", "probe result",
       "Coefficient of variation of a probe's repeated timings."),
    _f("gpu_probe_flop_per_second", G, "probe dtype", PROBE, "probes", "probe result",
       "Arithmetic throughput measured by a probe."),
    _f("gpu_probe_threshold", G, "probe quantity bound", PROBE, "probes", "thresholds file",
       "Threshold in force for a probe's quantity."),
    # The exporter itself
    _f("gpu_exporter_build_info", G, "version python_version", DERIVED, "exporter", "package",
       "Version of the exporter; value is always 1.", per_gpu=False),
    _f("gpu_exporter_backend_up", G, "backend", DERIVED, "exporter", "backend state",
       "1 when a vendor backend is initialized and serving.", per_gpu=False),
    _f("gpu_exporter_collection_duration_seconds", G, "tier", DERIVED, "exporter", "sampler",
       "Wall time of the last collection cycle of a tier, all GPUs in parallel.", per_gpu=False),
    _f("gpu_exporter_collection_errors_total", C, "tier gpu reason", DERIVED, "exporter",
       "sampler", "Failed reads by tier, GPU and reason.", per_gpu=False),
    _f("gpu_exporter_last_collection_timestamp_seconds", G, "tier", DERIVED, "exporter",
       "sampler", "Unix time the last collection cycle of a tier completed.", per_gpu=False),
    _f("gpu_exporter_event_source_up", G, "source", DERIVED, "exporter", "event watcher",
       "1 when an event source is read.", per_gpu=False),
    _f("gpu_exporter_kubelet_up", G, "", DERIVED, "exporter", "kubelet pod-resources API",
       "1 when the kubelet pod-resources API answered the last refresh.", per_gpu=False),
    _f("gpu_exporter_released", G, "", DERIVED, "exporter", "admin release",
       "1 while the vendor library is released for repairs (no GPU is read).", per_gpu=False),
    _f("gpu_exporter_library_call_duration_seconds", H, "function", DERIVED, "library_calls",
       "sampler", "Duration of vendor library calls (optional collector).", per_gpu=False),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}

# Families the contract did not have, and why they exist.
CONTRACT_ADDITIONS: dict[str, str] = {
    "gpu_exporter_released": (
        "the NVML issue asks the exporter to report a release for repairs in its metrics; "
        "alert rules inhibit a released node's GPU alerts with it"
    ),
    "gpu_xgmi_data_bytes_total": (
        "the AMD issue asks for XGMI link traffic; the contract has no family for it, and "
        "NVLink's throughput gauge is a rate of a different source (GPM), not a byte counter"
    ),
}

# Where the amdsmi backend reads each family it provides (docs/metrics.md's AMD column; a test
# checks it against what the backend emits over the fake library). Derived families (the
# daemon's own, health, pods, cost) are the same for both vendors and are not listed.
AMD_SOURCES: dict[str, str] = {
    "gpu_info": "amdsmi_get_gpu_asic_info, _vbios_info, _compute_partition, _memory_partition",
    "gpu_numa_node": "sysfs numa_node of the card",
    "gpu_clock_max_hertz": "amdsmi_get_clock_info max_clk (GFX, MEM, VCLK0)",
    "gpu_pcie_link_max_generation": "amdsmi_get_pcie_info pcie_static",
    "gpu_pcie_link_max_width_lanes": "amdsmi_get_pcie_info pcie_static",
    "gpu_utilization_ratio": "amdsmi_get_gpu_activity gfx_activity (partitions: xcp_stats)",
    "gpu_memory_activity_ratio": "amdsmi_get_gpu_activity umc_activity",
    "gpu_decoder_utilization_ratio": "amdsmi_get_gpu_activity mm_activity",
    "gpu_processes": "amdsmi_get_gpu_process_list",
    "gpu_memory_total_bytes": "amdsmi_get_gpu_memory_total(VRAM)",
    "gpu_memory_used_bytes": "amdsmi_get_gpu_memory_usage(VRAM)",
    "gpu_memory_free_bytes": "total - used",
    "gpu_temperature_celsius": "amdsmi_get_gpu_metrics_info temperature_edge/hotspot/mem",
    "gpu_temperature_threshold_celsius": "amdsmi_get_temp_metric HOTSPOT/VRAM CRITICAL, EMERGENCY",
    "gpu_power_watts": "amdsmi_get_gpu_metrics_info current_socket_power / average_socket_power",
    "gpu_power_limit_watts": "amdsmi_get_power_cap_info power_cap, default_power_cap (µW)",
    "gpu_energy_joules_total": "amdsmi_get_energy_count accumulator × resolution",
    "gpu_clock_hertz": "amdsmi_get_clock_info clk (GFX, MEM, VCLK0)",
    "gpu_violation_seconds_total": "gpu_metrics ppt/socket_thm/prochot residency accumulators",
    "gpu_pcie_link_generation": "amdsmi_get_pcie_info pcie_metric pcie_speed",
    "gpu_pcie_link_width_lanes": "amdsmi_get_pcie_info pcie_metric pcie_width",
    "gpu_pcie_replay_total": "amdsmi_get_pcie_info pcie_metric pcie_replay_count",
    "gpu_xgmi_data_bytes_total": "gpu_metrics xgmi_read_data_acc / xgmi_write_data_acc (KB)",
    "gpu_ecc_errors_total": "amdsmi_get_gpu_total_ecc_count, amdsmi_get_gpu_ecc_count(block)",
    "gpu_ecc_mode_enabled": "amdsmi_get_gpu_ecc_enabled (UMC bit)",
    "gpu_retired_pages_total": "amdsmi_get_gpu_bad_page_info",
    "gpu_retired_pages_pending": "amdsmi_get_gpu_bad_page_info status PENDING",
    "gpu_events_total": "AmdSmiEventReader (thermal throttle, pre/post reset, VM fault)",
}

AMD_ONLY = frozenset({"gpu_xgmi_data_bytes_total"})

# Labels the catalog adds to a family of the contract, and why.
CONTRACT_LABEL_ADDITIONS: dict[str, tuple[frozenset[str], str]] = {
    "gpu_info": (
        frozenset({"compute_partition", "memory_partition"}),
        "the AMD issue asks for the compute and memory partition modes on gpu_info (MI300 "
        "SPX/CPX, NPS1/NPS4); empty on NVIDIA GPUs",
    ),
}

# Where the catalog departs from METRICS.md v1, and why (METRICS.md asks for the reason).
CONTRACT_RENAMES: dict[str, tuple[str, str]] = {
    "gpu_node_hugepages_total": (
        "gpu_node_hugepages",
        "it is a gauge (pages configured now, can go down); a `_total` suffix marks a counter "
        "and `promtool check metrics` rejects it on a gauge",
    ),
}

# Collectors a user may switch off, and whether they are on by default. `exporter` is always on.
COLLECTORS: dict[str, bool] = {
    name: name != "library_calls"
    for name in dict.fromkeys(f.collector for f in FAMILIES)
    if name != "exporter"
}


def family(name: str) -> Family:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the metric catalog") from None
