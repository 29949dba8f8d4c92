"""Sequence logos of per-base scores, shared by the pictures of saturation mutagenesis
(``sat-plot``) and of gradients (``saliency-plot``): per panel, the reference base at each
position drawn as a letter whose height is that position's score (below the axis where
negative) over a heatmap of a score for each of the four bases, on a genomic x axis that reads
5'->3' on the region's strand; and the figure geometry for a number of panels and a length."""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .._io import check_output
from ..cli_options import one_line_errors, positive_int
from .figure import DPI, FIG_WIDTH, LABEL_CHARS_PER_INCH, PathLike, output_format, shorten

#: At most this many logo panels in one picture.
MAX_LOGO_PANELS = 16
#: Letter colours of the usual DNA logos.
BASE_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
BASES = "ACGT"
#: A logo's width: FIG_WIDTH, or more for long sequences (LOGO_INCH_PER_BP per base plus room
#: for the labels, whole inches, at most LOGO_MAX_WIDTH).
LOGO_INCH_PER_BP = 0.16
LOGO_MAX_WIDTH = 40.0
#: Heights (inches): a panel (title, logo, heatmap, x axis) is LOGO_PANEL_HEIGHT tall, under LOGO_TOP
#: for the figure's title and note. Whole and half inches keep the pixel size exact at DPI 150.
LOGO_PANEL_HEIGHT = 3.0
LOGO_TOP = 0.5
_LEFT, _RIGHT = 0.75, 1.05           # room for y labels; for the colorbar and its labels
_TITLE, _LOGO, _HEAT = 0.36, 1.25, 0.86   # within a panel, top down; the rest is the x axis


def logo_width(length: int) -> float:
    """Figure width (inches) for a logo of ``length`` positions."""
    return min(LOGO_MAX_WIDTH, max(FIG_WIDTH, float(math.ceil(1.8 + LOGO_INCH_PER_BP * int(length)))))


def logo_figure_size(n_panels: int, length: int) -> Tuple[float, float]:
    """(width, height) in inches of a figure of ``n_panels`` logo panels over ``length`` bases."""
    return logo_width(length), LOGO_TOP + LOGO_PANEL_HEIGHT * max(1, int(n_panels))


def logo_figure(n_panels: int, length: int, dpi: int):
    """A matplotlib Figure (Agg canvas, no pyplot) sized by :func:`logo_figure_size`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=logo_figure_size(n_panels, length), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw_panel(fig, index: int, seq: np.ndarray, heights: np.ndarray, values: np.ndarray, logo_label: str,
               value_label: str, place: Tuple[str, str, int, int], title: str, note: str) -> None:
    """Panel ``index`` (0 at the top) of a :func:`logo_figure`: the logo of ``seq`` scaled by
    ``heights`` (:func:`draw_reference_logo`) over a heatmap of ``values`` [len, 4] (diverging,
    centred at 0, a dot on the reference base, its own colorbar labelled ``value_label``) on the
    genomic axis of ``place`` = (chrom, strand, start, end); ``title`` on the left and ``note``
    (grey) on the right above the logo."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    width, height = fig.get_size_inches()
    fx = lambda inches: inches / width  # noqa: E731
    fy = lambda inches: inches / height  # noqa: E731
    ax_w = width - _LEFT - _RIGHT
    length = len(heights)
    top = height - LOGO_TOP - index * LOGO_PANEL_HEIGHT  # inches from the bottom
    logo = fig.add_axes([fx(_LEFT), fy(top - _TITLE - _LOGO), fx(ax_w), fy(_LOGO)])
    heat = fig.add_axes([fx(_LEFT), fy(top - _TITLE - _LOGO - _HEAT), fx(ax_w), fy(_HEAT)], sharex=logo)
    cax = fig.add_axes([fx(_LEFT + ax_w + 0.12), fy(top - _TITLE - _LOGO - _HEAT), fx(0.13), fy(_HEAT)])

    draw_reference_logo(logo, seq, heights, logo_label)

    vmax = float(np.abs(values).max()) or 1.0
    im = heat.imshow(values.T, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                     extent=(-0.5, length - 0.5, 3.5, -0.5), interpolation="nearest")
    xs = np.flatnonzero(seq.any(axis=1))
    heat.scatter(xs, seq.argmax(axis=1)[xs], s=max(2.0, min(14.0, 700.0 / length)), c="0.15", marker="o",
                 linewidths=0, zorder=3)
    heat.set_yticks(range(4), list(BASES))
    for lab in heat.get_yticklabels():
        lab.set_color(BASE_COLORS[lab.get_text()])
        lab.set_fontweight("bold")
    heat.tick_params(axis="y", labelsize=8.5, length=0)
    genomic_axis(heat, length, *place, ax_w)
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=7, length=2)
    cb.locator = MaxNLocator(nbins=5, symmetric=True)
    cb.update_ticks()
    cb.set_label(value_label, fontsize=7.5, labelpad=2)

    budget = max(12, int(LABEL_CHARS_PER_INCH * width * 0.55))
    logo.set_title(shorten(title, budget), loc="left", fontsize=9, pad=4, fontweight="bold")
    logo.set_title(note, loc="right", fontsize=7.5, pad=4, color="0.4")


