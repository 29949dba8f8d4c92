// A CPU stand-in for the parts of CUDA the engine uses, so that the very same kernel and
// engine source (kernels.cuh, cuda_engine.cu) runs without a GPU: a test of its indexing,
// tiling, epilogues, buffer bookkeeping and graph replay on machines that have no device.
// Built only as basenji2_fast._cuda_emu (BASENJI2_FAST_CUDA_EMULATOR=1); never in _cuda.
//
// What it models: a kernel launch runs every block in turn, its CUDA threads as fibers on the
// calling thread (so __syncthreads is a real barrier and shared memory is shared); a WMMA fragment
// holds its whole 16x16 tile in every lane and mma_sync multiplies in fp32 (the hardware's
// accumulation order within a 16-wide step differs only by rounding); memory is host memory
// (allocations registered, so device-pointer checks behave); streams run in order at once;
// a captured graph records the enqueued work and replays it.
// What it cannot model: timing, races between streams, the hardware's exact rounding.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
#define __CUDACC_VER_MAJOR__ 0
#define __CUDACC_VER_MINOR__ 0
#define __CUDACC_VER_BUILD__ 0

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
using std::min;
inline float fmaxf(float a, float b) { return std::fmax(a, b); }

struct __nv_bfloat16 {
  uint16_t bits;
};
inline float b2f_emu_bf16_to_float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{uint16_t((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{uint16_t(u >> 16)};
}

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace b2f {
namespace emu {
inline void sync_block();
}
}  // namespace b2f
inline void __syncthreads() { b2f::emu::sync_block(); }

// The alignment CUDA requires of vector accesses and WMMA pointers, checked (a misaligned
// access faults on a GPU; here it stops the process with the reason).
namespace b2f {
namespace emu {
inline void check_aligned(const void* p, size_t n, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % n) {
    std::fprintf(stderr, "CUDA emulator: %s is not %zu-byte aligned\n", what, n);
    std::abort();
  }
}
}  // namespace emu
}  // namespace b2f

// ---- WMMA ---------------------------------------------------------------------------------
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
enum layout_t { mem_row_major = 0, mem_col_major = 1 };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float x[16][16];  // the whole tile, in every lane
};

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const __nv_bfloat16* p, unsigned ldm) {
  b2f::emu::check_aligned(p, 32, "a WMMA load pointer");
  if (ldm % 8) std::fprintf(stderr, "WMMA ldm %u\n", ldm), std::abort();
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.x[i][j] = b2f_emu_bf16_to_float(p[size_t(i) * ldm + j]);
}
template <typename T>
inline void fill_fragment(fragment<accumulator, 16, 16, 16, T>& f, float v) {
  for (auto& row : f.x)
    for (float& e : row) e = v;
}
template <typename TA, typename TB, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float r[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = 0.f;
      for (int k = 0; k < 16; ++k) s += a.x[i][k] * b.x[k][j];
      r[i][j] = c.x[i][j] + s;
    }
  std::memcpy(d.x, r, sizeof r);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t) {
  b2f::emu::check_aligned(p, 32, "a WMMA store pointer");
  if (ldm % 4) std::fprintf(stderr, "WMMA ldm %u\n", ldm), std::abort();
  if (threadIdx.x % 32) return;  // one lane writes (all lanes hold the same tile)
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) p[size_t(i) * ldm + j] = f.x[i][j];
}
}  // namespace wmma
}  // namespace nvcuda

// ---- runtime ------------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2,
                      cudaMemoryTypeManaged = 3 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal };
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
};
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
};

