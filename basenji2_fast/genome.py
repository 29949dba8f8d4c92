"""Reading a genome FASTA: pyfaidx, windows padded with N beyond chromosome ends, and
indexes that work in read-only folders."""
from __future__ import annotations

import os
import hashlib
from pathlib import Path
from typing import Union

import pyfaidx

PathLike = Union[str, os.PathLike]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "basenji2_fast" / "fai"


def open_fasta(path: PathLike) -> pyfaidx.Fasta:
    """Open a FASTA for random access.

    A present ``.fai`` is used as is (``rebuild=False``): in a read-only folder, or a checkout
    that does not keep file times, pyfaidx would otherwise try to rewrite an index that only
    looks stale. A missing index is built beside the FASTA, or in a user cache folder when the
    FASTA's folder is not writable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FASTA file not found")
    fai = Path(str(path) + ".fai")
    try:
        if fai.exists():
            return pyfaidx.Fasta(str(path), rebuild=False, sequence_always_upper=True)
        if os.access(path.parent, os.W_OK):
            return pyfaidx.Fasta(str(path), sequence_always_upper=True)
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        cache = _cache_dir() / f"{key}_{path.name}.fai"
        cache.parent.mkdir(parents=True, exist_ok=True)
        return pyfaidx.Fasta(str(path), indexname=str(cache), sequence_always_upper=True)
    except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, ValueError) as e:
        raise ValueError(f"{path}: cannot index FASTA: {e}") from e


def fetch(fasta: pyfaidx.Fasta, chrom: str, start: int, end: int) -> str:
    """Upper-case sequence of [start, end) (0-based), with N for positions off the chromosome."""
    if chrom not in fasta:
        raise KeyError(f"{fasta.filename}: no sequence named {chrom!r}")
    size = len(fasta[chrom])
    left, right = max(0, start), min(size, end)
    seq = str(fasta[chrom][left:right]) if right > left else ""
    return "N" * (left - start) + seq + "N" * max(0, end - max(right, start))
