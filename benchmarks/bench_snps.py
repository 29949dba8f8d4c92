"""Incremental SNP scoring vs two full forward passes, same run, same model.

    python benchmarks/bench_snps.py [--model PATH] [--repeats 5] [--threads N]

Default model: the tf-full fixture (full Basenji2 architecture, random weights) read in place
from ../shared. Per SNP, basenji-style scoring needs the REF and the ALT window; the
incremental path runs the REF window once, keeping its tensors, then recomputes only the
ALT's receptive-field cone. Both give identical numbers (checked here too).
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import basenji2_fast as b2
from basenji2_fast.spec import ALGORITHMS

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf-full" / "model_human.h5"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--algorithm", choices=ALGORITHMS, default="auto", help="convolutions (both paths)")
    args = ap.parse_args(argv)
    model = b2.load(args.model, threads=args.threads, algorithm=args.algorithm)
    rng = np.random.default_rng(0)
    L = model.seq_length
    codes = rng.integers(0, 4, L).astype(np.uint8)
    pos = np.array([L // 2 - 1])  # basenji_sad puts the variant's first base here
    alt = ((codes[pos] + 1) % 4).astype(np.uint8)
    mut = codes.copy()
    mut[pos] = alt
    model.predict(codes[None])  # warm-up
    full, inc = [], []
    for r in range(args.repeats):
        for which in (("full", "inc") if r % 2 == 0 else ("inc", "full")):
            t = time.perf_counter()
            if which == "full":
                ref_f, alt_f = model.predict(codes[None])[0], model.predict(mut[None])[0]
                full.append(time.perf_counter() - t)
            else:
                ref_i, alt_i = model.predict_substitutions(codes, pos, alt)
                inc.append(time.perf_counter() - t)
    exact = np.array_equal(ref_i, ref_f) and np.array_equal(alt_i[0], alt_f)
    k = 8
    pos_k = np.linspace(L // 4, 3 * L // 4, k).astype(np.int64)
    alt_k = ((codes[pos_k] + 1) % 4).astype(np.uint8)
    t = time.perf_counter()
    model.predict_substitutions(codes, pos_k, alt_k)
    shared = time.perf_counter() - t
    print(f"model {args.model}: {L:,} bp, {model.n_bins} bins, isa {model.info()['isa']}, threads {model.threads}, algorithm {args.algorithm}")
    print(f"two full passes per SNP: median {statistics.median(full):.3f} s (min {min(full):.3f})")
    print(f"incremental per SNP:     median {statistics.median(inc):.3f} s (min {min(inc):.3f})")
    print(f"speed-up: {statistics.median(full) / statistics.median(inc):.2f}x  (identical outputs: {exact})")
    print(f"{k} SNPs sharing one window: {shared:.3f} s, {shared / k:.3f} s per SNP")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
