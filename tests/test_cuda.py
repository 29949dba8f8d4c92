"""The CUDA backend.

Without a GPU (here and in CI): the build reports what it compiled, truthfully; device
selection and its errors; the host-side weight packing against NumPy. CI compiles the .cu
sources whenever nvcc is present (a build break fails the install), and
test_cuda_module_built_where_nvcc_is checks that the build did not silently skip them.

On a device (``backend`` "cuda", marked ``gpu``: skipped, with the reason, where no CUDA
device can run the engine) and on the CPU emulator (``backend`` "emulator": the same engine and
kernel source compiled against csrc/cuda/emulator.h, module _cuda_emu, so these run here and in
CI): every kernel against the CPU engine given the same bf16-rounded inputs and weights (fp32
accumulation both sides: normalised squared error <= 1e-7), the whole bf16 model against the
CPU fp32 engine (per-track Pearson r >= 0.999), batch sizes 1 / 7 / 32 identical, CUDA Graph
replay identical, track subsets, device-pointer checks. On a device only: the real-size
models (tf-small, tf-full against the TensorFlow golden files) and cupy in and out.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import basenji2_fast as b2
from basenji2_fast import cuda_backend
from basenji2_fast.reference import gelu as gelu64
from basenji2_fast.spec import ConvOp, CropOp, Head, ModelSpec

from conftest import fixture_path
from test_engine import random_codes, small_model

NSE_TOL = 1e-7
R_TOL = 0.999


# ---- helpers ---------------------------------------------------------------------------------

def bf16_round(x) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even), as float32. Written here independently of the
    engine's packing code."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << np.uint32(16)
    return r.view(np.float32)


def bf16_bits_numpy(x) -> np.ndarray:
    return (bf16_round(x).view(np.uint32) >> 16).astype(np.uint16)


def nse(got, want) -> float:
    """Normalised squared error sum (got - want)^2 / sum want^2, in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.sum((got - want) ** 2) / max(np.sum(want ** 2), 1e-300))


def per_track_r(got, want) -> np.ndarray:
    """Pearson r of each track (last axis) over every other axis."""
    g = np.asarray(got, np.float64).reshape(-1, got.shape[-1])
    w = np.asarray(want, np.float64).reshape(-1, want.shape[-1])
    g, w = g - g.mean(0), w - w.mean(0)
    return (g * w).sum(0) / np.sqrt((g * g).sum(0) * (w * w).sum(0))


def rounded_spec(spec: ModelSpec, gelu_in=None) -> ModelSpec:
    """The spec with every conv kernel and head weight rounded to bf16 (biases stay fp32), and
    optionally every op's gelu_in (but the stem's) replaced."""
    ops = []
    for i, op in enumerate(spec.ops):
        if isinstance(op, ConvOp):
            op = dataclasses.replace(op, kernel=bf16_round(op.kernel),
                                     gelu_in=op.gelu_in if gelu_in is None or i == 0 else gelu_in)
        ops.append(op)
    heads = {n: dataclasses.replace(h, weight=bf16_round(h.weight)) for n, h in spec.heads.items()}
    return dataclasses.replace(spec, ops=ops, heads=heads)


def ragged_spec(rng, gelu="sigmoid") -> ModelSpec:
    """Geometry the fixtures do not have: lengths that are not multiples of the 128-row tile,
    channel counts that are not multiples of 16 and more than one 64-channel tile, a dilation
    as large as half the layer, a crop of odd size, a linear head of 23 tracks."""
    def conv(k, cin, cout, dil=1, pool=1, residual=None):
        w = rng.standard_normal((k, cin, cout)) * np.sqrt(2.0 / (k * cin))
        return ConvOp(f"c{k}_{cin}_{cout}_{dil}", w.astype(np.float32),
                      (0.1 * rng.standard_normal(cout)).astype(np.float32), dil, True, pool, residual)
    ops = [conv(7, 4, 20, pool=2),          # 600 -> 300 rows
           conv(5, 20, 37, pool=2),         # -> 150, 37 channels
           conv(3, 37, 18, dil=3),
           conv(1, 18, 37, residual=2),
           conv(3, 37, 18, dil=72),
           conv(1, 18, 37, residual=4),
           CropOp("crop", 5, 6),            # -> 139
           conv(1, 37, 100)]                # two column tiles, the second partial
    heads = {"h": Head("h", (0.2 * rng.standard_normal((100, 23))).astype(np.float32),
                       (0.1 * rng.standard_normal(23)).astype(np.float32), "linear")}
    return ModelSpec(600, ops, heads, final_gelu=True, gelu=gelu).validate()


