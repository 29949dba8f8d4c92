"""DNA encoding: every check runs against the compiled module and the NumPy fallback."""
import os
import warnings

import numpy as np
import pytest

from basenji2_fast import dna
from basenji2_fast import _dna_py
from basenji2_fast.spec import BASE_CODES, CODE_N, CODE_UNIFORM

try:
    from basenji2_fast import _dna as _compiled
except ImportError:
    _compiled = None

IUPAC = "RYSWKMBDHV"
EXPECTED = "(expected A, C, G, T, N or an IUPAC code)"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(params=["compiled", "numpy"])
def impl(request, monkeypatch):
    """Point basenji2_fast.dna at one backend for the duration of a test."""
    if request.param == "compiled":
        if _compiled is None:
            if _ci():
                pytest.fail("basenji2_fast._dna is not built, and CI is set: the extension must be compiled")
            pytest.skip("basenji2_fast._dna is not built (set CI to make this a failure)")
        backend = _compiled
    else:
        backend = _dna_py
    monkeypatch.setattr(dna, "_impl", backend)
    return backend


# ----------------------------------------------------------------------------- encode
def test_backend_selected(impl):
    assert dna._impl is impl
    assert dna.is_available() == (impl is not _dna_py)


def test_is_available_reflects_build():
    assert dna.is_available() == (_compiled is not None)


def test_codes_match_spec(impl):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = dna.encode("ACGTN")
    assert codes.dtype == np.uint8 and codes.shape == (5,)
    assert codes.tolist() == [BASE_CODES[b] for b in "ACGTN"] == [0, 1, 2, 3, CODE_N]


@pytest.mark.parametrize("seq", ["ACGT", "acgtn", "NNNN", "aCgTnNAcGt" * 37, "G"])
def test_round_trip(impl, seq):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dna.decode(dna.encode(seq)) == seq.upper()
        assert dna.decode(dna.encode(seq.encode("ascii"))) == seq.upper()


def test_lowercase_equals_uppercase(impl):
    seq = "ACGTNACCGGTTAN" * 11
    np.testing.assert_array_equal(dna.encode(seq.lower()), dna.encode(seq))
    np.testing.assert_array_equal(dna.encode("AcGtN"), [0, 1, 2, 3, 4])


def test_bytes_and_str_agree(impl):
    seq = "ACGTNacgtnRY"
    with pytest.warns(UserWarning):
        a = dna.encode(seq)
    with pytest.warns(UserWarning):
        b = dna.encode(seq.encode("ascii"))
    with pytest.warns(UserWarning):
        c = dna.encode(bytearray(seq.encode("ascii")))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_str_and_bytes_subclasses(impl):
    class MyBytes(bytes):
        pass

    for s in (np.str_("acgtN"), np.bytes_(b"acgtN"), MyBytes(b"acgtN"), memoryview(b"acgtN")):
        assert dna.encode(s).tolist() == [0, 1, 2, 3, 4]
    assert dna.encode_batch(np.array(["ACG", "TTN"])).tolist() == [[0, 1, 2], [3, 3, 4]]


def test_n_is_4(impl):
    np.testing.assert_array_equal(dna.encode("NnNn"), [4, 4, 4, 4])


def test_empty(impl):
    for seq in ("", b""):
        codes = dna.encode(seq)
        assert codes.dtype == np.uint8 and codes.shape == (0,)
    assert dna.decode(np.zeros(0, np.uint8)) == ""
    assert dna.revcomp(np.zeros(0, np.uint8)).shape == (0,)
    assert impl.encode("")[1] == 0


def test_iupac_counted_and_read_as_n(impl):
    seq = "A" + IUPAC + IUPAC.lower() + "NnC"
    codes, n = impl.encode(seq)
    assert n == 2 * len(IUPAC)  # N is not an ambiguity code
    assert codes.tolist() == [0] + [4] * (2 * len(IUPAC)) + [4, 4, 1]


def test_iupac_single_warning(impl):
    seq = "ACGT" + "RYKM" + "ACGT" + "swbdhv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = dna.encode(seq, what="chr7:100-120")
    assert len(caught) == 1
    w = caught[0]
    assert issubclass(w.category, UserWarning)
    msg = str(w.message)
    assert "chr7:100-120" in msg and "10 IUPAC ambiguity codes" in msg and "read as N" in msg
    assert w.filename == __file__  # attributed to the caller
    assert (codes[4:8] == CODE_N).all() and (codes[12:] == CODE_N).all()


def test_no_warning_without_iupac(impl):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dna.encode("ACGTN" * 100)
        dna.encode_batch(["ACGTN", "NNNNN"])


