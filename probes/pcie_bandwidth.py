"""Host <-> device bandwidth over the GPU's link: pinned host memory, the copy engines.

`repeats` transfers of `bytes` each way with cudaMemcpyAsync on a non-default stream (a
pinned-to-device copy runs on a copy engine), each timed with CUDA events; the median of each
direction, counting the bytes once: `h2d_bytes_per_second`, `d2h_bytes_per_second`.

Size: measured on the H100 80GB HBM3 here (PCIe Gen5 x16, driver 580.159.04, 2026-11-22), H2D
median over 10 copies, reference and this probe alike: 1 MiB 46.1 GB/s (84 % of the plateau),
2 MiB 50.2, 4 MiB 52.7 (96 %), 8 MiB 54.0, 16 MiB 54.7 (99.3 %), 32..256 MiB 54.9-55.1 GB/s;
D2H the same within 1 %. The plateau starts at about 16 MiB; the default of 64 MiB sits on it
with margin for slower hosts and costs 25 ms of measurement for both directions.

NUMA: the host buffer is allocated while this thread runs on the CPUs of the GPU's NUMA node
(when the system says which; `ctx.numa_node`). cudaHostAlloc pins, and so touches, every page
when it is called, and Linux places a page on the node of the CPU that first touches it: the
pages land next to the GPU. Pages already in CuPy's pinned pool would not move, hence the
allocation comes first in the child.
"""

from __future__ import annotations

import numpy as np

from .cuda_runtime import ProbeContext, event_seconds, median, on_node, warm_up
from .result import Measurement


def measure(ctx: ProbeContext) -> Measurement:
    cp = ctx.cupy
    rt = cp.cuda.runtime
    nbytes = int(ctx.params["bytes"])
    repeats = int(ctx.params["repeats"])
    with on_node(ctx.numa_node) as bound:
        host = cp.cuda.alloc_pinned_memory(nbytes)
        np.frombuffer(host, np.uint8, nbytes)[:] = 0xA5  # not zeros, and every page touched
        dev = cp.empty(nbytes, dtype=cp.uint8)
        stream = cp.cuda.Stream(non_blocking=True)

        def h2d() -> None:
            rt.memcpyAsync(dev.data.ptr, host.ptr, nbytes, rt.memcpyHostToDevice, stream.ptr)

        def d2h() -> None:
            rt.memcpyAsync(host.ptr, dev.data.ptr, nbytes, rt.memcpyDeviceToHost, stream.ptr)

        warm_up(stream, h2d, 2)  # first touch of the device buffer and the copy path
        warm_up(stream, d2h, 2)
        with ctx.timed():
            up = event_seconds(cp, stream, h2d, repeats)
            down = event_seconds(cp, stream, d2h, repeats)
    node = "unknown" if ctx.numa_node is None else str(ctx.numa_node)
    return Measurement(
        quantities={
            "h2d_bytes_per_second": nbytes / median(up),
            "d2h_bytes_per_second": nbytes / median(down),
        },
        detail=f"{nbytes} bytes x {repeats}; NUMA node {node}"
               + (", host buffer bound there" if bound else ""),
    )