# ---- without a GPU ---------------------------------------------------------------------------

def _cuda_module_file():
    import importlib.util

    spec = importlib.util.find_spec("basenji2_fast._cuda")
    return None if spec is None else Path(spec.origin)


def test_build_info_reports_the_cuda_build_truthfully():
    info = b2.build_info()["cuda"]
    so = _cuda_module_file()
    assert info["compiled"] == (so is not None)
    if so is None:
        assert info["archs"] == [] and info["nvcc"] is None and info["devices"] == 0
        assert "cuda" not in b2.build_info()["devices"]
        return
    assert {"sm_80", "sm_90"} <= set(info["archs"]) or os.environ.get("BASENJI2_FAST_CUDA_ARCHS")
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["nvcc"])
    assert ("cuda" in b2.build_info()["devices"]) == (info["devices"] > 0)
    # The cubins inside the module are the architectures it reports.
    nvcc = shutil.which("nvcc")
    cuobjdump = shutil.which("cuobjdump") or (nvcc and shutil.which("cuobjdump", path=str(Path(
        os.path.realpath(nvcc)).parent)))
    if not cuobjdump:  # nvcc may be a wrapper; its real tree has cuobjdump
        for d in ("/usr/local/cuda/bin", *sorted(Path("/usr/local").glob("cuda-*/bin"))):
            if Path(d, "cuobjdump").exists():
                cuobjdump = str(Path(d, "cuobjdump"))
    if cuobjdump:
        listing = subprocess.run([cuobjdump, "--list-elf", str(so)], capture_output=True, text=True).stdout
        assert sorted(set(re.findall(r"sm_\d+", listing))) == sorted(info["archs"])
    if nvcc:
        release = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        assert f"V{info['nvcc']}" in release  # the nvcc on PATH built it


def test_cuda_module_built_where_nvcc_is():
    """With nvcc present and BASENJI2_FAST_CUDA not 0, the build must have compiled the CUDA
    module: an install that quietly skipped (or lost) it fails here."""
    if os.environ.get("BASENJI2_FAST_CUDA", "auto").lower() == "0" or not (
            shutil.which("nvcc") or os.environ.get("CUDA_HOME")):
        pytest.skip("nvcc not found (or BASENJI2_FAST_CUDA=0): a CPU-only build is expected")
    assert b2.build_info()["cuda"]["compiled"], b2.build_info()["cuda"]


def test_cuda_emulator_built_unless_disabled():
    """The emulator tests below need _cuda_emu (host compiler only): a build that lost it
    would silently skip them."""
    if os.environ.get("BASENJI2_FAST_CUDA_EMULATOR", "1").strip() == "0":
        pytest.skip("BASENJI2_FAST_CUDA_EMULATOR=0")
    from basenji2_fast import _cuda_emu

    assert _cuda_emu.build_info()["archs"] == ["sm_emulator"]


def test_cuda_module_imports_without_a_device():
    so = _cuda_module_file()
    if so is None:
        pytest.skip("built without CUDA")
    from basenji2_fast import _cuda

    n, why = _cuda.device_status()  # never raises
    assert n >= 0 and (n > 0 or why)


def test_device_cuda_without_gpu_is_a_one_line_error():
    ok, _ = cuda_backend.usable()
    if ok:
        pytest.skip("a GPU is usable here")
    path = fixture_path("tf-small", "model.h5")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(RuntimeError) as e:
            b2.load(path, device=device)
        msg = str(e.value)
        assert "\n" not in msg and f"device={device!r}" in msg
        assert "no usable CUDA device" in msg or "built without its CUDA module" in msg


def test_device_auto_falls_back_to_cpu(model):
    ok, _ = cuda_backend.usable()
    if ok:
        pytest.skip("a GPU is usable here: auto picks it (test_auto_picks_the_gpu)")
    auto = b2.load(fixture_path("tf-small", "model.h5"), device="auto", threads=2)
    assert (auto.device, auto.precision) == ("cpu", "fp32")
    x = np.load(fixture_path("tf-small", "inputs.npy"))[:1]
    np.testing.assert_array_equal(auto.predict(x), model.predict(x))


