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
beyond chromosome ends, with indexes that work in read-only folders. A FASTA is checked
before it is used: its ``.fai`` against the file (names, lengths, offsets, records after the
last indexed one; a stale index is replaced by a fresh one in the user cache, with a
warning), CR-only line ends refused, and every base read from it checked (an invalid
character is an error naming the file and its genome position). Regions are checked
against their chromosome's length (:func:`check_span`).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Union

from ._io import check_input_file
from .dna import first_invalid

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# FASTA
# ----------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "basenji2_fast" / "fai"


def _check_fasta_text(path: Path) -> bool:
    """What pyfaidx would misread: CR-only line ends (one endless line, so no sequence) and
    files that are not FASTA at all. Compressed (BGZF) files are left to pyfaidx: returns
    whether the file is compressed."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    if head[:2] == b"\x1f\x8b":
        # BGZF: gzip with an extra field whose subfield is "BC" (random access by block)
        if not (len(head) >= 18 and head[3] & 4 and head[12:14] == b"BC"):
            raise ValueError(f"{path}: a gzip-compressed FASTA: random access needs plain text or bgzip; "
                             f"decompress it (gunzip) or recompress it with bgzip")
        try:
            import Bio  # noqa: F401  (pyfaidx reads BGZF through Biopython)
        except ImportError:
            raise ValueError(f"{path}: a bgzip-compressed FASTA: reading it needs Biopython "
                             "(pip install biopython), or decompress it (bgzip -d)") from None
        return True
    body = head[:-1] if head.endswith(b"\r") else head  # a CR ending the chunk may be followed by its LF
    if body.count(b"\r") != body.count(b"\r\n"):
        raise ValueError(f"{path}: lines end in CR alone (old Mac text); convert the line ends to LF, "
                         "e.g. tr '\\r' '\\n' < IN > OUT")
    start = head.lstrip()
    if not start:
        raise ValueError(f"{path}: an empty FASTA file")
    if not start.startswith(b">"):
        raise ValueError(f"{path}: not a FASTA file (its first line is not a '>' header)")
    return False


#: Longest header line (bytes) the index check reads between two records.
_MAX_HEADER = 1 << 16


def index_problem(fasta: PathLike, fai: PathLike) -> Optional[str]:
    """Why the FASTA index ``fai`` does not describe ``fasta``, or None when it does.

    Reads a few bytes at each record's boundaries, not the sequence: every indexed name must
    be the first word of the header line that ends where its sequence starts, each sequence
    must end (a line end, then the next header or the end of the file) where the index's
    length and line layout put it, and nothing but white space may follow the last indexed
    record (a contig appended after indexing). Line lengths inside a record are not read.
    """
    fasta, fai = Path(fasta), Path(fai)
    try:
        lines = fai.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return f"the index cannot be read ({e})"
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        try:
            name, length, offset, line_bases, line_bytes = cols[0], *(int(c) for c in cols[1:5])
        except (ValueError, TypeError):
            return f"the index's line {n} is not 'name, length, offset, line bases, line bytes'"
        if min(length, offset, line_bases) < 0 or line_bytes < line_bases or (length and not line_bases):
            return f"the index's line {n} has impossible values"
        entries.append((offset, name, length, line_bases, line_bytes))
    size = fasta.stat().st_size
    entries.sort()
    with open(fasta, "rb") as fh:
        prev_end = 0
        for offset, name, length, line_bases, line_bytes in entries:
            if not prev_end <= offset <= size:
                return f"no header line of {name!r} ends at byte {offset:,}"
            fh.seek(prev_end)
            header = fh.read(min(offset - prev_end, _MAX_HEADER)).lstrip()
            words = header[1:].split(maxsplit=1) if header.startswith(b">") else []
            found = words[0].decode("utf-8", "replace") if words else ""
            if words and found != name:
                return f"the index names {name!r} where the FASTA has {found!r}"
            if (not words or offset - prev_end > _MAX_HEADER or header.count(b"\n") != 1
                    or not header.endswith(b"\n")):
                return f"no header line of {name!r} ends at byte {offset:,}"
            # one past the last base: (length - 1) // line_bases whole lines before its line
            line, column = divmod(length - 1, line_bases) if length else (0, -1)
            end = offset + line * line_bytes + column + 1
            if end > size:
                return f"{name}: the index says {length:,} bp, more than the FASTA holds"
            fh.seek(max(offset, end - 1))
            around = fh.read(_MAX_HEADER if not length else 1 + 256)
            last, after = (around[:1], around[1:]) if length else (b"", around)
            rest_text = after.lstrip()
            if last in (b"\n", b"\r", b">") or (rest_text and not rest_text.startswith(b">")):
                return f"{name}: its sequence does not end where the index's length ({length:,} bp) puts it"
            prev_end = end
        fh.seek(prev_end)
        tail = fh.read(_MAX_HEADER).lstrip()
    if tail.startswith(b">"):
        words = tail[1:].split()
        extra = words[0].decode("utf-8", "replace") if words else ""
        return f"the FASTA has a record {extra!r} the index lacks (added after indexing?)"
    if tail:
        return "the FASTA goes on after the last indexed record"
    return None


def _cached_index(path: Path) -> Path:
    """Where this user's index of ``path`` lives when it cannot (or must not) be beside it."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    cache = _cache_dir() / f"{key}_{path.name}.fai"
    cache.parent.mkdir(parents=True, exist_ok=True)
    return cache


