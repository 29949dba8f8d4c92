"""Pictures of tracks over a genomic region, for a person to look at.

    basenji2-fast plot -m model.safetensors -f hg38.fa --region chr11:5,225,000-5,230,000 \\
        -t targets_human.txt --tracks 4675,4676 -o hbb.png
    basenji2-fast plot --bigwigs genome_out/ --region chr11:5,200,000-5,300,000 -o hbb.png

One panel per track (filled area over the bins, own y scale, track label above it), one
shared genomic x axis (bp, kb or Mb, with the chromosome name).  PNG, SVG or PDF by the
output's extension.  matplotlib is imported only when a picture is drawn, on the Agg canvas
through :class:`matplotlib.figure.Figure` objects: no pyplot, no global state.

Regions are written as genome browsers and ``samtools faidx`` write them:
``chr:start-end``, 1-based and inclusive, commas allowed (``chr1:1,000,001-1,100,000`` is
the 0-based half-open interval [1,000,000, 1,100,000)).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: Output formats, by file extension.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Figure geometry (inches): width, height of one track panel, room for the title and x axis.
#: Whole numbers of inches keep the pixel size exact (width * dpi by height * dpi).
FIG_WIDTH = 10.0
PANEL_HEIGHT = 1.0
MARGIN_HEIGHT = 1.0
DPI = 150
#: More panels than this is not a picture anyone can read; choose tracks instead.
MAX_PANELS = 48
#: At most this many bins are drawn across the x axis (bigWigs over long regions are averaged).
MAX_BINS = 2000
#: At most this many model windows are predicted for one picture.
MAX_WINDOWS = 32
_LABEL_CHARS_PER_INCH = 11  # panel title + grey note, at their font sizes, fit the figure width
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")


# --------------------------------------------------------------------------------------
# Regions

class GenomicRegion(NamedTuple):
    """0-based half-open interval [start, end) on ``chrom``."""
    chrom: str
    start: int
    end: int

    def __str__(self) -> str:  # the 1-based inclusive form it was written in
        return f"{self.chrom}:{self.start + 1:,}-{self.end:,}"

    @property
    def length(self) -> int:
        return self.end - self.start


_REGION_RE = re.compile(r"^(?P<chrom>\S+):(?P<start>[\d,_]+)-(?P<end>[\d,_]+)$")


def parse_region(text: str) -> GenomicRegion:
    """``"chr1:1,000,001-1,100,000"`` (1-based, inclusive) -> GenomicRegion("chr1", 1000000, 1100000).

    Raises ValueError with a one-line message for anything else (a missing chromosome or
    coordinate, start < 1, end < start).
    """
    if not isinstance(text, str):
        raise ValueError(f"region must be a string 'chrom:start-end', got {type(text).__name__}")
    m = _REGION_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad region {text!r}: expected chrom:start-end, e.g. chr1:1,000,001-1,100,000 "
                         "(1-based, inclusive)")
    start, end = (int(m.group(k).replace(",", "").replace("_", "")) for k in ("start", "end"))
    if start < 1:
        raise ValueError(f"bad region {text!r}: start must be >= 1 (coordinates are 1-based)")
    if end < start:
        raise ValueError(f"bad region {text!r}: end {end:,} is before start {start:,}")
    return GenomicRegion(m.group("chrom"), start - 1, end)


def _check_region(region: GenomicRegion, sizes: dict, source: str) -> int:
    """The chromosome's length; ValueError when it is missing or the region runs past it."""
    if region.chrom not in sizes:
        names = list(sizes)
        shown = ", ".join(names[:8]) + (f", ... ({len(names):,} in all)" if len(names) > 8 else "")
        raise ValueError(f"{source}: no chromosome {region.chrom!r} (has {shown})")
    size = int(sizes[region.chrom])
    if region.end > size:
        raise ValueError(f"region {region} runs past the end of {region.chrom} ({size:,} bp in {source})")
    return size


def _as_region(region) -> GenomicRegion:
    if isinstance(region, GenomicRegion):
        return region
    if isinstance(region, tuple) and len(region) == 3:
        chrom, start, end = region
        if not 0 <= int(start) < int(end):
            raise ValueError(f"bad region {region!r}: expected 0 <= start < end (0-based, half-open)")
        return GenomicRegion(str(chrom), int(start), int(end))
    return parse_region(region)


# --------------------------------------------------------------------------------------
# Drawing

def figure_size(n_tracks: int, width: float = FIG_WIDTH, panel_height: float = PANEL_HEIGHT) -> Tuple[float, float]:
    """(width, height) in inches of a figure with ``n_tracks`` panels."""
    return float(width), MARGIN_HEIGHT + panel_height * max(1, int(n_tracks))


def _unit(span: float) -> Tuple[str, float]:
    if span >= 1_000_000:
        return "Mb", 1e6
    if span >= 10_000:
        return "kb", 1e3
    return "bp", 1.0


