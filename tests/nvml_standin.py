"""A hand-written stand-in for pynvml on a 2-GPU box, for testing the record/replay machinery.

Its answers are built from pynvml's own struct classes and exceptions, in the types pynvml really
returns; any nvml* function not written here answers NotSupported (never the real library).
"""

from __future__ import annotations

import ctypes
import math
import types
from typing import Any

import pynvml as N
from nvml_recording import PURE_HELPERS

# Answers that do not depend on the arguments.
SIMPLE = {
    "nvmlInit": lambda: None,
    "nvmlShutdown": lambda: None,
    "nvmlGpmSampleFree": lambda: None,
    "nvmlSystemGetDriverVersion": lambda: "580.159.04",
    "nvmlDeviceGetName": lambda: "NVIDIA H100 80GB HBM3",
    "nvmlDeviceIsMigDeviceHandle": lambda: ctypes.c_uint(0),
    "nvmlDeviceGetRowRemapperHistogram": lambda: N.c_nvmlRowRemapperHistogramValues(max=2560),
    "nvmlGpmQueryDeviceSupport": lambda: N.c_nvmlGpmSupport_t(version=1, isSupportedDevice=1),
}


class StandInNvml(types.ModuleType):
    """What pynvml would answer on a 2-GPU box, in the types pynvml really returns."""

    def __init__(self) -> None:
        super().__init__("stand_in_pynvml")
        self.devices = [ctypes.create_string_buffer(1) for _ in range(2)]
        self.samples: list[Any] = []
        self.energy = 1_000_000
        self.set_calls = 0

    def __getattr__(self, name: str) -> Any:
        if name in SIMPLE:
            return lambda *args, **kwargs: SIMPLE[name]()
        value = getattr(N, name)  # constants and classes are the real ones
        is_function = callable(value) and not isinstance(value, type)
        if name.startswith("nvml") and is_function and name not in PURE_HELPERS:

            def not_supported(*args: Any, **kwargs: Any) -> Any:
                raise N.NVMLError(N.NVML_ERROR_NOT_SUPPORTED)

            return not_supported  # anything not written below: never the real library
        return value

    def _index(self, handle: Any) -> int:
        addr = ctypes.cast(handle, ctypes.c_void_p).value
        return [ctypes.addressof(b) for b in self.devices].index(addr)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ctypes.cast(self.devices[index], N.c_nvmlDevice_t)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return f"GPU-0000000{self._index(handle)}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        if version == N.nvmlMemory_v2:
            return N.c_nvmlMemory_v2_t(version=version, total=85_899_345_920,
                                       reserved=503_316_480, free=85_396_029_440, used=0)
        if version is None:
            return N.c_nvmlMemory_t(total=85_899_345_920, free=85_396_029_440, used=503_316_480)
        raise N.NVMLError(N.NVML_ERROR_FUNCTION_NOT_FOUND)  # version=2: the known trap

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[Any]) -> Any:
        values = (N.c_nvmlFieldValue_t * len(field_ids))()
        for v, fid in zip(values, field_ids, strict=True):
            v.fieldId, v.scopeId = fid if isinstance(fid, tuple) else (fid, 0)
            v.timestamp, v.latencyUsec = 1_700_000_000_000_000, 12
            if fid == N.NVML_FI_DEV_MEMORY_TEMP:
                v.valueType, v.value.uiVal = N.NVML_VALUE_TYPE_UNSIGNED_INT, 32
            elif fid == N.NVML_FI_DEV_PERF_POLICY_POWER:
                v.valueType, v.value.ullVal = N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 2**40 + 7
            else:
                v.nvmlReturn = N.NVML_ERROR_INVALID_ARGUMENT  # an id newer than the driver
        return values

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self.energy += 700
        return self.energy

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        raise N.NVMLError(N.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return [N.nvmlFriendlyObject({"pid": 4242, "usedGpuMemory": 2**30,
                                      "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0}),
                N.nvmlFriendlyObject({"pid": 77, "usedGpuMemory": None,
                                      "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0})]

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        return N.nvmlPciInfo_t(busId=b"00000000:00:06.0", busIdLegacy=b"0000:00:06.0",
                               device=6 + self._index(handle), pciDeviceId=0x233010DE)

    def nvmlDeviceGetSramEccErrorStatus(self, device: Any, status: Any) -> int:
        status._obj.aggregateCor, status._obj.bThresholdExceeded = 7, 1
        return N.NVML_SUCCESS

    def nvmlDeviceGetRemappedRows_v2(self, device: Any, info: Any) -> int:
        info._obj.corrActiveRemaps, info._obj.bPending = 3, 1
        return N.NVML_SUCCESS

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int, version: int = 0) -> int:
        if sensor == N.NVML_TEMPERATURE_GPU:
            return 35
        raise N.NVMLError(N.NVML_ERROR_INVALID_ARGUMENT)  # GPU_MAX on a 580 driver

    def nvmlDeviceSetPersistenceMode(self, handle: Any, mode: int) -> None:
        self.set_calls += 1

    def nvmlGpmSampleAlloc(self) -> Any:
        self.samples.append(ctypes.create_string_buffer(8))
        return ctypes.cast(self.samples[-1], N.c_nvmlGpmSample_t)

    def nvmlGpmSampleGet(self, device: Any, sample: Any) -> Any:
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        answers = {N.NVML_GPM_METRIC_SM_UTIL: (12.5, b"smutil", b"%"),
                   N.NVML_GPM_METRIC_PCIE_TX_PER_SEC: (math.nan, b"pcitx", b"MiB/s")}
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            value, short, unit = answers.get(metric.metricId, (0.0, None, None))
            metric.value, metric.metricInfo.shortName, metric.metricInfo.unit = value, short, unit
        return request
