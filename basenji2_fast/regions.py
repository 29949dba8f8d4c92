"""Predictions for BED regions, in the layout of basenji's ``basenji_predict_bed.py``.

Each region gets the model window centred on ``(start + end) // 2`` (strand ignored), N beyond
chromosome ends; ``predict.h5`` holds ``preds [regions, bins, tracks]`` (float16), and the
``chrom`` / ``start`` / ``end`` of the output bins (the window less the cropped bins).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from ._io import atomic_output
from .dna import encode
from .genome import fetch, open_fasta

FLOAT16_MAX = float(np.finfo(np.float16).max)


class Region(NamedTuple):
    chrom: str
    start: int
    end: int
    name: str


def read_bed(path) -> List[Region]:
    """BED3+ lines -> regions; comments, ``track`` and ``browser`` lines skipped.

    A malformed line raises ValueError naming the file and line number.
    """
    regions = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\n").split("\t")
            try:
                if len(cols) < 3:
                    raise ValueError("expected at least 3 tab-separated columns")
                start, end = int(cols[1]), int(cols[2])
                if start < 0 or end < start:
                    raise ValueError(f"bad interval {start}-{end}")
            except ValueError as e:
                raise ValueError(f"{path}: line {lineno}: {e}") from None
            regions.append(Region(cols[0], start, end, cols[3] if len(cols) > 3 else f"{cols[0]}:{start}-{end}"))
    return regions


def window(region: Region, seq_length: int) -> tuple:
    """(start, end) of the model window centred on the region, as basenji_predict_bed.py."""
    mid = (region.start + region.end) // 2
    start = mid - seq_length // 2
    return start, start + seq_length


def predict_bed(model, fasta_path, bed_path, out_dir, head: Optional[str] = None,
                tracks: Optional[Sequence[int]] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                batch_size: int = 4, n_encoding: str = "zeros", progress: bool = True) -> Path:
    """Predict every BED region and write ``out_dir/predict.h5``; returns its path.

    The file is written to a temporary name and renamed when complete, so an interrupted
    run leaves no partial ``predict.h5``.
    """
    regions = read_bed(bed_path)
    if not regions:
        raise ValueError(f"{bed_path}: no regions")
    fasta = open_fasta(fasta_path)
    for i, r in enumerate(regions):
        if r.chrom not in fasta:
            raise ValueError(f"{bed_path}: region {i + 1} ({r.name}): no sequence {r.chrom!r} in {fasta_path}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L, crop = model.seq_length, model.spec.crop_bins * model.bin_size
    head = head or model.head_names[0]
    if head not in model.spec.heads:
        raise ValueError(f"no head {head!r}; this model has {model.head_names}")
    n_tracks = len(tracks) if tracks is not None else model.spec.heads[head].tracks
    with atomic_output(out_dir / "predict.h5") as tmp, h5py.File(tmp, "w") as h5:
        preds = h5.create_dataset("preds", (len(regions), model.n_bins, n_tracks), dtype="float16")
        starts = [window(r, L)[0] + crop for r in regions]
        h5.create_dataset("chrom", data=np.array([r.chrom.encode() for r in regions]))
        h5.create_dataset("start", data=np.array(starts, np.int64))
        h5.create_dataset("end", data=np.array([s + model.n_bins * model.bin_size for s in starts], np.int64))
        with tqdm(total=len(regions), unit="region", disable=not progress, desc="predict") as bar:
            for b0 in range(0, len(regions), batch_size):
                batch = regions[b0:b0 + batch_size]
                codes = np.stack([encode(fetch(fasta, r.chrom, *window(r, L)), what=f"{r.chrom}:{r.start}-{r.end}")
                                  for r in batch])
                p = model.predict(codes, head=head, tracks=tracks, rc=rc, shifts=shifts, n_encoding=n_encoding)
                preds[b0:b0 + len(batch)] = np.clip(p, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
                bar.update(len(batch))
    return out_dir / "predict.h5"
