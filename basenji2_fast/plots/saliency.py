"""Pictures of gradient contribution scores (``saliency-plot``): per region of a saliency.h5
(``basenji2-fast saliency``), a logo of the reference bases scaled by input x gradient over a
heatmap of the stored score of all four bases, titled with the tracks and bins summed."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from ..cli_options import positive_int
from ..windows import centred_stretch
from .figure import DPI, PathLike, check_figure_size, output_format, save_figure
from .logo import (MAX_LOGO_PANELS, add_picture_arguments, decode_strings, draw_panel, figure_heading, logo_figure,
                   open_h5, region_note, region_places, region_rows, run_picture)

#: The stretch drawn when none is chosen: at most this many central bases of the stored stretch.
DEFAULT_PLOT_STRETCH = 200
#: What each stored method is, for the heatmap's label, and what the logo's heights then are.
_VALUE_NAMES = {"grad": "gradient", "input_x_grad": "input \u00d7 gradient", "centered": "centered gradient"}
_LOGO_NAMES = {"grad": "input \u00d7 gradient", "input_x_grad": "input \u00d7 gradient",
               "centered": "input \u00d7 centered gradient"}


class SaliencyScores(NamedTuple):
    """What :func:`read_saliency` read: ``scores[k]`` float64 [len, 4] of region ``regions[k]``
    over the drawn stretch, whose genomic span is ``places[k]`` = (chrom, strand, start, end)."""
    method: str
    regions: List[int]
    scores: List[np.ndarray]
    seqs: List[np.ndarray]
    places: List[Tuple[str, str, int, int]]
    tracks: List[str]
    bins: str
    n_regions: int


def _drawn_stretch(length: int, stretch: Optional[int], positions: Optional[str]) -> Tuple[int, int]:
    """(first, n) of the stored stretch that is drawn: ``positions`` ``A-B`` (0-based, end
    excluded), else the central ``stretch`` bases (default up to DEFAULT_PLOT_STRETCH)."""
    if positions is not None:
        if stretch is not None:
            raise ValueError("give --stretch or --positions, not both")
        a, sep, b = str(positions).partition("-")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit() or not int(a) < int(b) <= length:
            raise ValueError(f"positions {positions!r}: expected A-B, 0 <= A < B <= {length} (0-based, end "
                             "excluded, along the stored stretch)")
        return int(a), int(b) - int(a)
    return centred_stretch(length, min(length, DEFAULT_PLOT_STRETCH) if stretch is None else stretch,
                           what="drawn stretch")


def _sub_place(place: Tuple[str, str, int, int], length: int, first: int, n: int) -> Tuple[str, str, int, int]:
    """The genomic span of stored positions ``[first, first + n)`` of a stretch ``place`` of
    ``length`` bases (on the minus strand, stretch index k is genomic ``end - 1 - k``)."""
    chrom, strand, start, end = place
    if strand == "-":
        return chrom, strand, end - first - n, end - first
    return chrom, strand, start + first, start + first + n


def read_saliency(saliency_h5: PathLike, regions=None, stretch: Optional[int] = None,
                  positions: Optional[str] = None) -> SaliencyScores:
    """Read regions of a saliency.h5 over the stretch to draw (arguments as :func:`plot_saliency`);
    one-line ValueError for a file that is not one, a region out of range, a stretch that does
    not fit, or too many panels."""
    path = Path(saliency_h5)
    with open_h5(path) as h5:
        if "scores" not in h5 or "seqs" not in h5 or "method" not in h5.attrs:
            raise ValueError(f"{path}: not a saliency.h5 of basenji2-fast saliency (needs 'scores', 'seqs' and a "
                             f"'method' attribute; has {', '.join(sorted(h5)) or 'nothing'})")
        ds = h5["scores"]
        if ds.ndim != 3 or ds.shape[2] != 4 or h5["seqs"].shape != ds.shape:
            raise ValueError(f"{path}: 'scores' is {ds.shape} and 'seqs' {h5['seqs'].shape}; expected both "
                             "[regions, len, 4]")
        n_regions, length, _ = ds.shape
        rows = region_rows(regions, n_regions, path)
        if len(rows) > MAX_LOGO_PANELS and regions is None:  # the default: the first that fit
            warnings.warn(f"{len(rows)} regions: drawing the first {MAX_LOGO_PANELS} (0-{MAX_LOGO_PANELS - 1}); "
                          "choose others with --regions", UserWarning, stacklevel=2)
            rows = rows[:MAX_LOGO_PANELS]
        if len(rows) > MAX_LOGO_PANELS:
            raise ValueError(f"{len(rows)} regions: plot at most {MAX_LOGO_PANELS} (choose --regions)")
        first, n = _drawn_stretch(length, stretch, positions)
        method = str(h5.attrs["method"])
        ids = decode_strings(h5.attrs.get("track_ids", []))
        labels = decode_strings(h5.attrs.get("track_labels", ids))
        tracks = [lab if lab and lab != i else i for i, lab in zip(ids, labels)]
        bins = str(h5.attrs.get("bins", "?"))
        if bins == "center" and "bin_indices" in h5.attrs:
            b = [int(x) for x in h5.attrs["bin_indices"]]
            bins = f"{', '.join(map(str, b))} (center)"
        cut = slice(first, first + n)
        return SaliencyScores(method, rows, [np.asarray(ds[r, cut], np.float64) for r in rows],
                              [np.asarray(h5["seqs"][r, cut], bool) for r in rows],
                              [_sub_place(p, length, first, n) for p in region_places(h5, rows, length)],
                              tracks, bins, n_regions)


def tracks_title(tracks: List[str]) -> str:
    """The panel title naming the tracks whose predictions were summed."""
    if len(tracks) == 1:
        return tracks[0]
    return f"sum of {len(tracks)} tracks: " + ", ".join(tracks)


def plot_saliency(saliency_h5: PathLike, out_path: Optional[PathLike] = None, regions=None,
                  stretch: Optional[int] = None, positions: Optional[str] = None, *, title: Optional[str] = None,
                  dpi: int = DPI):
    """Draw gradient contribution scores: per region, a sequence logo of input x gradient over
    a heatmap of the stored scores of all four bases.

    Parameters
    ----------
    saliency_h5 : saliency.h5 of ``basenji2-fast saliency``: ``scores`` float32 [regions, len, 4],
        ``seqs`` bool [regions, len, 4], ``chr``, ``strand``, ``start``, ``end`` and the attributes
        ``method``, ``track_ids``, ``track_labels``, ``bins``
    out_path : .png / .svg / .pdf to write (atomically); None: only return the figure
    regions : region indices (rows of the file, 0-based): comma-separated string or ints; None: all
        (at most :data:`~basenji2_fast.plots.logo.MAX_LOGO_PANELS`)
    stretch : draw the central ``stretch`` bases of the stored stretch (default: up to
        :data:`DEFAULT_PLOT_STRETCH`); positions : or ``"A-B"``, stored positions A..B-1
    title : figure title (default: the file); dpi : pixels per inch

    The logo letter at each position is the reference base, its height the stored score of that
    base: input x gradient for ``grad`` and ``input_x_grad`` files, input x centered gradient for
    ``centered`` ones; negative below the axis. The heatmap shows the stored score of every base
    (diverging, centred at 0, a dot on the reference base). Positions are drawn 5'->3' on the
    region's strand, as the file holds them. Returns the matplotlib Figure.
    """
    check_figure_size(dpi=dpi)
    if out_path is not None:
        output_format(out_path)
    sal = read_saliency(saliency_h5, regions, stretch, positions)
    fig = logo_figure(len(sal.regions), sal.scores[0].shape[0], dpi)
    for p, (k, scores, seq, place) in enumerate(zip(sal.regions, sal.scores, sal.seqs, sal.places)):
        heights = (scores * seq).sum(axis=1)  # the score of the base present; 0 at N
        draw_panel(fig, p, seq, heights, scores, _LOGO_NAMES.get(sal.method, sal.method),
                   _VALUE_NAMES.get(sal.method, sal.method), place, tracks_title(sal.tracks),
                   region_note(*place, f"region {k}", f"bins {sal.bins}"))
    if title is None:
        shown = Path(saliency_h5).resolve()
        shown = f"{shown.parent.name}/{shown.name}" if shown.parent.name else shown.name
        title = f"Gradient contribution scores \u00b7 {shown}"
    figure_heading(fig, title, f"d(sum of the predictions of the tracks named over bins {sal.bins}) / d(one-hot "
                   f"input); logo: reference base scaled by {_LOGO_NAMES.get(sal.method, sal.method)}; heatmap: "
                   f"{_VALUE_NAMES.get(sal.method, sal.method)} of every base (\u2022 reference base)")
    if out_path is not None:
        save_figure(fig, out_path)
    return fig


def add_saliency_plot_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``saliency-plot saliency.h5 -o plot.png [--regions 0,2] [--stretch LEN | --positions A-B]``
    to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "saliency-plot", help="draw gradient contribution scores (input x gradient logo + heatmap; PNG/SVG/PDF)",
        description="Per region of a saliency.h5 (basenji2-fast saliency): a logo of the reference bases scaled "
                    "by input x gradient over a heatmap of the stored score of every base, titled with the tracks "
                    "and bins whose predictions were summed.")
    g = add_picture_arguments(p, "saliency_h5", "saliency.h5 written by basenji2-fast saliency")
    g = g.add_mutually_exclusive_group()
    g.add_argument("--stretch", type=positive_int, default=None, metavar="LEN",
                   help=f"draw the central LEN bases of the stored stretch (default: up to {DEFAULT_PLOT_STRETCH})")
    g.add_argument("--positions", default=None, metavar="A-B",
                   help="draw stored positions A..B-1 (0-based, end excluded, 5'->3' on the region's strand)")
    p.set_defaults(func=run_saliency_plot)
    return p


def run_saliency_plot(args: argparse.Namespace) -> int:
    """The ``saliency-plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast saliency-plot: error: ...`` (one line) and returns 1."""
    return run_picture("saliency-plot", args.output, [args.saliency_h5], lambda: plot_saliency(
        args.saliency_h5, args.output, regions=args.regions, stretch=args.stretch, positions=args.positions,
        title=args.title, dpi=args.dpi))
