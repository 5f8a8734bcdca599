"""NVLink: per-link state and error counters (the links are discovered once per GPU)."""

from __future__ import annotations

from collections.abc import Iterable

from ...catalog import Tier
from ..base import Sample, Unsupported, sample
from .errors import is_not_supported
from .gpu import FieldSpec, NvmlGpu

ERROR_COUNTERS = {
    "replay": "NVML_NVLINK_ERROR_DL_REPLAY",
    "recovery": "NVML_NVLINK_ERROR_DL_RECOVERY",
    "crc_flit": "NVML_NVLINK_ERROR_DL_CRC_FLIT",
    "crc_data": "NVML_NVLINK_ERROR_DL_CRC_DATA",
}


def _links(gpu: NvmlGpu) -> dict[int, int]:
    """link -> state (1 up, 0 down) for every link this GPU has; probes all ids the first time.

    NVML_NVLINK_MAX_LINKS is the library's array size (36 in 13.x), not the GPU's link count:
    ids past the last link answer InvalidArgument or NotSupported.
    """
    nv, h = gpu.nvml, gpu.handle
    known: list[int] | None = gpu.memo.get("nvlinks")
    states: dict[int, int] = {}
    for link in known if known is not None else range(nv.NVML_NVLINK_MAX_LINKS):
        try:
            states[link] = 1 if nv.nvmlDeviceGetNvLinkState(h, link) == 1 else 0
        except nv.NVMLError as e:
            if not is_not_supported(nv, e) or known is not None:
                raise
    if known is None:
        gpu.memo["nvlinks"] = sorted(states)
    if not states:
        raise Unsupported("no NVLink links")
    return states


def read_nvlink_state(gpu: NvmlGpu) -> Iterable[Sample]:
    for link, up in _links(gpu).items():
        yield sample("gpu_nvlink_up", up, link=link)


def read_nvlink_errors(gpu: NvmlGpu) -> Iterable[Sample]:
    nv, h = gpu.nvml, gpu.handle
    links = gpu.memo.get("nvlinks")
    if links is None:
        links = sorted(_links(gpu))
    calls = [
        (f"nvlink:{link}:{name}",
         lambda link=link, k=k: nv.nvmlDeviceGetNvLinkErrorCounter(h, link, getattr(nv, k)))
        for link in links for name, k in ERROR_COUNTERS.items()
    ]
    for key, count in gpu.each(calls):
        _, link, name = key.split(":")
        yield sample("gpu_nvlink_errors_total", count, link=link, type=name)


FIELDS = [
    FieldSpec("nvlink_state", Tier.SLOW, "nvlink", read_nvlink_state),
    FieldSpec("nvlink_errors", Tier.SLOW, "nvlink", read_nvlink_errors),
]
