"""Property-based fuzzing of the binding entry points (hypothesis).

The pybind module (_engine.Engine: construction, add_head, predict, trunk, op_range,
cache_trunk, predict_substitutions) and Model.predict / embed / predict_substitutions get
random architectures, shapes, strides, dtypes, value ranges, batch sizes, thread counts,
kernel sets and track lists. Where the input is valid the result must agree with the
float64 reference (basenji2_fast/reference.py); where it is not, the error must be a
ValueError (or the IndexError/TypeError NumPy gives) in one line. A crash fails the run;
.ci/sanitize runs this file under AddressSanitizer + UBSan.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from basenji2_fast import reference as R  # noqa: E402
from basenji2_fast.model import Model, _engine  # noqa: E402
from basenji2_fast.spec import ConvOp, CropOp, Head, ModelSpec  # noqa: E402
from test_engine import onehot  # noqa: E402
from test_engine import rand_conv as _conv  # noqa: E402

ISAS = _engine.compiled_isas().split(",")
FUZZ = settings(max_examples=int(__import__("os").environ.get("B2F_FUZZ_EXAMPLES", 50)), deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def specs(draw):
    """A random valid model: a stem, convs with or without pools and pre-activation,
    residual pairs, crops, 1-2 heads; lengths that the pools divide."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pools = draw(st.integers(0, 3))
    length = draw(st.integers(2, 40)) * 2**pools
    ops, cur_len, cur_c, pools_left = [], length, draw(st.integers(1, 20)), pools
    stem_pool = 2 if pools_left and draw(st.booleans()) else 1
    pools_left -= stem_pool == 2
    ops.append(_conv(rng, draw(st.sampled_from([1, 3, 5, 7, 15])), 4, cur_c, draw(st.integers(1, 3)), stem_pool))
    cur_len //= stem_pool
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["conv", "residual", "crop"]))
        if kind == "crop" and cur_len > 4:
            left, right = draw(st.integers(0, cur_len // 4)), draw(st.integers(0, cur_len // 4))
            if cur_len // 2**pools_left * 2**pools_left != cur_len - left - right and pools_left:
                continue  # keep the remaining pools dividing the length
            ops.append(CropOp("crop", left, right))
            cur_len -= left + right
        elif kind == "residual":
            mid = draw(st.integers(1, 16))
            i = len(ops)
            ops.append(_conv(rng, draw(st.sampled_from([1, 3, 5])), cur_c, mid, draw(st.integers(1, 9))))
            ops.append(_conv(rng, 1, mid, cur_c, residual=i))
        else:
            pool = 2 if pools_left and draw(st.booleans()) else 1
            pools_left -= pool == 2
            cout = draw(st.integers(1, 24))
            ops.append(_conv(rng, draw(st.sampled_from([1, 3, 5, 7])), cur_c, cout, draw(st.integers(1, 6)), pool,
                             gelu_in=draw(st.booleans())))
            cur_len //= pool
            cur_c = cout
    heads = {}
    for name in draw(st.sampled_from([("human",), ("human", "mouse")])):
        tracks = draw(st.integers(1, 20))
        heads[name] = Head(name, (0.3 * rng.standard_normal((cur_c, tracks))).astype(np.float32),
                           (0.1 * rng.standard_normal(tracks)).astype(np.float32),
                           draw(st.sampled_from(["softplus", "linear"])))
    return ModelSpec(length, ops, heads, final_gelu=draw(st.booleans()),
                     gelu=draw(st.sampled_from(["sigmoid", "erf", "tanh"]))).validate()


def close(got, want):
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    np.testing.assert_allclose(got, want, atol=5e-5 * scale, rtol=0)


def one_line_error(call):
    """call() must raise a one-line ValueError/TypeError/IndexError; returns the message."""
    with pytest.raises((ValueError, TypeError, IndexError)) as e:
        call()
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


@st.composite
def layouts(draw, codes):
    """The same codes in another memory layout: C order, a strided view, Fortran order."""
    how = draw(st.sampled_from(["c", "strided", "fortran"]))
    if how == "strided":
        wide = np.zeros((codes.shape[0], codes.shape[1] * 2), np.uint8)
        wide[:, ::2] = codes
        return wide[:, ::2]
    return np.asfortranarray(codes) if how == "fortran" else codes


@FUZZ
@given(spec=specs(), data=st.data())
def test_model_predict_embed_agree_with_the_reference(spec, data):
    threads = data.draw(st.integers(1, 4), label="threads")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    tile_mb = data.draw(st.sampled_from([None, 16.0, 1e-4]), label="tile_mb")
    model = Model(spec, threads=threads, isa=isa, tile_mb=tile_mb)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    batch = data.draw(st.integers(1, 3), label="batch")
    top = data.draw(st.sampled_from([4, 5]), label="highest code")
    codes = rng.integers(0, top + 1, (batch, spec.seq_length)).astype(np.uint8)
    n_encoding = data.draw(st.sampled_from(["zeros", "uniform"]), label="n_encoding")
    x = onehot(codes, 0.25 if n_encoding == "uniform" else 0.0)
    head = data.draw(st.sampled_from(list(spec.heads)), label="head")
    n_tracks = spec.heads[head].tracks
    tracks = data.draw(st.none() | st.lists(st.integers(0, n_tracks - 1), min_size=1, max_size=8), label="tracks")
    form = data.draw(st.sampled_from(["codes", "float32 one-hot", "float64 one-hot"]), label="input form")
    given_codes = data.draw(layouts(codes), label="layout")
    inp = given_codes if form == "codes" else x.astype(np.float32 if form.startswith("float32") else np.float64)
    if form != "codes" and top == 5:
        return  # code 5 (uniform) has no one-hot spelling distinct from an N read as uniform
    bs = data.draw(st.integers(1, 4), label="batch_size")
    got = model.predict(inp, head=head, tracks=tracks, batch_size=bs, n_encoding=n_encoding)
    want = R.predict(spec, x, head)
    close(got, want if tracks is None else want[..., tracks])
    emb = model.embed(inp, batch_size=bs, n_encoding=n_encoding)
    close(emb, R.trunk(spec, x))


@FUZZ
@given(spec=specs(), data=st.data())
def test_model_substitutions_equal_full_passes(spec, data):
    threads = data.draw(st.integers(1, 3), label="threads")
    model = Model(spec, threads=threads, isa=data.draw(st.sampled_from(ISAS), label="isa"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    L = spec.seq_length
    codes = rng.integers(0, 5, L).astype(np.uint8)
    n = data.draw(st.integers(0, 6), label="n substitutions")
    pos = rng.integers(0, L, n)
    alts = rng.integers(0, 6, n).astype(np.uint8)
    tracks = data.draw(st.none() | st.lists(st.integers(0, next(iter(spec.heads.values())).tracks - 1),
                                            min_size=1, max_size=5), label="tracks")
    ref, alt = model.predict_substitutions(codes, pos, alts, tracks=tracks)
    np.testing.assert_array_equal(ref, model.predict(codes[None], tracks=tracks)[0])
    mutants = np.repeat(codes[None], n, axis=0)
    mutants[np.arange(n), pos] = alts
    if n:
        np.testing.assert_array_equal(alt, model.predict(mutants, tracks=tracks))
        want = R.predict(spec, onehot(mutants, 0.0))
        close(alt, want if tracks is None else want[..., tracks])


# --- the raw _engine bindings with wrong arguments ----------------------------------------------

def _small_engine():
    rng = np.random.default_rng(5)
    spec = ModelSpec(64, [_conv(rng, 5, 4, 8, pool=2), _conv(rng, 3, 8, 6, dil=2), _conv(rng, 1, 6, 8, residual=1)],
                     {"h": Head("h", rng.standard_normal((8, 7)).astype(np.float32),
                                rng.standard_normal(7).astype(np.float32))}).validate()
    return spec, Model(spec, threads=2)


SMALL_SPEC, SMALL = _small_engine()
DTYPES = [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def arrays(draw, shape_hint, dtypes=DTYPES):
    """An array near the expected one: the hinted shape or a perturbed one, any dtype,
    values in or out of range, C order or strided."""
    ndim = draw(st.sampled_from([len(shape_hint)] * 3 + [0, 1, 2, 3]))
    shape = tuple(draw(st.sampled_from([shape_hint[d] if d < len(shape_hint) else 1, 0, 1, 2, 7]))
                  for d in range(ndim))
    dtype = draw(st.sampled_from(dtypes))
    hi = draw(st.sampled_from([1, 5, 6, 300]))
    a = np.random.default_rng(draw(st.integers(0, 99))).integers(0, hi, shape).astype(dtype)
    if ndim and draw(st.booleans()):
        a = np.repeat(a, 2, axis=-1)[..., ::2]  # a strided view with the same values
    return a


def _valid_codes(a, batch_ndim=2):
    return (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == batch_ndim
            and a.shape[-1] == SMALL.seq_length and (a.size == 0 or a.max() <= 5))


@FUZZ
@given(codes=arrays((2, 64)), data=st.data())
def test_engine_predict_and_trunk_with_any_codes(codes, data):
    e = SMALL._engine
    requests = data.draw(st.lists(st.tuples(st.integers(-1, 1),
                                            st.lists(st.integers(-2, 8), max_size=4)), max_size=2), label="requests")
    valid_requests = all(h == 0 and all(0 <= t < 7 for t in ts) for h, ts in requests)
    if _valid_codes(codes) and valid_requests:
        outs = e.predict(codes, requests)
        x = onehot(np.ascontiguousarray(codes), 0.0)
        want = R.predict(SMALL_SPEC, x) if len(codes) else np.zeros((0, e.n_bins, 7))
        for (h, ts), got in zip(requests, outs):
            close(got, want[..., ts] if ts else want)
        close(e.trunk(codes), R.trunk(SMALL_SPEC, x) if len(codes) else np.zeros((0, e.n_bins, 8)))
    else:
        one_line_error(lambda: e.predict(codes, requests))
        if not _valid_codes(codes):
            one_line_error(lambda: e.trunk(codes))


@FUZZ
@given(data=st.data())
def test_engine_request_and_output_arguments(data):
    e = SMALL._engine
    codes = np.zeros((1, 64), np.uint8)
    bad = data.draw(st.sampled_from([
        [(0.5, [])], [(True, [])], [("0", [])], [(0, [1.5])], [(0, ["a"])], [(0, [None])], [(0,)], [0], "00",
        [(0, [2**40])], [(0, 3)], [(0, [1], 2)],
    ]), label="requests")
    one_line_error(lambda: e.predict(codes, bad))
    out = data.draw(arrays((1, e.n_bins, 7), dtypes=[np.float32, np.float64, np.int32]), label="out")
    ok = (out.dtype == np.float32 and out.shape == (1, e.n_bins, 7) and out.flags.c_contiguous)
    if ok:
        e.predict(codes, [(0, [])], False, [out])
        close(out, R.predict(SMALL_SPEC, onehot(codes, 0.0)))
    else:
        one_line_error(lambda: e.predict(codes, [(0, [])], False, [out]))
    ro = np.zeros((1, e.n_bins, 7), np.float32)
    ro.setflags(write=False)
    one_line_error(lambda: e.predict(codes, [(0, [])], False, [ro]))


@FUZZ
@given(pos=arrays((3,), dtypes=[np.int64, np.int32, np.uint8, np.float64, np.bool_]),
       alt=arrays((3,), dtypes=[np.uint8, np.int64, np.float32]))
def test_engine_substitutions_with_any_positions_and_bases(pos, alt):
    e = SMALL._engine
    codes = np.random.default_rng(1).integers(0, 5, 64).astype(np.uint8)
    cache = e.cache_trunk(codes)
    valid = (pos.dtype.kind in "iu" and pos.dtype != np.bool_ and pos.ndim == 1 and alt.dtype == np.uint8
             and alt.ndim == 1 and len(pos) == len(alt) and (pos.size == 0 or (pos.max() < 64 and alt.max() <= 5)))
    if valid:
        ref, alts = e.predict_substitutions(cache, pos, alt, [(0, [])])
        mutants = np.repeat(codes[None], len(pos), axis=0)
        mutants[np.arange(len(pos)), pos.astype(np.int64)] = alt
        if len(pos):
            np.testing.assert_array_equal(alts[0], e.predict(mutants, [(0, [])])[0])
    else:
        one_line_error(lambda: e.predict_substitutions(cache, pos, alt, [(0, [])]))


@FUZZ
@given(data=st.data())
def test_engine_construction_with_bad_ops(data):
    """Op dicts with wrong types, shapes and values: a one-line ValueError naming the op,
    or a valid engine whose output matches the reference."""
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    k = data.draw(st.sampled_from([-1, 0, 1, 2, 3, 5, 65]), label="k")
    cout = data.draw(st.sampled_from([0, 1, 3]), label="cout")
    op = {"type": data.draw(st.sampled_from(["conv", "conv", "crop", "pool", 3]), label="type"),
          "kernel": rng.standard_normal((max(k, 0), data.draw(st.sampled_from([4, 4, 3]), label="cin"), cout))
          .astype(data.draw(st.sampled_from([np.float32, np.float64, np.uint16, np.complex64]), label="kdtype")),
          "bias": np.zeros(data.draw(st.sampled_from([cout, cout, cout + 1])), np.float32),
          "dilation": data.draw(st.sampled_from([-1, 0, 1, 2, 1.5, "2"]), label="dilation"),
          "pool": data.draw(st.sampled_from([0, 1, 2, 3]), label="pool"),
          "gelu_in": True, "residual": data.draw(st.sampled_from([-1, -1, 0, 1, 5]), label="residual"),
          "left": 1, "right": 1}
    for key in data.draw(st.lists(st.sampled_from(list(op)), max_size=1), label="dropped keys"):
        del op[key]
    length = data.draw(st.sampled_from([-4, 0, 7, 32]), label="seq_length")
    threads = data.draw(st.sampled_from([-1, 0, 1, 3]), label="threads")

    def build():
        return _engine.Engine(length, "sigmoid", False, [op], threads)

    try:
        eng = build()
    except (ValueError, TypeError, RuntimeError) as err:
        assert str(err) and "\n" not in str(err), str(err)
        return
    # accepted: then everything about it was valid
    assert op["type"] == "conv" and op["kernel"].dtype in (np.float32, np.float64, np.uint16) and length >= 1
    assert threads >= 1 and op["dilation"] in (1, 2) and op["pool"] in (1, 2) and cout >= 1 and k % 2 == 1
    codes = rng.integers(0, 5, (1, length)).astype(np.uint8)
    kernel = R.weights(op["kernel"]).astype(np.float32)
    spec = ModelSpec(length, [ConvOp("c", kernel, op["bias"], op["dilation"], True, op["pool"])], {},
                     final_gelu=False).validate()
    close(eng.trunk(codes), R.trunk(spec, onehot(codes, 0.0)))
