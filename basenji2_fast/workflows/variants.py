"""Variant effect scores (SAD and friends), in the layout of basenji's ``basenji_sad.py``.

For every ALT allele of every VCF record, the model predicts a REF and an ALT window and
compares them. Windows, allele handling, ensembles and statistics follow basenji_sad.py
(commit e10cd3b, 2021) as documented in ``shared/docs/BASENJI2.md``:

- **Window** (L = the model's ``seq_length``, pos 1-based): genome ``[pos - L/2, pos + L/2 + d)``
  with ``d = max(0, len(REF) - len(ALT))``, N-padded off the chromosome, so the variant's first
  base lands at index ``L/2 - 1``. N (genome, padding, ensemble shifts) is 0.25 in each channel.
- **REF check**: the genome there must equal REF (case-insensitive). If it does not, but
  equals one of the record's ALTs, the VCF REF is spliced into the reference sequence (a
  warning; alleles and the SAD sign stay as in the VCF). Otherwise the variant is skipped.
- **Alleles**: REF sequence = the window; ALT sequence = REF replaced by ALT. Each is brought
  back to L: longer -> trim ``(len - L) // 2`` on the left and the rest on the right; shorter ->
  pad N, ``(L - len) // 2`` on the left, the rest on the right (so indel REF and ALT windows
  are offset by k//2, as in basenji).
- **Ensembles**: ``--rc`` / ``--shifts`` as basenji (Model.predict: 0.25 padding for shifts,
  reverse complement flipped back, ``strand_pair`` tracks swapped); the mean over passes.
- **Statistics** (float64 from the float32 ensemble-mean predictions ``ref``, ``alt`` [bins,
  tracks]; p = ``--pseudo``, default 1):

  =======  ==================================================================================
  SAD      ``sum_b alt - sum_b ref``
  SAX      ``(alt - ref)[b*]``, b* = first bin maximising ``|alt - ref|``
  SADR     ``log2(sum_b alt + p) - log2(sum_b ref + p)``
  SAXR     ``lr[b*]``, ``lr = log2(alt + p) - log2(ref + p)``, b* = first bin maximising ``|lr|``
  SAR      ``sum_b lr``
  REF/ALT  the prediction profiles ``[bins, tracks]``
  D1       ``sum_b |alt - ref|``                                   (newer basenji/baskerville)
  D2       ``sqrt(sum_b (alt - ref)^2)``
  logD2    ``sqrt(sum_b (log2(alt + 1) - log2(ref + 1))^2)`` (pseudocount fixed at 1, as basenji)
  JS       basenji/baskerville's "JS": per track, ``c`` = 25th percentile of ``ref`` over bins;
           ``r = (ref + c) / sum(ref + c)``, ``a = (alt + c) / sum(alt + c)``;
           ``JS = (KL(r || a) + KL(a || r)) / 2`` in nats (``scipy.special.rel_entr`` summed
           over bins). This is the symmetrised Kullback-Leibler divergence basenji names JS,
           not the textbook Jensen-Shannon divergence.
  =======  ==================================================================================

``OUTDIR/sad.h5`` (``--format h5``, the default) holds what basenji's does, with its names,
dtypes and shapes (N = scored alleles, T = tracks, B = bins): ``snp, chr, ref_allele,
alt_allele`` (N,) and ``target_ids, target_labels`` (T,) as fixed-length bytes ``S<longest>``;
``pos`` (N,) uint32 (1-based); one float16 (N, T) dataset per statistic (``REF``/``ALT``: (N, B,
T)), values clipped to +-65504 before the cast; ``percentiles`` (279,) float64 (0.001..0.099
by 0.001, 0.10..0.89 by 0.01, 0.900..0.999 by 0.001) and ``<STAT>_pct`` (T, 279) float16 for
every statistic but REF/ALT: numpy's linear percentiles of the *stored float16* column.
``target_ids`` / ``target_labels`` are the targets file's ``identifier`` / ``description``
(``-t``), else ``t<column>`` and ``''``. ``chr`` is the VCF's chromosome name as written.
Rows follow the VCF (one per ALT allele, in ALT order). With no scored allele every dataset
is present with 0 rows and the ``_pct`` tables are NaN.

``--format tsv`` writes ``OUTDIR/sad.tsv`` instead: one line per scored allele and track
(long format, as older basenji's ``sad_table.txt``; ``pandas.read_csv(path, sep="\\t")``
then ``pivot`` by ``target_id`` if a wide table is wanted), columns ``snp chr pos ref_allele
alt_allele target_index target_id target_label <STAT>...``; REF/ALT appear as ``REF_sum`` /
``ALT_sum`` (the profile summed over bins). Numbers are float32 (``%.6g``), not float16.

Where the 2021 basenji_sad.py is wrong, this module does what it meant to do:

1. **Multi-allelic records**: each ALT gets its own row (basenji scores only the first ALT in
   the metadata and misaligns every later row by one sequence).
2. **Unscorable variants are skipped cleanly**: a REF that matches neither the genome nor an
   ALT, a REF or ALT with characters other than A/C/G/T/N (IUPAC codes), a symbolic ALT
   (``<DEL>``, ``*``, breakends, missing ``.``), an ALT equal to REF, a chromosome missing
   from the FASTA (or an empty CHROM), a position past the chromosome end or a REF running past
   it, and a line htslib cannot read as a record (blank, fewer than 8 columns, a POS that is
   not an integer, bytes that are not UTF-8): a warning (one each for the first 20, then one
   summary), one line in ``OUTDIR/skipped.tsv`` (``line chrom pos id ref alt reason``, ``.``
   for an unreadable line's fields; header only when nothing was skipped), and no row. A file
   without a VCF header, a BCF file or a damaged gzip stream is an error naming the file (and
   ``line N`` where the stream breaks), raised by the first pass, before anything is predicted
   or written.
   Later rows are never shifted (basenji silently pairs the wrong sequences, then crashes).
3. **Chromosome ends**: the window is N-padded to its full length on either side (basenji
   pads the right end one base short, shifting even-length indels near the end by one, and
   crashes at POS = L/2 - 1). ``--basenji-edge-padding`` (``basenji_edge=True``) reproduces
   the one-short right padding, only to compare with basenji's files.
4. ``d`` is per ALT allele (``len(REF) - len(ALT)``), so a multi-allelic record scores each
   ALT exactly as the equivalent biallelic record; basenji uses the longest ALT of the record
   (identical for biallelic records).

Kept as basenji: duplicate IDs are written as is; ID ``.`` becomes ``chr:pos``.

The VCF is parsed by htslib through pysam (:func:`read_vcf`: plain, gzipped or bgzipped; any
record order; CHROM, POS, ID, REF and ALT are read), in two streaming passes:
the first counts the rows and the longest strings (so the HDF5 datasets are preallocated,
contiguous, as basenji's); the second predicts batch by batch and writes each batch into a
temporary file renamed to ``sad.h5`` when complete. The ``_pct`` tables are computed at the
end, reading blocks of columns (bounded memory). A VCF chromosome missing from the FASTA that
is there with (or without) a ``chr`` prefix is used under that name, with one warning.

**Resume.** Each batch's rows (metadata and every statistic, already in the output's dtype:
float16 for h5, float32 for tsv) are committed to ``OUTDIR/.sad_partial/<batch>.npz`` (written
under a temporary name, renamed), beside ``job.json``: the job's options and input identities
(VCF path, size, mtime and sha256 of its first MiB; the model's weights sha256; FASTA path,
size and chromosomes; head, tracks, statistics, ensemble, pseudocount, format, edge padding
and batch size). A rerun with the same options re-reads the VCF but predicts only the
batches not committed; when all are, ``sad.h5`` / ``sad.tsv`` is assembled from them in row
order (one batch in memory at a time), then ``skipped.tsv`` and ``OUTDIR/sad.options.json``
(the finished job's record) are written and the partials removed. The files are identical to
an uninterrupted run's. Rerunning a finished job is a no-op; a folder holding a job (finished
or interrupted) with other options is an error unless ``--overwrite``. One run per OUTDIR
(a lock file, ``.sad.lock``, while it runs).

**Several heads** (``--head both``; ``-t HEAD=FILE`` / ``--tracks HEAD=SEL`` per head): one job
per head in ``OUTDIR/<head>/``, each exactly a single-head job of that head (files, resume,
no-op rerun), run one after the other: the incremental substitution path predicts one head
at a time, so each head reads the VCF and runs its own passes.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import threading
import warnings
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import h5py
import numpy as np
import pysam
from tqdm import tqdm

from .. import runner
from .._io import OptionError, atomic_output, canonical_sha, check_output, job_lock, read_json, to_float16, write_json
from ..cli_options import (add_batch_size_option, add_distributed_options, add_ensemble_options, add_fasta_option,
                           add_model_options, add_run_options, add_track_options, distributed_kwargs, load_model,
                           non_negative_float, one_line_errors, track_request)
from ..dna import encode
from ..genome import as_fasta, check_input_file, fasta_path, fetch
from ..model import Ensemble, TrackRequest
from ..spec import check_bool, check_positive_int, weights_sha256
from ..targets import TrackSelection, read_targets
from ..windows import engine_tracks, plan_heads, resolve_tracks

#: basenji_sad.py (2021) statistics, then the newer basenji/baskerville ones.
STATS_2021 = ("SAD", "SAX", "SADR", "SAXR", "SAR", "REF", "ALT")
STATS_NEW = ("D1", "D2", "logD2", "JS")
KNOWN_STATS = STATS_2021 + STATS_NEW
PROFILE_STATS = ("REF", "ALT")


_ALLELE = re.compile(r"^[ACGTN]+$")


def _percentiles() -> np.ndarray:
    # exactly basenji_sad.py's construction (np.arange, bit for bit)
    return np.concatenate([np.arange(0.001, 0.1, 0.001), np.arange(0.1, 0.9, 0.01), np.arange(0.9, 1, 0.001)])


#: basenji_sad.py's percentile grid (279 values).
PERCENTILES = _percentiles()


class Allele(NamedTuple):
    """One scorable ALT allele of a VCF record (one output row)."""

    line: int        # 1-based line of the record in the VCF
    chrom: str       # as in the VCF
    fasta_chrom: str  # as in the FASTA
    pos: int         # 1-based
    id: str          # VCF ID ('.' -> chrom:pos)
    ref: str         # VCF REF as written
    alt: str         # this ALT as written
    splice_alt: Optional[str]  # the ALT that matched the genome when REF did not (REF spliced in)


class Skipped(NamedTuple):
    line: int
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    reason: str


# --------------------------------------------------------------------------------------
# VCF reading

class _ChromResolver:
    """VCF chromosome -> FASTA name: exact, else with/without 'chr' when that is unambiguous."""

    def __init__(self, fasta):
        self.names = set(fasta.keys())
        self.cache: Dict[str, Optional[str]] = {}

    def __call__(self, chrom: str) -> Optional[str]:
        if chrom in self.cache:
            return self.cache[chrom]
        found = None
        if chrom in self.names:
            found = chrom
        else:
            alt = chrom[3:] if chrom.startswith("chr") else "chr" + chrom
            if alt in self.names:
                found = alt
                warnings.warn(f"VCF chromosome {chrom!r} is not in the FASTA; using the FASTA's {alt!r}",
                              UserWarning, stacklevel=3)
        self.cache[chrom] = found
        return found


class VcfRecord(NamedTuple):
    """The columns of one VCF record that scoring reads, as htslib parsed them."""

    line: int        # 1-based line in the file
    chrom: str
    pos: int         # 1-based, as written
    id: str          # as written ('.' when missing)
    ref: str
    alts: List[str]  # the ALT alleles (['.'] when missing; an empty allele reads '.')


def _open_vcf(path: str):
    """The VCF as a binary stream: plain, gzipped or bgzipped (both are gzip streams), BCF refused."""
    with open(path, "rb") as raw:
        magic = raw.read(4)
    if magic.startswith(b"BCF"):
        raise ValueError(f"{path}: a BCF file; convert it to VCF (bcftools view -Oz) to score it")
    if magic[:2] != b"\x1f\x8b":
        return open(path, "rb")
    fh = gzip.open(path, "rb")
    try:
        first = fh.peek(4)[:4]
    except (OSError, EOFError, zlib.error) as e:
        fh.close()
        raise ValueError(f"{path}: the compressed file cannot be read ({e})") from None
    if first.startswith(b"BCF"):
        fh.close()
        raise ValueError(f"{path}: a BCF file; convert it to VCF (bcftools view -Oz) to score it")
    return fh


class _VcfFeed(threading.Thread):
    """Copies a VCF's text into a pipe that htslib reads, counting lines on the way.

    Python's gzip decompresses (htslib reads a damaged or truncated plain-gzip stream as an
    endless run of failed records; gzip names it), and the count of header lines turns a
    record's index into its line number."""

    def __init__(self, path: str, fh, fd: int):
        super().__init__(daemon=True)
        self.path, self.fh, self.fd = path, fh, fd
        self.header_lines: Optional[int] = None  # set before the first record's bytes are written
        self.lines = 0  # lines written so far
        self.error: Optional[str] = None
        self.chrom_line: Optional[Tuple[int, bytes]] = None  # (line number, text) of the #CHROM line

    def run(self):
        try:
            with self.fh, os.fdopen(self.fd, "wb") as out:
                head = 0
                for line in iter(self.fh.readline, b""):
                    if not line.startswith(b"#"):
                        self.header_lines = head
                        self.lines = head + 1
                        out.write(line)
                        break
                    head += 1
                    if line.startswith(b"#CHROM"):
                        self.chrom_line = (head, line.rstrip(b"\r\n"))
                    self.lines = head
                    out.write(line)
                else:
                    self.header_lines = self.lines = head
                # read1: what decompressed so far, so that a damaged stream's error comes with
                # the count of the lines before it (read(n) drops a block that fails midway)
                for block in iter(lambda: self.fh.read1(1 << 16), b""):
                    self.lines += block.count(b"\n")
                    out.write(block)
        except BrokenPipeError:  # the reader stopped early (an error on its side)
            pass
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            self.error = f"{self.path}: line {self.lines + 1}: the compressed file is damaged or truncated ({e})"


