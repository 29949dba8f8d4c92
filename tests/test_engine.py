"""Each fused kernel of the compiled engine against the float64 NumPy reference.

Every kernel set this CPU can run is forced in turn (generic, avx2, avx512 ...), so each
instruction set's code is checked on the machine that runs the tests.
"""
import numpy as np
import pytest

from basenji2_fast import reference as R
from basenji2_fast.model import Model, _engine
from basenji2_fast.spec import ConvOp, CropOp, Head, ModelSpec, dilation_schedule

ISAS = _engine.compiled_isas().split(",")
TOL = 2e-5  # fp32 accumulation over at most a few thousand terms, values O(1)


def rand_conv(rng, k, cin, cout, dil=1, pool=1, residual=None, gelu_in=True, name="conv"):
    kernel = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    return ConvOp(name, kernel, bias, dil, gelu_in, pool, residual)


def random_codes(rng, batch, length, n_frac=0.05):
    codes = rng.integers(0, 4, (batch, length)).astype(np.uint8)
    codes[rng.random((batch, length)) < n_frac] = 4
    return codes


def onehot(codes, n_value=0.0):
    """Codes [B, L] -> float64 one-hot [B, L, 4]; N (4) -> n_value, code 5 -> 0.25."""
    x = np.zeros(codes.shape + (4,))
    for b in range(4):
        x[codes == b, b] = 1.0
    x[codes == 4] = n_value
    x[codes == 5] = 0.25
    return x


def trunk_only(length, ops, gelu="sigmoid", final_gelu=False, heads=None):
    spec = ModelSpec(length, ops, heads or {}, final_gelu=final_gelu, gelu=gelu)
    return spec.validate()


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


