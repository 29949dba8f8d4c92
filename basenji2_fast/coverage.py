"""Observed coverage: bigWig tracks read into a model's output bins, as basenji's data
pipeline (``basenji_data_read.py``) turns them into training targets.

For each track and each output bin of a window (``bin_size`` bp):

1. the bigWig's per-base values over the bin (pyBigWig), bases without data and bases off
   the chromosome counted as 0 (basenji sets missing bases to the window's 10th-percentile
   coverage instead, which is 0 for all but the densest tracks);
2. pooled by the track's ``sum_stat``: ``sum`` (the default, and for an empty column),
   ``mean`` (alias ``avg``), ``median`` or ``max``;
3. ``clip_soft`` (values above it become ``clip_soft + sqrt(x - clip_soft)``), then clipped
   to ``[0, clip]``, then multiplied by ``scale``: the targets file's columns, in basenji's
   order. A model trained on basenji's data predicts these scaled, clipped values, so the
   evaluation (``test``) and new heads (``fit_head``) compare with and fit exactly them. A
   column the file lacks does nothing; a plain list of bigWigs gets steps 1-2 only.

One place reads coverage for the workflows that compare with it (``test``:
:mod:`basenji2_fast.workflows.evaluate`; ``fit-head``: :mod:`basenji2_fast.workflows.heads`),
and accumulates how predictions compare with it (:class:`TrackStats`). bigWig files are opened
here (:func:`open_bigwig`), also for pictures (:func:`binned_means`); a bigWig of a
predict-genome job that has not finished is refused (:func:`unfinished_genome_job`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ._io import read_json
from .targets import Targets, read_targets
from .windows import output_window

SUM_STATS = ("sum", "mean", "avg", "median", "max")


@dataclass
class CoverageTrack:
    """One observed track: a bigWig and basenji's transform of its binned values.

    ``where`` names the track in messages (``targets.txt: line 3`` or the path).
    """

    path: Path
    sum_stat: str = "sum"
    clip: Optional[float] = None
    clip_soft: Optional[float] = None
    scale: float = 1.0
    where: str = ""

    def transform(self, binned: np.ndarray) -> np.ndarray:
        """Steps 3 of the module docstring on pooled values (any shape; float64 in and out)."""
        x = binned
        if self.clip_soft is not None:
            over = x > self.clip_soft
            x = np.where(over, self.clip_soft + np.sqrt(np.where(over, x - self.clip_soft, 0.0)), x)
        if self.clip is not None:
            x = np.clip(x, 0.0, self.clip)
        return x * self.scale if self.scale != 1.0 else x


def _number(values: Optional[np.ndarray], row: int) -> Optional[float]:
    if values is None:
        return None
    v = float(values[row])
    return None if math.isnan(v) else v


def _resolve(path: str, base: Path) -> Path:
    """A targets file's ``file`` entry: as given (relative to the working folder, as basenji),
    else relative to the targets file's folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    q = base / p
    return q if q.exists() else p


def coverage_tracks(source: Union[str, os.PathLike, Targets, Sequence[Union[str, os.PathLike]]],
                    rows: Optional[Sequence[int]] = None, sum_stat: Optional[str] = None) -> List[CoverageTrack]:
    """The observed tracks named by a targets file or a list of bigWigs.

    Parameters
    ----------
    source : a basenji targets file (path or :class:`~basenji2_fast.targets.Targets`) whose
        ``file`` column holds bigWig paths, or a list of bigWig paths
    rows : rows of the targets file to use, in order (default: all)
    sum_stat : for a list of bigWigs, how each bin is pooled (default "sum"); with a targets
        file its ``sum_stat`` column decides (empty: "sum") unless this is given

    Returns
    -------
    list of CoverageTrack, one per track in order

    Raises
    ------
    ValueError
        A row without a bigWig, an unknown ``sum_stat``, a negative clip; the message names
        the targets file and line.
    """
    if sum_stat is not None and sum_stat not in SUM_STATS:
        raise ValueError(f"sum_stat {sum_stat!r}: expected one of {', '.join(SUM_STATS)}")
    if isinstance(source, (str, os.PathLike)) and not str(source).lower().endswith((".bw", ".bigwig")):
        source = read_targets(source)
    if isinstance(source, Targets):
        t = source
        base = Path(t.path).resolve().parent
        out = []
        for r in (range(len(t)) if rows is None else rows):
            where = f"{t.path}: line {t.lines[r]}"
            if not t.file[r].strip():
                raise ValueError(f"{where}: no bigWig in the 'file' column ({t.identifier[r]})")
            stat = sum_stat or t.sum_stat[r].strip() or "sum"
            if stat not in SUM_STATS:
                raise ValueError(f"{where}: sum_stat {stat!r} is not one of {', '.join(SUM_STATS)}")
            clip, clip_soft = _number(t.clip, r), _number(t.clip_soft, r)
            if clip is not None and clip < 0:
                raise ValueError(f"{where}: clip {clip} is negative")
            scale = _number(t.scale, r)
            out.append(CoverageTrack(_resolve(t.file[r].strip(), base), stat, clip, clip_soft,
                                     1.0 if scale is None else scale, where))
        return out
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not paths:
        raise ValueError("no bigWig files given")
    return [CoverageTrack(Path(p), sum_stat or "sum", where=str(p)) for p in paths]