def test_device_and_precision_arguments_are_checked():
    path = fixture_path("tf-small", "model.h5")
    with pytest.raises(ValueError, match="device='gpu'"):
        b2.load(path, device="gpu")
    # bf16 runs on the CPU too (its own kernels); fp32 is the CPU's default
    assert b2.load(path, device="cpu", precision="bf16", threads=1).precision == "bf16"
    assert b2.load(path, device="cpu", threads=1).precision == "fp32"
    with pytest.raises(ValueError, match="precision='fp16'"):
        b2.load(path, precision="fp16")
    # auto with fp32 asked for: the CPU, GPU or not
    assert b2.load(path, device="auto", precision="fp32", threads=1).device == "cpu"


def test_gpu_arrays_need_a_cuda_model(model):
    x = np.load(fixture_path("tf-small", "inputs.npy"))[:1]
    with pytest.raises(ValueError, match="device='cuda'"):
        model.predict(x, out="cupy")
    with pytest.raises(ValueError, match="out='torch'"):
        model.predict(x, out="torch")


def test_cli_device_cuda_without_gpu(tmp_path, capsys):
    ok, _ = cuda_backend.usable()
    if ok:
        pytest.skip("a GPU is usable here")
    from basenji2_fast.cli import main

    bed = tmp_path / "r.bed"
    bed.write_text("chrDemo1\t20000\t20100\n")
    repo = Path(__file__).resolve().parents[1]
    rc = main(["predict-bed", "-m", str(repo / "weights/demo/demo_random_weights.safetensors"),
               "-f", str(repo / "weights/demo/demo.fa"), str(bed), "-o", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and not (tmp_path / "out" / "predict.h5").exists()
    assert "\n" not in err and "--device cuda: " in err and "use --device cpu" in err and "device='" not in err, err


def _cuda_module():
    if _cuda_module_file() is None:
        pytest.skip("built without CUDA")
    from basenji2_fast import _cuda

    return _cuda


def test_bf16_rounding_is_round_to_nearest_even():
    _cuda = _cuda_module()
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)  # bf16 spacing at 1
    x = np.array([one, one + ulp / 2, one + 3 * ulp / 2, one + ulp / 2 + 2.0 ** -20, -(one + ulp / 2), 0.0, -0.0,
                  np.float32(3.0e38), np.inf, -np.inf, 1e-40, 65504.0, 0.1], np.float32)
    want = bf16_bits_numpy(x)
    np.testing.assert_array_equal(_cuda.bf16_bits(x), want)
    assert want[1] == want[0]                      # a tie goes to the even neighbour (down)
    assert want[2] == bf16_bits_numpy(one + 2 * ulp)  # ...and here up
    assert want[3] == bf16_bits_numpy(one + ulp)   # above the tie: up
    nan_bits = _cuda.bf16_bits(np.array([np.nan], np.float32)).astype(np.uint32) << np.uint32(16)
    assert np.isnan(nan_bits.view(np.float32)).all()
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(100_000) * 10.0 ** rng.integers(-30, 30, 100_000)).astype(np.float32)
    np.testing.assert_array_equal(_cuda.bf16_bits(y), bf16_bits_numpy(y))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(_cuda.bf16_bits(y),
                                  torch.from_numpy(y).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


@pytest.mark.parametrize("k,cin,cout", [(15, 4, 288), (5, 37, 20), (3, 16, 16), (1, 1536, 23), (1, 3, 1)])
def test_pack_conv_weights_against_numpy(k, cin, cout):
    _cuda = _cuda_module()
    rng = np.random.default_rng(k * 1000 + cin + cout)
    w = rng.standard_normal((k, cin, cout)).astype(np.float32)
    got = _cuda.pack_conv_weights(w)
    cp, np_ = -(-cin // 16) * 16, -(-cout // 16) * 16
    want = np.zeros((k, cp, np_), np.uint16)
    want[:, :cin, :cout] = bf16_bits_numpy(w)
    assert got.dtype == np.uint16 and got.shape == (k, cp, np_)
    np.testing.assert_array_equal(got, want)


def test_head_track_subset_packing_against_numpy():
    _cuda = _cuda_module()
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1, 100, 45)).astype(np.float32)
    packed = _cuda.pack_conv_weights(w)[0]
    cols = [44, 0, 7, 7, 30]
    got = _cuda.gather_columns(packed, 100, 45, cols)
    want = np.zeros((112, 16), np.uint16)
    want[:100, :5] = bf16_bits_numpy(w[0][:, cols])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="out of range"):
        _cuda.gather_columns(packed, 100, 45, [45])


