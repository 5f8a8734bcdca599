"""Matrix-unit throughput: n x n x n products in fp16 and bf16, fp32 accumulation (cuBLAS).

fp16 goes through `cupy.matmul` on float16 arrays (cuBLAS GemmEx underneath). CuPy has no
bfloat16 dtype, so bf16 calls `cublasGemmEx` on raw 2-byte buffers through `cupy.cuda.cublas`:
CUDA_R_16BF for A, B and C, CUBLAS_COMPUTE_32F, fp32 alpha/beta. Flop per product = 2 n^3;
each quantity is that over the median of `repeats` products timed with CUDA events, after
warm-up products (which also let the clocks rise). Data: uniform in [-1, 1) from a fixed-seed
hash, never zeros (a product of zeros runs faster than real data). A 16-element slice of each
result is checked against the host's float64 product of the same (rounded) inputs; elements
off by more than the output type's rounding count as `corrupted`.

Size, on the H100 here (2026-11-22, cuBLAS reference, bf16 / fp16 TFLOP/s): n=1024 191 / 172,
2048 654 / 643, 4096 799 / 769, 8192 805 / 773, 16384 744 / 662 (power-limited). n=8192 is the
peak and takes 28 ms for both dtypes; n=4096 is within 1 % and needs a quarter of the memory.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .cuda_runtime import ProbeContext, event_seconds, median, warm_up
from .result import Measurement

CUDA_R_16BF = 14  # cudaDataType for bfloat16
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_OP_N = 0
WARMUP = 5
CHECK = 16  # result elements checked against the host

# Same generator as bench/reference/probe_ref.cu, so both multiply the same matrices.
FILL = r"""
extern "C" __global__ void fill_uniform(unsigned short* out, unsigned long long n,
                                        unsigned int seed, int bf16) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < n; i += stride) {
        unsigned int h = (unsigned int)(i ^ (i >> 32)) * 0x9E3779B1u ^ seed;
        h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
        float u = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
        unsigned short bits;
        if (bf16) {
            unsigned int f = __float_as_uint(u);
            bits = (unsigned short)((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);  // round to even
        } else {
            asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(u));
        }
        out[i] = bits;
    }
}
"""


def _to_f64(bits: np.ndarray, bf16: bool) -> np.ndarray:
    if bf16:
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(np.float16).astype(np.float64)


def _check(cp: ModuleType, a, b, c, n: int, bf16: bool) -> int:
    """Elements of C[0, :CHECK] that differ from the host's product by more than rounding."""
    rt = cp.cuda.runtime
    a_row = a[0].get()
    b_cols = np.empty((n, CHECK), dtype=np.uint16)
    # B[:, :CHECK] is strided: a 2-D copy fetches it without a gather kernel.
    rt.memcpy2D(b_cols.ctypes.data, CHECK * 2, b.data.ptr, n * 2, CHECK * 2, n,
                rt.memcpyDeviceToHost)
    want = _to_f64(a_row, bf16) @ _to_f64(b_cols, bf16)
    got = _to_f64(c[0, :CHECK].get(), bf16)
    # Output rounding: 2^-8 (bf16) or 2^-11 (fp16) of the value; fp32 accumulation adds far less.
    tol = (2.0**-6 if bf16 else 2.0**-9) * max(float(np.abs(want).max()), 1.0)
    return int(np.count_nonzero(~(np.abs(got - want) <= tol)))


def measure(ctx: ProbeContext) -> Measurement:
    cp = ctx.cupy
    cublas = cp.cuda.cublas
    n = int(ctx.params["n"])
    repeats = int(ctx.params["repeats"])
    flop = 2.0 * n**3
    fill = cp.RawKernel(FILL, "fill_uniform")
    a, b, c = (cp.empty((n, n), dtype=cp.uint16) for _ in range(3))
    stream = cp.cuda.Stream(non_blocking=True)
    handle = cp.cuda.get_cublas_handle()
    alpha, beta = np.array(1.0, np.float32), np.array(0.0, np.float32)

    def fill_inputs(bf16: bool) -> None:
        for seed, m in ((0x1234, a), (0x5678, b)):
            fill((1024,), (256,), (m, np.uint64(n * n), np.uint32(seed), np.int32(bf16)),
                 stream=stream)

    def fp16() -> None:
        cp.matmul(a.view(cp.float16), b.view(cp.float16), out=c.view(cp.float16))

    def bf16() -> None:
        # Row-major C = A @ B is column-major C^T = B^T A^T: pass B first, no transposes.
        cublas.gemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, alpha.ctypes.data,
                      b.data.ptr, CUDA_R_16BF, n, a.data.ptr, CUDA_R_16BF, n,
                      beta.ctypes.data, c.data.ptr, CUDA_R_16BF, n,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)

    results: dict[str, float] = {}
    corrupted = 0
    with stream:  # cupy.matmul and cublas.gemmEx both run on the current stream
        cublas.setPointerMode(handle, getattr(cublas, "CUBLAS_POINTER_MODE_HOST", 0))
        times: dict[str, list[float]] = {}
        for name, op in (("fp16", fp16), ("bf16", bf16)):
            fill_inputs(name == "bf16")
            # cuBLAS picks and loads its kernel, the clocks rise: start time, not measured
            warm_up(stream, op, WARMUP)
            with ctx.timed():  # two segments: the bf16 set-up between them is start time
                times[name] = event_seconds(cp, stream, op, repeats)
            corrupted += _check(cp, a, b, c, n, name == "bf16")
        for name, t in times.items():
            results[f"{name}_flop_per_second"] = flop / median(t)
    return Measurement(quantities=results, corrupted=corrupted,
                       detail=f"n={n}, {repeats} products each, {WARMUP} warm-up")
