"""The genome: FASTA access and genomic coordinates.

One coordinate convention inside the package: 0-based, end-exclusive (BED), here and in every
module above. The text forms people write are parsed here and nowhere else:

- ``chr1:1,000,000-1,131,072`` (:func:`parse_interval`): BED coordinates, as ``predict.h5``
  and the Python API write them;
- ``chr1:1,000,001-1,131,072`` (:func:`parse_region`): 1-based and inclusive, as genome
  browsers and ``samtools faidx`` write them (the ``plot --region`` option);
- ``chr1:1,000,000-1,131,072:-`` (:func:`parse_stranded_interval`): BED coordinates and a
  strand (orthologs' pairs files).

FASTA files are read with pyfaidx (imported when one is opened), windows padded with N
beyond chromosome ends, with indexes that work in read-only folders.
"""
from __future__ import annotations

import os
import hashlib
import re
from pathlib import Path
from typing import List, NamedTuple, Tuple, Union

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# FASTA
# ----------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "basenji2_fast" / "fai"


def open_fasta(path: PathLike) -> "pyfaidx.Fasta":
    """Open a FASTA for random access.

    A present ``.fai`` is used as is (``rebuild=False``): in a read-only folder, or a checkout
    that does not keep file times, pyfaidx would otherwise try to rewrite an index that only
    looks stale. A missing index is built beside the FASTA, or in a user cache folder when the
    FASTA's folder is not writable.
    """
    import pyfaidx

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


def fetch(fasta: "pyfaidx.Fasta", chrom: str, start: int, end: int) -> str:
    """Upper-case sequence of [start, end) (0-based), with N for positions off the chromosome."""
    if chrom not in fasta:
        raise KeyError(f"{fasta.filename}: no sequence named {chrom!r}")
    size = len(fasta[chrom])
    left, right = max(0, start), min(size, end)
    seq = str(fasta[chrom][left:right]) if right > left else ""
    return "N" * (left - start) + seq + "N" * max(0, end - max(right, start))


def as_fasta(fasta):
    """An open FASTA: a path is opened (:func:`open_fasta`), an open ``pyfaidx.Fasta`` passes."""
    return open_fasta(fasta) if isinstance(fasta, (str, bytes, os.PathLike)) else fasta


def fasta_path(fasta) -> str:
    """The absolute path of a FASTA given as a path or an open ``pyfaidx.Fasta``."""
    return os.path.abspath(os.fspath(fasta if isinstance(fasta, (str, bytes, os.PathLike)) else fasta.filename))


def fasta_identity(path: str, fasta) -> dict:
    """A FASTA's identity in a job record: its path, size and chromosome lengths."""
    return {"path": path, "bytes": os.path.getsize(path), "chromosomes": [[n, len(fasta[n])] for n in fasta.keys()]}


def centred_span(start: int, end: int, length: int) -> Tuple[int, int]:
    """The ``length`` bp centred on ``[start, end)`` as basenji_predict_bed.py centres its
    windows: from ``(start + end) // 2 - length // 2``; may reach off the chromosome."""
    s = (start + end) // 2 - length // 2
    return s, s + length


# ----------------------------------------------------------------------------------------------
# Regions (BED) and chromosome sizes
# ----------------------------------------------------------------------------------------------
class Region(NamedTuple):
    """One BED line: 0-based, end-exclusive; ``line`` is its 1-based line number (0 when
    the region did not come from a file)."""

    chrom: str
    start: int
    end: int
    name: str
    strand: str = "."
    line: int = 0


def read_bed(path) -> List[Region]:
    """BED3+ lines -> regions; comments, ``track`` and ``browser`` lines skipped.

    A malformed line raises ValueError naming the file and line number.
    """
    regions = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\r\n").split("\t")
            try:
                if len(cols) < 3:
                    raise ValueError("expected at least 3 tab-separated columns")
                start, end = int(cols[1]), int(cols[2])
                if start < 0 or end < start:
                    raise ValueError(f"bad interval {start}-{end}")
            except ValueError as e:
                raise ValueError(f"{path}: line {lineno}: {e}") from None
            name = cols[3] if len(cols) > 3 and cols[3] else f"{cols[0]}:{start}-{end}"
            strand = cols[5] if len(cols) > 5 and cols[5] in ("+", "-") else "."
            regions.append(Region(cols[0], start, end, name, strand, lineno))
    return regions


def as_regions(regions) -> Tuple[List[Region], str]:
    """A BED path or a list of (chrom, start, end[, name]) tuples -> (regions, what for messages)."""
    if isinstance(regions, (str, bytes, os.PathLike)):
        return read_bed(regions), os.fspath(regions)
    out = []
    for i, r in enumerate(regions):
        if isinstance(r, Region):
            out.append(r)
            continue
        try:
            chrom, start, end = r[0], int(r[1]), int(r[2])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"region {i}: expected (chrom, start, end), got {r!r}") from None
        if end < start:
            raise ValueError(f"region {i}: bad interval {start}-{end}")
        out.append(Region(str(chrom), start, end, str(r[3]) if len(r) > 3 else f"{chrom}:{start}-{end}"))
    return out, "regions"


def describe(r: Region, i: int, source: str) -> str:
    """Where a region came from, for messages: the BED line, or its position in a list."""
    return f"{source}: line {r.line}" if r.line else f"region {i} ({r.chrom}:{r.start}-{r.end})"


