"""Synthetic observed coverage for the head-fitting and evaluation tests: regions whose
output windows tile the fixture genome without overlap (so one bigWig can hold a different
value for every output bin of every region), and bigWigs written from per-bin values."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np


def chrom_sizes(fasta) -> List[Tuple[str, int]]:
    """(name, length) of each sequence, from the FASTA's .fai."""
    with open(str(fasta) + ".fai") as fh:
        return [(c[0], int(c[1])) for c in (line.split("\t") for line in fh if line.strip())]


def tiling_regions(model, sizes) -> List[tuple]:
    """1-bp regions whose windows' output bins abut and stay inside each chromosome:
    region k of a chromosome has output bins covering [k * span, (k + 1) * span)."""
    span = model.n_bins * model.bin_size
    half = span // 2  # the output window is centred on the region's midpoint
    out = []
    for chrom, size in sizes:
        for k in range(size // span):
            mid = k * span + half
            out.append((chrom, mid, mid + 1))
    return out


def write_bigwig(path, sizes, model, regions: Sequence[tuple], values: np.ndarray, per_base_divisor: float = 1.0):
    """One bigWig: bin b of region i's output window holds ``values[i, b] / per_base_divisor``
    at every base (so the bin's mean is values / divisor, its sum bin_size times that)."""
    import pyBigWig

    from basenji2_fast.windows import output_window

    order = {c: i for i, (c, _) in enumerate(sizes)}
    entries = []
    for r, v in zip(regions, values):
        s0 = output_window(r, model)[0]
        for b in range(model.n_bins):
            entries.append((order[r[0]], s0 + b * model.bin_size, float(v[b]) / per_base_divisor, r[0]))
    entries.sort()
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes))
    bw.addEntries([e[3] for e in entries], [e[1] for e in entries], ends=[e[1] + model.bin_size for e in entries],
                  values=[e[2] for e in entries])
    bw.close()


def write_targets(path, rows, index=None):
    """A basenji targets file; rows: (identifier, file, clip, scale, sum_stat, description);
    index: the index column (default 0, 1, ...)."""
    lines = ["index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription"]
    for i, (ident, file, clip, scale, stat, desc) in zip(index or range(len(rows)), rows):
        lines.append(f"{i}\t{ident}\t{file}\t{clip}\t{scale}\t{stat}\t{desc}")
    path.write_text("\n".join(lines) + "\n")
