// Argument parsing shared by the pybind11 modules (_engine, _cuda): the model plan arrives as
// the same list of op dicts and head requests whichever device runs it.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
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

#define CHECK_ARG(cond, msg) \
  do {                       \
    if (!(cond)) throw pybind11::value_error(msg); \
  } while (0)

// What an argument is, for messages: "int64 array [2, 100]", "list", ...
inline std::string describe(const py::handle& h) {
  if (!py::isinstance<py::array>(h)) return py::str(py::type::of(h).attr("__name__")).cast<std::string>();
  const auto a = py::reinterpret_borrow<py::array>(h);
  std::string s = py::str(a.dtype()).cast<std::string>() + " array [";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + "]";
}

inline char dtype_kind(const py::handle& h) {
  return py::isinstance<py::array>(h) ? py::reinterpret_borrow<py::array>(h).dtype().kind() : '\0';
}

// uint8 array arguments (base codes): exactly uint8, never a silent cast; any strides (a
// C-contiguous copy is made when needed); `what` says the expected form.
inline U8 u8_arg(const py::handle& h, int ndim, const std::string& what) {
  CHECK_ARG(py::isinstance<py::array>(h) && py::reinterpret_borrow<py::array>(h).dtype().is(py::dtype::of<uint8_t>()),
            what + ", got " + describe(h));
  U8 a = U8::ensure(h);
  CHECK_ARG(a && a.ndim() == ndim, what + ", got " + describe(h));
  return a;
}

// Integer array arguments (positions): any integer dtype, as int64; floats are an error.
inline py::array_t<int64_t, py::array::c_style | py::array::forcecast> int64_arg(const py::handle& h, int ndim,
                                                                              const std::string& what) {
  const char k = dtype_kind(h);
  CHECK_ARG(k == 'i' || k == 'u', what + ", got " + describe(h));
  auto a = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(h);
  CHECK_ARG(a && a.ndim() == ndim, what + ", got " + describe(h));
  return a;
}

// Float array arguments (activations, weights): any real dtype, as C-contiguous float32.
inline F32 f32_arg(const py::handle& h, const std::string& what) {
  const char k = dtype_kind(h);
  CHECK_ARG(k == 'f' || k == 'i' || k == 'u', what + ", got " + describe(h));
  F32 a = F32::ensure(h);
  CHECK_ARG(a, what + ", got " + describe(h));
  return a;
}

// A Python int or NumPy integer (not a bool, not a float) as int.
inline int int_arg(const py::handle& h, const std::string& what) {
  CHECK_ARG(!py::isinstance<py::bool_>(h) && !py::isinstance<py::float_>(h), what + ", got " + describe(h));
  PyObject* i = PyNumber_Index(h.ptr());
  if (!i) {
    PyErr_Clear();
    throw py::value_error(what + ", got " + describe(h));
  }
  const long long v = PyLong_AsLongLong(i);
  Py_DECREF(i);
  if (v == -1 && PyErr_Occurred()) PyErr_Clear();
  CHECK_ARG(v >= INT32_MIN && v <= INT32_MAX, what + ", got " + std::to_string(v));
  return int(v);
}

inline Gelu parse_gelu(const std::string& s) {
  if (s == "sigmoid") return Gelu::Sigmoid;
  if (s == "erf") return Gelu::Erf;
  if (s == "tanh") return Gelu::Tanh;
  throw py::value_error("unknown GELU variant '" + s + "' (sigmoid, erf or tanh)");
}

// A weight array as the engines borrow it: float32, or uint16 holding bf16 bit patterns
// (a bf16 file's mapping, not widened). Returns (array kept alive, is bf16).
inline std::pair<py::array, bool> weight_array(const py::handle& h, const std::string& what) {
  if (py::isinstance<py::array>(h) && py::reinterpret_borrow<py::array>(h).dtype().is(py::dtype::of<uint16_t>()))
    return {U16::ensure(h), true};
  return {f32_arg(h, what), false};
}

