"""Pictures of saturation mutagenesis scores (``sat-plot``): per region and track, a logo of
the reference bases scaled by importance over a heatmap of every substitution's effect, from
the scores.h5 of basenji_sat_bed.py or ``basenji2-fast sat``."""
from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..targets import Targets, TrackSelection, read_targets, select_tracks
from .figure import DPI, PathLike, check_figure_size, output_format, panel_titles, save_figure
from .logo import (LOGO_INCH_PER_BP, LOGO_MAX_WIDTH, LOGO_PANEL_HEIGHT, LOGO_TOP, MAX_LOGO_PANELS,
                   add_picture_arguments, decode_strings, draw_panel, figure_heading, index_list, logo_figure,
                   logo_figure_size, open_h5, region_note, region_places, region_rows, run_picture)

#: At most this many (region, track) logo + heatmap pairs in one picture.
MAX_SAT_PANELS = MAX_LOGO_PANELS
#: Geometry of a saturation mutagenesis figure (inches), that of every logo figure
#: (:mod:`basenji2_fast.plots.logo`): each (region, track) pair is SAT_PAIR_HEIGHT tall (title,
#: logo, heatmap, x axis), under SAT_TOP for the figure title; the width grows with the length
#: (SAT_INCH_PER_BP per base, at most SAT_MAX_WIDTH).
SAT_PAIR_HEIGHT = LOGO_PANEL_HEIGHT
SAT_TOP = LOGO_TOP
SAT_INCH_PER_BP = LOGO_INCH_PER_BP
SAT_MAX_WIDTH = LOGO_MAX_WIDTH
_SAT_META = ("seqs", "chr", "strand", "start", "end", "target_ids", "target_labels")


def sat_figure_size(n_panels: int, length: int) -> Tuple[float, float]:
    """(width, height) in inches of a :func:`plot_sat` figure with ``n_panels`` (region, track)
    pairs over sequences of ``length`` bp."""
    return logo_figure_size(n_panels, length)


