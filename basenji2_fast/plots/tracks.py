"""Pictures of tracks over a genomic region, for a person to look at (``plot``).

    basenji2-fast plot -m model.safetensors -f hg38.fa --region chr11:5,225,000-5,230,000 \\
        -t targets_human.txt --tracks 4675,4676 -o hbb.png
    basenji2-fast plot --bigwigs genome_out/ --region chr11:5,200,000-5,300,000 -o hbb.png

One panel per track (filled area over the bins, own y scale, track label above it), one
shared genomic x axis (bp, kb or Mb, with the chromosome name).  PNG, SVG or PDF by the
output's extension (:mod:`basenji2_fast.plots.figure`).

Regions are written as genome browsers and ``samtools faidx`` write them:
``chr:start-end``, 1-based and inclusive, commas allowed (``chr1:1,000,001-1,100,000`` is
the 0-based half-open interval [1,000,000, 1,100,000)); :func:`basenji2_fast.genome.parse_region`
reads them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .._io import check_output
from ..cli_options import (add_ensemble_options, add_fasta_option, add_model_options, add_track_options,
                           load_model, one_line_errors, positive_float, positive_int, track_request)
from ..coverage import binned_means, check_finished, open_bigwig
from ..dna import encode
from ..genome import GenomicRegion, as_fasta, as_genomic_region, centred_span, fetch, parse_region
from ..model import Ensemble, load
from ..targets import read_targets, select_tracks
from ..windows import predict, resolve_tracks as resolve_model_tracks
from .figure import (DPI, FIG_WIDTH, LABEL_CHARS_PER_INCH, PathLike, check_figure_size, output_format, panel_titles,
                     save_figure, shorten)

#: Figure geometry (inches): height of one track panel, room for the title and x axis.
PANEL_HEIGHT = 1.0
MARGIN_HEIGHT = 1.0
#: More panels than this is not a picture anyone can read; choose tracks instead.
MAX_PANELS = 48
#: At most this many bins are drawn across the x axis (bigWigs over long regions are averaged).
MAX_BINS = 2000
#: At most this many model windows are predicted for one picture.
MAX_WINDOWS = 32
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")


# --------------------------------------------------------------------------------------
# Regions

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


def _draw(values: np.ndarray, edges: np.ndarray, chrom: str, labels: Sequence[str], out_path: Optional[PathLike],
          title: Optional[str], xlim: Tuple[float, float], highlight: Optional[Tuple[int, int]] = None,
          subtitle: Optional[str] = None, width: float = FIG_WIDTH, panel_height: float = PANEL_HEIGHT,
          dpi: int = DPI, ylabel: Optional[str] = None, notes: Optional[Sequence[str]] = None):
    """The figure: values [bins, tracks] over bins [edges[i], edges[i+1]); NaN bins are gaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import AutoMinorLocator, MaxNLocator

    n_bins, n_tracks = values.shape
    check_figure_size(width, dpi, panel_height)
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
        budget = max(12, int(LABEL_CHARS_PER_INCH * width) - len(note or "") - 4)
        ax.set_title(shorten(label, budget), loc="left", fontsize=8.5, pad=3)
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
        save_figure(fig, out_path)
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
        output_format(out_path)
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
# Track selection