def open_fasta(path: PathLike) -> "pyfaidx.Fasta":
    """Open a FASTA for random access, its index checked first (:func:`index_problem`).

    A present ``.fai`` that describes the FASTA is used as is (``rebuild=False``): in a
    read-only folder, or a checkout that does not keep file times, pyfaidx would otherwise
    try to rewrite an index that only looks stale. One that does not (edited FASTA, another
    file's index) is left alone and a fresh index is built in the user cache folder, with a
    warning. A missing index is built beside the FASTA, or in the cache when the FASTA's folder
    is not writable. Errors: a missing file, a folder or a pipe, CR-only line ends, a file
    that is not FASTA, or one pyfaidx cannot index: one line naming the file.
    """
    import pyfaidx

    path = check_input_file(path, "FASTA file", random_access=True)
    compressed = _check_fasta_text(path)  # BGZF: the index's offsets are not file offsets
    fai = Path(str(path) + ".fai")
    try:
        if fai.exists():
            problem = None if compressed else index_problem(path, fai)
            if problem is None:
                with warnings.catch_warnings():  # checked above: its time says nothing (a checkout resets it)
                    warnings.filterwarnings("ignore", "Index file .* is older than FASTA", RuntimeWarning)
                    return _opened(pyfaidx.Fasta(str(path), rebuild=False, sequence_always_upper=True), path)
            cache = _cached_index(path)
            if cache.exists() and index_problem(path, cache) is not None:
                cache.unlink()
            warnings.warn(f"{fai} does not match {path} ({problem}); using an index built in {cache} "
                          f"(rebuild {fai.name} to silence this: delete it, or samtools faidx {path.name})",
                          UserWarning, stacklevel=2)
            return _opened(pyfaidx.Fasta(str(path), indexname=str(cache), sequence_always_upper=True), path)
        if os.access(path.parent, os.W_OK):
            return _opened(pyfaidx.Fasta(str(path), sequence_always_upper=True), path)
        cache = _cached_index(path)
        if cache.exists() and not compressed and index_problem(path, cache) is not None:
            cache.unlink()  # built for an earlier version of the file
        return _opened(pyfaidx.Fasta(str(path), indexname=str(cache), sequence_always_upper=True), path)
    except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot index FASTA: {' '.join(str(e).split())}") from e


def _opened(fa, path: Path):
    """An opened FASTA with at least one sequence."""
    if not len(fa.keys()):
        fa.close()
        raise ValueError(f"{path}: no sequences in the FASTA")
    return fa


def fetch(fasta: "pyfaidx.Fasta", chrom: str, start: int, end: int) -> str:
    """Upper-case sequence of [start, end) (0-based), with N for positions off the chromosome.

    Every base read from the file is checked: a character that is not A, C, G, T, N or an
    IUPAC code is a ValueError naming the FASTA and its genome position (1-based)."""
    if chrom not in fasta:
        raise KeyError(f"{fasta.filename}: no sequence named {chrom!r}")
    size = len(fasta[chrom])
    left, right = max(0, start), min(size, end)
    seq = str(fasta[chrom][left:right]) if right > left else ""
    bad = first_invalid(seq)
    if bad is not None:
        raise ValueError(f"{fasta.filename}: invalid base {seq[bad]!r} at {chrom}:{left + bad + 1:,} "
                         "(1-based; expected A, C, G, T, N or an IUPAC code)")
    return "N" * (left - start) + seq + "N" * max(0, end - max(right, start))


