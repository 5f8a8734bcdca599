// Minimal CUDA C++ references for the five probes: the same operations, sizes, warm-ups,
// timing (cudaEvents around each operation, queued back to back, median) and byte counting as
// probes/*.py, so that bench/probe_reference.py can put the two side by side.
//
//   probe_ref graph_replay ELEMENTS FMA_ITERATIONS REPLAYS
//   probe_ref pcie BYTES REPEATS        h2d/d2h, pinned host memory, bytes counted once
//   probe_ref memory BYTES REPEATS      d2d, counts bytes read + bytes written (2 x BYTES)
//   probe_ref gemm N REPEATS            fp16 and bf16, fp32 accumulation, 2 N^3 flop
//   probe_ref p2p BYTES REPEATS         device 0 -> device 1, bytes counted once
//   probe_ref sweep                     pcie 1..256 MiB, memory 16 MiB..1 GiB, gemm n 2048..16384
//
// Each result is one JSON line on stdout.
// Build: nvcc -O3 -arch=sm_90 -Xcompiler -O3,-mfma probe_ref.cu -lcublas
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#if __has_include(<cublas_v2.h>)
#include <cublas_v2.h>
#define DT(x) ((cudaDataType)(x))
#else  // the toolkit may come without cuBLAS's headers; the library is all we need
typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;
extern "C" {
cublasStatus_t cublasCreate_v2(cublasHandle_t*);
cublasStatus_t cublasDestroy_v2(cublasHandle_t);
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasGemmEx(cublasHandle_t, int, int, int, int, int, const void*, const void*,
                            int, int, const void*, int, int, const void*, void*, int, int, int,
                            int);
}
#define cublasCreate cublasCreate_v2
#define cublasDestroy cublasDestroy_v2
#define cublasSetStream cublasSetStream_v2
#define CUBLAS_OP_N 0
#define CUBLAS_COMPUTE_32F 68
#define CUBLAS_GEMM_DEFAULT (-1)
#define DT(x) (x)
#endif

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)
#define CB(x)                                                                              \
  do {                                                                                     \
    int s_ = (int)(x);                                                                     \
    if (s_ != 0) {                                                                         \
      fprintf(stderr, "%s:%d %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, s_);         \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)

// Same kernel as probes/graph_replay.py.
extern "C" __global__ void fma_loop(float* x, int n, int iters, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  for (int k = 0; k < iters; ++k) v = fmaf(v, a, b);
  x[i] = v;
}

// Same generator as probes/gemm.py.
extern "C" __global__ void fill_uniform(unsigned short* out, unsigned long long n,
                                        unsigned int seed, int bf16) {
  unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += stride) {
    unsigned int h = (unsigned int)(i ^ (i >> 32)) * 0x9E3779B1u ^ seed;
    h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    float u = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    unsigned short bits;
    if (bf16) {
      unsigned int f = __float_as_uint(u);
      bits = (unsigned short)((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
    } else {
      asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(u));
    }
    out[i] = bits;
  }
}

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void warm(cudaStream_t s, const std::function<void()>& op, int times) {
  for (int i = 0; i < times; ++i) op();
  CK(cudaStreamSynchronize(s));
}

// Events around each run, queued back to back, one synchronisation: seconds per run.
static std::vector<double> event_seconds(cudaStream_t s, const std::function<void()>& op,
                                         int repeats) {
  std::vector<cudaEvent_t> ev(2 * repeats);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < repeats; ++i) {
    CK(cudaEventRecord(ev[2 * i], s));
    op();
    CK(cudaEventRecord(ev[2 * i + 1], s));
  }
  CK(cudaEventSynchronize(ev.back()));
  std::vector<double> t(repeats);
  for (int i = 0; i < repeats; ++i) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    t[i] = ms / 1e3;
  }
  for (auto& e : ev) CK(cudaEventDestroy(e));
  return t;
}

static void emit(const char* mode, const std::string& quantities, double measure_s,
                 long corrupted = -1) {
  printf("{\"mode\":\"%s\",\"quantities\":{%s},\"measure_seconds\":%.6f", mode,
         quantities.c_str(), measure_s);
  if (corrupted >= 0) printf(",\"corrupted\":%ld", corrupted);
  printf("}\n");
  fflush(stdout);
}

static std::string q(const char* name, double v, bool first = false) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s\"%s\":%.12g", first ? "" : ",", name, v);
  return buf;
}

