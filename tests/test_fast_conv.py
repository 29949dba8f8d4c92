"""Fast convolution (Winograd F(m, k) tiles) against the float64 reference and the direct
convolution, on every kernel set this CPU runs: every tile size the engine offers, every
dilation of Basenji2, odd lengths, ragged channels, pools, residuals; bf16 products
(precision="bf16-fast"); and the sub-range contract (tiles, threads, batches, mutation cones
bit-identical to full passes) in each precision.

test_engine.py, test_incremental.py and test_golden.py run with algorithm="auto" (fast where
it saves arithmetic) by default, and test_engine.py's kernel tests once per algorithm.
"""
import numpy as np
import pytest

import basenji2_fast.model as M
from basenji2_fast import reference as R
from basenji2_fast.model import Model, _engine
from basenji2_fast.spec import ConvOp, dilation_schedule

from test_engine import onehot, rand_conv, random_codes, small_model, trunk_only

ISAS = _engine.compiled_isas().split(",")
# F(8, k) is no tile size the engine picks: it runs the table-driven transforms, which the
# others (compiled with constant coefficients) do not.
TILES = [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (6, 5), (8, 3), (8, 5)]
# fp32 rounding of the transforms grows with the tile: a few times the direct convolution's
# (TOL = 2e-5 in test_engine.py) up to F(6, 5) and F(8, k), whose points reach +-4 and +-1/4.
FAST_TOL = {2: 2e-5, 4: 2e-5, 6: 1e-4, 8: 1e-4}


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


@pytest.fixture
def tiles(monkeypatch):
    """tiles(m, k, products="fp32"): fast convolutions of kernel size k use F(m, k)."""
    def use(m, k, products="fp32"):
        monkeypatch.setitem(M.FAST_TILES[products], k, (m,))
    return use


@pytest.mark.parametrize("m,k", TILES)
@pytest.mark.parametrize("dilation", [1, 2, 3, 7, 72])
def test_every_tile_size_and_dilation_vs_float64(isa, tiles, m, k, dilation):
    """Dilated convs (tiled per dilation phase) over an odd length, which leaves a partial last
    tile block, with ragged channel counts. (Pooled fast convs: test_engine.py.)"""
    rng = np.random.default_rng(100 * m + 10 * k + dilation)
    tiles(m, k)
    L = 302  # 151 positions after the stem: odd, a partial last tile block
    ops = [rand_conv(rng, 15, 4, 19, pool=2), rand_conv(rng, k, 19, 37, dil=dilation),
           rand_conv(rng, k, 37, 21), rand_conv(rng, k, 21, 18)]
    spec = trunk_only(L, ops, final_gelu=True)
    model = Model(spec, threads=2, isa=isa, algorithm="fast")
    assert [model._engine.op_algorithm(i) for i in range(1, 4)] == [f"F({m},{k})"] * 3
    codes = random_codes(rng, 2, L)
    want = R.trunk(spec, onehot(codes))
    got = model.embed(codes)
    np.testing.assert_allclose(got, want, atol=FAST_TOL[m], rtol=0)
    # the direct convolution is closer to float64; the fast one is not the same computation
    direct = Model(spec, threads=2, isa=isa, algorithm="direct").embed(codes)
    assert not np.array_equal(direct, got)


@pytest.mark.parametrize("dilation", dilation_schedule(11, 1.5))
def test_every_basenji2_dilation_subranges_bit_identical(isa, dilation):
    """Each of Basenji2's dilated blocks, fast: any sub-range of outputs from just the rows it
    reads equals the whole layer's rows bit for bit, and both are within TOL of float64."""
    rng = np.random.default_rng(dilation)
    L = 2 * 333
    ops = [rand_conv(rng, 15, 4, 24, pool=2), rand_conv(rng, 3, 24, 20, dil=dilation),
           rand_conv(rng, 1, 20, 24, residual=1)]
    spec = trunk_only(L, ops)
    model = Model(spec, threads=2, isa=isa, algorithm="fast")
    op, n = ops[1], L // 2
    x = rng.standard_normal((n, op.c_in)).astype(np.float32)
    whole = model._engine.op_range(1, x, 0, None, 0, n)
    np.testing.assert_allclose(whole, R.conv_op(op, x.astype(np.float64), None, spec.gelu), atol=FAST_TOL[6], rtol=0)
    for p0, p1 in [(0, 1), (5, 6), (n - 1, n), (100, 117), (4 * dilation - 1, 4 * dilation + 1)]:
        p0, p1 = min(p0, n - 1), min(max(p1, p0 + 1), n)
        lo, hi = model._engine.op_reads(1, p0, p1)
        block = int(model._engine.op_algorithm(1)[2:].split(",")[0]) * dilation  # F(m,3): m * dilation
        assert (lo + op.halo) % block == 0 and (hi - op.halo) % block == 0 and hi - lo >= p1 - p0 + 2 * op.halo
        lo, hi = max(0, lo), min(n, hi)
        got = model._engine.op_range(1, x[lo:hi], lo, None, p0, p1)
        np.testing.assert_array_equal(got, whole[p0:p1])