#: The columns every VCF's #CHROM line starts with.
VCF_COLUMNS = ("CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")


def _header_problem(path: str, chrom_line: Optional[Tuple[int, bytes]]) -> str:
    """Why htslib refused the header: no #CHROM line, or one without the 8 required columns."""
    if chrom_line is None:
        return f"{path}: not a VCF file (no header ending in a #CHROM line)"
    line, text = chrom_line
    cols = text.lstrip(b"#").split(b"\t")
    if [c.decode("utf-8", "replace") for c in cols[:8]] != list(VCF_COLUMNS):
        have = (f"it has {' '.join(c.decode('utf-8', 'replace') for c in cols)}" if b"\t" in text
                else "it is not tab-separated")
        return (f"{path}: line {line}: the #CHROM line lacks the {len(VCF_COLUMNS)} required tab-separated columns "
                f"{' '.join(VCF_COLUMNS)} ({have})")
    return f"{path}: line {line}: htslib cannot read the VCF header above this #CHROM line"


def read_vcf(vcf_path) -> Iterator[Tuple[Optional[VcfRecord], Optional[str], int]]:
    """The VCF's records as ``(record, None, line)``, or ``(None, why, line)`` for a line
    htslib cannot read as a record (a blank line, fewer than 8 columns, a POS that is not an
    integer, bytes that are not UTF-8): skipped by convention, the caller lists them with a
    warning.

    htslib (pysam) parses the records, streaming (plain, gzipped or bgzipped; any order;
    memory independent of the file's length), from the text a :class:`_VcfFeed` thread passes
    it. No header (a ``#CHROM`` line), a BCF file, or a damaged or truncated compressed file is
    a ValueError naming the file (and the line, where known).
    """
    path = os.fspath(vcf_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: VCF file not found")
    if os.path.isdir(path):
        raise ValueError(f"{path}: a folder, not a VCF file")
    pysam.set_verbosity(0)  # htslib's own messages would repeat ours on stderr
    rfd, wfd = os.pipe()
    feed = _VcfFeed(path, _open_vcf(path), wfd)
    feed.start()
    reader = os.fdopen(rfd, "rb")
    vcf = None
    try:
        try:
            vcf = pysam.VariantFile(reader)
        except (ValueError, OSError):
            reader.close()  # a feed blocked on a full pipe stops at the broken pipe
            feed.join()
            raise ValueError(feed.error or _header_problem(path, feed.chrom_line)) from None
        records = iter(vcf)
        n = 0
        while True:
            n += 1
            try:
                rec = next(records)
            except StopIteration:
                break
            except OSError:
                yield None, "not a VCF record (htslib cannot parse the line)", feed.header_lines + n
                continue
            line = feed.header_lines + n
            try:
                record = VcfRecord(line, rec.chrom, rec.pos, rec.id or ".", rec.ref or ".", list(rec.alts or (".",)))
            except UnicodeDecodeError:
                yield None, "not a VCF record (bytes that are not UTF-8 text)", line
                continue
            yield record, None, line
        feed.join()  # the feed has written everything (htslib read to the end) or stopped on an error
        if feed.error:
            raise ValueError(feed.error)
    finally:
        if vcf is not None:
            vcf.close()
        reader.close()  # a feed still writing stops at the broken pipe
        feed.join()


def _check_vcf_file(vcf) -> None:
    """A VCF that a ``sad`` job can use: a regular file (it is read twice, counting then
    scoring, and its identity is recorded for resuming; a pipe can be read once)."""
    check_input_file(vcf, "VCF file")
    if not os.path.isfile(os.fspath(vcf)):
        raise ValueError(f"{os.fspath(vcf)}: not a regular file (a pipe?); sad reads the VCF twice (counting, then "
                         "scoring) and records it to resume, so give a file")


def _alleles_of(rec: VcfRecord, fasta, resolve: _ChromResolver, L: int,
                ) -> Iterator[Tuple[Optional[Allele], Optional[Skipped]]]:
    """Classify each ALT of one record: (Allele, None) to score or (None, Skipped)."""
    line, chrom, pos, ref = rec.line, rec.chrom, rec.pos, rec.ref
    vid = rec.id if rec.id not in ("", ".") else f"{chrom}:{pos}"
    alts = rec.alts

    def skip(alt, reason):
        return None, Skipped(line, chrom, pos, vid, ref, alt, reason)

    fchrom = resolve(chrom) if chrom else None
    if fchrom is None:
        for a in alts:
            yield skip(a, f"chromosome {chrom} not in the FASTA" if chrom else "empty CHROM")
        return
    size = len(fasta[fchrom])
    if pos < 1 or pos > size:
        for a in alts:
            yield skip(a, f"position {pos} outside {fchrom} (length {size})")
        return
    REF = ref.upper()
    if not _ALLELE.match(REF):
        for a in alts:
            yield skip(a, "missing REF ('.')" if REF == "." else "REF has characters other than A,C,G,T,N")
        return
    if pos - 1 + len(REF) > size:
        for a in alts:
            yield skip(a, f"REF runs past the end of {fchrom} (length {size})")
        return
    clean = [a.upper() for a in alts if _ALLELE.match(a.upper())]
    genome = None
    for a in alts:
        A = a.upper()
        if not _ALLELE.match(A):
            yield skip(a, "missing ALT ('.')" if a == "." else
                       "symbolic ALT" if (a.startswith("<") or a == "*" or "[" in a or "]" in a)
                       else "ALT has characters other than A,C,G,T,N")
            continue
        if A == REF:
            yield skip(a, "ALT equals REF (nothing to score)")
            continue
        if genome is None:
            longest = max(len(REF), max(len(c) for c in clean))
            genome = fetch(fasta, fchrom, pos - 1, pos - 1 + longest)
        if genome[:len(REF)] == REF:
            yield Allele(line, chrom, fchrom, pos, vid, ref, a, None), None
            continue
        match = next((c for c in clean if genome[:len(c)] == c), None)
        if match is None:
            yield skip(a, f"REF matches neither the genome ({genome[:len(REF)]}) nor an ALT")
        else:
            yield Allele(line, chrom, fchrom, pos, vid, ref, a, match), None


def _iter_alleles(vcf_path, fasta, L: int) -> Iterator[Tuple[Optional[Allele], Optional[Skipped]]]:
    resolve = _ChromResolver(fasta)
    for rec, why, line in read_vcf(vcf_path):
        if rec is None:
            yield None, Skipped(line, ".", ".", ".", ".", ".", why)
        else:
            yield from _alleles_of(rec, fasta, resolve, L)


# --------------------------------------------------------------------------------------
# Sequences

def _to_length(seq: str, L: int) -> str:
    """basenji's dna_length_1hot: trim (len-L)//2 left, the rest right; or pad N, floor half left."""
    n = len(seq)
    if n > L:
        t = (n - L) // 2
        return seq[t:t + L]
    if n < L:
        p = (L - n) // 2
        return "N" * p + seq + "N" * (L - n - p)
    return seq


def allele_sequences(fasta, allele: Allele, L: int, basenji_edge: bool = False) -> Tuple[str, str]:
    """(REF window, ALT window), each L bp, as basenji_sad.py builds them (module docstring).

    ``basenji_edge``: reproduce the 2021 off-by-one at a chromosome's right end (the window is
    padded to L + d - 1 instead of L + d before centring), for bit-compatible comparisons.
    """
    REF, ALT = allele.ref.upper(), allele.alt.upper()
    d = max(0, len(REF) - len(ALT))
    c = L // 2 - 1
    end = allele.pos + L // 2 + d
    seq = fetch(fasta, allele.fasta_chrom, allele.pos - L // 2, end)
    if basenji_edge and end > len(fasta[allele.fasta_chrom]):
        seq = seq[:-1]
    if allele.splice_alt is not None:
        seq = seq[:c] + REF + seq[c + len(allele.splice_alt):]
    alt_seq = seq[:c] + ALT + seq[c + len(REF):]
    return _to_length(seq, L), _to_length(alt_seq, L)


# --------------------------------------------------------------------------------------
# Prediction and statistics

def _predict_alleles(model, ref_codes: np.ndarray, alt_codes: np.ndarray, head: str, sel: TrackSelection,
                     ensemble: Ensemble) -> Tuple[np.ndarray, np.ndarray]:
    """REF and ALT predictions of a batch: uint8 codes [B, L] each -> float32 [B, bins, T] each.

    The one place predictions come from (N is 0.25: ``ensemble.n_encoding`` is "uniform").
    Identical REF windows in the batch (e.g. the ALTs of one multi-allelic record) are
    predicted once.
    """
    tracks, pair = engine_tracks(model, head, sel, ensemble.rc)
    B = len(ref_codes)
    keys: Dict[bytes, int] = {}
    ref_idx = np.empty(B, np.intp)
    uniq = []
    for i in range(B):
        k = ref_codes[i].tobytes()
        j = keys.get(k)
        if j is None:
            j = keys[k] = len(uniq)
            uniq.append(i)
        ref_idx[i] = j
    # SNPs (ALT window = its REF window with one base changed) go the incremental way: one
    # pass of the REF window, then only each mutation's receptive-field cone, with results
    # identical to full passes. Indels shift the window, so they get full passes.
    out_ref: List[Optional[np.ndarray]] = [None] * len(uniq)
    out_alt: List[Optional[np.ndarray]] = [None] * B
    snps: Dict[int, List[Tuple[int, int]]] = {}
    for i in range(B):
        diff = np.flatnonzero(ref_codes[i] != alt_codes[i])
        if diff.size == 1:
            snps.setdefault(int(ref_idx[i]), []).append((i, int(diff[0])))
    for j, items in snps.items():
        rows = [i for i, _ in items]
        pos = np.array([q for _, q in items], np.int64)
        ref, alts = model.predict_substitutions(ref_codes[uniq[j]], pos, alt_codes[rows, pos], head=head,
                                                tracks=tracks, rc=ensemble.rc, shifts=ensemble.shifts,
                                                n_encoding=ensemble.n_encoding, strand_pair=pair)
        out_ref[j] = ref
        for k, i in enumerate(rows):
            out_alt[i] = alts[k]
    need_ref = [j for j in range(len(uniq)) if out_ref[j] is None]
    need_alt = [i for i in range(B) if out_alt[i] is None]
    if need_ref or need_alt:
        codes = np.concatenate([ref_codes[[uniq[j] for j in need_ref]], alt_codes[need_alt]])
        p = model.predict(codes, head=head, tracks=tracks, strand_pair=pair, **ensemble.options())
        for k, j in enumerate(need_ref):
            out_ref[j] = p[k]
        for k, i in enumerate(need_alt):
            out_alt[i] = p[len(need_ref) + k]
    return np.stack(out_ref)[ref_idx], np.stack(out_alt)


def _rel_entr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scipy.special.rel_entr: x log(x/y) (0 for x == 0, inf for y == 0 < x)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x * np.log(x / y)
    out = np.where(x == 0, 0.0, out)
    return np.where((x > 0) & (y == 0), np.inf, out)


def compute_stats(ref: np.ndarray, alt: np.ndarray, stats: Sequence[str], pseudo: float = 1.0) -> Dict[str, np.ndarray]:
    """Statistics of a batch: ref, alt [B, bins, T] -> {stat: [B, T] (REF/ALT: [B, bins, T])}, float64."""
    ref = np.asarray(ref, np.float64)
    alt = np.asarray(alt, np.float64)
    out: Dict[str, np.ndarray] = {}
    B, _, T = ref.shape
    take = lambda a, b: np.take_along_axis(a, b[:, None, :], axis=1)[:, 0, :]  # noqa: E731
    diff = alt - ref
    lr = None
    for s in stats:
        if s == "SAD":
            out[s] = alt.sum(axis=1) - ref.sum(axis=1)
        elif s == "SAX":
            out[s] = take(diff, np.abs(diff).argmax(axis=1))
        elif s == "SADR":
            out[s] = np.log2(alt.sum(axis=1) + pseudo) - np.log2(ref.sum(axis=1) + pseudo)
        elif s in ("SAXR", "SAR"):
            if lr is None:
                lr = np.log2(alt + pseudo) - np.log2(ref + pseudo)
            out[s] = take(lr, np.abs(lr).argmax(axis=1)) if s == "SAXR" else lr.sum(axis=1)
        elif s == "REF":
            out[s] = ref
        elif s == "ALT":
            out[s] = alt
        elif s == "D1":
            out[s] = np.abs(diff).sum(axis=1)
        elif s == "D2":
            out[s] = np.sqrt((diff ** 2).sum(axis=1))
        elif s == "logD2":
            out[s] = np.sqrt(((np.log2(alt + 1) - np.log2(ref + 1)) ** 2).sum(axis=1))
        elif s == "JS":
            c = np.percentile(ref, 25, axis=1, keepdims=True)
            r = ref + c
            r = r / r.sum(axis=1, keepdims=True)
            a = alt + c
            a = a / a.sum(axis=1, keepdims=True)
            out[s] = (_rel_entr(r, a).sum(axis=1) + _rel_entr(a, r).sum(axis=1)) / 2
        else:
            raise ValueError(f"unknown statistic {s!r}; known: {', '.join(KNOWN_STATS)}")
    return out


def _parse_stats(stats) -> Tuple[str, ...]:
    if isinstance(stats, str):
        stats = [s.strip() for s in stats.split(",") if s.strip()]
    stats = tuple(stats)
    if not stats:
        raise ValueError("no statistics requested")
    for s in stats:
        if s not in KNOWN_STATS:
            raise ValueError(f"unknown statistic {s!r}; known: {', '.join(KNOWN_STATS)}")
    if len(set(stats)) != len(stats):
        raise ValueError(f"statistic listed twice in {','.join(stats)}")
    return stats


# --------------------------------------------------------------------------------------
# The scoring loop

class Scoring(NamedTuple):
    """How alleles are scored: the ensemble (``n_encoding`` "uniform": N is 0.25, as
    basenji_sad.py; ``batch_size`` alleles per batch), the pseudocount of SADR/SAXR/SAR, and
    basenji 2021's one-short edge padding (only to compare with its files)."""

    ensemble: Ensemble
    pseudo: float = 1.0
    basenji_edge: bool = False

    @classmethod
    def of(cls, rc=False, shifts=(0,), batch_size: int = 8, pseudo: float = 1.0,
           basenji_edge: bool = False) -> "Scoring":
        if not (isinstance(pseudo, (int, float, np.integer, np.floating)) and 0 <= pseudo < float("inf")):
            raise ValueError(f"pseudo={pseudo!r}: the pseudocount must be a finite number >= 0")
        return cls(Ensemble(rc, shifts, "uniform", check_positive_int("batch_size", batch_size)), float(pseudo),
                   check_bool("basenji_edge", basenji_edge))


@dataclass
class _Setup:
    fasta: object
    head: str
    sel: TrackSelection
    stats: Tuple[str, ...]
    labels: List[str]


def _setup(model, fasta, head, tracks, targets, stats) -> _Setup:
    fa = as_fasta(fasta)
    stats = _parse_stats(stats)
    if targets is not None and not hasattr(targets, "identifier"):
        targets = read_targets(targets)
    head, sel = resolve_tracks(model, head, tracks, targets)
    labels = list(sel.labels) if targets is not None else [""] * len(sel)
    return _Setup(fa, head, sel, stats, labels)


def _allele_batches(su: _Setup, vcf, L: int, batch_size: int,
                    on_skip: Callable[[Skipped], None]) -> Iterator[List[Allele]]:
    """The VCF's scorable alleles in batches of ``batch_size`` (the last may be shorter)."""
    batch: List[Allele] = []
    for allele, skipped in _iter_alleles(vcf, su.fasta, L):
        if skipped is not None:
            on_skip(skipped)
            continue
        if allele.splice_alt is not None:
            warnings.warn(f"{allele.id} ({allele.chrom}:{allele.pos}): the genome matches ALT "
                          f"{allele.splice_alt}, not REF {allele.ref}; the reference sequence gets the VCF REF "
                          "spliced in (as basenji_sad.py)", UserWarning, stacklevel=2)
        batch.append(allele)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _score_batch(model, su: _Setup, batch: List[Allele], scoring: Scoring) -> Dict[str, np.ndarray]:
    """Predict one batch of alleles: {stat: float64 array}."""
    L = model.seq_length
    refs, alts = [], []
    for a in batch:
        r, x = allele_sequences(su.fasta, a, L, scoring.basenji_edge)
        what = f"{a.chrom}:{a.pos} {a.id}"
        refs.append(encode(r, what=what))
        alts.append(encode(x, what=what))
    rp, ap = _predict_alleles(model, np.stack(refs), np.stack(alts), su.head, su.sel, scoring.ensemble)
    return compute_stats(rp, ap, su.stats, scoring.pseudo)


def _batches(model, su: _Setup, vcf, scoring: Scoring,
             on_skip: Callable[[Skipped], None]) -> Iterator[Tuple[List[Allele], Dict[str, np.ndarray]]]:
    """Score the VCF batch by batch: yields (alleles, {stat: float64 array})."""
    for batch in _allele_batches(su, vcf, model.seq_length, scoring.ensemble.batch_size, on_skip):
        yield batch, _score_batch(model, su, batch, scoring)


#: Skipped alleles warned about one by one; after that one summary warning (a large VCF may
#: skip thousands: every one is still listed in skipped.tsv / the returned list).
SKIP_WARNINGS = 20


def _warn_skip(s: Skipped, n_before: int) -> None:
    """Warn about the skipped allele ``s``, the ``n_before``-th skip of this run (0-based)."""
    if n_before < SKIP_WARNINGS:
        what = f"VCF line {s.line}" if s.chrom == "." else f"{s.id} ({s.chrom}:{s.pos} {s.ref}>{s.alt}, VCF line {s.line})"
        warnings.warn(f"skipping {what}: {s.reason}", UserWarning, stacklevel=2)
    elif n_before == SKIP_WARNINGS:
        warnings.warn(f"more than {SKIP_WARNINGS} alleles skipped; the rest are not warned about one by one "
                      "(all are listed in skipped.tsv)", UserWarning, stacklevel=2)


def score_variants(model, fasta, vcf, head: Optional[str] = None, tracks=None, targets=None,
                   stats: Sequence[str] = ("SAD",), rc: bool = False, shifts: Sequence[int] = (0,),
                   pseudo: float = 1.0, batch_size: int = 8, progress: bool = False,
                   basenji_edge: bool = False) -> dict:
    """Score every ALT allele of a VCF in memory (basenji_sad.py's numbers, float64, not float16).

    Parameters
    ----------
    model : basenji2_fast.Model
    fasta : FASTA path or open ``pyfaidx.Fasta``
    vcf : VCF path (plain or bgzipped)
    head, tracks, targets : as :func:`basenji2_fast.predict_regions`
    stats : statistic names (module docstring), e.g. ``("SAD", "SAR", "REF", "ALT")``
    rc, shifts : basenji's ``--rc`` / ``--shifts`` ensemble
    pseudo : pseudocount of SADR / SAXR / SAR
    batch_size : alleles per batch (2 x as many windows per engine call)
    basenji_edge : reproduce basenji 2021's one-base-short padding at a chromosome's right
        end (only to compare with its files; the default pads correctly)

    Returns
    -------
    dict with ``snp, chr, pos, ref_allele, alt_allele`` (lists / int array, one per scored
    allele), ``target_ids, target_labels``, ``skipped`` (list of :class:`Skipped`) and one
    array per statistic: [alleles, tracks] (REF/ALT: [alleles, bins, tracks]).
    Skipped alleles warn and are listed in ``skipped``. With several heads (``head="both"``;
    tracks/targets per head as :func:`basenji2_fast.predict_regions`): {head: that dict},
    each head scored in its own pass over the VCF (the incremental substitution path
    predicts one head at a time).
    """
    multi, reqs = plan_heads(model, head, tracks, targets)
    if multi:
        return {r.head: score_variants(model, fasta, vcf, head=r.head, tracks=r.tracks, targets=r.targets,
                                       stats=stats, rc=rc, shifts=shifts, pseudo=pseudo, batch_size=batch_size,
                                       progress=progress, basenji_edge=basenji_edge) for r in reqs}
    head, tracks, targets = reqs[0]
    su = _setup(model, fasta, head, tracks, targets, stats)
    scoring = Scoring.of(rc, shifts, batch_size, pseudo, basenji_edge)
    skipped: List[Skipped] = []

    def on_skip(s):
        _warn_skip(s, len(skipped))
        skipped.append(s)

    meta = {k: [] for k in ("snp", "chr", "pos", "ref_allele", "alt_allele")}
    parts: Dict[str, list] = {s: [] for s in su.stats}
    with tqdm(unit="variant", disable=not progress, desc="sad") as bar:
        for batch, st in _batches(model, su, vcf, scoring, on_skip):
            for a in batch:
                meta["snp"].append(a.id)
                meta["chr"].append(a.chrom)
                meta["pos"].append(a.pos)
                meta["ref_allele"].append(a.ref)
                meta["alt_allele"].append(a.alt)
            for s in su.stats:
                parts[s].append(st[s])
            bar.update(len(batch))
    T, nb = len(su.sel), model.n_bins
    out = dict(meta)
    out["pos"] = np.array(meta["pos"], np.int64)
    for s in su.stats:
        empty = (0, nb, T) if s in PROFILE_STATS else (0, T)
        out[s] = np.concatenate(parts[s]) if parts[s] else np.zeros(empty)
    out["target_ids"] = list(su.sel.identifiers)
    out["target_labels"] = su.labels
    out["skipped"] = skipped
    return out


def _bytes_array(values: List[str], width: int) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=f"S{max(1, width)}")


def _count(vcf, fasta, L) -> Tuple[int, Dict[str, int]]:
    """First pass: scored alleles and the longest value of each string dataset."""
    n = 0
    w = {"snp": 1, "chr": 1, "ref_allele": 1, "alt_allele": 1}
    for allele, _ in _iter_alleles(vcf, fasta, L):
        if allele is None:
            continue
        n += 1
        w["snp"] = max(w["snp"], len(allele.id.encode()))
        w["chr"] = max(w["chr"], len(allele.chrom.encode()))
        w["ref_allele"] = max(w["ref_allele"], len(allele.ref.encode()))
        w["alt_allele"] = max(w["alt_allele"], len(allele.alt.encode()))
    return n, w


def _write_pct(h5: h5py.File, stats: Sequence[str], n_rows: int, T: int, block_bytes: int = 256 << 20) -> None:
    h5.create_dataset("percentiles", data=PERCENTILES)
    cols = max(1, block_bytes // max(1, n_rows * 2))
    for s in stats:
        if s in PROFILE_STATS:
            continue
        pct = np.full((T, len(PERCENTILES)), np.nan, np.float16)
        if n_rows:
            ds = h5[s]
            for t0 in range(0, T, cols):
                block = ds[:, t0:t0 + cols]  # the stored float16 values
                pct[t0:t0 + block.shape[1]] = np.percentile(block, 100 * PERCENTILES, axis=0).T.astype(np.float16)
        h5.create_dataset(f"{s}_pct", data=pct)


# --------------------------------------------------------------------------------------
# Resumable writing

SAD_PARTIAL = ".sad_partial"
SAD_OPTIONS = "sad.options.json"
SAD_LOCK = ".sad.lock"
SAD_JOB_FORMAT = "basenji2-fast sad"
SAD_JOB_VERSION = 1
_META = ("snp", "chr", "ref_allele", "alt_allele")


def _file_identity(path) -> dict:
    """A file's identity for the job record: resolved path, size, mtime, sha256 of the first MiB."""
    p = Path(os.fsdecode(os.fspath(path))).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
    return {"path": str(p), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_first_mib": h.hexdigest()}


def _sad_job(model, fasta, vcf, su: _Setup, scoring: Scoring, fmt: str) -> dict:
    """Everything that changes the output files' bytes (the batch size too: it sets which
    windows are predicted together, and the batches the partials hold)."""
    rc, shifts = scoring.ensemble.rc, scoring.ensemble.shifts
    fpath = fasta if isinstance(fasta, (str, bytes, os.PathLike)) else getattr(su.fasta, "filename", None)
    fa_id: dict = {"chromosomes": [[n, len(su.fasta[n])] for n in su.fasta.keys()]}
    if fpath is not None:
        fp = Path(os.fsdecode(os.fspath(fpath))).resolve()
        fa_id["path"] = str(fp)
        fa_id["bytes"] = fp.stat().st_size if fp.is_file() else None
    sel = su.sel
    return {
        "job_format": SAD_JOB_FORMAT, "job_format_version": SAD_JOB_VERSION,
        "model": {"weights_sha256": weights_sha256(model.spec), "seq_length": int(model.seq_length),
                  "n_bins": int(model.n_bins)},
        "vcf": _file_identity(vcf), "fasta": fa_id, "head": su.head,
        "tracks": {"columns": [int(c) for c in sel.columns], "identifiers": list(sel.identifiers),
                   "labels": list(su.labels),
                   "strand_pair": [int(c) for c in sel.strand_pair] if rc and sel.strand_pair is not None else None},
        "stats": list(su.stats), "rc": bool(rc), "shifts": [int(x) for x in shifts], "pseudo": float(scoring.pseudo),
        "output_format": fmt, "basenji_edge_padding": scoring.basenji_edge,
        "batch_size": int(scoring.ensemble.batch_size),
    }


def _partial_arrays(batch: List[Allele], st: Dict[str, np.ndarray], stats: Sequence[str], fmt: str) -> dict:
    """What the output holds for a batch, already in the output's dtype (float16 for h5,
    float32 for tsv, REF/ALT summed over bins for tsv), so assembly only copies."""
    out = {"snp": np.array([a.id for a in batch]), "chr": np.array([a.chrom for a in batch]),
           "ref_allele": np.array([a.ref for a in batch]), "alt_allele": np.array([a.alt for a in batch]),
           "pos": np.array([a.pos for a in batch], np.int64)}
    for s in stats:
        if fmt == "h5":
            out[f"stat_{s}"] = to_float16(st[s])
        else:
            out[f"stat_{s}"] = (st[s].sum(axis=1) if s in PROFILE_STATS else st[s]).astype(np.float32)
    return out


def _commit_batch(model, part: Path, su: _Setup, batch: List[Allele], scoring: Scoring, fmt: str) -> None:
    """Score one batch and commit ``part``: the unit of work of the single-process loop and of
    a distributed task."""
    runner.save_task(part, **_partial_arrays(batch, _score_batch(model, su, batch, scoring), su.stats, fmt))


def batch_task(model, path: Path, fasta: str, head: str, sel: TrackSelection, stats: Tuple[str, ...],
               batch: List[Allele], scoring: Scoring, fmt: str) -> None:
    """One batch of alleles -> ``path`` (a distributed task: the file a single-process run commits)."""
    _commit_batch(model, path, _setup(model, runner.worker_fasta(fasta), head, sel, None, stats), batch, scoring, fmt)


def _assemble_h5(path: Path, partial: Path, su: _Setup, n_batches: int, n_rows: int, widths: Dict[str, int],
                 nb: int, T: int) -> None:
    """sad.h5 from the committed partials, in row order, one batch in memory at a time."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("target_ids", data=_bytes_array(list(su.sel.identifiers),
                                                          max(len(x.encode()) for x in su.sel.identifiers)))
        h5.create_dataset("target_labels", data=_bytes_array(su.labels, max(len(x.encode()) for x in su.labels)))
        meta = {k: h5.create_dataset(k, (n_rows,), dtype=f"S{widths[k]}") for k in widths}
        pos = h5.create_dataset("pos", (n_rows,), dtype="uint32")
        ds = {s: h5.create_dataset(s, (n_rows, nb, T) if s in PROFILE_STATS else (n_rows, T), dtype="float16")
              for s in su.stats}
        r = 0
        for i in range(n_batches):
            with np.load(partial / f"{i}.npz") as z:
                r1 = r + len(z["pos"])
                if r1 > n_rows:
                    raise RuntimeError(f"{partial}: the partials hold more rows than the VCF has")
                for k in widths:
                    meta[k][r:r1] = _bytes_array([str(v) for v in z[k]], widths[k])
                pos[r:r1] = z["pos"].astype(np.uint32)
                for s in su.stats:
                    ds[s][r:r1] = z[f"stat_{s}"]
            r = r1
        if r != n_rows:
            raise RuntimeError(f"{partial}: the partials hold {r} rows, the VCF {n_rows}")
        _write_pct(h5, su.stats, n_rows, T)


def _assemble_tsv(path: Path, partial: Path, su: _Setup, n_batches: int) -> None:
    cols = [s if s not in PROFILE_STATS else f"{s}_sum" for s in su.stats]
    T = len(su.sel)
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(["snp", "chr", "pos", "ref_allele", "alt_allele", "target_index", "target_id",
                            "target_label"] + cols) + "\n")
        for i in range(n_batches):
            with np.load(partial / f"{i}.npz") as z:
                m = {k: [str(v) for v in z[k]] for k in _META}
                pos = [int(p) for p in z["pos"]]
                vals = [z[f"stat_{s}"] for s in su.stats]
            for j in range(len(pos)):
                for t in range(T):
                    fh.write("\t".join([m["snp"][j], m["chr"][j], str(pos[j]), m["ref_allele"][j],
                                        m["alt_allele"][j], str(su.sel.columns[t]), su.sel.identifiers[t],
                                        su.labels[t]]
                                       + ["%.6g" % np.float32(v[j, t]) for v in vals]) + "\n")


def write_sad(model, fasta, vcf, out_dir, head: Optional[str] = None, tracks=None, targets=None,
              stats: Sequence[str] = ("SAD",), rc: bool = False, shifts: Sequence[int] = (0,),
              pseudo: float = 1.0, batch_size: int = 8, fmt: str = "h5", progress: bool = True,
              basenji_edge: bool = False, overwrite: bool = False, scheduler=None, workers: Optional[int] = None,
              shard=None) -> Path:
    """Score a VCF and write ``out_dir/sad.h5`` (or ``sad.tsv``) plus ``out_dir/skipped.tsv``.

    Parameters as :func:`score_variants`; ``fmt`` "h5" (basenji's sad.h5) or "tsv" (module
    docstring). Each batch is committed to ``out_dir/.sad_partial/<batch>.npz``; an interrupted
    run resumes from the committed batches, a finished job (``sad.options.json``) is not
    redone, and a folder holding a job with other options is an error unless ``overwrite``.
    Returns the path of sad.h5 / sad.tsv (a shard: its ``shard.json``).

    ``scheduler`` / ``workers`` / ``shard``: the batches as tasks on a Dask cluster or one
    shard's (:mod:`basenji2_fast.runner`; the files are identical to a single-process run's).

    Several heads (``head="both"``; tracks/targets per head as
    :func:`basenji2_fast.predict_regions`): each head is a job of its own in
    ``out_dir/<head>/`` (laid out, resumed and checked as a single-head job in ``out_dir``),
    run one after the other (the incremental substitution path predicts one head at a time),
    each on the cluster when ``scheduler`` / ``workers`` are given (not with ``shard``);
    returns {head: path}.
    """
    job = SadJob(stats, Scoring.of(rc, shifts, batch_size, pseudo, basenji_edge), fmt, overwrite, progress)
    runs = _write_sad_heads(model, fasta, vcf, out_dir, TrackRequest(head, tracks, targets), job,
                            runner.Placement(scheduler, workers, shard))
    paths = {h: path for h, path, _ in runs}
    return paths if len(runs) > 1 or runs[0][0] is not None else runs[0][1]


class SadJob(NamedTuple):
    """What a sad run computes and writes, beside its inputs: statistics, scoring, output
    format ("h5" or "tsv"), and whether an OUTDIR holding another job is overwritten."""

    stats: Sequence[str]
    scoring: Scoring
    fmt: str = "h5"
    overwrite: bool = False
    progress: bool = True


def _write_sad_heads(model, fasta, vcf, out_dir, request: TrackRequest, sad: SadJob,
                     placement: runner.Placement) -> list:
    """[(head or None for a single-head job in out_dir, path, status)]: one job per head."""
    multi, reqs = plan_heads(model, *request)
    if not multi:
        return [(None,) + _write_sad(model, fasta, vcf, out_dir, reqs[0], sad, placement)]
    placement.refuse_heads(multi, shard_only=True)
    return [(r.head,) + _write_sad(model, fasta, vcf, Path(out_dir) / r.head, r, sad, placement) for r in reqs]


def _write_sad(model, fasta, vcf, out_dir, request: TrackRequest, sad: SadJob,
               placement: runner.Placement) -> Tuple[Path, str]:
    """:func:`write_sad` of one head, returning (path, "written" | "up-to-date" | "shard")."""
    stats, scoring, fmt, overwrite, progress = sad
    if fmt not in ("h5", "tsv"):
        raise ValueError(f"format {fmt!r}: expected h5 or tsv")
    batch_size = scoring.ensemble.batch_size
    su = _setup(model, fasta, *request, stats)
    model._ensemble(**scoring.ensemble.options())  # a shift beyond the window: refused before job.json
    L, nb, T = model.seq_length, model.n_bins, len(su.sel)
    _check_vcf_file(vcf)
    job = _sad_job(model, fasta, vcf, su, scoring, fmt)
    key = canonical_sha(job)
    out_dir = check_output(out_dir, folder=True)
    path = out_dir / ("sad.h5" if fmt == "h5" else "sad.tsv")
    options_path = out_dir / SAD_OPTIONS
    partial = out_dir / SAD_PARTIAL
    skipped_path = out_dir / "skipped.tsv"

    old = read_json(options_path) if options_path.exists() else None
    if old is not None and old.get("job_key") == key and path.is_file() and skipped_path.is_file():
        # Finished with the same options: nothing to do (but a partial folder the finished run
        # was killed before removing).
        if (partial / "job.json").exists() and (read_json(partial / "job.json") or {}).get("job_key") == key:
            with job_lock(out_dir, SAD_LOCK, "sad"):
                shutil.rmtree(partial)
        return path, "up-to-date"
    old_partial = read_json(partial / "job.json") if (partial / "job.json").exists() else None
    conflict = ((old is not None and old.get("job_key") != key) or (options_path.exists() and old is None)
                or (old_partial is not None and old_partial.get("job_key") != key))
    if conflict and not overwrite:
        raise OptionError(f"{out_dir} holds a sad job with other options (VCF, model, FASTA, tracks, statistics, "
                          "ensemble, pseudocount, format or batch size); use another output folder, or {overwrite} "
                          "to start over", overwrite=("overwrite=True", "--overwrite"))

    n_rows, widths = _count(vcf, su.fasta, L)  # first pass (a malformed VCF fails here, writing nothing)
    n_batches = -(-n_rows // batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: List[Skipped] = []

    def on_skip(s):
        _warn_skip(s, len(skipped))
        skipped.append(s)

    with job_lock(out_dir, SAD_LOCK, "sad"):
        if conflict and old is not None and old.get("output") in ("sad.h5", "sad.tsv"):
            (out_dir / old["output"]).unlink(missing_ok=True)  # the other job's result
        options_path.unlink(missing_ok=True)  # from here on, OUTDIR holds no finished job
        if partial.exists() and (old_partial is None or old_partial.get("job_key") != key):
            shutil.rmtree(partial)  # another job's partials, or a folder killed before job.json
        partial.mkdir(exist_ok=True)
        if not (partial / "job.json").exists():
            write_json(partial / "job.json", {"job_key": key, "job": job})
        for tmp in list(partial.glob(".*.tmp")) + list(out_dir.glob(f".{path.name}.*.tmp")):
            tmp.unlink(missing_ok=True)  # temporaries of a killed run
        done = {i for i in range(n_batches) if (partial / f"{i}.npz").is_file()}
        done_rows = sum(min(batch_size, n_rows - i * batch_size) for i in done)
        dist = placement.distributed
        run = runner.Runner("sad", model, placement, progress=progress) if dist else None
        with (run or nullcontext()), tqdm(total=n_rows, initial=done_rows, unit="variant",
                                          disable=not progress or dist, desc="sad") as bar:
            if run is not None:
                run.open(partial, job, n_rows, "variant")
                fasta_file = fasta_path(fasta if isinstance(fasta, (str, bytes, os.PathLike)) else su.fasta)
            i = -1
            for i, batch in enumerate(_allele_batches(su, vcf, L, batch_size, on_skip)):
                if i >= n_batches:
                    raise RuntimeError("the VCF changed while it was read (more variants than counted)")
                part = partial / f"{i}.npz"
                if i in done:
                    with np.load(part) as z:  # only these small members are read
                        same = (len(z["pos"]) == len(batch)
                                and [int(p) for p in z["pos"]] == [a.pos for a in batch]
                                and [str(v) for v in z["snp"]] == [a.id for a in batch])
                    if not same:
                        raise RuntimeError(f"{part}: the committed batch does not match the VCF's variants; "
                                           "rerun with --overwrite")
                if run is not None:
                    run.add(runner.Task(part.name, batch_task, (fasta_file, su.head, su.sel, su.stats, batch, scoring,
                                                                fmt), len(batch)))
                    continue
                if i in done:
                    continue
                _commit_batch(model, part, su, batch, scoring, fmt)
                bar.update(len(batch))
            if i + 1 != n_batches:
                raise RuntimeError("the VCF changed while it was read (fewer variants than counted)")
            if run is not None:
                run.wait()
                if run.is_shard:
                    run.write_shard(out_dir)
                    return out_dir / runner.SHARD_RECORD, "shard"
        if fmt == "h5":
            _assemble_h5(path, partial, su, n_batches, n_rows, widths, nb, T)
        else:
            _assemble_tsv(path, partial, su, n_batches)
        with atomic_output(skipped_path) as tmp, open(tmp, "w") as fh:
            fh.write("line\tchrom\tpos\tid\tref\talt\treason\n")
            for s in skipped:
                fh.write(f"{s.line}\t{s.chrom}\t{s.pos}\t{s.id}\t{s.ref}\t{s.alt}\t{s.reason}\n")
        write_json(options_path, {"job_key": key, "output": path.name, "rows": n_rows, "job": job})
        shutil.rmtree(partial)
    return path, "written"


# --------------------------------------------------------------------------------------
# Command line


def add_sad_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``sad`` to an argparse ``subparsers``; ``args.func(args)`` runs it. Options follow
    basenji_sad.py (``-f -o -t --stats --rc --shifts --pseudo``)."""

    p = subparsers.add_parser(
        "sad", help="variant effect scores for a VCF (basenji_sad.py's sad.h5)",
        description="Score every ALT allele of a VCF: REF and ALT windows centred on the variant, statistics "
                    "over all output bins, written to OUT_DIR/sad.h5 as basenji_sad.py (or OUT_DIR/sad.tsv), "
                    "unscorable variants listed in OUT_DIR/skipped.tsv.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("vcf", help="VCF file (plain or bgzipped)")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    add_track_options(p)
    add_ensemble_options(p)
    p.add_argument("--stats", default="SAD",
                   help=f"comma-separated statistics (default SAD); known: {','.join(KNOWN_STATS)}")
    p.add_argument("--pseudo", type=non_negative_float, default=1.0, help="pseudocount of SADR/SAXR/SAR (default 1)")
    add_batch_size_option(p, 8, "variants per batch")
    p.add_argument("--format", dest="fmt", choices=("h5", "tsv"), default="h5",
                   help="sad.h5 (basenji's layout, default) or sad.tsv (one line per variant and track)")
    p.add_argument("--basenji-edge-padding", action="store_true",
                   help="reproduce basenji_sad.py 2021's one-base-short N padding at a chromosome's right end "
                        "(even-length indels there shift by one base); only for comparing with its files")
    p.add_argument("--overwrite", action="store_true",
                   help="start over when OUT_DIR holds a sad job (finished or interrupted) with other options")
    add_run_options(p, n_encoding=False)
    add_distributed_options(p)
    p.set_defaults(func=run_sad)
    return p


def run_sad(args: argparse.Namespace) -> int:
    """The ``sad`` subcommand; prints where it wrote, or a one-line error (exit status 1)."""
    def work():
        stats = _parse_stats(args.stats)
        _check_vcf_file(args.vcf)
        check_output(args.out_dir, folder=True)
        request = track_request(args)
        model = load_model(args)
        job = SadJob(stats, Scoring.of(args.rc, args.shifts, args.batch_size, args.pseudo, args.basenji_edge_padding),
                     args.fmt, getattr(args, "overwrite", False), not args.quiet)
        runs = _write_sad_heads(model, args.fasta, args.vcf, args.out_dir, request, job,
                                runner.Placement(**distributed_kwargs(args)))
        for h, path, status in runs:
            if status == "shard":
                print(f"wrote {path}; combine the shards with basenji2-fast merge")
            elif status == "up-to-date":
                where = args.out_dir if h is None else os.path.join(args.out_dir, h)
                print(f"{where} already holds this finished job ({SAD_OPTIONS}); nothing to do")
            else:
                print(f"wrote {path}")

    return one_line_errors(getattr(args, "command", None) or "sad", work)