// One op dict (see Engine's docstring); at: "op i: " for messages. keep: the arrays the
// OpDescs borrow, alive until the engine is constructed.
inline OpDesc parse_op(const py::handle& h, const std::string& at, std::vector<py::array>& keep) {
  CHECK_ARG(py::isinstance<py::dict>(h), at + "expected a dict, got " + describe(h));
  const auto d = py::reinterpret_borrow<py::dict>(h);
  const auto need = [&](const char* key) {
    CHECK_ARG(d.contains(key), at + "missing '" + key + "'");
    return py::object(d[key]);
  };
  const auto integer = [&](const char* key) { return int_arg(need(key), at + "'" + key + "' must be an integer"); };
  OpDesc op;
  const py::object type = need("type");
  CHECK_ARG(py::isinstance<py::str>(type), at + "'type' must be 'conv' or 'crop'");
  const std::string t = type.cast<std::string>();
  if (t == "crop") {
    op.type = OpDesc::Crop;
    op.left = integer("left");
    op.right = integer("right");
    return op;
  }
  CHECK_ARG(t == "conv", at + "unknown op type '" + t + "'");
  auto [kernel, kernel_bf16] = weight_array(need("kernel"), at + "the kernel must be float32 [k, in, out]");
  F32 bias = f32_arg(need("bias"), at + "the bias must be float32 [out]");
  CHECK_ARG(kernel.ndim() == 3 && bias.ndim() == 1, at + "conv kernel must be [k, in, out] and bias [out]");
  op.k = int(kernel.shape(0)), op.cin = int(kernel.shape(1)), op.cout = int(kernel.shape(2));
  op.dil = integer("dilation");
  op.pool = integer("pool");
  op.gelu_in = need("gelu_in").cast<bool>();
  op.residual = integer("residual");
  op.bf16 = d.contains("bf16") && py::object(d["bf16"]).cast<bool>();
  op.fast_m = d.contains("fast_m") ? int_arg(py::object(d["fast_m"]), at + "'fast_m' must be an integer") : 0;
  op.kernel = kernel.data();
  op.kernel_bf16 = kernel_bf16;
  op.bias.assign(bias.data(), bias.data() + bias.size());
  keep.push_back(std::move(kernel));
  return op;
}

inline std::vector<OpDesc> parse_ops(const py::handle& ops, std::vector<py::array>& keep) {
  CHECK_ARG(py::isinstance<py::sequence>(ops) && !py::isinstance<py::str>(ops), "ops must be a list of op dicts");
  std::vector<OpDesc> descs;
  for (auto o : py::reinterpret_borrow<py::sequence>(ops))
    descs.push_back(parse_op(o, "op " + std::to_string(descs.size()) + ": ", keep));
  return descs;
}

// The engine-wide arguments both engines take.
inline void check_engine_args(int64_t seq_length, int threads) {
  CHECK_ARG(seq_length >= 1, "seq_length must be >= 1, got " + std::to_string(seq_length));
  CHECK_ARG(threads >= 1, "threads must be >= 1, got " + std::to_string(threads));
}

// Head requests [(head, [tracks] or [])], each checked against the engine E (any engine with
// n_heads() and head_tracks(h)): heads and tracks are integers in range.
template <typename E>
std::vector<HeadRequest> parse_requests(const E& e, const py::handle& requests) {
  const std::string form = "requests must be a list of (head, [track, ...]) pairs";
  CHECK_ARG(py::isinstance<py::sequence>(requests) && !py::isinstance<py::str>(requests), form);
  std::vector<HeadRequest> reqs;
  for (auto r : py::reinterpret_borrow<py::sequence>(requests)) {
    CHECK_ARG(py::isinstance<py::sequence>(r) && !py::isinstance<py::str>(r) && py::len(r) == 2, form);
    const auto pair = py::reinterpret_borrow<py::sequence>(r);
    HeadRequest q;
    q.head = int_arg(pair[0], "a request's head must be an integer");
    CHECK_ARG(q.head >= 0 && q.head < e.n_heads(), "no head " + std::to_string(q.head));
    const py::object tracks = pair[1];
    CHECK_ARG(py::isinstance<py::sequence>(tracks) || py::isinstance<py::array>(tracks), form);
    for (auto t : tracks) {
      const int col = int_arg(t, "track indices must be integers");
      CHECK_ARG(col >= 0 && col < e.head_tracks(q.head), "track index " + std::to_string(col) + " out of range");
      q.tracks.push_back(col);
    }
    reqs.push_back(std::move(q));
  }
  return reqs;
}

template <typename E>
int request_tracks(const E& e, const HeadRequest& r) {
  return r.tracks.empty() ? e.head_tracks(r.head) : int(r.tracks.size());
}

