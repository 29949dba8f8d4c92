// Register-only multiply-add loops, one per kernel set (see peak.h). Each function is
// compiled for its own instruction set through a target attribute, so this unit needs no
// special flags and is chosen at run time like the kernels.
#include "peak.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "basenji2_fast/kernels.h"
#include "basenji2_fast/parallel.h"

#if defined(B2F_HAVE_X86_KERNELS)
#include <immintrin.h>
#endif

namespace b2f {
namespace cpu {

namespace {

// Independent accumulator chains per thread: a chain issues its next multiply-add only when
// the previous one has finished (4-6 cycles on current cores), so filling 2 pipes needs at
// least 12; 16/32-register files decide the rest.
constexpr int kChains128 = 12, kChains256 = 12, kChains512 = 24;

// One round of multiply-adds on every chain, written out (not a loop) so that each chain is a
// register of its own in the function of its instruction set.
#define B2F_CHAINS12(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define B2F_CHAINS24(S) B2F_CHAINS12(S) S(12) S(13) S(14) S(15) S(16) S(17) S(18) S(19) S(20) S(21) S(22) S(23)

// Portable 4-lane vectors (the generic kernels' SSE/NEON width): a multiply and an add,
// which the generic kernels issue (they are compiled without FMA).
typedef float v4f __attribute__((vector_size(16)));

float loop_generic(int64_t iters, float seed) {
  v4f a[kChains128];
  for (int i = 0; i < kChains128; ++i) a[i] = v4f{} + seed * float(i + 1);
  const v4f c = v4f{} + 0.999f, b = v4f{} + seed;
#define B2F_STEP(i) a[i] = a[i] * c + b;
  for (int64_t n = 0; n < iters; ++n) { B2F_CHAINS12(B2F_STEP) }
#undef B2F_STEP
  v4f s{};
  for (int i = 0; i < kChains128; ++i) s += a[i];
  return s[0] + s[1] + s[2] + s[3];
}

#if defined(B2F_HAVE_X86_KERNELS)
__attribute__((target("avx2,fma"))) float loop_avx2(int64_t iters, float seed) {
  __m256 a[kChains256];
  for (int i = 0; i < kChains256; ++i) a[i] = _mm256_set1_ps(seed * float(i + 1));
  const __m256 c = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(seed);
#define B2F_STEP(i) a[i] = _mm256_fmadd_ps(a[i], c, b);
  for (int64_t n = 0; n < iters; ++n) { B2F_CHAINS12(B2F_STEP) }
#undef B2F_STEP
  __m256 s = _mm256_setzero_ps();
  for (int i = 0; i < kChains256; ++i) s = _mm256_add_ps(s, a[i]);
  alignas(32) float o[8];
  _mm256_store_ps(o, s);
  return o[0] + o[7];
}

__attribute__((target("avx512f"))) float loop_avx512(int64_t iters, float seed) {
  __m512 a[kChains512];
  for (int i = 0; i < kChains512; ++i) a[i] = _mm512_set1_ps(seed * float(i + 1));
  const __m512 c = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(seed);
#define B2F_STEP(i) a[i] = _mm512_fmadd_ps(a[i], c, b);
  for (int64_t n = 0; n < iters; ++n) { B2F_CHAINS24(B2F_STEP) }
#undef B2F_STEP
  __m512 s = _mm512_setzero_ps();
  for (int i = 0; i < kChains512; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float o[16];
  _mm512_store_ps(o, s);
  return o[0] + o[15];
}

// vdpbf16ps: per fp32 lane, two bf16 products added to the accumulator (4 FLOPs).
__attribute__((target("avx512f,avx512bf16"))) float loop_avx512bf16(int64_t iters, float seed) {
  __m512 a[kChains512];
  for (int i = 0; i < kChains512; ++i) a[i] = _mm512_set1_ps(seed * float(i + 1));
  // Small products (2^-10 each) keep the sums far from overflow over any run length.
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3a80), y = (__m512bh)_mm512_set1_epi16(0x3f80);
#define B2F_STEP(i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  for (int64_t n = 0; n < iters; ++n) { B2F_CHAINS24(B2F_STEP) }
#undef B2F_STEP
  __m512 s = _mm512_setzero_ps();
  for (int i = 0; i < kChains512; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float o[16];
  _mm512_store_ps(o, s);
  return o[0] + o[15];
}
#endif

struct Loop {
  float (*fn)(int64_t, float);
  double flops_per_iter;  // per thread
  const char* instruction;
};

Loop pick(const std::string& isa, const std::string& precision) {
  if (precision != "fp32" && precision != "bf16")
    throw std::invalid_argument("peak: precision must be fp32 or bf16, got '" + precision + "'");
  const std::string usable = std::string(",") + compiled_isas() + ",";
  if (usable.find("," + isa + ",") == std::string::npos)
    throw std::invalid_argument("peak: kernel set '" + isa + "' is not available; this build and CPU run: " +
                                compiled_isas());
  if (isa == "generic") return {loop_generic, kChains128 * 4 * 2.0, "mulps + addps (4 lanes, no FMA)"};
#if defined(B2F_HAVE_X86_KERNELS)
  if (isa == "avx2") return {loop_avx2, kChains256 * 8 * 2.0, "vfmadd231ps ymm"};
  if (isa == "avx512bf16" && precision == "bf16") return {loop_avx512bf16, kChains512 * 16 * 4.0, "vdpbf16ps zmm"};
  if (isa == "avx512" || isa == "avx512bf16") return {loop_avx512, kChains512 * 16 * 2.0, "vfmadd231ps zmm"};
#endif
  throw std::invalid_argument("peak: no loop for kernel set '" + isa + "'");
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

volatile float g_sink;  // the loops' results end here, so none is optimised away

}  // namespace

PeakResult measure_peak(const char* isa, const char* precision, int threads, double seconds) {
  const Loop loop = pick(isa ? isa : "", precision ? precision : "");
  if (threads < 1) throw std::invalid_argument("peak: threads must be >= 1");
  if (!(seconds > 0)) throw std::invalid_argument("peak: seconds must be > 0");
  // Calibrate on one thread: the iteration count that runs for about `seconds`.
  int64_t iters = 1 << 14;
  for (;;) {
    const double t0 = now();
    g_sink = loop.fn(iters, 1e-3f);
    const double t = now() - t0;
    if (t >= 0.01 || iters > (int64_t(1) << 40)) {
      iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / std::max(t, 1e-9)));
      break;
    }
    iters *= 4;
  }
  // The engine's own pool runs one loop per thread (its workers made and woken by a first
  // short call, so that the timed call starts them all at once).
  const int used = std::min(threads, kMaxThreads);
  std::vector<float> sinks(size_t(used), 0.f);
  parallel_for(used, used, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sinks[size_t(i)] = loop.fn(1, 1e-3f);
  });
  const double t0 = now();
  parallel_for(used, used, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sinks[size_t(i)] = loop.fn(iters, 1e-3f + 1e-6f * float(i));
  });
  const double t = now() - t0;
  float sink = 0;
  for (float v : sinks) sink += v;
  g_sink = sink;
  PeakResult r;
  r.seconds = t;
  r.threads = used;
  r.gflops = loop.flops_per_iter * double(iters) * used / t / 1e9;
  r.instruction = loop.instruction;
  return r;
}

}  // namespace cpu
}  // namespace b2f