static void graph_replay(int n, int iters, int replays) {
  replays = std::max(replays, 200);
  const float a = 0.999f, b = 0.001f;
  size_t nbytes = (size_t)n * 4;
  float *h_in, *h_out, *d_x;
  CK(cudaMallocHost(&h_in, nbytes));
  CK(cudaMallocHost(&h_out, nbytes));
  CK(cudaMalloc(&d_x, nbytes));
  // Inputs in [0.5, 1.5) like the probe (its exact values come from numpy; any will do here).
  srand(20240611);
  for (int i = 0; i < n; ++i) h_in[i] = 0.5f + (float)rand() / ((float)RAND_MAX + 1.0f);
  for (int i = 0; i < n; ++i) h_out[i] = NAN;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int threads = 256, grid = (n + threads - 1) / threads;
  fma_loop<<<grid, threads, 0, s>>>(d_x, n, iters, a, b);
  CK(cudaStreamSynchronize(s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  CK(cudaMemcpyAsync(d_x, h_in, nbytes, cudaMemcpyHostToDevice, s));
  fma_loop<<<grid, threads, 0, s>>>(d_x, n, iters, a, b);
  CK(cudaMemcpyAsync(h_out, d_x, nbytes, cudaMemcpyDeviceToHost, s));
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphUpload(ge, s));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, s));
  CK(cudaStreamSynchronize(s));
  for (int i = 0; i < n; ++i) h_out[i] = NAN;
  std::vector<cudaEvent_t> ev(replays + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  double t0 = now();
  CK(cudaEventRecord(ev[0], s));
  for (int i = 1; i <= replays; ++i) {
    CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(ev[i], s));
  }
  CK(cudaStreamSynchronize(s));
  double t1 = now();
  for (int i = 0; i < 100; ++i) CK(cudaGraphLaunch(ge, s));
  CK(cudaStreamSynchronize(s));
  double hundred = now() - t1, measure_s = now() - t0;
  // Host fmaf, the correctly rounded fused multiply-add; steps outer so that it vectorises.
  long bad = 0;
  std::vector<float> v(h_in, h_in + n);
  for (int k = 0; k < iters; ++k)
    for (int i = 0; i < n; ++i) v[i] = fmaf(v[i], a, b);
  for (int i = 0; i < n; ++i)
    if (!(h_out[i] == v[i])) ++bad;
  std::vector<double> t(replays);
  double sum = 0, sq = 0;
  for (int i = 0; i < replays; ++i) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]));
    t[i] = ms / 1e3;
    sum += t[i];
  }
  double mean = sum / replays;
  for (double x : t) sq += (x - mean) * (x - mean);
  std::sort(t.begin(), t.end());
  // numpy's percentile (linear interpolation) at 99 %
  double pos = 0.99 * (replays - 1);
  size_t lo = (size_t)pos;
  double p99 = t[lo] + (pos - lo) * (t[std::min(lo + 1, t.size() - 1)] - t[lo]);
  emit("graph_replay",
       q("replay_mean_seconds", mean, true) + q("replay_p99_seconds", p99) +
           q("replay_cv_ratio", std::sqrt(sq / replays) / mean) +
           q("replay_h2d_bytes_per_second", 2.0 * nbytes / mean) +
           q("replays_100_seconds", hundred),
       measure_s, bad);
  for (auto& e : ev) CK(cudaEventDestroy(e));
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaFreeHost(h_in));
  CK(cudaFreeHost(h_out));
  CK(cudaFree(d_x));
  CK(cudaStreamDestroy(s));
}

static void pcie(size_t nbytes, int repeats) {
  void *h, *d;
  CK(cudaMallocHost(&h, nbytes));
  memset(h, 0xA5, nbytes);
  CK(cudaMalloc(&d, nbytes));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto h2d = [&] { CK(cudaMemcpyAsync(d, h, nbytes, cudaMemcpyHostToDevice, s)); };
  auto d2h = [&] { CK(cudaMemcpyAsync(h, d, nbytes, cudaMemcpyDeviceToHost, s)); };
  warm(s, h2d, 2);
  warm(s, d2h, 2);
  double t0 = now();
  auto up = event_seconds(s, h2d, repeats);
  auto down = event_seconds(s, d2h, repeats);
  double measure_s = now() - t0;
  emit("pcie", q("h2d_bytes_per_second", nbytes / median(up), true) +
                   q("d2h_bytes_per_second", nbytes / median(down)) + q("bytes", nbytes),
       measure_s);
  CK(cudaFreeHost(h));
  CK(cudaFree(d));
  CK(cudaStreamDestroy(s));
}

static void memory(size_t nbytes, int repeats) {
  void *src, *dst;
  CK(cudaMalloc(&src, nbytes));
  CK(cudaMalloc(&dst, nbytes));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaMemsetAsync(src, 0x5A, nbytes, s));
  auto copy = [&] { CK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s)); };
  warm(s, copy, 3);
  double t0 = now();
  auto t = event_seconds(s, copy, repeats);
  double measure_s = now() - t0;
  // Bytes read + bytes written, like the probe and like bandwidthTest's device-to-device.
  emit("memory", q("d2d_bytes_per_second", 2.0 * nbytes / median(t), true) + q("bytes", nbytes),
       measure_s);
  CK(cudaFree(src));
  CK(cudaFree(dst));
  CK(cudaStreamDestroy(s));
}

