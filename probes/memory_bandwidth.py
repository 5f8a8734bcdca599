"""Device memory bandwidth: a device-to-device copy of `bytes`.

`d2d_bytes_per_second` = 2 x bytes / median copy time: it counts every byte read *and* every
byte written, the traffic the memory actually carries, so it compares directly with the HBM's
datasheet figure. This is the convention of NVIDIA's bandwidthTest for device-to-device
(`2.0f * memSize` there) and of bench/reference's `memory` mode. Halve it for "bytes copied".
`bytes` must be well above the L2 cache (50 MB on H100) or the copy measures the cache: on the
H100 here (2026-11-22) 16 MiB read 3.30e12 (the cache), 32 MiB 2.54e12, 64 MiB 2.75e12,
128 MiB 2.89e12, 256 MiB 2.97e12, 1 GiB 3.01e12; the default 256 MiB is within 1.5 % of the
plateau and takes 2 ms for 10 copies. (H200: 4.14e12 at 256 MiB.)
"""

from __future__ import annotations

from .cuda_runtime import ProbeContext, event_seconds, landed, median, warm_up
from .result import Measurement


def measure(ctx: ProbeContext) -> Measurement:
    cp = ctx.cupy
    rt = cp.cuda.runtime
    nbytes = int(ctx.params["bytes"])
    repeats = int(ctx.params["repeats"])
    stream = cp.cuda.Stream(non_blocking=True)
    src = cp.empty(nbytes, dtype=cp.uint8)
    dst = cp.empty(nbytes, dtype=cp.uint8)
    src.data.memset_async(0x5A, nbytes, stream)  # a memset: no kernel to compile

    def copy() -> None:
        rt.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, rt.memcpyDeviceToDevice, stream.ptr)

    warm_up(stream, copy, 3)
    with ctx.timed():
        times = event_seconds(cp, stream, copy, repeats)
    ok = landed(dst, 0x5A)
    if not ok:
        raise RuntimeError("device-to-device copy left wrong bytes in the destination")
    return Measurement(
        quantities={"d2d_bytes_per_second": 2 * nbytes / median(times)},
        detail=f"{nbytes} bytes x {repeats}; counts bytes read + bytes written",
    )
