"""Accuracy against measured coverage (``basenji2-fast test``, as ``basenji_test.py``'s acc.txt).

For each BED region the model window centred on it is predicted (as ``predict-bed``, with the
same ensemble options), and the observed coverage of the same output bins is read from the
bigWigs named in the targets file's ``file`` column (:mod:`basenji2_fast.coverage`: pooled
per bin by ``sum_stat``, then ``clip_soft``, clipped to ``[0, clip]`` and multiplied by
``scale``, as basenji's data pipeline made the training targets, so observed values are on the
scale the model predicts). Per track, over all bins of all regions pooled together:

* ``pearsonr``: Pearson R between predicted and observed values;
* ``r2``: 1 - SS_res / SS_tot, SS_res = sum (obs - pred)^2, SS_tot = sum (obs - mean obs)^2
  (negative when the predictions do worse than the observed mean).

These are basenji's metrics, which likewise reduce over sequences and positions together.
The statistics are accumulated batch by batch (count, means, centred second moments and
co-moment per track in float64, merged with Chan et al.'s pairwise update: the same
information as n, sum x, sum y, sum x^2, sum y^2, sum xy, without their cancellation), so
memory does not grow with the number of regions.

``acc.tsv``: tab-separated, a header, one line per evaluated track: ``index`` (the targets
file's index), ``pearsonr``, ``r2``, ``identifier``, ``description``. With plot tracks, a
density plot per chosen track (``<plot_dir>/<position>_<identifier>.png``): a hexbin of
predicted against observed on log10(1 + x) axes with a log colour scale, drawn from a uniform
random sample of at most ``max_plot_points`` bins (reservoir sampling, seeded: bounded memory).
"""
from __future__ import annotations

import argparse
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .._io import atomic_output, check_output
from ..cli_options import (add_batch_size_option, add_ensemble_options, add_fasta_option, add_model_options,
                           add_run_options, add_track_options, load_model, one_line_errors, positive_int)
from ..coverage import ObservedCoverage, TrackStats, coverage_tracks
from ..genome import prepare_regions, read_bed
from ..model import Ensemble
from ..plots.figure import save_figure
from ..targets import Targets, read_targets, select_tracks
from ..windows import iter_predictions, resolve_tracks


class _Reservoir:
    """A uniform sample of at most ``k`` bins (pred, obs rows for the plotted tracks)."""

    def __init__(self, k: int, n_tracks: int, seed: int = 0):
        self.k, self.seen = int(k), 0
        self.x = np.zeros((self.k, n_tracks), np.float32)
        self.y = np.zeros((self.k, n_tracks), np.float32)
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        m = len(x)
        idx = self.seen + np.arange(m)
        slot = np.where(idx < self.k, idx, self.rng.integers(0, idx + 1))  # Algorithm R
        keep = slot < self.k
        self.x[slot[keep]] = x[keep]
        self.y[slot[keep]] = y[keep]
        self.seen += m

    def sample(self):
        n = min(self.seen, self.k)
        return self.x[:n], self.y[:n]


@dataclass
class Accuracy:
    """Per-track accuracy. ``index``, ``identifiers``, ``descriptions``: the targets rows;
    ``pearsonr``, ``r2``: float64 [tracks]; ``n_bins``: bins pooled per track; ``plots``: the
    pictures written."""

    index: List[int]
    identifiers: List[str]
    descriptions: List[str]
    pearsonr: np.ndarray
    r2: np.ndarray
    n_bins: int
    plots: List[Path] = field(default_factory=list)

    def write_tsv(self, path) -> Path:
        """acc.tsv (module docstring), atomically."""
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["index\tpearsonr\tr2\tidentifier\tdescription"]
        for i, r, q, ident, desc in zip(self.index, self.pearsonr, self.r2, self.identifiers, self.descriptions):
            lines.append(f"{i}\t{r:.5f}\t{q:.5f}\t{ident}\t{desc}")
        with atomic_output(path) as tmp:
            Path(tmp).write_text("\n".join(lines) + "\n")
        return path


def _plot_file(plot_dir: Path, pos: int, identifier: str) -> Path:
    return plot_dir / f"{pos}_{re.sub(r'[^A-Za-z0-9._-]+', '_', identifier) or 'track'}.png"