def sat_importance(scores: np.ndarray, seqs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(effects, importance) from basenji saturation mutagenesis scores.

    scores : [len, 4, tracks] (or [len, 4]), the mean over the four bases subtracted at each
        position, as basenji_sat_bed.py writes them; seqs : [len, 4] one-hot reference.
    effects : same shape as ``scores``: the effect of each substitution, ``score(alt) -
        score(ref)`` (= prediction(alt) - prediction(ref)); 0 at the reference base.
    importance : [len, tracks] (or [len]): minus the mean effect of the three substitutions at
        each position (prediction(ref) - mean prediction(alt)); positive where the reference base
        supports the output.  Equals 4/3 of the stored score of the reference base.
    """
    scores = np.asarray(scores, np.float64)
    squeeze = scores.ndim == 2
    if squeeze:
        scores = scores[:, :, None]
    ref = np.asarray(seqs, bool)
    ref_score = np.einsum("lbt,lb->lt", scores, ref.astype(np.float64))
    effects = scores - ref_score[:, None, :]
    importance = -effects.sum(axis=1) / 3.0
    importance[~ref.any(axis=1)] = 0.0  # no reference base (N): nothing to scale
    return (effects[:, :, 0], importance[:, 0]) if squeeze else (effects, importance)


class SatScores(NamedTuple):
    """What :func:`read_sat` read: ``scores[k]`` [len, 4, tracks] of region ``regions[k]``."""
    stat: str
    regions: List[int]
    scores: List[np.ndarray]
    seqs: List[np.ndarray]
    chrom: List[str]
    strand: List[str]
    start: List[int]
    end: List[int]
    columns: List[int]
    labels: List[str]
    notes: List[str]
    stats: List[str]
    n_regions: int


def read_sat(scores_h5: PathLike, stat: str = "sum", regions=None, tracks=None, labels=None) -> SatScores:
    """Read regions and tracks of one statistic of a saturation mutagenesis scores.h5
    (arguments as :func:`plot_sat`); ValueError with a one-line message for a statistic the
    file lacks, a region or track out of range, or too many panels."""
    import h5py

    path = Path(scores_h5)
    with open_h5(path) as h5:
        stats = sorted(k for k, d in h5.items() if isinstance(d, h5py.Dataset) and d.ndim == 4
                       and k not in _SAT_META)
        if "seqs" not in h5 or not stats:
            raise ValueError(f"{path}: not a saturation mutagenesis scores.h5 (needs 'seqs' and "
                             f"[regions, len, 4, tracks] score datasets; has {', '.join(sorted(h5)) or 'nothing'})")
        if stat not in stats:
            raise ValueError(f"{path}: no statistic {stat!r} (has {', '.join(stats)})")
        ds = h5[stat]
        n_regions, length, n_bases, n_tracks = ds.shape
        if n_bases != 4 or h5["seqs"].shape != (n_regions, length, 4):
            raise ValueError(f"{path}: {stat!r} is {ds.shape} and 'seqs' {h5['seqs'].shape}; expected "
                             "[regions, len, 4, tracks] and [regions, len, 4]")
        rows = region_rows(regions, n_regions, path)
        # Track names: the labels argument, else the file's own target_ids / target_labels.
        targets = labels
        if isinstance(labels, (list, tuple, np.ndarray)) and not hasattr(labels, "identifier"):
            names = [str(x) for x in labels]
            if len(names) != n_tracks:
                raise ValueError(f"{len(names)} labels for the {n_tracks} tracks of {path}")
            targets = names
        if targets is None and ("target_ids" in h5 or "target_labels" in h5):
            ids = decode_strings(h5["target_ids"][()]) if "target_ids" in h5 else None
            descs = decode_strings(h5["target_labels"][()]) if "target_labels" in h5 else None
            if len(ids or descs) == n_tracks:
                targets = (ids, descs)
        if isinstance(targets, list) or isinstance(targets, tuple):
            ids, descs = targets if isinstance(targets, tuple) else (None, targets)
            ids = ids or [f"t{c}" for c in range(n_tracks)]
            targets = Targets(path=str(path), index=np.arange(n_tracks, dtype=np.int64), identifier=list(ids),
                              description=list(descs or ids), file=[""] * n_tracks, sum_stat=[""] * n_tracks)
        if isinstance(tracks, str) and re.fullmatch(r"[\d,\s]+", tracks):
            tracks = index_list(tracks, "tracks")
        if isinstance(targets, (str, os.PathLike)):
            targets = read_targets(targets)
        sel = tracks if isinstance(tracks, TrackSelection) else select_tracks(targets, tracks, n_tracks)
        cols = [int(c) for c in sel.columns]
        names, notes = panel_titles(cols, sel.identifiers, sel.labels)
        n_panels = len(rows) * len(cols)
        if n_panels > MAX_SAT_PANELS:
            # A default (all regions, all tracks) draws the first panels that fit; a choice must fit.
            if regions is None and len(cols) <= MAX_SAT_PANELS:
                rows = rows[:MAX_SAT_PANELS // len(cols)]
            elif tracks is None and len(rows) <= MAX_SAT_PANELS:
                keep = MAX_SAT_PANELS // len(rows)
                cols, names, notes = cols[:keep], names[:keep], notes[:keep]
            elif regions is None and tracks is None:
                m = MAX_SAT_PANELS
                rows, cols, names, notes = rows[:1], cols[:m], names[:m], notes[:m]
            else:
                raise ValueError(f"{len(rows)} regions x {len(cols)} tracks = {n_panels} panels: plot at most "
                                 f"{MAX_SAT_PANELS} (choose --regions and --tracks)")
            warnings.warn(f"{n_panels} panels ({n_regions} regions x {len(sel.columns)} tracks): drawing the first "
                          f"{len(rows) * len(cols)} (regions {_span(rows)}, tracks {_span(cols)}); choose others "
                          f"with --regions and --tracks (at most {MAX_SAT_PANELS} panels)", UserWarning, stacklevel=2)
        places = region_places(h5, rows, length)
        seqs = h5["seqs"]
        scores = [np.asarray(ds[r], np.float64)[:, :, cols] for r in rows]
        return SatScores(stat, rows, scores, [np.asarray(seqs[r], bool) for r in rows], *map(list, zip(*places)),
                         cols, names, notes, stats, n_regions)


def _span(values: Sequence[int]) -> str:
    """``0-3`` for consecutive integers, else ``0,2,5``."""
    values = list(values)
    if len(values) > 1 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


def plot_sat(scores_h5: PathLike, out_path: Optional[PathLike] = None, stat: str = "sum", regions=None,
             tracks=None, labels=None, *, heatmap: str = "effect", title: Optional[str] = None,
             dpi: int = DPI):
    """Draw saturation mutagenesis scores: per (region, track), a sequence logo of the
    reference bases over a heatmap of all four bases.

    Parameters
    ----------
    scores_h5 : scores.h5 of basenji_sat_bed.py or ``basenji2-fast sat``: per statistic
        float16 [regions, len, 4, tracks] (the mean over the four bases subtracted), ``seqs``
        bool [regions, len, 4] (reference, one-hot A,C,G,T, in the region's strand), ``chr``,
        ``strand``, ``start``, ``end``, optionally ``target_ids`` / ``target_labels``.
    out_path : .png / .svg / .pdf to write (atomically); None: only return the figure
    stat : which statistic (``sum``, ``center``, ``scd``, ... as the file has them)
    regions : region indices (rows of the file, 0-based): comma-separated string or ints; None: all
    tracks : None (all), comma-separated columns / ints, identifiers, or a regular expression
        over the track descriptions (:func:`basenji2_fast.targets.select_tracks`)
    labels : track names: a targets.txt path or Targets object, or one description per track of
        the file; None: the file's ``target_ids`` / ``target_labels``, else ``track N``
    heatmap : ``"effect"`` (default): each substitution's effect, score(alt) - score(ref), 0 at
        the reference base; ``"score"``: the scores as stored (mean over the bases subtracted)
    title : figure title (default: the file and statistic); dpi : pixels per inch

    The logo letter at each position is the reference base, its height the position's
    importance: minus the mean effect of its three substitutions (prediction(ref) - mean
    prediction(alt), :func:`sat_importance`), drawn below the axis where negative.  The heatmap
    is diverging (red up, blue down) and centred at 0, one colour scale per panel, a dot on the
    reference base.  Positions are drawn 5'->3' on the region's strand, as the file holds them:
    on the minus strand genomic coordinates decrease to the right and the bases are those of
    the minus strand.  At most :data:`MAX_SAT_PANELS` (region, track) pairs.  Figure size:
    :func:`sat_figure_size`.  Returns the matplotlib Figure.
    """
    if heatmap not in ("effect", "score"):
        raise ValueError(f"heatmap must be 'effect' or 'score', got {heatmap!r}")
    check_figure_size(dpi=dpi)
    if out_path is not None:
        output_format(out_path)
    sat = read_sat(scores_h5, stat, regions, tracks, labels)
    length = sat.scores[0].shape[0]
    panels = [(k, j) for k in range(len(sat.regions)) for j in range(len(sat.columns))]
    fig = logo_figure(len(panels), length, dpi)
    for p, (k, j) in enumerate(panels):
        scores, seq = sat.scores[k][:, :, j], sat.seqs[k]
        effects, imp = sat_importance(scores, seq)
        place = (sat.chrom[k], sat.strand[k], sat.start[k], sat.end[k])
        draw_panel(fig, p, seq, imp, effects if heatmap == "effect" else scores, "importance",
                   "alt \u2212 ref" if heatmap == "effect" else sat.stat, place, sat.labels[j],
                   region_note(*place, f"region {sat.regions[k]}", sat.notes[j]))

    if title is None:
        shown = Path(scores_h5).resolve()
        shown = f"{shown.parent.name}/{shown.name}" if shown.parent.name else shown.name
        title = f"Saturation mutagenesis: {sat.stat} scores \u00b7 {shown}"
    what = ("heatmap: effect of each substitution (alt \u2212 ref; \u2022 reference base)" if heatmap == "effect"
            else f"heatmap: stored {sat.stat} scores (mean over the 4 bases subtracted; \u2022 reference base)")
    figure_heading(fig, title, "logo: reference base scaled by importance = \u2212mean effect of its 3 "
                   "substitutions; " + what)
    if out_path is not None:
        save_figure(fig, out_path)
    return fig


def add_sat_plot_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``sat-plot scores.h5 -o plot.png [--stat sum] [--regions 0,2] [--tracks SELECTOR]
    [-t targets.txt]`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "sat-plot", help="draw saturation mutagenesis scores (logo + heatmap; PNG/SVG/PDF)",
        description="Per region and track of a saturation mutagenesis scores.h5 (basenji_sat_bed.py or "
                    "basenji2-fast sat): a logo of the reference bases scaled by importance (minus the mean "
                    "effect of the three substitutions) over a heatmap of every substitution's effect.")
    g = add_picture_arguments(p, "scores_h5", "scores.h5 written by sat / basenji_sat_bed.py")
    g.add_argument("--stat", default="sum", help="statistic to draw (default sum; e.g. center, scd)")
    g.add_argument("--tracks", default=None, metavar="SELECTOR",
                   help="comma-separated track columns, identifiers, or a regular expression over the "
                        f"descriptions (default: all, or the first that fit in {MAX_SAT_PANELS} panels)")
    g.add_argument("-t", "--targets", default=None, help="basenji targets.txt (track names and selectors)")
    g.add_argument("--heatmap", choices=("effect", "score"), default="effect",
                   help="effect: alt - ref (default); score: the stored scores")
    p.set_defaults(func=run_sat_plot)
    return p


def run_sat_plot(args: argparse.Namespace) -> int:
    """The ``sat-plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast sat-plot: error: ...`` (one line) and returns 1."""
    return run_picture("sat-plot", args.output, [args.scores_h5, args.targets], lambda: plot_sat(
        args.scores_h5, args.output, stat=args.stat, regions=args.regions, tracks=args.tracks, labels=args.targets,
        heatmap=args.heatmap, title=args.title, dpi=args.dpi))