def test_cuda_engine_rejects_a_bad_plan_before_touching_the_device():
    _cuda = _cuda_module()
    ops = [{"type": "conv", "kernel": np.zeros((4, 4, 8), np.float32), "bias": np.zeros(8, np.float32),
            "dilation": 1, "pool": 1, "gelu_in": True, "residual": -1}]
    with pytest.raises(ValueError, match="even kernel"):
        _cuda.Engine(64, "sigmoid", True, ops, 0, False)


# ---- on a device, and on the CPU emulator of the same source ------------------------------

gpu = pytest.mark.gpu


def _use_emulator(monkeypatch):
    try:
        from basenji2_fast import _cuda_emu
    except ImportError:
        pytest.skip("the CUDA emulator module is not built (BASENJI2_FAST_CUDA_EMULATOR=0)")
    monkeypatch.setattr(cuda_backend, "_cuda", _cuda_emu)


@pytest.fixture(params=[pytest.param("cuda", marks=gpu), "emulator"])
def backend(request, monkeypatch):
    """Where device="cuda" runs: the GPU, or the emulator (the same engine on the CPU)."""
    if request.param == "emulator":
        _use_emulator(monkeypatch)
    return request.param


def _pair(spec, **kw):
    """(CPU fp32 model, CUDA bf16 model) of one spec."""
    return b2.Model(spec, threads=2), b2.Model(spec, device="cuda", **kw)