static void gemm(int n, int repeats) {
  const int CUDA_R_16F_ = 2, CUDA_R_16BF_ = 14, WARMUP = 5;
  size_t elems = (size_t)n * n;
  unsigned short *a, *b, *c;
  CK(cudaMalloc(&a, elems * 2));
  CK(cudaMalloc(&b, elems * 2));
  CK(cudaMalloc(&c, elems * 2));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasHandle_t handle;
  CB(cublasCreate(&handle));
  CB(cublasSetStream(handle, s));
  float alpha = 1.0f, beta = 0.0f;
  double flop = 2.0 * n * (double)n * n, measure_s = 0;
  std::string out;
  const char* names[2] = {"fp16_flop_per_second", "bf16_flop_per_second"};
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    fill_uniform<<<1024, 256, 0, s>>>(a, elems, 0x1234, bf16);
    fill_uniform<<<1024, 256, 0, s>>>(b, elems, 0x5678, bf16);
    int type = bf16 ? CUDA_R_16BF_ : CUDA_R_16F_;
    auto op = [&] {  // row-major C = A @ B as column-major C^T = B^T A^T
      CB(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, b, DT(type), n, a,
                      DT(type), n, &beta, c, DT(type), n, CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT));
    };
    warm(s, op, WARMUP);
    double t0 = now();
    auto t = event_seconds(s, op, repeats);
    measure_s += now() - t0;
    out += q(names[bf16], flop / median(t), bf16 == 0);
  }
  emit("gemm", out + q("n", n), measure_s);
  CB(cublasDestroy(handle));
  CK(cudaFree(a));
  CK(cudaFree(b));
  CK(cudaFree(c));
  CK(cudaStreamDestroy(s));
}

static void p2p(size_t nbytes, int repeats) {
  int count = 0, ab = 0, ba = 0;
  CK(cudaGetDeviceCount(&count));
  if (count < 2) {
    emit("p2p", "\"skipped\":1", 0);
    return;
  }
  CK(cudaDeviceCanAccessPeer(&ab, 0, 1));
  CK(cudaDeviceCanAccessPeer(&ba, 1, 0));
  if (!ab || !ba) {
    emit("p2p", "\"skipped\":2", 0);
    return;
  }
  void *src, *dst;
  CK(cudaSetDevice(1));
  CK(cudaDeviceEnablePeerAccess(0, 0));
  CK(cudaMalloc(&dst, nbytes));
  CK(cudaSetDevice(0));
  CK(cudaDeviceEnablePeerAccess(1, 0));
  CK(cudaMalloc(&src, nbytes));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CK(cudaMemsetAsync(src, 0x3C, nbytes, s));
  auto copy = [&] { CK(cudaMemcpyPeerAsync(dst, 1, src, 0, nbytes, s)); };
  warm(s, copy, 2);
  double t0 = now();
  auto t = event_seconds(s, copy, repeats);
  double measure_s = now() - t0;
  emit("p2p", q("p2p_bytes_per_second", nbytes / median(t), true) + q("bytes", nbytes),
       measure_s);
  CK(cudaFree(src));
  CK(cudaSetDevice(1));
  CK(cudaFree(dst));
  CK(cudaSetDevice(0));
  CK(cudaStreamDestroy(s));
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: probe_ref MODE ARGS... (see the file's head)\n");
    return 2;
  }
  std::string mode = argv[1];
  auto arg = [&](int i, double dflt) { return argc > i ? atof(argv[i]) : dflt; };
  const size_t MiB = 1 << 20;
  if (mode == "graph_replay") {
    graph_replay((int)arg(2, 1 << 20), (int)arg(3, 512), (int)arg(4, 200));
  } else if (mode == "pcie") {
    pcie((size_t)arg(2, 64.0 * MiB), (int)arg(3, 10));
  } else if (mode == "memory") {
    memory((size_t)arg(2, 256.0 * MiB), (int)arg(3, 10));
  } else if (mode == "gemm") {
    gemm((int)arg(2, 8192), (int)arg(3, 10));
  } else if (mode == "p2p") {
    p2p((size_t)arg(2, 256.0 * MiB), (int)arg(3, 10));
  } else if (mode == "sweep") {
    for (size_t m = 1; m <= 256; m *= 2) pcie(m * MiB, 10);
    for (size_t m = 16; m <= 1024; m *= 2) memory(m * MiB, 10);
    for (int n = 1024; n <= 16384; n *= 2) gemm(n, 10);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return 0;
}
