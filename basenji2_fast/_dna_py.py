"""Pure-NumPy twin of the compiled :mod:`basenji2_fast._dna` module.

Same three functions, same results, same errors.  It also owns the lookup tables and the
error messages: the compiled module copies its C tables from here at import time and
formats its errors with the functions below, so the two cannot drift apart.

Users should go through :mod:`basenji2_fast.dna`, which picks the compiled module when it
was built and this one otherwise.
"""
from __future__ import annotations

import numpy as np

from .spec import BASE_CODES, CODE_N, CODE_UNIFORM

#: IUPAC ambiguity codes (two-, three- and four-base); read as N and counted.
IUPAC_AMBIGUITY = "RYSWKMBDHV"

#: Flag bits in :data:`ENCODE_TABLE` (the low three bits hold the code).
AMBIGUOUS_FLAG = 0x40
INVALID_FLAG = 0x80
CODE_MASK = 0x07

_EXPECTED = "expected A, C, G, T, N or an IUPAC code"


def _build_encode_table() -> np.ndarray:
    table = np.full(256, INVALID_FLAG, np.uint8)
    for base, code in BASE_CODES.items():
        table[ord(base.upper())] = code
        table[ord(base.lower())] = code
    for ch in IUPAC_AMBIGUITY:
        table[ord(ch.upper())] = CODE_N | AMBIGUOUS_FLAG
        table[ord(ch.lower())] = CODE_N | AMBIGUOUS_FLAG
    return table


def _build_complement_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint8)  # N, uniform (and anything else) map to themselves
    for a, b in (("A", "T"), ("C", "G")):
        table[BASE_CODES[a]], table[BASE_CODES[b]] = BASE_CODES[b], BASE_CODES[a]
    return table


def _build_decode_table() -> np.ndarray:
    table = np.zeros(256, np.uint8)  # 0 = not a code
    for base, code in BASE_CODES.items():
        table[code] = ord(base)
    table[CODE_UNIFORM] = ord("N")
    return table


#: byte -> code (0-4) | AMBIGUOUS_FLAG for IUPAC codes | INVALID_FLAG for anything else.
ENCODE_TABLE = _build_encode_table()
#: code -> code of the complementary base (0<->3, 1<->2; every other value unchanged).
COMPLEMENT_TABLE = _build_complement_table()
#: code -> ASCII letter ('N' for both 4 and 5); 0 for values that are not codes.
DECODE_TABLE = _build_decode_table()
_DECODE_VALID = DECODE_TABLE != 0


# --------------------------------------------------------------------------- messages
def byte_repr(b: int) -> str:
    """How an input byte is shown in an error: 'X', '\\n', '\\xe9'."""
    return repr(chr(b)) if b < 128 else f"'\\x{b:02x}'"


def invalid_base_message(shown: str, pos: int, non_ascii: bool = False) -> str:
    """The ValueError text for a character that is not a base.  ``shown`` is already quoted."""
    note = "non-ASCII character; " if non_ascii else ""
    return f"invalid base {shown} at position {pos:,} ({note}{_EXPECTED})"


def invalid_code_message(code: int, pos: int) -> str:
    return f"invalid code {code} at position {pos:,} (expected 0-{CODE_UNIFORM})"


def as_ascii_bytes(seq) -> bytes:
    """str -> its ASCII bytes, bytes-like -> bytes; ValueError for a non-ASCII character."""
    if isinstance(seq, str):
        try:
            return seq.encode("ascii")
        except UnicodeEncodeError as err:
            raise ValueError(invalid_base_message(repr(seq[err.start]), err.start, True)) from None
    if type(seq) is bytes:
        return seq
    if isinstance(seq, (bytes, bytearray, memoryview)):  # subclasses (np.bytes_) included
        return bytes(seq)
    raise TypeError(f"expected a str or bytes sequence, got {type(seq).__name__}")


def raise_invalid_byte(data: bytes, pos: int):
    b = data[pos]
    raise ValueError(invalid_base_message(byte_repr(b), pos, b >= 128))


# --------------------------------------------------------------------------- functions
def encode(seq):
    """str or bytes [L] -> (np.uint8 codes [L], number of IUPAC ambiguity codes read as N)."""
    data = as_ascii_bytes(seq)
    raw = np.frombuffer(data, np.uint8)
    t = ENCODE_TABLE[raw]
    if (t & INVALID_FLAG).any():
        raise_invalid_byte(data, int(np.argmax(t & INVALID_FLAG)))
    n_ambiguous = int(np.count_nonzero(t & AMBIGUOUS_FLAG))
    if n_ambiguous:
        t &= CODE_MASK
    return t, n_ambiguous


def revcomp(codes):
    """uint8 codes [..., L] -> a new array, reversed along the last axis and complemented."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim == 0:
        raise ValueError("revcomp expects a uint8 array with at least one dimension")
    return COMPLEMENT_TABLE[codes[..., ::-1]]


def decode(codes) -> str:
    """uint8 codes [L] -> str ('N' for both 4 and 5); ValueError for a value above 5."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 1:
        raise ValueError("decode expects a one-dimensional uint8 array")
    valid = _DECODE_VALID[codes]
    if not valid.all():
        pos = int(np.argmin(valid))
        raise ValueError(invalid_code_message(int(codes[pos]), pos))
    return DECODE_TABLE[codes].tobytes().decode("ascii")
