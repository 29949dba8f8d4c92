// Run-time choice of the CPU kernel set: the best this CPU runs, or BASENJI2_FAST_ISA.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "basenji2_fast/kernels.h"

namespace b2f {
namespace cpu {

namespace {
// Kernel sets this build holds and this CPU runs, best first.
std::vector<const KernelSet*> usable() {
  std::vector<const KernelSet*> v;
#if defined(B2F_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bf16"))
    v.push_back(&kernels_avx512bf16());
  if (__builtin_cpu_supports("avx512f")) v.push_back(&kernels_avx512());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back(&kernels_avx2());
#endif
  v.push_back(&kernels_generic());
  return v;
}
}  // namespace

const char* compiled_isas() {
  static const std::string s = [] {
    std::string r;
    for (const KernelSet* k : usable()) r += (r.empty() ? "" : ",") + std::string(k->name);
    return r;
  }();
  return s.c_str();
}

const KernelSet& select_kernels(const char* forced) {
  std::string want = forced && *forced ? forced : "";
  if (want.empty()) {
    const char* env = std::getenv("BASENJI2_FAST_ISA");
    if (env) want = env;
  }
  const auto sets = usable();
  if (want.empty()) return *sets.front();
  for (const KernelSet* k : sets)
    if (want == k->name) return *k;
  const bool known = want == "avx512bf16" || want == "avx512" || want == "avx2" || want == "generic";
  throw std::runtime_error("BASENJI2_FAST_ISA=" + want + " is not available " +
                           (known ? "on this CPU (it lacks the instructions)" : "(unknown kernel set)") +
                           "; this build and CPU run: " + compiled_isas());
}

}  // namespace cpu
}  // namespace b2f
