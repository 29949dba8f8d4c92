# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled DNA hot paths: ASCII -> codes, reverse complement, codes -> ASCII.

A,C,G,T = 0,1,2,3; N = 4; 5 = uniform (shift padding).  The lookup tables and the error
messages come from :mod:`basenji2_fast._dna_py` (the pure-NumPy twin of this module), so
both implementations behave identically.  Use :mod:`basenji2_fast.dna`, not this module.

Needs no NumPy headers to build: only typed memoryviews and the CPython API are used.
"""
from libc.stdint cimport uint8_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

import numpy as np

from . import _dna_py as _py

cdef uint8_t _ENC[256]
cdef uint8_t _COMP[256]
cdef uint8_t _DEC[256]
cdef uint8_t _INVALID = _py.INVALID_FLAG
cdef uint8_t _AMBIG = _py.AMBIGUOUS_FLAG
cdef uint8_t _MASK = _py.CODE_MASK

cdef int _i
for _i in range(256):
    _ENC[_i] = _py.ENCODE_TABLE[_i]
    _COMP[_i] = _py.COMPLEMENT_TABLE[_i]
    _DEC[_i] = _py.DECODE_TABLE[_i]


def encode(seq):
    """str or bytes [L] -> (np.uint8 codes [L], number of IUPAC ambiguity codes read as N).

    Case-insensitive; N -> 4; IUPAC ambiguity codes -> 4 and counted; anything else
    raises ValueError naming the character and its 0-based position.
    """
    cdef bytes data = _py.as_ascii_bytes(seq)
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i
    cdef const unsigned char *src = <const unsigned char *> PyBytes_AS_STRING(data)
    cdef uint8_t t, bad = 0
    cdef Py_ssize_t n_ambiguous = 0
    out = np.empty(n, dtype=np.uint8)
    cdef uint8_t[::1] dst = out
    if n == 0:
        return out, 0
    cdef uint8_t *o = &dst[0]
    with nogil:
        for i in range(n):
            t = _ENC[src[i]]
            bad |= t
            n_ambiguous += (t & _AMBIG) != 0
            o[i] = t & _MASK
        if bad & _INVALID:
            i = 0
            while not (_ENC[src[i]] & _INVALID):
                i += 1
    if bad & _INVALID:
        _py.raise_invalid_byte(data, i)
    return out, n_ambiguous


def revcomp(codes):
    """uint8 codes [..., L] -> a new array, reversed along the last axis and complemented.

    0<->3, 1<->2; 4 (N), 5 (uniform) and any other value are left as they are.
    """
    arr = np.asarray(codes)
    if arr.dtype != np.uint8 or arr.ndim == 0:
        raise ValueError("revcomp expects a uint8 array with at least one dimension")
    arr = np.ascontiguousarray(arr)
    out = np.empty_like(arr)
    cdef Py_ssize_t L = arr.shape[arr.ndim - 1]
    cdef Py_ssize_t total = arr.size
    if total == 0:
        return out
    cdef const uint8_t[::1] src = arr.reshape(-1)
    cdef uint8_t[::1] dst = out.reshape(-1)
    cdef const uint8_t *s = &src[0]
    cdef uint8_t *d = &dst[0]
    cdef Py_ssize_t rows = total // L
    cdef Py_ssize_t r, i, base
    with nogil:
        for r in range(rows):
            base = r * L
            for i in range(L):
                d[base + i] = _COMP[s[base + L - 1 - i]]
    return out


def decode(codes):
    """uint8 codes [L] -> str ('N' for both 4 and 5); ValueError for a value above 5."""
    arr = np.asarray(codes)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError("decode expects a one-dimensional uint8 array")
    arr = np.ascontiguousarray(arr)
    cdef Py_ssize_t n = arr.shape[0]
    if n == 0:
        return ""
    cdef const uint8_t[::1] src = arr
    cdef const uint8_t *s = &src[0]
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *d = <uint8_t *> PyBytes_AS_STRING(buf)
    cdef Py_ssize_t i, bad_at = -1
    cdef uint8_t ch, ok = 1
    with nogil:
        for i in range(n):
            ch = _DEC[s[i]]
            d[i] = ch
            ok &= ch != 0
        if not ok:
            for i in range(n):
                if _DEC[s[i]] == 0:
                    bad_at = i
                    break
    if bad_at >= 0:
        raise ValueError(_py.invalid_code_message(int(s[bad_at]), bad_at))
    return buf.decode("ascii")
