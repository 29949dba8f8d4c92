"""DNA sequences <-> the engine's uint8 codes.

Codes (see :mod:`basenji2_fast.spec`): A, C, G, T = 0, 1, 2, 3; N = 4; 5 = "uniform"
(0.25 in each channel, the engine's shift padding).

The hot loops run in the compiled :mod:`basenji2_fast._dna` module when it was built,
and in :mod:`basenji2_fast._dna_py`, a pure-NumPy twin with the same results and the
same errors, otherwise.  :func:`is_available` says which is in use.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _dna_py
from .spec import CODE_N, CODE_UNIFORM

try:
    from . import _dna as _compiled
except ImportError:  # extension not built: NumPy fallback
    _compiled = None

#: The backend in use: the compiled module, or the NumPy fallback.
_impl = _compiled if _compiled is not None else _dna_py

SeqLike = Union[str, bytes]

__all__ = ["encode", "encode_batch", "revcomp", "decode", "onehot_to_codes", "onehot_mask", "is_available",
           "shift_codes",
           "COMPLEMENT", "VALID_LETTERS", "first_invalid"]

#: code -> the code of the complementary base (A<->T, C<->G; N, uniform and any other value
#: unchanged): uint8 [256], the table both DNA modules use.
COMPLEMENT = _dna_py.COMPLEMENT_TABLE


#: Every byte :func:`encode` reads as a base: A, C, G, T, N and the IUPAC ambiguity codes, in
#: either case.
VALID_LETTERS = bytes(i for i in range(256) if not _dna_py.ENCODE_TABLE[i] & _dna_py.INVALID_FLAG)


def first_invalid(seq: SeqLike) -> Optional[int]:
    """The 0-based index of the first character of ``seq`` that :func:`encode` refuses, or
    None when every one is a base (fast: one C-level pass over an ASCII text)."""
    if isinstance(seq, str):
        try:
            raw = seq.encode("ascii")
        except UnicodeEncodeError:
            return next(i for i, ch in enumerate(seq) if ord(ch) > 127 or ch.encode() not in VALID_LETTERS)
    else:
        raw = bytes(seq)
    if not raw.translate(None, VALID_LETTERS):
        return None
    return next(i for i, b in enumerate(raw) if b not in VALID_LETTERS)


def is_available() -> bool:
    """Whether the compiled ``basenji2_fast._dna`` module is in use (else the NumPy fallback)."""
    return _impl is not _dna_py


def _ambiguity_warning(n: int, what: str) -> str:
    codes = "code" if n == 1 else "codes"
    return (f"{what}: {n:,} IUPAC ambiguity {codes} ({', '.join(_dna_py.IUPAC_AMBIGUITY)}) "
            f"read as N")


def _encode_one(seq, what: str) -> Tuple[np.ndarray, int]:
    """encode without the warning; errors are prefixed with ``what``."""
    if not isinstance(seq, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"{what}: expected a str or bytes sequence, got {type(seq).__name__}")
    try:
        return _impl.encode(seq)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def encode(seq: SeqLike, what: str = "sequence") -> np.ndarray:
    """Encode one DNA sequence.

    Parameters
    ----------
    seq : str or bytes, length L
        Upper or lower case (soft-masking is ignored).  ``N`` -> 4; the IUPAC ambiguity
        codes R, Y, S, W, K, M, B, D, H, V -> 4 as well, with one UserWarning per call
        saying how many there were.
    what : str
        What the sequence is, for warnings and errors (e.g. ``"chr1:1000-132072"``).

    Returns
    -------
    codes : np.ndarray, uint8 [L]

    Raises
    ------
    ValueError
        For any other character (non-ASCII included), naming it and its 0-based position:
        ``"sequence: invalid base 'X' at position 1,234 (expected A, C, G, T, N or an
        IUPAC code)"``.
    TypeError
        If ``seq`` is neither str nor bytes.
    """
    codes, n_ambiguous = _encode_one(seq, what)
    if n_ambiguous:
        warnings.warn(_ambiguity_warning(n_ambiguous, what), UserWarning, stacklevel=2)
    return codes


def encode_batch(seqs: Union[SeqLike, Sequence[SeqLike]]) -> np.ndarray:
    """Encode equal-length DNA sequences into one array.

    Parameters
    ----------
    seqs : str, bytes, or a list (any sequence) of them
        A single str or bytes is a batch of one.  All must have the same length L.

    Returns
    -------
    codes : np.ndarray, uint8 [B, L]

    Raises
    ------
    ValueError
        If the list is empty, if lengths differ (naming the index of the first odd
        sequence and both lengths), or for an invalid character (``"sequence 3: invalid
        base ..."``).
    TypeError
        If an element is neither str nor bytes.

    Warns
    -----
    UserWarning
        Once per call when any IUPAC ambiguity codes were read as N.
    """
    if isinstance(seqs, (str, bytes, bytearray, memoryview)):
        codes, n_ambiguous = _encode_one(seqs, "sequence 0")
        if n_ambiguous:
            warnings.warn(_ambiguity_warning(n_ambiguous, "sequence 0"), UserWarning, stacklevel=2)
        return codes[None, :]
    if isinstance(seqs, np.ndarray) and seqs.dtype.kind not in "OSU":
        raise TypeError(f"encode_batch expects str or bytes sequences, got an array of {seqs.dtype}; "
                        "use it as codes directly")
    seqs = list(seqs)
    if not seqs:
        raise ValueError("encode_batch: no sequences")
    for i, s in enumerate(seqs):
        if not isinstance(s, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"sequence {i}: expected a str or bytes sequence, got {type(s).__name__}")
    length = len(seqs[0])
    for i, s in enumerate(seqs):
        if len(s) != length:
            raise ValueError(f"sequence {i} has length {len(s):,}, but sequence 0 has length {length:,}; "
                             "all sequences in a batch must have the same length")
    out = np.empty((len(seqs), length), np.uint8)
    ambiguous = {}
    for i, s in enumerate(seqs):
        out[i], n_ambiguous = _encode_one(s, f"sequence {i}")
        if n_ambiguous:
            ambiguous[i] = n_ambiguous
    if ambiguous:
        total = sum(ambiguous.values())
        where = ", ".join(str(i) for i in list(ambiguous)[:10]) + (", ..." if len(ambiguous) > 10 else "")
        noun = "sequence" if len(ambiguous) == 1 else "sequences"
        warnings.warn(_ambiguity_warning(total, f"{noun} {where}"), UserWarning, stacklevel=2)
    return out


def _as_codes(codes, fn: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn} expects integer codes (uint8), got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > CODE_UNIFORM):
        raise ValueError(f"{fn}: codes must lie in 0-{CODE_UNIFORM}")
    return arr.astype(np.uint8)


def revcomp(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of encoded sequences.

    Parameters
    ----------
    codes : np.ndarray, uint8 [L] or [B, L]
        (Any integer dtype holding values 0-5 is accepted and cast.)

    Returns
    -------
    np.ndarray, uint8, same shape
        A new array, reversed along the last axis, with A<->T (0<->3) and C<->G (1<->2);
        N (4) and uniform (5) are unchanged.
    """
    arr = _as_codes(codes, "revcomp")
    if arr.ndim == 0:
        raise ValueError("revcomp expects codes of shape [L] or [B, L], got a scalar")
    return _impl.revcomp(arr)


def decode(codes: np.ndarray):
    """Codes back to letters.

    Parameters
    ----------
    codes : np.ndarray, uint8 [L] or [B, L]

    Returns
    -------
    str for [L], list of B str for [B, L]; both 4 and 5 become 'N'.

    Raises
    ------
    ValueError
        For a value above 5, naming it and its position.
    """
    arr = _as_codes(codes, "decode")
    if arr.ndim == 1:
        return _impl.decode(arr)
    if arr.ndim == 2:
        out = []
        for i, row in enumerate(arr):
            try:
                out.append(_impl.decode(row))
            except ValueError as err:
                raise ValueError(f"sequence {i}: {err}") from None
        return out
    raise ValueError(f"decode expects codes of shape [L] or [B, L], got {arr.shape}")


def onehot_mask(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [...] -> bool [..., 4]: True in the column of the base (A, C, G, T); the row
    of an N (or uniform) position is all False."""
    return np.asarray(codes)[..., None] == np.arange(4, dtype=np.uint8)


def onehot_to_codes(x: np.ndarray) -> Tuple[np.ndarray, bool]:
    """Turn a one-hot batch back into codes.

    Parameters
    ----------
    x : array of float [B, L, 4] or [L, 4], channels in A, C, G, T order
        Each row must be exactly one-hot (-> its base), all zero (-> N, 4) or exactly 0.25
        in each channel (-> uniform, 5).  An [L, 4] input is a batch of one.

    Returns
    -------
    codes : np.ndarray, uint8 [B, L]
    literal_zero_rows : bool
        Whether any all-zero row was seen; the caller then encodes N as zeros whatever
        its ``n_encoding`` option says, so the input is reproduced exactly.

    Raises
    ------
    ValueError
        For a wrong shape, or for the first row that is none of the above (NaN included):
        ``"one-hot row at sequence 0, position 17 is not one-hot, all-zero or uniform
        0.25: [0.5 0.5 0 0]"``.
    TypeError
        For a non-numeric array.
    """
    x = np.asarray(x)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"onehot_to_codes expects a numeric array, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 4:
        raise ValueError(f"one-hot input must have shape [B, L, 4] or [L, 4], got {np.shape(x)}")
    is_zero = x == 0
    is_one = x == 1
    n_zero = is_zero.sum(axis=-1, dtype=np.uint8)
    n_one = is_one.sum(axis=-1, dtype=np.uint8)
    onehot = (n_one == 1) & (n_zero == 3)
    zero = n_zero == 4
    uniform = (x == 0.25).all(axis=-1)
    bad = ~(onehot | zero | uniform)
    if bad.any():
        b, pos = (int(v) for v in np.argwhere(bad)[0])
        row = " ".join(f"{float(v):g}" for v in x[b, pos])
        raise ValueError(f"one-hot row at sequence {b}, position {pos:,} is not one-hot, all-zero "
                         f"or uniform 0.25: [{row}]")
    codes = np.argmax(is_one, axis=-1).astype(np.uint8)
    literal_zero_rows = bool(zero.any())
    if literal_zero_rows:
        codes[zero] = CODE_N
    codes[uniform] = CODE_UNIFORM
    return codes, literal_zero_rows


def shift_codes(codes, shift: int, xp=np):
    """basenji's ensemble shift: ``shift > 0`` prepends ``shift`` uniform (0.25) columns and
    drops the last ``shift`` bases; ``shift < 0`` the reverse. codes: uint8 [B, L] -> [B, L]
    (the same array for shift 0). ``xp``: the array module of ``codes`` (numpy, or cupy for
    device arrays)."""
    if shift == 0:
        return codes
    out = xp.full_like(codes, CODE_UNIFORM)
    if shift > 0:
        out[:, shift:] = codes[:, :-shift]
    else:
        out[:, :shift] = codes[:, -shift:]
    return out