def figure_heading(fig, title: str, note: str) -> None:
    """The figure's title and, under it in grey, a note on what the panels show."""
    width, height = fig.get_size_inches()
    fig.text(0.12 / width, (height - 0.2) / height, title, fontsize=10.5, ha="left", va="center")
    fig.text(0.12 / width, (height - 0.4) / height, note, fontsize=7.5, ha="left", va="center", color="0.35")


def region_note(chrom: str, strand: str, start: int, end: int, *more: Sequence[str]) -> str:
    """``chr:start-end (strand)`` (1-based, inclusive) and any further non-empty notes, joined."""
    return " \u00b7 ".join(x for x in (f"{chrom}:{start + 1:,}-{end:,} ({strand})",) + tuple(more) if x)


def draw_letter(ax, char: str, x: float, bottom: float, height: float, width: float, color: str, prop) -> None:
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


def draw_reference_logo(ax, seq: np.ndarray, heights: np.ndarray, ylabel: str) -> None:
    """At each position of ``seq`` (bool one-hot [len, 4], A,C,G,T) its base as a letter of
    height ``heights[i]`` (below the axis where negative; nothing at an N or a zero); the y
    limits around the letters, a zero line, ``ylabel``, no x labels (the axis below has them)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    length = len(heights)
    prop = FontProperties(family="DejaVu Sans", weight="bold")
    letter_w = 0.92 if length <= 400 else 1.0
    ref = seq.argmax(axis=1)
    has_ref = seq.any(axis=1)
    for i in range(length):
        if has_ref[i] and heights[i] != 0:
            b = BASES[ref[i]]
            h = float(heights[i])
            draw_letter(ax, b, i, min(0.0, h), abs(h), letter_w, BASE_COLORS[b], prop)
    lo, hi = min(0.0, float(np.min(heights))), max(0.0, float(np.max(heights)))
    if hi - lo <= 0:
        hi = 1.0
    pad = 0.05 * (hi - lo)
    ax.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
    ax.axhline(0, color="0.35", linewidth=0.6, zorder=0)
    ax.set_xlim(-0.5, length - 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2))
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7.5, length=3)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)


def position_ticks(length: int, coord: Callable[[int], int], max_ticks: int = 8) -> Tuple[List[int], List[str]]:
    """Positions (0-based index into the sequence) of at most about ``max_ticks`` ticks at round
    genomic coordinates (``coord(i)``: the 1-based coordinate of index ``i``)."""
    lo, hi = sorted((coord(0), coord(length - 1)))
    span = max(1, hi - lo)
    steps = [m * 10 ** e for e in range(9) for m in (1, 2, 2.5, 5) if m * 10 ** e == int(m * 10 ** e)]
    step = int(next(s for s in steps if span / s <= max(2, max_ticks)))
    first = -(-lo // step) * step
    coords = list(range(first, hi + 1, step))
    idx = {coord(i): i for i in range(length)}
    pairs = sorted((idx[c], f"{c:,}") for c in coords)  # left to right
    return [i for i, _ in pairs], [t for _, t in pairs]


def genomic_axis(ax, length: int, chrom: str, strand: str, start: int, end: int, ax_width: float) -> None:
    """The x axis of a sequence of ``length`` bases covering ``[start, end)`` of ``chrom`` (0-based),
    read 5'->3' on ``strand``: ticks at round 1-based coordinates (on the minus strand they
    decrease to the right), a minor tick on every base of a short sequence, and a label."""
    coord = (lambda i: start + 1 + i) if strand != "-" else (lambda i: end - i)
    ticks, tick_labels = position_ticks(length, coord, int(ax_width / 0.8))
    ax.set_xticks(ticks, tick_labels)
    if length <= 150:  # a minor tick on every base
        ax.set_xticks(range(length), minor=True)
        ax.tick_params(axis="x", which="minor", length=1.5)
    ax.tick_params(axis="x", labelsize=7.5, length=3)
    where = (f"{chrom} position" if strand != "-" else
             f"{chrom} position (minus strand, 5\u2032\u21923\u2032: coordinates decrease)")
    ax.set_xlabel(where, fontsize=8.5, labelpad=2)


# ---------------------------------------------------------------------------------------------
# Reading the per-region files the logos are drawn from (sat's scores.h5, saliency.h5)

def index_list(value, what: str) -> Optional[List[int]]:
    """None, an int, ints, or comma-separated integers as text (``"0,2"``) -> a list of int
    (None stays None); ValueError naming ``what`` for other text."""
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


def decode_strings(values) -> List[str]:
    """HDF5 strings (bytes or str) -> str."""
    return [v.decode("utf-8", "replace") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in values]


def open_h5(path: PathLike):
    """An open ``h5py.File`` for reading; one-line ValueError for a missing or non-HDF5 file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({' '.join(str(e).split())})") from None


