"""Whole-genome predictions as bigWig tracks (``b2.predict_genome``, ``basenji2-fast predict-genome``).

Tiling
------
Windows are placed so that their OUTPUT regions abut exactly: with ``L`` = seq_length,
``nb`` = n_bins, ``bs`` = bin_size and ``crop`` = crop_bins * bs, window ``k`` of a
chromosome reads ``[k * nb * bs - crop, k * nb * bs - crop + L)`` and predicts the bins
``[k * nb, (k + 1) * nb)`` (for Basenji2: stride 114,688 bp, the first window starts 8,192 bp
before the chromosome, so its first output bin is the chromosome's first 128 bp). Positions
off the chromosome are N (encoded per ``n_encoding``). A window whose output region holds only
N within the chromosome (assembly gaps, telomeres) is not predicted: its bins are absent from
the bigWigs (no entries, not zeros). Only bins that start inside the chromosome are written;
the last one ends at the chromosome's end (a partial bin).

Files
-----
``OUTDIR/<column>_<identifier>.bw`` per selected track (one value per bin: fixed-step
entries of span = step = bin_size, the last partial bin as a bedGraph entry), and
``OUTDIR/manifest.json`` (model checksums, options, tracks, chromosomes, window counts,
timing, package version).

Several heads (``--head both``, ``head="both"``): every head from one trunk pass per window;
head ``h``'s bigWigs in ``OUTDIR/<h>/`` (named as above), one ``manifest.json`` for the job in
``OUTDIR`` whose ``heads`` section lists each head's folder, columns and files (``tracks``
lists all of them, files as ``<h>/<file>``). The heads are part of the job's identity.

Resume and atomicity
--------------------
A bigWig must be written in chromosome order in one go, so each chromosome is first computed
into ``OUTDIR/.partial/<i>.npy`` (``i`` = the chromosome's position in the FASTA), a
``[tracks, bins]`` array on disk, filled with positioned writes: one track's row is
contiguous, so the assembly reads each track's row once. While a chromosome runs, the array is
``<i>.npy.inprogress`` and ``<i>.progress.json`` records, after the array was flushed to disk,
how many windows are complete (checkpointed every :data:`CHECKPOINT_SECONDS`); an interrupted
run resumes from the last checkpoint. A finished chromosome is renamed to ``<i>.npy`` and
committed by ``<i>.json`` (written atomically, last). When every requested chromosome is
committed, the bigWigs are written into ``.partial/staged/`` and, once all are complete, moved
into OUTDIR in one sweep of renames; then ``manifest.json`` is written and ``.partial``
removed. The manifest is the job's commit: a folder with ``.partial`` and no manifest is an
unfinished job, whose bigWigs readers (``plot --bigwigs``, ``test``) refuse
(:func:`basenji2_fast.coverage.unfinished_genome_job`). Rerunning a finished job with the same
options is a no-op; other options on an existing OUTDIR are an error unless ``overwrite=True``;
a ``manifest.json`` that is not predict-genome's is never replaced.

Memory
------
Flat in genome size: at any time the process holds one batch of windows (``batch_size`` x
``[n_bins, tracks]`` float32, ~19 MB per Basenji2 window at 5,313 tracks), the model and the
engine's activations; never a whole chromosome's ``[bins, tracks]`` (partials are written
with ``pwrite``, not memory-mapped). The assembly holds one track's row of one chromosome
(hg38 chr1: 1.9 M bins, 7.8 MB). Partials are float32
when a chromosome's ``tracks x bins`` fits in :data:`FLOAT32_PARTIAL_LIMIT` bytes (1 GiB),
float16 otherwise (values clipped to the float16 range; relative rounding <= 4.9e-4, the
precision of basenji's own ``predict.h5``), to halve the disk a large job needs: hg38 at 5,313
tracks is ~24 M bins x 5,313 x 2 bytes ~ 256 GB of partials for all chromosomes together.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from .. import dna, runner
from .._io import OptionError, atomic_output, canonical_sha, check_output, job_lock, read_json, to_float16, write_json
from ..cli_options import (add_batch_size_option, add_distributed_options, add_ensemble_options, add_fasta_option,
                           add_model_options, add_run_options, add_track_options, distributed_kwargs, load_model,
                           one_line_errors, track_request)
from ..coverage import GENOME_JOB_FORMAT, GENOME_MANIFEST, GENOME_PARTIAL
from ..genome import fetch, open_fasta
from ..formats import file_sha256
from ..model import Ensemble, load
from ..spec import CODE_N, check_positive_int, weights_sha256
from ..targets import TrackSelection
from ..version import __version__
from ..windows import head_names, plan_heads, predict, resolve_tracks

PathLike = Union[str, os.PathLike]

#: Partials larger than this (bytes, at float32) are stored as float16.
FLOAT32_PARTIAL_LIMIT = 1 << 30
#: Seconds between checkpoints of the chromosome being computed (flush + progress record).
CHECKPOINT_SECONDS = 60.0
#: Jobs of more values (tracks x bins) than this write their bigWigs in parallel processes.
PARALLEL_ASSEMBLY_VALUES = 10_000_000
MANIFEST = GENOME_MANIFEST
PARTIAL = GENOME_PARTIAL
JOB_FORMAT = GENOME_JOB_FORMAT
#: Where the bigWigs are written, in the partials' folder, before they all move into OUTDIR.
STAGED = "staged"
JOB_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiling:
    """Window placement for one model geometry (all lengths in bp)."""

    seq_length: int
    n_bins: int
    bin_size: int
    crop_bins: int

    @property
    def stride(self) -> int:
        """Output bp per window: consecutive windows' output regions abut."""
        return self.n_bins * self.bin_size

    @property
    def crop(self) -> int:
        return self.crop_bins * self.bin_size

    def n_windows(self, chrom_length: int) -> int:
        return -(-chrom_length // self.stride)

    def n_chrom_bins(self, chrom_length: int) -> int:
        """Bins that start inside the chromosome (the last may be partial)."""
        return -(-chrom_length // self.bin_size)

    def window(self, k: int) -> Tuple[int, int]:
        """(start, end) of window k's input, 0-based half-open; may lie off the chromosome."""
        start = k * self.stride - self.crop
        return start, start + self.seq_length

    def output(self, k: int, chrom_length: int) -> Tuple[int, int]:
        """(start, end) in bp of window k's output region, clipped to the chromosome."""
        return k * self.stride, min(chrom_length, (k + 1) * self.stride)

    def bins(self, k: int, chrom_length: int) -> Tuple[int, int]:
        """(first, end) chromosome bin indices that window k writes."""
        return k * self.n_bins, min(self.n_chrom_bins(chrom_length), (k + 1) * self.n_bins)


def tiling_of(model) -> Tiling:
    t = Tiling(int(model.seq_length), int(model.n_bins), int(model.bin_size), int(model.spec.crop_bins))
    if t.seq_length != t.n_bins * t.bin_size + 2 * t.crop:
        # Tiling relies on the output bins being the centre of the input, crop on both sides.
        raise ValueError(f"model geometry {t}: seq_length != n_bins * bin_size + 2 * crop; "
                         "genome tiling needs a symmetric crop")
    return t


# ----------------------------------------------------------------------------------------------
# Tracks
# ----------------------------------------------------------------------------------------------
def _sanitize(text: str) -> str:
    """A file-name-safe version of an identifier (letters, digits, ``._+-``)."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("._")
    return s[:100] or "track"


@dataclass
class GenomeTracks:
    """The tracks a job writes, one bigWig and one partial row each, in this order.

    ``heads``: [(head, TrackSelection)], one for a single-head job; with several heads their
    tracks lie side by side in head order. ``identifiers`` / ``labels`` / ``files``: per track
    (files as ``<head>/<file>`` for several heads).
    """

    heads: List[Tuple[str, TrackSelection]]
    identifiers: List[str]
    labels: List[str]
    files: List[str]
    multi: bool = False

    @property
    def columns(self) -> List[int]:
        return [c for _, sel in self.heads for c in sel.columns]

    @property
    def strand_pair(self) -> Optional[List[int]]:
        """Each track's strand partner among all the job's tracks (None when no head has pairs)."""
        if all(sel.strand_pair is None for _, sel in self.heads):
            return None
        out, offset = [], 0
        for _, sel in self.heads:
            out += [offset + int(p) for p in (sel.strand_pair or range(len(sel)))]
            offset += len(sel)
        return out

    def __len__(self) -> int:
        return len(self.files)

    def by_head(self):
        """(head, columns, identifiers, files) of each head, in order."""
        k = 0
        for h, sel in self.heads:
            yield h, list(sel.columns), self.identifiers[k:k + len(sel)], self.files[k:k + len(sel)]
            k += len(sel)


def _head_tracks(model, head: str, tracks, track_names) -> Tuple[TrackSelection, List[str], List[str], List[str]]:
    """One head's (selection, identifiers, labels, bigWig files). ``tracks``: None (every
    column), head columns, or a TrackSelection (its identifiers, labels and strand pairs);
    ``track_names``: identifiers for the files and the manifest (default ``t<column>``, or the
    selection's)."""
    plain = not hasattr(tracks, "columns")
    if plain and tracks is not None:
        tracks = [int(c) for c in np.asarray(list(tracks)).ravel()]
    _, sel = resolve_tracks(model, head, tracks)
    identifiers = [str(n) for n in track_names] if track_names is not None else list(sel.identifiers)
    labels = [""] * len(sel) if plain else list(sel.labels)  # no targets file: no descriptions
    if len(identifiers) != len(sel):
        raise ValueError(f"{len(identifiers)} track identifiers for {len(sel)} tracks")
    files = [f"{c}_{_sanitize(i)}.bw" for c, i in zip(sel.columns, identifiers)]
    if len(set(files)) != len(files):
        raise ValueError("two tracks map to the same bigWig file name")
    return sel, identifiers, labels, files


def genome_tracks(model, head, tracks=None, track_names=None) -> Tuple[object, GenomeTracks]:
    """(head as the job records it, GenomeTracks) for :func:`predict_genome`'s arguments."""
    names, multi = head_names(model, head, [k for k in (tracks if isinstance(tracks, dict) else ()) if k])
    if not multi:
        names = [names[0] or model.head_names[0]]

    def of(value, h):
        return value.get(h) if isinstance(value, dict) else value
    heads, ids, labels, files = [], [], [], []
    for h in names:
        sel, i, lb, f = _head_tracks(model, h, of(tracks, h), of(track_names, h))
        heads.append((h, sel))
        ids += i
        labels += lb
        files += [f"{h}/{x}" for x in f] if multi else f
    return (names if multi else names[0]), GenomeTracks(heads, ids, labels, files, multi)


class _PartialArray:
    """A ``[tracks, bins]`` ``.npy`` file filled with positioned writes.

    Not a memory map: the pages of a mapped partial count in the process's resident memory
    until the OS evicts them (tens of GB for hg38 chr1 at 5,313 tracks); positioned writes
    keep the process's memory at one batch. The file stays a valid ``.npy`` (``np.load``).
    """

    def __init__(self, path: Path, shape: Tuple[int, int], dtype: np.dtype, create: bool):
        self.shape, self.dtype = shape, np.dtype(dtype)
        if create:  # header + a sparse data section (never-written bins read as 0)
            np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape).flush()
        self.offset = _npy_data_offset(path, shape, self.dtype)
        self.fd = os.open(path, os.O_RDWR)

    def write(self, b0: int, values: np.ndarray) -> None:
        """values [bins, tracks] -> bins b0.. of every track's row."""
        rows = np.ascontiguousarray(values.T, dtype=self.dtype)
        stride = self.shape[1] * self.dtype.itemsize
        for t in range(self.shape[0]):
            os.pwrite(self.fd, rows[t].tobytes(), self.offset + t * stride + b0 * self.dtype.itemsize)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _npy_data_offset(path: Path, shape, dtype: np.dtype) -> int:
    """Where a C-order ``.npy`` file's data starts (the file is header + data)."""
    offset = os.path.getsize(path) - int(np.prod(shape)) * np.dtype(dtype).itemsize
    if offset <= 0:
        raise ValueError(f"{path}: not a {tuple(shape)} {np.dtype(dtype)} array file")
    return offset


def _read_row(path: Path, shape, dtype: np.dtype, t: int, b0: int, b1: int) -> np.ndarray:
    """Bins [b0, b1) of track row t of a partial, as float32 [b1 - b0]."""
    dtype = np.dtype(dtype)
    offset = _npy_data_offset(path, shape, dtype) + (t * shape[1] + b0) * dtype.itemsize
    return np.fromfile(path, dtype=dtype, count=b1 - b0, offset=offset).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Prediction of one batch
# ----------------------------------------------------------------------------------------------
class Chrom(NamedTuple):
    """A chromosome of the job: its position in the FASTA (which names its partial), name, length."""

    index: int
    name: str
    length: int


class GenomeJob(NamedTuple):
    """What every chromosome of one job shares: the window placement, the tracks, the
    ensemble (``batch_size`` windows per engine call), the job's key and its partials' folder."""

    tiling: Tiling
    tracks: GenomeTracks
    ensemble: Ensemble
    key: str
    partial: Path


def _window_codes(fa, tiling: Tiling, chrom: Chrom, k: int) -> Optional[np.ndarray]:
    """Window k's codes uint8 [L], or None when its output region is all N (not predicted)."""
    s, e = tiling.window(k)
    codes = dna.encode(fetch(fa, chrom.name, s, e), what=f"{chrom.name}:{s}-{e}")
    o0, o1 = tiling.output(k, chrom.length)
    if np.all(codes[tiling.crop:tiling.crop + (o1 - o0)] == CODE_N):
        return None  # gap or telomere: no entries for these bins
    return codes


def _predict_windows(model, job: GenomeJob, chrom: Chrom, ks: Sequence[int], codes: Sequence[np.ndarray],
                     dtype: np.dtype) -> List[Tuple[int, np.ndarray]]:
    """One engine call for windows ``ks`` -> [(first bin, values [bins, tracks] in the partial's
    dtype)]: the unit of work of the single-process loop and of a distributed task. Every head
    from one trunk pass, their tracks side by side; with ``rc``, strand-paired tracks swap their
    reverse-complement predictions (basenji's ``SwitchReverse``)."""
    ps = predict(model, np.stack(codes), dict(job.tracks.heads), job.ensemble)
    pred = np.concatenate([ps[h] for h, _ in job.tracks.heads], axis=-1) if job.tracks.multi else next(iter(ps.values()))
    out = []
    for j, k in enumerate(ks):
        b0, b1 = job.tiling.bins(k, chrom.length)
        vals = pred[j, :b1 - b0]
        out.append((b0, to_float16(vals) if dtype == np.float16 else vals.astype(dtype)))
    return out


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------
def predict_genome(model, fasta: PathLike, out_dir: PathLike, head: Optional[str] = None, tracks=None,
                   track_names: Optional[Sequence[str]] = None, chroms: Optional[Sequence[str]] = None,
                   rc: bool = False, shifts: Sequence[int] = (0,), batch_size: int = 4,
                   n_encoding: str = "zeros", progress: bool = True, overwrite: bool = False,
                   model_file: Optional[PathLike] = None, assembly_workers: Optional[int] = None,
                   scheduler=None, workers: Optional[int] = None, shard=None) -> dict:
    """Predict every chromosome of a genome in abutting windows and write one bigWig per track.

    Parameters
    ----------
    model : Model or path
        A loaded :class:`basenji2_fast.Model`, or a model file to load.
    fasta : path
        Genome FASTA (indexed with pyfaidx; a read-only folder without ``.fai`` works).
        Soft-masked (lower-case) bases read as the same bases.
    out_dir : path
        Output folder: ``<column>_<identifier>.bw`` per track and ``manifest.json``.
    head : str, optional
        Head name (default: the model's first head), or ``"both"`` / a list of heads: every
        head from one trunk pass per window, each head's bigWigs in ``out_dir/<head>/`` (the
        manifest's ``heads`` section lists them); ``tracks`` and ``track_names`` are then
        dicts {head: value} (a plain value applies to every head).
    tracks : None, list of int, or TrackSelection
        Head columns to write (None: all). A ``TrackSelection``
        (:func:`basenji2_fast.targets.select_tracks`) also gives identifiers, labels and, with
        ``rc``, the strand pairs (for each track, its partner's position in the selection)
        swapped in the reverse-complement passes.
    track_names : list of str, optional
        Identifiers for the tracks (file names, manifest); default ``t<column>``, or the
        TrackSelection's identifiers.
    chroms : list of str, optional
        Chromosomes to predict (default: all of the FASTA). Written in FASTA order.
    rc, shifts : ensemble as in :meth:`Model.predict` (basenji's ``--rc`` / ``--shifts``).
    batch_size : int
        Windows per engine call; the memory of one batch is ``batch_size x [n_bins, tracks]``
        float32.
    n_encoding : "zeros" or "uniform"
        How N (gaps, and the padding beyond chromosome ends) is encoded.
    progress : bool
        A tqdm bar over all windows of the job (windows/s, ETA).
    overwrite : bool
        Start over when ``out_dir`` holds a job with other options (default: error).
    model_file : path, optional
        The file ``model`` was loaded from, to record its sha256 in the manifest (set
        automatically when ``model`` is a path).
    assembly_workers : int, optional
        Processes writing bigWigs once the predictions are done (default: the model's
        threads); used only for jobs of more than :data:`PARALLEL_ASSEMBLY_VALUES` values.
    scheduler, workers, shard : distributed runs (:mod:`basenji2_fast.runner`): a Dask
        scheduler address / Client, or N local worker processes; tasks of ``batch_size``
        windows. ``shard="I/N"`` computes only shard I's tasks into ``out_dir`` (no bigWigs;
        ``basenji2-fast merge`` combines shards). The bigWigs are byte-identical to a
        single-process run's.

    Returns
    -------
    dict
        The manifest (also in ``out_dir/manifest.json``); when ``out_dir`` already held this
        finished job, nothing is computed or written and the dict has ``"status":
        "up-to-date"``.

    Raises
    ------
    ValueError
        A chromosome not in the FASTA, a bad track / head / option, or an OUTDIR holding a
        job with other options. Inputs are checked before anything is written.
    """
    t_run = time.time()
    if not hasattr(model, "predict"):
        model_file = model if model_file is None else model_file
        model = load(model)
    # Check every input before touching OUTDIR, so bad inputs leave nothing behind.
    tiling = tiling_of(model)
    head, tr = genome_tracks(model, head, tracks, track_names)
    # model._ensemble: a shift beyond the window is refused here, before .partial/job.json
    ensemble = model._ensemble(rc, shifts, n_encoding, check_positive_int("batch_size", batch_size))
    batch_size = ensemble.batch_size
    fa = open_fasta(fasta)
    sizes = [(name, len(fa[name])) for name in fa.keys()]
    sizes = [(n, s) for n, s in sizes if s > 0]  # an empty record has no bins and no bigWig line
    index = {n: i for i, (n, _) in enumerate(sizes)}
    if chroms is not None:
        chroms = [str(c) for c in chroms]
        for c in chroms:
            if c not in index:
                raise ValueError(f"{fasta}: no chromosome {c!r} (have {', '.join(n for n, _ in sizes[:10])}"
                                 f"{', ...' if len(sizes) > 10 else ''})")
        wanted = set(chroms)
        todo = [Chrom(i, n, s) for i, (n, s) in enumerate(sizes) if n in wanted]
    else:
        todo = [Chrom(i, n, s) for i, (n, s) in enumerate(sizes)]
    if not todo:
        raise ValueError(f"{fasta}: no chromosomes to predict")

    # The job's identity: everything that changes the files' contents.
    meta = model.spec.metadata
    model_info = {"weights_sha256": weights_sha256(model.spec), "file": meta.get("file"),
                  "source": meta.get("source", []), "geometry": asdict(tiling)}
    if model_file is not None:
        model_info["file"] = Path(model_file).name
        model_info["file_sha256"] = file_sha256(model_file)
    if rc:
        for _, sel in tr.heads:
            sel.rc_strand_pair()  # refuses a stranded track selected without its partner
    job = {
        "format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION,
        "model": {"weights_sha256": model_info["weights_sha256"], "geometry": asdict(tiling),
                  # bf16 changes the outputs; fp32 jobs keep the identity they always had
                  **({"precision": model.precision} if getattr(model, "precision", "fp32") != "fp32" else {})},
        "genome": {"fasta_bytes": os.path.getsize(fasta), "chromosomes": sizes},
        "head": head,
        "tracks": {"columns": tr.columns, "identifiers": tr.identifiers, "labels": tr.labels,
                   "strand_pair": tr.strand_pair if rc else None, "files": tr.files},
        "chroms": [c.name for c in todo], "rc": ensemble.rc, "shifts": list(ensemble.shifts),
        "n_encoding": n_encoding,
    }
    key = canonical_sha(job)
    placement = runner.Placement(scheduler, workers, shard)  # a scheduler file is checked here

    out_dir = check_output(out_dir, folder=True)
    manifest_path = out_dir / MANIFEST
    partial = out_dir / PARTIAL
    old = read_json(manifest_path) if manifest_path.exists() else None
    if manifest_path.exists() and (not isinstance(old, dict) or old.get("format") != JOB_FORMAT):
        # Someone else's manifest.json: not ours to replace, even with overwrite.
        raise ValueError(f"{manifest_path}: not a predict-genome manifest; write the job to another output folder")
    if old is not None and old.get("job_key") == key:
        if all((out_dir / f).is_file() for f in tr.files):
            # Finished with the same options: nothing to do, but tasks of this job gathered again
            # by a rerun merge (or left by a run killed before removing them) go.
            stale = read_json(partial / "job.json") if (partial / "job.json").exists() else None
            if isinstance(stale, dict) and stale.get("job_key") == key:
                with job_lock(out_dir, ".predict-genome.lock", "predict-genome"):
                    shutil.rmtree(partial, ignore_errors=True)
            return {**old, "status": "up-to-date"}
    old_partial = read_json(partial / "job.json") if (partial / "job.json").exists() else None
    conflict = ((old is not None and old.get("job_key") != key)
                or (old_partial is not None and old_partial.get("job_key") != key)
                or (manifest_path.exists() and old is None))
    if conflict and not overwrite:
        raise OptionError(f"{out_dir} holds a predict-genome job with other options (model, genome, tracks, "
                          "chromosomes or ensemble); use another output folder, or {overwrite} to start over",
                          overwrite=("overwrite=True", "--overwrite"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with job_lock(out_dir, ".predict-genome.lock", "predict-genome"):
        if conflict or old is not None:
            # Start over: only the files an earlier job of ours wrote are removed.
            for f in (old or {}).get("tracks", {}).get("files", []):
                (out_dir / _inside(f)).unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)
            if partial.exists():
                shutil.rmtree(partial)
        partial.mkdir(exist_ok=True)
        if not (partial / "job.json").exists():
            write_json(partial / "job.json", {"job_key": key, "job": job})
        gj = GenomeJob(tiling, tr, ensemble, key, partial)
        state = [_chrom_state(gj, c) for c in todo]
        total = sum(tiling.n_windows(c.length) for c in todo)
        done0 = sum(st["next_window"] for st in state)
        if placement.distributed:
            # Several heads: each task runs the trunk once per window for all of them.
            shard_record = _run_tasks(model, fasta, gj, todo, state, job, placement, progress)
            if shard_record is not None:
                return shard_record  # a shard: its task files only, no bigWigs
        else:
            with tqdm(total=total, initial=done0, unit="window", desc="predict-genome", disable=not progress,
                      dynamic_ncols=True) as bar:
                for c, st in zip(todo, state):
                    if st["done"]:
                        continue
                    bar.set_postfix_str(c.name, refresh=False)
                    _run_chromosome(model, fa, gj, c, st, bar)
        t_asm = time.time()
        for h, _ in (tr.heads if tr.multi else ()):
            (out_dir / h).mkdir(exist_ok=True)
        records = [read_json(partial / f"{c.index}.json") for c in todo]
        asm_workers = _assemble(out_dir, partial, sizes, todo, records, tiling, tr,
                                assembly_workers or getattr(model, "threads", None) or 1)
        asm_seconds = time.time() - t_asm
        n_win = sum(r["windows"] for r in records)
        n_skip = sum(len(r["skipped"]) for r in records)
        compute = sum(r["seconds"] for r in records)
        manifest = {
            "format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION, "version": __version__,
            "job_key": key,
            "model": model_info,
            "genome": {"fasta": str(Path(fasta).resolve()), "fasta_bytes": job["genome"]["fasta_bytes"],
                       "chromosomes": [[n, s] for n, s in sizes]},
            "options": {"head": head, "rc": ensemble.rc, "shifts": list(ensemble.shifts), "n_encoding": n_encoding,
                        "batch_size": batch_size, "threads": getattr(model, "threads", None)},
            "tracks": {"columns": tr.columns, "identifiers": tr.identifiers, "labels": tr.labels,
                       "strand_pair": tr.strand_pair if rc else None, "files": tr.files},
            **({"heads": {h: {"dir": h, "columns": cols, "identifiers": ids, "files": files}
                          for h, cols, ids, files in tr.by_head()}} if tr.multi else {}),
            "tiling": {**asdict(tiling), "stride": tiling.stride,
                       "first_window_start": -tiling.crop, "skip": "windows whose output region is all N"},
            "chromosomes": [{"name": n, "length": s, "windows": r["windows"], "skipped_windows": r["skipped"],
                             "bins": tiling.n_chrom_bins(s), "partial_dtype": r["dtype"],
                             "seconds": round(r["seconds"], 3)} for (_, n, s), r in zip(todo, records)],
            "windows": {"total": n_win, "predicted": n_win - n_skip, "skipped": n_skip},
            "timing": {"compute_seconds": round(compute, 3),
                       "windows_per_second": round((n_win - n_skip) / compute, 4) if compute > 0 else None,
                       "assembly_seconds": round(asm_seconds, 3), "assembly_workers": asm_workers,
                       "this_run_seconds": round(time.time() - t_run, 3),
                       "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        }
        write_json(manifest_path, manifest)
        shutil.rmtree(partial)
    return manifest


def _inside(f: str) -> Path:
    """A manifest's file name as a path inside the output folder (``<head>/<file>`` for
    several heads); anything that would leave the folder is reduced to its name."""
    rel = Path(f)
    return Path(rel.name) if rel.is_absolute() or ".." in rel.parts else rel


def _partial_dtype(n_tracks: int, n_bins: int) -> np.dtype:
    return np.dtype(np.float32 if n_tracks * n_bins * 4 <= FLOAT32_PARTIAL_LIMIT else np.float16)


def _partial_shape(job: GenomeJob, chrom: Chrom) -> Tuple[Tuple[int, int], np.dtype]:
    """((tracks, bins), dtype) of a chromosome's partial."""
    shape = (len(job.tracks), job.tiling.n_chrom_bins(chrom.length))
    return shape, _partial_dtype(*shape)


def _chrom_state(job: GenomeJob, chrom: Chrom) -> dict:
    """Where a chromosome stands: committed, checkpointed at some window, or not started."""
    partial, i, key = job.partial, chrom.index, job.key
    shape, dtype = _partial_shape(job, chrom)
    rec = read_json(partial / f"{i}.json")
    if (rec is not None and rec.get("job_key") == key and rec.get("name") == chrom.name
            and (partial / f"{i}.npy").is_file()):
        return {"done": True, "next_window": rec["windows"]}
    prog = read_json(partial / f"{i}.progress.json")
    inprog = partial / f"{i}.npy.inprogress"
    if (prog is not None and prog.get("job_key") == key and prog.get("shape") == list(shape)
            and prog.get("dtype") == dtype.str and inprog.is_file()):
        return {"done": False, "next_window": int(prog["next_window"]), "skipped": list(prog["skipped"]),
                "seconds": float(prog["seconds"])}
    return {"done": False, "next_window": 0, "skipped": [], "seconds": 0.0}


def _commit(job: GenomeJob, chrom: Chrom, skipped: List[int], seconds: float) -> None:
    """A filled ``<i>.npy.inprogress`` becomes ``<i>.npy``, committed by ``<i>.json`` (written last)."""
    partial, i = job.partial, chrom.index
    shape, dtype = _partial_shape(job, chrom)
    os.replace(partial / f"{i}.npy.inprogress", partial / f"{i}.npy")
    write_json(partial / f"{i}.json", {"job_key": job.key, "name": chrom.name, "length": chrom.length,
                                         "windows": job.tiling.n_windows(chrom.length), "skipped": skipped,
                                         "dtype": dtype.str, "shape": list(shape), "seconds": seconds})
    (partial / f"{i}.progress.json").unlink(missing_ok=True)


def _run_chromosome(model, fa, job: GenomeJob, chrom: Chrom, st: dict, bar) -> None:
    """Fill ``<i>.npy.inprogress`` ([tracks, bins]) window by window, checkpoint, commit."""
    n_win = job.tiling.n_windows(chrom.length)
    shape, dtype = _partial_shape(job, chrom)
    inprog = job.partial / f"{chrom.index}.npy.inprogress"
    progress_path = job.partial / f"{chrom.index}.progress.json"
    if st["next_window"] == 0:
        progress_path.unlink(missing_ok=True)
    arr = _PartialArray(inprog, shape, dtype, create=st["next_window"] == 0)
    skipped: List[int] = list(st["skipped"])
    seconds = st["seconds"]
    t0 = time.time()
    last_ckpt = t0

    def checkpoint(next_window: int) -> None:
        arr.sync()  # the data first: the record promises these windows are on disk
        write_json(progress_path, {"job_key": job.key, "name": chrom.name, "shape": list(shape), "dtype": dtype.str,
                                    "next_window": next_window, "skipped": skipped,
                                    "seconds": seconds + time.time() - t0})

    pending: List[Tuple[int, np.ndarray]] = []

    def flush_batch() -> None:
        for b0, vals in _predict_windows(model, job, chrom, [k for k, _ in pending], [c for _, c in pending], dtype):
            arr.write(b0, vals)
        bar.update(len(pending))
        pending.clear()

    try:
        for k in range(st["next_window"], n_win):
            codes = _window_codes(fa, job.tiling, chrom, k)
            if codes is None:
                skipped.append(k)  # gap or telomere: no entries for these bins
                bar.update(1)
            else:
                pending.append((k, codes))
            if len(pending) >= job.ensemble.batch_size or (k == n_win - 1 and pending):
                flush_batch()
                if time.time() - last_ckpt >= CHECKPOINT_SECONDS and k < n_win - 1:
                    checkpoint(k + 1)
                    last_ckpt = time.time()
        arr.sync()
    finally:
        arr.close()
    _commit(job, chrom, skipped, seconds + time.time() - t0)


# ----------------------------------------------------------------------------------------------
# Distributed runs: tasks of batch_size windows of one chromosome (runner)
# ----------------------------------------------------------------------------------------------
def windows_task(model, path: Path, fasta: str, job: GenomeJob, chrom: Chrom, dtype: str, k0: int, k1: int) -> None:
    """Windows [k0, k1) of one chromosome -> ``path``: ``b0`` (first bin of each predicted
    window), ``values`` [bins, tracks] (their bins, concatenated, in the partial's dtype),
    ``skipped`` (all-N windows), ``seconds``."""
    t0 = time.time()
    fa = runner.worker_fasta(fasta)
    ks, codes, skipped = [], [], []
    for k in range(k0, k1):
        c = _window_codes(fa, job.tiling, chrom, k)
        if c is None:
            skipped.append(k)
        else:
            ks.append(k)
            codes.append(c)
    parts = _predict_windows(model, job, chrom, ks, codes, np.dtype(dtype)) if ks else []
    runner.save_task(path, b0=np.array([b for b, _ in parts], np.int64),
                     n=np.array([len(v) for _, v in parts], np.int64),
                     values=np.concatenate([v for _, v in parts]) if parts else np.zeros((0, len(job.tracks)), dtype),
                     skipped=np.array(skipped, np.int64), seconds=np.float64(time.time() - t0))


def _run_tasks(model, fasta, job: GenomeJob, todo: List[Chrom], state: List[dict], record: dict,
               placement: runner.Placement, progress: bool) -> Optional[dict]:
    """The chromosomes not yet committed, as tasks; each chromosome's task files are merged into
    its partial (``<i>.npy`` + ``<i>.json``, as a single-process run commits them) as soon as
    all are in. Returns the shard record for a shard, else None."""
    fasta = os.path.abspath(os.fspath(fasta))
    tiling, bs, partial = job.tiling, job.ensemble.batch_size, job.partial
    left: Dict[int, set] = {}

    def files(c: Chrom) -> List[str]:
        return [f"t{c.index}_{k0}.npz" for k0 in range(0, tiling.n_windows(c.length), bs)]

    def commit(c: Chrom) -> None:
        shape, dtype = _partial_shape(job, c)
        arr = _PartialArray(partial / f"{c.index}.npy.inprogress", shape, dtype, create=True)
        skipped, seconds = [], 0.0
        try:
            for f in files(c):
                with np.load(partial / f) as z:
                    values, r = z["values"], 0
                    for b0, n in zip(z["b0"], z["n"]):
                        arr.write(int(b0), values[r:r + n])
                        r += n
                    skipped += [int(k) for k in z["skipped"]]
                    seconds += float(z["seconds"])
            arr.sync()
        finally:
            arr.close()
        _commit(job, c, sorted(skipped), seconds)
        for f in files(c):
            (partial / f).unlink()

    with runner.Runner("predict-genome", model, placement, progress=progress) as run:
        total = sum(tiling.n_windows(c.length) for c in todo)
        done = sum(tiling.n_windows(c.length) for c, st in zip(todo, state) if st["done"])
        run.open(partial, record, total - done, "window")
        chroms = {c.index: c for c, st in zip(todo, state) if not st["done"]}
        left = {i: set(files(c)) for i, c in chroms.items()}

        def on_done(task: str) -> None:
            i = int(task[1:].split("_")[0])
            left[i].discard(task)
            if not left[i] and not run.is_shard:
                commit(chroms[i])

        for i, c in chroms.items():
            dtype = _partial_shape(job, c)[1].str
            n_win = tiling.n_windows(c.length)
            for k0 in range(0, n_win, bs):
                k1 = min(n_win, k0 + bs)
                run.add(runner.Task(f"t{i}_{k0}.npz", windows_task, (fasta, job, c, dtype, k0, k1), k1 - k0, on_done))
        run.wait()
        if run.is_shard:
            return run.write_shard(partial.parent)
    return None


def _runs(n_windows: int, skipped: Sequence[int]) -> List[Tuple[int, int]]:
    """Maximal runs [k0, k1) of predicted (not skipped) windows."""
    skip = set(skipped)
    runs, k = [], 0
    while k < n_windows:
        if k in skip:
            k += 1
            continue
        k0 = k
        while k < n_windows and k not in skip:
            k += 1
        runs.append((k0, k))
    return runs


def _write_tracks(out_dir: Path, partial: Path, sizes, todo, records, tiling: Tiling,
                  jobs: Sequence[Tuple[int, str]]) -> None:
    """Write the bigWigs of ``jobs`` ((row in the partials, file name) pairs), each under a
    temporary name renamed when complete, from the committed partials."""
    import pyBigWig

    bs = tiling.bin_size
    for t, fname in jobs:
        with atomic_output(Path(out_dir) / fname) as tmp:
            bw = pyBigWig.open(str(tmp), "w")
            if bw is None:
                raise OSError(f"{tmp}: pyBigWig cannot create the file")
            try:
                bw.addHeader([(n, int(s)) for n, s in sizes], maxZooms=10)
                for (i, name, size), rec in zip(todo, records):
                    path = Path(partial) / f"{i}.npy"
                    shape = tuple(rec["shape"])
                    n_bins = shape[1]
                    for k0, k1 in _runs(rec["windows"], rec["skipped"]):
                        b0, b1 = k0 * tiling.n_bins, min(n_bins, k1 * tiling.n_bins)
                        row = _read_row(path, shape, rec["dtype"], t, b0, b1)
                        # A bin that would end past the chromosome is written as a bedGraph
                        # entry ending at the chromosome's end (fixed-step spans cannot).
                        partial_last = b1 == n_bins and size % bs != 0
                        full = row[:-1] if partial_last else row
                        if full.size:
                            bw.addEntries(name, b0 * bs, values=np.ascontiguousarray(full), span=bs, step=bs)
                        if partial_last:
                            bw.addEntries([name], [(n_bins - 1) * bs], ends=[int(size)],
                                          values=np.ascontiguousarray(row[-1:]))
            finally:
                bw.close()


def _assembly_worker(spec_path: str) -> None:
    """Entry point of an assembly process: write the bigWigs listed in a spec file."""
    spec = json.loads(Path(spec_path).read_text())
    _write_tracks(Path(spec["out_dir"]), Path(spec["partial"]), [tuple(x) for x in spec["sizes"]],
                  [tuple(x) for x in spec["todo"]], spec["records"], Tiling(**spec["tiling"]),
                  [tuple(x) for x in spec["jobs"]])


def _assemble(out_dir: Path, partial: Path, sizes, todo, records, tiling: Tiling, tr: GenomeTracks,
              workers: int) -> int:
    """Write every track's bigWig into ``partial/staged/``, then move them all into
    ``out_dir`` together (the manifest follows): an interrupted assembly leaves no bigWig under
    its final name. Returns the number of processes used."""
    staged = partial / STAGED
    for f in tr.files:
        (staged / f).parent.mkdir(parents=True, exist_ok=True)
        for tmp in (out_dir / f).parent.glob(f".{glob.escape(Path(f).name)}.*.tmp"):
            tmp.unlink(missing_ok=True)  # written by earlier versions straight into out_dir
    used = _write_bigwigs(staged, partial, sizes, todo, records, tiling, tr, workers)
    for f in tr.files:  # all written: into place in one sweep of renames, then the manifest
        os.replace(staged / f, out_dir / _inside(f))
    return used


def _write_bigwigs(out_dir: Path, partial: Path, sizes, todo, records, tiling: Tiling, tr: GenomeTracks,
                   workers: int) -> int:
    """Write every track's bigWig into ``out_dir``; returns the number of processes used.

    pyBigWig compresses ~1.5 M values/s on one core and holds the GIL, so a job of many tracks
    (hg38 at 5,313 tracks is 1.3e11 values, about a day on one core) writes its tracks (independent
    files) in parallel processes. They are fresh interpreters (``python -c``), neither forked
    (the engine's OpenMP threads live in this process) nor multiprocessing-spawned (which
    re-runs a calling script that lacks an ``if __name__ == "__main__"`` guard). Small jobs stay
    in this process: starting workers would cost more than it saves.
    """
    jobs = list(enumerate(tr.files))
    for f in tr.files:  # temporaries of a run killed while writing (atomic_output's names)
        for tmp in (out_dir / f).parent.glob(f".{glob.escape(Path(f).name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
    n_values = len(jobs) * sum(tiling.n_chrom_bins(s) for _, _, s in todo)
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1 or n_values < PARALLEL_ASSEMBLY_VALUES:
        _write_tracks(out_dir, partial, sizes, todo, records, tiling, jobs)
        return 1
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very package
    env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    code = "import sys; from basenji2_fast.workflows.genome_tiling import _assembly_worker; _assembly_worker(sys.argv[1])"
    procs = []
    try:
        for w in range(workers):
            spec = partial / f"assemble.{w}.json"
            write_json(spec, {"out_dir": str(out_dir), "partial": str(partial), "sizes": sizes, "todo": todo,
                               "records": records, "tiling": asdict(tiling), "jobs": jobs[w::workers]})
            with open(partial / f"assemble.{w}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-c", code, str(spec)], stdout=log, stderr=log,
                                              env=env))
        failed = [w for w, p in enumerate(procs) if p.wait() != 0]
        if failed:
            lines = (partial / f"assemble.{failed[0]}.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"writing bigWigs failed in a worker process: {lines[-1] if lines else 'no message'}")
    finally:
        for p in procs:  # on an error or an interrupt, leave no worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    return workers


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def run_predict_genome(args) -> int:
    """``basenji2-fast predict-genome``; prints what it wrote, or a one-line error (exit status 1)."""
    def work():
        head, tracks, targets = track_request(args)
        model = load_model(args)
        multi, reqs = plan_heads(model, head, tracks, targets)
        sels = {}
        for r in reqs:
            if r.targets is not None or r.tracks is not None:
                h, sel = resolve_tracks(model, r.head, r.tracks, r.targets)
            else:
                h, sel = r.head or model.head_names[0], None
            sels[h] = sel
        head, tracks = (list(sels), sels) if multi else next(iter(sels.items()))
        chroms = [c.strip() for c in args.chroms.split(",") if c.strip()] if args.chroms else None
        manifest = predict_genome(model, args.fasta, args.out_dir, head=head, tracks=tracks, chroms=chroms,
                                  rc=args.rc, shifts=args.shifts, batch_size=args.batch_size,
                                  n_encoding=args.n_encoding, progress=not args.quiet, overwrite=args.overwrite,
                                  model_file=args.model, **distributed_kwargs(args))
        if manifest.get("status") == "shard":
            print(f"wrote shard {manifest['shard'][0]}/{manifest['shard'][1]} ({len(manifest['tasks'])} tasks) to "
                  f"{args.out_dir}; combine the shards with basenji2-fast merge")
            return
        w = manifest["windows"]
        if manifest.get("status") == "up-to-date":
            print(f"{args.out_dir} already holds this finished job (manifest.json); nothing to do")
            return
        dirs = f" ({', '.join(f'{h}/' for h in manifest['heads'])})" if "heads" in manifest else ""
        print(f"wrote {len(manifest['tracks']['files'])} bigWigs{dirs} and {MANIFEST} to {args.out_dir} "
              f"({w['predicted']:,} windows predicted, {w['skipped']:,} all-N windows skipped)")

    return one_line_errors(getattr(args, "command", None) or "predict-genome", work)


def add_predict_genome_subcommand(subparsers) -> argparse.ArgumentParser:
    """Register ``predict-genome`` on an argparse subparsers object (sets ``func``)."""
    p = subparsers.add_parser(
        "predict-genome", help="predict whole chromosomes into one bigWig per track",
        description="Tile every chromosome with windows whose output regions abut (stride n_bins x bin_size; "
                    "the first output bin is the chromosome's first bin), skip windows whose output is all N, "
                    "and write OUT_DIR/<column>_<identifier>.bw per track plus manifest.json. An interrupted "
                    "run resumes where it stopped; rerunning a finished job does nothing.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    add_track_options(p)
    add_ensemble_options(p)
    p.add_argument("--chroms", default=None, help="comma-separated chromosomes (default: all of the FASTA)")
    add_batch_size_option(p, 4)
    add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="start over when OUT_DIR holds a job with other options")
    add_distributed_options(p)
    p.set_defaults(func=run_predict_genome)
    return p
