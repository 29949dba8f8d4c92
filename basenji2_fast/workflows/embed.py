"""Trunk embeddings of BED regions (``basenji2-fast embed``), streamed into an HDF5 file.

Each region gets the model window centred on it exactly as ``predict-bed``
(:func:`basenji2_fast.windows.window`: ``mid = (start + end) // 2``, N off the chromosome,
strand ignored); its embedding is the trunk output after the final GELU,
:meth:`basenji2_fast.Model.embed`, float32 [n_bins, trunk_channels] (896 x 1536 for Basenji2).

Pooling over the bins (``pool``):

==========  ==========================================================================
``none``    every output bin: [regions, n_bins, channels]
``mean``    the mean over all output bins: [regions, channels]
``center``  the mean of the bins that touch the region's midpoint: bins ``n_bins/2 - 1``
            and ``n_bins/2`` for an even bin count (the 2 * bin_size bp centred on the
            midpoint: 447-448 of Basenji2's 896), the middle bin for an odd one
==========  ==========================================================================

``emb.h5``:

================  =====================  ===================================================
``embeddings``    float32 (or float16)   [regions, n_bins, channels], or [regions, channels]
``chrom``         bytes [regions]        the region's chromosome
``start``, ``end``  int64 [regions]      the genomic span the stored vectors summarise:
                                         the whole output window (``none``, ``mean``) or the
                                         central bins (``center``); 0-based, end-exclusive,
                                         may reach past a chromosome end (those bases are N)
``name``          bytes [regions]        the BED name (``chrom:start-end`` without one)
================  =====================  ===================================================

Attributes: ``pool``, ``model`` (the model file), ``model_source`` (JSON provenance of its
weights), ``seq_length``, ``bin_size``, ``n_bins``, ``trunk_channels``, ``bins`` (the output
bins ``[b0, b1)`` summarised), ``rc``, ``shifts``, ``n_encoding``, ``version``.

The file is filled batch by batch (memory: one batch of windows), written under a
temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import h5py
import numpy as np

from .._io import atomic_output, check_output
from ..cli_options import (add_batch_size_option, add_ensemble_options, add_fasta_option, add_model_options,
                           add_run_options, load_model, one_line_errors)
from ..genome import fasta_path, prepare_regions, read_bed
from ..model import Ensemble
from ..version import __version__
from ..windows import iter_windows, output_window

POOLS = ("mean", "none", "center")
DTYPES = ("float32", "float16")


def pooled_bins(n_bins: int, pool: str) -> Tuple[int, int]:
    """The output bins ``[b0, b1)`` a pooling summarises (module docstring)."""
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")
    if pool == "center":
        return (n_bins // 2 - 1, n_bins // 2 + 1) if n_bins % 2 == 0 else (n_bins // 2, n_bins // 2 + 1)
    return 0, n_bins


def pool_embeddings(emb: np.ndarray, pool: str) -> np.ndarray:
    """float32 [B, n_bins, C] -> [B, n_bins, C] (``none``) or [B, C] (``mean``, ``center``)."""
    b0, b1 = pooled_bins(emb.shape[1], pool)
    if pool == "none":
        return emb
    return emb[:, b0:b1].mean(axis=1, dtype=np.float64).astype(np.float32)


def _iter_embeddings(model, fa, regions, pool: str, ensemble: Ensemble, progress: bool):
    """Yield ``(first region, pooled embeddings)`` batch by batch, in order."""
    for b0, codes in iter_windows(fa, regions, model.seq_length, ensemble.batch_size, progress, desc="embed"):
        yield b0, pool_embeddings(model.embed(codes, batch_size=ensemble.batch_size, n_encoding=ensemble.n_encoding,
                                              rc=ensemble.rc, shifts=ensemble.shifts), pool)


def embed_regions(model, fasta, regions, pool: str = "mean", batch_size: int = 4, n_encoding: str = "zeros",
                  rc: bool = False, shifts: Sequence[int] = (0,), progress: bool = False) -> np.ndarray:
    """Embeddings of the window centred on each region, in memory.

    Parameters
    ----------
    model : basenji2_fast.Model
    fasta : FASTA path or open ``pyfaidx.Fasta``
    regions : BED path or list of ``(chrom, start, end[, name])`` (0-based, end-exclusive)
    pool : "mean", "none" or "center" (module docstring)
    batch_size : windows per engine call
    n_encoding, rc, shifts : as :meth:`basenji2_fast.Model.embed`

    Returns
    -------
    float32 [regions, n_bins, trunk_channels] (``none``) or [regions, trunk_channels]
    """
    regions, fa, _ = prepare_regions(fasta, regions)
    pooled_bins(model.n_bins, pool)
    C = model.spec.trunk_channels
    out = np.empty((len(regions), model.n_bins, C) if pool == "none" else (len(regions), C), np.float32)
    for b0, e in _iter_embeddings(model, fa, regions, pool, Ensemble(rc, shifts, n_encoding, batch_size), progress):
        out[b0:b0 + len(e)] = e
    return out


def embed_bed(model, fasta, regions, out_path, pool: str = "mean", batch_size: int = 4, n_encoding: str = "zeros",
              rc: bool = False, shifts: Sequence[int] = (0,), dtype: str = "float32", model_name: Optional[str] = None,
              progress: bool = True) -> Path:
    """Write the embeddings of every region to ``out_path`` (HDF5, layout in the module docstring).

    Parameters
    ----------
    model, fasta, regions, pool, batch_size, n_encoding, rc, shifts : as :func:`embed_regions`
    out_path : the HDF5 file to write (atomically)
    dtype : "float32" or "float16" (halves the file; ~3 significant digits)
    model_name : the ``model`` attribute (default: the model's first source file)

    Returns
    -------
    Path of the file.

    Raises
    ------
    ValueError
        A malformed BED line (naming the file and line), a chromosome missing from the
        FASTA, a bad pool or dtype. Nothing is written then.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    b0, b1 = pooled_bins(model.n_bins, pool)
    ensemble = Ensemble(rc, shifts, n_encoding, batch_size)
    regions, fa, source_name = prepare_regions(fasta, regions)
    out_path = Path(out_path)
    check_output(out_path, inputs=[fasta_path(fasta), source_name], parents=True)  # missing folders are created
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n, C, bs = len(regions), model.spec.trunk_channels, model.bin_size
    source = model.spec.metadata.get("source") or []
    if model_name is None:
        model_name = source[0].get("file", "") if source and isinstance(source[0], dict) else ""
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as h5:
        shape = (n, model.n_bins, C) if pool == "none" else (n, C)
        # One region per chunk for full embeddings (5.5 MB for Basenji2); up to 256 pooled rows.
        chunks = (1, model.n_bins, C) if pool == "none" else (min(n, 256), C)
        ds = h5.create_dataset("embeddings", shape, dtype=dtype, chunks=chunks)
        starts = np.array([output_window(r, model)[0] + b0 * bs for r in regions], np.int64)
        h5.create_dataset("chrom", data=np.array([r.chrom.encode() for r in regions]))
        h5.create_dataset("start", data=starts)
        h5.create_dataset("end", data=starts + (b1 - b0) * bs)
        h5.create_dataset("name", data=np.array([r.name.encode() for r in regions]))
        attrs = {"pool": pool, "model": str(model_name), "model_source": json.dumps(source, default=str),
                 "seq_length": model.seq_length, "bin_size": bs, "n_bins": model.n_bins, "trunk_channels": C,
                 "bins": np.array([b0, b1], np.int64), "rc": bool(rc),
                 "shifts": np.array([int(s) for s in shifts], np.int64), "n_encoding": n_encoding,
                 "version": __version__}
        for k, v in attrs.items():
            h5.attrs[k] = v
        for i0, e in _iter_embeddings(model, fa, regions, pool, ensemble, progress):
            ds[i0:i0 + len(e)] = e.astype(dtype, copy=False)
    return out_path


# --------------------------------------------------------------------------------------
# Command line

def add_embed_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``embed`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "embed", help="trunk embeddings of BED regions into an HDF5 file",
        description="For the model window centred on each BED region (as predict-bed), write the trunk output "
                    "(after the final GELU) to OUT.h5: embeddings [regions, bins, channels] with --pool none, "
                    "[regions, channels] with --pool mean (all bins) or center (the 2 bins at the region's "
                    "midpoint), plus chrom/start/end of the span they cover.")
    add_model_options(p)
    add_fasta_option(p)
    p.add_argument("bed", help="BED file of regions")
    p.add_argument("-o", "--out", required=True, help="output HDF5 file")
    p.add_argument("--pool", choices=POOLS, default="mean", help="pooling over the output bins (default mean)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored dtype (default float32)")
    add_ensemble_options(p)
    add_batch_size_option(p, 4)
    add_run_options(p)
    p.set_defaults(func=run_embed)
    return p


def run_embed(args: argparse.Namespace) -> int:
    def work():
        # Inputs first: a bad BED line fails before the model is loaded.
        regions = read_bed(args.bed)
        if not regions:
            raise ValueError(f"{args.bed}: no regions")
        path = embed_bed(load_model(args), args.fasta, regions, args.out, pool=args.pool,
                         batch_size=args.batch_size, n_encoding=args.n_encoding, rc=args.rc, shifts=args.shifts,
                         dtype=args.dtype, model_name=os.path.basename(args.model), progress=not args.quiet)
        print(f"wrote {path}")

    return one_line_errors("embed", work)
