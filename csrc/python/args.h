// Argument parsing shared by the pybind11 modules (_engine, _cuda): the model plan arrives as
// the same list of op dicts and head requests whichever device runs it.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace b2f {
namespace pyargs {

namespace py = pybind11;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;
using Requests = std::vector<std::pair<int, std::vector<int>>>;

#define CHECK_ARG(cond, msg) \
  do {                       \
    if (!(cond)) throw pybind11::value_error(msg); \
  } while (0)

inline Gelu parse_gelu(const std::string& s) {
  if (s == "sigmoid") return Gelu::Sigmoid;
  if (s == "erf") return Gelu::Erf;
  if (s == "tanh") return Gelu::Tanh;
  throw py::value_error("unknown GELU variant '" + s + "' (sigmoid, erf or tanh)");
}

// A weight array as the engines borrow it: float32, or uint16 holding bf16 bit patterns
// (a bf16 file's mapping, not widened). Returns (array kept alive, is bf16).
inline std::pair<py::array, bool> weight_array(const py::handle& h) {
  if (py::isinstance<py::array>(h) && py::reinterpret_borrow<py::array>(h).dtype().is(py::dtype::of<uint16_t>()))
    return {U16::ensure(h), true};
  return {F32::ensure(h), false};
}

// keep: the arrays the OpDescs borrow, alive until the engine is constructed.
inline OpDesc parse_op(const py::dict& d, std::vector<py::array>& keep) {
  OpDesc op;
  const std::string type = d["type"].cast<std::string>();
  if (type == "crop") {
    op.type = OpDesc::Crop;
    op.left = d["left"].cast<int>();
    op.right = d["right"].cast<int>();
    return op;
  }
  CHECK_ARG(type == "conv", "unknown op type '" + type + "'");
  auto [kernel, kernel_bf16] = weight_array(d["kernel"]);
  F32 bias = d["bias"].cast<F32>();
  CHECK_ARG(kernel && kernel.ndim() == 3 && bias.ndim() == 1, "conv kernel must be [k, in, out] and bias [out]");
  op.k = int(kernel.shape(0)), op.cin = int(kernel.shape(1)), op.cout = int(kernel.shape(2));
  op.dil = d["dilation"].cast<int>();
  op.pool = d["pool"].cast<int>();
  op.gelu_in = d["gelu_in"].cast<bool>();
  op.residual = d["residual"].cast<int>();
  op.bf16 = d.contains("bf16") && d["bf16"].cast<bool>();
  op.fast_m = d.contains("fast_m") ? d["fast_m"].cast<int>() : 0;
  op.kernel = kernel.data();
  op.kernel_bf16 = kernel_bf16;
  op.bias.assign(bias.data(), bias.data() + bias.size());
  keep.push_back(std::move(kernel));
  return op;
}

inline std::vector<OpDesc> parse_ops(const py::list& ops, std::vector<py::array>& keep) {
  std::vector<OpDesc> descs;
  for (auto o : ops) descs.push_back(parse_op(o.cast<py::dict>(), keep));
  return descs;
}

// E: any engine with n_heads() and head_tracks(h).
template <typename E>
std::vector<HeadRequest> parse_requests(const E& e, const Requests& requests) {
  std::vector<HeadRequest> reqs;
  for (const auto& r : requests) {
    CHECK_ARG(r.first >= 0 && r.first < e.n_heads(), "no head " + std::to_string(r.first));
    for (int t : r.second)
      CHECK_ARG(t >= 0 && t < e.head_tracks(r.first), "track index " + std::to_string(t) + " out of range");
    reqs.push_back({r.first, r.second});
  }
  return reqs;
}

template <typename E>
int request_tracks(const E& e, const HeadRequest& r) {
  return r.tracks.empty() ? e.head_tracks(r.head) : int(r.tracks.size());
}

template <typename E>
void check_codes(const U8& codes, const E& e) {
  CHECK_ARG(codes.ndim() == 2, "codes must be uint8 [batch, length]");
  CHECK_ARG(codes.shape(1) == e.seq_length(), "sequence length " + std::to_string(codes.shape(1)) +
                                                  " != the model's " + std::to_string(e.seq_length()));
}

// The float32 [batch, bins, tracks] output of each request: new arrays, or the caller's
// (`into`: one writable C-contiguous float32 array per request), written in place so a
// caller's buffer is never copied again. Fills `ptrs` with the data pointers.
template <typename E>
py::list request_outputs(const E& e, int64_t batch, const std::vector<HeadRequest>& reqs, const py::object& into,
                         std::vector<float*>& ptrs) {
  py::list result;
  if (!into.is_none()) CHECK_ARG(py::len(into) == reqs.size(), "one output array per request");
  for (size_t k = 0; k < reqs.size(); ++k) {
    const int64_t tracks = request_tracks(e, reqs[k]);
    py::array_t<float> out;
    if (into.is_none()) {
      out = py::array_t<float>({batch, e.n_bins(), tracks});
    } else {
      py::object o = into[py::int_(k)];
      CHECK_ARG(py::isinstance<py::array_t<float>>(o), "output arrays must be float32");
      out = o.cast<py::array_t<float>>();
      CHECK_ARG(out.ndim() == 3 && out.shape(0) == batch && out.shape(1) == e.n_bins() && out.shape(2) == tracks &&
                    (out.flags() & py::array::c_style) && out.writeable(),
                "output arrays must be writable C-contiguous float32 [batch, bins, tracks]");
    }
    ptrs.push_back(out.mutable_data());
    result.append(out);
  }
  return result;
}

// Engine.predict for host arrays, either engine: codes uint8 [B, L]; requests [(head,
// [tracks] or [])] -> list of float32 [B, bins, tracks] (into `into` when given).
template <typename E>
py::list predict_host(E& e, const U8& codes, const Requests& requests, bool n_uniform, const py::object& into) {
  check_codes(codes, e);
  const std::vector<HeadRequest> reqs = parse_requests(e, requests);
  std::vector<float*> outs;
  py::list result = request_outputs(e, codes.shape(0), reqs, into, outs);
  const uint8_t* c = codes.data();
  const int64_t batch = codes.shape(0);
  {
    py::gil_scoped_release nogil;
    e.predict(c, batch, n_uniform, reqs, outs);
  }
  return result;
}

// Engine.trunk for host arrays, either engine: codes uint8 [B, L] -> float32 [B, bins, C].
template <typename E>
py::array_t<float> trunk_host(E& e, const U8& codes, bool n_uniform) {
  check_codes(codes, e);
  py::array_t<float> out({codes.shape(0), e.n_bins(), int64_t(e.trunk_channels())});
  const uint8_t* c = codes.data();
  float* o = out.mutable_data();
  const int64_t batch = codes.shape(0);
  {
    py::gil_scoped_release nogil;
    e.trunk(c, batch, n_uniform, o);
  }
  return out;
}

}  // namespace pyargs
}  // namespace b2f
