// The machine's arithmetic limit, measured: a loop of independent multiply-adds that live in
// registers (no loads or stores), one per kernel set, so the benchmark reports our kernels'
// share of what the CPU actually sustains rather than of a clock-speed guess.
#pragma once
#include <cstdint>

namespace b2f {
namespace cpu {

struct PeakResult {
  double gflops = 0;       // FLOP/s / 1e9 over all threads (a multiply-add counts 2)
  double seconds = 0;      // wall time of the timed loop
  int threads = 0;
  const char* instruction = "";  // what the loop issues, e.g. "vfmadd231ps ymm"
};

// Runs the loop of kernel set `isa` ("avx512bf16", "avx512", "avx2", "generic": one of
// compiled_isas()) for `precision` "fp32" or "bf16" on `threads` threads of the engine's
// pool (parallel.h) for about `seconds`. bf16 is vdpbf16ps on avx512bf16; the other sets
// compute bf16 convolutions with fp32 multiply-adds, so their bf16 limit is their fp32
// loop. Throws std::invalid_argument for an ISA this build or CPU cannot run or an unknown
// precision.
PeakResult measure_peak(const char* isa, const char* precision, int threads, double seconds);

}  // namespace cpu
}  // namespace b2f
