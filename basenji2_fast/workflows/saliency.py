"""Contribution scores of BED regions: which bases drive the predictions of each region's window.

Each region gets the model window centred on ``mid = (start + end) // 2`` (as predict-bed and
sat), reverse-complemented for ``-`` strand regions (scores and bases then read 5'->3' on that
strand, as sat's). The score is the gradient of one number with respect to the one-hot input
(:meth:`basenji2_fast.Model.gradients`, the engine's backward pass): the predictions (the
``--rc`` / ``--shifts`` ensemble's mean) summed over the chosen tracks and output bins. What
is written per base (:meth:`basenji2_fast.Model.saliency`):

================  ===================================================================
``grad``          the gradient itself, on all four bases (the default)
``input_x_grad``  the one-hot input times the gradient: the score sits on the base present
``centered``      the gradient less its mean over the four bases at each position
================  ===================================================================

Bins: ``center`` (the default) sums bins ``n_bins // 2`` and ``n_bins // 2 + 1``, the two bins
sat's ``center`` statistic sums; ``all``; or ``A-B``, bins ``A .. B-1`` (0-based, end excluded, as
BED). Bins count in the window's orientation (for a ``-`` strand region, from its 5' end).

``OUT_DIR/saliency.h5``:

``scores`` float32 [N, len, 4] (A, C, G, T columns) over the central ``len`` bases of the
window (``--stretch``; default the whole window), ``seqs`` bool [N, len, 4] (one-hot of those
bases; an N row is all False), ``chr`` bytes [N], ``strand`` bytes [N], ``start`` / ``end`` int64
[N] (the stretch's genomic coordinates; for ``-`` strand regions stretch index ``k`` is genomic
position ``end - 1 - k``, complemented), and attributes: ``method``, ``bins`` (the text given),
``bin_indices`` (int [n]; absent for all bins), ``head``, ``track_columns`` (head columns summed),
``track_ids``, ``track_labels``, ``rc``, ``shifts``, ``n_encoding``, ``seq_length``, ``stretch_first``
(the stretch's first position in the window).

The regions run as tasks of ``--batch-size`` regions (:mod:`basenji2_fast.runner`): in this
process, on a Dask cluster or as shards, each committed to a task file, so an interrupted run
resumes where it stopped; saliency.h5 is written under a temporary name from the committed
tasks and renamed when complete, byte-identical whichever way the tasks ran.

Several heads (``--head both``): ``OUT_DIR/<head>/saliency.h5`` per head, each as a single-head
run of that head (the gradient is of one head's predictions).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import h5py
import numpy as np

from .. import runner
from .._io import atomic_output, check_output
from ..cli_options import (add_batch_size_option, add_distributed_options, add_ensemble_options, add_fasta_option,
                           add_model_options, add_run_options, add_track_options, distributed_kwargs, load_model,
                           one_line_errors, positive_int, print_written, track_request)
from ..dna import onehot_mask
from ..genome import Region, as_fasta, as_regions, check_contigs, fasta_identity, fasta_path, read_bed
from ..model import SALIENCY_METHODS, Ensemble
from ..spec import weights_sha256
from ..targets import TrackSelection
from ..windows import (centred_stretch, engine_tracks, parse_bins, plan_heads, resolve_tracks,
                       stretch_span, window_codes)

#: The task folder in OUT_DIR (one file per batch of regions).
TASKS = ".saliency_partial"
OUTPUT = "saliency.h5"


class Scoring(NamedTuple):
    """What each window's scores are: ``method`` over the output ``bins`` (None: all), kept
    for ``length`` bases from window position ``first``."""

    method: str
    bins: Optional[Tuple[int, ...]]
    first: int
    length: int


def score_windows(model, codes: np.ndarray, scoring: Scoring, head: str, sel: TrackSelection,
                  ensemble: Ensemble) -> Tuple[np.ndarray, np.ndarray]:
    """Windows (uint8 codes [B, L], model orientation) -> (seqs bool [B, length, 4], scores
    float32 [B, length, 4]) of the stretch ``scoring`` keeps."""
    cols, pair = engine_tracks(model, head, sel, ensemble.rc)
    s = model.saliency(codes, method=scoring.method, tracks=cols, bins=scoring.bins, head=head,
                       strand_pair=pair, **ensemble.options())
    cut = slice(scoring.first, scoring.first + scoring.length)
    return onehot_mask(codes[:, cut]), np.ascontiguousarray(s[:, cut])


def batch_task(model, path: Path, fasta: str, batch: List[Region], scoring: Scoring, head: str,
               sel: TrackSelection, ensemble: Ensemble) -> None:
    """A batch of regions -> ``path``: ``seqs`` (bool [batch, length, 4]) and ``scores``
    (float32 [batch, length, 4])."""
    fa = runner.worker_fasta(fasta)
    codes = np.stack([window_codes(fa, r, model.seq_length, r.strand) for r in batch])
    seqs, scores = score_windows(model, codes, scoring, head, sel, ensemble)
    runner.save_task(path, seqs=seqs, scores=scores)


def saliency_bed(model, fasta, bed, out_dir, stretch: Optional[int] = None, bins="center",
                 method: str = "grad", head: Optional[str] = None, tracks=None, targets=None, rc: bool = False,
                 shifts: Sequence[int] = (0,), n_encoding: str = "zeros", batch_size: int = 4,
                 progress: bool = True, scheduler=None, workers: Optional[int] = None, shard=None):
    """Contribution scores of every BED region's window -> ``out_dir/saliency.h5`` (see the
    module docstring for the file).

    Parameters
    ----------
    model : basenji2_fast.Model (fp32, CPU)
    fasta : FASTA path or open ``pyfaidx.Fasta``
    bed : BED path or a list of regions (chrom, start, end[, name, strand]); no strand = ``+``
    out_dir : output folder (created)
    stretch : bases kept, centred in the window (None: the whole window)
    bins : "center", "all" or "A-B" (0-based, end-exclusive), or a :class:`~basenji2_fast.windows.BinChoice`
    method : "grad", "input_x_grad" or "centered"
    head, tracks, targets : as :func:`basenji2_fast.windows.resolve_tracks`; the sum runs over
        the selected tracks (several heads: one file per head, see the module docstring)
    rc, shifts, n_encoding : the ensemble (:class:`basenji2_fast.model.Ensemble`)
    batch_size : regions per task and engine call
    scheduler, workers, shard : where the tasks run (:class:`basenji2_fast.runner.Placement`)

    Returns
    -------
    Path of saliency.h5 (a shard: its ``shard.json``); with several heads {head: path}.
    """
    model.require_gradients()
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(SALIENCY_METHODS)}")
    multi, reqs = plan_heads(model, head, tracks, targets)
    placement = runner.Placement(scheduler, workers, shard)
    if multi:
        placement.refuse_heads(multi, shard_only=True)
        sels = [resolve_tracks(model, r.head, r.tracks, r.targets) for r in reqs]  # all checked first
        return {h: saliency_bed(model, fasta, bed, Path(out_dir) / h, stretch=stretch, bins=bins, method=method,
                                head=h, tracks=sel, rc=rc, shifts=shifts, n_encoding=n_encoding,
                                batch_size=batch_size, progress=progress, scheduler=scheduler, workers=workers)
                for h, sel in sels}
    head, tracks, targets = reqs[0]
    L = model.seq_length
    choice = parse_bins(bins)
    bin_list = choice.indices(model.n_bins)
    first, n = (0, L) if stretch is None else centred_stretch(L, stretch)
    scoring = Scoring(method, None if bin_list is None else tuple(bin_list), first, n)
    ensemble = Ensemble(rc, shifts, n_encoding, batch_size)
    regions, source = as_regions(bed)
    if not regions:
        raise ValueError(f"{source}: no regions")
    fa = as_fasta(fasta)
    check_contigs(fa, regions, source)
    head, sel = resolve_tracks(model, head, tracks, targets)
    out_dir = check_output(out_dir, folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    path = fasta_path(fasta)
    cols, pair = engine_tracks(model, head, sel, ensemble.rc)
    job = {"command": "saliency", "model": weights_sha256(model.spec), "fasta": fasta_identity(path, fa),
           "regions": [list(r[:5]) for r in regions], "head": head, "columns": None if cols is None else list(cols),
           "strand_pair": None if pair is None else list(pair), "rc": ensemble.rc, "shifts": list(ensemble.shifts),
           "n_encoding": ensemble.n_encoding, "batch_size": batch_size, "method": method,
           "bins": None if bin_list is None else bin_list, "first": first, "length": n}
    task_dir = out_dir / TASKS
    starts = range(0, len(regions), batch_size)
    tasks = (runner.Task(f"{b0}.npz", batch_task, (path, regions[b0:b0 + batch_size], scoring, head, sel, ensemble),
                         len(regions[b0:b0 + batch_size])) for b0 in starts)
    done = runner.run_tasks("saliency", model, placement, task_dir, job, tasks, len(regions), "region", progress)
    if done is not None:
        return done  # a shard: its task files and shard.json

    N = len(regions)
    with atomic_output(out_dir / OUTPUT) as tmp, h5py.File(tmp, "w") as h5:
        seqs = h5.create_dataset("seqs", (N, n, 4), dtype="bool")
        scores = h5.create_dataset("scores", (N, n, 4), dtype="float32")
        coords = [stretch_span(r, L, first, n) for r in regions]
        h5.create_dataset("chr", data=np.array([r.chrom.encode() for r in regions]))
        h5.create_dataset("strand", data=np.array([(r.strand if r.strand == "-" else "+").encode() for r in regions]))
        h5.create_dataset("start", data=np.array([c[0] for c in coords], np.int64))
        h5.create_dataset("end", data=np.array([c[1] for c in coords], np.int64))
        for b0 in starts:
            with np.load(task_dir / f"{b0}.npz") as z:
                seqs[b0:b0 + batch_size] = z["seqs"]
                scores[b0:b0 + batch_size] = z["scores"]
        attrs = {"method": method, "bins": choice.text, "head": head,
                 "track_columns": np.asarray(sel.columns, np.int64),
                 "track_ids": [str(x) for x in sel.identifiers], "track_labels": [str(x) for x in sel.labels],
                 "rc": ensemble.rc, "shifts": np.asarray(ensemble.shifts, np.int64),
                 "n_encoding": ensemble.n_encoding, "seq_length": L, "stretch_first": first}
        if bin_list is not None:
            attrs["bin_indices"] = np.asarray(bin_list, np.int64)
        for k, v in attrs.items():
            h5.attrs[k] = v
    runner.finish(task_dir)
    return out_dir / OUTPUT


# --------------------------------------------------------------------------------------
# Command line

def _bins_option(text: str):
    """argparse type of ``--bins``: the form now (exit status 2), the range once the model is loaded."""
    try:
        return parse_bins(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_saliency_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``saliency`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "saliency", help="gradient contribution scores of BED regions (saliency, input x gradient)",
        description="For each BED region's model window ('-' strand: reverse-complemented), the gradient of the "
                    "predictions summed over the chosen tracks and output bins with respect to the one-hot input, "
                    "from the engine's backward pass; writes OUT_DIR/saliency.h5: scores float32 [regions, len, 4], "
                    "seqs, chr, strand, start, end. Draw it with basenji2-fast saliency-plot.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of regions (6th column: strand)")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    p.add_argument("--stretch", type=positive_int, default=None, metavar="LEN",
                   help="keep the central LEN bases of each window (default: the whole window)")
    p.add_argument("--bins", type=_bins_option, default="center", metavar="center|all|A-B",
                   help="output bins whose predictions are summed: center (default: bins n_bins/2 and n_bins/2+1, "
                        "the two bins sat's center statistic sums), all, or A-B = bins A..B-1 (0-based, end "
                        "excluded, as BED)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default="grad",
                   help="grad: the gradient on all four bases (default); input_x_grad: one-hot input x gradient; "
                        "centered: the gradient less its mean over the four bases")
    add_track_options(p)
    add_ensemble_options(p)
    add_run_options(p)
    add_batch_size_option(p, 4, "regions per task and engine call")
    add_distributed_options(p)
    p.set_defaults(func=run_saliency)
    return p


def run_saliency(args: argparse.Namespace) -> int:
    """The ``saliency`` subcommand; prints where it wrote, or a one-line error (exit status 1)."""
    def work():
        regions = read_bed(args.bed)  # inputs first: a bad BED or targets line fails before the model loads
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        head, tracks, targets = track_request(args)
        if args.precision not in (None, "fp32"):  # before the model loads
            raise ValueError(f"--precision {args.precision}: gradients are computed in fp32; use --precision "
                             "fp32 (the CPU's default)")
        model = load_model(args)
        if model.device != "cpu":  # --device cuda, or auto with a GPU: model.require_gradients, in CLI words
            raise ValueError(f"--device {args.device}: gradients run on the CPU engine; use --device cpu")
        path = saliency_bed(model, args.fasta, regions, args.out_dir, stretch=args.stretch,
                            bins=args.bins, method=args.method, head=head, tracks=tracks, targets=targets,
                            rc=args.rc, shifts=args.shifts, n_encoding=args.n_encoding, batch_size=args.batch_size,
                            progress=not args.quiet, **distributed_kwargs(args))
        print_written(path)

    return one_line_errors(getattr(args, "command", None) or "saliency", work)