#: predict-genome's output folder (:mod:`basenji2_fast.workflows.genome_tiling`): its record,
#: written last, once every bigWig is in place; the folder of its partial results while it has
#: not finished (holding ``job.json``, whose job names the format below).
GENOME_MANIFEST = "manifest.json"
GENOME_PARTIAL = ".partial"
GENOME_JOB_FORMAT = "basenji2-fast predict-genome"


def unfinished_genome_job(folder) -> bool:
    """Whether ``folder`` holds a predict-genome job that has not finished (its partial
    results are there, its manifest is not): its bigWigs may be missing, or left from an
    earlier job, so readers refuse them."""
    folder = Path(folder)
    if (folder / GENOME_MANIFEST).is_file():
        return False
    rec = read_json(folder / GENOME_PARTIAL / "job.json")
    return isinstance(rec, dict) and (rec.get("job") or {}).get("format") == GENOME_JOB_FORMAT


def check_finished(folder) -> None:
    """A one-line ValueError when ``folder`` holds an unfinished predict-genome job."""
    if unfinished_genome_job(folder):
        raise ValueError(f"{folder}: an unfinished predict-genome job (no {GENOME_MANIFEST} yet); rerun the same "
                         "predict-genome command to finish it")


#: The first 4 bytes of a bigWig file (either byte order).
_BIGWIG_MAGIC = 0x888FFC26


def open_bigwig(path: Path):
    """An open pyBigWig file; a one-line ValueError when it is missing, no bigWig, or in the
    folder of an unfinished predict-genome job (its own, or its head folder's parent)."""
    import pyBigWig

    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        check_finished(folder)
    if not path.is_file():
        raise ValueError(f"{path}: bigWig file not found")
    # The magic number first: on a file that is no bigWig libBigWig prints its own lines to
    # stderr ("[bwHdrRead] There was an error...") before pyBigWig returns None.
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (_BIGWIG_MAGIC.to_bytes(4, "little"), _BIGWIG_MAGIC.to_bytes(4, "big")):
        raise ValueError(f"{path}: not a bigWig file")
    try:
        bw = pyBigWig.open(str(path))
    except RuntimeError:
        bw = None
    if bw is None or not bw.isBigWig():
        raise ValueError(f"{path}: not a bigWig file")
    return bw


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