def check_span(fasta, chrom: str, start: int, end: int, what: str) -> None:
    """``[start, end)`` (0-based) lies on ``chrom`` of the FASTA, else a ValueError beginning
    with ``what`` (where the span came from: a BED line, an argument). Windows around a span
    may reach off the chromosome (padded with N); the span itself may not."""
    if chrom not in fasta:
        raise ValueError(f"{what}: no sequence {chrom!r} in {fasta.filename}")
    size = len(fasta[chrom])
    if start < 0 or end > size or end < start:
        where = ("starts before" if start < 0 else "ends before its start on" if end < start
                 else "lies past the end of" if start >= size else "runs past the end of")
        raise ValueError(f"{what}: {where} {chrom} ({size:,} bp)")


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
    """BED3+ lines -> regions (a :class:`BedRegions` list); comments, ``track`` and
    ``browser`` lines skipped. The file is read once, so a pipe (``/dev/stdin``) works.

    A malformed line raises ValueError naming the file and line number.
    """
    path = os.fspath(path)
    check_input_file(path, "BED file")
    regions = BedRegions([], path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: line {lineno}: not UTF-8 text") from None
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\r\n").split("\t")
            try:
                if len(cols) < 3:
                    raise ValueError("expected at least 3 tab-separated columns")
                if not cols[0].strip() or cols[0] != cols[0].strip():
                    raise ValueError(f"bad chromosome name {cols[0]!r}")
                try:
                    start, end = int(cols[1]), int(cols[2])
                except ValueError:
                    raise ValueError(f"start and end must be integers, got {cols[1]!r} and {cols[2]!r}") from None
                if start < 0 or end < start:
                    raise ValueError(f"bad interval {start}-{end}")
                strand = cols[5].strip() if len(cols) > 5 else "."
                if strand not in ("+", "-", ".", ""):
                    raise ValueError(f"bad strand {cols[5]!r} in column 6 (expected +, - or .)")
            except ValueError as e:
                raise ValueError(f"{path}: line {lineno}: {e}") from None
            name = cols[3] if len(cols) > 3 and cols[3] else f"{cols[0]}:{start}-{end}"
            regions.append(Region(cols[0], start, end, name, strand or ".", lineno))
    return regions


class BedRegions(list):
    """The regions of a BED file (:func:`read_bed`), which remember the file for messages."""

    def __init__(self, regions, source: str):
        super().__init__(regions)
        self.source = source


def as_regions(regions) -> Tuple[List[Region], str]:
    """A BED path, the regions :func:`read_bed` returned, or a list of (chrom, start, end[,
    name[, strand]]) tuples (strand +, - or .) -> (regions, what for messages)."""
    if isinstance(regions, (str, bytes, os.PathLike)):
        return read_bed(regions), os.fspath(regions)
    if isinstance(regions, BedRegions):
        return regions, regions.source
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
        strand = str(r[4]).strip() if len(r) > 4 else "."
        if strand not in ("+", "-", "."):
            raise ValueError(f"region {i}: bad strand {r[4]!r} (expected +, - or .)")
        out.append(Region(str(chrom), start, end, str(r[3]) if len(r) > 3 else f"{chrom}:{start}-{end}", strand))
    return out, "regions"


def describe(r: Region, i: int, source: str) -> str:
    """Where a region came from, for messages: the BED line, or its position in a list."""
    where = f"{source}: line {r.line}" if r.line else f"region {i}"
    return f"{where} ({r.chrom}:{r.start}-{r.end})"


def check_contigs(fasta, regions: List[Region], source: str) -> None:
    """Every region lies on a chromosome of the FASTA (:func:`check_span`), else a
    ValueError naming the region (its BED line)."""
    for i, r in enumerate(regions):
        check_span(fasta, r.chrom, r.start, r.end, describe(r, i, source))


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
                if sizes[-1][1] < 1:
                    raise ValueError
            except (IndexError, ValueError):
                raise ValueError(f"{path}: line {n}: expected 'name<TAB>length' (a length >= 1)") from None
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