@pytest.mark.parametrize("seq,pos,char", [
    ("X", 0, "'X'"),
    ("ACGTX", 4, "'X'"),
    ("ACGT-ACGT", 4, "'-'"),
    ("ACGU", 3, "'U'"),
    ("ACGT ACGT", 4, "' '"),
    ("ACGT\nACGT", 4, "'\\n'"),
    ("ACGTACGTNX", 9, "'X'"),
    ("ACGTXACGTZ", 4, "'X'"),  # the first one
])
def test_invalid_character(impl, seq, pos, char):
    for s in (seq, seq.encode("ascii")):
        with pytest.raises(ValueError) as err:
            dna.encode(s)
        assert str(err.value) == f"sequence: invalid base {char} at position {pos} {EXPECTED}"


def test_invalid_position_has_thousands_separator(impl):
    seq = "A" * 1234 + "x" + "C" * 10
    with pytest.raises(ValueError, match=r"invalid base 'x' at position 1,234 \(expected"):
        dna.encode(seq)
    with pytest.raises(ValueError, match=r"^chrX:1-2000: invalid base 'x' at position 1,234"):
        dna.encode(seq, what="chrX:1-2000")


def test_invalid_after_iupac_still_raises(impl):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="position 3"):
            dna.encode("RYA*")


def test_non_ascii(impl):
    with pytest.raises(ValueError) as err:
        dna.encode("ACG\u00e9T")
    assert str(err.value) == ("sequence: invalid base '\u00e9' at position 3 "
                              "(non-ASCII character; expected A, C, G, T, N or an IUPAC code)")
    with pytest.raises(ValueError, match=r"invalid base '\\xe9' at position 3 \(non-ASCII"):
        dna.encode(b"ACG\xe9T")
    with pytest.raises(ValueError, match="position 0"):
        dna.encode("\u0391CGT")  # Greek capital alpha


def test_type_errors(impl):
    with pytest.raises(TypeError):
        dna.encode(1234)
    with pytest.raises(TypeError):
        dna.encode(np.zeros(4, np.uint8))
    with pytest.raises(TypeError, match="sequence 1"):
        dna.encode_batch(["ACGT", 5])


# ----------------------------------------------------------------------------- batch
def test_batch_list(impl):
    out = dna.encode_batch(["ACGT", "acgt", b"NNAC", "TTTT"])
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 4, 0, 1], [3, 3, 3, 3]]


def test_batch_single(impl):
    for s in ("ACGTN", b"ACGTN"):
        out = dna.encode_batch(s)
        assert out.shape == (1, 5) and out.tolist() == [[0, 1, 2, 3, 4]]
    assert dna.encode_batch(("AC", "GT")).shape == (2, 2)


def test_batch_length_mismatch(impl):
    with pytest.raises(ValueError) as err:
        dna.encode_batch(["ACGT", "ACGT", "ACGT", "ACG", "AC"])
    msg = str(err.value)
    assert "sequence 3" in msg and "length 3" in msg and "length 4" in msg
    with pytest.raises(ValueError, match=r"sequence 1 has length 1,001, but sequence 0 has length 1,000"):
        dna.encode_batch(["A" * 1000, "A" * 1001])


def test_batch_empty_list(impl):
    with pytest.raises(ValueError, match="no sequences"):
        dna.encode_batch([])


def test_batch_error_names_index(impl):
    with pytest.raises(ValueError) as err:
        dna.encode_batch(["ACGT", "ACGT", "ACGT", "ACXT"])
    assert str(err.value) == f"sequence 3: invalid base 'X' at position 2 {EXPECTED}"
    with pytest.raises(ValueError, match=r"^sequence 1: invalid base '\\xff' at position 0 \(non-ASCII"):
        dna.encode_batch([b"ACGT", b"\xffCGT"])


def test_batch_single_warning(impl):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = dna.encode_batch(["ACGR", "ACGT", "YYGT"])
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "3 IUPAC ambiguity codes" in msg and "sequences 0, 2" in msg
    assert out[0, 3] == CODE_N and (out[2, :2] == CODE_N).all()


# ----------------------------------------------------------------------------- revcomp
def test_revcomp_maps_codes(impl):
    codes = np.array([0, 1, 2, 3, 4, 5], np.uint8)
    assert dna.revcomp(codes).tolist() == [5, 4, 0, 1, 2, 3]
    assert dna.decode(dna.revcomp(dna.encode("AACGTN"))) == "NACGTT"
    assert dna.decode(dna.revcomp(dna.encode("GATTACA"))) == "TGTAATC"


def test_revcomp_returns_new_array(impl):
    codes = np.array([0, 0, 1], np.uint8)
    out = dna.revcomp(codes)
    out[:] = 9
    assert codes.tolist() == [0, 0, 1]
    pal = dna.encode("ACGT")  # its own reverse complement
    rc = dna.revcomp(pal)
    assert rc is not pal and not np.shares_memory(rc, pal)
    np.testing.assert_array_equal(rc, pal)


