"""Saturation mutagenesis: incremental mutants vs naive full passes, same run, same model.

    python benchmarks/bench_ism.py [--model PATH] [--len 20] [--naive 3] [--threads N] [--tracks N]

Default model: the tf-full fixture (full Basenji2 geometry: 131,072 bp, 896 bins, 5,313
tracks; random weights) read in place from ../shared. A stretch of --len bases at the window
centre is mutated to the three other bases (3 x len mutants). The incremental path is
``saturation_mutagenesis`` (one ``predict_substitutions`` call: one REF pass, then each
mutant's receptive-field cone); the naive path is ``Model.predict`` of single mutant
windows, --naive of them timed and the rest extrapolated (every full pass costs the same).
The timed naive mutants are checked to equal the incremental ones bit for bit.
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import basenji2_fast as b2
from basenji2_fast.spec import ALGORITHMS
from basenji2_fast.workflows.ism import _mutants, saturation_mutagenesis

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf-full" / "model_human.h5"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--len", type=int, default=20, help="bases mutated (3 mutants each)")
    ap.add_argument("--naive", type=int, default=4, help="naive full passes to time")
    ap.add_argument("--repeats", type=int, default=2, help="incremental runs (interleaved with the naive passes)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--algorithm", choices=ALGORITHMS, default="auto", help="convolutions (both paths)")
    ap.add_argument("--tracks", type=int, default=None, help="compute only the first N tracks (default: all)")
    args = ap.parse_args(argv)
    model = b2.load(args.model, threads=args.threads, algorithm=args.algorithm)
    rng = np.random.default_rng(0)
    L = model.seq_length
    codes = rng.integers(0, 4, L).astype(np.uint8)
    tracks = None if args.tracks is None else list(range(args.tracks))
    first = L // 2 - args.len // 2
    ks, bs = _mutants(codes[first:first + args.len])
    n_mut = len(ks)

    model.predict(codes[None], tracks=tracks)  # warm-up (buffers, page cache)
    # Interleave incremental runs and naive passes so load from other processes hits both.
    pick = np.linspace(0, n_mut - 1, args.naive).astype(int)
    inc, naive, exact = [], [], True
    for r in range(max(args.repeats, 1)):
        t = time.perf_counter()
        ref_i, alt_i = model.predict_substitutions(codes, first + ks, bs, tracks=tracks)
        inc.append(time.perf_counter() - t)
        for j in pick[r::max(args.repeats, 1)]:
            mut = codes.copy()
            mut[first + ks[j]] = bs[j]
            t = time.perf_counter()
            p = model.predict(mut[None], tracks=tracks)[0]
            naive.append(time.perf_counter() - t)
            exact &= bool(np.array_equal(p, alt_i[j]))
    t = time.perf_counter()
    saturation_mutagenesis(model, codes, mut_start=first, mut_len=args.len, stats=("sum", "center", "scd"),
                           tracks=tracks)
    t_sat = time.perf_counter() - t
    per_naive, t_sub = min(naive), min(inc)
    print(f"model {args.model}: {L:,} bp, {model.n_bins} bins, "
          f"{len(tracks) if tracks else model.spec.heads[model.head_names[0]].tracks} tracks, "
          f"isa {model.info()['isa']}, threads {model.threads}, algorithm {args.algorithm}")
    print(f"{args.len}-bp stretch = {n_mut} mutants (+ 1 reference)")
    print(f"naive full pass per mutant: min {per_naive:.3f} s of {len(naive)} (median {statistics.median(naive):.3f}); "
          f"{n_mut} mutants + ref extrapolated: {per_naive * (n_mut + 1):.1f} s")
    print(f"incremental predict_substitutions, all {n_mut} mutants + ref: min {t_sub:.2f} s of {len(inc)} "
          f"(median {statistics.median(inc):.2f}) = {t_sub / n_mut:.3f} s per mutation")
    print(f"saturation_mutagenesis (3 stats), whole window: {t_sat:.2f} s = {t_sat / n_mut:.3f} s per mutation")
    print(f"speed-up per mutation (naive / incremental, min vs min): {per_naive / (t_sub / n_mut):.1f}x "
          f"(with stats: {per_naive / (t_sat / n_mut):.1f}x); identical outputs: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
