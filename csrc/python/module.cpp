// pybind11 bindings: argument checks, GIL released around compute, arrays without copies.
// Batching, dtype conversion and file formats live in Python (basenji2_fast/model.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "basenji2_fast/parallel.h"
#include "cpu/peak.h"
#include "python/args.h"

namespace py = pybind11;
using b2f::Engine;
using namespace b2f::pyargs;

PYBIND11_MODULE(_engine, m) {
  m.doc() = "basenji2-fast compiled engine (CPU kernels)";
  m.def("compiled_isas", [] { return std::string(b2f::cpu::compiled_isas()); },
        "Kernel sets in this build that this CPU can run, best first.");
  m.def(
      "measure_peak",
      [](const std::string& isa, const std::string& precision, int threads, double seconds) {
        b2f::cpu::PeakResult r;
        try {
          py::gil_scoped_release nogil;
          r = b2f::cpu::measure_peak(isa.c_str(), precision.c_str(), threads, seconds);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        py::dict d;
        d["gflops"] = r.gflops, d["seconds"] = r.seconds, d["threads"] = r.threads;
        d["instruction"] = std::string(r.instruction);
        return d;
      },
      py::arg("isa"), py::arg("precision"), py::arg("threads"), py::arg("seconds") = 0.2,
      "The CPU's multiply-add limit for one kernel set and precision, measured with a register-only loop "
      "on `threads` threads for about `seconds`: {gflops, seconds, threads, instruction}.");
  m.def("build_info", [] {
    py::dict d;
#if defined(__VERSION__)
    d["compiler"] = std::string(__VERSION__);
#endif
    d["threads"] = "b2f::parallel_for (own pool, fork-safe)";
#if defined(__SANITIZE_ADDRESS__)
    d["sanitizers"] = "address,undefined";  // BASENJI2_FAST_SANITIZE=1 (setup.py)
#else
    d["sanitizers"] = py::none();
#endif
    d["isas"] = std::string(b2f::cpu::compiled_isas());
    d["default_isa"] = std::string(b2f::cpu::select_kernels().name);
    d["cuda"] = false;
    return d;
  });

  m.def(
      "_parallel_probe",
      [](int64_t n, int threads, bool nested, int64_t throw_at) {
        // The contract of b2f::parallel_for, for tests: the chunks it ran as (begin, end,
        // thread: 0 the calling thread, then in order of first appearance; chunks a nested call
        // inside this chunk ran).
        const std::thread::id caller = std::this_thread::get_id();
        std::mutex m;
        std::vector<std::tuple<int64_t, int64_t, std::thread::id, int>> chunks;
        {
          py::gil_scoped_release nogil;
          b2f::parallel_for(n, threads, [&](int64_t b, int64_t e) {
            if (throw_at >= b && throw_at < e) throw std::runtime_error("chunk " + std::to_string(b) + " failed");
            int inner = 0;
            if (nested) b2f::parallel_for(8, threads, [&](int64_t, int64_t) { ++inner; });
            std::lock_guard<std::mutex> lock(m);
            chunks.emplace_back(b, e, std::this_thread::get_id(), inner);
          });
        }
        std::vector<std::thread::id> ids{caller};
        py::list out;
        std::sort(chunks.begin(), chunks.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
        for (const auto& c : chunks) {
          auto it = std::find(ids.begin(), ids.end(), std::get<2>(c));
          if (it == ids.end()) it = ids.insert(ids.end(), std::get<2>(c));
          out.append(py::make_tuple(std::get<0>(c), std::get<1>(c), int(it - ids.begin()), std::get<3>(c)));
        }
        return out;
      },
      py::arg("n"), py::arg("threads"), py::arg("nested") = false, py::arg("throw_at") = -1,
      "Test hook: run b2f::parallel_for over [0, n) and return its chunks as (begin, end, thread, nested chunks).");

  py::class_<Engine::TrunkCache, std::shared_ptr<Engine::TrunkCache>>(m, "TrunkCache",
                                                                     "Every tensor of one sequence's forward pass.");

  py::class_<Engine>(m, "Engine")
      .def(py::init([](int64_t seq_length, const std::string& gelu, bool final_gelu, const py::object& ops, int threads,
                       const std::string& isa, int64_t tile_floats, bool head_bf16, py::object packed) {
             check_engine_args(seq_length, threads);
             CHECK_ARG(tile_floats >= 0, "tile_floats must be >= 0 (0: whole tensors)");
             std::vector<py::array> keep;
             std::vector<b2f::OpDesc> descs = parse_ops(ops, keep);
             std::function<void(int)> cb;
             if (!packed.is_none()) cb = [packed](int i) { packed(i); };
             try {
               return new Engine(seq_length, parse_gelu(gelu), final_gelu, std::move(descs), threads, isa, tile_floats,
                                 head_bf16, cb);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("seq_length"), py::arg("gelu"), py::arg("final_gelu"), py::arg("ops"), py::arg("threads"),
           py::arg("isa") = "", py::arg("tile_floats") = int64_t(4) << 20, py::arg("head_bf16") = false,
           py::arg("packed") = py::none(),
           "ops: dicts (conv: kernel float32 [k, in, out] or uint16 bf16 bits, bias, dilation, pool, gelu_in, "
           "residual, bf16; crop: left, right). packed(i) is called once op i's weights are packed.")
      .def("add_head",
           [](Engine& e, py::object weight_obj, py::object bias_obj, const std::string& act) {
             const std::string form = "head weight must be [channels, tracks] and bias [tracks], tracks >= 1";
             auto [weight, weight_bf16] = weight_array(weight_obj, form);
             F32 bias = f32_arg(bias_obj, form);
             CHECK_ARG(weight.ndim() == 2 && bias.ndim() == 1 && bias.shape(0) == weight.shape(1) && weight.shape(1) >= 1,
                       form);
             CHECK_ARG(act == "softplus" || act == "linear", "head activation must be softplus or linear");
             try {
               return e.add_head(weight.data(), weight_bf16, bias.data(), int(weight.shape(0)), int(weight.shape(1)),
                                 act == "softplus" ? b2f::OutAct::Softplus : b2f::OutAct::None);
             } catch (const std::invalid_argument& ex) {
               throw py::value_error(ex.what());
             }
           })
      .def("trunk", [](const Engine& e, py::object codes, bool n_uniform) { return trunk_host(e, codes, n_uniform); },
           py::arg("codes"), py::arg("n_uniform") = false, "codes uint8 [B, L] -> trunk output float32 [B, bins, C]")
      .def("predict",
           [](const Engine& e, py::object codes, py::object requests, bool n_uniform, py::object into) {
             return predict_host(e, codes, requests, n_uniform, into);
           },
           py::arg("codes"), py::arg("requests"), py::arg("n_uniform") = false, py::arg("out") = py::none(),
           "codes uint8 [B, L]; requests [(head, [tracks] or [])] -> list of float32 [B, bins, tracks] "
           "(written into `out`, one array per request, when given)")
      .def("gradient",
           [](const Engine& e, py::object codes, py::object request, py::object bins, bool n_uniform,
              py::object kernels) { return gradient_host(e, codes, request, bins, n_uniform, kernels); },
           py::arg("codes"), py::arg("request"), py::arg("bins"), py::arg("n_uniform") = false,
           py::arg("kernels") = py::none(),
           "codes uint8 [B, L]; request (head, [tracks] or []); bins ([] = all) -> float32 [B, L, 4]: the gradient "
           "of the predictions summed over those bins and tracks with respect to the one-hot input (fp32 models). "
           "kernels: per op None or its kernel [k, in, out]; the fast (Winograd) ops need theirs")
      .def("op_range",
           [](const Engine& e, int i, py::object x_obj, int64_t x0, py::object res, int64_t p0, int64_t p1,
              bool activated) {
             CHECK_ARG(i >= 1 && i < e.n_ops(), "op index out of range");
             F32 x = f32_arg(x_obj, "x must be float32 [rows, input channels]");
             CHECK_ARG(x.ndim() == 2 && x.shape(1) == e.op_in_channels(i), "x must be [rows, input channels]");
             CHECK_ARG(p0 < p1, "op_range: empty output range [" + std::to_string(p0) + ", " + std::to_string(p1) + ")");
             F32 r;
             if (!res.is_none()) {
               r = f32_arg(res, "residual must be float32 [p1 - p0, out channels]");
               CHECK_ARG(r.ndim() == 2 && r.shape(0) == p1 - p0 && r.shape(1) == e.op_out_channels(i),
                         "residual must be [p1 - p0, out channels]");
             }
             const int pool = e.op_pool(i);
             py::array_t<float> out({int64_t((p1 - p0) / pool), int64_t(e.op_out_channels(i))});
             const float* xp = x.data();
             const float* rp = res.is_none() ? nullptr : r.data();
             float* op = out.mutable_data();
             const int64_t rows = x.shape(0);
             {
               py::gil_scoped_release nogil;
               e.op_range(i, xp, x0, rows, rp, p0, p1, op, activated);
             }
             return out;
           },
           py::arg("op"), py::arg("x"), py::arg("x0"), py::arg("residual"), py::arg("p0"), py::arg("p1"),
           py::arg("activated") = false,
           "One conv op over output positions [p0, p1) from its pre-activation input rows [x0, x0 + len(x)) "
           "(activated=True: x is the op's input after its GELU).")
      .def("op_reads",
           [](const Engine& e, int i, int64_t p0, int64_t p1) {
             CHECK_ARG(i >= 0 && i < e.n_ops(), "op index out of range");
             int64_t lo, hi;
             try {
               e.op_reads(i, p0, p1, lo, hi);
             } catch (const std::invalid_argument& ex) {
               throw py::value_error(ex.what());
             }
             return py::make_tuple(lo, hi);
           },
           py::arg("op"), py::arg("p0"), py::arg("p1"),
           "Input rows (lo, hi) op i reads for its outputs [p0, p1): the halo, and for a fast conv whole tile blocks.")
      .def("op_algorithm",
           [](const Engine& e, int i) {
             CHECK_ARG(i >= 0 && i < e.n_ops(), "op index out of range");
             return e.op_algorithm(i);
           },
           "How op i computes: 'stem', 'direct', 'F(m,k)' (Winograd tiles) or 'crop'.")
      .def("op_flops", &Engine::op_flops, py::arg("op"), py::arg("p0"), py::arg("p1"), py::arg("nominal") = false,
           "FLOPs op `op` executes for its output positions [p0, p1) (before pooling); nominal: what a direct "
           "convolution computes instead.")
      .def_property_readonly("pass_flops", &Engine::pass_flops,
                             "FLOPs of each op in one forward pass of one sequence, as executed (tile halos included).")
      .def("head_flops", &Engine::head_flops, py::arg("head"), py::arg("tracks"), py::arg("rows"),
           "FLOPs of head `head` over `rows` trunk positions for `tracks` of its columns.")
      .def("profile",
           [](const Engine& e, py::object codes_obj, py::object requests, bool n_uniform) {
             const U8 codes = codes_arg(codes_obj, e, 1);
             const std::vector<b2f::HeadRequest> reqs = parse_requests(e, requests);
             const uint8_t* c = codes.data();
             py::gil_scoped_release nogil;
             return e.profile(c, n_uniform, reqs);
           },
           py::arg("codes"), py::arg("requests"), py::arg("n_uniform") = false,
           "One forward pass of one sequence, timed: wall seconds per op (crops included, the tiled stem "
           "and tower summed over tiles) and the heads of `requests` as a last entry, then the same as CPU "
           "seconds of all the process's threads: [2 * (n_ops + 1)].")
      .def("cache_trunk",
           [](const Engine& e, py::object codes_obj, bool n_uniform) {
             const U8 codes = codes_arg(codes_obj, e, 1);
             const uint8_t* c = codes.data();
             py::gil_scoped_release nogil;
             return std::shared_ptr<Engine::TrunkCache>(e.cache_trunk(c, n_uniform));
           },
           py::arg("codes"), py::arg("n_uniform") = false, py::keep_alive<0, 1>(),
           "Run one sequence and keep every tensor, for predict_substitutions.")
      .def("predict_substitutions",
           [](const Engine& e, const Engine::TrunkCache& cache, py::object pos_obj, py::object alt_obj,
              py::object requests, py::object given_refs) {
             const auto pos = int64_arg(pos_obj, 1, "positions must be integers [n]");
             const U8 alt = u8_arg(alt_obj, 1, "alt codes must be uint8 [n]");
             CHECK_ARG(pos.shape(0) == alt.shape(0), "positions and alt codes must be [n] each");
             std::vector<b2f::HeadRequest> reqs = parse_requests(e, requests);
             std::vector<float*> ref_outs, alt_outs;
             py::list refs, alts;
             const bool ref_ready = !given_refs.is_none();
             if (ref_ready) CHECK_ARG(py::len(given_refs) == reqs.size(), "one REF array per request");
             for (size_t k = 0; k < reqs.size(); ++k) {
               const auto& r = reqs[k];
               py::array_t<float> ref;
               if (ref_ready) {
                 py::object given = given_refs[py::int_(k)];
                 CHECK_ARG(py::isinstance<py::array_t<float>>(given), "REF arrays must be float32, from an earlier call");
                 ref = given.cast<py::array_t<float>>();
                 CHECK_ARG(ref.ndim() == 2 && ref.shape(0) == e.n_bins() && ref.shape(1) == request_tracks(e, r) &&
                               (ref.flags() & py::array::c_style),
                           "REF arrays must be C-contiguous float32 [bins, tracks] from an earlier call");
               } else {
                 ref = py::array_t<float>({e.n_bins(), int64_t(request_tracks(e, r))});
               }
               py::array_t<float> out({pos.shape(0), e.n_bins(), int64_t(request_tracks(e, r))});
               ref_outs.push_back(ref.mutable_data()), alt_outs.push_back(out.mutable_data());
               refs.append(ref), alts.append(out);
             }
             const int64_t* p = pos.data();
             const uint8_t* a = alt.data();
             const int64_t n = pos.shape(0);
             {
               py::gil_scoped_release nogil;
               e.predict_substitutions(cache, p, a, n, reqs, ref_outs, alt_outs, ref_ready);
             }
             return py::make_tuple(refs, alts);
           },
           py::arg("cache"), py::arg("positions"), py::arg("alt"), py::arg("requests"), py::arg("refs") = py::none(),
           "REF predictions [bins, tracks] and ALT predictions [n, bins, tracks] per request, for single-base "
           "substitutions of the cached sequence, recomputing only each substitution's receptive-field cone.")
      .def("release_buffers", &Engine::release_buffers, "Free the activation buffers kept between calls.")
      .def_property_readonly("isa", [](const Engine& e) { return std::string(e.isa()); })
      .def_property_readonly("threads", &Engine::threads)
      .def_property_readonly("weight_bytes", &Engine::weight_bytes, "Bytes of packed weights the engine holds.")
      .def_property_readonly("seq_length", &Engine::seq_length)
      .def_property_readonly("n_bins", &Engine::n_bins)
      .def_property_readonly("trunk_channels", &Engine::trunk_channels)
      .def_property_readonly("n_ops", &Engine::n_ops)
      .def_property_readonly("prefix_tiles", &Engine::prefix_tiles,
                             "How many tiles the stem and tower run in (1 = whole tensors).");
}
