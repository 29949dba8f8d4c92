"""In-silico saturation mutagenesis, in the layout of basenji's ``basenji_sat_bed.py``.

Each region gets the model window centred on ``mid = (start + end) // 2`` (as predict-bed),
reverse-complemented for ``-`` strand regions (the predictions are NOT flipped back: they are
in the model orientation, as basenji's). In that window the stretch
``[L/2 - up, L/2 - up + len)`` is mutated base by base: every base to each of the three
others, ``1 + 3 * len`` predictions per region. The mutants come from
:meth:`basenji2_fast.Model.predict_substitutions` (one REF pass, then each mutation's
receptive-field cone), bit-identical to full passes of the mutated windows.

Statistics, per prediction P ``[bins, tracks]`` (float32, as basenji):

==========  ==========================================================================
``sum``     ``P.sum(bins)``
``center``  ``P[nb//2 : nb//2 + 2].sum(bins)`` (the two central bins, model orientation)
``scd``     ``sqrt(sum_b (P - P_ref)^2)``
==========  ==========================================================================

``score[k, n]`` is the statistic of the mutant carrying base ``n`` (A,C,G,T) at position
``k`` of the stretch (the reference's for the reference base), minus its mean over the four
bases. ``scores.h5`` holds what basenji's does, with its names, dtypes and shapes:

``seqs`` bool [N, len, 4] (one-hot of the stretch, model orientation), ``sum`` / ``center``
/ ``scd`` float16 [N, len, 4, tracks] (those asked for), ``chr`` bytes [N], ``strand``
bytes [N], ``start`` / ``end`` int64 [N] (the stretch's genomic coordinates; for ``-``
strand regions stretch index ``k`` is genomic position ``end - 1 - k``, complemented).

N: basenji 2021 draws a random base for every N (so its scores for N-containing windows
change from run to run); this engine encodes N as zeros (or 0.25 with
``n_encoding="uniform"``). An N *inside the mutated stretch* has no reference base: all four
bases are substituted there (4 mutants instead of 3), its ``seqs`` row is all False, and its
scores are the four mutants' statistics minus their mean (the N window itself is none of
the four options). Positions off the chromosome are N.

Several heads (``--head both``): ``OUT_DIR/<head>/scores.h5`` per head, each as a single-head
run of that head; the heads run one after the other (the incremental path predicts one head).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import h5py
import numpy as np

from .. import runner
from .._io import atomic_output, check_output, to_float16
from ..cli_options import (add_distributed_options, add_ensemble_options, add_fasta_option, add_model_options,
                           add_run_options, add_track_options, distributed_kwargs, load_model, one_line_errors,
                           print_written, track_request)
from ..genome import (Region, as_fasta, as_regions, check_contigs, check_span, fasta_identity, fasta_path,
                      parse_interval, read_bed)
from ..model import Ensemble
from ..spec import check_positive_int, is_integer, weights_sha256
from ..targets import TrackSelection
from ..dna import onehot_mask
from ..windows import (center_bins, centred_stretch, engine_tracks, plan_heads, resolve_tracks, stretch_span,
                       window_codes)

STATS = ("sum", "center", "scd")
#: The task folder of a distributed run, in OUT_DIR (one file per region).
TASKS = ".sat_partial"
# Bound on the float32 ALT predictions held at once (mutants x bins x tracks): mutants are
# scored in chunks of this size from one kept REF pass (Model.substitution_scorer).
ALT_BUDGET_BYTES = 96 << 20


def _parse_stats(stats) -> Tuple[str, ...]:
    if isinstance(stats, str):
        stats = [s.strip() for s in stats.split(",") if s.strip()]
    stats = tuple(stats)
    if not stats:
        raise ValueError(f"no statistics asked for; choose from {','.join(STATS)}")
    bad = [s for s in stats if s not in STATS]
    if bad:
        raise ValueError(f"unknown statistic {bad[0]!r}; choose from {','.join(STATS)}")
    return tuple(dict.fromkeys(stats))


def mutation_range(seq_length: int, mut_len: Optional[int] = None, mut_up: Optional[int] = None,
                   mut_down: Optional[int] = None) -> Tuple[int, int]:
    """(first, length) of the mutated stretch in the window, as basenji_sat_bed.py:
    ``-l LEN`` -> up = LEN // 2; ``-u UP -d DOWN`` -> LEN = UP + DOWN; first = L/2 - up."""
    if mut_up is not None or mut_down is not None:
        if mut_up is None or mut_down is None:
            raise ValueError("give both the upstream (-u) and downstream (-d) lengths, or -l")
        if mut_up < 0 or mut_down < 0:
            raise ValueError(f"-u/-d must be >= 0, got {mut_up}/{mut_down}")
        return centred_stretch(seq_length, int(mut_up) + int(mut_down), int(mut_up), what="mutated stretch")
    return centred_stretch(seq_length, 200 if mut_len is None else int(mut_len), what="mutated stretch")