def _shorten(label: str, n: int) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= n else label[:n - 1].rstrip() + "\u2026"


def _genomic_formatter(scale: float):
    from matplotlib.ticker import Formatter

    class GenomicFormatter(Formatter):
        """Tick labels in ``scale`` units with as few decimals as the ticks need, thousands
        separated (155,020 kb; 1.25 Mb; 30,500 bp)."""

        def __call__(self, x, pos=None):
            return self.format_ticks([x])[0]

        def format_ticks(self, values):
            vals = [v / scale for v in values]
            for d in range(7):
                if all(abs(round(v, d) - v) < 1e-9 * max(1.0, abs(v)) for v in vals):
                    break
            return [f"{v:,.{d}f}" for v in vals]

    return GenomicFormatter()


def _output_format(out_path: PathLike) -> str:
    ext = Path(out_path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{out_path}: unknown picture format {ext or '(no extension)'!r}; "
                         f"use {', '.join(FORMATS)}")
    return FORMATS[ext]


def _save(fig, out_path: PathLike) -> None:
    from .._io import atomic_output

    fmt = _output_format(out_path)
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi, facecolor="white")


def _draw(values: np.ndarray, edges: np.ndarray, chrom: str, labels: Sequence[str], out_path: Optional[PathLike],
          title: Optional[str], xlim: Tuple[float, float], highlight: Optional[Tuple[int, int]] = None,
          subtitle: Optional[str] = None, width: float = FIG_WIDTH, panel_height: float = PANEL_HEIGHT,
          dpi: int = DPI, ylabel: Optional[str] = None, notes: Optional[Sequence[str]] = None):
    """The figure: values [bins, tracks] over bins [edges[i], edges[i+1]); NaN bins are gaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import AutoMinorLocator, MaxNLocator

    n_bins, n_tracks = values.shape
    fig = Figure(figsize=figure_size(n_tracks, width, panel_height), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_tracks, 1, sharex=True, squeeze=False)[:, 0]
    unit, scale = _unit(xlim[1] - xlim[0])
    y = np.concatenate([values, values[-1:]], axis=0)  # step="post" needs one value per edge
    notes = list(notes) if notes is not None else [""] * n_tracks
    for i, (ax, label, note) in enumerate(zip(axes, labels, notes)):
        color = _COLORS[i % len(_COLORS)]
        col = values[:, i]
        finite = np.isfinite(col)
        if highlight is not None:  # a band behind the bars, its edges drawn over them
            ax.axvspan(highlight[0], highlight[1], color="#fde9a9", zorder=0, linewidth=0)
            for x in highlight:
                ax.axvline(x, color="0.25", linewidth=0.7, linestyle=(0, (3, 2)), zorder=3)
        if finite.any():
            ax.fill_between(edges, y[:, i], 0, step="post", color=color, alpha=0.85, linewidth=0, zorder=2)
            lo, hi = float(np.nanmin(col)), float(np.nanmax(col))
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            pad = 0.06 * (hi - lo) if hi > lo else 1.0
            ax.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
        else:
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "no data in this region", transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, color="0.45")
        budget = max(12, int(_LABEL_CHARS_PER_INCH * width) - len(note or "") - 4)
        ax.set_title(_shorten(label, budget), loc="left", fontsize=8.5, pad=3)
        if note:
            ax.set_title(note, loc="right", fontsize=7.5, pad=3, color="0.45")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3, min_n_ticks=2))
        ax.tick_params(axis="both", labelsize=7.5, length=3)
        ax.tick_params(axis="x", which="both", labelbottom=ax is axes[-1])
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.margins(x=0)
        ax.grid(axis="y", color="0.92", linewidth=0.6, zorder=1)
        ax.set_axisbelow(True)
    last = axes[-1]
    last.set_xlim(*xlim)
    last.xaxis.set_major_locator(MaxNLocator(nbins=9, steps=[1, 2, 2.5, 5, 10]))
    last.xaxis.set_major_formatter(_genomic_formatter(scale))
    last.xaxis.set_minor_locator(AutoMinorLocator())
    last.set_xlabel(f"{chrom} position ({unit})", fontsize=9)
    if ylabel:
        fig.supylabel(ylabel, fontsize=9)
    if title:
        fig.suptitle(title if not subtitle else f"{title}\n{subtitle}", fontsize=10.5,
                     x=0.01, ha="left")
    fig.tight_layout(h_pad=0.4)
    if out_path is not None:
        _save(fig, out_path)
    return fig


def _check_values(values, labels, notes=None) -> Tuple[np.ndarray, List[str]]:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"values must be [bins, tracks], got shape {values.shape}")
    if labels is None:
        labels = [f"track {i}" for i in range(values.shape[1])]
    labels = [str(x) for x in labels]
    if len(labels) != values.shape[1]:
        raise ValueError(f"{len(labels)} labels for {values.shape[1]} tracks")
    if notes is not None and len(notes) != values.shape[1]:
        raise ValueError(f"{len(notes)} notes for {values.shape[1]} tracks")
    if values.shape[1] > MAX_PANELS:
        raise ValueError(f"{values.shape[1]:,} tracks: plot at most {MAX_PANELS} panels (choose tracks)")
    return values, labels


def plot_tracks(values, chrom: str, start: int, bin_size: int, labels: Optional[Sequence[str]] = None,
                out_path: Optional[PathLike] = None, title: Optional[str] = None, *,
                highlight: Optional[Tuple[int, int]] = None, xlim: Optional[Tuple[int, int]] = None,
                width: float = FIG_WIDTH, panel_height: float = PANEL_HEIGHT, dpi: int = DPI,
                ylabel: Optional[str] = None, notes: Optional[Sequence[str]] = None):
    """Draw tracks over consecutive genomic bins, one panel per track.

    Parameters
    ----------
    values : array [bins, tracks] (or [bins] for one track)
        Bin ``i`` covers ``[start + i * bin_size, start + (i + 1) * bin_size)`` of ``chrom``
        (0-based); NaN values are drawn as gaps.
    chrom, start, bin_size : where the bins lie
    labels : one per track (the panel titles, left); default ``track 0``, ``track 1``, ...
    out_path : .png, .svg or .pdf file to write (atomically); None: only return the figure
    title : figure title (default: the region, 1-based)
    highlight : (start, end), 0-based, shaded in every panel (e.g. the region asked for)
    xlim : (start, end) of the x axis (default: the bins)
    width, panel_height : inches (figure height = 1 + panel_height * tracks); dpi : pixels per inch
    ylabel : one y-axis label for all panels (e.g. the units); notes : grey text at the right
        of each panel's title (e.g. identifier and column)

    Returns
    -------
    matplotlib.figure.Figure (not registered with pyplot; display it, or let it be collected).
    """
    values, labels = _check_values(values, labels, notes)
    if out_path is not None:
        _output_format(out_path)
    start, bin_size = int(start), int(bin_size)
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    edges = start + bin_size * np.arange(values.shape[0] + 1, dtype=np.int64)
    xlim = tuple(xlim) if xlim is not None else (int(edges[0]), int(edges[-1]))
    if title is None:
        title = str(GenomicRegion(chrom, int(xlim[0]), int(xlim[1])))
    return _draw(values, edges, chrom, labels, out_path, title, xlim, highlight=highlight, width=width,
                 panel_height=panel_height, dpi=dpi, ylabel=ylabel, notes=notes)


# --------------------------------------------------------------------------------------
# Track selection (targets files are read by basenji2_fast.targets)

def _panel_titles(columns: Sequence[Optional[int]], identifiers: Sequence[Optional[str]],
                  labels: Sequence[Optional[str]]) -> Tuple[List[str], List[str]]:
    """(left, right) panel titles: the description on the left; identifier and head column on
    the right, in grey. Without a description (no targets file): ``track N`` alone."""
    left, right = [], []
    for c, ident, label in zip(columns, identifiers, labels):
        label = (label or "").strip()
        ident = (ident or "").strip()
        default_id = c is not None and ident in ("", f"t{c}")
        if not label or label == ident:
            left.append(f"track {c}" if default_id else (ident or f"track {c}"))
            right.append("" if default_id or c is None else f"column {c}")
        else:
            left.append(label)
            right.append(" \u00b7 ".join(x for x in (ident if not default_id else "",
                                                      f"column {c}" if c is not None else "") if x))
    return left, right


def resolve_tracks(targets, tracks, n_outputs: int) -> Tuple[List[int], List[str], List[str]]:
    """(columns, labels, notes) for ``tracks`` among a head's ``n_outputs`` columns.

    tracks : None (all), a TrackSelection (anything with ``columns``, ``identifiers`` and
        ``labels``), or a selector for :func:`basenji2_fast.targets.select_tracks`
        (comma-separated integers or a sequence of int, identifiers, or a regular expression
        over the descriptions).
    targets : None, a targets.txt path, or a Targets object.

    ``labels`` are the panel titles (descriptions, or ``track N``), ``notes`` the grey text at
    the right of each panel (identifier and column).
    """
    if tracks is None or not hasattr(tracks, "columns"):
        from ..targets import read_targets, select_tracks

        if isinstance(targets, (str, os.PathLike)):
            targets = read_targets(targets)
        if tracks is not None and not isinstance(tracks, str):
            tracks = [int(t) for t in np.asarray(list(tracks)).ravel()]
        tracks = select_tracks(targets, tracks, n_outputs)
    cols = [int(c) for c in tracks.columns]
    idents = list(getattr(tracks, "identifiers", None) or [None] * len(cols))
    labels, notes = _panel_titles(cols, idents, list(getattr(tracks, "labels", None) or [None] * len(cols)))
    return cols, labels, notes


def _check_panels(cols: Sequence, hint: str) -> None:
    if not cols:
        raise ValueError("no tracks selected")
    if len(cols) > MAX_PANELS:
        raise ValueError(f"{len(cols):,} tracks selected: plot at most {MAX_PANELS} panels ({hint})")


# --------------------------------------------------------------------------------------
# From a model

def model_windows(seq_length: int, crop_bp: int, span: int, region: GenomicRegion,
                  max_windows: int = MAX_WINDOWS) -> Tuple[List[int], int]:
    """(window starts, first output position) of the model windows whose output bins cover
    ``region`` end to end, centred on it; one window is exactly the window ``predict`` uses
    for the same BED interval (centred on ``(start + end) // 2``)."""
    mid = (region.start + region.end) // 2
    n = max(1, math.ceil(region.length / span))
    if n == 1:
        w0 = mid - seq_length // 2
        if w0 + crop_bp > region.start or w0 + crop_bp + span < region.end:
            n = 2  # an off-centre crop misses an edge of a region nearly one window long
    if n > 1:
        w0 = mid - (n * span) // 2 - crop_bp
    if n > max_windows:
        raise ValueError(f"region {region} is {region.length:,} bp: {n} model windows of {span:,} bp output "
                         f"(at most {max_windows}); predict the genome once (predict-genome) and plot "
                         "its bigWigs with --bigwigs")
    return [w0 + k * span for k in range(n)], w0 + crop_bp


class RegionTracks(NamedTuple):
    """What a picture shows: ``values[i, j]`` of track ``j`` over bin ``[edges[i], edges[i+1])``
    of ``chrom`` (0-based); NaN where there is no value (off the chromosome, no data)."""
    chrom: str
    edges: np.ndarray
    values: np.ndarray
    columns: List[Optional[int]]
    labels: List[str]
    notes: List[str]
    chrom_length: int
    meta: dict


def _labels(given, default: List[str], n: int, what: str = "tracks") -> List[str]:
    if given is None:
        return default
    given = [str(x) for x in given]
    if len(given) != n:
        raise ValueError(f"{len(given)} labels for {n} {what}")
    return given


def predict_region(model, fasta, region, tracks=None, *, head: Optional[str] = None, targets=None,
                   rc: bool = False, shifts: Sequence[int] = (0,), n_encoding: str = "zeros",
                   max_windows: int = MAX_WINDOWS) -> RegionTracks:
    """Predict the model window centred on ``region`` (consecutive windows when the region is
    longer than one window's output) and return every output bin.

    Arguments as :func:`plot_region_from_model`.  Bins wholly off the chromosome (the window
    runs past its end and reads N there) are NaN.  ``meta``: head, windows, window_starts,
    seq_length, bin_size, rc, shifts.
    """
    from ..dna import encode
    from ..genome import fetch, open_fasta

    region = _as_region(region)
    if isinstance(model, (str, os.PathLike)):
        from ..model import load

        model = load(model)
    fasta_name = str(fasta) if isinstance(fasta, (str, os.PathLike)) else getattr(fasta, "filename", "FASTA")
    if isinstance(fasta, (str, os.PathLike)):
        fasta = open_fasta(fasta)
    chrom_len = _check_region(region, {k: len(fasta[k]) for k in fasta.keys()}, fasta_name)
    head = head or model.head_names[0]
    if head not in model.spec.heads:
        raise ValueError(f"no head {head!r}; this model has {model.head_names}")
    cols, labels, notes = resolve_tracks(targets, tracks, model.spec.heads[head].tracks)
    _check_panels(cols, "choose them with --tracks")
    bs, span = model.bin_size, model.n_bins * model.bin_size
    starts, out0 = model_windows(model.seq_length, model.spec.crop_bins * bs, span, region, max_windows)
    codes = np.stack([encode(fetch(fasta, region.chrom, w, w + model.seq_length),
                             what=f"{region.chrom}:{w + 1:,}-{w + model.seq_length:,}") for w in starts])
    pred = model.predict(codes, head=head, tracks=cols, rc=rc, shifts=shifts, n_encoding=n_encoding)
    values = pred.reshape(-1, len(cols)).astype(np.float64)
    edges = out0 + bs * np.arange(values.shape[0] + 1, dtype=np.int64)
    values[(edges[1:] <= 0) | (edges[:-1] >= chrom_len)] = np.nan  # bins wholly off the chromosome
    meta = {"head": head, "windows": len(starts), "window_starts": starts, "seq_length": model.seq_length,
            "bin_size": bs, "rc": bool(rc), "shifts": [int(x) for x in shifts]}
    return RegionTracks(region.chrom, edges, values, cols, labels, notes, chrom_len, meta)


def plot_region_from_model(model, fasta, region, tracks=None, labels: Optional[Sequence[str]] = None,
                           out_path: Optional[PathLike] = None, *, head: Optional[str] = None, targets=None,
                           rc: bool = False, shifts: Sequence[int] = (0,), n_encoding: str = "zeros",
                           region_only: bool = False, title: Optional[str] = None,
                           max_windows: int = MAX_WINDOWS, width: float = FIG_WIDTH,
                           panel_height: float = PANEL_HEIGHT, dpi: int = DPI):
    """Predict the model window centred on ``region`` and draw its output bins.

    Parameters
    ----------
    model : Model or a model file path
    fasta : FASTA path or an open pyfaidx.Fasta
    region : "chr:start-end" (1-based inclusive), a GenomicRegion, or (chrom, start, end) 0-based
    tracks : None (every column of the head), a TrackSelection, or a selector for
        :func:`basenji2_fast.targets.select_tracks` (integers: head columns, or rows of
        ``targets``; identifiers; a regular expression over the descriptions)
    labels : panel titles, one per track (default: the targets' descriptions, else ``track N``)
    out_path : .png / .svg / .pdf to write; None: only return the figure
    head : model head (default: the first)
    targets : targets.txt path or Targets object, for selectors and labels
    rc, shifts, n_encoding : as :meth:`Model.predict`
    region_only : draw only the bins overlapping the region (default: every output bin of the
        window, the region shaded)
    max_windows : a region longer than one window's output is covered by consecutive windows,
        at most this many

    The window is the one ``predict`` uses for the same BED interval (centred on
    ``(start + end) // 2``).  Bins wholly off the chromosome are left blank.  Returns the
    matplotlib Figure.
    """
    region = _as_region(region)
    if out_path is not None:
        _output_format(out_path)  # before any work
    r = predict_region(model, fasta, region, tracks, head=head, targets=targets, rc=rc, shifts=shifts,
                       n_encoding=n_encoding, max_windows=max_windows)
    labels = _labels(labels, r.labels, len(r.columns))
    values, edges = r.values, r.edges
    if region_only:
        keep = (edges[1:] > region.start) & (edges[:-1] < region.end)
        i0, i1 = int(np.argmax(keep)), len(keep) - int(np.argmax(keep[::-1]))
        values, edges = values[i0:i1], edges[i0:i1 + 1]
        xlim, highlight = (region.start, region.end), None
    else:
        xlim = (max(0, int(edges[0])), min(r.chrom_length, int(edges[-1])))
        highlight = (region.start, region.end) if (region.start, region.end) != xlim else None
    if title is None:
        m = r.meta
        what = f"{m['windows']} windows" if m["windows"] > 1 else f"{m['seq_length']:,}-bp window"
        title = f"{GenomicRegion(region.chrom, *xlim)}: predicted {m['head']} tracks ({what}, {m['bin_size']}-bp bins)"
        ens = (["reverse complement"] if rc else []) + ([f"shifts {','.join(map(str, shifts))}"]
                                                        if tuple(shifts) != (0,) else [])
        if ens:
            title += "; mean over " + " and ".join(ens)
    subtitle = f"shaded: {region} ({region.length:,} bp)" if highlight else None
    return _draw(values, edges, region.chrom, labels, out_path, title, xlim, highlight=highlight,
                 subtitle=subtitle, width=width, panel_height=panel_height, dpi=dpi, notes=r.notes)


# --------------------------------------------------------------------------------------
# From bigWigs

class BigWigTrack(NamedTuple):
    path: Path
    label: str = ""
    column: Optional[int] = None
    identifier: Optional[str] = None


def _column_of(path: Path) -> Optional[int]:
    m = re.match(r"^(\d+)_", path.name)
    return int(m.group(1)) if m else None


def _manifest_tracks(manifest: dict, folder: Path) -> List[BigWigTrack]:
    """predict-genome's ``tracks``: {columns, identifiers, labels, files} (lists), or a list of
    {column, identifier, label[, file]} records."""
    tr = manifest["tracks"]
    if isinstance(tr, dict):
        cols = list(tr["columns"])
        n = len(cols)
        idents = list(tr.get("identifiers") or [None] * n)
        labels = list(tr.get("labels") or [None] * n)
        files = list(tr.get("files") or [None] * n)
        records = [dict(column=c, identifier=i, label=lab, file=f) for c, i, lab, f in zip(cols, idents, labels, files)]
    else:
        records = [dict(t) for t in tr]
    out = []
    for t in records:
        col, ident = t.get("column"), t.get("identifier")
        name = t.get("file") or t.get("path") or f"{col}_{ident}.bw"
        path = Path(name) if Path(name).is_absolute() else folder / Path(name).name
        out.append(BigWigTrack(path, str(t.get("label") or ""), None if col is None else int(col),
                               None if ident is None else str(ident)))
    return out


def bigwig_tracks(source) -> Tuple[List[BigWigTrack], dict]:
    """The bigWigs to draw and the manifest (or {}).

    source : a folder (with ``manifest.json`` from predict-genome; without one, every
        ``*.bw`` in it, in column order when named ``<column>_<identifier>.bw``), one bigWig
        path, or a list of bigWig paths.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source)
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
                return _manifest_tracks(manifest, folder), manifest
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{manifest_path}: not a predict-genome manifest ({type(e).__name__}: {e})") from None
        paths = sorted({p for ext in ("*.bw", "*.bigWig", "*.bigwig") for p in folder.glob(ext)})
        if not paths:
            raise ValueError(f"{folder}: no manifest.json and no bigWig files")
        paths.sort(key=lambda p: (_column_of(p) is None, _column_of(p) or 0, p.name))
        items = []
        for p in paths:
            col = _column_of(p)
            items.append(BigWigTrack(p, "", col, p.stem[len(str(col)) + 1:] if col is not None else p.stem))
        return items, {}
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not paths:
        raise ValueError("no bigWig files given")
    return [BigWigTrack(Path(p), "", None, Path(p).stem) for p in paths], {}


def _open_bigwig(path: Path):
    import pyBigWig

    if not path.is_file():
        raise ValueError(f"{path}: bigWig file not found")
    try:
        bw = pyBigWig.open(str(path))
    except RuntimeError:
        bw = None
    if bw is None or not bw.isBigWig():
        raise ValueError(f"{path}: not a bigWig file")
    return bw


def _native_bin_size(intervals) -> Optional[int]:
    if not intervals:
        return None
    widths = np.asarray([e - s for s, e, _ in intervals[:1000]], np.int64)
    vals, counts = np.unique(widths, return_counts=True)
    return int(vals[np.argmax(counts)])


def binned_means(intervals, edges: np.ndarray) -> np.ndarray:
    """Coverage-weighted mean of bigWig ``intervals`` [(start, end, value), ...] (sorted, not
    overlapping, as a bigWig holds them) in each bin [edges[i], edges[i+1]); NaN where no
    interval covers any of the bin."""
    n = len(edges) - 1
    out = np.full(n, np.nan)
    if not intervals:
        return out
    arr = np.asarray(intervals, np.float64).reshape(-1, 3)
    arr = arr[np.isfinite(arr[:, 2])]
    if not len(arr):
        return out
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    s, e, v = arr[:, 0], arr[:, 1], arr[:, 2]
    # Integrals from the left of value and of coverage: piecewise linear between interval ends.
    xp = np.stack([s, e], axis=1).ravel()
    area, cover = v * (e - s), e - s
    f_val = np.stack([np.cumsum(area) - area, np.cumsum(area)], axis=1).ravel()
    f_cov = np.stack([np.cumsum(cover) - cover, np.cumsum(cover)], axis=1).ravel()
    x = np.asarray(edges, np.float64)
    tot = np.diff(np.interp(x, xp, f_val))
    cov = np.diff(np.interp(x, xp, f_cov))
    ok = cov > 0.5
    out[ok] = tot[ok] / cov[ok]
    return out


def _pick_bigwigs(items: List[BigWigTrack], tracks, targets) -> List[BigWigTrack]:
    """The tracks a selector names: head columns (integers), identifiers, a TrackSelection, or
    (with a targets file) anything :func:`~basenji2_fast.targets.select_tracks` resolves;
    otherwise a regular expression over the labels."""
    by_col = {t.column: t for t in items if t.column is not None}
    have = ", ".join(t.path.name for t in items[:6]) + (", ..." if len(items) > 6 else "")

    def by_column(cols):
        missing = [c for c in cols if c not in by_col]
        if missing:
            raise ValueError(f"no bigWig for track column {missing[0]} (have {have})")
        return [by_col[c] for c in cols]

    if hasattr(tracks, "columns"):
        return by_column([int(c) for c in tracks.columns])
    parts = ([p.strip() for p in tracks.split(",") if p.strip()] if isinstance(tracks, str)
             else [str(int(t)) for t in tracks])
    if not parts:
        raise ValueError("empty track selector")
    if all(re.fullmatch(r"\d+", p) for p in parts) and targets is None:
        return by_column([int(p) for p in parts])
    by_id = {}
    for t in items:
        for key in (t.identifier, t.path.name, t.path.stem):
            if key:
                by_id.setdefault(key, t)
    if all(p in by_id for p in parts):
        return [by_id[p] for p in parts]
    if targets is not None:
        from ..targets import read_targets, select_tracks

        tg = read_targets(targets) if isinstance(targets, (str, os.PathLike)) else targets
        n_outputs = max(len(tg), int(np.max(tg.index)) + 1 if len(tg) else 0)
        return by_column(select_tracks(tg, tracks, n_outputs).columns)
    try:
        rx = re.compile(tracks)
    except (re.error, TypeError) as e:
        raise ValueError(f"track selector {tracks!r}: not columns, not identifiers of these bigWigs, "
                         f"not a regular expression ({e})") from None
    hits = [t for t in items if rx.search(t.label or "") or rx.search(t.identifier or "")]
    if not hits:
        raise ValueError(f"track selector {tracks!r} matched no column, identifier or label (have {have})")
    return hits


def read_bigwig_region(bigwigs, region, tracks=None, *, targets=None, max_bins: int = MAX_BINS) -> RegionTracks:
    """Read bigWig tracks over ``region`` into bins (arguments as :func:`plot_region_from_bigwigs`).

    The bins are the files' own (the manifest's bin size, else the most common interval
    width), or a multiple of it so that at most ``max_bins`` cover the region, aligned to
    multiples of the bin size; each holds the coverage-weighted mean of the values in it, NaN
    where there is none.  ``meta``: manifest (or {}), bin_size.
    """
    region = _as_region(region)
    items, manifest = bigwig_tracks(bigwigs)
    if tracks is not None:
        items = _pick_bigwigs(items, tracks, targets)
    _check_panels(items, "choose them with --tracks")
    labels, notes = _panel_titles([t.column for t in items], [t.identifier for t in items],
                                  [t.label for t in items])
    handles = []
    try:
        for t in items:
            handles.append(_open_bigwig(t.path))
        chrom_len = _check_region(region, handles[0].chroms(), str(items[0].path))
        for t, bw in zip(items[1:], handles[1:]):
            _check_region(region, bw.chroms(), str(t.path))
        native = (manifest.get("tiling") or {}).get("bin_size") or manifest.get("bin_size")
        if not native:
            probe = (bw.intervals(region.chrom, region.start, region.end) for bw in handles)
            native = next((b for b in map(_native_bin_size, probe) if b), 128)
        native = int(native)
        bs = native * max(1, math.ceil(region.length / native / max(1, int(max_bins))))
        g0 = (region.start // bs) * bs
        g1 = min(chrom_len, -(-region.end // bs) * bs)
        edges = np.append(np.arange(g0, g1, bs, dtype=np.int64), g1)
        values = np.stack([binned_means(bw.intervals(region.chrom, int(g0), int(g1)) or (), edges)
                           for bw in handles], axis=1)
    finally:
        for bw in handles:
            bw.close()
    return RegionTracks(region.chrom, edges, values, [t.column for t in items], labels, notes, chrom_len,
                        {"manifest": manifest, "bin_size": bs, "files": [str(t.path) for t in items]})


def plot_region_from_bigwigs(bigwigs, region, out_path: Optional[PathLike] = None, *,
                             labels: Optional[Sequence[str]] = None, tracks=None, targets=None,
                             title: Optional[str] = None, max_bins: int = MAX_BINS, width: float = FIG_WIDTH,
                             panel_height: float = PANEL_HEIGHT, dpi: int = DPI):
    """Draw bigWig tracks (e.g. predict-genome's output) over ``region``.

    Parameters
    ----------
    bigwigs : a predict-genome output folder (``manifest.json``), a folder of ``*.bw``, one
        bigWig path or a list of them
    region : "chr:start-end" (1-based inclusive), a GenomicRegion, or (chrom, start, end) 0-based
    out_path : .png / .svg / .pdf to write; None: only return the figure
    labels : panel titles (default: the manifest's labels, else identifiers / file names)
    tracks : which of a folder's tracks: head columns, identifiers, a TrackSelection, with
        ``targets`` any selector of :func:`basenji2_fast.targets.select_tracks`, else a
        regular expression over the labels
    max_bins : at most this many bins across the picture; a longer region shows the mean of
        neighbouring bins

    Positions without data (windows predict-genome skipped, chromosomes it did not predict)
    are gaps.  Returns the matplotlib Figure.
    """
    region = _as_region(region)
    if out_path is not None:
        _output_format(out_path)
    r = read_bigwig_region(bigwigs, region, tracks, targets=targets, max_bins=max_bins)
    labels = _labels(labels, r.labels, len(r.columns), "bigWig files")
    if title is None:
        manifest = r.meta["manifest"]
        head = (manifest.get("options") or {}).get("head")
        what = f"predicted {head} tracks" if head else "predicted tracks" if manifest else "bigWig tracks"
        title = f"{region}: {what} ({r.meta['bin_size']:,}-bp bins)"
    return _draw(r.values, r.edges, region.chrom, labels, out_path, title, (region.start, region.end),
                 width=width, panel_height=panel_height, dpi=dpi, notes=r.notes)


# --------------------------------------------------------------------------------------
# Saturation mutagenesis (basenji_sat_bed.py / ``basenji2-fast sat`` scores.h5)

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
            from ..targets import Targets

            ids, descs = targets if isinstance(targets, tuple) else (None, targets)
            ids = ids or [f"t{c}" for c in range(n_tracks)]
            targets = Targets(path=str(path), index=np.arange(n_tracks, dtype=np.int64), identifier=list(ids),
                              description=list(descs or ids), file=[""] * n_tracks, sum_stat=[""] * n_tracks)
        if isinstance(tracks, str) and re.fullmatch(r"[\d,\s]+", tracks):
            tracks = _int_list(tracks, "tracks")
        cols, names, notes = resolve_tracks(targets, tracks, n_tracks)
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
    if out_path is not None:
        _output_format(out_path)
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
    budget = max(12, int(_LABEL_CHARS_PER_INCH * width * 0.55))

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
        logo.set_title(_shorten(sat.labels[j], budget), loc="left", fontsize=9, pad=4, fontweight="bold")
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
        _save(fig, out_path)
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
    p.add_argument("--dpi", type=int, default=DPI, help=f"pixels per inch of a PNG (default {DPI})")
    p.set_defaults(func=run_sat_plot)
    return p


def run_sat_plot(args: argparse.Namespace) -> int:
    """The ``sat-plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast sat-plot: error: ...`` (one line) and returns 1."""
    from ..formats import FormatError

    try:
        plot_sat(args.scores_h5, args.output, stat=args.stat, regions=args.regions, tracks=args.tracks,
                 labels=args.targets, heatmap=args.heatmap, title=args.title, dpi=args.dpi)
    except (FormatError, ValueError, KeyError, OSError, ImportError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"basenji2-fast sat-plot: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------------------
# Command line

def _shift_list(text: str) -> List[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_plot_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``plot (-m MODEL -f FASTA | --bigwigs OUTDIR) --region chr:start-end [-t targets.txt]
    [--tracks SELECTOR] [--head NAME] -o plot.png`` to an argparse ``subparsers``;
    ``args.func(args)`` runs it (0, or 1 after a one-line error on stderr)."""
    from ..spec import GELU_VARIANTS

    p = subparsers.add_parser(
        "plot", help="draw tracks over a region (PNG/SVG/PDF), predicted or from bigWigs",
        description="Draw one panel per track over a genomic region: predicted by a model (the window "
                    "centred on the region) or read from bigWig files (predict-genome's output folder). "
                    "Regions are 1-based and inclusive, as in genome browsers: chr1:1,000,001-1,100,000.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help="model file (.safetensors, .h5 or .pth); needs -f")
    src.add_argument("--bigwigs", metavar="OUTDIR",
                     help="predict-genome output folder (manifest.json + bigWigs) or a folder of .bw files")
    p.add_argument("-f", "--fasta", help="genome FASTA (with -m)")
    p.add_argument("--region", required=True, help="chrom:start-end, 1-based inclusive (commas allowed)")
    p.add_argument("-t", "--targets", default=None, help="basenji targets.txt (track names and selectors)")
    p.add_argument("--tracks", default=None, metavar="SELECTOR",
                   help="which tracks: comma-separated columns, or a selector that targets.txt resolves")
    p.add_argument("--head", default=None, help="model head (default: the model's first)")
    p.add_argument("-o", "--output", required=True, help="picture to write: .png, .svg or .pdf")
    p.add_argument("--title", default=None, help="figure title (default: region and what is drawn)")
    p.add_argument("--region-only", action="store_true",
                   help="with -m: draw only the bins over the region (default: the whole predicted window)")
    p.add_argument("--rc", action="store_true", help="with -m: average with the reverse complement")
    p.add_argument("--shifts", type=_shift_list, default=[0], help="with -m: comma-separated ensemble shifts")
    p.add_argument("--dpi", type=int, default=DPI, help=f"pixels per inch of a PNG (default {DPI})")
    p.add_argument("--width", type=float, default=FIG_WIDTH, help=f"figure width in inches (default {FIG_WIDTH:g})")
    p.add_argument("--params", default=None, help="basenji params JSON (for .pth files of non-published shapes)")
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None, help="override the model's GELU variant")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: all CPUs)")
    p.set_defaults(func=run_plot)
    return p


def run_plot(args: argparse.Namespace) -> int:
    """The ``plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast plot: error: ...`` (one line) and returns 1."""
    from ..formats import FormatError

    try:
        region = parse_region(args.region)
        _output_format(args.output)
        common = dict(title=args.title, dpi=args.dpi, width=args.width)
        if args.model is not None:
            if not args.fasta:
                raise ValueError("-m/--model needs -f/--fasta (the genome to read the region from)")
            from ..model import load

            model = load(args.model, threads=args.threads, params=args.params, gelu=args.gelu)
            plot_region_from_model(model, args.fasta, region, tracks=args.tracks, out_path=args.output,
                                   head=args.head, targets=args.targets, rc=args.rc, shifts=args.shifts,
                                   region_only=args.region_only, **common)
        else:
            if args.head is not None or args.rc or args.fasta:
                raise ValueError("--head, --rc and -f apply to -m/--model, not to --bigwigs")
            plot_region_from_bigwigs(args.bigwigs, region, out_path=args.output, tracks=args.tracks,
                                     targets=args.targets, **common)
    except (FormatError, ValueError, KeyError, OSError, ImportError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"basenji2-fast plot: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m basenji2_fast.plots plot|sat-plot ...`` without the package CLI."""
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_plot_subcommand(sub)
    add_sat_plot_subcommand(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
