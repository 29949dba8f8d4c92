"""predict-genome on 1 and 2 local Dask workers vs one process, same run, same machine.

    python benchmarks/bench_distributed.py [--model PATH] [--fasta PATH] [--repeats 3] [--workers 1,2]

Default: the tf-full fixture (full Basenji2 architecture, random weights; converted once to a
memory-mapped .safetensors in a temporary folder) on the basenji CLI fixture genome (483 kb,
6 windows of 131 kb), 10 tracks, one window per task. Each configuration runs the whole
command in a fresh process (``python -m basenji2_fast.cli predict-genome``): wall time from
start to the written bigWigs, cluster start-up included. ``--workers N`` splits this
machine's CPUs between the N workers (engine threads = CPUs // N); the single process uses
all CPUs. The bigWigs of every run are checked to be byte-identical to the single process's.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: tf-full converted to .safetensors)")
    ap.add_argument("--fasta", default=str(SHARED / "basenji-cli" / "visible" / "genome.fa"))
    ap.add_argument("--tracks", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--batch-size", type=int, default=1, help="windows per task (and per engine call)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    model = args.model
    if model is None:
        model = str(tmp / "tf_full.safetensors")
        subprocess.run([sys.executable, "-m", "basenji2_fast.cli", "convert", str(SHARED / "tf-full" / "model_human.h5"),
                        "-o", model], check=True, stdout=subprocess.DEVNULL)
    base = [sys.executable, "-m", "basenji2_fast.cli", "predict-genome", "-m", model, "-f", args.fasta, "--tracks",
            args.tracks, "--batch-size", str(args.batch_size), "-q"]
    configs = [("1 process", [])] + [(f"--workers {n}", ["--workers", n]) for n in args.workers.split(",")]
    times = {name: [] for name, _ in configs}
    ref = None
    for r in range(args.repeats):
        for name, extra in configs:  # interleaved, so a load change on the machine hits all alike
            out = tmp / f"out_{r}_{name.replace(' ', '_')}"
            t0 = time.perf_counter()
            subprocess.run(base + ["-o", str(out)] + extra, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
            bws = {p.name: p.read_bytes() for p in sorted(out.glob("*.bw"))}
            ref = ref or bws
            assert bws == ref, f"{name}: bigWigs differ from the first run's"
            print(f"run {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    one = statistics.median(times["1 process"])
    w1 = statistics.median(times[configs[1][0]])
    print(f"\nCPUs: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}")
    for name, _ in configs:
        med = statistics.median(times[name])
        print(f"{name:>12}: median {med:.2f} s of {len(times[name])} ({', '.join(f'{t:.1f}' for t in times[name])}); "
              f"vs 1 process {one / med:.2f}x; vs {configs[1][0]} {w1 / med:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