def _mutants(stretch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For stretch codes [len]: (stretch index, new base) of every mutant, positions in order,
    bases A,C,G,T skipping the reference base (all four at an N)."""
    ks, bs = [], []
    for k, c in enumerate(stretch):
        for b in range(4):
            if b != c:
                ks.append(k)
                bs.append(b)
    return np.array(ks, np.int64), np.array(bs, np.uint8)


def _stat(name: str, P: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """P [..., bins, tracks] float32 -> [..., tracks] float32."""
    if name == "sum":
        return P.sum(axis=-2)
    if name == "center":
        b0, b1 = center_bins(P.shape[-2])
        return P[..., b0:b1, :].sum(axis=-2)
    # One mutant at a time through a reused buffer: no temporaries of the whole chunk's size.
    out = np.empty(P.shape[:-2] + P.shape[-1:], np.float32)
    buf = np.empty(P.shape[-2:], np.float32)
    for i in np.ndindex(P.shape[:-2]):
        np.subtract(P[i], ref, out=buf)
        np.multiply(buf, buf, out=buf)
        out[i] = np.sqrt(buf.sum(axis=0))
    return out


class Stretch(NamedTuple):
    """What is mutated in each window: ``length`` bases from position ``first``, scored by ``stats``."""

    first: int
    length: int
    stats: Tuple[str, ...]


def _score_window(model, codes: np.ndarray, stretch: Stretch, head: str, sel: TrackSelection,
                  ensemble: Ensemble) -> Dict[str, np.ndarray]:
    """One window (codes uint8 [L], model orientation) -> {stat: float32 [length, 4, tracks]}.

    One REF pass per ensemble member is kept; the mutants are scored from it in chunks."""
    first, n, stats = stretch
    bases = codes[first:first + n]
    ks, bs = _mutants(bases)
    cols, pair = engine_tracks(model, head, sel, ensemble.rc)
    n_out = len(cols) if cols else model.spec.heads[head].tracks
    per = max(1, ALT_BUDGET_BYTES // (model.n_bins * n_out * 4))
    raw = {s: np.zeros((n, 4, n_out), np.float32) for s in stats}
    scorer = model.substitution_scorer(codes, head=head, tracks=cols, rc=ensemble.rc, shifts=ensemble.shifts,
                                       n_encoding=ensemble.n_encoding, strand_pair=pair)
    ref = scorer.ref
    for c0 in range(0, len(ks), per):
        k, b = ks[c0:c0 + per], bs[c0:c0 + per]
        alt = scorer.alts(first + k, b)
        for s in stats:
            raw[s][k, b] = _stat(s, alt, ref)
        del alt
    known = bases < 4
    kk = np.nonzero(known)[0]
    for s in stats:
        if len(kk):
            raw[s][kk, bases[kk]] = _stat(s, ref, ref)
        raw[s] -= raw[s].mean(axis=1, keepdims=True)
    return raw


def saturation_mutagenesis(model, seq_or_interval, fasta=None, mut_start: Optional[int] = None,
                           mut_len: int = 200, stats: Sequence[str] = ("sum",), head: Optional[str] = None,
                           tracks=None, rc: bool = False, shifts: Sequence[int] = (0,), strand: str = "+",
                           n_encoding: str = "zeros", targets=None) -> Dict[str, np.ndarray]:
    """Saturation mutagenesis of one window, basenji_sat_bed.py's scores.

    Parameters
    ----------
    model : basenji2_fast.Model
    seq_or_interval : a window (DNA string of ``seq_length``, or uint8 codes [L]) in the
        orientation to score, or with ``fasta`` a genome interval ``"chr1:1,000-1,020"``
        (0-based, end-exclusive) whose centred window is read (N off the chromosome) and,
        with ``strand="-"``, reverse-complemented
    fasta : FASTA path or open ``pyfaidx.Fasta`` (for an interval)
    mut_start : first mutated position in the window (default ``L/2 - mut_len//2``, as
        basenji's ``-l``)
    mut_len : bases to mutate
    stats : any of "sum", "center", "scd"
    head, tracks, targets : as :func:`basenji2_fast.windows.resolve_tracks`
    rc, shifts : basenji's ``--rc`` / ``--shifts`` ensemble (strand pairs swapped in the
        reverse-complement passes when ``targets`` has a ``strand_pair`` column)
    strand : "+" or "-" (only for an interval)
    n_encoding : "zeros" or "uniform" for N

    Returns
    -------
    dict: ``{stat: float32 [mut_len, 4, tracks]}`` for each statistic (mean over the four
    bases subtracted), ``seqs`` bool [mut_len, 4], ``mut_start`` int; for an interval also
    ``chr``, ``strand``, ``start``, ``end`` (the stretch's genomic coordinates). With several
    heads (``head="both"``; tracks/targets per head as :func:`basenji2_fast.predict_regions`):
    {head: that dict}, one head after the other (the incremental path predicts one head).
    """
    multi, reqs = plan_heads(model, head, tracks, targets)
    if multi:
        sels = [resolve_tracks(model, r.head, r.tracks, r.targets) for r in reqs]  # all checked first
        return {h: saturation_mutagenesis(model, seq_or_interval, fasta=fasta, mut_start=mut_start, mut_len=mut_len,
                                          stats=stats, head=h, tracks=sel, rc=rc, shifts=shifts, strand=strand,
                                          n_encoding=n_encoding) for h, sel in sels}
    head, tracks, targets = reqs[0]
    stats = _parse_stats(stats)
    check_positive_int("mut_len", mut_len)
    if mut_start is not None and not is_integer(mut_start):
        raise TypeError(f"mut_start={mut_start!r}: expected an integer (or None for the centred stretch)")
    L = model.seq_length
    out: Dict[str, object] = {}
    is_text = isinstance(seq_or_interval, str)
    if fasta is None and is_text and ":" in seq_or_interval:
        raise ValueError(f"{seq_or_interval!r} is a genome interval: give fasta= to read its window")
    if fasta is not None:
        if not is_text or len(seq_or_interval) > 200:
            shown = seq_or_interval if is_text else type(seq_or_interval).__name__
            raise ValueError(f"with fasta=, seq_or_interval is a genome interval 'chr:start-end', not "
                             f"{str(shown)[:40]}{'...' if is_text and len(shown) > 40 else ''}")
        chrom, start, end = parse_interval(seq_or_interval)
        if strand not in ("+", "-"):
            raise ValueError(f"strand {strand!r}: expected '+' or '-'")
        fa = as_fasta(fasta)
        check_span(fa, chrom, start, end, f"interval {seq_or_interval!r}")
        r = Region(chrom, start, end, seq_or_interval, strand)
        codes = window_codes(fa, r, L, r.strand)
    else:
        r = None
        codes, _ = model.encode(seq_or_interval)
        if codes.shape[0] != 1:
            raise ValueError("saturation_mutagenesis takes one window")
        codes = codes[0]
    if mut_start is None:
        first, n = mutation_range(L, mut_len)
    else:
        first, n = int(mut_start), int(mut_len)
        if n <= 0 or first < 0 or first + n > L:
            raise ValueError(f"mutated stretch [{first}, {first + n}) does not fit in the {L:,}-bp window")
    head, sel = resolve_tracks(model, head, tracks, targets)
    out.update(_score_window(model, codes, Stretch(first, n, stats), head, sel, Ensemble(rc, shifts, n_encoding)))
    out["seqs"] = onehot_mask(codes[first:first + n])
    out["mut_start"] = first
    if r is not None:
        s0, s1 = stretch_span(r, L, first, n)
        out.update(chr=r.chrom, strand=r.strand, start=s0, end=s1)
    return out


def _sat_region(model, fa, r: Region, stretch: Stretch, head: str, sel: TrackSelection,
                ensemble: Ensemble) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """One region -> (its ``seqs`` row bool [n, 4], {stat: float16 [n, 4, tracks]}): the unit of
    work of the single-process loop and of a distributed task."""
    codes = window_codes(fa, r, model.seq_length, r.strand)
    raw = _score_window(model, codes, stretch, head, sel, ensemble)
    first, n, stats = stretch
    return onehot_mask(codes[first:first + n]), {s: to_float16(raw[s]) for s in stats}


def sat_bed(model, fasta_path, bed_path, out_dir, mut_len: Optional[int] = None, mut_up: Optional[int] = None,
            mut_down: Optional[int] = None, stats: Sequence[str] = ("sum",), head: Optional[str] = None,
            tracks=None, targets=None, rc: bool = False, shifts: Sequence[int] = (0,),
            n_encoding: str = "zeros", progress: bool = True, scheduler=None, workers: Optional[int] = None,
            shard=None) -> Path:
    """Saturation mutagenesis of every BED region -> ``out_dir/scores.h5`` (basenji_sat_bed.py's
    file; see the module docstring). Regions without a strand column are scored as ``+``.
    Written under a temporary name and renamed when complete. ``scheduler`` / ``workers`` /
    ``shard``: one task per region on a Dask cluster, or one shard's
    (:mod:`basenji2_fast.runner`); scores.h5 is byte-identical to a single-process run's.
    Every run commits each region as it finishes (``out_dir/.sat_partial``), so an interrupted
    run, in one process or distributed, resumes from its committed regions. Returns the path
    of scores.h5 (a shard: its ``shard.json``).

    Several heads (``head="both"``; tracks/targets per head as
    :func:`basenji2_fast.predict_regions`): ``out_dir/<head>/scores.h5`` per head, as a
    single-head run into ``out_dir/<head>``, one head after the other (the incremental
    substitution path predicts one head at a time), each on the cluster when ``scheduler`` /
    ``workers`` are given (not with ``shard``); returns {head: path}."""
    multi, reqs = plan_heads(model, head, tracks, targets)
    placement = runner.Placement(scheduler, workers, shard)
    if multi:
        placement.refuse_heads(multi, shard_only=True)
        sels = [resolve_tracks(model, r.head, r.tracks, r.targets) for r in reqs]  # all checked first
        return {h: sat_bed(model, fasta_path, bed_path, Path(out_dir) / h, mut_len=mut_len, mut_up=mut_up,
                           mut_down=mut_down, stats=stats, head=h, tracks=sel, rc=rc, shifts=shifts,
                           n_encoding=n_encoding, progress=progress, scheduler=scheduler, workers=workers)
                for h, sel in sels}
    head, tracks, targets = reqs[0]
    stats = _parse_stats(stats)
    regions, source = as_regions(bed_path)
    if not regions:
        raise ValueError(f"{source}: no regions")
    L = model.seq_length
    first, n = mutation_range(L, mut_len, mut_up, mut_down)
    stretch = Stretch(first, n, stats)
    fa = as_fasta(fasta_path)
    check_contigs(fa, regions, source)
    head, sel = resolve_tracks(model, head, tracks, targets)
    ensemble = model._ensemble(rc, shifts, n_encoding)  # a shift beyond the window: refused before OUTDIR
    T = len(sel)
    out_dir = check_output(out_dir, folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    N = len(regions)
    # Every region committed as a task file first (in this process, on a cluster, or one
    # shard's share), so that an interrupted run resumes from its last region; then scores.h5.
    results = _run_tasks(model, fasta_path, fa, regions, stretch, head, sel, ensemble, out_dir, placement,
                         progress)
    if isinstance(results, Path):
        return results  # a shard: its task files and shard.json
    with atomic_output(out_dir / "scores.h5") as tmp, h5py.File(tmp, "w") as h5:
        seqs = h5.create_dataset("seqs", (N, n, 4), dtype="bool")
        ds = {s: h5.create_dataset(s, (N, n, 4, T), dtype="float16") for s in stats}
        coords = [stretch_span(r, L, first, n) for r in regions]
        h5.create_dataset("chr", data=np.array([r.chrom.encode() for r in regions]))
        h5.create_dataset("strand", data=np.array([(r.strand if r.strand == "-" else "+").encode()
                                                   for r in regions]))
        h5.create_dataset("start", data=np.array([c[0] for c in coords], np.int64))
        h5.create_dataset("end", data=np.array([c[1] for c in coords], np.int64))
        for i, (row, scores) in enumerate(results):
            seqs[i] = row
            for s in stats:
                ds[s][i] = scores[s]
    runner.finish(out_dir / TASKS)
    return out_dir / "scores.h5"


# --------------------------------------------------------------------------------------
# Distributed runs: one task per region (runner)

def region_task(model, path: Path, fasta: str, region: Region, stretch: Stretch, head: str, sel: TrackSelection,
                ensemble: Ensemble) -> None:
    """One region -> ``path``: ``seqs`` (bool [n, 4]) and ``stat_<name>`` (float16 [n, 4, tracks])."""
    row, scores = _sat_region(model, runner.worker_fasta(fasta), region, stretch, head, sel, ensemble)
    runner.save_task(path, seqs=row, **{f"stat_{s}": v for s, v in scores.items()})


def _run_tasks(model, fasta_arg, fa, regions: List[Region], stretch: Stretch, head: str, sel: TrackSelection,
               ensemble: Ensemble, out_dir: Path, placement: runner.Placement, progress: bool):
    """The regions as tasks. Returns an iterator of (seqs row, {stat: scores}) in region order,
    or the shard.json path of a shard."""
    fasta = fasta_path(fasta_arg)
    cols, pair = engine_tracks(model, head, sel, ensemble.rc)
    job = {"command": "sat", "model": weights_sha256(model.spec), "fasta": fasta_identity(fasta, fa),
           "regions": [list(r[:5]) for r in regions], "head": head, "columns": None if cols is None else list(cols),
           "strand_pair": None if pair is None else list(pair), "rc": ensemble.rc,
           "shifts": list(ensemble.shifts), "n_encoding": ensemble.n_encoding, "first": int(stretch.first),
           "n": int(stretch.length), "stats": list(stretch.stats)}
    task_dir = out_dir / TASKS
    tasks = (runner.Task(f"{i}.npz", region_task, (fasta, r, stretch, head, sel, ensemble))
             for i, r in enumerate(regions))
    shard = runner.run_tasks("sat", model, placement, task_dir, job, tasks, len(regions), "region", progress)
    if shard is not None:
        return shard

    def results():
        for i in range(len(regions)):
            with np.load(task_dir / f"{i}.npz") as z:
                yield z["seqs"], {s: z[f"stat_{s}"] for s in stretch.stats}
    return results()


# --------------------------------------------------------------------------------------
# Command line

def add_sat_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``sat`` to an argparse ``subparsers``; ``args.func(args)`` runs it. Options follow
    basenji_sat_bed.py (``-f -o -l -u -d --stats -t --rc --shifts``)."""

    p = subparsers.add_parser(
        "sat", help="saturation mutagenesis of BED regions (basenji_sat_bed.py's scores.h5)",
        description="Mutate every base of a stretch at the centre of each BED region's model window to the "
                    "three others ('-' strand regions: the reverse-complemented window) and write "
                    "OUT_DIR/scores.h5 as basenji_sat_bed.py: per statistic float16 [regions, len, 4, tracks] "
                    "(minus the mean over the 4 bases), seqs, chr, strand, start, end.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of regions (6th column: strand)")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    p.add_argument("-l", "--mut-len", type=int, default=None,
                   help="length of the mutated stretch, centred (default 200)")
    p.add_argument("-u", "--mut-up", type=int, default=None, help="bases mutated upstream of the centre")
    p.add_argument("-d", "--mut-down", type=int, default=None, help="bases mutated downstream of the centre")
    p.add_argument("--stats", default="sum", help="comma-separated statistics: sum,center,scd (default sum)")
    add_track_options(p)
    add_ensemble_options(p)
    add_run_options(p)
    add_distributed_options(p)
    p.set_defaults(func=run_sat)
    return p


def run_sat(args: argparse.Namespace) -> int:
    """The ``sat`` subcommand; prints where it wrote, or a one-line error (exit status 1)."""
    def work():
        if args.mut_len is not None and (args.mut_up is not None or args.mut_down is not None):
            raise ValueError("give either -l or -u/-d, not both")
        stats = _parse_stats(args.stats)
        # Inputs first: a bad BED or targets line fails before the model is loaded.
        regions = read_bed(args.bed)
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        head, tracks, targets = track_request(args)
        path = sat_bed(load_model(args), args.fasta, regions, args.out_dir, mut_len=args.mut_len,
                       mut_up=args.mut_up, mut_down=args.mut_down, stats=stats, head=head, tracks=tracks,
                       targets=targets, rc=args.rc, shifts=args.shifts, n_encoding=args.n_encoding,
                       progress=not args.quiet, **distributed_kwargs(args))
        print_written(path)

    return one_line_errors(getattr(args, "command", None) or "sat", work)
