"""An amdsmi look-alike for tests: the library's Python layer over a modelled AMD GPU box.

`FakeAmdSmi(profile, cards=, partition=, version=)` is a module object; pass it wherever the
real `amdsmi` module would go (`AmdSmiBackend(amdsmi=fake)`). No AMD hardware was available,
so nothing here was recorded: the fake follows tests/fixtures/amdsmi/LIBRARY-NOTES.md and
the Python layer of the PyPI `amdsmi` sdists 6.4.3 and 7.0.2 (tests/fixtures/amdsmi/README.md
cites, per value and shape, where each fact comes from and which are UNCONFIRMED). What it
models:

- The C library: each call first builds the raw C struct (ints with the C sentinels 0xFFFF,
  UINT32_MAX, UINT64_MAX, 0xFF for unsupported members) from a model of the box (profile,
  partitions, `fake.now`). A port of that version's Python code then turns it into what
  `amdsmi` returns: the same keys, order, types and units, "N/A" exactly where the real
  Python writes it and raw sentinels where it does not (7.0 `amdsmi_get_power_info` only
  converts 0xFFFF, so an unsupported u32 member reads 4294967295). The port was checked
  against the real 6.4.3 / 7.0.2 Python run over this model (0 differences, README).
- Exceptions as `_check_res` raises them (RETRY 9 -> AmdSmiRetryException, TIMEOUT 8 ->
  AmdSmiTimeoutException, else AmdSmiLibraryException(code), `str()` and get_error_info() as
  the real ones); a wrong argument type raises AmdSmiParameterException before the C call.
  Before amdsmi_init every call but amdsmi_get_lib_version raises NOT_INIT (32); a handle
  from before amdsmi_shut_down (or any address the library did not hand out) NOT_FOUND (31);
  a NULL handle INVAL (1). init/shut_down are refcounted; shut_down without init succeeds.
- Handles are `ctypes.c_void_p` (unhashable, `==` is identity: key by `h.value`); every
  amdsmi_get_processor_handles() returns new objects with the same addresses until the
  library is shut down; a fresh init hands out new addresses.
- Versions "6.4" (6.4.3) and "7.0" (7.0.2): function set and signatures, keys, enums (7.0's
  PAGE_FAULT_START bug; 6.4's five events ending in RING_HANG; AmdSmiLinkType XGMI/PCIE
  swapped), AMDSMI_STATUS_* (MORE_DATA 57 vs 39), exception details, event handles (6.4: the
  address as an int, 7.0: a c_void_p).
- Profiles "mi300x" (gfx942; partitions SPX, DPX, QPX, CPX), "mi250x" and "mi210" (gfx90a,
  SPX only). A partitioned card has one handle per partition; board-wide readings
  (BOARD_FUNCTIONS) are the same board value on every partition: what a secondary partition
  returns is UNCONFIRMED, and the copy is the case a backend must not multiply.

Time: `fake.now` (seconds, default 0; `advance(dt)`) drives every accumulator (energy,
violation/residency, XGMI data, PCIe counters, activity accumulators, timestamps).
Utilization and power are fixed per handle, from its position. Nothing sleeps: slow calls
(SLOW_CALLS: violation status >= 100 ms, PCIe throughput ~1 s) add their real duration to
`fake.simulated_seconds`; `calls` shows which were made.

Fault injection and controls (thread-safe). `handle_index` is the position in
amdsmi_get_processor_handles(); `arg=` narrows to one extra argument (a clock type, a
`(sensor, metric)` pair for amdsmi_get_temp_metric, a GPU block, a memory type, a fan index):

- `fail(function_name, err_code, handle_index=None, times=None)`: the C call returns err_code
  (2 NOT_SUPPORTED, 10 NO_PERM, 30 BUSY, 34 DRIVER_NOT_LOADED, 8 -> the Timeout subclass ...)
  `times` times, or until `clear_faults()`. The event reader's C calls are named
  amdsmi_init_gpu_event_notification, amdsmi_set_gpu_event_notification_mask,
  amdsmi_get_gpu_event_notification (read) and amdsmi_stop_gpu_event_notification.
- `na(function_name, key, handle_index=None)`: the C library reports that field unsupported,
  with a sentinel the real Python shows as "N/A". ValueError where the real Python of this
  version never writes "N/A" (energy count, power cap, ECC counts...): use `sentinel`.
- `sentinel(function_name, key, width=32, handle_index=None)`: the C field holds the max of
  `width` bits; the ported Python decides what shows ("N/A" or the raw int). `width` may not
  exceed the C field's.
- `set(function_name, key, value, handle_index=None)`: override a C-level value (ints,
  strings, lists; "N/A" means na()). `key` is a dict key, a dotted path through nested dicts
  and list positions ("pcie_metric.pcie_replay_count", "xcp_stats.gfx_busy_inst.0.3",
  "links.2.read"), or None for the whole result of a function returning a scalar or a list
  (compute partition, ECC-enabled mask, a temperature, a clock's struct, the bad-page list
  [{"page_address", "page_size", "status"}], the process list). Per-block ECC counts
  (amdsmi_get_gpu_ecc_count, arg=block) add up in amdsmi_get_gpu_total_ecc_count. On a
  partitioned card, set/na/sentinel of a BOARD_FUNCTIONS function apply to the whole card.
  `reset_overrides()` drops them all.
- `throttle(handle_index, prochot=, ppt=, socket_thm=, vr_thm=, hbm_thm=)`: fractions (0..1)
  of time the card is throttled from now on; residency accumulators grow accordingly, the
  violation percentages / active flags and throttle_status follow.
- `emit(handle_index, event_name, message)`: the kernel sends an event (the C name of this
  version: "GPU_PRE_RESET", "PAGE_FAULT_START", ...). Queued, as by rocm_smi, only if that
  handle has a reader whose mask has the type, with the message cut to its first
  whitespace-free token of at most 63 characters; returns whether it was queued.
  AmdSmiEventReader.read(timeout_ms) waits on a Condition (never a sleep), returns the events
  of every handle with a reader, and raises AmdSmiLibraryException(40, NO_DATA) when none
  came within the timeout.
- `block(function_name, handle_index=None) -> threading.Event`: matching calls wait until it
  is set (hung-driver tests); `entered(function_name)` is set once a call waits;
  `release_all()` opens every gate.
- `missing_library()` / module-level `import_failure()`: what `import amdsmi` does on a host
  without ROCm (prints the library's two lines to stdout, raises KeyError('libamd_smi.so'));
  `amdsmi_import_fails()` makes a real `import amdsmi` do that; `installed()` puts the fake
  in sys.modules["amdsmi"].
- Observation: `calls` [(function, handle_index)] in order, `call_count()`,
  `calls_in_flight()`, `open_readers()`, `violations` (misuse: shut_down during a call or
  with readers open), `assert_clean()` (no misuse, every reader stopped, every amdsmi_init
  matched by amdsmi_shut_down).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

NA = "N/A"
MAX = {8: 0xFF, 16: 0xFFFF, 32: 0xFFFFFFFF, 48: (1 << 48) - 1, 64: 0xFFFFFFFFFFFFFFFF}
VERSIONS = {"6.4": "6.4.3", "7.0": "7.0.2"}
PROFILES = ("mi300x", "mi250x", "mi210")
PARTITIONS = {"SPX": 1, "DPX": 2, "TPX": 3, "QPX": 4, "CPX": 8}
# What the real calls cost (the fake never sleeps; it adds these to simulated_seconds).
SLOW_CALLS = {"amdsmi_get_violation_status": 0.1, "amdsmi_get_gpu_pci_throughput": 1.0}
# Readings of the whole physical GPU: on a partitioned card every partition reports the board.
BOARD_FUNCTIONS = frozenset({
    "amdsmi_get_power_info", "amdsmi_get_power_cap_info", "amdsmi_get_energy_count",
    "amdsmi_get_temp_metric", "amdsmi_get_gpu_metrics_info", "amdsmi_get_violation_status",
    "amdsmi_get_pcie_info", "amdsmi_get_gpu_pci_throughput", "amdsmi_get_gpu_total_ecc_count",
    "amdsmi_get_gpu_ecc_count", "amdsmi_get_gpu_ecc_enabled", "amdsmi_get_gpu_bad_page_info",
    "amdsmi_get_xgmi_info", "amdsmi_get_link_metrics", "amdsmi_get_gpu_activity",
    "amdsmi_get_gpu_board_info", "amdsmi_get_gpu_vbios_info", "amdsmi_get_fw_info",
    "amdsmi_get_gpu_fan_speed", "amdsmi_get_gpu_fan_speed_max",
})
_NO_INIT_NEEDED = frozenset({"amdsmi_init", "amdsmi_shut_down", "amdsmi_get_lib_version"})
_EVT_C = ("amdsmi_init_gpu_event_notification", "amdsmi_set_gpu_event_notification_mask",
          "amdsmi_get_gpu_event_notification", "amdsmi_stop_gpu_event_notification")

# -- status codes and exceptions (amdsmi_wrapper.py, amdsmi_exception.py of each sdist) ------

_STATUS_70 = {
    "SUCCESS": 0, "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3,
    "FAIL_LOAD_MODULE": 4, "FAIL_LOAD_SYMBOL": 5, "DRM_ERROR": 6, "API_FAILED": 7,
    "TIMEOUT": 8, "RETRY": 9, "NO_PERM": 10, "INTERRUPT": 11, "IO": 12, "ADDRESS_FAULT": 13,
    "FILE_ERROR": 14, "OUT_OF_RESOURCES": 15, "INTERNAL_EXCEPTION": 16,
    "INPUT_OUT_OF_BOUNDS": 17, "INIT_ERROR": 18, "REFCOUNT_OVERFLOW": 19,
    "DIRECTORY_NOT_FOUND": 20, "BUSY": 30, "NOT_FOUND": 31, "NOT_INIT": 32, "NO_SLOT": 33,
    "DRIVER_NOT_LOADED": 34, "MORE_DATA": 39, "NO_DATA": 40, "INSUFFICIENT_SIZE": 41,
    "UNEXPECTED_SIZE": 42, "UNEXPECTED_DATA": 43, "NON_AMD_CPU": 44, "NO_ENERGY_DRV": 45,
    "NO_MSR_DRV": 46, "NO_HSMP_DRV": 47, "NO_HSMP_SUP": 48, "NO_HSMP_MSG_SUP": 49,
    "HSMP_TIMEOUT": 50, "NO_DRV": 51, "FILE_NOT_FOUND": 52, "ARG_PTR_NULL": 53,
    "AMDGPU_RESTART_ERR": 54, "SETTING_UNAVAILABLE": 55, "CORRUPTED_EEPROM": 56,
    "MAP_ERROR": 0xFFFFFFFE, "UNKNOWN_ERROR": 0xFFFFFFFF,
}
_STATUS_64 = {k: v for k, v in _STATUS_70.items() if k != "DIRECTORY_NOT_FOUND"}
_STATUS_64["MORE_DATA"] = 57

_ERR_INFO = {  # AmdSmiLibraryException.set_err_info, 7.0.2 (6.4.3 lacks DIRECTORY_NOT_FOUND)
    "INVAL": "AMDSMI_STATUS_INVAL - Invalid parameters",
    "NOT_SUPPORTED": "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    "NOT_YET_IMPLEMENTED": "AMDSMI_STATUS_NOT_YET_IMPLEMENTED - Feature not yet implemented",
    "FAIL_LOAD_MODULE": "AMDSMI_STATUS_FAIL_LOAD_MODULE - Fail to load lib",
    "FAIL_LOAD_SYMBOL": "AMDSMI_STATUS_FAIL_LOAD_SYMBOL - Fail to load symbol",
    "DRM_ERROR": "AMDSMI_STATUS_DRM_ERROR - Error when called libdrm",
    "API_FAILED": "AMDSMI_STATUS_API_FAILED - API call failed",
    "TIMEOUT": "AMDSMI_STATUS_TIMEOUT - Timeout in API call",
    "RETRY": "AMDSMI_STATUS_RETRY - Retry operation",
    "NO_PERM": "AMDSMI_STATUS_NO_PERM - Permission Denied",
    "INTERRUPT": "AMDSMI_STATUS_INTERRUPT - Interrupt ocurred during execution",
    "IO": "AMDSMI_STATUS_IO - I/O Error",
    "ADDRESS_FAULT": "AMDSMI_STATUS_ADDRESS_FAULT - Bad address",
    "FILE_ERROR": "AMDSMI_STATUS_FILE_ERROR - Error opening file",
    "OUT_OF_RESOURCES": "AMDSMI_STATUS_OUT_OF_RESOURCES - Not enough memory",
    "INTERNAL_EXCEPTION": "AMDSMI_STATUS_INTERNAL_EXCEPTION -  Internal error",
    "INPUT_OUT_OF_BOUNDS": "AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS - Out of bounds",
    "INIT_ERROR": "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    "REFCOUNT_OVERFLOW": "AMDSMI_STATUS_REFCOUNT_OVERFLOW - Internal reference counter "
                         "exceeded INT32_MAX",
    "DIRECTORY_NOT_FOUND": "AMDSMI_STATUS_DIRECTORY_NOT_FOUND - Error when a directory is not "
                           "found, maps to ENOTDIR",
    "BUSY": "AMDSMI_STATUS_BUSY - Device busy",
    "NOT_FOUND": "AMDSMI_STATUS_NOT_FOUND - Device Not found",
    "NOT_INIT": "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    "NO_SLOT": "AMDSMI_STATUS_NO_SLOT - No more free slot",
    "DRIVER_NOT_LOADED": "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
    "NO_DATA": "AMDSMI_STATUS_NO_DATA - No data was found for given input",
    "INSUFFICIENT_SIZE": "AMDSMI_STATUS_INSUFFICIENT_SIZE - Insufficient size for operation",
    "UNEXPECTED_SIZE": "AMDSMI_STATUS_UNEXPECTED_SIZE - unexpected size of data was read",
    "UNEXPECTED_DATA": "AMDSMI_STATUS_UNEXPECTED_DATA - The data read or provided was "
                       "unexpected",
    "NON_AMD_CPU": "AMDSMI_STATUS_NON_AMD_CPU - System has non-AMD CPU",
    "NO_ENERGY_DRV": "AMD_SMI_NO_ENERGY_DRV - Energy driver not found",
    "NO_MSR_DRV": "AMDSMI_STATUS_NO_MSR_DRV - MSR driver not found",
    "NO_HSMP_DRV": "AMD_SMI_NO_HSMP_DRV - HSMP driver not found",
    "NO_HSMP_SUP": "AMD_SMI_NO_HSMP_SUP - HSMP not supported",
    "NO_HSMP_MSG_SUP": "AMD_SMI_NO_HSMP_MSG_SUP - HSMP message/feature not supported",
    "HSMP_TIMEOUT": "AMD_SMI_HSMP_TIMEOUT - HSMP message timeout",
    "NO_DRV": "AMDSMI_STATUS_NO_DRV - No Energy and HSMP driver present",
    "FILE_NOT_FOUND": "AMDSMI_STATUS_FILE_NOT_FOUND - File or directory not found",
    "ARG_PTR_NULL": "AMDSMI_STATUS_ARG_PTR_NULL - Parsed argument is invalid",
    "MAP_ERROR": "AMDSMI_STATUS_MAP_ERROR - The internal library error did not map to a "
                 "status code",
    "AMDGPU_RESTART_ERR": "AMDSMI_STATUS_AMDGPU_RESTART_ERR - AMDGPU restart failed, please "
                          "check dmsg for errors",
    "SETTING_UNAVAILABLE": "AMDSMI_STATUS_SETTING_UNAVAILABLE - Setting is not available",
    "CORRUPTED_EEPROM": "AMDSMI_STATUS_CORRUPTED_EEPROM - Setting is not available",
    "UNKNOWN_ERROR": "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred",
}


@functools.cache
def _exceptions(version: str) -> types.ModuleType:
    """The amdsmi_exception module of one version (classes shared by fakes of that version)."""
    status = _STATUS_70 if version == "7.0" else _STATUS_64
    table = {status[name]: text for name, text in _ERR_INFO.items() if name in status}
    unknown = _ERR_INFO["UNKNOWN_ERROR"]
    mod = types.ModuleType("amdsmi.amdsmi_exception")

    class AmdSmiException(Exception):
        """Base smi exception class"""

    class AmdSmiLibraryException(AmdSmiException):
        def __init__(self, err_code: int) -> None:
            err_code = abs(err_code)
            super().__init__(err_code)
            self.err_code = err_code
            self.set_err_info()

        def __str__(self) -> str:
            return f"Error code:\n\t{self.err_code} | {self.err_info}"

        def get_error_code(self) -> int:
            return self.err_code

        def set_err_info(self) -> None:
            self.err_info = table.get(self.err_code, unknown)

    if version == "7.0":
        def get_error_info(self: Any, detailed: bool = True) -> str:
            return self.err_info if detailed else str(self.err_info).split(" - ")[0]
    else:
        def get_error_info(self: Any) -> str:
            return self.err_info
    AmdSmiLibraryException.get_error_info = get_error_info  # type: ignore[attr-defined]

    class AmdSmiRetryException(AmdSmiLibraryException):
        def __init__(self) -> None:
            super().__init__(status["RETRY"])

    class AmdSmiTimeoutException(AmdSmiLibraryException):
        def __init__(self) -> None:
            super().__init__(status["TIMEOUT"])

    class AmdSmiParameterException(AmdSmiException):
        def __init__(self, receivedValue: Any, expectedType: Any, msg: str | None = None):
            super().__init__(msg)
            self.err_code = None
            self.actualType = type(receivedValue)
            self.expectedType = expectedType
            self.err_msg = ("Invalid parameter:\n" + f"Actual type: {self.actualType}\n"
                            + f"Expected type: {self.expectedType}")
            if msg is not None:
                self.err_msg = msg

        def __str__(self) -> str:
            return self.err_msg

    class AmdSmiKeyException(AmdSmiException):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key
            self.err_msg = "Key " + key + " is missing from dictionary"

        def __str__(self) -> str:
            return self.err_msg

    class AmdSmiBdfFormatException(AmdSmiException):
        def __init__(self, bdf: str) -> None:
            super().__init__()
            self.bdf = bdf

        def __str__(self) -> str:
            return f"Wrong BDF format: {self.bdf}. "

    for cls in (AmdSmiException, AmdSmiLibraryException, AmdSmiRetryException,
                AmdSmiTimeoutException, AmdSmiParameterException, AmdSmiKeyException,
                AmdSmiBdfFormatException):
        cls.__module__ = "amdsmi.amdsmi_exception"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


# -- enums (amdsmi_interface.py classes; values from amdsmi_wrapper.py) ----------------------

def _words(text: str) -> list[str]:
    return text.split()


_FW_IDS = _words(
    "SMU CP_CE CP_PFP CP_ME CP_MEC_JT1 CP_MEC_JT2 CP_MEC1 CP_MEC2 RLC SDMA0 SDMA1 SDMA2 SDMA3 "
    "SDMA4 SDMA5 SDMA6 SDMA7 VCN UVD VCE ISP DMCU_ERAM DMCU_ISR RLC_RESTORE_LIST_GPM_MEM "
    "RLC_RESTORE_LIST_SRM_MEM RLC_RESTORE_LIST_CNTL RLC_V MMSCH PSP_SYSDRV PSP_SOSDRV PSP_TOC "
    "PSP_KEYDB DFC PSP_SPL DRV_CAP MC PSP_BL CP_PM4 RLC_P SEC_POLICY_STAGE2 "
    "REG_ACCESS_WHITELIST IMU_DRAM IMU_IRAM SDMA_TH0 SDMA_TH1 CP_MES MES_KIQ MES_STACK "
    "MES_THREAD1 MES_THREAD1_STACK RLX6 RLX6_DRAM_BOOT RS64_ME RS64_ME_P0_DATA RS64_ME_P1_DATA "
    "RS64_PFP RS64_PFP_P0_DATA RS64_PFP_P1_DATA RS64_MEC RS64_MEC_P0_DATA RS64_MEC_P1_DATA "
    "RS64_MEC_P2_DATA RS64_MEC_P3_DATA PPTABLE PSP_SOC PSP_DBG PSP_INTF RLX6_CORE1 "
    "RLX6_DRAM_BOOT_CORE1 RLCV_LX7 RLC_SAVE_RESTORE_LIST ASD TA_RAS TA_XGMI RLC_SRLG RLC_SRLS "
    "PM DMCU PLDM_BUNDLE"
)
_BOARD_TEMPS = (  # 7.0 only
    [("GPUBOARD_NODE_" + n, 100 + i) for i, n in enumerate(_words(
        "RETIMER_X OAM_X_IBC OAM_X_IBC_2 OAM_X_VDD18_VR OAM_X_04_HBM_B_VR "
        "OAM_X_04_HBM_D_VR"))]
    + [("GPUBOARD_NODE_LAST", 149)]
    + [("GPUBOARD_" + n, 150 + i) for i, n in enumerate(_words(
        "VDDCR_VDD0 VDDCR_VDD1 VDDCR_VDD2 VDDCR_VDD3 VDDCR_SOC_A VDDCR_SOC_C VDDCR_SOCIO_A "
        "VDDCR_SOCIO_C VDD_085_HBM VDDCR_11_HBM_B VDDCR_11_HBM_D VDD_USR VDDIO_11_E32"))]
    + [("GPUBOARD_VR_LAST", 199)]
    + [("BASEBOARD_" + n, 200 + i) for i, n in enumerate(_words(
        "UBB_FPGA UBB_FRONT UBB_BACK UBB_OAM7 UBB_IBC UBB_UFPGA UBB_OAM1 OAM_0_1_HSC "
        "OAM_2_3_HSC OAM_4_5_HSC OAM_6_7_HSC UBB_FPGA_0V72_VR UBB_FPGA_3V3_VR "
        "RETIMER_0_1_2_3_1V2_VR RETIMER_4_5_6_7_1V2_VR RETIMER_0_1_0V9_VR RETIMER_4_5_0V9_VR "
        "RETIMER_2_3_0V9_VR RETIMER_6_7_0V9_VR OAM_0_1_2_3_3V3_VR OAM_4_5_6_7_3V3_VR IBC_HSC "
        "IBC"))]
    + [("BASEBOARD_LAST", 249), ("BASEBOARD__MAX", 249)]
)
_GPU_BLOCKS = _words("UMC SDMA GFX MMHUB ATHUB PCIE_BIF HDP XGMI_WAFL DF SMN SEM MP0 MP1 FUSE "
                     "MCA VCN JPEG IH MPIO")
# The C values of amdsmi_evt_notification_type_t per version (what the kernel/rocm_smi send).
EVENT_C_VALUES = {
    "6.4": {"NONE": 0, "VMFAULT": 1, "THERMAL_THROTTLE": 2, "GPU_PRE_RESET": 3,
            "GPU_POST_RESET": 4, "RING_HANG": 5},
    "7.0": {"NONE": 0, "VMFAULT": 1, "THERMAL_THROTTLE": 2, "GPU_PRE_RESET": 3,
            "GPU_POST_RESET": 4, "MIGRATE_START": 5, "MIGRATE_END": 6, "PAGE_FAULT_START": 7,
            "PAGE_FAULT_END": 8, "QUEUE_EVICTION": 9, "QUEUE_RESTORE": 10,
            "UNMAP_FROM_GPU": 11, "PROCESS_START": 12, "PROCESS_END": 13},
}


@functools.cache
def _enums(version: str) -> dict[str, type[enum.IntEnum]]:
    def make(name: str, members: list[tuple[str, int]]) -> type[enum.IntEnum]:
        return enum.IntEnum(name, members, module="amdsmi.amdsmi_interface")  # type: ignore

    temps = [("EDGE", 0), ("HOTSPOT", 1), ("JUNCTION", 1), ("VRAM", 2), ("HBM_0", 3),
             ("HBM_1", 4), ("HBM_2", 5), ("HBM_3", 6), ("PLX", 7)]
    if version == "7.0":
        temps += _BOARD_TEMPS
        events = [(n, v) for n, v in EVENT_C_VALUES["7.0"].items()]
        # 7.0.2: PAGE_FAULT_START = amdsmi_wrapper.AMDSMI_EVT_NOTIF_PAGE_FAULT_END (sic)
        events = [(n, 8 if n == "PAGE_FAULT_START" else v) for n, v in events]
    else:
        events = list(EVENT_C_VALUES["6.4"].items())
    fw = [(f"AMDSMI_FW_ID_{n}", i + 1) for i, n in enumerate(_FW_IDS) if n != "MES_KIQ"]
    xgmi = 2 if version == "7.0" else 1
    return {
        "AmdSmiInitFlags": make("AmdSmiInitFlags", [
            ("INIT_ALL_PROCESSORS", 0xFFFFFFFF), ("INIT_AMD_CPUS", 1), ("INIT_AMD_GPUS", 2),
            ("INIT_AMD_APUS", 3), ("INIT_NON_AMD_CPUS", 4), ("INIT_NON_AMD_GPUS", 8)]),
        "AmdSmiTemperatureType": make("AmdSmiTemperatureType", temps),
        "AmdSmiTemperatureMetric": make("AmdSmiTemperatureMetric", [
            ("CURRENT", 0), ("MAX", 1), ("MIN", 2), ("MAX_HYST", 3), ("MIN_HYST", 4),
            ("CRITICAL", 5), ("CRITICAL_HYST", 6), ("EMERGENCY", 7), ("EMERGENCY_HYST", 8),
            ("CRIT_MIN", 9), ("CRIT_MIN_HYST", 10), ("OFFSET", 11), ("LOWEST", 12),
            ("HIGHEST", 13)]),
        "AmdSmiClkType": make("AmdSmiClkType", [
            ("SYS", 0), ("GFX", 0), ("DF", 1), ("DCEF", 2), ("SOC", 3), ("MEM", 4), ("PCIE", 5),
            ("VCLK0", 6), ("VCLK1", 7), ("DCLK0", 8), ("DCLK1", 9)]),
        "AmdSmiMemoryType": make("AmdSmiMemoryType", [("VRAM", 0), ("VIS_VRAM", 1),
                                                      ("GTT", 2)]),
        "AmdSmiGpuBlock": make("AmdSmiGpuBlock", [("INVALID", 0)] + [
            (n, 1 << i) for i, n in enumerate(_GPU_BLOCKS)] + [("RESERVED", 1 << 63)]),
        "AmdSmiEvtNotificationType": make("AmdSmiEvtNotificationType", events),
        "AmdSmiMemoryPageStatus": make("AmdSmiMemoryPageStatus", [
            ("RESERVED", 0), ("PENDING", 1), ("UNRESERVABLE", 2)]),
        "AmdSmiRasErrState": make("AmdSmiRasErrState", [
            ("NONE", 0), ("DISABLED", 1), ("PARITY", 2), ("SING_C", 3), ("MULT_UC", 4),
            ("POISON", 5), ("ENABLED", 6), ("INVALID", 0xFFFFFFFF)]),
        "AmdSmiComputePartitionType": make("AmdSmiComputePartitionType", [
            ("SPX", 1), ("DPX", 2), ("TPX", 3), ("QPX", 4), ("CPX", 5), ("INVALID", 0)]),
        "AmdSmiMemoryPartitionType": make("AmdSmiMemoryPartitionType", [
            ("NPS1", 1), ("NPS2", 2), ("NPS4", 4), ("NPS8", 8), ("UNKNOWN", 0)]),
        # XGMI and PCIE swapped values between 6.4.3 (XGMI=1, PCIE=2) and 7.0.2
        "AmdSmiLinkType": make("AmdSmiLinkType", [
            ("AMDSMI_LINK_TYPE_INTERNAL", 0), ("AMDSMI_LINK_TYPE_XGMI", xgmi),
            ("AMDSMI_LINK_TYPE_PCIE", 3 - xgmi), ("AMDSMI_LINK_TYPE_NOT_APPLICABLE", 3),
            ("AMDSMI_LINK_TYPE_UNKNOWN", 4)]),
        "AmdSmiVramType": make("AmdSmiVramType", [
            ("UNKNOWN", 0), ("HBM", 1), ("HBM2", 2), ("HBM2E", 3), ("HBM3", 4), ("DDR2", 10),
            ("DDR3", 11), ("DDR4", 12), ("GDDR1", 17), ("GDDR2", 18), ("GDDR3", 19),
            ("GDDR4", 20), ("GDDR5", 21), ("GDDR6", 22), ("GDDR7", 23), ("MAX", 23)]),
        "AmdSmiFwBlock": make("AmdSmiFwBlock", fw),
    }


# -- the Python layer's helpers, ported (amdsmi_interface.py 7.0.2 L700-L770) ----------------

def _validate(value: Any, width: int, activity: bool = False, boolean: bool = False) -> Any:
    """_validate_if_max_uint: max-of-width (or >100 for activities) -> "N/A"; bools."""
    umax = MAX[width]
    if not isinstance(value, list):
        if value == umax or (activity and value > 100):
            return NA
        return bool(value) if boolean else value
    out = [NA if (v == umax or (activity and v > 100)) else v for v in value]
    return bool(out) if boolean else out


def _pad_hex(value: str, length: int) -> str:
    if len(value) > 2 and length > 1 and value[:2].lower() == "0x" \
            and all(c in "0123456789abcdefABCDEF" for c in value[2:]):
        return "0x" + value[2:].zfill(length)
    return value


def _format_bdf(bdf: dict[str, int]) -> str:
    return (hex(bdf["domain"])[2:].zfill(4) + ":" + hex(bdf["bus"])[2:].zfill(2) + ":"
            + hex(bdf["device"])[2:].zfill(2) + "." + hex(bdf["function"])[2:])


def _float32(value: float) -> float:
    return ctypes.c_float(value).value


# gpu_metrics: (key, C width, shape, conversion, since); the order is the Python dict's.
# conversion: "" plain, "act" isActivity, "bool" isBool, "acc64" isActivity in 6.4 only.
_METRICS: list[tuple[str, int, tuple[int, ...], str, str]] = [
    ("common_header.structure_size", 16, (), "", "7.0"),
    ("common_header.format_revision", 8, (), "", "7.0"),
    ("common_header.content_revision", 8, (), "", "7.0"),
    *[(f"temperature_{n}", 16, (), "", "6.4")
      for n in ("edge", "hotspot", "mem", "vrgfx", "vrsoc", "vrmem")],
    *[(f"average_{n}_activity", 16, (), "act", "6.4") for n in ("gfx", "umc", "mm")],
    ("average_socket_power", 16, (), "", "6.4"),
    ("energy_accumulator", 64, (), "", "6.4"),
    ("system_clock_counter", 64, (), "", "6.4"),
    *[(f"average_{n}_frequency", 16, (), "", "6.4")
      for n in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0", "vclk1", "dclk1")],
    *[(f"current_{n}", 16, (), "", "6.4")
      for n in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0", "vclk1", "dclk1")],
    ("throttle_status", 32, (), "bool", "6.4"),
    ("current_fan_speed", 16, (), "", "6.4"),
    ("pcie_link_width", 16, (), "", "6.4"),
    ("pcie_link_speed", 16, (), "", "6.4"),
    ("gfx_activity_acc", 32, (), "", "6.4"),
    ("mem_activity_acc", 32, (), "", "6.4"),
    ("temperature_hbm", 16, (4,), "", "6.4"),
    ("firmware_timestamp", 64, (), "", "6.4"),
    ("voltage_soc", 16, (), "", "6.4"),
    ("voltage_gfx", 16, (), "", "6.4"),
    ("voltage_mem", 16, (), "", "6.4"),
    ("indep_throttle_status", 64, (), "bool", "6.4"),
    ("current_socket_power", 16, (), "", "6.4"),
    ("vcn_activity", 16, (4,), "act", "6.4"),
    ("gfxclk_lock_status", 32, (), "", "6.4"),
    ("xgmi_link_width", 16, (), "", "6.4"),
    ("xgmi_link_speed", 16, (), "", "6.4"),
    ("pcie_bandwidth_acc", 64, (), "", "6.4"),
    ("pcie_bandwidth_inst", 64, (), "", "6.4"),
    ("pcie_l0_to_recov_count_acc", 64, (), "", "6.4"),
    ("pcie_replay_count_acc", 64, (), "", "6.4"),
    ("pcie_replay_rover_count_acc", 64, (), "", "6.4"),
    ("xgmi_read_data_acc", 64, (8,), "", "6.4"),
    ("xgmi_write_data_acc", 64, (8,), "", "6.4"),
    ("current_gfxclks", 16, (8,), "", "6.4"),
    ("current_socclks", 16, (4,), "", "6.4"),
    ("current_vclk0s", 16, (4,), "", "6.4"),
    ("current_dclk0s", 16, (4,), "", "6.4"),
    ("jpeg_activity", 16, (32,), "act", "6.4"),
    ("pcie_nak_sent_count_acc", 32, (), "", "6.4"),
    ("pcie_nak_rcvd_count_acc", 32, (), "", "6.4"),
    ("accumulation_counter", 64, (), "", "6.4"),
    *[(f"{n}_residency_acc", 64, (), "", "6.4")
      for n in ("prochot", "ppt", "socket_thm", "vr_thm", "hbm_thm")],
    ("num_partition", 16, (), "", "6.4"),
    ("xcp_stats.gfx_busy_inst", 32, (8, 8), "act", "6.4"),
    ("xcp_stats.jpeg_busy", 16, (8, 0), "act", "6.4"),  # 32 per XCP in 6.4.3, 40 in 7.0.2
    ("xcp_stats.vcn_busy", 16, (8, 4), "act", "6.4"),
    ("xcp_stats.gfx_busy_acc", 64, (8, 8), "acc64", "6.4"),
    ("xcp_stats.gfx_below_host_limit_acc", 64, (8, 8), "acc64", "6.4"),
    ("xcp_stats.gfx_below_host_limit_ppt_acc", 64, (8, 8), "", "7.0"),
    ("xcp_stats.gfx_below_host_limit_thm_acc", 64, (8, 8), "", "7.0"),
    ("xcp_stats.gfx_low_utilization_acc", 64, (8, 8), "", "7.0"),
    ("xcp_stats.gfx_below_host_limit_total_acc", 64, (8, 8), "", "7.0"),
    ("pcie_lc_perf_other_end_recovery", 32, (), "", "6.4"),
    ("vram_max_bandwidth", 64, (), "", "6.4"),
    ("xgmi_link_status", 16, (8,), "", "6.4"),
]
_VIOL_SCALARS = ("prochot_thrm", "ppt_pwr", "socket_thrm", "vr_thrm", "hbm_thrm",
                 "gfx_clk_below_host_limit")
_VIOL_ARRAYS = ("gfx_clk_below_host_limit_pwr", "gfx_clk_below_host_limit_thm",
                "gfx_clk_below_host_limit_total", "low_utilization")
_RESIDENCY = ("prochot", "ppt", "socket_thm", "vr_thm", "hbm_thm")


def _shape(shape: tuple[int, ...], width: int, version: str) -> tuple[int, ...]:
    if shape == (8, 0):
        return (8, 40 if version == "7.0" else 32)
    return shape


def _filled(shape: tuple[int, ...], value: Any) -> Any:
    if not shape:
        return value
    return [_filled(shape[1:], value) for _ in range(shape[0])]


def _metrics_spec(version: str) -> list[tuple[str, int, tuple[int, ...], str]]:
    return [(k, w, _shape(s, w, version), c) for k, w, s, c, since in _METRICS
            if version == "7.0" or since == "6.4"]


# C struct field widths per function: int = scalar width, (width, *shape) = array, "str".
def _c_spec(fn: str, version: str) -> dict[str, Any]:
    u = {
        "amdsmi_get_gpu_asic_info": {
            "market_name": "str", "vendor_id": 32, "vendor_name": "str", "subvendor_id": 32,
            "device_id": 64, "rev_id": 32, "asic_serial": "str", "oam_id": 32,
            "num_compute_units": 32, "target_graphics_version": 64,
            **({"subsystem_id": 32} if version == "7.0" else {})},
        "amdsmi_get_gpu_board_info": dict.fromkeys(
            ("model_number", "product_serial", "fru_id", "product_name", "manufacturer_name"),
            "str"),
        "amdsmi_get_gpu_vbios_info": dict.fromkeys(
            ("name", "build_date", "part_number", "version"), "str"),
        "amdsmi_get_gpu_driver_info": dict.fromkeys(
            ("driver_name", "driver_version", "driver_date"), "str"),
        "amdsmi_get_gpu_kfd_info": {"kfd_id": 64, "node_id": 32, "current_partition_id": 32},
        "amdsmi_get_gpu_enumeration_info": {"drm_render": 32, "drm_card": 32, "hsa_id": 32,
                                            "hip_id": 32, "hip_uuid": "str"},
        "amdsmi_get_gpu_activity": dict.fromkeys(
            ("gfx_activity", "umc_activity", "mm_activity"), 32),
        "amdsmi_get_gpu_metrics_info": {k: (w, *s) if s else w
                                        for k, w, s, _ in _metrics_spec(version)},
        "amdsmi_get_power_info": (
            {"socket_power": 64, "current_socket_power": 32, "average_socket_power": 32,
             "gfx_voltage": 64, "soc_voltage": 64, "mem_voltage": 64, "power_limit": 32}
            if version == "7.0" else
            {"current_socket_power": 32, "average_socket_power": 32, "gfx_voltage": 32,
             "soc_voltage": 32, "mem_voltage": 32, "power_limit": 32}),
        "amdsmi_get_power_cap_info": dict.fromkeys(
            ("power_cap", "default_power_cap", "dpm_cap", "min_power_cap", "max_power_cap"),
            64),
        "amdsmi_get_energy_count": {"energy_accumulator": 64, "counter_resolution": "float",
                                    "timestamp": 64},
        "amdsmi_get_clock_info": {"clk": 32, "min_clk": 32, "max_clk": 32, "clk_locked": 8,
                                  "clk_deep_sleep": 8},
        "amdsmi_get_gpu_vram_usage": {"vram_total": 32, "vram_used": 32},
        "amdsmi_get_pcie_info": {
            "pcie_static": {"max_pcie_width": 16, "max_pcie_speed": 32,
                            "pcie_interface_version": 32, "slot_type": 32},
            "pcie_metric": {"pcie_width": 16, "pcie_speed": 32, "pcie_bandwidth": 32,
                            "pcie_replay_count": 64, "pcie_l0_to_recovery_count": 64,
                            "pcie_replay_roll_over_count": 64, "pcie_nak_sent_count": 64,
                            "pcie_nak_received_count": 64,
                            "pcie_lc_perf_other_end_recovery_count": 32}},
        "amdsmi_get_gpu_pci_throughput": {"sent": 64, "received": 64, "max_pkt_sz": 64},
        "amdsmi_get_violation_status": {
            "reference_timestamp": 64, "violation_timestamp": 64, "acc_counter": 64,
            **{f"acc_{n}": 64 for n in _VIOL_SCALARS},
            **({f"acc_{n}": (64, 8, 8) for n in _VIOL_ARRAYS} if version == "7.0" else {}),
            **{f"per_{n}": 64 for n in _VIOL_SCALARS},
            **({f"per_{n}": (64, 8, 8) for n in _VIOL_ARRAYS} if version == "7.0" else {}),
            **{f"active_{n}": 8 for n in _VIOL_SCALARS},
            **({f"active_{n}": (8, 8, 8) for n in _VIOL_ARRAYS} if version == "7.0" else {})},
        "amdsmi_get_gpu_total_ecc_count": dict.fromkeys(
            ("correctable_count", "uncorrectable_count", "deferred_count"), 64),
        "amdsmi_get_xgmi_info": {"xgmi_lanes": 8, "xgmi_hive_id": 64, "xgmi_node_id": 64,
                                 "index": 32},
        "amdsmi_get_link_metrics": {"num_links": 32},
        "amdsmi_get_gpu_ecc_enabled": 64,
        "amdsmi_get_gpu_memory_total": 64,
        "amdsmi_get_gpu_memory_usage": 64,
        "amdsmi_get_temp_metric": 64,
        "amdsmi_get_gpu_fan_speed": 64,
        "amdsmi_get_gpu_fan_speed_max": 64,
    }
    u["amdsmi_get_gpu_ecc_count"] = u["amdsmi_get_gpu_total_ecc_count"]
    return u.get(fn, {})


def _dummy(spec: Any, width: int | None = None) -> Any:
    """A C struct whose every member is its unsupported sentinel (what the [stub] filled)."""
    if isinstance(spec, dict):
        return {k: _dummy(v) for k, v in spec.items()}
    if spec == "str":
        return ""
    if spec == "float":
        return 0.0
    if isinstance(spec, tuple):
        return _filled(spec[1:], MAX[spec[0]])
    return MAX[width or spec]


def _split_path(container: Any, path: str) -> tuple[Any, Any, str | None]:
    """(parent, key, rest): the longest dict key that prefixes `path`, or a list index."""
    parts = path.split(".")
    if isinstance(container, list):
        return container, int(parts[0]), ".".join(parts[1:]) or None
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in container:
            return container, key, ".".join(parts[i:]) or None
    raise KeyError(path)


def _get_path(container: Any, path: str) -> Any:
    parent, key, rest = _split_path(container, path)
    return parent[key] if rest is None else _get_path(parent[key], rest)


def _set_path(container: Any, path: str, value: Any) -> None:
    parent, key, rest = _split_path(container, path)
    if rest is None:
        parent[key] = value
    else:
        _set_path(parent[key], rest, value)


def _all_na(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_all_na(v) for v in value)
    return value == NA


# -- the modelled box ---------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    key: str
    family: str  # "mi300" (CDNA3) or "mi200" (CDNA2)
    market_name: str
    device_id: int
    gfx: int  # target_graphics_version as the C struct holds it: "gfx" + hex(gfx)[2:]
    compute_units: int
    xccs: int  # compute dies (XCC) per handle in SPX
    vram_mb: int
    vram_type: str
    power_cap_w: int
    idle_w: int
    pcie_gen: int
    slot_type: int  # amdsmi_card_form_factor_t: PCIE 0, OAM 1, CEM 2, UNKNOWN 3
    xgmi: bool
    buses: tuple[int, ...]
    gfx_mhz: tuple[int, int]
    mem_mhz: tuple[int, int]
    soc_mhz: tuple[int, int]
    temp_limits: dict[str, tuple[int, int]]  # sensor -> (critical, emergency) in °C
    metrics_rev: dict[str, tuple[int, int]]  # version -> gpu_metrics format/content revision
    product_name: str
    vbios: tuple[str, str, str, str]  # name, build_date, part_number, version


_MI200_TEMPS = {"EDGE": (100, 105), "HOTSPOT": (110, 115), "VRAM": (100, 105)}
PROFILE_DATA = {
    "mi300x": Profile(
        "mi300x", "mi300", "AMD Instinct MI300X", 0x74A1, 0x942, 304, 8, 196592, "HBM3", 750,
        140, 5, 1, True, (0x0C, 0x22, 0x38, 0x5C, 0x9F, 0xAF, 0xBF, 0xDF), (500, 2100),
        (900, 1300), (28, 1143), {"HOTSPOT": (110, 115), "VRAM": (95, 100)},
        {"6.4": (1, 7), "7.0": (1, 8)}, "AMD Instinct MI300X OAM",
        ("AMD MI300X_HW_SRIOV_CVS_1VF", "2024/06/24 10:51", "113-M3000100-103",
         "022.040.003.043.000001")),
    "mi250x": Profile(
        "mi250x", "mi200", "AMD Instinct MI250X", 0x740C, 0x90A, 110, 1, 65520, "HBM2E", 560,
        90, 4, 1, True, (0x29, 0x2C, 0x2F, 0x32, 0xA9, 0xAC, 0xAF, 0xB2), (500, 1700),
        (1600, 1600), (500, 1090), _MI200_TEMPS, {"6.4": (1, 3), "7.0": (1, 3)},
        "AMD Instinct MI250X OAM",
        ("113-D65201-042", "2022/04/12 09:32", "113-D65201-042", "022.012.000.021.000000")),
    "mi210": Profile(
        "mi210", "mi200", "AMD Instinct MI210", 0x740F, 0x90A, 104, 1, 65520, "HBM2E", 300,
        40, 4, 2, False, (0x03, 0x23, 0x43, 0x63, 0x83, 0xA3, 0xC3, 0xE3), (500, 1700),
        (1600, 1600), (500, 1090), _MI200_TEMPS, {"6.4": (1, 3), "7.0": (1, 3)},
        "AMD Instinct MI210",
        ("113-D67301-063", "2022/08/02 13:07", "113-D67301-063", "022.020.003.019.000001")),
}
_VRAM_TYPES = {"HBM2E": 3, "HBM3": 4}
_ENERGY_RESOLUTION = _float32(15.259)  # µJ per tick; the dict's counter_resolution
_EPOCH_US = 1_760_000_000 * 10**6  # reference_timestamp base (CPU µs since the epoch)
_BOOT_NS = 86_400 * 10**9  # driver timestamps: one day since boot at now=0


def _util(card: int, xcc: int) -> int:
    """gfx busy % of one compute die: fixed, spread over 0..96."""
    return (37 * card + 53 * xcc + 11) % 97


@dataclass
class _Card:
    index: int
    rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_RESIDENCY, 0.0))
    rate_t: float = 0.0
    residency: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_RESIDENCY, 0.0))


@dataclass
class _Handle:
    index: int  # position in amdsmi_get_processor_handles()
    card: int
    part: int  # partition (XCP) id; 0 in SPX
    address: int
    generation: int


@dataclass
class _Rule:  # a fault, an override, or a gate
    fn: str
    handle_index: int | None
    arg: Any = None
    code: int = 0
    remaining: int | None = None
    path: str | None = None
    value: Any = None


class _ImportFails(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "amdsmi":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        import_failure()


def import_failure(rocm_path: str | None = None) -> None:
    """What `import amdsmi` (6.4/7.0) does without libamd_smi.so: print to stdout, KeyError."""
    base = rocm_path or os.getenv("ROCM_PATH", "/opt/rocm")
    location = os.path.join(base, "lib", "libamd_smi.so")
    print(f"{location}: cannot open shared object file: No such file or directory")
    print("Unable to find libamd_smi.so library try installing amd-smi-lib from your package "
          "manager")
    raise KeyError("libamd_smi.so")


@contextlib.contextmanager
def amdsmi_import_fails() -> Iterator[None]:
    """Within the block, a real `import amdsmi` behaves as on a host without ROCm."""
    finder = _ImportFails()
    saved = sys.modules.pop("amdsmi", None)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop("amdsmi", None)
        if saved is not None:
            sys.modules["amdsmi"] = saved


_NOHANDLE = object()


class _Since:
    """A module function that exists only from `version` on (AttributeError before)."""

    def __init__(self, version: str, func: Any) -> None:
        self.version, self.func = version, func

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self.func
        if obj._f_version < self.version:
            raise AttributeError(f"module 'amdsmi' has no attribute '{self.name}'")
        return types.MethodType(self.func, obj)


class _PerVersion:
    """A module function whose signature differs per version."""

    def __init__(self, **funcs: Any) -> None:
        self.funcs = {k.replace("v", "").replace("_", "."): f for k, f in funcs.items()}

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return types.MethodType(self.funcs[obj._f_version], obj)


class _EventReaderBase:
    """amdsmi.AmdSmiEventReader; each fake makes a subclass bound to itself."""

    _fake: FakeAmdSmi

    def __init__(self, processor_handle: ctypes.c_void_p, event_types: Any) -> None:
        fake = self._fake
        ex = fake.amdsmi_exception
        if not isinstance(processor_handle, ctypes.c_void_p):
            raise ex.AmdSmiParameterException(processor_handle, ctypes.c_void_p)
        if not isinstance(event_types, Iterable):
            raise ex.AmdSmiParameterException(event_types, Iterable)
        evt = fake.AmdSmiEvtNotificationType
        for event_type in event_types:
            if not isinstance(event_type, evt):
                raise ex.AmdSmiParameterException(event_type, evt)
        self.processor_handle = processor_handle
        mask = 0
        for event_type in event_types:  # iterated twice, as the real code does
            if event_type != evt.NONE:
                mask |= 1 << (int(event_type) - 1)
        fake._f_evt_init(processor_handle)
        fake._f_evt_mask(processor_handle, mask)

    def read(self, timestamp: int, num_elem: int = 10) -> list[dict[str, Any]]:
        return self._fake._f_evt_read(timestamp, num_elem)

    def stop(self) -> None:
        self._fake._f_evt_stop(self.processor_handle)

    def __enter__(self) -> _EventReaderBase:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.stop()


class FakeAmdSmi(types.ModuleType):
    def __init__(self, profile: str = "mi300x", *, cards: int = 2, partition: str = "SPX",
                 version: str = "7.0") -> None:
        super().__init__("amdsmi")
        if profile not in PROFILE_DATA:
            raise ValueError(f"profile {profile!r}: one of {PROFILES}")
        if version not in VERSIONS:
            raise ValueError(f"version {version!r}: one of {tuple(VERSIONS)} (older amdsmi "
                             "Python layers differ in more than keys; not modelled)")
        if partition not in PARTITIONS:
            raise ValueError(f"partition {partition!r}: one of {tuple(PARTITIONS)}")
        prof = PROFILE_DATA[profile]
        if prof.family == "mi200" and partition != "SPX":
            raise ValueError(f"{profile} cannot be partitioned (compute partition is "
                             "NOT_SUPPORTED on MI200)")
        if partition == "TPX":
            raise ValueError("TPX is an MI300A mode (6 XCDs); MI300X: SPX, DPX, QPX, CPX")
        if not 0 <= cards <= 16:
            raise ValueError("cards: 0..16")
        self._f_version = version
        self._f_profile = prof
        self._f_partition = partition
        self._f_parts = PARTITIONS[partition]
        self._f_cards = [_Card(i) for i in range(cards)]
        self._f_status = _STATUS_70 if version == "7.0" else _STATUS_64
        self._f_lock = threading.RLock()
        self._f_events = threading.Condition()
        self._f_refcount = 0
        self._f_generation = 0
        self._f_in_flight = 0
        self._f_handles: dict[int, _Handle] = {}  # address -> handle, every generation
        self._f_base = 0x5500_0000_0000 + ((id(self) >> 4 & 0xFFFF) << 28)
        self._f_current: list[_Handle] = []
        self._f_faults: list[_Rule] = []
        self._f_overrides: list[_Rule] = []
        self._f_gates: list[_Rule] = []
        self._f_entered: dict[str, threading.Event] = {}
        self._f_readers: dict[int, int] = {}  # handle address -> event mask (C side)
        self._f_queue: list[tuple[int, int, str]] = []  # (address, C event value, message)
        self.now = 0.0
        self.simulated_seconds = 0.0
        self.calls: list[tuple[str, int | None]] = []
        self.violations: list[str] = []
        self.init_count = 0
        self.shutdown_count = 0
        self.__version__ = VERSIONS[version]
        ex = _exceptions(version)
        self.amdsmi_exception = ex
        for name in ("AmdSmiException", "AmdSmiLibraryException", "AmdSmiRetryException",
                     "AmdSmiTimeoutException", "AmdSmiParameterException",
                     "AmdSmiKeyException", "AmdSmiBdfFormatException"):
            setattr(self, name, getattr(ex, name))
        for name, cls in _enums(version).items():
            setattr(self, name, cls)
        wrapper = types.ModuleType("amdsmi.amdsmi_wrapper")
        for name, value in self._f_status.items():
            setattr(wrapper, f"AMDSMI_STATUS_{name}", value)
        wrapper.amdsmi_processor_handle = ctypes.c_void_p  # type: ignore[attr-defined]
        self.amdsmi_wrapper = wrapper
        self.AmdSmiEventReader = type("AmdSmiEventReader", (_EventReaderBase,), {
            "_fake": self, "__module__": "amdsmi.amdsmi_interface"})
        init = FakeAmdSmi.amdsmi_init
        init = types.FunctionType(init.__code__, init.__globals__, "amdsmi_init",
                                  (self.AmdSmiInitFlags.INIT_AMD_GPUS,), init.__closure__)
        self.amdsmi_init = types.MethodType(init, self)

    def __repr__(self) -> str:
        return (f"<FakeAmdSmi {self._f_profile.key} x{len(self._f_cards)} {self._f_partition} "
                f"amdsmi {self.__version__}>")

    # -- test controls ----------------------------------------------------------------------
    @property
    def fake_profile(self) -> Profile:
        return self._f_profile

    @property
    def fake_version(self) -> str:
        return self._f_version

    @property
    def partitions_per_card(self) -> int:
        return self._f_parts

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def fail(self, function_name: str, err_code: int, handle_index: int | None = None,
             times: int | None = None, *, arg: Any = None) -> None:
        """The C call of function_name returns err_code `times` times (None: until cleared)."""
        with self._f_lock:
            self._f_faults.append(_Rule(function_name, handle_index, arg, code=err_code,
                                        remaining=times))

    def clear_faults(self) -> None:
        with self._f_lock:
            self._f_faults.clear()
        self.release_all()

    def set(self, function_name: str, key: str | None, value: Any,
            handle_index: int | None = None, *, arg: Any = None) -> None:
        """Override a C-level value (see the module docstring); "N/A" means na()."""
        if isinstance(value, str) and value == NA:
            self.na(function_name, key or "", handle_index, arg=arg)
            return
        self._f_override(function_name, handle_index, arg, key, _copy(value))

    def na(self, function_name: str, key: str, handle_index: int | None = None, *,
           arg: Any = None) -> None:
        """The C library reports `key` as unsupported, with a sentinel the Python shows as N/A."""
        width, shape = self._f_field(function_name, key)
        if width == "str":
            candidates: list[Any] = [""]
        else:
            candidates = [_filled(shape, MAX[w]) for w in (64, 32, 16, 8) if w <= width]
        for value in candidates:
            raw = _dummy(_c_spec(function_name, self._f_version))
            _set_path(raw, key, value)
            out = self._f_convert(function_name, raw)
            if isinstance(out, dict) and _all_na(_get_path(out, key)):
                self._f_override(function_name, handle_index, arg, key, value)
                return
        raise ValueError(f"amdsmi {self.__version__} never returns 'N/A' for "
                         f"{function_name}[{key!r}]: its Python passes the C value through; "
                         "use sentinel()")

    def sentinel(self, function_name: str, key: str, width: int = 32,
                 handle_index: int | None = None, *, arg: Any = None) -> None:
        """The C field `key` holds the max of `width` bits (the Python decides what shows)."""
        if width not in (8, 16, 32, 64):
            raise ValueError("width: 8, 16, 32 or 64")
        field_width, shape = self._f_field(function_name, key)
        if field_width == "str" or width > field_width:
            raise ValueError(f"{function_name}[{key!r}] is a {field_width}-bit C field")
        self._f_override(function_name, handle_index, arg, key, _filled(shape, MAX[width]))

    def _f_override(self, fn: str, handle_index: int | None, arg: Any, path: str | None,
                    value: Any) -> None:
        with self._f_lock:
            self._f_overrides.append(_Rule(fn, handle_index, arg, path=path, value=value))

    def reset_overrides(self) -> None:
        with self._f_lock:
            self._f_overrides.clear()

    def throttle(self, handle_index: int, **fractions: float) -> None:
        """From now on, `handle_index`'s card is throttled for these fractions of the time."""
        unknown = set(fractions) - set(_RESIDENCY)
        if unknown:
            raise ValueError(f"throttle reasons: {_RESIDENCY}")
        with self._f_lock:
            card = self._f_cards[self._f_card_of(handle_index)]
            self._f_rebase(card)
            card.rates.update({k: float(v) for k, v in fractions.items()})

    def emit(self, handle_index: int, event_name: str, message: str = "") -> bool:
        """The kernel sends event `event_name` for that handle; False if nobody listens."""
        values = EVENT_C_VALUES[self._f_version]
        if event_name not in values:
            raise ValueError(f"amdsmi {self.__version__} C events: {sorted(values)}")
        value = values[event_name]
        with self._f_lock:
            if not 0 <= handle_index < len(self._f_current):
                raise ValueError(f"no handle {handle_index} (call amdsmi_init first)")
            address = self._f_current[handle_index].address
        tokens = message.split()
        text = tokens[0][:63] if tokens else ""  # rocm_smi: fscanf("%lx %63s")
        with self._f_events:
            mask = self._f_readers.get(address)
            if mask is None or value == 0 or not mask & (1 << (value - 1)):
                return False
            self._f_queue.append((address, value, text))
            self._f_events.notify_all()
        return True

    def block(self, function_name: str, handle_index: int | None = None) -> threading.Event:
        """Calls of function_name (on that handle) wait until the returned Event is set."""
        gate = threading.Event()
        with self._f_lock:
            self._f_gates.append(_Rule(function_name, handle_index, value=gate))
            self._f_entered[function_name] = threading.Event()
        return gate

    def entered(self, function_name: str) -> threading.Event:
        """Set once a call of function_name waits on a block() gate."""
        with self._f_lock:
            return self._f_entered.setdefault(function_name, threading.Event())

    def release_all(self) -> None:
        with self._f_lock:
            for rule in self._f_gates:
                rule.value.set()

    def missing_library(self) -> None:
        """Reproduce `import amdsmi` on a host without ROCm (stdout lines, KeyError)."""
        import_failure()

    @contextlib.contextmanager
    def installed(self) -> Iterator[FakeAmdSmi]:
        """Within the block, `import amdsmi` gives this fake."""
        saved = sys.modules.get("amdsmi")
        sys.modules["amdsmi"] = self
        try:
            yield self
        finally:
            if saved is None:
                sys.modules.pop("amdsmi", None)
            else:
                sys.modules["amdsmi"] = saved

    def open_readers(self) -> int:
        with self._f_events:
            return len(self._f_readers)

    def calls_in_flight(self) -> int:
        with self._f_lock:
            return self._f_in_flight

    def call_count(self, function_name: str, handle_index: int | None = None) -> int:
        return sum(1 for fn, i in self.calls
                   if fn == function_name and (handle_index is None or i == handle_index))

    def assert_clean(self) -> None:
        problems = list(self.violations)
        if self.open_readers():
            problems.append(f"{self.open_readers()} event reader(s) never stopped")
        if self._f_refcount:
            problems.append(f"amdsmi_init without amdsmi_shut_down ({self._f_refcount} open)")
        if problems:
            raise AssertionError("fake amdsmi saw misuse:\n" + "\n".join(problems))

    # -- call machinery ---------------------------------------------------------------------
    def _f_err(self, code: int) -> Exception:
        ex = self.amdsmi_exception
        if code == self._f_status["RETRY"]:
            return ex.AmdSmiRetryException()
        if code == self._f_status["TIMEOUT"]:
            return ex.AmdSmiTimeoutException()
        return ex.AmdSmiLibraryException(code)

    @contextlib.contextmanager
    def _f_api(self, name: str, handle: Any = _NOHANDLE, arg: Any = None,
               checks: tuple[tuple[Any, Any], ...] = ()) -> Iterator[_Handle | None]:
        ex = self.amdsmi_exception
        with self._f_lock:
            known = self._f_handles.get(handle.value or 0) \
                if isinstance(handle, ctypes.c_void_p) else None
            self.calls.append((name, known.index if known else None))
            self.init_count += name == "amdsmi_init"
            self.shutdown_count += name == "amdsmi_shut_down"
        if handle is not _NOHANDLE and not isinstance(handle, ctypes.c_void_p):
            raise ex.AmdSmiParameterException(handle, ctypes.c_void_p)
        for value, expected in checks:
            if not isinstance(value, expected):
                raise ex.AmdSmiParameterException(value, expected)
        with self._f_lock:
            self._f_in_flight += 1
        try:
            self._f_wait_gates(name, known.index if known else None)
            with self._f_lock:
                if name == "amdsmi_shut_down" and self._f_in_flight > 1:
                    message = (f"amdsmi_shut_down while {self._f_in_flight - 1} other amdsmi "
                               "call(s) in flight")
                    self.violations.append(message)
                    raise AssertionError(message)
                if name not in _NO_INIT_NEEDED and self._f_refcount == 0:
                    raise self._f_err(self._f_status["NOT_INIT"])
                resolved = None
                if handle is not _NOHANDLE:
                    if not handle.value:
                        raise self._f_err(self._f_status["INVAL"])
                    if known is None or known.generation != self._f_generation:
                        raise self._f_err(self._f_status["NOT_FOUND"])
                    resolved = known
                self._f_inject(name, resolved.index if resolved else None, arg)
                self.simulated_seconds += SLOW_CALLS.get(name, 0.0)
            yield resolved
        finally:
            with self._f_lock:
                self._f_in_flight -= 1

    def _f_wait_gates(self, name: str, index: int | None) -> None:
        with self._f_lock:
            self._f_gates = [g for g in self._f_gates if not g.value.is_set()]
            gates = [g.value for g in self._f_gates
                     if g.fn == name and (g.handle_index is None or g.handle_index == index)]
            entered = self._f_entered.setdefault(name, threading.Event())
        if gates:
            entered.set()
            for gate in gates:
                gate.wait()  # an Event the test sets: never a sleep

    def _f_inject(self, name: str, index: int | None, arg: Any) -> None:
        for rule in self._f_faults:
            if rule.fn != name or rule.remaining == 0:
                continue
            if rule.handle_index is not None and rule.handle_index != index:
                continue
            if rule.arg is not None and rule.arg != arg:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            raise self._f_err(rule.code)

    def _f_card_of(self, index: int) -> int:
        return index // self._f_parts

    def _f_matches(self, rule: _Rule, fn: str, h: _Handle | None, arg: Any) -> bool:
        if rule.fn != fn or (rule.arg is not None and rule.arg != arg):
            return False
        if rule.handle_index is None or h is None:
            return True
        if fn in BOARD_FUNCTIONS:
            return self._f_card_of(rule.handle_index) == h.card
        return rule.handle_index == h.index

    def _f_raw(self, fn: str, h: _Handle | None, arg: Any, raw: Any) -> Any:
        """Apply set/na/sentinel overrides to a C result (later ones win)."""
        with self._f_lock:
            rules = [r for r in self._f_overrides if self._f_matches(r, fn, h, arg)]
        for rule in rules:
            value = rule.value
            if isinstance(value, (list, dict)):
                value = _copy(value)
            if rule.path is None:
                raw = value
            else:
                _set_path(raw, rule.path, value)
        return raw

    def _f_field(self, fn: str, key: str) -> tuple[Any, tuple[int, ...]]:
        """(C width or "str", array shape left) of the field at `key` of fn's C result."""
        node: Any = _c_spec(fn, self._f_version)
        rest: str | None = key
        if fn == "amdsmi_get_link_metrics" and key.startswith("links."):
            node = {"bit_rate": 32, "max_bandwidth": 32, "link_type": 32, "read": 64,
                    "write": 64}.get(key.rsplit(".", 1)[-1])
            rest = None
        while rest is not None and isinstance(node, dict):
            try:
                parent, k, rest = _split_path(node, rest)
            except KeyError:
                node = None
                break
            node = parent[k]
        if isinstance(node, tuple):
            dims = node[1:]
            used = len(rest.split(".")) if rest else 0
            if used > len(dims):
                raise ValueError(f"{fn} has no C field {key!r}")
            return node[0], dims[used:]
        if node is None or rest is not None or node == "float" or isinstance(node, dict):
            raise ValueError(f"{fn} has no integer or string C field {key!r}")
        return node, ()

    def _f_convert(self, fn: str, raw: Any) -> Any:
        converter = getattr(self, "_py_" + fn.removeprefix("amdsmi_get_"), None)
        return converter(raw) if converter else raw

    def _f_rebase(self, card: _Card) -> None:
        dt = self.now - card.rate_t
        for reason in _RESIDENCY:
            card.residency[reason] += card.rates[reason] * 1000 * dt
        card.rate_t = self.now

    def _f_nsup(self) -> Exception:
        return self._f_err(self._f_status["NOT_SUPPORTED"])

    # -- the model --------------------------------------------------------------------------
    def _m_xccs(self, h: _Handle) -> list[int]:
        """The compute dies (XCC ids) of a handle."""
        per = max(self._f_profile.xccs // self._f_parts, 1)
        return list(range(h.part * per, h.part * per + per))

    def _m_util(self, h: _Handle) -> int:
        xccs = self._m_xccs(h)
        return round(sum(_util(h.card, x) for x in xccs) / len(xccs))

    def _m_board_util(self, card: int) -> int:
        n = self._f_profile.xccs
        return round(sum(_util(card, x) for x in range(n)) / n)

    def _m_power(self, card: int) -> int:
        p = self._f_profile
        return int(p.idle_w + (p.power_cap_w - p.idle_w) * 0.8 * self._m_board_util(card) / 100)

    def _m_energy(self, card: int) -> int:
        base = (card + 1) * 123_456_789_012
        return base + int(self._m_power(card) * self.now * 1e6 / _ENERGY_RESOLUTION)

    def _m_residency(self, card: int) -> dict[str, int]:
        c = self._f_cards[card]
        dt = self.now - c.rate_t
        return {r: int(c.residency[r] + c.rates[r] * 1000 * dt) for r in _RESIDENCY}

    def _m_acc_counter(self) -> int:
        return 5_000_000 + int(self.now * 1000)

    def _m_fw_timestamp(self) -> int:
        return _BOOT_NS // 10 + int(self.now * 1e8)

    def _m_temps(self, card: int) -> dict[str, int]:
        util = self._m_board_util(card)
        hotspot = 38 + card + util * 2 // 5
        return {"HOTSPOT": hotspot, "EDGE": hotspot - 8, "VRAM": 32 + card + util // 4,
                "vrgfx": hotspot - 4, "vrsoc": 36 + card, "vrmem": 33 + card}

    def _m_bdf(self, card: int, function: int) -> dict[str, int]:
        buses = self._f_profile.buses
        bus = buses[card % len(buses)] + card // len(buses)
        return {"domain": 0, "bus": bus, "device": 0, "function": function}

    def _m_vram_mb(self, h: _Handle) -> tuple[int, int]:
        total = self._f_profile.vram_mb // self._f_parts
        used = total * (1 + self._m_util(h)) // 200 if self._m_util(h) else 0
        return total, used

    def _m_xgmi_peers(self, card: int) -> list[int]:
        hive = 8 if self._f_profile.family == "mi300" else 4
        return [s for s in range(hive) if s != card % hive]

    # -- library lifecycle and enumeration --------------------------------------------------
    def amdsmi_init(self, flag: Any = None) -> None:
        # __init__ rebinds this with the real default, AmdSmiInitFlags.INIT_AMD_GPUS
        with self._f_api("amdsmi_init", checks=((flag, self.AmdSmiInitFlags),)), self._f_lock:
            if self._f_refcount == 0:
                self._f_generation += 1
                self._f_enumerate(flag)
            self._f_refcount += 1

    def _f_enumerate(self, flag: Any) -> None:
        self._f_current = []
        gpus = int(flag) & 2 or int(flag) == 0xFFFFFFFF
        if not gpus:
            return
        for card in range(len(self._f_cards)):
            for part in range(self._f_parts):
                index = len(self._f_current)
                address = self._f_base + (self._f_generation << 20) + (index << 8) + 0x10
                h = _Handle(index, card, part, address, self._f_generation)
                self._f_current.append(h)
                self._f_handles[address] = h

    def amdsmi_shut_down(self) -> None:
        with self._f_api("amdsmi_shut_down"), self._f_lock:
            if self._f_refcount == 0:
                return  # the C library returns SUCCESS when not initialized
            self._f_refcount -= 1
            if self._f_refcount == 0:
                with self._f_events:
                    if self._f_readers:
                        self.violations.append(
                            f"amdsmi_shut_down with {len(self._f_readers)} event reader(s) "
                            "not stopped")
                    self._f_readers.clear()
                    self._f_queue.clear()
                self._f_current = []

    def amdsmi_get_lib_version(self) -> dict[str, Any]:
        with self._f_api("amdsmi_get_lib_version"):
            major, minor, release = (26, 0, 2) if self._f_version == "7.0" else (25, 5, 1)
            build = f"{major}.{minor}.{release}+a1b2c3d"
        # version.build.contents.value: a char*, so only its first character (sic)
        return {"major": major, "minor": minor, "release": release, "build": build[0]}

    def amdsmi_get_processor_handles(self) -> list[ctypes.c_void_p]:
        with self._f_api("amdsmi_get_processor_handles"), self._f_lock:
            return [ctypes.c_void_p(h.address) for h in self._f_current]

    def amdsmi_get_gpu_device_bdf(self, processor_handle: ctypes.c_void_p) -> str:
        fn = "amdsmi_get_gpu_device_bdf"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, self._m_bdf(h.card, h.part))
        return _format_bdf(raw)

    def amdsmi_get_gpu_device_uuid(self, processor_handle: ctypes.c_void_p) -> str:
        fn = "amdsmi_get_gpu_device_uuid"
        with self._f_api(fn, processor_handle) as h:
            p = self._f_profile
            part = h.part if self._f_version == "7.0" else 0  # per-partition UUIDs from 7.0
            uuid = (f"{(0x3C + h.card) & 0xFF:02x}ff{p.device_id:04x}-{part:04x}-1000-80"
                    f"{h.card:02x}-{0x5A1B2C3D4E00 + h.card * 0x1111:012x}")
            raw = self._f_raw(fn, h, None, uuid)
        return raw[:37]

    def amdsmi_get_gpu_asic_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_asic_info"
        with self._f_api(fn, processor_handle) as h:
            p = self._f_profile
            oam = h.card if p.slot_type == 1 else MAX[32]
            if p.key == "mi250x":
                oam = h.card // 2  # two GCDs per OAM module
            raw = {
                "market_name": p.market_name, "vendor_id": 0x1002,
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]", "subvendor_id": 0x1002,
                "device_id": p.device_id, "rev_id": 0,
                "asic_serial": f"{0x9A3B5C7D1E2F4A00 + h.card:016X}",
                "oam_id": oam, "num_compute_units": p.compute_units // self._f_parts,
                "target_graphics_version": p.gfx,
            }
            if self._f_version == "7.0":
                raw["subsystem_id"] = p.device_id
            raw = self._f_raw(fn, h, None, raw)
        return self._py_gpu_asic_info(raw)

    def _py_gpu_asic_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        market_name = _pad_hex(raw["market_name"], 4)
        tgv = hex(raw["target_graphics_version"])[2:]
        if self._f_version == "7.0":
            subsystem = _validate(raw["subsystem_id"], 32)
            subvendor = _validate(raw["subvendor_id"], 32)
            if not isinstance(subsystem, str):
                subsystem = _pad_hex(hex(subsystem), 4)
            if not isinstance(subvendor, str):
                subvendor = _pad_hex(hex(subvendor), 4)
            info = {
                "market_name": market_name, "vendor_id": raw["vendor_id"],
                "vendor_name": raw["vendor_name"], "subvendor_id": subvendor,
                "device_id": raw["device_id"], "rev_id": _pad_hex(hex(raw["rev_id"]), 2),
                "asic_serial": raw["asic_serial"], "oam_id": _validate(raw["oam_id"], 32),
                "num_compute_units": _validate(raw["num_compute_units"], 32),
                "target_graphics_version": "gfx" + tgv, "subsystem_id": subsystem,
            }
            hex_values = ["vendor_id", "device_id"]
        else:
            info = {
                "market_name": market_name, "vendor_id": raw["vendor_id"],
                "vendor_name": raw["vendor_name"], "subvendor_id": raw["subvendor_id"],
                "device_id": raw["device_id"], "rev_id": _pad_hex(hex(raw["rev_id"]), 2),
                "asic_serial": raw["asic_serial"], "oam_id": raw["oam_id"],
                "num_compute_units": raw["num_compute_units"],
                "target_graphics_version": "gfx" + tgv,
            }
            hex_values = ["vendor_id", "subvendor_id", "device_id"]
        for key in ("market_name", "vendor_name"):
            if not info[key]:
                info[key] = NA
        for key in hex_values:
            info[key] = hex(info[key]) if info[key] else NA
        if info["asic_serial"]:
            info["asic_serial"] = f"0x{int(info['asic_serial'], base=16):016X}"
        else:
            info["asic_serial"] = NA
        if self._f_version == "6.4":
            if info["oam_id"] == 0xFFFF:
                info["oam_id"] = NA
            if info["num_compute_units"] == 0xFFFFFFFF:
                info["num_compute_units"] = NA
        info["vendor_name"] = info["vendor_name"].replace(",", "")
        return info

    def amdsmi_get_gpu_board_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_board_info"
        with self._f_api(fn, processor_handle) as h:
            p = self._f_profile
            raw = self._f_raw(fn, h, None, {
                "model_number": p.vbios[2].replace("113-", "102-") + " ",
                "product_serial": f"692{3250001 + h.card:07d}", "fru_id": f"FRU{h.card:05d}",
                "product_name": p.product_name, "manufacturer_name": "AMD"})
        return self._py_gpu_board_info(raw)

    def _py_gpu_board_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        info = {
            "model_number": _pad_hex(raw["model_number"].strip(), 4),
            "product_serial": raw["product_serial"].strip(),
            "fru_id": raw["fru_id"].strip(),
            "product_name": _pad_hex(raw["product_name"].strip(), 4),
            "manufacturer_name": raw["manufacturer_name"].strip(),
        }
        return {k: NA if v == "" else v for k, v in info.items()}

    def amdsmi_get_gpu_vbios_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_vbios_info"
        with self._f_api(fn, processor_handle) as h:
            name, date, part, version = self._f_profile.vbios
            raw = self._f_raw(fn, h, None, {"name": name, "build_date": date,
                                            "part_number": part, "version": version})
        return {k: raw[k] for k in ("name", "build_date", "part_number", "version")}

    def amdsmi_get_gpu_driver_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_driver_info"
        with self._f_api(fn, processor_handle) as h:
            version = "6.14.14" if self._f_version == "7.0" else "6.12.12"
            raw = self._f_raw(fn, h, None, {"driver_name": "amdgpu", "driver_version": version,
                                            "driver_date": "2015/01/01 00:00"})
        return self._py_gpu_driver_info(raw)

    def _py_gpu_driver_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        info = {k: raw[k] for k in ("driver_name", "driver_version", "driver_date")}
        return {k: NA if v == "" else v for k, v in info.items()}

    def amdsmi_get_fw_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_fw_info"
        with self._f_api(fn, processor_handle) as h:
            ids = {n: i + 1 for i, n in enumerate(_FW_IDS)}
            versions = {"SMU": 0x00556500 if self._f_profile.family == "mi300" else 0x00443900,
                        "CP_MEC1": 177, "CP_MEC2": 177, "RLC": 98, "SDMA0": 22, "SDMA1": 22,
                        "VCN": 0x0910600A, "PSP_SOSDRV": 0x00361D32, "TA_RAS": 0x1B000209,
                        "TA_XGMI": 0x20000020, "PM": 0x00556500, "ASD": 553648366}
            raw = self._f_raw(fn, h, None, {"fw_list": [
                {"fw_id": ids[n], "fw_version": v} for n, v in versions.items()]})
        return self._py_fw_info(raw)

    def _py_fw_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        block = self.AmdSmiFwBlock
        hex_format = {block.AMDSMI_FW_ID_PSP_SOSDRV, block.AMDSMI_FW_ID_TA_RAS,
                      block.AMDSMI_FW_ID_TA_XGMI, block.AMDSMI_FW_ID_UVD,
                      block.AMDSMI_FW_ID_VCE, block.AMDSMI_FW_ID_VCN}
        dec_format = {block.AMDSMI_FW_ID_PM, block.AMDSMI_FW_ID_PLDM_BUNDLE}
        firmwares = []
        for entry in raw["fw_list"]:
            fw_name = block(entry["fw_id"])
            version = entry["fw_version"]
            digits = hex(version)[2:].zfill(8)
            if fw_name in hex_format:
                text = ".".join(digits[i:i + 2] for i in range(0, len(digits), 2))
            elif fw_name in dec_format:
                text = ".".join(str(int(digits[i:i + 2], 16)).zfill(2)
                                for i in range(0, len(digits), 2))
            else:
                text = str(version)
            firmwares.append({"fw_name": fw_name, "fw_version": text.upper()})
        return {"fw_list": firmwares}

    def amdsmi_get_gpu_kfd_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_kfd_info"
        with self._f_api(fn, processor_handle) as h:
            partition_id = h.part if self._f_profile.family == "mi300" else MAX[32]
            raw = self._f_raw(fn, h, None, {
                "kfd_id": 0x9B8C7D6E5F4A3B00 + (h.card << 4) + h.part,
                "node_id": 2 + h.index, "current_partition_id": partition_id})
        return self._py_gpu_kfd_info(raw)

    def _py_gpu_kfd_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"kfd_id": _validate(raw["kfd_id"], 64),
                "node_id": _validate(raw["node_id"], 32),
                "current_partition_id": _validate(raw["current_partition_id"], 32)}

    def amdsmi_get_gpu_enumeration_info(self, processor_handle: ctypes.c_void_p
                                        ) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_enumeration_info"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, {
                "drm_render": 128 + h.index, "drm_card": 1 + h.index, "hsa_id": 2 + h.index,
                "hip_id": h.index, "hip_uuid": f"GPU-{0x5C59E0AB3C9E1B00 + h.index:016x}"})
        return self._py_gpu_enumeration_info(raw)

    def _py_gpu_enumeration_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"drm_render": _validate(raw["drm_render"], 32),
                "drm_card": _validate(raw["drm_card"], 32),
                "hsa_id": _validate(raw["hsa_id"], 32), "hip_id": _validate(raw["hip_id"], 32),
                "hip_uuid": raw["hip_uuid"]}

    def amdsmi_get_gpu_compute_partition(self, processor_handle: ctypes.c_void_p) -> str:
        fn = "amdsmi_get_gpu_compute_partition"
        with self._f_api(fn, processor_handle) as h:
            if self._f_profile.family != "mi300":
                raise self._f_nsup()
            return self._f_raw(fn, h, None, self._f_partition)

    def amdsmi_get_gpu_memory_partition(self, processor_handle: ctypes.c_void_p) -> str:
        fn = "amdsmi_get_gpu_memory_partition"
        with self._f_api(fn, processor_handle) as h:
            if self._f_profile.family != "mi300":
                raise self._f_nsup()
            return self._f_raw(fn, h, None, "NPS1")

    # -- telemetry --------------------------------------------------------------------------
    def amdsmi_get_gpu_activity(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_activity"
        with self._f_api(fn, processor_handle) as h:
            util = self._m_board_util(h.card)
            raw = self._f_raw(fn, h, None, {"gfx_activity": util, "umc_activity": util // 3,
                                            "mm_activity": 0})
        return self._py_gpu_activity(raw)

    def _py_gpu_activity(self, raw: dict[str, Any]) -> dict[str, Any]:
        out = {k: raw[k] for k in ("gfx_activity", "umc_activity", "mm_activity")}
        return {k: NA if v == 0xFFFF else v for k, v in out.items()}

    def amdsmi_get_gpu_metrics_info(self, processor_handle: ctypes.c_void_p
                                    ) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_metrics_info"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, self._m_metrics(h))
        return self._py_gpu_metrics_info(raw)

    def _m_metrics(self, h: _Handle) -> dict[str, Any]:
        p = self._f_profile
        spec = _metrics_spec(self._f_version)
        m = {k: _filled(s, MAX[w]) for k, w, s, _ in spec}
        card, now = h.card, self.now
        util = self._m_board_util(card)
        temps = self._m_temps(card)
        power = self._m_power(card)
        res = self._m_residency(card)
        rates = self._f_cards[card].rates
        throttled = any(rates.values())
        fmt, content = p.metrics_rev[self._f_version]
        if self._f_version == "7.0":
            m["common_header.structure_size"] = {3: 264, 7: 1208, 8: 1608}.get(content, 0)
            m["common_header.format_revision"] = fmt
            m["common_header.content_revision"] = content
        m.update({
            "temperature_hotspot": temps["HOTSPOT"], "temperature_mem": temps["VRAM"],
            "temperature_vrsoc": temps["vrsoc"], "average_gfx_activity": util,
            "average_umc_activity": util // 3, "energy_accumulator": self._m_energy(card),
            "system_clock_counter": _BOOT_NS + int(now * 1e9),
            "throttle_status": 1 if throttled else 0,
            "pcie_link_width": 16, "pcie_link_speed": {4: 160, 5: 320}[p.pcie_gen],
            "gfx_activity_acc": (7_000_000 + int(util * now * 10)) & MAX[32],
            "mem_activity_acc": (2_000_000 + int(util // 3 * now * 10)) & MAX[32],
            "firmware_timestamp": self._m_fw_timestamp(),
            "current_uclk": p.mem_mhz[1],
        })
        gfx_mhz = p.gfx_mhz[0] + (p.gfx_mhz[1] - p.gfx_mhz[0]) * util // 100
        if p.family == "mi200":
            m.update({
                "temperature_edge": temps["EDGE"], "temperature_vrgfx": temps["vrgfx"],
                "temperature_vrmem": temps["vrmem"], "average_mm_activity": 0,
                "average_socket_power": power, "temperature_hbm": [
                    temps["VRAM"] + i for i in range(4)],
                "average_gfxclk_frequency": gfx_mhz, "average_socclk_frequency": p.soc_mhz[1],
                "average_uclk_frequency": p.mem_mhz[1], "average_vclk0_frequency": 0,
                "average_dclk0_frequency": 0, "average_vclk1_frequency": 0,
                "average_dclk1_frequency": 0, "current_gfxclk": gfx_mhz,
                "current_socclk": p.soc_mhz[1], "current_vclk0": 0, "current_dclk0": 0,
                "current_vclk1": 0, "current_dclk1": 0, "current_fan_speed": 0,
                "voltage_soc": 900, "voltage_gfx": 806, "voltage_mem": 1200,
                "indep_throttle_status": 1 if throttled else 0,
            })
            return m
        # MI300: per-XCC clocks, PCIe and XGMI accumulators, residency and per-XCP stats
        peers = self._m_xgmi_peers(card)
        read_kb = [(card + 1) * 10**9 + int((card + 1) * 1_000_000 * now) for _ in peers]
        replay = int(now * (card % 2) / 100)
        m.update({
            "current_socket_power": power, "vcn_activity": [0, 0, 0, 0],
            "gfxclk_lock_status": 0, "xgmi_link_width": 16, "xgmi_link_speed": 32,
            "pcie_bandwidth_acc": 400_000 + int(now * (20 + util)),
            "pcie_bandwidth_inst": 20 + util, "pcie_l0_to_recov_count_acc": replay // 2,
            "pcie_replay_count_acc": replay, "pcie_replay_rover_count_acc": 0,
            "xgmi_read_data_acc": read_kb + [MAX[64]] * (8 - len(peers)),
            "xgmi_write_data_acc": [v // 2 for v in read_kb] + [MAX[64]] * (8 - len(peers)),
            "current_gfxclks": [gfx_mhz] * 8, "current_socclks": [p.soc_mhz[1]] * 4,
            "current_vclk0s": [0] * 4, "current_dclk0s": [0] * 4, "jpeg_activity": [0] * 32,
            "pcie_nak_sent_count_acc": 0, "pcie_nak_rcvd_count_acc": 0,
            "accumulation_counter": self._m_acc_counter(),
            **{f"{r}_residency_acc": res[r] for r in _RESIDENCY},
            "num_partition": self._f_parts, "pcie_lc_perf_other_end_recovery": 0,
        })
        if content >= 7:
            m["vram_max_bandwidth"] = 5300
            m["xgmi_link_status"] = [1] * len(peers) + [MAX[16]] * (8 - len(peers))
        per = p.xccs // self._f_parts
        jpeg = len(m["xcp_stats.jpeg_busy"][0])
        for xcp in range(self._f_parts):
            xccs = range(xcp * per, xcp * per + per)
            busy = [_util(card, x) for x in xccs]
            pad = [MAX[32]] * (8 - per)
            m["xcp_stats.gfx_busy_inst"][xcp] = busy + pad
            m["xcp_stats.vcn_busy"][xcp] = [0] * max(4 // self._f_parts, 1) + [MAX[16]] * (
                4 - max(4 // self._f_parts, 1))
            m["xcp_stats.jpeg_busy"][xcp] = [0] * (32 // self._f_parts) + [MAX[16]] * (
                jpeg - 32 // self._f_parts)
            acc = [10**9 + int(b * now * 10_000) for b in busy]
            m["xcp_stats.gfx_busy_acc"][xcp] = acc + [MAX[64]] * (8 - per)
            below = [res["ppt"] + res["socket_thm"]] * per + [MAX[64]] * (8 - per)
            if content >= 7:
                m["xcp_stats.gfx_below_host_limit_acc"][xcp] = below
            if content >= 8:
                m["xcp_stats.gfx_below_host_limit_ppt_acc"][xcp] = [res["ppt"]] * per + [
                    MAX[64]] * (8 - per)
                m["xcp_stats.gfx_below_host_limit_thm_acc"][xcp] = [res["socket_thm"]] * per \
                    + [MAX[64]] * (8 - per)
                m["xcp_stats.gfx_below_host_limit_total_acc"][xcp] = below
                m["xcp_stats.gfx_low_utilization_acc"][xcp] = [
                    int((100 - b) * now * 10) for b in busy] + [MAX[64]] * (8 - per)
        return m

    def _py_gpu_metrics_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, width, shape, conv in _metrics_spec(self._f_version):
            value = raw[key]
            activity = conv == "act" or (conv == "acc64" and self._f_version == "6.4")
            if len(shape) == 2:
                out[key] = [[_validate(v, width, activity) for v in row] for row in value]
            else:
                out[key] = _validate(value, width, activity, conv == "bool")
        return out

    def amdsmi_get_temp_metric(self, processor_handle: ctypes.c_void_p, sensor_type: Any,
                               metric: Any) -> int:
        fn = "amdsmi_get_temp_metric"
        checks = ((sensor_type, self.AmdSmiTemperatureType),
                  (metric, self.AmdSmiTemperatureMetric))
        with self._f_api(fn, processor_handle, (sensor_type, metric), checks) as h:
            p = self._f_profile
            temps = self._m_temps(h.card)
            sensor = self.AmdSmiTemperatureType(sensor_type).name
            if sensor == "JUNCTION":
                sensor = "HOTSPOT"
            value: int | None = None
            if sensor == "PLX" and metric.name == "CURRENT":
                value = temps["vrsoc"]  # C returns gpu_metrics temperature_vrsoc
            elif sensor.startswith("HBM_") and metric.name == "CURRENT":
                value = temps["VRAM"] + int(sensor[-1])
            elif sensor in p.temp_limits:
                critical, emergency = p.temp_limits[sensor]
                value = {"CURRENT": temps[sensor], "CRITICAL": critical,
                         "EMERGENCY": emergency}.get(metric.name)
            if value is None:
                value = self._f_raw(fn, h, (sensor_type, metric), None)
                if value is None:
                    raise self._f_nsup()
                return value
            return self._f_raw(fn, h, (sensor_type, metric), value)

    def _power_info(self, fn: str, h: _Handle) -> dict[str, Any]:
        p = self._f_profile
        power = self._m_power(h.card)
        v70 = self._f_version == "7.0"
        # unsupported members: 0xFFFF from the 6.x C library; UINT32/UINT64_MAX in newer C
        none32, none64 = (MAX[32], MAX[64]) if v70 else (MAX[16], MAX[16])
        mi300 = p.family == "mi300"
        raw = {
            "current_socket_power": power if mi300 else none32,
            "average_socket_power": none32 if mi300 else power,
            "gfx_voltage": none64 if mi300 else 806, "soc_voltage": none64 if mi300 else 900,
            "mem_voltage": none64 if mi300 else 1200, "power_limit": p.power_cap_w * 10**6,
        }
        if v70:
            raw = {"socket_power": power, **raw}
        return self._f_raw(fn, h, None, raw)

    def _py_power_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        keys = ["current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage",
                "mem_voltage", "power_limit"]
        if self._f_version == "7.0":
            keys.insert(0, "socket_power")
        return {k: NA if raw[k] == 0xFFFF else raw[k] for k in keys}

    def _power_info_70(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_power_info"
        with self._f_api(fn, processor_handle) as h:
            raw = self._power_info(fn, h)
        return self._py_power_info(raw)

    def _power_info_64(self, processor_handle: ctypes.c_void_p,
                       sensor_ind: int = 0) -> dict[str, Any]:
        fn = "amdsmi_get_power_info"
        with self._f_api(fn, processor_handle, sensor_ind) as h:
            if sensor_ind != 0:
                raise self._f_nsup()
            raw = self._power_info(fn, h)
        return self._py_power_info(raw)

    _power_info_70.__name__ = _power_info_64.__name__ = "amdsmi_get_power_info"
    amdsmi_get_power_info = _PerVersion(v7_0=_power_info_70, v6_4=_power_info_64)

    def amdsmi_get_power_cap_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_power_cap_info"
        with self._f_api(fn, processor_handle) as h:
            p = self._f_profile
            cap = p.power_cap_w * 10**6
            raw = self._f_raw(fn, h, None, {
                "power_cap": cap, "default_power_cap": cap, "dpm_cap": p.gfx_mhz[1],
                "min_power_cap": 0, "max_power_cap": cap})
        return {k: raw[k] for k in ("power_cap", "default_power_cap", "dpm_cap",
                                    "min_power_cap", "max_power_cap")}

    def amdsmi_get_energy_count(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_energy_count"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, {
                "energy_accumulator": self._m_energy(h.card),
                "counter_resolution": _ENERGY_RESOLUTION,
                "timestamp": _BOOT_NS + int(self.now * 1e9)})
        return {"energy_accumulator": raw["energy_accumulator"],
                "counter_resolution": _float32(raw["counter_resolution"]),
                "timestamp": raw["timestamp"]}

    def amdsmi_get_clock_info(self, processor_handle: ctypes.c_void_p,
                              clock_type: Any) -> dict[str, Any]:
        fn = "amdsmi_get_clock_info"
        with self._f_api(fn, processor_handle, clock_type,
                         ((clock_type, self.AmdSmiClkType),)) as h:
            p = self._f_profile
            name = self.AmdSmiClkType(clock_type).name
            util = self._m_util(h)
            ranges = {"SYS": p.gfx_mhz, "MEM": p.mem_mhz, "SOC": p.soc_mhz,
                      "DF": (1200, 2000 if p.family == "mi300" else 1600),
                      "VCLK0": (914, 1333), "DCLK0": (711, 1143), "VCLK1": (914, 1333),
                      "DCLK1": (711, 1143)}
            if name not in ranges:  # DCEF (display) and PCIE
                raw = self._f_raw(fn, h, clock_type, None)
                if raw is None:
                    raise self._f_nsup()
            else:
                low, high = ranges[name]
                current = low + (high - low) * util // 100 if name == "SYS" else (
                    high if name in ("MEM", "DF") else low)
                raw = self._f_raw(fn, h, clock_type, {
                    "clk": current, "min_clk": low, "max_clk": high,
                    "clk_locked": 0 if name == "SYS" else MAX[8],
                    "clk_deep_sleep": 1 if name == "SYS" and util == 0 else 0})
        return self._py_clock_info(raw)

    def _py_clock_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "clk": _validate(raw["clk"], 32), "min_clk": _validate(raw["min_clk"], 32),
            "max_clk": _validate(raw["max_clk"], 32),
            "clk_locked": _validate(raw["clk_locked"], 8, boolean=True),
            "clk_deep_sleep": _validate(raw["clk_deep_sleep"], 8,
                                        boolean=self._f_version == "6.4"),
        }

    def amdsmi_get_gpu_vram_usage(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_vram_usage"
        with self._f_api(fn, processor_handle) as h:
            total, used = self._m_vram_mb(h)
            raw = self._f_raw(fn, h, None, {"vram_total": total, "vram_used": used})
        return {"vram_total": raw["vram_total"], "vram_used": raw["vram_used"]}

    def _memory(self, fn: str, processor_handle: Any, mem_type: Any, total: bool) -> int:
        with self._f_api(fn, processor_handle, mem_type,
                         ((mem_type, self.AmdSmiMemoryType),)) as h:
            vram_total, vram_used = self._m_vram_mb(h)
            name = self.AmdSmiMemoryType(mem_type).name
            if name == "GTT":
                value = 128 * 2**30 if total else 12 * 2**20
            else:  # VIS_VRAM: the whole VRAM is CPU-visible (large BAR)
                value = (vram_total if total else vram_used) * 2**20
            return self._f_raw(fn, h, mem_type, value)

    def amdsmi_get_gpu_memory_total(self, processor_handle: ctypes.c_void_p,
                                    mem_type: Any) -> int:
        return self._memory("amdsmi_get_gpu_memory_total", processor_handle, mem_type, True)

    def amdsmi_get_gpu_memory_usage(self, processor_handle: ctypes.c_void_p,
                                    mem_type: Any) -> int:
        return self._memory("amdsmi_get_gpu_memory_usage", processor_handle, mem_type, False)

    def amdsmi_get_pcie_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_pcie_info"
        with self._f_api(fn, processor_handle) as h:
            p = self._f_profile
            speed = {4: 16000, 5: 32000}[p.pcie_gen]
            raw: dict[str, Any] = {
                "pcie_static": {"max_pcie_width": 16, "max_pcie_speed": speed,
                                "pcie_interface_version": p.pcie_gen, "slot_type": p.slot_type},
                "pcie_metric": _dummy(_c_spec(fn, self._f_version)["pcie_metric"]),
            }
            metric = raw["pcie_metric"]
            metric.update({"pcie_width": 16, "pcie_speed": speed})
            if p.family == "mi300":
                util = self._m_board_util(h.card)
                replay = int(self.now * (h.card % 2) / 100)
                metric.update({
                    "pcie_bandwidth": (20 + util) * 8000, "pcie_replay_count": replay,
                    "pcie_l0_to_recovery_count": replay // 2, "pcie_replay_roll_over_count": 0,
                    "pcie_nak_sent_count": 0, "pcie_nak_received_count": 0,
                    "pcie_lc_perf_other_end_recovery_count": 0})
            raw = self._f_raw(fn, h, None, raw)
        return self._py_pcie_info(raw)

    def _py_pcie_info(self, raw: dict[str, Any]) -> dict[str, Any]:
        s, m = raw["pcie_static"], raw["pcie_metric"]
        info = {
            "pcie_static": {
                "max_pcie_width": _validate(s["max_pcie_width"], 16),
                "max_pcie_speed": _validate(s["max_pcie_speed"], 32),
                "pcie_interface_version": _validate(s["pcie_interface_version"], 32),
                "slot_type": s["slot_type"],
            },
            "pcie_metric": {
                "pcie_width": _validate(m["pcie_width"], 16),
                "pcie_speed": _validate(m["pcie_speed"], 32),
                "pcie_bandwidth": _validate(m["pcie_bandwidth"], 32),
                **{k: _validate(m[k], 64) for k in (
                    "pcie_replay_count", "pcie_l0_to_recovery_count",
                    "pcie_replay_roll_over_count", "pcie_nak_sent_count",
                    "pcie_nak_received_count")},
                "pcie_lc_perf_other_end_recovery_count": _validate(
                    m["pcie_lc_perf_other_end_recovery_count"], 32),
            },
        }
        slot = info["pcie_static"]["slot_type"]
        if isinstance(slot, int):
            names = {0: "PCIE", 1: "OAM", 2: "CEM", 3: "UNKNOWN"}
            info["pcie_static"]["slot_type"] = names.get(slot, "Unknown")
        else:
            info["pcie_static"]["slot_type"] = NA
        return info

    def amdsmi_get_gpu_pci_throughput(self, processor_handle: ctypes.c_void_p
                                      ) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_pci_throughput"
        with self._f_api(fn, processor_handle) as h:
            util = self._m_board_util(h.card)
            raw = self._f_raw(fn, h, None, {"sent": (1 + util) * 10**7,
                                            "received": (1 + util) * 2 * 10**7,
                                            "max_pkt_sz": 256})
        return {"sent": raw["sent"], "received": raw["received"],
                "max_pkt_sz": raw["max_pkt_sz"]}

    def amdsmi_get_violation_status(self, processor_handle: ctypes.c_void_p
                                    ) -> dict[str, Any]:
        fn = "amdsmi_get_violation_status"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, self._m_violation(h))
        return self._py_violation_status(raw)

    def _m_violation(self, h: _Handle) -> dict[str, Any]:
        if self._f_profile.family != "mi300":
            raise self._f_nsup()  # every residency field UINT64_MAX (gpu_metrics < 1.6)
        metrics = self._m_metrics(h)
        rates = self._f_cards[h.card].rates
        content = self._f_profile.metrics_rev[self._f_version][1]
        v = _dummy(_c_spec("amdsmi_get_violation_status", self._f_version))
        names = {"prochot_thrm": "prochot", "ppt_pwr": "ppt", "socket_thrm": "socket_thm",
                 "vr_thrm": "vr_thm", "hbm_thrm": "hbm_thm"}
        v.update({"reference_timestamp": _EPOCH_US + int(self.now * 1e6),
                  "violation_timestamp": metrics["firmware_timestamp"],
                  "acc_counter": metrics["accumulation_counter"]})
        for key, reason in names.items():
            v[f"acc_{key}"] = metrics[f"{reason}_residency_acc"]
            v[f"per_{key}"] = round(rates[reason] * 100)
            v[f"active_{key}"] = int(rates[reason] > 0)
        below = rates["ppt"] + rates["socket_thm"]
        if content >= 7:
            v["acc_gfx_clk_below_host_limit"] = metrics["xcp_stats.gfx_below_host_limit_acc"][
                0][0]
            v["per_gfx_clk_below_host_limit"] = round(below * 100)
            v["active_gfx_clk_below_host_limit"] = int(below > 0)
        if self._f_version == "7.0" and content >= 8:
            per = self._f_profile.xccs // self._f_parts
            sources = {"gfx_clk_below_host_limit_pwr": ("ppt", "ppt_acc"),
                       "gfx_clk_below_host_limit_thm": ("socket_thm", "thm_acc"),
                       "gfx_clk_below_host_limit_total": (None, "total_acc"),
                       "low_utilization": ("low", "low")}
            for name, (reason, acc_key) in sources.items():
                key = ("xcp_stats.gfx_low_utilization_acc" if reason == "low"
                       else f"xcp_stats.gfx_below_host_limit_{acc_key}")
                v[f"acc_{name}"] = _copy(metrics[key])
                rate = below if reason is None else 0.0 if reason == "low" else rates[reason]
                for xcp in range(self._f_parts):
                    v[f"per_{name}"][xcp][:per] = [round(rate * 100)] * per
                    v[f"active_{name}"][xcp][:per] = [int(rate > 0)] * per
        return v

    def _py_violation_status(self, raw: dict[str, Any]) -> dict[str, Any]:
        v70 = self._f_version == "7.0"
        out: dict[str, Any] = {
            "reference_timestamp": _validate(raw["reference_timestamp"], 64),
            "violation_timestamp": _validate(raw["violation_timestamp"], 64),
            "acc_counter": _validate(raw["acc_counter"], 64),
        }
        for prefix, width, kwargs in (("acc", 64, {}), ("per", 64, {"activity": True}),
                                      ("active", 8, {"boolean": True})):
            for name in _VIOL_SCALARS:
                out[f"{prefix}_{name}"] = _validate(raw[f"{prefix}_{name}"], width, **kwargs)
            if v70:
                for name in _VIOL_ARRAYS:
                    out[f"{prefix}_{name}"] = [[_validate(x, width, **kwargs) for x in row]
                                               for row in raw[f"{prefix}_{name}"]]
        return out

    def amdsmi_get_gpu_process_list(self, processor_handle: ctypes.c_void_p
                                    ) -> list[dict[str, Any]]:
        fn = "amdsmi_get_gpu_process_list"
        with self._f_api(fn, processor_handle) as h:
            procs = []
            if h.index == 0:
                vram = 8 * 2**30
                procs.append({
                    "name": "python3", "pid": 4242, "mem": vram,
                    "engine_usage": {"gfx": 10**9 + int(self.now * 5e8), "enc": 0},
                    "memory_usage": {"gtt_mem": 2 * 2**20, "cpu_mem": 0, "vram_mem": vram},
                    "cu_occupancy": 42})
            raw = self._f_raw(fn, h, None, procs)
        return [self._py_process(p) for p in raw]

    def _py_process(self, p: dict[str, Any]) -> dict[str, Any]:
        name = p.get("name", "").strip()
        usage = p.get("engine_usage", {})
        memory = p.get("memory_usage", {})
        return {
            "name": name or NA, "pid": p.get("pid", 0), "mem": p.get("mem", 0),
            "engine_usage": {"gfx": usage.get("gfx", 0), "enc": usage.get("enc", 0)},
            "memory_usage": {"gtt_mem": memory.get("gtt_mem", 0),
                             "cpu_mem": memory.get("cpu_mem", 0),
                             "vram_mem": memory.get("vram_mem", 0)},
            "cu_occupancy": _validate(p.get("cu_occupancy", MAX[32]), 32),
        }

    # -- RAS ----------------------------------------------------------------------------------
    def _m_ecc_block(self, h: _Handle, block: Any) -> dict[str, int]:
        raw = {"correctable_count": 0, "uncorrectable_count": 0, "deferred_count": 0}
        return self._f_raw("amdsmi_get_gpu_ecc_count", h, block, raw)

    def amdsmi_get_gpu_total_ecc_count(self, processor_handle: ctypes.c_void_p
                                       ) -> dict[str, Any]:
        fn = "amdsmi_get_gpu_total_ecc_count"
        with self._f_api(fn, processor_handle) as h:
            total = {"correctable_count": 0, "uncorrectable_count": 0, "deferred_count": 0}
            for block in self.AmdSmiGpuBlock:
                if block.name in ("INVALID", "RESERVED"):
                    continue
                for key, value in self._m_ecc_block(h, block).items():
                    total[key] += value
            raw = self._f_raw(fn, h, None, total)
        return {k: raw[k] for k in ("correctable_count", "uncorrectable_count",
                                    "deferred_count")}

    def amdsmi_get_gpu_ecc_count(self, processor_handle: ctypes.c_void_p,
                                 block: Any) -> dict[str, int]:
        fn = "amdsmi_get_gpu_ecc_count"
        with self._f_api(fn, processor_handle, block, ((block, self.AmdSmiGpuBlock),)) as h:
            raw = self._m_ecc_block(h, block)
        return {k: raw[k] for k in ("correctable_count", "uncorrectable_count",
                                    "deferred_count")}

    def amdsmi_get_gpu_ecc_enabled(self, processor_handle: ctypes.c_void_p) -> int:
        fn = "amdsmi_get_gpu_ecc_enabled"
        with self._f_api(fn, processor_handle) as h:
            return self._f_raw(fn, h, None, (1 << len(_GPU_BLOCKS)) - 1)

    def amdsmi_get_gpu_bad_page_info(self, processor_handle: ctypes.c_void_p
                                     ) -> list[dict[str, Any]]:
        fn = "amdsmi_get_gpu_bad_page_info"
        with self._f_api(fn, processor_handle) as h:
            raw = self._f_raw(fn, h, None, [])
        return [{"value": i, "page_address": r["page_address"],
                 "page_size": r.get("page_size", 4096), "status": int(r.get("status", 0))}
                for i, r in enumerate(raw)]

    # -- fans, XGMI ---------------------------------------------------------------------------
    def _fan(self, fn: str, processor_handle: Any, sensor_idx: Any) -> int:
        with self._f_api(fn, processor_handle, sensor_idx, ((sensor_idx, int),)) as h:
            value = self._f_raw(fn, h, sensor_idx, None)  # passively cooled Instinct parts
            if value is None:
                raise self._f_nsup()
            return value

    def amdsmi_get_gpu_fan_speed(self, processor_handle: ctypes.c_void_p,
                                 sensor_idx: int) -> int:
        return self._fan("amdsmi_get_gpu_fan_speed", processor_handle, sensor_idx)

    def amdsmi_get_gpu_fan_speed_max(self, processor_handle: ctypes.c_void_p,
                                     sensor_idx: int) -> int:
        return self._fan("amdsmi_get_gpu_fan_speed_max", processor_handle, sensor_idx)

    def amdsmi_get_xgmi_info(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_xgmi_info"
        with self._f_api(fn, processor_handle) as h:
            if not self._f_profile.xgmi:
                raise self._f_nsup()
            raw = self._f_raw(fn, h, None, {
                "xgmi_lanes": 16, "xgmi_hive_id": 0x5A1B2C3D4E5F6071,
                "xgmi_node_id": 0x3F00 + h.card, "index": h.card})
        return {k: raw[k] for k in ("xgmi_lanes", "xgmi_hive_id", "xgmi_node_id", "index")}

    def _link_metrics(self, processor_handle: ctypes.c_void_p) -> dict[str, Any]:
        fn = "amdsmi_get_link_metrics"
        with self._f_api(fn, processor_handle) as h:
            if self._f_profile.family != "mi300":
                raise self._f_nsup()
            metrics = self._m_metrics(h)
            peers = self._m_xgmi_peers(h.card)
            unused = {"bdf": {"domain": MAX[48], "bus": 0xFF, "device": 0x1F, "function": 7},
                      "bit_rate": MAX[32], "max_bandwidth": MAX[32], "link_type": MAX[32],
                      "read": MAX[64], "write": MAX[64]}
            links = []
            for i in range(8):
                if i < len(peers):
                    links.append({"bdf": self._m_bdf(peers[i], 0), "bit_rate": 32,
                                  "max_bandwidth": 512, "link_type": 2,
                                  "read": metrics["xgmi_read_data_acc"][i],
                                  "write": metrics["xgmi_write_data_acc"][i]})
                else:
                    links.append(_copy(unused))
            raw = self._f_raw(fn, h, None, {"num_links": len(peers), "links": links})
        return {"num_links": raw["num_links"], "links": [
            {"bdf": _format_bdf(link["bdf"]), "bit_rate": link["bit_rate"],
             "max_bandwidth": link["max_bandwidth"], "link_type": link["link_type"],
             "read": link["read"], "write": link["write"]} for link in raw["links"][:8]]}

    _link_metrics.__name__ = "amdsmi_get_link_metrics"
    amdsmi_get_link_metrics = _Since("7.0", _link_metrics)

    # -- events (C side of AmdSmiEventReader) ---------------------------------------------------
    def _f_evt_init(self, handle: ctypes.c_void_p) -> None:
        with self._f_api(_EVT_C[0], handle) as h, self._f_events:
            self._f_readers.setdefault(h.address, 0)

    def _f_evt_mask(self, handle: ctypes.c_void_p, mask: int) -> None:
        with self._f_api(_EVT_C[1], handle) as h, self._f_events:
            self._f_readers[h.address] = mask

    def _f_evt_stop(self, handle: ctypes.c_void_p) -> None:
        with self._f_api(_EVT_C[3], handle) as h, self._f_events:
            self._f_readers.pop(h.address, None)
            self._f_queue = [e for e in self._f_queue if e[0] != h.address]

    def _f_evt_read(self, timeout_ms: int, num_elem: int) -> list[dict[str, Any]]:
        with self._f_api(_EVT_C[2]), self._f_events:
            timeout = None if timeout_ms < 0 else timeout_ms / 1000
            self._f_events.wait_for(lambda: bool(self._f_queue), timeout)
            if not self._f_queue:
                raise self._f_err(self._f_status["NO_DATA"])
            events, self._f_queue = self._f_queue[:num_elem], self._f_queue[num_elem:]
        evt = self.AmdSmiEvtNotificationType
        known = {e.value for e in evt}
        out = []
        for address, value, message in events:
            if value in known and evt(value).name != "NONE":
                handle: Any = address if self._f_version == "6.4" else ctypes.c_void_p(address)
                out.append({"processor_handle": handle, "event": evt(value).name,
                            "message": message})
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        hint = ""
        if name.startswith("amdsmi_") and name not in vars(FakeAmdSmi):
            hint = " (FakeAmdSmi does not model it)"
        raise AttributeError(f"module 'amdsmi' has no attribute {name!r}{hint}")


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


FUNCTIONS = tuple(sorted(name for name in vars(FakeAmdSmi) if name.startswith("amdsmi_")))
