"""Predictions for BED regions, in the layout of basenji's ``basenji_predict_bed.py``.

Each region gets the model window centred on ``mid = (start + end) // 2`` (strand ignored),
``[mid - seq_length // 2, mid + seq_length // 2)``, with N beyond chromosome ends (basenji
2021 draws a random base for each N instead; this engine encodes N as zeros or 0.25, never
randomly). Of the window's output bins, the central *site* is kept: all bins by default,
or the ``site_length // bin_size`` central ones (``-l``), optionally summed (``-s``).

``predict.h5`` holds what basenji's does, with its names, dtypes and shapes:

==========  =====================================  =========================================
``preds``   float16 [regions, site_bins, tracks]    ``[regions, tracks]`` with ``-s``
``chrom``   bytes ``S<n>`` [regions]                the region's chromosome
``start``   int64 [regions]                         the site's first base (0-based; may be < 0
``end``     int64 [regions]                         or past the chromosome end), ``start +
                                                    site_length``
==========  =====================================  =========================================

(``--target-names`` adds ``target_ids`` / ``target_labels`` as ``basenji_sad.py`` writes them
in sad.h5; basenji_predict_bed.py stores neither.) ``-b`` also writes one bigWig per region
and track, ``bigwig/s<region>_t<track>.bw``, of all the window's bins in float32.

Several heads (``--head both``; ``-t HEAD=FILE`` / ``--tracks HEAD=SEL`` per head): every head
from one trunk pass per window; head ``h``'s files in ``OUT_DIR/<h>/`` (``predict.h5``,
``bigwig/``), each identical to a single-head run of ``h``.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from contextlib import ExitStack
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
from tqdm import tqdm

from .. import distributed
from .._io import atomic_output
from ..dna import encode
from ..genome import fetch, open_fasta
from ..cli_options import (add_ensemble_options, add_fasta_option, add_model_options, add_run_options,
                          add_track_options, int_list, load_model, one_line_errors, track_request)
from ..multihead import plan_heads
from ..targets import Targets, TrackSelection, read_targets, select_tracks

FLOAT16_MAX = float(np.finfo(np.float16).max)


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


def window(region, seq_length: int) -> tuple:
    """(start, end) of the model window centred on the region, as basenji_predict_bed.py."""
    mid = (region[1] + region[2]) // 2
    start = mid - seq_length // 2
    return start, start + seq_length


def output_window(region, model) -> tuple:
    """(start, end) of the genomic span the output bins of the region's window cover: the
    window less ``crop_bins * bin_size`` bp each side; bin ``b`` covers ``[start + b * bin_size,
    start + (b + 1) * bin_size)``."""
    start = window(region, model.seq_length)[0] + model.spec.crop_bins * model.bin_size
    return start, start + model.n_bins * model.bin_size


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


def _as_regions(regions) -> Tuple[List[Region], str]:
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


def _where(r: Region, i: int, source: str) -> str:
    """Where a region came from, for messages: the BED line, or its position in a list."""
    return f"{source}: line {r.line}" if r.line else f"region {i} ({r.chrom}:{r.start}-{r.end})"


def _check_contigs(fasta, regions: List[Region], source: str) -> None:
    for i, r in enumerate(regions):
        if r.chrom not in fasta:
            raise ValueError(f"{_where(r, i, source)}: no sequence {r.chrom!r} in {fasta.filename}")


def site_bins(model, site_length: Optional[int]) -> Tuple[int, int]:
    """The output bins ``[b0, b1)`` of a centred site of ``site_length`` bp (None: all bins).

    basenji_predict_bed.py keeps bins ``[n_bins/2 - S/2, n_bins/2 + S/2)``, S = site_length
    / bin_size; the site must be whole bins and centred exactly, so ``n_bins - S`` is even.
    """
    nb, bs = model.n_bins, model.bin_size
    if site_length is None:
        return 0, nb
    s = int(site_length)
    if s <= 0 or s % bs or s // bs > nb or (nb - s // bs) % 2:
        raise ValueError(f"site length {site_length}: must be a multiple of the bin size {bs} bp, at most "
                         f"{nb * bs} bp ({nb} bins), with a bin count of the same parity as {nb} so the site is "
                         "centred on the window")
    b0 = (nb - s // bs) // 2
    return b0, b0 + s // bs


def resolve_tracks(model, head: Optional[str] = None, tracks=None,
                   targets: Union[None, str, os.PathLike, Targets] = None) -> Tuple[str, TrackSelection]:
    """Which head, and which of its columns, to compute.

    Parameters
    ----------
    head : head name, or None: the model's first head; with a targets file, the one head
        whose output count equals the file's row count when there is exactly one such head
        (so ``targets_mouse.txt`` picks a merged model's mouse head)
    tracks : None, a selector string, a sequence of int, or a TrackSelection
        See :func:`basenji2_fast.targets.select_tracks`; integers are rows of the targets
        file (head columns without one).
    targets : path of a basenji targets file, a :class:`~basenji2_fast.targets.Targets`, or None

    Returns
    -------
    (head name, TrackSelection)
    """
    if targets is not None and not isinstance(targets, Targets):
        targets = read_targets(targets)
    if head is None:
        head = model.head_names[0]
        if targets is not None:
            fits = [n for n in model.head_names if model.spec.heads[n].tracks == len(targets)]
            if len(fits) == 1:
                head = fits[0]
    if head not in model.spec.heads:
        raise ValueError(f"no head {head!r}; this model has {model.head_names}")
    n_out = model.spec.heads[head].tracks
    if isinstance(tracks, TrackSelection):
        bad = [c for c in tracks.columns if not 0 <= c < n_out]
        if bad:
            raise ValueError(f"track column {bad[0]} out of range for head {head!r} with {n_out} tracks")
        return head, tracks
    return head, select_tracks(targets, tracks, n_out)


def iter_windows(fasta, regions: List[Region], seq_length: int, batch_size: int, progress: bool = False,
                 desc: str = "predict") -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(first region, uint8 codes [batch, seq_length])``: the window centred on each
    region (:func:`window`, N off the chromosome), ``batch_size`` regions at a time, in order."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    with tqdm(total=len(regions), unit="region", disable=not progress, desc=desc) as bar:
        for b0 in range(0, len(regions), batch_size):
            batch = regions[b0:b0 + batch_size]
            yield b0, np.stack([encode(fetch(fasta, r.chrom, *window(r, seq_length)),
                                       what=f"{r.chrom}:{r.start}-{r.end}") for r in batch])
            bar.update(len(batch))


def _iter_heads(model, fasta, regions: List[Region], sels: Dict[str, TrackSelection], rc: bool,
                shifts: Sequence[int], batch_size: int, n_encoding: str,
                progress: bool) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """Yield ``(first region, {head: float32 [batch, n_bins, tracks]})`` batch by batch, in
    order; every head of ``sels`` from one trunk pass per window."""
    cols = {h: None if sel.is_all(model.spec.heads[h].tracks) else sel.columns for h, sel in sels.items()}
    pairs = {h: sel.strand_pair if rc else None for h, sel in sels.items()}
    for b0, codes in iter_windows(fasta, regions, model.seq_length, batch_size, progress):
        yield b0, model.predict(codes, head=list(sels), tracks=cols, rc=rc, shifts=shifts, n_encoding=n_encoding,
                                strand_pair=pairs, batch_size=batch_size)


def _iter_predictions(model, fasta, regions: List[Region], head: str, sel: TrackSelection, rc: bool,
                      shifts: Sequence[int], batch_size: int, n_encoding: str,
                      progress: bool) -> Iterator[Tuple[int, np.ndarray]]:
    """One head of :func:`_iter_heads`: ``(first region, float32 [batch, n_bins, tracks])``."""
    for b0, ps in _iter_heads(model, fasta, regions, {head: sel}, rc, shifts, batch_size, n_encoding, progress):
        yield b0, ps[head]


def _predict_batch(model, fasta, batch: Sequence[Region], head: str, sel: TrackSelection, rc: bool,
                   shifts: Sequence[int], batch_size: int, n_encoding: str) -> np.ndarray:
    """One batch of regions -> float32 [batch, n_bins, tracks]."""
    L = model.seq_length
    cols = None if sel.is_all(model.spec.heads[head].tracks) else sel.columns
    codes = np.stack([encode(fetch(fasta, r.chrom, *window(r, L)), what=f"{r.chrom}:{r.start}-{r.end}")
                      for r in batch])
    return model.predict(codes, head=head, tracks=cols, rc=rc, shifts=shifts, n_encoding=n_encoding,
                         strand_pair=sel.strand_pair if rc else None, batch_size=batch_size)


def _site_rows(p: np.ndarray, site: Tuple[int, int], site_sum: bool) -> np.ndarray:
    """A batch's predictions p [batch, n_bins, tracks] -> its rows of ``preds``: float16
    [batch, site_bins, tracks], or [batch, tracks] summed over the site."""
    s0, s1 = site
    vals = p[:, s0:s1].sum(axis=1) if site_sum else p[:, s0:s1]
    # float16 overflows to inf above 65504; saturate instead
    return np.clip(vals, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def _write_batch_bigwigs(model, pbw: np.ndarray, b0: int, batch: Sequence[Region], bigwig_tracks, header,
                         out_dir: Path) -> None:
    """The ``-b`` bigWigs of a batch: pbw float32 [batch, n_bins, len(bigwig_tracks)]."""
    L, bs = model.seq_length, model.bin_size
    first_bin = model.spec.crop_bins  # output bin 0 starts this many bins into the window
    for j, r in enumerate(batch):
        for c, t in enumerate(bigwig_tracks or ()):
            _write_bigwig(out_dir / "bigwig" / f"s{b0 + j}_t{int(t)}.bw", header, r.chrom,
                          window(r, L)[0] + first_bin * bs, bs, pbw[j, :, c])


def _batch_outputs(model, p: np.ndarray, b0: int, batch: Sequence[Region], site: Tuple[int, int], site_sum: bool,
                   bigwig_tracks, header, out_dir: Path) -> np.ndarray:
    if bigwig_tracks:
        _write_batch_bigwigs(model, p[:, :, [int(t) for t in bigwig_tracks]], b0, batch, bigwig_tracks, header,
                             out_dir)
    return _site_rows(p, site, site_sum)


def prepare_regions(fasta, regions) -> Tuple[List[Region], object, str]:
    """(regions, open FASTA, where the regions came from): a BED path or a list of tuples read
    (one-line errors naming the BED line), at least one region, every chromosome in the FASTA."""
    regions, source = _as_regions(regions)
    if not regions:
        raise ValueError(f"{source}: no regions")
    fa = open_fasta(fasta) if isinstance(fasta, (str, bytes, os.PathLike)) else fasta
    _check_contigs(fa, regions, source)
    return regions, fa, source


def _prepare(model, fasta, regions, head, tracks, targets, site_length):
    """(regions, open FASTA, {head: TrackSelection}, multi, (first, end) site bins)."""
    regions, fa, _ = prepare_regions(fasta, regions)
    multi, reqs = plan_heads(model, head, tracks, targets)
    sels = dict(resolve_tracks(model, r.head, r.tracks, r.targets) for r in reqs)
    return regions, fa, sels, multi, site_bins(model, site_length)


def predict_regions(model, fasta, regions, head: Optional[str] = None, tracks=None, rc: bool = False,
                    shifts: Sequence[int] = (0,), site_length: Optional[int] = None, site_sum: bool = False,
                    batch_size: int = 4, n_encoding: str = "zeros", targets=None,
                    progress: bool = False) -> np.ndarray:
    """Predict the model window centred on each region (basenji_predict_bed.py's numbers).

    Parameters
    ----------
    model : basenji2_fast.Model
    fasta : path of a FASTA, or an open ``pyfaidx.Fasta``
    regions : path of a BED file, or a list of ``(chrom, start, end)`` tuples (0-based,
        end-exclusive; a 4th element is a name)
    head : head name (default: see :func:`resolve_tracks`), or ``"both"`` / a list of heads
        (every head from one trunk pass per window; see :mod:`basenji2_fast.multihead`)
    tracks : None (all), a selector string (``"0,5"``, ``"CNhs11250,CNhs12336"``,
        ``"CAGE:.*K562"``), a sequence of int (rows of ``targets``, head columns without it),
        or a :class:`~basenji2_fast.targets.TrackSelection`; with several heads, a dict
        {head: selector}
    rc, shifts : basenji's ``--rc`` / ``--shifts`` ensemble; with ``rc`` the targets file's
        ``strand_pair`` tracks are swapped in the reverse-complement passes
    site_length : bp of the central site to keep (``-l``); None: every output bin
    site_sum : sum over the site bins (``-s``)
    batch_size : windows per engine call
    n_encoding : "zeros" or "uniform" for N (basenji 2021 uses random bases here)
    targets : a basenji targets file (path or Targets): track selection and strand pairs;
        with several heads, a dict {head: targets}

    Returns
    -------
    float32 [regions, site_bins, tracks], or [regions, tracks] with ``site_sum``. Region
    ``i``'s site starts at ``(start + end) // 2 - site_length // 2``. With several heads,
    a dict {head: that array}.

    Raises
    ------
    ValueError
        A malformed BED line or targets file, a chromosome missing from the FASTA (naming
        the BED line), a bad site length or track selector.
    """
    regions, fa, sels, multi, (s0, s1) = _prepare(model, fasta, regions, head, tracks, targets, site_length)
    outs = {h: np.empty((len(regions), len(sel)) if site_sum else (len(regions), s1 - s0, len(sel)), np.float32)
            for h, sel in sels.items()}
    for b0, ps in _iter_heads(model, fa, regions, sels, rc, shifts, batch_size, n_encoding, progress):
        for h, p in ps.items():
            outs[h][b0:b0 + len(p)] = p[:, s0:s1].sum(axis=1) if site_sum else p[:, s0:s1]
    return outs if multi else next(iter(outs.values()))


def _read_chrom_sizes(path) -> List[Tuple[str, int]]:
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


def _write_bigwig(path: Path, header: List[Tuple[str, int]], chrom: str, start: int, bin_size: int,
                  values: np.ndarray) -> None:
    """One region's bins as a bigWig: bin b covers ``[start + b*bin_size, +bin_size)``; bins off
    the chromosome are dropped and a partial one clipped (basenji crashes there instead)."""
    import pyBigWig

    size = dict(header)[chrom]
    s = start + bin_size * np.arange(len(values), dtype=np.int64)
    e = s + bin_size
    keep = (e > 0) & (s < size)
    s, e = np.maximum(s[keep], 0), np.minimum(e[keep], size)
    with atomic_output(path) as tmp:
        bw = pyBigWig.open(str(tmp), "w")
        try:
            bw.addHeader(header)
            if len(s):
                bw.addEntries([chrom] * len(s), s.tolist(), ends=e.tolist(),
                              values=values[keep].astype(np.float64).tolist())
        finally:
            bw.close()


def predict_bed(model, fasta_path, bed_path, out_dir, head: Optional[str] = None, tracks=None,
                rc: bool = False, shifts: Sequence[int] = (0,), batch_size: int = 4, n_encoding: str = "zeros",
                progress: bool = True, targets=None, site_length: Optional[int] = None,
                site_sum: bool = False, bigwig_tracks: Optional[Sequence[int]] = None,
                chrom_sizes=None, target_names: bool = False, scheduler=None, workers: Optional[int] = None,
                shard=None) -> Path:
    """Predict every BED region and write ``out_dir/predict.h5`` (basenji_predict_bed.py's file).

    Parameters
    ----------
    model, head, tracks, rc, shifts, batch_size, n_encoding, targets, site_length, site_sum :
        as :func:`predict_regions`
    fasta_path : FASTA path (or open ``pyfaidx.Fasta``)
    bed_path : BED path (or a list of regions)
    out_dir : folder for ``predict.h5`` (created)
    bigwig_tracks : positions among the selected tracks (``-b``) to also write as
        ``out_dir/bigwig/s<region>_t<position>.bw``: all the window's output bins, float32
    chrom_sizes : ``name<TAB>length`` file for the bigWig headers (``-g``); default: the
        FASTA's sequences
    target_names : also store ``target_ids`` / ``target_labels`` (fixed-length bytes, as
        sad.h5); basenji's predict.h5 has neither
    scheduler, workers, shard : the region batches as tasks on a Dask cluster, or one shard's
        (:mod:`basenji2_fast.distributed`); predict.h5 is byte-identical to a single-process
        run's, and an interrupted distributed run resumes from its committed batches

    Returns
    -------
    Path of ``predict.h5`` (a shard: its ``shard.json``). Each file is written under a
    temporary name and renamed when complete, so an interrupted run leaves no partial output.
    With several heads (``head="both"``; tracks/targets per head as :func:`predict_regions`),
    each head's files go to ``out_dir/<head>/`` laid out as a single-head run
    (``<head>/predict.h5``, ``<head>/bigwig/``), all heads from one trunk pass per window; the
    return value is then a dict {head: path}. Several heads run in one process only (no
    ``scheduler`` / ``workers`` / ``shard``).
    """
    regions, fa, sels, multi, (s0, s1) = _prepare(model, fasta_path, bed_path, head, tracks, targets, site_length)
    distributed.one_head_only(multi, scheduler, workers, shard)
    out_dir = Path(out_dir)
    dirs = {h: out_dir / h if multi else out_dir for h in sels}
    header = None
    if bigwig_tracks:
        for h, sel in sels.items():
            bad = [t for t in bigwig_tracks if not 0 <= int(t) < len(sel)]
            if bad:
                raise ValueError(f"bigWig track {bad[0]} out of range: {len(sel)} tracks are selected"
                                 + (f" for head {h}" if multi else ""))
        header = _read_chrom_sizes(chrom_sizes) if chrom_sizes else [(k, len(fa[k])) for k in fa.keys()]
        known = dict(header)
        for i, r in enumerate(regions):
            if r.chrom not in known:
                raise ValueError(f"{_where(r, i, str(bed_path))}: no chromosome {r.chrom!r} in "
                                 f"{chrom_sizes or fa.filename} (bigWig header)")
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        if header is not None:
            (d / "bigwig").mkdir(exist_ok=True)
    L, bs = model.seq_length, model.bin_size
    first_bin = model.spec.crop_bins  # output bin 0 starts this many bins into the window
    # The site's coordinates, as basenji: mid - site_length // 2 for a centred site.
    starts = [window(r, L)[0] + (first_bin + s0) * bs for r in regions]
    if distributed.wanted(scheduler, workers, shard):
        # Every batch committed by the tasks first; then predict.h5 is written exactly as below.
        (h, sel), = sels.items()
        batches, done = distributed.run_regions(model, fasta_path, fa, regions, h, sel, rc, shifts, batch_size,
                                                n_encoding, (s0, s1), site_sum, bigwig_tracks, header, out_dir,
                                                scheduler, workers, shard, progress)
        if done is not None:
            return done
        batches = ((b0, {h: rows}) for b0, rows in batches)
    else:
        batches = ((b0, {h: _batch_outputs(model, p, b0, regions[b0:b0 + len(p)], (s0, s1), site_sum,
                                           bigwig_tracks, header, dirs[h]) for h, p in ps.items()})
                   for b0, ps in _iter_heads(model, fa, regions, sels, rc, shifts, batch_size, n_encoding, progress))
    with ExitStack() as stack:
        files = {}
        for h, sel in sels.items():
            h5 = stack.enter_context(h5py.File(stack.enter_context(atomic_output(dirs[h] / "predict.h5")), "w"))
            shape = (len(regions), len(sel)) if site_sum else (len(regions), s1 - s0, len(sel))
            files[h] = h5.create_dataset("preds", shape, dtype="float16")
            h5.create_dataset("chrom", data=np.array([r.chrom.encode() for r in regions]))
            h5.create_dataset("start", data=np.array(starts, np.int64))
            h5.create_dataset("end", data=np.array([s + (s1 - s0) * bs for s in starts], np.int64))
            if target_names:
                h5.create_dataset("target_ids", data=np.array([t.encode() for t in sel.identifiers]))
                h5.create_dataset("target_labels", data=np.array([t.encode() for t in sel.labels]))
        for b0, rows in batches:
            for h, r in rows.items():
                files[h][b0:b0 + len(r)] = r
    if distributed.wanted(scheduler, workers, shard):
        distributed.finish_regions(out_dir)
    paths = {h: d / "predict.h5" for h, d in dirs.items()}
    return paths if multi else next(iter(paths.values()))


# --------------------------------------------------------------------------------------
# Command line


def add_predict_bed_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``predict-bed`` (alias ``predict``) to an argparse ``subparsers``; ``args.func(args)``
    runs it. Options follow basenji_predict_bed.py (``-f -o -t --rc --shifts -l -s -b -g``)."""

    p = subparsers.add_parser(
        "predict-bed", aliases=["predict"],
        help="predict tracks for BED regions (basenji_predict_bed.py's predict.h5)",
        description="Predict the model window centred on each BED region (strand ignored) and write "
                    "OUT_DIR/predict.h5 as basenji_predict_bed.py: preds [regions, site bins, tracks] float16 "
                    "(or [regions, tracks] with -s), chrom, start, end of each site.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of regions")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    add_track_options(p)
    add_ensemble_options(p)
    p.add_argument("-l", "--site-length", type=int, default=None,
                   help="keep only the central SITE_LENGTH bp of output bins (default: all)")
    p.add_argument("-s", "--sum", dest="site_sum", action="store_true",
                   help="sum over the site bins: preds [regions, tracks]")
    p.add_argument("-b", "--bigwig-tracks", type=int_list, default=None,
                   help="comma-separated positions among the selected tracks to also write as bigWigs, "
                        "OUT_DIR/bigwig/s<region>_t<track>.bw")
    p.add_argument("-g", "--chrom-sizes", default=None,
                   help="chromosome sizes for the bigWig headers (default: the FASTA's sequences)")
    p.add_argument("--target-names", action="store_true",
                   help="also store target_ids / target_labels (as in basenji_sad.py's sad.h5)")
    p.add_argument("--batch-size", type=int, default=4)
    add_run_options(p)
    distributed.add_distributed_options(p)
    p.set_defaults(func=run_predict_bed)
    return p


def run_predict_bed(args: argparse.Namespace) -> int:
    """The ``predict-bed`` subcommand; prints where it wrote, or a one-line error (exit status 1)."""
    def work():
        # Inputs first: a bad BED or targets line fails before the model is loaded.
        if not read_bed(args.bed):
            raise ValueError(f"{args.bed}: no regions")
        head, tracks, targets = track_request(args)
        path = predict_bed(load_model(args), args.fasta, args.bed, args.out_dir, head=head, tracks=tracks,
                           rc=args.rc, shifts=args.shifts, batch_size=args.batch_size, n_encoding=args.n_encoding,
                           progress=not args.quiet, targets=targets, site_length=args.site_length,
                           site_sum=args.site_sum, bigwig_tracks=args.bigwig_tracks,
                           chrom_sizes=args.chrom_sizes, target_names=args.target_names,
                           **distributed.distributed_kwargs(args))
        if isinstance(path, dict):
            print(f"wrote {', '.join(map(str, path.values()))}")
        else:
            print(f"wrote {path}" + ("; combine the shards with basenji2-fast merge" if path.name == "shard.json"
                                     else ""))

    return one_line_errors(getattr(args, "command", None) or "predict-bed", work)