def resolve_tracks(targets, tracks, n_outputs: int) -> Tuple[List[int], List[str], List[str]]:
    """Deprecated: (columns, panel titles, grey notes) for ``tracks`` among a head's
    ``n_outputs`` columns. Tracks are chosen by :func:`basenji2_fast.windows.resolve_tracks`
    (or :func:`basenji2_fast.targets.select_tracks`), panels titled by
    :func:`basenji2_fast.plots.figure.panel_titles`."""
    warnings.warn("basenji2_fast.plots.resolve_tracks is deprecated: choose tracks with "
                  "basenji2_fast.windows.resolve_tracks and title panels with basenji2_fast.plots.figure.panel_titles",
                  DeprecationWarning, stacklevel=2)
    if tracks is None or not hasattr(tracks, "columns"):
        tracks = select_tracks(read_targets(targets) if isinstance(targets, (str, os.PathLike)) else targets, tracks,
                               n_outputs)
    cols = [int(c) for c in tracks.columns]
    return (cols,) + panel_titles(cols, tracks.identifiers, tracks.labels)


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
        w0 = centred_span(region.start, region.end, seq_length)[0]
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
    region = as_genomic_region(region)
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    fasta_name = str(fasta) if isinstance(fasta, (str, os.PathLike)) else getattr(fasta, "filename", "FASTA")
    fasta = as_fasta(fasta)
    chrom_len = _check_region(region, {k: len(fasta[k]) for k in fasta.keys()}, fasta_name)
    head, sel = resolve_model_tracks(model, head, tracks, targets)
    cols = [int(c) for c in sel.columns]
    labels, notes = panel_titles(cols, sel.identifiers, sel.labels)
    _check_panels(cols, "choose them with --tracks")
    bs, span = model.bin_size, model.n_bins * model.bin_size
    starts, out0 = model_windows(model.seq_length, model.spec.crop_bins * bs, span, region, max_windows)
    codes = np.stack([encode(fetch(fasta, region.chrom, w, w + model.seq_length),
                             what=f"{region.chrom}:{w + 1:,}-{w + model.seq_length:,}") for w in starts])
    pred = predict(model, codes, {head: sel}, Ensemble(rc, shifts, n_encoding))[head]
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
    region = as_genomic_region(region)
    if out_path is not None:
        output_format(out_path)  # before any work
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
        name = Path(t.get("file") or t.get("path") or f"{col}_{ident}.bw")
        # <head>/<file> for a job of several heads; nothing outside the folder
        path = name if name.is_absolute() else folder / (Path(name.name) if ".." in name.parts else name)
        out.append(BigWigTrack(path, str(t.get("label") or ""), None if col is None else int(col),
                               None if ident is None else str(ident)))
    return out


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not a predict-genome manifest (not JSON: {e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a predict-genome manifest")
    return manifest


def bigwig_tracks(source) -> Tuple[List[BigWigTrack], dict]:
    """The bigWigs to draw and the manifest (or {}).

    source : a folder (with ``manifest.json`` from predict-genome; one head's folder
        ``OUT/<head>`` of a job of several heads, whose manifest is OUT's; without one, every
        ``*.bw`` in it, in column order when named ``<column>_<identifier>.bw``), one bigWig
        path, or a list of bigWig paths. A job of several heads as a whole is refused (their
        columns repeat).
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source)
        check_finished(folder)
        manifest_path = folder / "manifest.json"
        head_of_job = folder.parent / "manifest.json"  # OUT/<head>/ of a job of several heads
        if not manifest_path.is_file() and head_of_job.is_file():
            manifest = _read_manifest(head_of_job)
            if folder.name in (manifest.get("heads") or {}):
                items = [t for t in _manifest_tracks(manifest, folder.parent) if t.path.parent == folder]
                return items, manifest
        if manifest_path.is_file():
            manifest = _read_manifest(manifest_path)
            heads = manifest.get("heads") or {}
            if len(heads) > 1:
                # the heads' columns repeat (human 0, mouse 0): a selector could not tell them apart
                raise ValueError(f"{folder}: the bigWigs of {len(heads)} heads ({', '.join(heads)}); draw one head's: "
                                 f"--bigwigs {folder / next(iter(heads))}")
            try:
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


def _native_bin_size(intervals) -> Optional[int]:
    if not intervals:
        return None
    widths = np.asarray([e - s for s, e, _ in intervals[:1000]], np.int64)
    vals, counts = np.unique(widths, return_counts=True)
    return int(vals[np.argmax(counts)])


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
    region = as_genomic_region(region)
    items, manifest = bigwig_tracks(bigwigs)
    if tracks is not None:
        items = _pick_bigwigs(items, tracks, targets)
    _check_panels(items, "choose them with --tracks")
    labels, notes = panel_titles([t.column for t in items], [t.identifier for t in items],
                                  [t.label for t in items])
    handles = []
    try:
        for t in items:
            handles.append(open_bigwig(t.path))
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
    region = as_genomic_region(region)
    if out_path is not None:
        output_format(out_path)
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
# Command line

def add_plot_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``plot (-m MODEL -f FASTA | --bigwigs OUTDIR) --region chr:start-end [-t targets.txt]
    [--tracks SELECTOR] [--head NAME] -o plot.png`` to an argparse ``subparsers``;
    ``args.func(args)`` runs it (0, or 1 after a one-line error on stderr)."""
    p = subparsers.add_parser(
        "plot", help="draw tracks over a region (PNG/SVG/PDF), predicted or from bigWigs",
        description="Draw one panel per track over a genomic region: predicted by a model (the window "
                    "centred on the region) or read from bigWig files (predict-genome's output folder). "
                    "Regions are 1-based and inclusive, as in genome browsers: chr1:1,000,001-1,100,000.")
    src = p.add_mutually_exclusive_group(required=True)
    add_model_options(p, required=False, model_group=src)
    src.add_argument("--bigwigs", metavar="OUTDIR",
                     help="predict-genome output folder (manifest.json + bigWigs) or a folder of .bw files")
    add_fasta_option(p, required=False)
    p.add_argument("--region", required=True, help="chrom:start-end, 1-based inclusive (commas allowed)")
    add_track_options(p, one_head=True)
    p.add_argument("-o", "--output", required=True, help="picture to write: .png, .svg or .pdf")
    p.add_argument("--title", default=None, help="figure title (default: region and what is drawn)")
    p.add_argument("--region-only", action="store_true",
                   help="with -m: draw only the bins over the region (default: the whole predicted window)")
    add_ensemble_options(p)
    p.add_argument("--dpi", type=positive_int, default=DPI, help=f"pixels per inch of a PNG (default {DPI})")
    p.add_argument("--width", type=positive_float, default=FIG_WIDTH,
                   help=f"figure width in inches (default {FIG_WIDTH:g})")
    p.set_defaults(func=run_plot)
    return p


def run_plot(args: argparse.Namespace) -> int:
    """The ``plot`` subcommand: writes the picture and prints ``wrote PATH``; on an error,
    prints ``basenji2-fast plot: error: ...`` (one line) and returns 1."""
    def work():
        region = parse_region(args.region)
        output_format(args.output)
        check_figure_size(args.width, args.dpi)
        check_output(args.output, inputs=[args.model, args.fasta, args.bigwigs], parents=True)
        head, tracks, targets = track_request(args)
        if isinstance(tracks, dict) or isinstance(targets, dict):
            raise ValueError("plot draws one head: give -t / --tracks without HEAD=")
        common = dict(title=args.title, dpi=args.dpi, width=args.width)
        if args.model is not None:
            if not args.fasta:
                raise ValueError("-m/--model needs -f/--fasta (the genome to read the region from)")
            plot_region_from_model(load_model(args), args.fasta, region, tracks=tracks, out_path=args.output,
                                   head=head, targets=targets, rc=args.rc, shifts=args.shifts,
                                   region_only=args.region_only, **common)
        else:
            if head is not None or args.rc or args.fasta or args.shifts != [0]:
                raise ValueError("--head, --rc, --shifts and -f apply to -m/--model, not to --bigwigs")
            plot_region_from_bigwigs(args.bigwigs, region, out_path=args.output, tracks=tracks, targets=targets,
                                     **common)
        print(f"wrote {args.output}")

    return one_line_errors("plot", work)