ALGORITHMS = ["direct", "fast"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dilation", dilation_schedule(11, 1.5))
def test_dilated_residual_block_every_rate(isa, dilation, algorithm):
    rng = np.random.default_rng(dilation)
    L = 400  # shorter than 2 * 72 * ... so padding at both ends matters for large rates
    ops = [rand_conv(rng, 15, 4, 24, pool=2), rand_conv(rng, 3, 24, 19, dil=dilation),
           rand_conv(rng, 1, 19, 24, residual=1)]
    spec = trunk_only(L, ops)
    codes = random_codes(rng, 2, L)
    got = Model(spec, threads=2, isa=isa, algorithm=algorithm).embed(codes)
    want = R.trunk(spec, onehot(codes))
    assert got.shape == want.shape == (2, L // 2, 24)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("length", [301, 302, 17])
@pytest.mark.parametrize("k", [1, 3, 5, 15])
def test_conv_odd_even_lengths_ragged_channels(isa, length, k, algorithm):
    rng = np.random.default_rng(length * 100 + k)
    ops = [rand_conv(rng, 15, 4, 37), rand_conv(rng, k, 37, 53, dil=2), rand_conv(rng, k, 53, 7)]
    spec = trunk_only(length, ops, final_gelu=True)
    codes = random_codes(rng, 1, length)
    np.testing.assert_allclose(Model(spec, threads=2, isa=isa, algorithm=algorithm).embed(codes),
                               R.trunk(spec, onehot(codes)), atol=TOL, rtol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("gelu", ["sigmoid", "erf", "tanh"])
def test_pool_residual_gelu_variants(isa, pool, residual, gelu, algorithm):
    rng = np.random.default_rng(pool * 10 + residual)
    L = 256
    ops = [rand_conv(rng, 15, 4, 33, pool=2), rand_conv(rng, 5, 33, 33),
           rand_conv(rng, 3, 33, 33, dil=3, pool=pool, residual=1 if residual else None)]
    spec = trunk_only(L, ops, gelu=gelu, final_gelu=True)
    codes = random_codes(rng, 2, L)
    np.testing.assert_allclose(Model(spec, threads=2, isa=isa, algorithm=algorithm).embed(codes),
                               R.trunk(spec, onehot(codes)), atol=TOL, rtol=0)


def test_conv_without_preactivation(isa):
    rng = np.random.default_rng(5)
    ops = [rand_conv(rng, 15, 4, 20), rand_conv(rng, 3, 20, 18, gelu_in=False)]
    spec = trunk_only(128, ops)
    codes = random_codes(rng, 1, 128)
    np.testing.assert_allclose(Model(spec, threads=1, isa=isa).embed(codes), R.trunk(spec, onehot(codes)),
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("n_encoding,n_value", [("zeros", 0.0), ("uniform", 0.25)])
def test_stem_gather_n_encodings(isa, n_encoding, n_value):
    rng = np.random.default_rng(7)
    L = 512
    ops = [rand_conv(rng, 15, 4, 40, pool=2), rand_conv(rng, 5, 40, 21, pool=2)]
    spec = trunk_only(L, ops)
    codes = random_codes(rng, 2, L, n_frac=0.2)
    codes[0, 100:110] = 5  # shift padding: always 0.25, whatever N means
    got = Model(spec, threads=2, isa=isa).embed(codes, n_encoding=n_encoding)
    np.testing.assert_allclose(got, R.trunk(spec, onehot(codes, n_value)), atol=TOL, rtol=0)


def small_model(rng, L=1024, tracks=(45, 7)):
    ops = [rand_conv(rng, 15, 4, 24, pool=2), rand_conv(rng, 5, 24, 29, pool=2), rand_conv(rng, 5, 29, 32, pool=2)]
    for d in dilation_schedule(4, 1.5):
        i = len(ops)
        ops += [rand_conv(rng, 3, 32, 16, dil=d), rand_conv(rng, 1, 16, 32, residual=i)]
    ops += [CropOp("crop", 8, 8), rand_conv(rng, 1, 32, 64)]
    heads = {name: Head(name, (0.2 * rng.standard_normal((64, t))).astype(np.float32),
                        (0.1 * rng.standard_normal(t)).astype(np.float32))
             for name, t in zip(("human", "mouse"), tracks)}
    return ModelSpec(L, ops, heads).validate()


def test_whole_model_heads_tracks_and_softplus(isa):
    rng = np.random.default_rng(11)
    spec = small_model(rng)
    codes = random_codes(rng, 3, spec.seq_length)
    model = Model(spec, threads=2, isa=isa)
    x = onehot(codes)
    want_h, want_m = R.predict(spec, x, "human"), R.predict(spec, x, "mouse")
    assert spec.n_bins == 1024 // 8 - 16
    np.testing.assert_allclose(model.predict(codes), want_h, atol=TOL, rtol=1e-5)
    both = model.predict(codes, head="both")
    np.testing.assert_allclose(both["mouse"], want_m, atol=TOL, rtol=1e-5)
    np.testing.assert_array_equal(both["human"], model.predict(codes))
    sel = [44, 0, 3, 3]
    np.testing.assert_array_equal(model.predict(codes, tracks=sel), model.predict(codes)[..., sel])


def test_float_onehot_input_equals_codes(isa):
    rng = np.random.default_rng(12)
    spec = small_model(rng)
    codes = random_codes(rng, 2, spec.seq_length)
    model = Model(spec, threads=2, isa=isa)
    np.testing.assert_array_equal(model.predict(onehot(codes).astype(np.float32)), model.predict(codes))


def test_batch_sizes_and_threads_give_identical_results():
    rng = np.random.default_rng(13)
    spec = small_model(rng)
    codes = random_codes(rng, 8, spec.seq_length)
    base = Model(spec, threads=1).predict(codes, batch_size=1)
    for threads in (1, 2):
        model = Model(spec, threads=threads)
        for bs in (1, 3, 8):
            np.testing.assert_array_equal(model.predict(codes, batch_size=bs), base)


def test_kernel_sets_agree():
    rng = np.random.default_rng(14)
    spec = small_model(rng)
    codes = random_codes(rng, 2, spec.seq_length)
    outs = {isa: Model(spec, threads=2, isa=isa).predict(codes) for isa in ISAS}
    for isa, out in outs.items():
        np.testing.assert_allclose(out, outs["generic"], atol=TOL, rtol=1e-5, err_msg=isa)


def test_ensemble_rc_and_shifts_match_reference():
    """basenji's ensemble: shift (0.25 padding), reverse-complement, flip back, mean."""
    rng = np.random.default_rng(15)
    spec = small_model(rng)
    codes = random_codes(rng, 1, spec.seq_length)
    model = Model(spec, threads=2)
    got = model.predict(codes, rc=True, shifts=(-1, 0, 2))
    x = onehot(codes)[0]
    passes = []
    for s in (-1, 0, 2):
        xs = np.full_like(x, 0.25)
        if s > 0:
            xs[s:] = x[:-s]
        elif s < 0:
            xs[:s] = x[-s:]
        else:
            xs = x
        passes.append(R.predict(spec, xs[None])[0])
        passes.append(R.predict(spec, xs[::-1, ::-1][None])[0][::-1])
    np.testing.assert_allclose(got[0], np.mean(passes, axis=0), atol=TOL, rtol=1e-5)


def test_threads_and_isa_are_reported():
    rng = np.random.default_rng(16)
    model = Model(small_model(rng), threads=1, isa="generic")
    info = model.info()
    assert info["isa"] == "generic" and info["threads"] == 1
    assert info["heads"] == {"human": 45, "mouse": 7} and info["n_bins"] == 112 and info["bin_size"] == 8


def test_forcing_an_unavailable_isa_is_a_clear_error():
    rng = np.random.default_rng(17)
    with pytest.raises(RuntimeError, match="not available"):
        Model(small_model(rng), isa="no-such-isa")


def test_a_stem_wider_than_its_kernels_address_is_refused():
    # the stem's kernels hold a register tile's 63 taps of int32 table offsets
    rng = np.random.default_rng(19)
    with pytest.raises(ValueError, match="op 0: the stem's kernel size must be at most 63"):
        Model(trunk_only(200, [rand_conv(rng, 65, 4, 8, pool=2), rand_conv(rng, 3, 8, 8)]), threads=1)
    Model(trunk_only(200, [rand_conv(rng, 63, 4, 8, pool=2), rand_conv(rng, 3, 8, 8)]), threads=1)


def test_bad_inputs_give_clear_errors():
    rng = np.random.default_rng(18)
    model = Model(small_model(rng), threads=1)
    L = model.seq_length
    with pytest.raises(ValueError, match="sequence length 10 != the model's seq_length 1,024"):
        model.predict("ACGTACGTAC")
    with pytest.raises(ValueError, match="position 5"):
        model.predict("ACGTA" + "X" + "A" * (L - 6))
    with pytest.raises(ValueError, match="code 9"):
        model.predict(np.full((1, L), 9, np.uint8))
    with pytest.raises(ValueError, match="no head 'rat'"):
        model.predict("A" * L, head="rat")
    with pytest.raises(ValueError, match="track index 45 out of range"):
        model.predict("A" * L, tracks=[45])
    with pytest.raises(ValueError, match="n_encoding"):
        model.predict("A" * L, n_encoding="random")
    with pytest.warns(UserWarning, match="IUPAC"):
        out = model.predict("R" + "A" * (L - 1))
    np.testing.assert_array_equal(out, model.predict("N" + "A" * (L - 1)))


@pytest.mark.parametrize("algorithm", ["direct", "fast"])
@pytest.mark.parametrize("op_index", [1, 2, 3, 4])
def test_any_layer_over_any_subrange(isa, op_index, algorithm):
    """A conv op over a sub-range of its outputs, from just the rows it reads (op_reads: the
    halo, and for a fast conv whole tile blocks), equals the same rows of the whole layer,
    bit for bit (the primitive for tiling and for mutation cones)."""
    rng = np.random.default_rng(20 + op_index)
    L = 600
    ops = [rand_conv(rng, 15, 4, 24, pool=2), rand_conv(rng, 5, 24, 20, pool=2),
           rand_conv(rng, 3, 20, 11, dil=21), rand_conv(rng, 1, 11, 20, residual=2),
           rand_conv(rng, 3, 20, 20, dil=4, gelu_in=False)]
    spec = trunk_only(L, ops)
    model = Model(spec, threads=2, isa=isa, algorithm=algorithm)
    op = ops[op_index]
    assert (model._engine.op_algorithm(op_index) == "direct") == (algorithm == "direct" or op.k == 1)
    length = L // 2 if op_index == 1 else L // 4
    x = rng.standard_normal((length, op.c_in)).astype(np.float32)
    res = rng.standard_normal((length, op.c_out)).astype(np.float32) if op.residual is not None else None
    full = R.conv_op(op, x.astype(np.float64), res, spec.gelu)
    whole = model._engine.op_range(op_index, x, 0, res, 0, length)
    for p0, p1 in [(0, length), (0, 2), (length - 6, length), (40, 74), (12, 14)]:
        lo, hi = model._engine.op_reads(op_index, p0, p1)
        lo, hi = max(0, lo), min(length, hi)
        got = model._engine.op_range(op_index, x[lo:hi], lo, None if res is None else res[p0:p1], p0, p1)
        np.testing.assert_allclose(got, full[p0 // op.pool:p1 // op.pool], atol=TOL, rtol=0)
        np.testing.assert_array_equal(got, whole[p0 // op.pool:p1 // op.pool])
    with pytest.raises(ValueError, match="halo"):
        model._engine.op_range(op_index, x[21:29], 21, None if res is None else res[20:30], 20, 30)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("tile_mb", [0.002, 0.01, 0.05])
def test_tiled_stem_and_tower_equal_whole_tensors(isa, tile_mb, algorithm):
    """Tiling the stem and tower along the sequence changes no bit of the result."""
    rng = np.random.default_rng(30)
    spec = small_model(rng, L=2048)
    codes = random_codes(rng, 2, spec.seq_length)
    whole = Model(spec, threads=2, isa=isa, tile_mb=None, algorithm=algorithm)
    tiled = Model(spec, threads=2, isa=isa, tile_mb=tile_mb, algorithm=algorithm)
    assert whole.info()["stem_tower_tiles"] == 1 and tiled.info()["stem_tower_tiles"] > 1
    np.testing.assert_array_equal(tiled.predict(codes, n_encoding="uniform"), whole.predict(codes, n_encoding="uniform"))
    np.testing.assert_allclose(tiled.predict(codes), R.predict(spec, onehot(codes)), atol=TOL, rtol=1e-5)
