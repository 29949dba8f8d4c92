"""Pictures of saturation mutagenesis scores (``sat-plot``): per region and track, a logo of
the reference bases scaled by importance over a heatmap of every substitution's effect, from
the scores.h5 of basenji_sat_bed.py or ``basenji2-fast sat``."""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from .._io import check_output
from ..cli_options import one_line_errors, positive_int
from ..targets import Targets, TrackSelection, read_targets, select_tracks
from .figure import (DPI, FIG_WIDTH, LABEL_CHARS_PER_INCH, PathLike, check_figure_size, output_format, panel_titles,
                     save_figure, shorten)

#: At most this many (region, track) logo + heatmap pairs in one picture.
MAX_SAT_PANELS = 16
#: Geometry of a saturation mutagenesis figure (inches): each (region, track) pair is
#: SAT_PAIR_HEIGHT tall (title, logo, heatmap, x axis), under SAT_TOP for the figure title.
#: Width: FIG_WIDTH, or more for long sequences (SAT_INCH_PER_BP per base, whole inches, at most
#: SAT_MAX_WIDTH).  Whole and half inches keep the pixel size exact at DPI 150.
SAT_PAIR_HEIGHT = 3.0
SAT_TOP = 0.5
SAT_INCH_PER_BP = 0.16
SAT_MAX_WIDTH = 40.0
_SAT_LEFT, _SAT_RIGHT = 0.75, 1.05           # room for y labels; for the colorbar and its labels
_SAT_TITLE, _SAT_LOGO, _SAT_HEAT = 0.36, 1.25, 0.86   # within a pair, top down; the rest is the x axis
#: Letter colours of the usual DNA logos.
BASE_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
_SAT_META = ("seqs", "chr", "strand", "start", "end", "target_ids", "target_labels")


def sat_figure_size(n_panels: int, length: int) -> Tuple[float, float]:
    """(width, height) in inches of a :func:`plot_sat` figure with ``n_panels`` (region, track)
    pairs over sequences of ``length`` bp."""
    width = min(SAT_MAX_WIDTH, max(FIG_WIDTH, float(math.ceil(1.8 + SAT_INCH_PER_BP * int(length)))))
    return width, SAT_TOP + SAT_PAIR_HEIGHT * max(1, int(n_panels))


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


def _int_list(value, what: str) -> Optional[List[int]]:
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            raise ValueError(f"{what}: expected comma-separated integers, got {value!r}")
        return [int(p) for p in parts]
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]


def _decode(values) -> List[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in values]


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
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({' '.join(str(e).split())})") from None
    with h5:
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
        rows = _int_list(regions, "regions")
        rows = list(range(n_regions)) if rows is None else rows
        if not rows:
            raise ValueError("no regions selected")
        bad = [r for r in rows if not 0 <= r < n_regions]
        if bad:
            raise ValueError(f"region {bad[0]} out of range: {path} has {n_regions} regions (0..{n_regions - 1})")
        # Track names: the labels argument, else the file's own target_ids / target_labels.
        targets = labels
        if isinstance(labels, (list, tuple, np.ndarray)) and not hasattr(labels, "identifier"):
            names = [str(x) for x in labels]
            if len(names) != n_tracks:
                raise ValueError(f"{len(names)} labels for the {n_tracks} tracks of {path}")
            targets = names
        if targets is None and ("target_ids" in h5 or "target_labels" in h5):
            ids = _decode(h5["target_ids"][()]) if "target_ids" in h5 else None
            descs = _decode(h5["target_labels"][()]) if "target_labels" in h5 else None
            if len(ids or descs) == n_tracks:
                targets = (ids, descs)
        if isinstance(targets, list) or isinstance(targets, tuple):
            ids, descs = targets if isinstance(targets, tuple) else (None, targets)
            ids = ids or [f"t{c}" for c in range(n_tracks)]
            targets = Targets(path=str(path), index=np.arange(n_tracks, dtype=np.int64), identifier=list(ids),
                              description=list(descs or ids), file=[""] * n_tracks, sum_stat=[""] * n_tracks)
        if isinstance(tracks, str) and re.fullmatch(r"[\d,\s]+", tracks):
            tracks = _int_list(tracks, "tracks")
        if isinstance(targets, (str, os.PathLike)):
            targets = read_targets(targets)
        sel = tracks if isinstance(tracks, TrackSelection) else select_tracks(targets, tracks, n_tracks)
        cols = [int(c) for c in sel.columns]
        names, notes = panel_titles(cols, sel.identifiers, sel.labels)
        n_panels = len(rows) * len(cols)
        if n_panels > MAX_SAT_PANELS:
            raise ValueError(f"{len(rows)} regions x {len(cols)} tracks = {n_panels} panels: plot at most "
                             f"{MAX_SAT_PANELS} (choose --regions and --tracks)")

        def meta(name, default):
            return h5[name][()] if name in h5 else [default] * n_regions

        chrom, strand = _decode(meta("chr", "?")), _decode(meta("strand", "+"))
        start, end = meta("start", 0), meta("end", length)
        seqs = h5["seqs"]
        scores = [np.asarray(ds[r], np.float64)[:, :, cols] for r in rows]
        return SatScores(stat, rows, scores, [np.asarray(seqs[r], bool) for r in rows],
                         [chrom[r] for r in rows], [strand[r] if strand[r] in "+-" else "+" for r in rows],
                         [int(start[r]) for r in rows], [int(end[r]) for r in rows], cols, names, notes,
                         stats, n_regions)


