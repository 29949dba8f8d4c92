"""New heads on the frozen trunk (basenji's ``train_head``, without a deep-learning framework).

:func:`fit_head` fits Basenji2's head form, ``softplus(embedding @ W + b)`` per output bin,
to observed coverage of new tracks:

1. For each region, the model window centred on it (as ``predict-bed``); its trunk output
   (:meth:`~basenji2_fast.Model.embed`, [n_bins, channels]) and the observed coverage of the
   same output bins (:mod:`basenji2_fast.coverage`: bigWigs pooled per bin by ``sum_stat``,
   then basenji's ``clip_soft`` / ``clip`` / ``scale`` when the tracks come from a targets
   file). Every output bin of every region is one observation.
2. The Poisson negative log-likelihood (Keras' ``poisson`` loss, as basenji trains with)::

       loss(W, b) = 1/N sum_{bins i} sum_{tracks t} [mu_it - y_it log mu_it] + l2 * sum W^2,
       mu = softplus(X W + b)

   (``N`` bins; ``l2`` on the weights only, as Keras' ``kernel_regularizer``), minimised by
   SciPy's L-BFGS-B with the analytic gradient. The tracks are independent; they are fitted
   together so that each pass over the data serves all of them. The optimiser works on
   standardised embedding channels (zero mean, unit variance: far better conditioned, the
   same minimum; the penalty stays on ``W`` in the original units) and starts from ``W = 0``,
   ``b = softplus^-1(mean y)``.

Memory: the trunk runs once per region (it is the expensive part: ~2 s per Basenji2 window);
its embeddings are cached as float32 [bins, channels] (5.5 MB per Basenji2 region), in
memory up to ``cache_mb`` and beyond that in a temporary file on disk (``np.memmap``, removed
afterwards), and every loss/gradient evaluation streams over the cache in chunks of about
``chunk_mb`` (whole regions), accumulating in float64 one region at a time in region order, so
the sums, and hence the fit, do not depend on ``cache_mb`` or ``chunk_mb``. Memory stays
bounded for any number of regions; disk holds the cache.

The fitted head is attached to the model (:meth:`~basenji2_fast.Model.add_head`) and is
saved with it (:meth:`~basenji2_fast.Model.save`, the engine's ``.safetensors``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .._io import OptionError, check_output
from ..cli_options import (add_batch_size_option, add_fasta_option, add_model_options, add_run_options, load_model,
                           input_file, non_negative_float, one_line_errors, positive_int)
from ..coverage import SUM_STATS, ObservedCoverage, TrackStats, coverage_tracks
from ..genome import prepare_regions, read_bed
from ..spec import check_positive_int
from ..targets import Targets, read_targets
from ..windows import iter_windows

LOSSES = ("poisson",)


def _require_scipy():
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        raise ImportError("fitting a head needs SciPy: pip install 'basenji2-fast[fit]' (or pip install scipy)") \
            from None
    return scipy.optimize


@dataclass
class HeadFit:
    """What :func:`fit_head` found.

    Attributes
    ----------
    name : the head's name
    weight : float32 [trunk_channels, tracks]
    bias : float32 [tracks]
    loss : final objective (mean Poisson NLL per bin, summed over tracks, plus the penalty)
    n_iter : L-BFGS iterations; converged : whether SciPy reported success; message : its word
    n_regions, n_bins : observations used (n_bins = regions x output bins)
    train_pearson : float64 [tracks] Pearson R of the fitted head's predictions with the
        observed coverage over the training bins
    tracks : the tracks' names (identifiers, or the bigWig file names)
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    loss: float
    n_iter: int
    converged: bool
    message: str
    n_regions: int
    n_bins: int
    train_pearson: np.ndarray
    tracks: List[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"head": self.name, "tracks": len(self.bias), "regions": self.n_regions, "bins": self.n_bins,
                "loss": self.loss, "iterations": self.n_iter, "converged": self.converged, "message": self.message,
                "train_pearson": {t: round(float(r), 5) for t, r in zip(self.tracks, self.train_pearson)}}


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _softplus_inv(y: np.ndarray) -> np.ndarray:
    y = np.maximum(y, 1e-6)
    return y + np.log(-np.expm1(-y))


