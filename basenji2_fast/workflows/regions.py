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

from contextlib import ExitStack
import argparse
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import h5py
import numpy as np

from .. import runner
from .._io import atomic_output, check_output, to_float16
from ..cli_options import (add_batch_size_option, add_distributed_options, add_ensemble_options, add_fasta_option,
                           add_model_options, add_run_options, add_track_options, distributed_kwargs, input_file,
                           int_list, load_model, one_line_errors, print_written, track_request)
from ..genome import Region, describe, fasta_identity, fasta_path, prepare_regions, read_bed, read_chrom_sizes
from ..model import Ensemble
from ..spec import weights_sha256
from ..targets import TrackSelection
from ..windows import iter_predictions, plan_heads, predict, resolve_tracks, site_bins, window, window_codes

#: The task folder of a distributed run, in OUT_DIR (one file per batch of regions).
TASKS = ".predict_partial"


class BatchOutput(NamedTuple):
    """What each batch of windows becomes: the ``(first, end)`` output bins of the site kept
    in ``preds``, summed or not (``site_sum``), and the positions among the selected tracks
    written as bigWigs (``-b``)."""

    site: Tuple[int, int]
    site_sum: bool
    bigwig_tracks: Tuple[int, ...]


class BigWigs(NamedTuple):
    """Where the ``-b`` bigWigs go: ``folder/bigwig/``, with ``header`` [(chrom, length)]."""

    folder: Path
    header: Optional[List[Tuple[str, int]]]


def site_rows(p: np.ndarray, site: Tuple[int, int], site_sum: bool) -> np.ndarray:
    """A batch's predictions p [batch, n_bins, tracks] -> its rows of ``preds``: float16
    [batch, site_bins, tracks], or [batch, tracks] summed over the site."""
    s0, s1 = site
    return to_float16(p[:, s0:s1].sum(axis=1) if site_sum else p[:, s0:s1])


def _write_batch_bigwigs(model, pbw: np.ndarray, b0: int, batch: Sequence[Region], tracks: Sequence[int],
                         bw: BigWigs) -> None:
    """The ``-b`` bigWigs of a batch: pbw float32 [batch, n_bins, len(tracks)]."""
    L, bs = model.seq_length, model.bin_size
    first_bin = model.spec.crop_bins  # output bin 0 starts this many bins into the window
    for j, r in enumerate(batch):
        for c, t in enumerate(tracks):
            _write_bigwig(bw.folder / "bigwig" / f"s{b0 + j}_t{t}.bw", bw.header, r.chrom,
                          window(r, L)[0] + first_bin * bs, bs, pbw[j, :, c])


def _batch_rows(model, p: np.ndarray, b0: int, batch: Sequence[Region], out: BatchOutput, bw: BigWigs) -> np.ndarray:
    """One batch's predictions p [batch, n_bins, tracks] -> its bigWigs written, its ``preds`` rows."""
    if out.bigwig_tracks:
        _write_batch_bigwigs(model, p[:, :, list(out.bigwig_tracks)], b0, batch, out.bigwig_tracks, bw)
    return site_rows(p, out.site, out.site_sum)


def _prepare(model, fasta, regions, head, tracks, targets, site_length):
    """(regions, open FASTA, {head: TrackSelection}, multi, (first, end) site bins, where the
    regions came from: the BED path for messages)."""
    regions, fa, source = prepare_regions(fasta, regions)
    multi, reqs = plan_heads(model, head, tracks, targets)
    sels = dict(resolve_tracks(model, r.head, r.tracks, r.targets) for r in reqs)
    return regions, fa, sels, multi, site_bins(model, site_length), source


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
    head : head name (default: see :func:`basenji2_fast.windows.resolve_tracks`), or ``"both"`` / a list of heads
        (every head from one trunk pass per window; see :mod:`basenji2_fast.windows`)
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
    regions, fa, sels, multi, (s0, s1), _ = _prepare(model, fasta, regions, head, tracks, targets, site_length)
    outs = {h: np.empty((len(regions), len(sel)) if site_sum else (len(regions), s1 - s0, len(sel)), np.float32)
            for h, sel in sels.items()}
    ensemble = Ensemble(rc, shifts, n_encoding, batch_size)
    for b0, ps in iter_predictions(model, fa, regions, sels, ensemble, progress):
        for h, p in ps.items():
            outs[h][b0:b0 + len(p)] = p[:, s0:s1].sum(axis=1) if site_sum else p[:, s0:s1]
    return outs if multi else next(iter(outs.values()))


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
        (:mod:`basenji2_fast.runner`); predict.h5 is byte-identical to a single-process
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
    regions, fa, sels, multi, (s0, s1), source = _prepare(model, fasta_path, bed_path, head, tracks, targets,
                                                          site_length)
    placement = runner.Placement(scheduler, workers, shard)
    placement.refuse_heads(multi)
    ensemble = model._ensemble(rc, shifts, n_encoding, batch_size)  # a shift beyond the window: refused here
    out_dir = check_output(out_dir, folder=True)
    dirs = {h: out_dir / h if multi else out_dir for h in sels}
    header = None
    if bigwig_tracks:
        for h, sel in sels.items():
            bad = [t for t in bigwig_tracks if not 0 <= int(t) < len(sel)]
            if bad:
                raise ValueError(f"bigWig track {bad[0]} out of range: {len(sel)} tracks are selected"
                                 + (f" for head {h}" if multi else ""))
        header = read_chrom_sizes(chrom_sizes) if chrom_sizes else [(k, len(fa[k])) for k in fa.keys()]
        known = dict(header)
        for i, r in enumerate(regions):
            if r.chrom not in known:
                raise ValueError(f"{describe(r, i, source)}: no chromosome {r.chrom!r} in "
                                 f"{chrom_sizes or fa.filename} (bigWig header)")
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        # An earlier run's -b bigWigs in this folder would sit beside this run's as if one job's
        for stale in sorted((d / "bigwig").glob("s*_t*.bw")) if (d / "bigwig").is_dir() else ():
            stale.unlink()
        if header is not None:
            (d / "bigwig").mkdir(exist_ok=True)
    out = BatchOutput((s0, s1), bool(site_sum), tuple(int(t) for t in bigwig_tracks or ()))
    bws = {h: BigWigs(d, header) for h, d in dirs.items()}
    L, bs = model.seq_length, model.bin_size
    first_bin = model.spec.crop_bins  # output bin 0 starts this many bins into the window
    # The site's coordinates, as basenji: mid - site_length // 2 for a centred site.
    starts = [window(r, L)[0] + (first_bin + s0) * bs for r in regions]
    if placement.distributed:
        # Every batch committed by the tasks first; then predict.h5 is written exactly as below.
        (h, sel), = sels.items()
        batches = _run_tasks(model, fasta_path, fa, regions, h, sel, ensemble, out, bws[h], placement, progress)
        if isinstance(batches, Path):
            return batches  # a shard: its task files and shard.json
    else:
        batches = ((b0, {h: _batch_rows(model, p, b0, regions[b0:b0 + len(p)], out, bws[h]) for h, p in ps.items()})
                   for b0, ps in iter_predictions(model, fa, regions, sels, ensemble, progress))
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
    if placement.distributed:
        runner.finish(out_dir / TASKS)
    paths = {h: d / "predict.h5" for h, d in dirs.items()}
    return paths if multi else next(iter(paths.values()))