def test_auto_runs_fast_where_it_saves_arithmetic():
    rng = np.random.default_rng(3)
    L = 2 * 64
    ops = [rand_conv(rng, 15, 4, 16, pool=2), rand_conv(rng, 5, 16, 16), rand_conv(rng, 3, 16, 16, dil=48),
           rand_conv(rng, 3, 16, 4), rand_conv(rng, 1, 4, 16), rand_conv(rng, 5, 16, 16, dil=2, pool=2)]
    model = Model(trunk_only(L, ops), threads=1)
    assert [model._engine.op_algorithm(i) for i in range(len(ops))] == [
        "stem",
        "F(6,5)",  # 11 tiles of 6 x 10 products < 16 tiles of 4 x 8
        "direct",  # 64 positions in one block of 4 x 48: mostly padding
        "direct",  # 4 output channels: the transforms cost what they save
        "direct",  # 1x1
        "direct",  # pooled and dilated: no tiling
    ]
    fast = Model(trunk_only(L, ops), threads=1, algorithm="fast")
    # dilation 48: one block of 4 x 48 (6 products per tile) beats one of 6 x 48 (8 per tile)
    assert [fast._engine.op_algorithm(i) for i in range(len(ops))][1:4] == ["F(6,5)", "F(4,3)", "F(6,3)"]


def test_info_reports_algorithms_and_arithmetic():
    rng = np.random.default_rng(4)
    spec = small_model(rng)
    fast, direct = Model(spec, threads=1).info(), Model(spec, threads=1, algorithm="direct").info()
    assert fast["algorithm"] == "auto" and direct["algorithm"] == "direct"
    assert {l["algorithm"] for l in fast["layers"]} == {"stem", "F(6,5)", "F(6,3)", "direct"}
    assert {l["algorithm"] for l in direct["layers"]} == {"stem", "direct"}
    assert fast["gflop_nominal"] == direct["gflop_nominal"]
    assert fast["gflop_executed"] < 0.8 * direct["gflop_executed"]
    for f, d in zip(fast["layers"], direct["layers"]):
        assert f["gflop_nominal"] == d["gflop_nominal"]
        if f["algorithm"].startswith("F("):
            assert f["gflop_executed"] < 0.9 * f["gflop_nominal"]  # auto: products <= 80%, plus transforms


def test_bad_tile_sizes_are_clear_errors():
    rng = np.random.default_rng(5)
    op = rand_conv(rng, 3, 8, 8)
    stem = rand_conv(rng, 15, 4, 8)

    def engine(fast_m, dil=1, pool=1, first=False):
        ops = [{"type": "conv", "kernel": o.kernel, "bias": o.bias, "dilation": d, "pool": p, "gelu_in": True,
                "residual": -1, "fast_m": f}
               for o, d, p, f in ((stem, 1, 1, fast_m if first else 0), (op, dil, pool, fast_m))]
        return _engine.Engine(64, "sigmoid", False, ops, 1)

    with pytest.raises(ValueError, match="op 1: the tile size m must be a positive even number"):
        engine(3)
    with pytest.raises(ValueError, match="op 1: a pooled fast convolution must be undilated"):
        engine(4, dil=2, pool=2)
    with pytest.raises(ValueError, match="op 0: the stem is a table gather"):
        engine(4, first=True)
    with pytest.raises(ValueError, match="algorithm"):
        Model(trunk_only(64, [stem, op]), algorithm="winograd")


def test_bf16_precision_runs_fast_layers_in_fp32():
    """precision="bf16": layers that run fast convolution keep fp32 products (and fp32 inputs);
    the others are bf16 as before."""
    rng = np.random.default_rng(6)
    spec = small_model(rng)
    last = max(i for i, op in enumerate(spec.ops) if isinstance(op, ConvOp))  # stays fp32 (bf16_plan)
    for algorithm, fast_layers in (("auto", 3), ("fast", 6)):  # auto: the tower and the undilated block
        layers = {l["op"]: l for l in Model(spec, threads=1, precision="bf16", algorithm=algorithm).info()["layers"]}
        assert all(l["precision"] == ("fp32" if l["algorithm"].startswith("F(") or l["op"] in (0, last) else "bf16")
                   for l in layers.values()), layers
        assert sum(l["algorithm"].startswith("F(") for l in layers.values()) == fast_layers
    fast16 = {l["op"]: l for l in Model(spec, threads=1, precision="bf16-fast").info()["layers"]}
    assert all(l["precision"] == "bf16" for i, l in fast16.items() if 0 < i < last), fast16
    assert {l["algorithm"] for l in fast16.values()} >= {"F(4,5)", "F(4,3)", "F(2,3)"}  # blocks <= 6 (auto)


