// Fast convolution: Winograd / Toom-Cook F(m, r) for a 1-D correlation, and the tile
// geometry every engine and the incremental path share.
//
// m outputs of an r-tap correlation, y[i] = sum_k x[i + k] g[k], from n = m + r - 1 inputs:
//   y = AT [ (G g) (.) (BT x) ]       (.) elementwise over the n transform points
// with n - 1 finite interpolation points p and the point at infinity. The weights' transform
// U = G g is done once (in float64) when the engine packs them; per tile the input transform
// V = BT x, n products U_j V_j (per point j one GEMM over channels) and the output transform
// AT M cost n multiplies instead of m r.
//
// Construction (the transpose of Toom-Cook polynomial multiplication): AT[i][j] = p_j^i and
// AT[m-1][inf] = 1; G[j][k] = p_j^k / prod_{l != j} (p_j - p_l), G[inf] = e_{r-1}; BT row j holds
// the coefficients of prod_{l != j} (z - p_l), row inf those of prod_l (z - p_l). The points
// are small dyadic numbers (0, +-1, +-2, +-1/2, 4, -1/4, ...), so AT and BT hold values that
// fp32 represents exactly.
//
// Tiles are anchored at absolute positions: with dilation d, positions p = phase (mod d) form an
// undilated sequence; a tile holds the m positions b m d + phase + d i (i < m) of block b
// (the m d positions [b m d, (b + 1) m d)). Every output is therefore computed from the same
// inputs by the same instructions whatever range, tile of a longer sequence or mutation cone
// asks for it: a range is computed as the whole blocks that cover it.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace b2f {

// Interpolation points in the order tiles take them (F(m, r) uses the first m + r - 2).
constexpr int kMaxFastPoints = 12;  // finite points; n <= kMaxFastPoints + 1
constexpr double kFastPoints[kMaxFastPoints] = {0, 1, -1, 2, -2, 0.5, -0.5, 4, -0.25, -4, 0.25, 3};
inline double fast_point(int j) { return kFastPoints[j]; }

// Why F(m, r) cannot tile a conv of kernel size r (empty: it can).
inline std::string fast_unsupported(int m, int r, int pool, int dil) {
  if (m <= 0 || m % 2) return "the tile size m must be a positive even number";
  if (r < 3 || r % 2 == 0) return "fast convolution needs an odd kernel size >= 3";
  if (m + r - 2 > kMaxFastPoints) return "F(m, r) needs at most " + std::to_string(kMaxFastPoints + 1) + " points";
  if (pool != 1 && dil != 1) return "a pooled fast convolution must be undilated";
  return "";
}

// The transforms of F(m, r) in fixed-size tables, built by one constexpr construction: at
// compile time for the CPU kernels specialised to the tile sizes the engine picks (their
// coefficients become constants), at run time by make_winograd. Every value is exact in
// float64 (sums of products of the dyadic points); AT and BT are exact in fp32 too.
struct WinogradTables {
  static constexpr int kN = kMaxFastPoints + 1;
  int m = 0, r = 0, n = 0;
  float at[kN][kN] = {};   // [m][n] output transform
  float bt[kN][kN] = {};   // [n][n] input transform
  double g[kN][kN] = {};   // [n][r] weight transform
};

constexpr double int_pow(double p, int e) {
  double v = 1.0;
  for (int i = 0; i < e; ++i) v *= p;
  return v;
}

// Tables of F(m, r); m, r as fast_unsupported accepts them.
constexpr WinogradTables winograd_tables(int m, int r) {
  WinogradTables w{};
  const int n = m + r - 1, f = n - 1;  // f finite points
  w.m = m, w.r = r, w.n = n;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < f; ++j) w.at[i][j] = float(int_pow(kFastPoints[j], i));
  w.at[m - 1][f] = 1.f;
  // Row j of BT: the coefficients (ascending) of prod over the points l != j of (z - p_l);
  // row f (the point at infinity): of the product over every point.
  for (int j = 0; j <= f; ++j) {
    double c[WinogradTables::kN + 1] = {1.0};
    int len = 1;
    for (int l = 0; l < f; ++l) {
      if (l == j) continue;
      for (int e = len; e >= 0; --e) c[e] = (e > 0 ? c[e - 1] : 0.0) - kFastPoints[l] * c[e];
      ++len;
    }
    for (int s = 0; s < len; ++s) w.bt[j][s] = float(c[s]);
  }
  for (int j = 0; j < f; ++j) {
    double denom = 1.0;
    for (int l = 0; l < f; ++l)
      if (l != j) denom *= kFastPoints[j] - kFastPoints[l];
    for (int k = 0; k < r; ++k) w.g[j][k] = int_pow(kFastPoints[j], k) / denom;
  }
  w.g[f][r - 1] = 1.0;
  return w;
}

struct Winograd {
  int m = 0, r = 0, n = 0;  // m == 0: direct convolution
  std::vector<float> at;    // [m][n] output transform
  std::vector<float> bt;    // [n][n] input transform
  std::vector<double> g;    // [n][r] weight transform
  bool fast() const { return m > 0; }
};

inline Winograd make_winograd(int m, int r) {
  Winograd w;
  if (m == 0) return w;
  const std::string why = fast_unsupported(m, r, 1, 1);
  if (!why.empty()) throw std::invalid_argument("F(" + std::to_string(m) + ", " + std::to_string(r) + "): " + why);
  const WinogradTables t = winograd_tables(m, r);
  const int n = t.n;
  w.m = m, w.r = r, w.n = n;
  for (int i = 0; i < m; ++i) w.at.insert(w.at.end(), t.at[i], t.at[i] + n);
  for (int j = 0; j < n; ++j) w.bt.insert(w.bt.end(), t.bt[j], t.bt[j] + n);
  for (int j = 0; j < n; ++j) w.g.insert(w.g.end(), t.g[j], t.g[j] + r);
  return w;
}

// Floor and ceiling of x to a multiple of b (b > 0), for negative x too.
inline int64_t floor_to(int64_t x, int64_t b) { return (x >= 0 ? x / b : -((-x + b - 1) / b)) * b; }
inline int64_t ceil_to(int64_t x, int64_t b) { return -floor_to(-x, b); }

// The positions one tile block covers: m * dil for a fast conv (m > 0), 1 for a direct one.
inline int64_t fast_block(int m, int dil) { return m > 0 ? int64_t(m) * dil : 1; }

// Input rows [lo, hi) a conv (block `blk`, halo h) reads to produce outputs [p0, p1): the whole
// blocks that cover the range, plus the halo.
inline void conv_reads(int64_t p0, int64_t p1, int64_t blk, int64_t h, int64_t& lo, int64_t& hi) {
  lo = floor_to(p0, blk) - h, hi = ceil_to(p1, blk) + h;
}

// Outputs [o0, o1) whose computation reads any of the input rows [lo, hi) (all of a block's
// outputs read all of its inputs), clamped to the layer's `length` positions.
inline void conv_reached(int64_t lo, int64_t hi, int64_t blk, int64_t h, int64_t length, int64_t& o0, int64_t& o1) {
  o0 = floor_to(lo - h, blk), o1 = ceil_to(hi + h, blk);
  o0 = o0 < 0 ? 0 : o0, o1 = o1 > length ? length : o1;
}

}  // namespace b2f
