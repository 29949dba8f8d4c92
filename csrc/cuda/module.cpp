// pybind11 bindings of the CUDA engine (module basenji2_fast._cuda): argument checks, GIL
// released around compute, numpy arrays or raw device pointers (cupy's __cuda_array_interface__).
// Compiled by the host compiler; the CUDA code is linked in from the nvcc-built objects, with
// the CUDA runtime linked statically, so this module imports on a machine without a driver.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "cuda/cuda_engine.h"
#include "cuda/packing.h"
#include "python/args.h"

namespace py = pybind11;
using b2f::cuda::CudaEngine;
using namespace b2f::pyargs;

namespace {

py::list split_archs(const std::string& s) {
  py::list out;
  size_t a = 0;
  while (a < s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.append("sm_" + s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

py::array_t<float> new_array(std::vector<int64_t> shape) { return py::array_t<float>(shape); }

}  // namespace

#ifndef B2F_CUDA_MODULE_NAME
#define B2F_CUDA_MODULE_NAME _cuda  // _cuda_emu: the same module over the CPU emulator (emulator.h)
#endif

PYBIND11_MODULE(B2F_CUDA_MODULE_NAME, m) {
  m.doc() = "basenji2-fast CUDA engine (bf16 tensor-core kernels, fp32 accumulation)";
  m.def("build_info", [] {
    py::dict d;
    d["compiled"] = true;
    d["archs"] = split_archs(b2f::cuda::compiled_archs());
    d["nvcc"] = std::string(b2f::cuda::nvcc_version());
#if defined(__SANITIZE_ADDRESS__)
    d["sanitizers"] = "address,undefined";  // BASENJI2_FAST_SANITIZE=1 (setup.py)
#endif
    return d;
  });
  m.def("device_status", [] {
    std::string why;
    const int n = b2f::cuda::device_count(&why);
    return py::make_tuple(n, why);
  }, "(number of usable CUDA devices, reason when 0). Never raises.");
  m.def("device_name", &b2f::cuda::device_name, py::arg("device") = 0);

  // Host-side packing, exposed for tests (no GPU needed).
  m.def("pack_conv_weights", [](F32 kernel) {
    CHECK_ARG(kernel.ndim() == 3, "kernel must be float32 [k, in, out]");
    const int k = int(kernel.shape(0)), cin = int(kernel.shape(1)), cout = int(kernel.shape(2));
    std::vector<uint16_t> w = b2f::cuda::pack_conv_weights(kernel.data(), false, k, cin, cout);
    py::array_t<uint16_t> out({int64_t(k), int64_t(b2f::cuda::pad_channels(cin)), int64_t(b2f::cuda::pad_channels(cout))});
    std::copy(w.begin(), w.end(), out.mutable_data());
    return out;
  }, "float32 [k, in, out] -> bf16 bits uint16 [k, pad16(in), pad16(out)], zero padded");
  m.def("gather_columns", [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> packed, int channels,
                             int tracks, std::vector<int> cols) {
    CHECK_ARG(packed.ndim() == 2 && packed.shape(0) == b2f::cuda::pad_channels(channels) &&
                  packed.shape(1) == b2f::cuda::pad_channels(tracks), "packed must be [pad16(channels), pad16(tracks)]");
    for (int c : cols) CHECK_ARG(c >= 0 && c < tracks, "column " + std::to_string(c) + " out of range");
    std::vector<uint16_t> src(packed.data(), packed.data() + packed.size());
    std::vector<uint16_t> w = b2f::cuda::gather_columns(src, channels, tracks, cols);
    py::array_t<uint16_t> out({int64_t(b2f::cuda::pad_channels(channels)), int64_t(b2f::cuda::pad_channels(int(cols.size())))});
    std::copy(w.begin(), w.end(), out.mutable_data());
    return out;
  }, "A packed head's columns `cols` -> [pad16(channels), pad16(len(cols))]");
  m.def("bf16_bits", [](F32 x) {
    py::array_t<uint16_t> out(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
    const float* s = x.data();
    uint16_t* d = out.mutable_data();
    for (py::ssize_t i = 0; i < x.size(); ++i) d[i] = b2f::f32_to_bf16(s[i]);
    return out;
  }, "float32 -> bf16 bits (uint16), round to nearest even");

  // module_local: _cuda and _cuda_emu bind the same C++ type name and may be loaded together.
  py::class_<CudaEngine>(m, "Engine", py::module_local())
      .def(py::init([](int64_t seq_length, const std::string& gelu, bool final_gelu, const py::object& ops, int device,
                       bool graphs) {
             check_engine_args(seq_length, 1);
             std::vector<py::array> keep;
             std::vector<b2f::OpDesc> descs = parse_ops(ops, keep);
             return new CudaEngine(seq_length, parse_gelu(gelu), final_gelu, std::move(descs), device, graphs);
           }),
           py::arg("seq_length"), py::arg("gelu"), py::arg("final_gelu"), py::arg("ops"), py::arg("device") = 0,
           py::arg("graphs") = false)
      .def("add_head",
           [](CudaEngine& e, F32 weight, F32 bias, const std::string& act) {
             CHECK_ARG(weight.ndim() == 2 && bias.ndim() == 1 && bias.shape(0) == weight.shape(1),
                       "head weight must be [channels, tracks] and bias [tracks]");
             CHECK_ARG(act == "softplus" || act == "linear", "head activation must be softplus or linear");
             return e.add_head(weight.data(), bias.data(), int(weight.shape(0)), int(weight.shape(1)),
                               act == "softplus" ? b2f::OutAct::Softplus : b2f::OutAct::None);
           })
      .def("predict",
           [](CudaEngine& e, py::object codes, py::object requests, bool n_uniform, py::object into) {
             return predict_host(e, codes, requests, n_uniform, into);
           },
           py::arg("codes"), py::arg("requests"), py::arg("n_uniform") = false, py::arg("out") = py::none(),
           "codes uint8 [B, L] (host); requests [(head, [tracks] or [])] -> list of float32 [B, bins, tracks] "
           "(written into `out`, one array per request, when given)")
      .def("predict_device",
           [](CudaEngine& e, uintptr_t codes, int64_t batch, py::object requests, bool n_uniform,
              const std::vector<uintptr_t>& outs) {
             CHECK_ARG(batch >= 0, "batch must be >= 0");
             std::vector<b2f::HeadRequest> reqs = parse_requests(e, requests);
             CHECK_ARG(outs.size() == reqs.size(), "one output pointer per request");
             std::vector<float*> o;
             for (uintptr_t p : outs) o.push_back(reinterpret_cast<float*>(p));
             py::gil_scoped_release nogil;
             e.predict_device(reinterpret_cast<const uint8_t*>(codes), batch, n_uniform, reqs, o);
           },
           py::arg("codes_ptr"), py::arg("batch"), py::arg("requests"), py::arg("n_uniform"), py::arg("out_ptrs"),
           "Device pointers: codes uint8 [batch, L] in, float32 [batch, bins, tracks] per request out (C order).")
      .def("trunk", [](CudaEngine& e, py::object codes, bool n_uniform) { return trunk_host(e, codes, n_uniform); },
           py::arg("codes"), py::arg("n_uniform") = false, "codes uint8 [B, L] -> trunk output float32 [B, bins, C]")
      .def("op_forward",
           [](CudaEngine& e, int i, F32 x, py::object res) {
             CHECK_ARG(i >= 1 && i < e.n_ops(), "op index out of range");
             CHECK_ARG(x.ndim() == 3 && x.shape(1) == e.op_in_rows(i) && x.shape(2) == e.op_in_channels(i),
                       "x must be [batch, the op's input rows, input channels]");
             const int64_t batch = x.shape(0), rows_out = e.op_in_rows(i) / e.op_pool(i);
             F32 r;
             if (!res.is_none()) {
               r = res.cast<F32>();
               CHECK_ARG(r.ndim() == 3 && r.shape(0) == batch && r.shape(1) == e.op_in_rows(i) &&
                             r.shape(2) == e.op_out_channels(i), "residual must be [batch, input rows, out channels]");
             }
             py::array_t<float> raw = new_array({batch, rows_out, int64_t(e.op_out_channels(i))});
             py::array_t<float> act = new_array({batch, rows_out, int64_t(e.op_out_channels(i))});
             const float* xp = x.data();
             const float* rp = res.is_none() ? nullptr : r.data();
             float *ro = raw.mutable_data(), *ao = act.mutable_data();
             {
               py::gil_scoped_release nogil;
               e.op_forward(i, xp, batch, rp, ro, ao);
             }
             return py::make_tuple(raw, act);
           },
           py::arg("op"), py::arg("x"), py::arg("residual") = py::none(),
           "One conv op over whole layers: x float32 [B, rows, cin] (pre-activation) -> (raw fp32, "
           "gelu(raw) as stored in bf16) [B, rows / pool, cout]")
      .def("stem_forward",
           [](CudaEngine& e, py::object codes_obj, bool n_uniform) {
             const U8 codes = codes_arg(codes_obj, e);
             const int64_t batch = codes.shape(0), rows = e.op_in_rows(1);
             py::array_t<float> raw = new_array({batch, rows, int64_t(e.op_in_channels(1))});
             py::array_t<float> act = new_array({batch, rows, int64_t(e.op_in_channels(1))});
             const uint8_t* c = codes.data();
             float *ro = raw.mutable_data(), *ao = act.mutable_data();
             {
               py::gil_scoped_release nogil;
               e.stem_forward(c, batch, n_uniform, ro, ao);
             }
             return py::make_tuple(raw, act);
           },
           py::arg("codes"), py::arg("n_uniform") = false)
      .def("head_forward",
           [](CudaEngine& e, F32 x, int head, std::vector<int> tracks) {
             CHECK_ARG(x.ndim() == 3 && x.shape(2) == e.trunk_channels(), "x must be [batch, rows, trunk channels]");
             std::vector<b2f::HeadRequest> reqs = parse_requests(e, py::make_tuple(py::make_tuple(head, tracks)));
             const int64_t batch = x.shape(0), rows = x.shape(1);
             py::array_t<float> out = new_array({batch, rows, int64_t(request_tracks(e, reqs[0]))});
             const float* xp = x.data();
             float* o = out.mutable_data();
             {
               py::gil_scoped_release nogil;
               e.head_forward(xp, batch, rows, reqs[0], o);
             }
             return out;
           },
           py::arg("x"), py::arg("head"), py::arg("tracks") = std::vector<int>())
      .def("release_buffers", [](CudaEngine& e) {
             py::gil_scoped_release nogil;
             e.release_buffers();
           }, "Free the activation buffers kept between calls.")
      .def_property("use_graphs", &CudaEngine::use_graphs, &CudaEngine::set_use_graphs,
                    "Capture the forward pass once as a CUDA Graph and replay it (host-array calls).")
      .def_property_readonly("device", &CudaEngine::device)
      .def_property_readonly("seq_length", &CudaEngine::seq_length)
      .def_property_readonly("n_bins", &CudaEngine::n_bins)
      .def_property_readonly("trunk_channels", &CudaEngine::trunk_channels)
      .def_property_readonly("n_ops", &CudaEngine::n_ops)
      .def_property_readonly("weight_bytes", &CudaEngine::weight_bytes)
      .def_property_readonly("activation_bytes", &CudaEngine::activation_bytes);
}