namespace b2f {
namespace emu {
struct Stream {
  std::vector<std::function<void()>>* capture = nullptr;
};
struct Graph {
  std::vector<std::function<void()>> work;
};
struct State {
  std::mutex mutex;
  std::map<uintptr_t, size_t> allocations;  // start -> bytes
};
inline State& state() {
  static State s;
  return s;
}
// Runs `work` now, or records it when the stream is being captured.
inline void enqueue(void* stream, std::function<void()> work) {
  Stream* s = static_cast<Stream*>(stream);
  if (s && s->capture) s->capture->push_back(std::move(work));
  else work();
}
// The threads of a block are fibers (ucontext) on the calling thread: each runs until its
// next __syncthreads or its end, then the next one; a round in which every live fiber has
// reached the barrier ends the barrier. Cheaper than an OS thread per CUDA thread, and
// deterministic.
struct Fibers {
  ucontext_t scheduler;
  std::vector<ucontext_t> ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> done;
  int current = -1;
  const std::function<void()>* body = nullptr;
};
constexpr size_t kFiberStack = 256 * 1024;
inline Fibers& fibers() {
  static thread_local Fibers f;
  return f;
}
inline void fiber_main(int i) {
  Fibers& f = fibers();
  (*f.body)();
  f.done[i] = 1;  // returning switches to uc_link, the scheduler
}
inline void sync_block() {
  Fibers& f = fibers();
  swapcontext(&f.ctx[f.current], &f.scheduler);
}
inline void run_block(unsigned n, const dim3& block, const std::function<void()>& body) {
  Fibers& f = fibers();
  while (f.stacks.size() < n) f.stacks.emplace_back(new char[kFiberStack]);
  f.ctx.resize(n);
  f.done.assign(n, 0);
  f.body = &body;
  for (unsigned i = 0; i < n; ++i) {
    getcontext(&f.ctx[i]);
    f.ctx[i].uc_stack.ss_sp = f.stacks[i].get();
    f.ctx[i].uc_stack.ss_size = kFiberStack;
    f.ctx[i].uc_link = &f.scheduler;
    makecontext(&f.ctx[i], reinterpret_cast<void (*)()>(&fiber_main), 1, int(i));
  }
  for (bool live = true; live;) {
    live = false;
    for (unsigned i = 0; i < n; ++i) {
      if (f.done[i]) continue;
      live = true;
      threadIdx = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
      f.current = int(i);
      swapcontext(&f.scheduler, &f.ctx[i]);
    }
  }
}
template <typename F>
void launch(dim3 grid, dim3 block, void* stream, F f) {
  enqueue(stream, [grid, block, f] {
    const std::function<void()> body = f;
    blockDim = block, gridDim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = dim3(x, y, z);
          run_block(block.x * block.y * block.z, block, body);
        }
  });
}

// kernel<<<grid, block, 0, stream>>>(args...): the arguments are evaluated (and converted to
// the kernel's parameter types) now, as a real launch copies them.
template <typename... P, typename... A>
void launch_kernel(dim3 grid, dim3 block, void* stream, void (*kernel)(P...), A&&... args) {
  auto params = std::make_tuple(P(std::forward<A>(args))...);
  launch(grid, block, stream, [kernel, params] { std::apply(kernel, params); });
}
}  // namespace emu
}  // namespace b2f

using cudaStream_t = b2f::emu::Stream*;
using cudaGraph_t = b2f::emu::Graph*;
using cudaGraphExec_t = b2f::emu::Graph*;

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorMemoryAllocation ? "out of memory" : "invalid argument";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "CUDA emulator (CPU)");
  p->major = 9, p->minor = 0, p->totalGlobalMem = size_t(1) << 30;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  // Exactly `bytes` (256-byte aligned as cudaMalloc's): a read past the end is out of bounds
  // for AddressSanitizer builds of the emulator.
  if (posix_memalign(p, 256, bytes ? bytes : 1)) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xA5, bytes);  // garbage, as fresh device memory: the engine must clear what it reads
  auto& s = b2f::emu::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.allocations[uintptr_t(*p)] = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  auto& s = b2f::emu::state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.allocations.erase(uintptr_t(p));
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  auto& s = b2f::emu::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  a->type = cudaMemoryTypeUnregistered, a->device = -1;
  auto it = s.allocations.upper_bound(uintptr_t(p));
  if (it != s.allocations.begin()) {
    --it;
    if (uintptr_t(p) < it->first + it->second) a->type = cudaMemoryTypeDevice, a->device = 0;
  }
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t st) {
  b2f::emu::enqueue(st, [=] { std::memcpy(d, s, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dpitch, const void* s, size_t spitch, size_t width, size_t height,
                                     cudaMemcpyKind, cudaStream_t st) {
  if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
  b2f::emu::enqueue(st, [=] {
    for (size_t r = 0; r < height; ++r)
      std::memcpy(static_cast<char*>(d) + r * dpitch, static_cast<const char*>(s) + r * spitch, width);
  });
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2D(void* d, size_t dpitch, const void* s, size_t spitch, size_t width, size_t height,
                                cudaMemcpyKind k) {
  return cudaMemcpy2DAsync(d, dpitch, s, spitch, width, height, k, nullptr);
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new b2f::emu::Stream();
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) { return s && s->capture ? cudaErrorInvalidValue : cudaSuccess; }
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (s->capture) return cudaErrorInvalidValue;
  s->capture = new std::vector<std::function<void()>>();
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  if (!s->capture) return cudaErrorInvalidValue;
  *g = new b2f::emu::Graph{std::move(*s->capture)};
  delete s->capture;
  s->capture = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  *e = new b2f::emu::Graph(*g);
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  for (auto& w : e->work) b2f::emu::enqueue(s, w);
  return cudaSuccess;
}