def density_plot(pred: np.ndarray, obs: np.ndarray, out_path, title: str = "", r: Optional[float] = None,
                 r2: Optional[float] = None) -> Path:
    """Hexbin of predicted (x) against observed (y), 1-D arrays of the same length, on
    log10(1 + value) axes (negative values drawn at 0) with a log colour scale; PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.log10(1.0 + np.maximum(np.asarray(pred, np.float64), 0.0))
    y = np.log10(1.0 + np.maximum(np.asarray(obs, np.float64), 0.0))
    fig = Figure(figsize=(4.6, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if len(x):
        hb = ax.hexbin(x, y, gridsize=60, bins="log", mincnt=1, cmap="viridis", linewidths=0)
        fig.colorbar(hb, ax=ax, label="bins (log scale)")
        hi = float(max(x.max(), y.max(), 1e-3))
        ax.plot([0, hi], [0, hi], color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xlabel("predicted, log10(1 + x)", fontsize=9)
    ax.set_ylabel("observed, log10(1 + y)", fontsize=9)
    stats = []
    if r is not None:
        stats.append(f"R = {r:.4f}")
    if r2 is not None:
        stats.append(f"R² = {r2:.4f}")
    ax.set_title((title[:60] + ("\n" if stats else "")) + "  ".join(stats), fontsize=9, loc="left")
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    save_figure(fig, out_path)
    return Path(out_path)


def evaluate(model, fasta, regions, targets, head: Optional[str] = None, tracks=None, rc: bool = False,
             shifts: Sequence[int] = (0,), batch_size: int = 4, n_encoding: str = "zeros", plot_tracks=None,
             plot_dir=None, max_plot_points: int = 100_000, progress: bool = False) -> Accuracy:
    """Pearson R and R^2 per track between predictions and observed binned coverage.

    Parameters
    ----------
    model : basenji2_fast.Model
    fasta : FASTA path or open ``pyfaidx.Fasta``
    regions : BED path or list of ``(chrom, start, end)``
    targets : basenji targets file (path or Targets) whose ``file`` column holds the observed
        bigWigs; it also names the head columns (as ``predict-bed``'s ``-t``)
    head, tracks : which head and which of the file's rows to evaluate (default: all rows;
        selectors as :func:`basenji2_fast.targets.select_tracks`)
    rc, shifts, batch_size, n_encoding : as :func:`basenji2_fast.predict_regions`
    plot_tracks : rows to draw (a selector over the targets file, like ``tracks``); each
        must be evaluated
    plot_dir : folder for the pictures (required with plot_tracks)
    max_plot_points : bins sampled for each picture

    Returns
    -------
    Accuracy

    Raises
    ------
    ValueError
        Bad BED lines, a targets row without a bigWig or with a bad sum_stat, a missing
        bigWig or a chromosome it lacks, a targets file that does not fit the head.
    """
    if not isinstance(targets, Targets):
        targets = read_targets(targets)
    regions, fa, source = prepare_regions(fasta, regions)
    head, sel = resolve_tracks(model, head, tracks, targets)
    plot_pos: List[int] = []
    if plot_tracks is not None:
        if plot_dir is None:
            raise ValueError("plot tracks given without a folder for the plots")
        want = select_tracks(targets, plot_tracks, model.spec.heads[head].tracks).rows
        pos_of = {r: i for i, r in enumerate(sel.rows)}
        missing = [r for r in want if r not in pos_of]
        if missing:
            raise ValueError(f"plot track {targets.identifier[missing[0]]} (row {missing[0]}) is not among the "
                             "evaluated tracks")
        plot_pos = [pos_of[r] for r in want]
    stats = TrackStats(len(sel))
    sample = _Reservoir(max_plot_points, len(plot_pos)) if plot_pos else None
    with ObservedCoverage(coverage_tracks(targets, rows=sel.rows)) as cov:
        cov.check_chroms(regions, source)
        for b0, ps in iter_predictions(model, fa, regions, {head: sel}, Ensemble(rc, shifts, n_encoding, batch_size),
                                       progress):
            p = ps[head]
            obs = np.stack([cov.read_window(r, model) for r in regions[b0:b0 + len(p)]])
            stats.update(p.reshape(-1, len(sel)), obs.reshape(-1, len(sel)))
            if sample is not None:
                sample.add(p.reshape(-1, len(sel))[:, plot_pos], obs.reshape(-1, len(sel))[:, plot_pos])
    pearsonr, r2 = stats.pearsonr(), stats.r2()
    flat_obs = np.asarray(stats.m2y) == 0  # constant observed coverage: R^2 is 1 - x/0, R 0/0
    r2 = np.where(flat_obs, np.nan, r2)
    flat_pred = ~flat_obs & (np.asarray(stats.m2x) == 0)
    for flat, what, undefined in ((flat_obs, "observed coverage", "R and R^2 undefined"),
                                  (flat_pred, "the prediction", "R undefined")):
        if flat.any():
            names = [sel.identifiers[t] for t in np.flatnonzero(flat)]
            warnings.warn(f"{what} is constant over the regions for {len(names)} of {len(sel)} tracks "
                          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): {undefined} "
                          "(written as nan)", UserWarning, stacklevel=2)
    acc = Accuracy(index=[int(targets.index[r]) for r in sel.rows], identifiers=list(sel.identifiers),
                   descriptions=list(sel.labels), pearsonr=pearsonr, r2=r2, n_bins=stats.n)
    if sample is not None:
        plot_dir = Path(plot_dir)
        x, y = sample.sample()
        for k, pos in enumerate(plot_pos):
            acc.plots.append(density_plot(x[:, k], y[:, k], _plot_file(plot_dir, pos, sel.identifiers[pos]),
                                          title=f"{sel.identifiers[pos]}  {sel.labels[pos]}",
                                          r=float(acc.pearsonr[pos]), r2=float(acc.r2[pos])))
    return acc


# --------------------------------------------------------------------------------------
# Command line

def add_test_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``test`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "test", help="accuracy against observed bigWig coverage (basenji_test.py's acc.txt)",
        description="Predict the window centred on each BED region and compare every output bin with the "
                    "observed coverage from the bigWigs in the targets file's 'file' column (pooled by sum_stat, "
                    "clipped and scaled as basenji's training data): Pearson R and R^2 per track over all bins, "
                    "written as a TSV (index, pearsonr, r2, identifier, description).")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of test regions")
    add_track_options(p, one_head=True)
    add_ensemble_options(p)
    p.add_argument("-o", "--out", required=True, help="output TSV (e.g. acc.tsv)")
    p.add_argument("--plot-tracks", default=None,
                   help="tracks to draw as predicted-vs-observed density plots (selector as --tracks)")
    p.add_argument("--plot-dir", default=None, help="folder for the plots (default: beside the TSV)")
    p.add_argument("--plot-points", type=positive_int, default=100_000, help="bins sampled per plot (default 100000)")
    add_batch_size_option(p, 4)
    add_run_options(p)
    p.set_defaults(func=run_test)
    return p


def _defined_mean(values: np.ndarray) -> str:
    """The mean over the tracks where the value is defined (not NaN), worded with how many
    of them there are when some are not; "nan" when none is (without NumPy's warning)."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        return "nan (no track has it defined)"
    mean = f"{values[ok].mean():.4f}"
    return mean if ok.all() else f"{mean} (over {int(ok.sum())} of {len(values)} tracks)"


def run_test(args: argparse.Namespace) -> int:
    def work():
        if not args.targets:
            raise ValueError("--targets is required: a targets file whose 'file' column names the observed bigWigs")
        regions = read_bed(args.bed)
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        targets = read_targets(args.targets)
        plot_dir = args.plot_dir or (os.path.dirname(os.path.abspath(args.out)) if args.plot_tracks else None)
        # The outputs before the predictions: a bad -o must not waste them.
        check_output(args.out, inputs=[args.model, args.fasta, args.bed, args.targets])
        if plot_dir is not None:
            check_output(plot_dir, folder=True)
        acc = evaluate(load_model(args), args.fasta, regions, targets, head=args.head, tracks=args.tracks,
                       rc=args.rc, shifts=args.shifts, batch_size=args.batch_size, n_encoding=args.n_encoding,
                       plot_tracks=args.plot_tracks, plot_dir=plot_dir, max_plot_points=args.plot_points,
                       progress=not args.quiet)
        acc.write_tsv(args.out)
        print(f"{len(acc.index)} tracks over {acc.n_bins:,} bins: mean pearsonr {_defined_mean(acc.pearsonr)}, "
              f"mean r2 {_defined_mean(acc.r2)}")
        print(f"wrote {args.out}" + "".join(f"\nwrote {p}" for p in acc.plots))

    return one_line_errors("test", work)
