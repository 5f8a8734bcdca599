"""Memory reliability: ECC counters, SRAM threshold, row remapping, retired pages."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

from ...catalog import Tier
from ..base import Sample, sample
from .gpu import FieldSpec, NvmlGpu

TYPES = {"corrected": "NVML_MEMORY_ERROR_TYPE_CORRECTED",
         "uncorrected": "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"}
SCOPES = {"volatile": "NVML_VOLATILE_ECC", "aggregate": "NVML_AGGREGATE_ECC"}
LOCATIONS = {"dram": "NVML_MEMORY_LOCATION_DRAM", "sram": "NVML_MEMORY_LOCATION_SRAM"}
HISTOGRAM = ("max", "high", "partial", "low", "none")


def read_ecc(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    calls = []
    for t, tk in TYPES.items():
        for s, sk in SCOPES.items():
            calls.append((f"ecc:{t}:{s}:total", lambda tk=tk, sk=sk: nv.nvmlDeviceGetTotalEccErrors(
                h, getattr(nv, tk), getattr(nv, sk))))
            for loc, lk in LOCATIONS.items():
                calls.append((f"ecc:{t}:{s}:{loc}", lambda tk=tk, sk=sk, lk=lk:
                               nv.nvmlDeviceGetMemoryErrorCounter(
                                   h, getattr(nv, tk), getattr(nv, sk), getattr(nv, lk))))
    for key, count in gpu.each(calls):
        _, t, s, loc = key.split(":")
        yield sample("gpu_ecc_errors_total", count, type=t, scope=s, location=loc)


def read_sram_threshold(gpu: NvmlGpu) -> Iterable[Sample]:
    nv = gpu.nvml
    status = nv.c_nvmlEccSramErrorStatus_v1_t()  # its constructor sets the struct version
    # pynvml passes this argument through unchanged: the pointer is ours to make.
    nv.nvmlDeviceGetSramEccErrorStatus(gpu.handle, ctypes.byref(status))
    yield sample("gpu_sram_ecc_threshold_exceeded", 1 if status.bThresholdExceeded else 0)


def read_remapped_rows(gpu: NvmlGpu) -> Iterable[Sample]:
    corrected, uncorrected, pending, failure = gpu.nvml.nvmlDeviceGetRemappedRows(gpu.handle)
    yield sample("gpu_remapped_rows_total", corrected, cause="correctable")
    yield sample("gpu_remapped_rows_total", uncorrected, cause="uncorrectable")
    yield sample("gpu_row_remap_pending", 1 if pending else 0)
    yield sample("gpu_row_remap_failure", 1 if failure else 0)


def read_remap_histogram(gpu: NvmlGpu) -> Iterable[Sample]:
    values = gpu.nvml.nvmlDeviceGetRowRemapperHistogram(gpu.handle)
    for availability in HISTOGRAM:
        yield sample("gpu_row_remap_banks", getattr(values, availability),
                     availability=availability)


def read_retired_pages(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    for key, pages in gpu.each([
        ("single_bit", lambda: nv.nvmlDeviceGetRetiredPages(
            h, nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)),
        ("double_bit", lambda: nv.nvmlDeviceGetRetiredPages(
            h, nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)),
    ]):
        yield sample("gpu_retired_pages_total", len(pages), cause=key)


def read_retired_pending(gpu: NvmlGpu) -> Iterable[Sample]:
    pending = gpu.nvml.nvmlDeviceGetRetiredPagesPendingStatus(gpu.handle)
    yield sample("gpu_retired_pages_pending", 1 if pending else 0)


FIELDS = [
    FieldSpec("ecc", Tier.SLOW, "reliability", read_ecc),
    FieldSpec("sram_threshold", Tier.SLOW, "reliability", read_sram_threshold),
    FieldSpec("remapped_rows", Tier.SLOW, "reliability", read_remapped_rows),
    FieldSpec("row_remap_histogram", Tier.SLOW, "reliability", read_remap_histogram),
    FieldSpec("retired_pages", Tier.SLOW, "reliability", read_retired_pages),
    FieldSpec("retired_pages_pending", Tier.SLOW, "reliability", read_retired_pending),
]