def _draw_letter(ax, char: str, x: float, bottom: float, height: float, width: float, color: str,
                 prop) -> None:
    """``char`` filling [x - width/2, x + width/2] x [bottom, bottom + height] (data units)."""
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    if height <= 0:
        return
    glyph = TextPath((0, 0), char, size=1, prop=prop)
    ext = glyph.get_extents()
    tr = (Affine2D().translate(-ext.x0, -ext.y0).scale(width / ext.width, height / ext.height)
          .translate(x - width / 2, bottom))
    ax.add_patch(PathPatch(tr.transform_path(glyph), facecolor=color, edgecolor="none", linewidth=0))


def _sat_ticks(length: int, coord, max_ticks: int = 8) -> Tuple[List[int], List[str]]:
    """Positions (0-based index into the sequence) of at most about ``max_ticks`` ticks at round
    genomic coordinates."""
    lo, hi = sorted((coord(0), coord(length - 1)))
    span = max(1, hi - lo)
    steps = [m * 10 ** e for e in range(9) for m in (1, 2, 2.5, 5) if m * 10 ** e == int(m * 10 ** e)]
    step = int(next(s for s in steps if span / s <= max(2, max_ticks)))
    first = -(-lo // step) * step
    coords = list(range(first, hi + 1, step))
    idx = {coord(i): i for i in range(length)}
    pairs = sorted((idx[c], f"{c:,}") for c in coords)  # left to right
    return [i for i, _ in pairs], [t for _, t in pairs]


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    if heatmap not in ("effect", "score"):
        raise ValueError(f"heatmap must be 'effect' or 'score', got {heatmap!r}")
    check_figure_size(dpi=dpi)
    if out_path is not None:
        output_format(out_path)
    sat = read_sat(scores_h5, stat, regions, tracks, labels)
    length = sat.scores[0].shape[0]
    panels = [(k, j) for k in range(len(sat.regions)) for j in range(len(sat.columns))]
    width, height = sat_figure_size(len(panels), length)
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    prop = FontProperties(family="DejaVu Sans", weight="bold")
    fx = lambda inches: inches / width  # noqa: E731
    fy = lambda inches: inches / height  # noqa: E731
    ax_w = width - _SAT_LEFT - _SAT_RIGHT
    letter_w = 0.92 if length <= 400 else 1.0
    bases = "ACGT"
    budget = max(12, int(LABEL_CHARS_PER_INCH * width * 0.55))

    for p, (k, j) in enumerate(panels):
        scores, seq = sat.scores[k][:, :, j], sat.seqs[k]
        effects, imp = sat_importance(scores, seq)
        values = effects if heatmap == "effect" else scores
        chrom, strand, start, end = sat.chrom[k], sat.strand[k], sat.start[k], sat.end[k]
        top = height - SAT_TOP - p * SAT_PAIR_HEIGHT  # inches from the bottom
        logo = fig.add_axes([fx(_SAT_LEFT), fy(top - _SAT_TITLE - _SAT_LOGO), fx(ax_w), fy(_SAT_LOGO)])
        heat = fig.add_axes([fx(_SAT_LEFT), fy(top - _SAT_TITLE - _SAT_LOGO - _SAT_HEAT), fx(ax_w),
                             fy(_SAT_HEAT)], sharex=logo)
        cax = fig.add_axes([fx(_SAT_LEFT + ax_w + 0.12), fy(top - _SAT_TITLE - _SAT_LOGO - _SAT_HEAT),
                            fx(0.13), fy(_SAT_HEAT)])

        # Logo: the reference base, height = importance.
        ref = seq.argmax(axis=1)
        has_ref = seq.any(axis=1)
        for i in range(length):
            if has_ref[i] and imp[i] != 0:
                b = bases[ref[i]]
                h = float(imp[i])
                _draw_letter(logo, b, i, min(0.0, h), abs(h), letter_w, BASE_COLORS[b], prop)
        lo, hi = min(0.0, float(imp.min())), max(0.0, float(imp.max()))
        if hi - lo <= 0:
            hi = 1.0
        pad = 0.05 * (hi - lo)
        logo.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
        logo.axhline(0, color="0.35", linewidth=0.6, zorder=0)
        logo.set_xlim(-0.5, length - 0.5)
        logo.yaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2))
        logo.set_ylabel("importance", fontsize=8)
        logo.tick_params(axis="y", labelsize=7.5, length=3)
        logo.tick_params(axis="x", bottom=False, labelbottom=False)
        for side in ("top", "right", "bottom"):
            logo.spines[side].set_visible(False)

        # Heatmap: all four bases.
        vmax = float(np.abs(values).max()) or 1.0
        im = heat.imshow(values.T, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                         extent=(-0.5, length - 0.5, 3.5, -0.5), interpolation="nearest")
        xs = np.flatnonzero(has_ref)
        heat.scatter(xs, ref[xs], s=max(2.0, min(14.0, 700.0 / length)), c="0.15", marker="o", linewidths=0,
                     zorder=3)
        heat.set_yticks(range(4), list(bases))
        for lab in heat.get_yticklabels():
            lab.set_color(BASE_COLORS[lab.get_text()])
            lab.set_fontweight("bold")
        heat.tick_params(axis="y", labelsize=8.5, length=0)
        coord = (lambda i: start + 1 + i) if strand != "-" else (lambda i: end - i)
        ticks, tick_labels = _sat_ticks(length, coord, int(ax_w / 0.8))
        heat.set_xticks(ticks, tick_labels)
        if length <= 150:  # a minor tick on every base
            heat.set_xticks(range(length), minor=True)
            heat.tick_params(axis="x", which="minor", length=1.5)
        heat.tick_params(axis="x", labelsize=7.5, length=3)
        where = (f"{chrom} position" if strand != "-" else
                 f"{chrom} position (minus strand, 5\u2032\u21923\u2032: coordinates decrease)")
        heat.set_xlabel(where, fontsize=8.5, labelpad=2)
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=7, length=2)
        cb.locator = MaxNLocator(nbins=5, symmetric=True)
        cb.update_ticks()
        cb.set_label("alt \u2212 ref" if heatmap == "effect" else sat.stat, fontsize=7.5, labelpad=2)

        region = f"{chrom}:{start + 1:,}-{end:,} ({strand})"
        note = " \u00b7 ".join(x for x in (region, f"region {sat.regions[k]}", sat.notes[j]) if x)
        logo.set_title(shorten(sat.labels[j], budget), loc="left", fontsize=9, pad=4, fontweight="bold")
        logo.set_title(note, loc="right", fontsize=7.5, pad=4, color="0.4")

    if title is None:
        shown = Path(scores_h5).resolve()
        shown = f"{shown.parent.name}/{shown.name}" if shown.parent.name else shown.name
        title = f"Saturation mutagenesis: {sat.stat} scores \u00b7 {shown}"
    what = ("heatmap: effect of each substitution (alt \u2212 ref; \u2022 reference base)" if heatmap == "effect"
            else f"heatmap: stored {sat.stat} scores (mean over the 4 bases subtracted; \u2022 reference base)")
    fig.text(fx(0.12), fy(height - 0.2), title, fontsize=10.5, ha="left", va="center")
    fig.text(fx(0.12), fy(height - 0.4), "logo: reference base scaled by importance = \u2212mean effect of "
             "its 3 substitutions; " + what, fontsize=7.5, ha="left", va="center", color="0.35")
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
    p.add_argument("scores_h5", help="scores.h5 written by sat / basenji_sat_bed.py")
    p.add_argument("-o", "--output", required=True, help="picture to write: .png, .svg or .pdf")
    p.add_argument("--stat", default="sum", help="statistic to draw (default sum; e.g. center, scd)")
    p.add_argument("--regions", default=None, help="comma-separated region indices, 0-based (default: all)")
    p.add_argument("--tracks", default=None, metavar="SELECTOR",
                   help="comma-separated track columns, identifiers, or a regular expression over the "
                        "descriptions (default: all)")
    p.add_argument("-t", "--targets", default=None, help="basenji targets.txt (track names and selectors)")
    p.add_argument("--heatmap", choices=("effect", "score"), default="effect",
                   help="effect: alt - ref (default); score: the stored scores")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--dpi", type=positive_int, default=DPI, help=f"pixels per inch of a PNG (default {DPI})")
    p.set_defaults(func=run_sat_plot)
    return p


def run_sat_plot(args: argparse.Namespace) -> int:
    """The ``sat-plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast sat-plot: error: ...`` (one line) and returns 1."""
    def work():
        output_format(args.output)
        check_output(args.output, inputs=[args.scores_h5, args.targets], parents=True)
        plot_sat(args.scores_h5, args.output, stat=args.stat, regions=args.regions, tracks=args.tracks,
                 labels=args.targets, heatmap=args.heatmap, title=args.title, dpi=args.dpi)
        print(f"wrote {args.output}")

    return one_line_errors("sat-plot", work)