def test_bf16_fast_products_vs_float64(isa):
    """bf16-fast: transformed weights and inputs rounded to bf16, fp32 sums. A whole model
    against float64: a few bf16 roundings per layer, so the bound is bf16's, not fp32's; and
    the products really are bf16 (further from float64 than the fp32 fast path)."""
    rng = np.random.default_rng(11)
    spec = small_model(rng)
    codes = random_codes(rng, 3, spec.seq_length)
    exact = R.predict(spec, onehot(codes), "human")
    scale = np.abs(exact).max()
    got = Model(spec, threads=2, isa=isa, precision="bf16-fast").predict(codes)
    np.testing.assert_allclose(got, exact, atol=1.5e-2 * scale, rtol=0)
    fp32 = Model(spec, threads=2, isa=isa, algorithm="fast").predict(codes)
    assert np.abs(fp32 - exact).max() < 0.05 * np.abs(got - exact).max()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-fast"])
def test_batches_threads_tiles_and_substitutions_bit_identical(isa, precision):
    """The fast path's results do not depend on batch size, threads or the tiling of the stem
    and tower, and single-base substitutions recomputed in their (tile-block rounded) cones
    equal full passes of the mutants, bit for bit."""
    rng = np.random.default_rng(13)
    spec = small_model(rng, L=2048)
    codes = random_codes(rng, 4, spec.seq_length)
    base = Model(spec, threads=1, isa=isa, precision=precision, algorithm="fast", tile_mb=None)
    want = base.predict(codes, batch_size=1)
    for threads, tile_mb in [(2, None), (1, 0.01), (2, 0.002)]:
        model = Model(spec, threads=threads, isa=isa, precision=precision, algorithm="fast", tile_mb=tile_mb)
        if tile_mb:
            assert model.info()["stem_tower_tiles"] > 1
        for bs in (1, 3):
            np.testing.assert_array_equal(model.predict(codes, batch_size=bs), want)
    seq = codes[0]
    pos = np.concatenate([[0, 1, 2, spec.seq_length - 1], rng.choice(spec.seq_length, 16, replace=False)])
    alt = rng.integers(0, 5, pos.size).astype(np.uint8)
    mut = np.repeat(seq[None], pos.size, 0)
    mut[np.arange(pos.size), pos] = alt
    model = Model(spec, threads=2, isa=isa, precision=precision, algorithm="fast")
    ref, alts = model.predict_substitutions(seq, pos, alt, head="mouse")
    np.testing.assert_array_equal(ref, model.predict(seq[None], head="mouse")[0])
    np.testing.assert_array_equal(alts, model.predict(mut, head="mouse"))


def test_kernel_sets_agree_on_the_fast_path():
    rng = np.random.default_rng(14)
    spec = small_model(rng)
    codes = random_codes(rng, 2, spec.seq_length)
    outs = {isa: Model(spec, threads=2, isa=isa, algorithm="fast").predict(codes) for isa in ISAS}
    for isa, out in outs.items():
        np.testing.assert_allclose(out, outs["generic"], atol=2e-5, rtol=1e-5, err_msg=isa)


@pytest.mark.slow
def test_full_basenji2_fast_matches_tensorflow_and_direct(fixture_file):
    """tf-full (the real Basenji2 shapes) with every fast layer: TensorFlow's golden outputs
    within the fp32 bounds (test_golden.py), and layer by layer as close to the direct
    convolution's trunk as the direct one is to TensorFlow's."""
    import basenji2_fast as b2

    x = np.load(fixture_file("tf-full", "inputs.npy"))[:1]
    want = np.load(fixture_file("tf-full", "outputs.npy"))[:1]
    fast = b2.load(fixture_file("tf-full", "model_human.h5"), threads=2, algorithm="fast")
    assert sum(l["algorithm"].startswith("F(") for l in fast.info()["layers"]) == 17
    got = fast.predict(x)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-3 and err / np.abs(want).max() <= 1e-4
    direct = b2.load(fixture_file("tf-full", "model_human.h5"), threads=2, algorithm="direct")
    trunk = np.load(fixture_file("tf-full", "trunk.npy"))[:1]
    d_fast = np.abs(fast.embed(x) - trunk).max()
    d_direct = np.abs(direct.embed(x) - trunk).max()
    assert d_fast <= 2 * d_direct + 1e-5, (d_fast, d_direct)
