"""``basenji2-fast bench``'s machinery on small models: the measured peak, the FLOP
accounting (nominal and executed), a missing framework reported in one line, the fidelity
report flagging a wrong output, and the command end to end. Timings are printed, never
judged."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest

from basenji2_fast import _engine, bench, cli, peers
from basenji2_fast.formats import load_spec
from basenji2_fast.model import Model
from basenji2_fast.spec import ConvOp, ModelSpec
from conftest import fixture_path


def independent_flops(params: dict) -> dict:
    """Nominal FLOPs of one sequence by layer group, from the basenji params JSON alone:
    2*k*c_in*c_out per position of each conv (before pooling), 2*channels*tracks per bin."""
    m = params["model"]
    L = m["seq_length"]
    stem, tower, dilated, crop, final = m["trunk"]
    flops = {"stem": 2 * stem["kernel_size"] * 4 * stem["filters"] * L}
    L //= stem["pool_size"]
    c, f = stem["filters"], float(tower["filters_init"])
    flops["tower"] = 0
    for _ in range(tower["repeat"]):
        out = int(np.round(f))
        flops["tower"] += 2 * tower["kernel_size"] * c * out * L
        L //= tower["pool_size"]
        c, f = out, f * tower["filters_mult"]
    # each residual block: k3 c -> filters (dilated), then k1 filters -> c
    flops["dilated"] = dilated["repeat"] * (2 * 3 * c * dilated["filters"] * L + 2 * dilated["filters"] * c * L)
    L -= 2 * crop["cropping"]
    flops["head"] = 2 * c * final["filters"] * L + 2 * final["filters"] * m["head_human"]["units"] * L
    return flops


def small_params() -> dict:
    return json.loads(fixture_path("tf-small", "params.json").read_text())


# ---------------------------------------------------------------------------------------------
# the measured peak

@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_peak_is_measured_for_every_kernel_set_this_cpu_runs(precision):
    isas = bench.available_isas()
    assert isas and isas[-1] == "generic"
    for isa in isas:
        r = _engine.measure_peak(isa, precision, 1, 0.02)
        # a register-only loop on one core: between a slow portable core and any real machine
        assert 0.05 < r["gflops"] < 5000, (isa, r)
        assert r["threads"] == 1 and r["seconds"] > 0 and r["instruction"]
        if precision == "bf16":
            bf16_insn = "vdpbf16ps" if isa == "avx512bf16" else _engine.measure_peak(isa, "fp32", 1, 0.01)["instruction"]
            assert r["instruction"].startswith(bf16_insn.split()[0])
    print({isa: round(_engine.measure_peak(isa, precision, 1, 0.02)["gflops"], 1) for isa in isas})


def test_peak_uses_the_threads_asked_for():
    r = _engine.measure_peak("generic", "fp32", 2, 0.02)
    assert r["threads"] == 2 and r["gflops"] > 0
    peaks = bench.measure_peaks(threads=1, trials=2, seconds=0.01, isas=["generic"])
    p, b = peaks["generic"]["fp32"], peaks["generic"]["bf16"]
    assert len(p["trials"]) == 2 and p["threads"] == 1
    # generic computes bf16 with the fp32 loop: one peak, the best of both precisions' trials
    assert p["gflops"] == b["gflops"] == max(p["trials"] + b["trials"])


def test_peak_rejects_what_this_cpu_cannot_run():
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        _engine.measure_peak("generic", "fp16", 1, 0.01)
    with pytest.raises(ValueError, match="this build and CPU run: " + _engine.compiled_isas()):
        _engine.measure_peak("not-an-isa", "fp32", 1, 0.01)
    with pytest.raises(ValueError, match="threads"):
        _engine.measure_peak("generic", "fp32", 0, 0.01)


# ---------------------------------------------------------------------------------------------
# FLOPs

def test_nominal_flops_match_an_independent_count():
    spec = load_spec(fixture_path("tf-small", "model.h5"))
    assert bench.group_flops(spec) == independent_flops(small_params())
    ops = bench.op_flops(spec)
    assert [e["group"] for e in ops] == ["stem"] + ["tower"] * 6 + ["dilated"] * 8 + ["head"] * 2
    assert ops[0]["flops"] == 2 * 15 * 4 * 16 * 16384


def test_full_basenji2_nominal_flops():
    """The published architecture: 233 GFLOP per 131,072-bp sequence with the human head."""
    from basenji2_fast.formats.published import BASENJI2_PARAMS

    spec = bench.random_spec(BASENJI2_PARAMS["model"], seed=0)
    got = bench.group_flops(spec)
    assert got == independent_flops(BASENJI2_PARAMS)
    assert round(sum(got.values()) / 1e8) == 2333


def test_executed_flops_equal_a_hand_count_untiled():
    """Whole tensors, direct convolution: every conv executes its nominal count; the stem, a
    table gather, adds k rows of cout values per position; the head 2 * channels * tracks per
    bin. (Fast convolutions' counts: test_fast_conv.py.)"""
    spec = load_spec(fixture_path("tf-small", "model.h5"))
    model = Model(spec, threads=1, tile_mb=None, algorithm="direct")
    got = model.info()["flops_per_sequence"]
    assert got == model.executed_flops()
    stem = spec.ops[0]
    hand = [stem.k * stem.c_out * spec.seq_length]
    nominal = {e["index"]: e["flops"] for e in bench.op_flops(spec)}
    for i, op in enumerate(spec.ops[1:], 1):
        hand.append(nominal[i] if isinstance(op, ConvOp) else 0)
    assert got["ops"] == hand
    assert got["trunk"] == sum(hand)
    (name, head), = spec.heads.items()
    assert got["heads"] == {name: 2 * head.weight.shape[0] * head.tracks * spec.n_bins}
    eng, op = model._engine, spec.ops[3]
    assert eng.op_flops(3, 10, 20) == 2 * op.k * op.c_in * op.c_out * 10  # any sub-range
    assert eng.op_flops(0, 10, 20) == stem.k * stem.c_out * 10
    assert eng.head_flops(0, 7, 5) == 2 * head.weight.shape[0] * 7 * 5


def test_executed_flops_count_the_tile_halos():
    """A stem (k 3, pool 2) and a conv (k 5) run in T tiles: the conv computes each of its 32
    positions once; the stem recomputes the conv's halo of 2 rows (4 positions before its
    pool) on each side of every interior tile edge."""
    rng = np.random.default_rng(0)
    L, c = 64, 16
    ops = [ConvOp("stem", rng.standard_normal((3, 4, c)).astype(np.float32), np.zeros(c, np.float32), pool=2),
           ConvOp("conv", rng.standard_normal((5, c, c)).astype(np.float32), np.zeros(c, np.float32))]
    spec = ModelSpec(L, ops, {}, final_gelu=True)
    whole = Model(spec, threads=1, tile_mb=None, algorithm="direct")
    tiled = Model(spec, threads=1, tile_mb=24 * c * 4 / 2**20, algorithm="direct")  # room for 24 rows of the stem's output
    tiles = tiled.info()["stem_tower_tiles"]
    assert tiles == 2 and whole.info()["stem_tower_tiles"] == 1
    w, t = whole.executed_flops()["ops"], tiled.executed_flops()["ops"]
    assert w == [3 * c * L, 2 * 5 * c * c * (L // 2)]
    assert t == [3 * c * (L + 2 * 4 * (tiles - 1)), w[1]]
    codes = bench.random_codes(1, L, 1)
    assert np.array_equal(whole.embed(codes), tiled.embed(codes))  # the same result either way


# ---------------------------------------------------------------------------------------------
# fidelity

def _tracks(seed=0, bins=896, tracks=40):
    rng = np.random.default_rng(seed)
    ref = rng.gamma(2.0, 1.0, size=(1, bins, tracks)).astype(np.float32)
    ref[..., :5] = 1e-6  # tracks that do not vary: excluded from r's median and minimum
    return rng, ref


def test_fidelity_passes_a_right_output():
    rng, ref = _tracks()
    y = ref + rng.normal(0, 1e-5, ref.shape).astype(np.float32)
    c = bench.compare_outputs(y, ref)
    assert c["live_tracks"] == 35 and c["tracks"] == 40
    assert c["max_abs_diff"] < 1e-4 and c["r_min"] > 0.9999
    assert bench.fidelity_flag("fp32", c) == "" and bench.fidelity_flag("bf16", c) == ""


def test_fidelity_flags_a_wrong_fp32_output():
    """As OpenVINO's fp32 plugin does: most tracks right, a part off by up to 1."""
    rng, ref = _tracks()
    y = ref.copy()
    y[0, 100:140, 7] += 1.0
    c = bench.compare_outputs(y, ref)
    assert c["max_abs_diff"] == pytest.approx(1.0, abs=1e-5)
    assert bench.fidelity_flag("fp32", c).startswith("WRONG: max|d| 1")
    assert c["r_median"] > 0.9999  # the other tracks are exact: r alone would not tell


def test_fidelity_flags_a_wrong_bf16_output():
    rng, ref = _tracks()
    y = ref * (1 + rng.normal(0, 0.004, ref.shape)).astype(np.float32)  # bf16-like rounding: fine
    assert bench.fidelity_flag("bf16", bench.compare_outputs(y, ref)) == ""
    y[0, :, 12] = rng.permutation(y[0, :, 12])  # one track scrambled
    c = bench.compare_outputs(y, ref)
    assert c["r_min"] < 0.5 and bench.fidelity_flag("bf16", c).startswith("WRONG: r min")
    y[0, :, 20] = 3.0  # a constant output where the reference varies: r = 0
    assert bench.compare_outputs(y, ref)["r_min"] <= 0.0
    with pytest.raises(ValueError, match="shape"):
        bench.compare_outputs(y[:, :10], ref)


# ---------------------------------------------------------------------------------------------
# peers that cannot run

def test_a_missing_framework_is_one_line(monkeypatch, tmp_path):
    """The worker of a runtime whose framework is absent answers not_installed and ends."""
    codes = tmp_path / "codes.npy"
    np.save(codes, bench.random_codes(1, 16, 0))
    monkeypatch.setitem(peers.RUNTIMES, "ort", dict(peers.RUNTIMES["ort"], modules=("no_such_framework_b2f",)))
    out = io.StringIO()
    with redirect_stdout(out):
        assert peers._worker({"runtime": "ort", "threads": 1, "codes": str(codes), "onnx": "x.onnx"}) == 0
    line, = out.getvalue().splitlines()
    answer = json.loads(line[len(peers.MAGIC):])
    assert answer == {"not_installed": "no_such_framework_b2f not installed (pip install onnxruntime, "
                                       "or pip install 'basenji2-fast[peers]')"}


def test_bench_reports_a_peer_that_cannot_be_imported(tmp_path, monkeypatch, capsys):
    """A TensorFlow whose import fails is reported in one line; the rest of the run goes on."""
    stub = tmp_path / "stub"
    for mod in ("tensorflow", "tf_keras"):
        (stub / mod).mkdir(parents=True)
        (stub / mod / "__init__.py").write_text("raise ImportError('libtensorflow_framework.so.2: cannot open')\n")
    monkeypatch.setenv("PYTHONPATH", str(stub))
    model = fixture_path("tf-small", "model.h5")
    assert cli.main(["bench", "-m", str(model), "--rounds", "1", "--passes", "1", "--batch", "1", "--precisions",
                     "fp32", "--peers", "tf,ort", "--genome-windows", "0", "--group-repeats", "1", "--peak-trials",
                     "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    tf_line, = [ln for ln in text.splitlines() if ln.startswith("TensorFlow")]
    assert "not installed (importing it failed: ImportError: libtensorflow_framework.so.2" in tf_line
    ort_line, = [ln for ln in text.splitlines() if ln.startswith("ONNX Runtime")]
    assert "not run: basenji2-pytorch builds only the full-size Basenji2" in ort_line


# ---------------------------------------------------------------------------------------------
# the command

def test_bench_command_on_a_small_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    model = fixture_path("tf-small", "model.h5")
    # fp32 and bf16, direct convolution (the fast path's counts and rows: test_fast_conv.py and below)
    assert cli.main(["bench", "-m", str(model), "--rounds", "1", "--passes", "2", "--batch", "1,2", "--no-peer",
                     "--precisions", "fp32,bf16", "--algorithms", "direct", "--gradient-passes", "2",
                     "--genome-windows", "1", "--genome-tracks", "3", "--group-repeats", "1", "--peak-trials", "1",
                     "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    isa = bench.available_isas()[0]
    # the measured peak of every kernel set, both precisions, positive
    assert list(res["peak"]) == bench.available_isas()
    for pk in res["peak"].values():
        for p in ("fp32", "bf16"):
            assert pk[p]["gflops"] == max(pk[p]["start"], pk[p]["end"]) > 0
            assert 0 < max(pk[p]["trials"] + pk[p]["end_trials"]) <= pk[p]["gflops"]
        trials = pk["fp32"]["trials"] + pk["fp32"]["end_trials"]
        lo, hi = min(trials), max(trials)
        assert f"fp32 trials {lo:.1f}-{hi:.1f}" in text
    # one row per precision (best kernel set), with the executed and nominal FLOP rates
    rows = res["engines"]
    assert [(r["precision"], r["isa"]) for r in rows] == [("fp32", isa), ("bf16", isa)]
    params = small_params()
    nominal = sum(independent_flops(params).values())
    spec = load_spec(model)
    executed = Model(spec, threads=1, algorithm="direct").executed_flops()
    for r in rows:
        assert len(r["times_s_per_seq"]) == 2 and r["peak_rss_mb"] > 0
        med = r["median_s_per_seq"]
        assert r["effective_gflop_per_s"] == pytest.approx(nominal / 1e9 / med)
        assert r["executed_gflop_per_s"] == pytest.approx(
            (executed["trunk"] + executed["heads"]["human"]) / 1e9 / med)
        # % of peak: each op's executed FLOPs at the peak of its products' precision (a bf16
        # model keeps its stem and last conv in fp32)
        info = Model(spec, threads=1, precision=r["precision"], algorithm="direct").info()
        pk = {p: res["peak"][isa][p]["gflops"] for p in ("fp32", "bf16")}
        ideal = sum(info["flops_per_sequence"]["ops"][layer["op"]] / 1e9 / pk[layer["precision"]]
                    for layer in info["layers"])
        ideal += info["flops_per_sequence"]["heads"]["human"] / 1e9 / pk[info["head_precision"]]
        assert r["pct_peak"] == pytest.approx(100 * ideal / med)
        if r["precision"] == "fp32":
            assert r["pct_peak"] == pytest.approx(100 * r["executed_gflop_per_s"] / pk["fp32"])
        # fidelity against our own fp32 (direct): exact for fp32, bf16 within its bounds
        fid = r["fidelity"]
        assert fid["flag"] == "" and fid["vs"] == "ours fp32 direct, sigmoid GELU"
        if r["precision"] == "fp32":
            assert fid["max_abs_diff"] == 0.0
        else:
            assert 0 < fid["max_abs_diff"] < 0.5 and fid["r_min"] > 0.99
    # the layer groups: nominal FLOPs as counted independently, executed as the engine does
    expect = independent_flops(params)
    assert [g["precision"] for g in res["groups"]] == ["fp32", "bf16"]
    for g in res["groups"]:
        assert {k: v["flops"] for k, v in g["groups"].items()} == expect
        ex = {k: v["executed_flops"] for k, v in g["groups"].items()}
        assert ex["stem"] == spec.ops[0].k * spec.ops[0].c_out * spec.seq_length
        assert ex["tower"] == expect["tower"] and ex["dilated"] == expect["dilated"]
        assert all(v["s"] > 0 and v["pct_peak"] > 0 for v in g["groups"].values())
        # the pass's own per-op times: the groups add up to the whole pass
        assert sum(v["s"] for v in g["groups"].values()) == pytest.approx(g["pass_s"])
    # the batch sweep (batch 2, ours) and predict-genome
    assert [(b["key"], b["batch"]) for b in res["batches"]] == [(f"ours fp32 direct {isa}", 2),
                                                                 (f"ours bf16 direct {isa}", 2)]
    assert all(b["median_s_per_seq"] > 0 for b in res["batches"])
    g = res["genome"]
    assert g["windows"] == 1 and g["tracks"] == 3 and g["windows_per_s"] > 0 and g["precision"] == "bf16"
    # the gradient rows: our forward and gradient pass, same run; torch not run (--no-peer)
    gr = res["gradients"]
    fwd, grad, peer = gr["rows"]
    assert (gr["tracks"], gr["bins"], gr["gelu"]) == ("all", "all", "sigmoid")
    assert len(fwd["times_s_per_seq"]) == len(grad["times_s_per_seq"]) == 2
    assert gr["gradients_over_forward"] == pytest.approx(grad["median_s_per_seq"] / fwd["median_s_per_seq"])
    assert "not run" in peer["status"] and gr["torch_over_gradients"] is None and "agreement" not in gr
    assert "ours gradients / ours forward (median s/seq):" in text
    # the text
    for col in ("engine", "med s/seq", "eff GF/s", "exec GF/s", "%peak", "RSS MB", "max|d|", "r med", "r min"):
        assert col in text
    assert f"measured peak, {isa}: fp32" in text and "layer groups, basenji2-fast fp32" in text
    assert "batch sweep" in text and "predict-genome, bf16" in text
    assert "  WRONG: " not in text  # no row flagged (the legend names the flag)
    assert "note: framework peers: not run (--no-peer)" in text


def test_torch_gradient_worker_agrees_with_ours(monkeypatch):
    """The bench's torch autograd worker (peers._load_torch_gradients: GELU swap, frozen weights,
    layouts) on tf-small as basenji2-pytorch against our gradient of the same weights."""
    torch = pytest.importorskip("torch")
    basenji2_pytorch = pytest.importorskip("basenji2_pytorch")
    params = json.loads(fixture_path("tf-small", "params.json").read_text())["model"]
    params.pop("head_mouse", None)
    params.pop("batch_norm", None)
    params["norm_type"] = "batch"

    def tf_small(pth):
        m = basenji2_pytorch.Basenji2(params)
        m.load_state_dict(torch.load(pth, weights_only=True))
        return m.eval()

    monkeypatch.setattr(peers, "basenji2_pytorch", tf_small)
    pth = fixture_path("tf-small", "model_basenji2_pytorch.pth")
    codes = bench.random_codes(2, 16384, 5)
    ours = Model(load_spec(pth), threads=2).gradients(codes, tracks=[1, 4], bins=[10, 50, 51])
    run, report = peers._load_torch_gradients({"pth": str(pth), "threads": 2, "gelu": "sigmoid", "tracks": [1, 4],
                                               "bins": [10, 50, 51]})
    theirs, n = run(codes)
    assert n == 2 and theirs.shape == ours.shape == (2, 16384, 4)
    cmp = bench.compare_gradients(ours, theirs)
    assert cmp["max_rel"] <= 1e-3 and cmp["max_abs_grad"] > 0, cmp
    assert report["config"] == "autograd, sigmoid GELU, frozen weights"


def test_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--precisions", "fp16", "--no-peer"]) == 1
    assert "--precisions: 'fp16' is not one of fp32, bf16" in capsys.readouterr().err
    assert cli.main(["bench", "--peers", "tf,mxnet"]) == 1
    assert "--peers: 'mxnet' is not one of tf, torch," in capsys.readouterr().err
    assert cli.main(["bench", "--peer-python", "tf", "--no-peer"]) == 1
    assert "--peer-python 'tf': expected RUNTIME=PYTHON" in capsys.readouterr().err


def test_state_dict_for_basenji2_pytorch_round_trips():
    """spec -> basenji2-pytorch state dict -> spec: the same weights (to float32 rounding)."""
    from basenji2_fast.formats.params import expand_params
    from basenji2_fast.formats.torch_pth import spec_from_state_dict, state_dict_from_spec

    params = small_params()["model"]
    spec = load_spec(fixture_path("tf-small", "model.h5"))
    sd = state_dict_from_spec(spec, params)
    again = spec_from_state_dict({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
                                 expand_params(params), "sd", "params", None, params)
    for a, b in zip(spec.ops, again.ops):
        assert type(a) is type(b)
        if isinstance(a, ConvOp):
            np.testing.assert_allclose(b.kernel, a.kernel, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(b.bias, a.bias, rtol=1e-6, atol=1e-7)
    (ha,), (hb,) = spec.heads.values(), again.heads.values()
    np.testing.assert_array_equal(ha.weight, hb.weight)
    from basenji2_fast.formats import FormatError

    with pytest.raises(FormatError, match="ops"):
        state_dict_from_spec(spec)  # tf-small is not the published Basenji2


@pytest.mark.slow
def test_state_dict_loads_into_basenji2_pytorch_strictly(tmp_path):
    pytest.importorskip("basenji2_pytorch")
    torch = pytest.importorskip("torch")
    from basenji2_fast.formats.published import BASENJI2_PARAMS
    from basenji2_fast.formats.torch_pth import state_dict_from_spec

    sd = state_dict_from_spec(bench.random_spec(BASENJI2_PARAMS["model"], seed=1))
    pth = tmp_path / "w.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, pth)
    model = peers.basenji2_pytorch(str(pth))  # load_state_dict(strict=True)
    bn = model.model.trunk[0].block[2]
    assert float((bn.running_var + bn.eps).max()) == 1.0 == float((bn.running_var + bn.eps).min())


def test_workers_do_not_import_from_the_working_folder(tmp_path, monkeypatch):
    """A folder in the working directory named like a module the workers import (a scratch
    ``z3`` broke torch.export and with it every ONNX peer) is not on their sys.path."""
    import subprocess
    import sys

    if sys.version_info < (3, 11):
        pytest.skip("-P needs Python 3.11")
    (tmp_path / "h5py").mkdir()
    (tmp_path / "h5py" / "__init__.py").write_text("raise ImportError('the working folder was imported')\n")
    monkeypatch.chdir(tmp_path)
    cmd = bench._worker_cmd({})
    interp = cmd[:cmd.index("-m")]  # the interpreter and its flags, as every worker starts
    r = subprocess.run(interp + ["-c", "import basenji2_fast, h5py; print(h5py.__file__)"], env=bench._env(1),
                       capture_output=True, text=True)
    assert r.returncode == 0 and str(tmp_path) not in r.stdout, r.stderr[-500:]