def region_rows(regions, n_regions: int, path: PathLike) -> List[int]:
    """The rows (0-based) a ``--regions`` value names in a file of ``n_regions`` regions (None:
    all); one-line ValueError for none or one out of range."""
    rows = index_list(regions, "regions")
    rows = list(range(n_regions)) if rows is None else rows
    if not rows:
        raise ValueError("no regions selected")
    bad = [r for r in rows if not 0 <= r < n_regions]
    if bad:
        raise ValueError(f"region {bad[0]} out of range: {path} has {n_regions} regions (0..{n_regions - 1})")
    twice = next((r for k, r in enumerate(rows) if r in rows[:k]), None)
    if twice is not None:
        raise ValueError(f"regions: region {twice} given twice")
    return rows


def region_places(h5, rows: Sequence[int], length: int) -> List[Tuple[str, str, int, int]]:
    """(chrom, strand, start, end) of the given rows, from the file's ``chr``, ``strand``,
    ``start``, ``end`` (where one is missing: ``?``, ``+``, 0, ``length``)."""
    n = h5["seqs"].shape[0]

    def meta(name, default):
        return h5[name][()] if name in h5 else [default] * n

    chrom, strand = decode_strings(meta("chr", "?")), decode_strings(meta("strand", "+"))
    start, end = meta("start", 0), meta("end", length)
    return [(chrom[r], strand[r] if strand[r] in "+-" else "+", int(start[r]), int(end[r])) for r in rows]


# ---------------------------------------------------------------------------------------------
# The picture commands (sat-plot, saliency-plot)

def add_picture_arguments(p: argparse.ArgumentParser, source: str, source_help: str) -> argparse._ArgumentGroup:
    """What every logo picture command takes: the file it draws (positional ``source``), ``-o``,
    ``--regions``, ``--title``, ``--dpi``. Returns a group for the command's own options."""
    p.add_argument(source, help=source_help)
    p.add_argument("-o", "--output", required=True, help="picture to write: .png, .svg or .pdf")
    p.add_argument("--regions", default=None, help="comma-separated region indices, 0-based (default: all, or the first that fit "
                                                    f"in {MAX_LOGO_PANELS} panels)")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--dpi", type=positive_int, default=DPI, help=f"pixels per inch of a PNG (default {DPI})")
    return p.add_argument_group("what to draw")


def run_picture(command: str, output: PathLike, inputs: Iterable, draw: Callable[[], object]) -> int:
    """A picture command: check ``output`` (a picture format, writable, none of the ``inputs``),
    ``draw()`` it and print ``wrote OUTPUT``; an error is one line (exit status 1)."""
    def work():
        output_format(output)
        check_output(output, inputs=list(inputs), parents=True)
        draw()
        print(f"wrote {output}")

    return one_line_errors(command, work)