def _poisson_terms(z: np.ndarray, y: np.ndarray):
    """(sum of mu - y log mu, dNLL/dz) for z, y float64 [n, T]; stable for very negative z,
    where softplus(z) ~ exp(z) underflows but log mu ~ z and dmu/dz / mu ~ 1."""
    mu = _softplus(z)
    low = z < -30.0
    log_mu = np.where(low, z, np.log(np.where(low, 1.0, mu)))
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
    ratio = np.where(low, 1.0, sig / np.where(low, 1.0, mu))  # sigmoid(z) / softplus(z)
    return float(np.sum(mu - y * log_mu)), sig - y * ratio


class _Cache:
    """float32 rows of embeddings X [N, C] and coverage Y [N, T]: in memory, or memory-mapped
    temporary files when larger than ``cache_mb``."""

    def __init__(self, n: int, c: int, t: int, cache_mb: float, cache_dir: Optional[str]):
        self._files = []
        self.X = self._array((n, c), cache_mb, cache_dir)
        self.Y = self._array((n, t), cache_mb, cache_dir)

    def _array(self, shape, cache_mb, cache_dir):
        if shape[0] * shape[1] * 4 <= cache_mb * (1 << 20):
            return np.empty(shape, np.float32)
        fh = tempfile.NamedTemporaryFile(prefix="basenji2_fast_head_", suffix=".f32", dir=cache_dir, delete=False)
        fh.close()
        self._files.append(fh.name)
        return np.memmap(fh.name, np.float32, "w+", shape=shape)

    def close(self):
        self.X = self.Y = None
        for f in self._files:
            try:
                os.unlink(f)
            except OSError:
                pass
        self._files = []


def _track_names(source, rows) -> List[str]:
    if isinstance(source, Targets):
        return [source.identifier[r] for r in (range(len(source)) if rows is None else rows)]
    return [Path(p).stem for p in ([source] if isinstance(source, (str, os.PathLike)) else source)]