def check_contigs(fasta, regions: List[Region], source: str) -> None:
    """Every region's chromosome is in the FASTA, else a ValueError naming the region."""
    for i, r in enumerate(regions):
        if r.chrom not in fasta:
            raise ValueError(f"{describe(r, i, source)}: no sequence {r.chrom!r} in {fasta.filename}")


def prepare_regions(fasta, regions) -> Tuple[List[Region], object, str]:
    """(regions, open FASTA, where the regions came from): a BED path or a list of tuples read
    (one-line errors naming the BED line), at least one region, every chromosome in the FASTA."""
    regions, source = as_regions(regions)
    if not regions:
        raise ValueError(f"{source}: no regions")
    fa = as_fasta(fasta)
    check_contigs(fa, regions, source)
    return regions, fa, source


def read_chrom_sizes(path) -> List[Tuple[str, int]]:
    """A ``name<TAB>length`` file (``#`` comments) -> [(name, length)] in file order."""
    sizes = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split()
            try:
                sizes.append((cols[0], int(cols[1])))
            except (IndexError, ValueError):
                raise ValueError(f"{path}: line {n}: expected 'name<TAB>length'") from None
    return sizes


# ----------------------------------------------------------------------------------------------
# Interval text
# ----------------------------------------------------------------------------------------------
_INTERVAL = re.compile(r"^\s*([^\s:]+):([\d,]+)(?:-([\d,]+))?\s*$")


def parse_interval(text: str) -> Tuple[str, int, int]:
    """``"chr1:1,000,000-1,131,072"`` -> ``("chr1", 1000000, 1131072)``.

    0-based, end-exclusive (BED) coordinates; commas are ignored. ``"chr1:5000"`` is the
    single base ``(chr1, 5000, 5001)``. Raises ValueError for anything else.
    """
    m = _INTERVAL.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"interval {text!r}: expected CHROM:START-END (0-based, end-exclusive; commas allowed)")
    start = int(m.group(2).replace(",", ""))
    end = int(m.group(3).replace(",", "")) if m.group(3) else start + 1
    if end <= start:
        raise ValueError(f"interval {text!r}: end {end:,} is not after start {start:,}")
    return m.group(1), start, end


class GenomicRegion(NamedTuple):
    """0-based half-open interval [start, end) on ``chrom``."""
    chrom: str
    start: int
    end: int

    def __str__(self) -> str:  # the 1-based inclusive form it was written in
        return f"{self.chrom}:{self.start + 1:,}-{self.end:,}"

    @property
    def length(self) -> int:
        return self.end - self.start


_REGION_RE = re.compile(r"^(?P<chrom>\S+):(?P<start>[\d,_]+)-(?P<end>[\d,_]+)$")


def parse_region(text: str) -> GenomicRegion:
    """``"chr1:1,000,001-1,100,000"`` (1-based, inclusive) -> GenomicRegion("chr1", 1000000, 1100000).

    Raises ValueError with a one-line message for anything else (a missing chromosome or
    coordinate, start < 1, end < start).
    """
    if not isinstance(text, str):
        raise ValueError(f"region must be a string 'chrom:start-end', got {type(text).__name__}")
    m = _REGION_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad region {text!r}: expected chrom:start-end, e.g. chr1:1,000,001-1,100,000 "
                         "(1-based, inclusive)")
    start, end = (int(m.group(k).replace(",", "").replace("_", "")) for k in ("start", "end"))
    if start < 1:
        raise ValueError(f"bad region {text!r}: start must be >= 1 (coordinates are 1-based)")
    if end < start:
        raise ValueError(f"bad region {text!r}: end {end:,} is before start {start:,}")
    return GenomicRegion(m.group("chrom"), start - 1, end)


def as_genomic_region(region) -> GenomicRegion:
    """A GenomicRegion, (chrom, start, end) 0-based half-open, or 1-based text (:func:`parse_region`)."""
    if isinstance(region, GenomicRegion):
        return region
    if isinstance(region, tuple) and len(region) == 3:
        chrom, start, end = region
        if not 0 <= int(start) < int(end):
            raise ValueError(f"bad region {region!r}: expected 0 <= start < end (0-based, half-open)")
        return GenomicRegion(str(chrom), int(start), int(end))
    return parse_region(region)


# ``chr:start-end:STRAND`` / ``chr:pos:STRAND`` (no digit in STRAND: ``chr:a-b`` stays an interval)
_STRANDED = re.compile(r"^(.*:[\d,]+(?:-[\d,]+)?):([^:\d]+)$")


def parse_strand(text: str) -> str:
    """``+``, ``-`` or ``.`` (= ``+``) -> ``"+"`` / ``"-"``; ValueError otherwise."""
    t = text.strip()
    if t not in ("+", "-", "."):
        raise ValueError(f"bad strand {text!r} (expected +, - or .)")
    return "-" if t == "-" else "+"


def parse_stranded_interval(text: str) -> Tuple[Tuple[str, int, int], str]:
    """``chr:start-end[:STRAND]`` -> ((chrom, start, end), strand)."""
    m = _STRANDED.match(text.strip()) if isinstance(text, str) else None
    if m:
        iv = parse_interval(m.group(1))
        try:
            return iv, parse_strand(m.group(2))
        except ValueError as e:
            raise ValueError(f"interval {text!r}: {e}") from None
    return parse_interval(text), "+"