class ObservedCoverage:
    """Open bigWigs, read window by window into bins.

    Use as a context manager (or call :meth:`close`)::

        with open_coverage("targets.txt") as cov:
            y = cov.read("chr1", 1_000_000, n_bins=896, bin_size=128)   # float32 [896, tracks]
    """

    def __init__(self, tracks: List[CoverageTrack]):
        self.tracks = list(tracks)
        self._bw = []
        try:
            for t in self.tracks:
                try:
                    self._bw.append(open_bigwig(Path(t.path)))
                except ValueError as e:
                    raise ValueError(f"{t.where}: {e}" if t.where != str(t.path) else str(e)) from None
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.tracks)

    def __enter__(self) -> "ObservedCoverage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for bw in self._bw:
            bw.close()
        self._bw = []

    def check_chroms(self, regions, source: str = "regions") -> None:
        """Every region's chromosome is in every bigWig (else a ValueError naming the first
        region, by its BED line when it has one, and the bigWig)."""
        seen = set()
        for i, r in enumerate(regions):
            if r[0] in seen:
                continue
            seen.add(r[0])
            for t, bw in zip(self.tracks, self._bw):
                if bw.chroms(r[0]) is None:
                    line = getattr(r, "line", 0)
                    at = f"{source}: line {line}" if line else f"region {i}"
                    raise ValueError(f"{at}: no chromosome {r[0]!r} in the bigWig {t.path}")

    def read(self, chrom: str, start: int, n_bins: int, bin_size: int) -> np.ndarray:
        """Binned, transformed coverage of ``[start, start + n_bins * bin_size)``.

        Returns float32 [n_bins, tracks] (module docstring: missing and off-chromosome bases
        count as 0). A chromosome absent from a bigWig is an error naming both.
        """
        end = start + n_bins * bin_size
        out = np.empty((n_bins, len(self.tracks)), np.float32)
        base = np.zeros(n_bins * bin_size, np.float64)
        for j, (t, bw) in enumerate(zip(self.tracks, self._bw)):
            size = bw.chroms(chrom)
            if size is None:
                raise ValueError(f"{t.path}: no chromosome {chrom!r} in this bigWig")
            lo, hi = max(0, start), min(int(size), end)
            base[:] = 0.0
            if hi > lo:
                v = np.asarray(bw.values(chrom, lo, hi, numpy=True), np.float64)
                base[lo - start:hi - start] = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
            bins = base.reshape(n_bins, bin_size)
            if t.sum_stat == "sum":
                pooled = bins.sum(axis=1)
            elif t.sum_stat in ("mean", "avg"):
                pooled = bins.mean(axis=1)
            elif t.sum_stat == "median":
                pooled = np.median(bins, axis=1)
            else:
                pooled = bins.max(axis=1)
            out[:, j] = t.transform(pooled)
        return out

    def read_window(self, region, model) -> np.ndarray:
        """The coverage of the output bins of the model window centred on ``region`` (a
        (chrom, start, end) tuple or Region): float32 [n_bins, tracks]."""
        start, _ = output_window(region, model)
        return self.read(region[0], start, model.n_bins, model.bin_size)


def open_coverage(source, rows: Optional[Sequence[int]] = None, sum_stat: Optional[str] = None) -> ObservedCoverage:
    """:class:`ObservedCoverage` of :func:`coverage_tracks` (same arguments)."""
    return ObservedCoverage(coverage_tracks(source, rows=rows, sum_stat=sum_stat))


class TrackStats:
    """Streaming Pearson R and R^2 per track: float64 count, means, M2 and co-moment."""

    def __init__(self, n_tracks: int):
        z = lambda: np.zeros(n_tracks)  # noqa: E731
        self.n = 0
        self.mean_x, self.mean_y, self.m2x, self.m2y, self.cxy = z(), z(), z(), z(), z()

    def update(self, pred: np.ndarray, obs: np.ndarray) -> None:
        """Add bins: pred, obs [n, tracks] (predicted, observed)."""
        x = np.asarray(pred, np.float64).reshape(-1, self.mean_x.size)
        y = np.asarray(obs, np.float64).reshape(-1, self.mean_x.size)
        nb = x.shape[0]
        if nb == 0:
            return
        mx, my = x.mean(axis=0), y.mean(axis=0)
        dx, dy = x - mx, y - my
        m2x, m2y, cxy = (dx * dx).sum(axis=0), (dy * dy).sum(axis=0), (dx * dy).sum(axis=0)
        na, n = self.n, self.n + nb
        ddx, ddy = mx - self.mean_x, my - self.mean_y
        f = na * nb / n
        self.m2x += m2x + ddx * ddx * f
        self.m2y += m2y + ddy * ddy * f
        self.cxy += cxy + ddx * ddy * f
        self.mean_x += ddx * nb / n
        self.mean_y += ddy * nb / n
        self.n = n

    def pearsonr(self) -> np.ndarray:
        """float64 [tracks]; NaN where either side is constant."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.cxy / np.sqrt(self.m2x * self.m2y)

    def r2(self) -> np.ndarray:
        """1 - SS_res / SS_tot, float64 [tracks]; NaN where the observed values are constant.

        SS_res = sum ((y - my) - (x - mx) + (my - mx))^2 = M2y + M2x - 2 Cxy + n (my - mx)^2.
        """
        ss_res = self.m2y + self.m2x - 2.0 * self.cxy + self.n * (self.mean_y - self.mean_x) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - np.maximum(ss_res, 0.0) / self.m2y