// Base codes uint8 [batch, seq_length] (ndim 2) or [seq_length] (ndim 1) for the engine E.
template <typename E>
U8 codes_arg(const py::handle& h, const E& e, int ndim = 2) {
  U8 codes = u8_arg(h, ndim, ndim == 2 ? "codes must be uint8 [batch, length]" : "codes must be uint8 [length]");
  const int64_t length = codes.shape(ndim - 1);
  CHECK_ARG(length == e.seq_length(), "sequence length " + std::to_string(length) + " != the model's " +
                                          std::to_string(e.seq_length()));
  return codes;
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
py::list predict_host(E& e, const py::handle& codes_arg_, const py::handle& requests, bool n_uniform,
                      const py::object& into) {
  const U8 codes = codes_arg(codes_arg_, e);
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
py::array_t<float> trunk_host(E& e, const py::handle& codes_arg_, bool n_uniform) {
  const U8 codes = codes_arg(codes_arg_, e);
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

// Engine.gradient for host arrays: codes uint8 [B, L]; request (head, [tracks] or []); bins
// (output bins, [] = all) -> float32 [B, L, 4], the gradient of the summed predictions with
// respect to the one-hot input. kernels: per op None or its kernel [k, in, out] (float32 or
// bf16 bits), lent for the call; the fast ops need theirs.
template <typename E>
py::array_t<float> gradient_host(E& e, const py::handle& codes_arg_, const py::handle& request,
                                 const py::handle& bins_arg, bool n_uniform, const py::handle& kernels_arg) {
  std::vector<KernelRef> kernels;
  std::vector<py::array> keep;  // alive until the call returns
  if (!kernels_arg.is_none()) {
    CHECK_ARG(py::isinstance<py::sequence>(kernels_arg) && !py::isinstance<py::str>(kernels_arg) &&
                  (py::len(kernels_arg) == 0 || int(py::len(kernels_arg)) == e.n_ops()),
              "kernels must be a list with one entry (None or [k, in, out]) per op, got " + describe(kernels_arg));
    int i = 0;
    for (auto h : kernels_arg) {
      KernelRef r;
      if (!h.is_none()) {
        const std::string at = "kernels[" + std::to_string(i) + "]: ";
        CHECK_ARG(e.op_kernel_size(i) > 0, at + "op " + std::to_string(i) + " is not a convolution");
        auto [a, bf16] = weight_array(h, at + "must be float32 [k, in, out] (or bf16 bits)");
        CHECK_ARG(a.ndim() == 3 && a.shape(0) == e.op_kernel_size(i) && a.shape(1) == e.op_in_channels(i) &&
                      a.shape(2) == e.op_out_channels(i),
                  at + "shape does not match op " + std::to_string(i));
        r.data = a.data(), r.bf16 = bf16;
        keep.push_back(std::move(a));
      }
      kernels.push_back(r);
      ++i;
    }
  }
  const U8 codes = codes_arg(codes_arg_, e);
  CHECK_ARG(py::isinstance<py::sequence>(request) && !py::isinstance<py::str>(request) && py::len(request) == 2,
            "request must be a (head, [track, ...]) pair, got " + describe(request));
  py::list one;
  one.append(request);
  const HeadRequest req = parse_requests(e, one).front();
  CHECK_ARG((py::isinstance<py::sequence>(bins_arg) && !py::isinstance<py::str>(bins_arg)) ||
                py::isinstance<py::array>(bins_arg),
            "bins must be a list of output bins, got " + describe(bins_arg));
  std::vector<int> bins;
  for (auto b : bins_arg) {
    const int v = int_arg(b, "bins must be integers");
    CHECK_ARG(v >= 0 && v < e.n_bins(),
              "bin " + std::to_string(v) + " out of range (0.." + std::to_string(e.n_bins() - 1) + ")");
    bins.push_back(v);
  }
  py::array_t<float> out({codes.shape(0), e.seq_length(), int64_t(4)});
  const uint8_t* c = codes.data();
  float* o = out.mutable_data();
  const int64_t batch = codes.shape(0);
  {
    py::gil_scoped_release nogil;
    e.gradient(c, batch, n_uniform, req, bins, o, kernels);
  }
  return out;
}

}  // namespace pyargs
}  // namespace b2f