# --------------------------------------------------------------------------------------
# Distributed runs: one task per batch of regions (runner)

def batch_task(model, path: Path, fasta: str, batch: List[Region], head: str, sel: TrackSelection,
               ensemble: Ensemble, out: BatchOutput) -> None:
    """A batch of regions -> ``path``: ``rows`` (its preds rows, float16) and ``bigwig``
    (float32 [batch, bins, len(bigwig_tracks)], for the driver's bigWigs)."""
    fa = runner.worker_fasta(fasta)
    codes = np.stack([window_codes(fa, r, model.seq_length) for r in batch])
    p = predict(model, codes, {head: sel}, ensemble)[head]
    runner.save_task(path, rows=site_rows(p, out.site, out.site_sum), bigwig=p[:, :, list(out.bigwig_tracks)])


def _run_tasks(model, fasta_arg, fa, regions: List[Region], head: str, sel: TrackSelection, ensemble: Ensemble,
               out: BatchOutput, bw: BigWigs, placement: runner.Placement, progress: bool):
    """The region batches as tasks. Returns an iterator of (first region, {head: preds rows})
    in order, which also writes the ``-b`` bigWigs, or the shard.json path of a shard."""
    fasta = fasta_path(fasta_arg)
    bs = ensemble.batch_size
    job = {"command": "predict-bed", "model": weights_sha256(model.spec), "fasta": fasta_identity(fasta, fa),
           "regions": [list(r[:5]) for r in regions], "head": head, "columns": list(sel.columns),
           "strand_pair": list(sel.strand_pair) if ensemble.rc and sel.strand_pair is not None else None,
           "rc": ensemble.rc, "shifts": list(ensemble.shifts), "batch_size": bs, "n_encoding": ensemble.n_encoding,
           "site": list(out.site), "site_sum": out.site_sum, "bigwig_tracks": list(out.bigwig_tracks),
           "header": bw.header}
    starts = range(0, len(regions), bs)
    task_dir = bw.folder / TASKS
    tasks = (runner.Task(f"{b0}.npz", batch_task, (fasta, regions[b0:b0 + bs], head, sel, ensemble, out),
                         len(regions[b0:b0 + bs])) for b0 in starts)
    shard = runner.run_tasks("predict-bed", model, placement, task_dir, job, tasks, len(regions), "region", progress)
    if shard is not None:
        return shard

    def rows():
        for b0 in starts:
            with np.load(task_dir / f"{b0}.npz") as z:
                if out.bigwig_tracks:
                    _write_batch_bigwigs(model, z["bigwig"], b0, regions[b0:b0 + bs], out.bigwig_tracks, bw)
                yield b0, {head: z["rows"]}
    return rows()


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
    p.add_argument("-g", "--chrom-sizes", default=None, type=input_file("chrom sizes file"),
                   help="chromosome sizes for the bigWig headers (default: the FASTA's sequences)")
    p.add_argument("--target-names", action="store_true",
                   help="also store target_ids / target_labels (as in basenji_sad.py's sad.h5)")
    add_batch_size_option(p, 4)
    add_run_options(p)
    add_distributed_options(p)
    p.set_defaults(func=run_predict_bed)
    return p


def run_predict_bed(args: argparse.Namespace) -> int:
    """The ``predict-bed`` subcommand; prints where it wrote, or a one-line error (exit status 1)."""
    def work():
        # Inputs first: a bad BED or targets line fails before the model is loaded.
        regions = read_bed(args.bed)
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        head, tracks, targets = track_request(args)
        path = predict_bed(load_model(args), args.fasta, regions, args.out_dir, head=head, tracks=tracks,
                           rc=args.rc, shifts=args.shifts, batch_size=args.batch_size, n_encoding=args.n_encoding,
                           progress=not args.quiet, targets=targets, site_length=args.site_length,
                           site_sum=args.site_sum, bigwig_tracks=args.bigwig_tracks,
                           chrom_sizes=args.chrom_sizes, target_names=args.target_names,
                           **distributed_kwargs(args))
        print_written(path)

    return one_line_errors(getattr(args, "command", None) or "predict-bed", work)