def test_revcomp_involution(impl):
    rng = np.random.default_rng(0)
    for shape in [(1,), (7,), (1000,), (3, 257), (4, 0)]:
        codes = rng.integers(0, 6, size=shape, dtype=np.uint8)
        rc = dna.revcomp(codes)
        assert rc.shape == codes.shape and rc.dtype == np.uint8
        np.testing.assert_array_equal(dna.revcomp(rc), codes)


def test_revcomp_batch_is_per_row(impl):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, size=(5, 301), dtype=np.uint8)
    rc = dna.revcomp(codes)
    for i in range(5):
        np.testing.assert_array_equal(rc[i], dna.revcomp(codes[i]))
    comp = np.array([3, 2, 1, 0, 4, 5], np.uint8)
    np.testing.assert_array_equal(rc, comp[codes[:, ::-1]])


def test_revcomp_non_contiguous_and_other_int(impl):
    codes = np.arange(24, dtype=np.uint8).reshape(4, 6) % 6
    view = codes[:, ::2]
    np.testing.assert_array_equal(dna.revcomp(view), dna.revcomp(view.copy()))
    np.testing.assert_array_equal(dna.revcomp(np.array([0, 1, 4], np.int64)), [4, 2, 3])
    with pytest.raises(ValueError):
        dna.revcomp(np.array([0, 6], np.int64))
    with pytest.raises(TypeError):
        dna.revcomp(np.array([0.0, 1.0]))


# ----------------------------------------------------------------------------- decode
def test_decode(impl):
    assert dna.decode(np.array([0, 1, 2, 3, 4, 5], np.uint8)) == "ACGTNN"
    assert dna.decode(np.array([[0, 1], [4, 5]], np.uint8)) == ["AC", "NN"]
    with pytest.raises(ValueError, match=r"invalid code 6 at position 2 \(expected 0-5\)"):
        dna.decode(np.array([0, 1, 6], np.uint8))
    with pytest.raises(ValueError, match=r"^sequence 1: invalid code 200 at position 0"):
        dna.decode(np.array([[0, 1], [200, 1]], np.uint8))


# ----------------------------------------------------------------------------- one-hot
def _onehot(codes, n_value=0.0):
    eye = np.vstack([np.eye(4), np.full(4, n_value), np.full(4, 0.25)])
    return eye[codes].astype(np.float32)


def test_onehot_round_trip(impl):
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 6, size=(3, 500), dtype=np.uint8)
    x = _onehot(codes)
    out, zero_rows = dna.onehot_to_codes(x)
    assert out.dtype == np.uint8 and out.shape == (3, 500)
    np.testing.assert_array_equal(out, codes)
    assert zero_rows is True


def test_onehot_n_as_uniform_has_no_zero_rows(impl):
    codes = np.array([[0, 1, 2, 3, 4, 5]], np.uint8)
    out, zero_rows = dna.onehot_to_codes(_onehot(codes, n_value=0.25))
    # 0.25 rows are indistinguishable from the padding code: they read back as 5.
    assert out.tolist() == [[0, 1, 2, 3, 5, 5]]
    assert zero_rows is False


def test_onehot_2d_and_dtypes(impl):
    x = np.eye(4)[[3, 2, 1, 0]]
    for arr in (x, x.astype(np.float16), x.astype(np.float32), x.astype(np.uint8), x.astype(bool)):
        out, zero_rows = dna.onehot_to_codes(arr)
        assert out.shape == (1, 4) and out.tolist() == [[3, 2, 1, 0]]
        assert zero_rows is False
    out, zero_rows = dna.onehot_to_codes(np.zeros((2, 3, 4)))
    assert (out == CODE_N).all() and zero_rows is True
    out, zero_rows = dna.onehot_to_codes(np.full((1, 3, 4), 0.25))
    assert (out == CODE_UNIFORM).all() and zero_rows is False


@pytest.mark.parametrize("row,shown", [
    ([0.5, 0.5, 0, 0], "[0.5 0.5 0 0]"),
    ([1, 1, 0, 0], "[1 1 0 0]"),
    ([2, 0, 0, 0], "[2 0 0 0]"),
    ([-1, 0, 0, 0], "[-1 0 0 0]"),
    ([0.25, 0.25, 0.25, 0.2], "[0.25 0.25 0.25 0.2]"),
    ([0.9999, 0, 0, 0], "[0.9999 0 0 0]"),
    ([np.nan, 0, 0, 0], "[nan 0 0 0]"),
])
def test_onehot_bad_row(impl, row, shown):
    x = _onehot(np.zeros((2, 30), np.uint8)).astype(np.float64)
    x[1, 17] = row
    x[1, 20] = row  # only the first is reported
    with pytest.raises(ValueError) as err:
        dna.onehot_to_codes(x)
    assert str(err.value) == (f"one-hot row at sequence 1, position 17 is not one-hot, all-zero "
                              f"or uniform 0.25: {shown}")


