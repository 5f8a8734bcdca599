"""The operators' healthcheck as a CUDA graph: pinned H2D copy -> FMA loop kernel -> D2H copy.

The graph is captured once from a non-blocking stream and replayed `replays` times back to
back; CUDA events recorded between consecutive launches give each replay's time on the device
(its cadence). Quantities:

- `replay_mean_seconds`, `replay_p99_seconds`: mean and 99th percentile of the replay times.
- `replay_cv_ratio`: their standard deviation over their mean (cadence variation).
- `replay_h2d_bytes_per_second`: the bytes a replay moves over the link, H2D plus D2H
  (2 x elements x 4), over the mean replay time. The kernel's time is inside that denominator,
  so this is a throughput of the whole graph, *not* the link's bandwidth (`pcie_bandwidth`
  measures that): it drops when copies or kernel slow down, which is what it is for.
- `replays_100_seconds`: wall time of 100 consecutive replays with one synchronisation.

Verification: every output element is compared *exactly* with the host's answer. The kernel
calls `fmaf` explicitly (one rounding per step, whatever the compiler's contraction flags). The
host emulates fmaf in float64: with inputs and the state in [0.5, 1.5], a = 0.999 and b = 0.001,
x*a is exact in float64 (24 x 24 bit products need 48 bits) and adding b stays exact too (the
sum spans 2^0 down to 2^-49, 50 bits < 53), so rounding that to float32 once is exactly fmaf.
The state stays in [0.5, 1.5] because the map x -> 0.999x + 0.001 keeps it there. So any
difference, NaN included, is corruption; there is no tolerance. To keep the host's part cheap,
the input draws from 65,536 distinct values (the reference runs the loop on those alone), each
element picking one at random, so every one of the `elements` outputs is still checked.

Measured with the defaults (2026-11-22, bench/reference/results-2026-11-22.md): H100 replay
mean 207 us, p99 218 us, cadence variation 2.3 %, 100 replays 20.6 ms, 0 corrupted; within
0.5 % of the CUDA C++ reference for mean, throughput and 100-replay time.
"""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np

from .cuda_runtime import ProbeContext
from .result import Measurement

A = np.float32(0.999)
B = np.float32(0.001)
DISTINCT = 1 << 16
SEED = 20240611

KERNEL = r"""
extern "C" __global__ void fma_loop(float* x, int n, int iters, float a, float b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    for (int k = 0; k < iters; ++k) v = fmaf(v, a, b);
    x[i] = v;
}
"""


def host_inputs(elements: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct input values and, for every element, which one it holds."""
    rng = np.random.default_rng(SEED)
    table = rng.uniform(0.5, 1.5, DISTINCT).astype(np.float32)
    index = rng.integers(0, DISTINCT, elements, dtype=np.int64)
    return table, index


def host_reference(table: np.ndarray, iterations: int) -> np.ndarray:
    """fmaf(x, a, b) applied `iterations` times, emulated exactly (see the module's note)."""
    x = table.astype(np.float64)
    a, b = np.float64(A), np.float64(B)
    for _ in range(iterations):
        x = (x * a + b).astype(np.float32).astype(np.float64)
    return x.astype(np.float32)


def measure(ctx: ProbeContext) -> Measurement:
    cp = ctx.cupy
    if cp.cuda.runtime.is_hip:
        return Measurement(skipped="graph capture of copies is not supported by CuPy on ROCm")
    n = int(ctx.params["elements"])
    iters = int(ctx.params["fma_iterations"])
    replays = max(int(ctx.params["replays"]), 200)  # cadence needs at least 200 launches
    nbytes = n * 4

    table, index = host_inputs(n)
    expected = host_reference(table, iters)[index]
    h_in_mem = cp.cuda.alloc_pinned_memory(nbytes)
    h_out_mem = cp.cuda.alloc_pinned_memory(nbytes)
    h_in = np.frombuffer(h_in_mem, np.float32, n)
    h_out = np.frombuffer(h_out_mem, np.float32, n)
    h_in[:] = table[index]
    h_out[:] = np.nan  # poison: an element the graph never writes counts as corrupted
    d_x = cp.empty(n, dtype=cp.float32)
    kernel = cp.RawKernel(KERNEL, "fma_loop")
    threads = 256
    grid = ((n + threads - 1) // threads,)
    args = (d_x, np.int32(n), np.int32(iters), A, B)
    rt = cp.cuda.runtime
    stream = cp.cuda.Stream(non_blocking=True)
    kernel(grid, (threads,), args, stream=stream)  # compile and load before the capture
    stream.synchronize()

    stream.begin_capture()
    rt.memcpyAsync(d_x.data.ptr, h_in_mem.ptr, nbytes, rt.memcpyHostToDevice, stream.ptr)
    kernel(grid, (threads,), args, stream=stream)
    rt.memcpyAsync(h_out_mem.ptr, d_x.data.ptr, nbytes, rt.memcpyDeviceToHost, stream.ptr)
    graph = stream.end_capture()
    if hasattr(graph, "upload"):  # puts the graph on the device now, not at first launch
        graph.upload(stream)
    for _ in range(3):  # warm-up: first launches pay for setting the graph up on the device
        graph.launch(stream)
    stream.synchronize()
    h_out[:] = np.nan

    marks = [cp.cuda.Event() for _ in range(replays + 1)]
    with ctx.timed():
        marks[0].record(stream)
        for mark in marks[1:]:
            graph.launch(stream)
            mark.record(stream)
        stream.synchronize()
        t0 = time.perf_counter()
        for _ in range(100):
            graph.launch(stream)
        stream.synchronize()
        hundred = time.perf_counter() - t0
    # Every replay rewrites the output: this checks the last one. NaN != anything: counted.
    bad = np.flatnonzero(h_out != expected)

    times = np.array([cp.cuda.get_elapsed_time(a, b) / 1e3 for a, b in pairwise(marks)])
    mean = float(times.mean())
    detail = f"{replays} replays; bytes/s counts H2D + D2H bytes over the whole replay"
    if bad.size:
        i = int(bad[0])
        detail += f"; first bad element {i}: {h_out[i]!r} != {expected[i]!r}"
    return Measurement(
        quantities={
            "replay_mean_seconds": mean,
            "replay_p99_seconds": float(np.percentile(times, 99)),
            "replay_cv_ratio": float(times.std() / mean),
            "replay_h2d_bytes_per_second": 2 * nbytes / mean,
            "replays_100_seconds": hundred,
        },
        corrupted=int(bad.size),
        detail=detail,
    )