@pytest.mark.parametrize("n_uniform", [False, True])
def test_stem_kernel_against_cpu(backend, n_uniform):
    rng = np.random.default_rng(1)
    spec = small_model(rng)
    stem_only = ModelSpec(spec.seq_length, spec.ops[:1], {}, final_gelu=False, gelu=spec.gelu)
    cpu, dev = _pair(stem_only)
    codes = random_codes(rng, 3, spec.seq_length, n_frac=0.1)
    codes[1, :40] = 5  # shifted-ensemble padding
    want = cpu._engine.trunk(codes, n_uniform)
    raw, act = dev._engine.raw.stem_forward(codes, n_uniform)
    assert nse(raw, want) <= NSE_TOL  # fp32 table sums in the CPU order: equal to rounding
    assert nse(act, bf16_round(gelu64(want, spec.gelu))) <= NSE_TOL
    # the whole-model path writes the same stem (its trunk output here)
    np.testing.assert_allclose(dev.embed(codes, n_encoding="uniform" if n_uniform else "zeros"),
                               gelu64(raw, spec.gelu) if stem_only.final_gelu else raw, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gelu", ["sigmoid", "erf", "tanh"])
@pytest.mark.parametrize("which", ["small", "ragged"])
def test_conv_kernels_against_cpu_on_identical_bf16_inputs(backend, which, gelu):
    """Every conv op (taps, dilations, pools, residuals, ragged channels): the CUDA kernel vs
    the CPU engine's op, both given the same bf16-valued weights and input."""
    rng = np.random.default_rng(2)
    spec = small_model(rng) if which == "small" else ragged_spec(rng)
    spec = dataclasses.replace(spec, gelu=gelu)
    plain = rounded_spec(spec, gelu_in=False)  # input used as given: identical on both sides
    pre = rounded_spec(spec)                   # the device applies the GELU, then rounds
    cpu = b2.Model(plain, threads=2)
    dev_plain = b2.Model(plain, device="cuda")
    dev_pre = b2.Model(pre, device="cuda")
    B, rows, checked = 2, spec.seq_length, 0
    for i, op in enumerate(spec.ops):
        if isinstance(op, ConvOp) and i > 0:
            x = bf16_round(rng.standard_normal((B, rows, op.c_in)).astype(np.float32))
            res = None if op.residual is None else rng.standard_normal((B, rows, op.c_out)).astype(np.float32)
            want = np.stack([cpu._engine.op_range(i, x[b], 0, None if res is None else res[b], 0, rows)
                             for b in range(B)])
            raw, act = dev_plain._engine.raw.op_forward(i, x, res)
            assert nse(raw, want) <= NSE_TOL, (which, i)
            assert nse(act, bf16_round(gelu64(want, gelu))) <= NSE_TOL, (which, i)
            # The pre-activated op: the device's own GELU and bf16 rounding of the input.
            x32 = rng.standard_normal((B, rows, op.c_in)).astype(np.float32)
            xa = bf16_round(gelu64(x32, gelu).astype(np.float32))
            want = np.stack([cpu._engine.op_range(i, xa[b], 0, None if res is None else res[b], 0, rows)
                             for b in range(B)])
            raw, _ = dev_pre._engine.raw.op_forward(i, x32, res)
            assert nse(raw, want) <= NSE_TOL, (which, i, "gelu_in")
            checked += 1
        if isinstance(op, ConvOp):
            rows //= op.pool
        else:
            rows -= op.left + op.right
    assert checked >= 6


@pytest.mark.parametrize("tracks", [[], [44, 0, 7, 7, 30], [3]])
def test_head_kernel_against_numpy(backend, tracks):
    rng = np.random.default_rng(4)
    spec = rounded_spec(small_model(rng))
    dev = b2.Model(spec, device="cuda")
    head = spec.heads["human"]
    x = bf16_round(rng.standard_normal((3, 57, head.weight.shape[0])).astype(np.float32))
    got = dev._engine.raw.head_forward(x, 0, tracks)
    cols = tracks or list(range(head.tracks))
    z = x.astype(np.float64) @ head.weight[:, cols].astype(np.float64) + head.bias[cols]
    assert got.shape == (3, 57, len(cols))
    assert nse(got, np.logaddexp(0.0, z)) <= NSE_TOL


@pytest.mark.parametrize("which", ["small", "ragged"])
def test_whole_model_bf16_against_cpu_fp32(backend, which):
    rng = np.random.default_rng(5)
    spec = small_model(rng) if which == "small" else ragged_spec(rng, gelu="erf")
    cpu, dev = _pair(spec)
    assert dev.device == "cuda:0" and dev.precision == "bf16"
    codes = random_codes(rng, 3, spec.seq_length)
    for head in spec.heads:
        got, want = dev.predict(codes, head=head), cpu.predict(codes, head=head)
        assert got.shape == want.shape and got.dtype == np.float32
        r = per_track_r(got, want)
        print(f"{which}/{head} bf16 vs fp32: min r {r.min():.5f}, NSE {nse(got, want):.2e}")
        assert r.min() >= R_TOL
    emb, emb_cpu = dev.embed(codes), cpu.embed(codes)
    assert emb.shape == emb_cpu.shape and nse(emb, emb_cpu) <= 1e-4
    # every head from one trunk pass, a track subset, and basenji's ensemble
    both = dev.predict(codes, head="all")
    for head in spec.heads:
        np.testing.assert_array_equal(both[head], dev.predict(codes, head=head))
    name, sel = list(spec.heads)[0], [5, 0, 11]
    np.testing.assert_allclose(dev.predict(codes, tracks=sel), dev.predict(codes)[..., sel], rtol=1e-6, atol=1e-6)
    ens = dev.predict(codes, tracks=sel, rc=True, shifts=(-1, 0, 1))
    assert per_track_r(ens, cpu.predict(codes, tracks=sel, rc=True, shifts=(-1, 0, 1))).min() >= R_TOL


def test_batch_sizes_give_identical_results(backend):
    rng = np.random.default_rng(6)
    spec = small_model(rng) if backend == "emulator" else load_spec_tf_small()
    dev = b2.Model(spec, device="cuda")
    codes = random_codes(rng, 32, dev.seq_length)
    full = dev.predict(codes, batch_size=32)
    np.testing.assert_array_equal(dev.predict(codes, batch_size=1), full)
    np.testing.assert_array_equal(dev.predict(codes, batch_size=7), full)
    np.testing.assert_array_equal(dev.predict(codes[5:6], batch_size=1)[0], full[5])


def test_cuda_graph_replay_is_identical(backend):
    rng = np.random.default_rng(7)
    spec = small_model(rng)
    plain = b2.Model(spec, device="cuda")
    graphs = b2.Model(spec, device="cuda", graphs=True)
    codes = random_codes(rng, 8, plain.seq_length)
    want = plain.predict(codes, batch_size=8)
    np.testing.assert_array_equal(graphs.predict(codes, batch_size=8), want)  # capture
    np.testing.assert_array_equal(graphs.predict(codes, batch_size=8), want)  # replay
    other = random_codes(rng, 8, plain.seq_length)  # same shape, new inputs: the replay reads them
    np.testing.assert_array_equal(graphs.predict(other, batch_size=8), plain.predict(other, batch_size=8))
    np.testing.assert_array_equal(graphs.predict(other[:3], tracks=[1, 2]), plain.predict(other[:3], tracks=[1, 2]))
    np.testing.assert_array_equal(graphs.predict(other, batch_size=8, n_encoding="uniform"),
                                  plain.predict(other, batch_size=8, n_encoding="uniform"))
    graphs._engine.raw.use_graphs = False
    np.testing.assert_array_equal(graphs.predict(codes, batch_size=8), want)


def test_many_track_selections(backend):
    """More distinct track subsets than the engine caches (16): each still right."""
    rng = np.random.default_rng(9)
    dev = b2.Model(small_model(rng), device="cuda", graphs=True)
    codes = random_codes(rng, 2, dev.seq_length)
    full = dev.predict(codes)
    for j in range(20):
        sel = [j % 45, (3 * j + 1) % 45]
        got = dev.predict(codes, head=["human", "mouse"], tracks={"human": sel, "mouse": [j % 7]})
        np.testing.assert_allclose(got["human"], full[..., sel], rtol=1e-6, atol=1e-6)


def test_device_pointers_are_checked(backend):
    rng = np.random.default_rng(10)
    dev = b2.Model(small_model(rng), device="cuda")
    with pytest.raises(ValueError, match="not CUDA device memory"):
        dev._engine.raw.predict_device(random_codes(rng, 1, dev.seq_length).ctypes.data, 1, [(0, [])], False,
                                       [np.zeros((1, dev.n_bins, 45), np.float32).ctypes.data])


def test_substitutions_say_they_run_on_cpu(backend):
    dev = b2.Model(small_model(np.random.default_rng(11)), device="cuda")
    with pytest.raises(NotImplementedError, match="device='cpu'"):
        dev.predict_substitutions(np.zeros(dev.seq_length, np.uint8), [5], "C")


def load_spec_tf_small():
    return b2.load_spec(fixture_path("tf-small", "model.h5"))


# ---- on a device only: real sizes, cupy -------------------------------------------------------

@gpu
def test_auto_picks_the_gpu():
    m = b2.load(fixture_path("tf-small", "model.h5"), device="auto")
    assert (m.device, m.precision) == ("cuda:0", "bf16")


@gpu
def test_tf_small_bf16_against_cpu_fp32(model):
    x = np.load(fixture_path("tf-small", "inputs.npy"))
    dev = b2.load(fixture_path("tf-small", "model.h5"), device="cuda")
    got, want = dev.predict(x), model.predict(x)
    r = per_track_r(got, want)
    print(f"tf-small bf16 vs fp32: min r {r.min():.5f}, NSE {nse(got, want):.2e}")
    assert r.min() >= R_TOL
    assert nse(dev.embed(x), model.embed(x)) <= 1e-4


@gpu
def test_full_basenji2_against_tensorflow(fixture_file):
    x = np.load(fixture_file("tf-full", "inputs.npy"))
    want = np.load(fixture_file("tf-full", "outputs.npy"))
    dev = b2.load(fixture_file("tf-full", "model_human.h5"), device="cuda")
    got = dev.predict(x)
    r = per_track_r(got, want)
    err = float(np.max(np.abs(got - want)))
    print(f"tf-full bf16 vs TensorFlow fp32: min r {r.min():.5f}, NSE {nse(got, want):.2e}, max |d| {err:.3g}")
    assert r.min() >= R_TOL
    assert nse(got, want) <= 1e-4
    trunk = np.load(fixture_file("tf-full", "trunk.npy"))
    assert nse(dev.embed(x), trunk) <= 1e-4
    sel = [0, 17, 5312, 2500]
    np.testing.assert_allclose(dev.predict(x[:1], tracks=sel), got[:1][..., sel], rtol=1e-6, atol=1e-6)


@gpu
def test_cupy_in_and_out():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(8)
    dev = b2.load(fixture_path("tf-small", "model.h5"), device="cuda")
    codes = random_codes(rng, 4, dev.seq_length)
    want = dev.predict(codes)
    got = dev.predict(cp.asarray(codes), out="cupy")
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    np.testing.assert_array_equal(dev.predict(cp.asarray(codes)), want)  # cupy in, numpy out
    np.testing.assert_array_equal(cp.asnumpy(dev.predict(codes, out="cupy")), want)
    ens = dev.predict(cp.asarray(codes), tracks=[3, 1], rc=True, shifts=(0, 1), out="cupy", strand_pair=[1, 0])
    np.testing.assert_allclose(cp.asnumpy(ens), dev.predict(codes, tracks=[3, 1], rc=True, shifts=(0, 1),
                                                            strand_pair=[1, 0]), rtol=1e-6, atol=1e-7)
    bad = cp.asarray(codes)
    bad[2, 17] = 9
    with pytest.raises(ValueError, match="sequence 2, position 17"):
        dev.predict(bad)