def test_onehot_bad_row_2d(impl):
    x = np.eye(4)[[0] * 20]
    x[17] = [0.5, 0.5, 0, 0]
    with pytest.raises(ValueError, match=r"sequence 0, position 17 .*: \[0\.5 0\.5 0 0\]$"):
        dna.onehot_to_codes(x)


def test_onehot_bad_shape_and_type(impl):
    for shape in [(4,), (10, 3), (2, 10, 5), (1, 2, 3, 4)]:
        with pytest.raises(ValueError, match="shape"):
            dna.onehot_to_codes(np.zeros(shape))
    with pytest.raises(TypeError):
        dna.onehot_to_codes(np.array([["a", "c", "g", "t"]]))


# ----------------------------------------------------------------------------- compiled vs fallback
def _random_sequence(n, seed):
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGTacgtNn" + IUPAC.encode() + IUPAC.lower().encode(), np.uint8)
    p = np.r_[np.full(8, 0.11), np.full(2, 0.03), np.full(20, 0.06 / 20)]
    return rng.choice(alphabet, size=n, p=p / p.sum()).tobytes().decode("ascii")


def test_compiled_matches_fallback_100kb():
    if _compiled is None:
        if _ci():
            pytest.fail("basenji2_fast._dna is not built, and CI is set")
        pytest.skip("basenji2_fast._dna is not built")
    seq = _random_sequence(100_000, seed=3)
    for s in (seq, seq.encode("ascii")):
        a_codes, a_n = _compiled.encode(s)
        b_codes, b_n = _dna_py.encode(s)
        assert a_codes.dtype == b_codes.dtype == np.uint8
        np.testing.assert_array_equal(a_codes, b_codes)
        assert a_n == b_n > 0
    np.testing.assert_array_equal(_compiled.revcomp(a_codes), _dna_py.revcomp(a_codes))
    assert _compiled.decode(a_codes) == _dna_py.decode(a_codes)
    batch = np.random.default_rng(4).integers(0, 6, size=(3, 100_000), dtype=np.uint8)
    np.testing.assert_array_equal(_compiled.revcomp(batch), _dna_py.revcomp(batch))
    # identical errors, anywhere in the sequence
    for pos in (0, 1, 54_321, 99_999):
        for bad in ("X", "\u00e9", "-"):
            s = seq[:pos] + bad + seq[pos + 1:]
            with pytest.raises(ValueError) as ea:
                _compiled.encode(s)
            with pytest.raises(ValueError) as eb:
                _dna_py.encode(s)
            assert str(ea.value) == str(eb.value)
            assert f"at position {pos:,} " in str(ea.value)


def test_every_byte_agrees():
    """All 256 byte values: the same code, count or error from both implementations."""
    if _compiled is None:
        if _ci():
            pytest.fail("basenji2_fast._dna is not built, and CI is set")
        pytest.skip("basenji2_fast._dna is not built")
    valid = set(b"ACGTNacgtn" + IUPAC.encode() + IUPAC.lower().encode())
    for b in range(256):
        data = b"AC" + bytes([b])
        if b in valid:
            a, b_ = _compiled.encode(data), _dna_py.encode(data)
            np.testing.assert_array_equal(a[0], b_[0])
            assert a[1] == b_[1]
        else:
            msgs = []
            for m in (_compiled, _dna_py):
                with pytest.raises(ValueError) as err:
                    m.encode(data)
                msgs.append(str(err.value))
            assert msgs[0] == msgs[1] and "at position 2 " in msgs[0]


def test_ensemble_shift_and_complement_table():
    """One ensemble shift (dna.shift_codes, host and device arrays alike) and one complement table."""
    from basenji2_fast.spec import CODE_UNIFORM

    codes = np.array([[0, 1, 2, 3, 4]], np.uint8)
    U = CODE_UNIFORM
    assert dna.shift_codes(codes, 0) is codes
    np.testing.assert_array_equal(dna.shift_codes(codes, 2), [[U, U, 0, 1, 2]])
    np.testing.assert_array_equal(dna.shift_codes(codes, -1), [[1, 2, 3, 4, U]])
    used = []

    class DeviceModule:  # what cupy offers: full_like on its own arrays
        @staticmethod
        def full_like(a, v):
            used.append(v)
            return np.full_like(a, v)

    np.testing.assert_array_equal(dna.shift_codes(codes, 1, xp=DeviceModule), [[U, 0, 1, 2, 3]])
    assert used == [U]
    np.testing.assert_array_equal(dna.COMPLEMENT[:6], [3, 2, 1, 0, 4, U])
    np.testing.assert_array_equal(dna.revcomp(codes)[0], dna.COMPLEMENT[codes[0, ::-1]])