def fit_head(model, fasta, regions, targets, loss: str = "poisson", l2: float = 1e-6, name: str = "new",
             sum_stat: Optional[str] = None, rows: Optional[Sequence[int]] = None, batch_size: int = 4,
             n_encoding: str = "zeros", max_iter: int = 1000, tol: float = 1e-10, cache_mb: float = 1024.0,
             chunk_mb: float = 64.0, cache_dir: Optional[str] = None, attach: bool = True, replace: bool = False,
             progress: bool = False) -> HeadFit:
    """Fit a dense + softplus head on the frozen trunk to observed bigWig coverage.

    Parameters
    ----------
    model : basenji2_fast.Model (its trunk is used as is)
    fasta : FASTA path or open ``pyfaidx.Fasta``
    regions : BED path or list of ``(chrom, start, end)``: the model window centred on each
        is one training example, all its output bins (module docstring)
    targets : a basenji targets file (path or Targets) whose ``file`` column holds bigWigs
        (``sum_stat``, ``clip``, ``clip_soft``, ``scale`` applied as basenji's data
        pipeline), or a list of bigWig paths (pooled by ``sum_stat``, default "sum")
    loss : "poisson" (the only one: Basenji2's)
    l2 : weight of the L2 penalty on W (added to the mean per-bin loss)
    name : the new head's name
    sum_stat : override the pooling ("sum", "mean", "median", "max")
    rows : rows of the targets file to fit (default all)
    batch_size, n_encoding : windows per trunk call; N encoding
    max_iter, tol : L-BFGS-B iteration limit and its relative ``ftol`` (``gtol`` = tol too)
    cache_mb : largest embedding cache kept in memory; beyond it, a temporary file
    chunk_mb : data read per loss/gradient evaluation step, rounded to whole regions (at
        least one); bounds the working memory and leaves the result unchanged
    cache_dir : folder for the temporary cache file (default: the system's)
    attach : add the head to ``model`` (:meth:`~basenji2_fast.Model.add_head`)
    replace : allow replacing an existing head of that name

    Returns
    -------
    HeadFit (weight float32 [trunk_channels, tracks], bias [tracks], fit diagnostics)

    Raises
    ------
    ValueError
        Bad BED lines, a chromosome missing from the FASTA or a bigWig, a row without a
        bigWig, negative observed coverage (Poisson needs counts), an existing head name.
    ImportError
        SciPy is not installed (``pip install 'basenji2-fast[fit]'``).
    """
    opt = _require_scipy()
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: only {', '.join(LOSSES)} is supported")
    if not (isinstance(l2, (int, float, np.floating, np.integer)) and np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2={l2!r}: must be a finite number >= 0")
    batch_size = check_positive_int("batch_size", batch_size)
    max_iter = check_positive_int("max_iter", max_iter)
    if not (isinstance(cache_mb, (int, float, np.floating, np.integer)) and cache_mb >= 0):
        raise ValueError(f"cache_mb={cache_mb!r}: must be a number >= 0")
    if attach and name in model.head_names and not replace:
        head = repr(name).replace("{", "{{").replace("}", "}}")  # a literal in OptionError's template
        raise OptionError(f"this model already has a head {head}; choose another {{name}}, or pass {{replace}} to "
                          "replace it", name=("name", "--name"), replace=("replace=True", "--replace"))
    regions, fa, source_name = prepare_regions(fasta, regions)
    if isinstance(targets, (str, os.PathLike)) and not str(targets).lower().endswith((".bw", ".bigwig")):
        targets = read_targets(targets)
    tracks = coverage_tracks(targets, rows=rows, sum_stat=sum_stat)
    names = _track_names(targets, rows)
    nb, C, T = model.n_bins, model.spec.trunk_channels, len(tracks)
    N = len(regions) * nb
    cache = _Cache(N, C, T, cache_mb, cache_dir)
    try:
        with ObservedCoverage(tracks) as cov:
            cov.check_chroms(regions, source_name)
            # 1. One trunk pass per region; coverage of the same bins; channel moments.
            s1 = np.zeros(C)
            s2 = np.zeros(C)
            for b0, codes in iter_windows(fa, regions, model.seq_length, batch_size, progress, desc="embed"):
                emb = model.embed(codes, batch_size=batch_size, n_encoding=n_encoding)
                rows_ = slice(b0 * nb, (b0 + len(emb)) * nb)
                cache.X[rows_] = emb.reshape(-1, C)
                for j in range(len(emb)):
                    y = cov.read_window(regions[b0 + j], model)
                    if (y < 0).any():
                        t = int(np.argwhere(y < 0)[0][1])
                        r = regions[b0 + j]
                        raise ValueError(f"{tracks[t].where}: negative coverage in {r.chrom}:{r.start}-{r.end}; "
                                         "a Poisson head needs counts >= 0")
                    cache.Y[(b0 + j) * nb:(b0 + j + 1) * nb] = y
                e64 = emb.reshape(-1, C).astype(np.float64)
                s1 += e64.sum(axis=0)
                s2 += np.einsum("ij,ij->j", e64, e64)
        mean = s1 / N
        sd = np.sqrt(np.maximum(s2 / N - mean ** 2, 0.0))
        sd[sd < 1e-6 * max(1.0, float(np.max(np.abs(mean))))] = 1.0  # a constant channel: the bias covers it
        # Every sum runs region by region (nb rows), in region order: a chunk only says how
        # many regions are read at once, so cache_mb / chunk_mb change no rounding.
        step = nb * max(1, int(chunk_mb * (1 << 20) // (8 * (C + 3 * T) * nb)))

        def blocks(with_x=True):
            """(X or None, Y) float64 of one region at a time, read from the cache a chunk at a
            time (X, the large part, only when asked for)."""
            for i in range(0, N, step):
                xs = np.asarray(cache.X[i:i + step], np.float64) if with_x else None
                ys = np.asarray(cache.Y[i:i + step], np.float64)
                for j in range(0, len(ys), nb):
                    yield (xs[j:j + nb] if with_x else None), ys[j:j + nb]

        y_mean = np.zeros(T)
        for _, y in blocks(with_x=False):
            y_mean += y.sum(axis=0)
        y_mean /= N

        def unpack(theta):
            ws = theta[:C * T].reshape(C, T)
            w = ws / sd[:, None]
            return ws, w, theta[C * T:] - (mean / sd) @ ws

        def objective(theta):
            ws, w, b = unpack(theta)
            total, gw, gb = 0.0, np.zeros((C, T)), np.zeros(T)
            for x, y in blocks():
                part, g = _poisson_terms(x @ w + b, y)
                total += part
                gw += x.T @ g
                gb += g.sum(axis=0)
            total, gw, gb = total / N, gw / N, gb / N
            total += l2 * float(np.sum(w * w))
            gw += 2.0 * l2 * w
            # chain rule through W = Ws / sd, b = bs - (mean / sd) @ Ws
            g_ws = gw / sd[:, None] - (mean / sd)[:, None] * gb[None, :]
            return total, np.concatenate([g_ws.ravel(), gb])

        theta0 = np.concatenate([np.zeros(C * T), _softplus_inv(y_mean)])
        res = opt.minimize(objective, theta0, jac=True, method="L-BFGS-B",
                           options={"maxiter": int(max_iter), "ftol": tol, "gtol": tol, "maxcor": 20})
        _, w, b = unpack(res.x)
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
        # Training-set Pearson R per track, of the float32 head the engine will run.
        stats = TrackStats(T)
        for x, y in blocks():
            stats.update(_softplus(x @ w32.astype(np.float64) + b32), y)
        r = stats.pearsonr()
    finally:
        cache.close()
    fit = HeadFit(name=name, weight=w32, bias=b32, loss=float(res.fun), n_iter=int(res.nit),
                  converged=bool(res.success), message=str(res.message), n_regions=len(regions), n_bins=N,
                  train_pearson=r, tracks=names)
    if attach:
        model.add_head(name, w32, b32, "softplus", replace=replace)
        model.spec.metadata.setdefault("source", [])
        model.spec.metadata["source"] = list(model.spec.metadata["source"]) + [{
            "format": "fit_head", "head": name, "tracks": names, "regions": len(regions), "bins": N,
            "loss": loss, "l2": float(l2), "objective": fit.loss, "iterations": fit.n_iter}]
    return fit


# --------------------------------------------------------------------------------------
# Command line

def add_fit_head_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``fit-head`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "fit-head", help="fit a new softplus head on the frozen trunk to bigWig coverage",
        description="Fit softplus(embedding @ W + b) by Poisson regression (L-BFGS, SciPy) to the observed "
                    "coverage of new tracks over the output bins of the window centred on each BED region, and "
                    "save the model with the new head as a .safetensors file.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of training regions")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-t", "--targets", type=input_file("targets file"), help="basenji targets file whose 'file' column names the bigWigs "
                                             "(sum_stat, clip, scale applied as basenji's data pipeline)")
    src.add_argument("--bigwigs", help="comma-separated bigWig files (pooled by --sum-stat)")
    p.add_argument("-o", "--out", required=True, help="output model (.safetensors) with every head plus the new one")
    p.add_argument("--name", default="new", help="the new head's name (default 'new')")
    p.add_argument("--l2", type=non_negative_float, default=1e-6, help="L2 penalty on the weights (default 1e-6)")
    p.add_argument("--sum-stat", choices=SUM_STATS, default=None,
                   help="pool bases into bins by this (default: the targets file's sum_stat; sum for --bigwigs)")
    p.add_argument("--max-iter", type=positive_int, default=1000, help="L-BFGS iterations at most (default 1000)")
    p.add_argument("--replace", action="store_true", help="replace an existing head of that name")
    p.add_argument("--cache-mb", type=non_negative_float, default=1024.0,
                   help="embedding cache kept in memory, MB; a larger one goes to a temporary file (default 1024)")
    add_batch_size_option(p, 4)
    add_run_options(p)
    p.set_defaults(func=run_fit_head)
    return p


def run_fit_head(args: argparse.Namespace) -> int:
    def work():
        if not str(args.out).endswith(".safetensors"):
            raise ValueError(f"{args.out}: the output model must be a .safetensors file")
        regions = read_bed(args.bed)
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        targets = read_targets(args.targets) if args.targets else [p for p in args.bigwigs.split(",") if p]
        coverage_tracks(targets, sum_stat=args.sum_stat)  # a bad targets row fails before the model loads
        # The output before the fit: a bad -o must not waste it.
        check_output(args.out, inputs=[args.model, args.fasta, args.bed, args.targets]
                     + ([] if args.targets else targets))
        model = load_model(args)
        fit = fit_head(model, args.fasta, regions, targets, l2=args.l2, name=args.name, sum_stat=args.sum_stat,
                       batch_size=args.batch_size, n_encoding=args.n_encoding, max_iter=args.max_iter,
                       cache_mb=args.cache_mb, replace=args.replace, progress=not args.quiet)
        model.save(args.out)
        print(json.dumps(fit.summary(), indent=2))
        print(f"wrote {args.out}")

    return one_line_errors("fit-head", work)
