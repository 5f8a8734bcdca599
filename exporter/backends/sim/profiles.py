"""GPU models the simulated node can be made of: the constants a vendor library would report.

A profile is data only: identity strings, limits, clocks, link counts and the metric families the
real vendor library can produce on that model. The sim backend raises `Unsupported` for a field
whose families the profile lacks, exactly where NVML answers NotSupported, so the sampler's
"remember what is unsupported" path is exercised by every newcomer's first run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...catalog import BY_NAME

MIB = 1024 * 1024

# Families every GPU of the simulated node can have, whatever its vendor.
_COMMON = frozenset({
    "gpu_info", "gpu_clock_max_hertz", "gpu_pcie_link_max_generation",
    "gpu_pcie_link_max_width_lanes", "gpu_numa_node",
    "gpu_processes", "gpu_utilization_ratio", "gpu_memory_activity_ratio",
    "gpu_decoder_utilization_ratio",
    "gpu_memory_total_bytes", "gpu_memory_used_bytes", "gpu_memory_free_bytes",
    "gpu_temperature_celsius", "gpu_temperature_threshold_celsius",
    "gpu_power_watts", "gpu_power_limit_watts", "gpu_energy_joules_total",
    "gpu_clock_hertz", "gpu_clock_event_active", "gpu_violation_seconds_total",
    "gpu_pcie_link_generation", "gpu_pcie_link_width_lanes", "gpu_pcie_replay_total",
    "gpu_ecc_errors_total", "gpu_ecc_mode_enabled",
    "gpu_pod_info", "gpu_pod_memory_used_bytes",
})

# NVML GPM metrics: Hopper and newer only.
GPM = frozenset({
    "gpu_sm_active_ratio", "gpu_sm_occupancy_ratio", "gpu_tensor_active_ratio",
    "gpu_dram_active_ratio", "gpu_pipe_active_ratio", "gpu_pcie_throughput_bytes_per_second",
    "gpu_nvlink_throughput_bytes_per_second",
})

NVLINK = frozenset({"gpu_nvlink_up", "gpu_nvlink_errors_total"})
MIG = frozenset({"gpu_mig_info", "gpu_mig_memory_used_bytes", "gpu_mig_memory_total_bytes"})

# What NVML has on an Ampere-or-newer SXM board. Not here: fans (SXM boards are cooled by the
# chassis, NVML says NotSupported) and retired pages (replaced by row remapping since Ampere).
_NVIDIA = _COMMON | NVLINK | MIG | frozenset({
    "gpu_performance_state", "gpu_encoder_utilization_ratio", "gpu_memory_reserved_bytes",
    "gpu_clock_event_seconds_total",
    "gpu_sram_ecc_threshold_exceeded", "gpu_remapped_rows_total", "gpu_row_remap_pending",
    "gpu_row_remap_failure", "gpu_row_remap_banks", "gpu_recovery_action",
    "gpu_persistence_mode_enabled", "gpu_mig_mode_enabled", "gpu_compute_mode",
    "gpu_applications_clocks_locked",
})

# amdsmi on an MI300X: bad pages instead of row remapping, violation accumulators but no
# NVML-style per-reason clock counters, no P-state number, no video encoder (VCN decodes only).
_AMD = _COMMON | frozenset({"gpu_retired_pages_total", "gpu_retired_pages_pending",
                            "gpu_xgmi_data_bytes_total"})

NVIDIA_ECC_LOCATIONS = ("total", "dram", "sram")
# amdsmi reports ECC per RAS block; umc is the memory controller (HBM).
AMD_RAS_BLOCKS = ("umc", "sdma", "gfx", "mmhub", "athub", "pcie_bif", "hdp", "xgmi_wafl", "df",
                  "smn", "sem", "mp0", "mp1", "fuse")


@dataclass(frozen=True)
class GpuProfile:
    key: str  # the settings' model name, e.g. "h100-sxm"
    vendor: str  # "nvidia" or "amd"
    name: str  # what the vendor library calls the model (gpu_info's model label)
    families: frozenset[str]
    memory_total_bytes: int
    memory_reserved_bytes: int  # held by driver and firmware (NVML memory info v2)
    power_limit_watts: float
    power_idle_watts: tuple[float, float]  # a GPU's idle draw is drawn from this range
    # Clocks in MHz, as the vendor tools print them.
    clock_max_mhz: dict[str, int]
    clock_idle_mhz: dict[str, int]
    temperature_sensors: tuple[str, ...]
    # (idle, under load) for each sensor, before a GPU's own seeded offset.
    temperature_range_c: dict[str, tuple[float, float]]
    thresholds_c: dict[str, float]  # slowdown, shutdown, max_operating, memory_max
    pcie_max_generation: int
    pcie_max_width: int
    pcie_idle_generation: int  # NVIDIA drops an idle link to Gen1 to save power; legitimate
    nvlink_links: int
    driver_version: str
    vbios_version: str
    cuda_version: str = ""
    rocm_version: str = ""
    ecc_types: tuple[str, ...] = ("corrected", "uncorrected")
    # NVIDIA: volatile (since the driver loaded) and aggregate (lifetime, in the InfoROM).
    # AMD RAS counters are kept by the driver only, so they are volatile.
    ecc_scopes: tuple[str, ...] = ("volatile", "aggregate")
    ecc_locations: tuple[str, ...] = NVIDIA_ECC_LOCATIONS
    row_remap_banks: int = 0
    mig_profile: str = ""  # the instance profile used when a GPU is put in MIG mode
    mig_instance_bytes: int = 0
    xgmi_links: int = 0  # AMD Infinity Fabric links to the other GPUs of the hive

    def __post_init__(self) -> None:
        unknown = self.families - BY_NAME.keys()
        if unknown:  # a typo here would silently drop a family from every simulated node
            raise ValueError(f"profile {self.key}: families not in the catalog: {sorted(unknown)}")

    def has(self, family: str) -> bool:
        return family in self.families


# As an H100 80GB HBM3 with driver 580.159 reports them (docs/benchmarks.md).
_NVIDIA_THRESHOLDS = {"slowdown": 89.0, "shutdown": 95.0, "max_operating": 87.0,
                      "memory_max": 95.0}
_HOPPER_TEMPS = {"gpu": (31.0, 66.0), "memory": (34.0, 56.0)}

H100_SXM = GpuProfile(
    key="h100-sxm", vendor="nvidia", name="NVIDIA H100 80GB HBM3",
    families=_NVIDIA | GPM,
    memory_total_bytes=81559 * MIB, memory_reserved_bytes=480 * MIB,  # measured, driver 580
    power_limit_watts=700.0, power_idle_watts=(70.0, 90.0),
    clock_max_mhz={"graphics": 1980, "sm": 1980, "memory": 2619, "video": 1545},
    clock_idle_mhz={"graphics": 345, "sm": 345, "memory": 2619, "video": 765},
    temperature_sensors=("gpu", "memory"), temperature_range_c=_HOPPER_TEMPS,
    thresholds_c=_NVIDIA_THRESHOLDS,
    pcie_max_generation=5, pcie_max_width=16, pcie_idle_generation=1, nvlink_links=18,
    driver_version="580.159.04", vbios_version="96.00.99.00.01", cuda_version="13.0",
    row_remap_banks=2560, mig_profile="3g.40gb", mig_instance_bytes=40192 * MIB,
)

H200_SXM = GpuProfile(
    key="h200-sxm", vendor="nvidia", name="NVIDIA H200",
    families=_NVIDIA | GPM,
    memory_total_bytes=143771 * MIB, memory_reserved_bytes=615 * MIB,  # measured, driver 580
    power_limit_watts=700.0, power_idle_watts=(75.0, 95.0),
    clock_max_mhz={"graphics": 1980, "sm": 1980, "memory": 3201, "video": 1545},
    clock_idle_mhz={"graphics": 345, "sm": 345, "memory": 3201, "video": 765},
    temperature_sensors=("gpu", "memory"), temperature_range_c=_HOPPER_TEMPS,
    thresholds_c=_NVIDIA_THRESHOLDS,
    pcie_max_generation=5, pcie_max_width=16, pcie_idle_generation=1, nvlink_links=18,
    driver_version="580.159.04", vbios_version="96.00.AF.00.01", cuda_version="13.0",
    row_remap_banks=2560, mig_profile="3g.71gb", mig_instance_bytes=71936 * MIB,
)

A100_SXM = GpuProfile(
    key="a100-sxm", vendor="nvidia", name="NVIDIA A100-SXM4-80GB",
    families=_NVIDIA,  # GPM needs Hopper
    memory_total_bytes=81920 * MIB, memory_reserved_bytes=569 * MIB,
    power_limit_watts=400.0, power_idle_watts=(55.0, 65.0),
    clock_max_mhz={"graphics": 1410, "sm": 1410, "memory": 1593, "video": 1290},
    clock_idle_mhz={"graphics": 210, "sm": 210, "memory": 1593, "video": 795},
    temperature_sensors=("gpu", "memory"),
    temperature_range_c={"gpu": (30.0, 62.0), "memory": (33.0, 58.0)},
    thresholds_c={**_NVIDIA_THRESHOLDS, "max_operating": 85.0},
    pcie_max_generation=4, pcie_max_width=16, pcie_idle_generation=1, nvlink_links=12,
    driver_version="580.159.04", vbios_version="92.00.45.00.06", cuda_version="13.0",
    row_remap_banks=640, mig_profile="3g.40gb", mig_instance_bytes=40192 * MIB,
)

MI300X = GpuProfile(
    key="mi300x", vendor="amd", name="AMD Instinct MI300X",
    families=_AMD,
    memory_total_bytes=196592 * MIB, memory_reserved_bytes=0,
    power_limit_watts=750.0, power_idle_watts=(120.0, 145.0),
    # AMD has no separate SM clock: sclk is the graphics clock.
    clock_max_mhz={"graphics": 2100, "memory": 1300, "video": 1620},
    clock_idle_mhz={"graphics": 132, "memory": 900, "video": 914},
    temperature_sensors=("edge", "hotspot", "hbm"),
    temperature_range_c={"edge": (30.0, 62.0), "hotspot": (38.0, 82.0), "hbm": (34.0, 64.0)},
    thresholds_c={"slowdown": 100.0, "shutdown": 110.0, "max_operating": 100.0,
                  "memory_max": 95.0},
    pcie_max_generation=5, pcie_max_width=16, pcie_idle_generation=5, nvlink_links=0,
    xgmi_links=7,  # a hive of eight: a link to each peer
    driver_version="6.12.12", vbios_version="113-M3000100-102", rocm_version="6.4.1",
    ecc_types=("corrected", "uncorrected", "deferred"), ecc_scopes=("volatile",),
    ecc_locations=AMD_RAS_BLOCKS,
)

PROFILES: dict[str, GpuProfile] = {p.key: p for p in (H100_SXM, H200_SXM, A100_SXM, MI300X)}
DEFAULT_MODEL = "h100-sxm"


def profile(model: str) -> GpuProfile:
    try:
        return PROFILES[model]
    except KeyError:
        raise ValueError(
            f"unknown simulated GPU model {model!r}; known: {', '.join(PROFILES)}"
        ) from None
