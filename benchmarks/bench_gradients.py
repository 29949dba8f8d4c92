#!/usr/bin/env python
"""Same-run speed and memory of input gradients: our backward pass vs torch autograd, full Basenji2.

Three engines on the same weights, each in its own long-lived process (so each peak RSS is
its own), passes interleaved round by round with the order rotating:

* ``forward``: our ``Model.predict(codes, tracks=T)``, the forward pass the gradient is
  measured against;
* ``gradients``: our ``Model.gradients(codes, tracks=T, bins=B)``: one forward and one
  backward pass, fp32, the gradient of the predictions summed over bins B and tracks T with
  respect to the one-hot input;
* ``torch``: basenji2-pytorch fp32 with the published sigmoid GELU swapped in
  (``peers.use_sigmoid_gelu``), ``x.requires_grad_()``, the same sum, ``.backward()``, its
  weights frozen (``requires_grad_(False)``: autograd computes the input's gradient only,
  its cheapest configuration). ``torch-weights`` (optional) leaves the weights trainable, as
  a model fresh from ``torch.load`` is: autograd then also computes every weight's gradient.

The weights are random (``peers.random_basenji2_pytorch``: every conv, dense and BatchNorm
parameter and statistic from a seed), saved as a ``.pth`` for torch and converted once to
our ``.safetensors`` (sigmoid GELU), so our workers never import torch. Reported: median and
min wall seconds and median CPU seconds (the worker process's, all threads: on a shared
machine, where other processes stretch wall time, the steadier measure of work), the ratios
(gradients / forward; torch / gradients) of both, each worker's peak RSS
(``VmHWM``: load, warm-up and every pass), and how our gradient compares with torch's
(max |delta| / max |grad|, the median position's, the share of positions beyond 1e-3, the
relative L2 error; see tests/test_gradients.py for why fp32 max-pool near-ties make the
max-norm a few 1e-3 at this size for any fp32 engine, torch's own included).

    python benchmarks/bench_gradients.py                             # all tracks, all bins, 5 repeats
    python benchmarks/bench_gradients.py --tracks 10 --bins center   # 10 tracks, the 2 central bins
    python benchmarks/bench_gradients.py --engines forward,gradients --json grads.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
try:
    import basenji2_fast as b2
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    import basenji2_fast as b2
from basenji2_fast import peers, windows  # noqa: E402
from basenji2_fast.bench import (Worker, build_provenance, compare_gradients, cpu_info, default_threads,  # noqa: E402
                                 dist_version, random_codes)

SEQ_LENGTH, N_BINS, N_TRACKS = 131072, 896, 5313
ENGINES = ("forward", "gradients", "torch", "torch-weights")
NAMES = {"forward": "ours predict", "gradients": "ours gradients", "torch": "torch autograd",
         "torch-weights": "torch autograd +weights"}
IDLE_S = 0.3  # pause before each pass: the previous engine's OpenMP threads spin briefly


def parse_tracks(s: str):
    """"all" -> None; "N" -> N tracks spread over the head; "i,j,..." -> those columns."""
    if s == "all":
        return None
    if "," not in s:
        n = int(s)
        if not 1 <= n <= N_TRACKS:
            raise argparse.ArgumentTypeError(f"--tracks {n}: expected 1..{N_TRACKS}")
        return [int(t) for t in np.linspace(0, N_TRACKS - 1, n).round()]
    return [int(t) for t in s.split(",")]


def parse_bins(s: str):
    """"all" -> None; "center" -> bins 448, 449 (sat's center statistic's); "A-B" -> A..B-1."""
    return windows.parse_bins(s).indices(N_BINS)


# ---------------------------------------------------------------------------------------------
# the engines: `basenji2-fast bench`'s workers (ours: basenji2_fast.bench; torch: peers.py)

def worker_cmd(eng: str, codes: Path, pth: Path, st: Path, threads: int, tracks, bins) -> list:
    """The command line of engine ``eng``'s long-lived worker (the bench protocol: ``run``,
    ``save PATH``, ``finish``)."""
    if eng in ("forward", "gradients"):
        cfg = {"kind": "ours", "task": "predict" if eng == "forward" else "gradients", "precision": "fp32",
               "threads": threads, "codes": str(codes), "model": str(st), "tracks": tracks, "bins": bins}
        return [sys.executable, "-m", "basenji2_fast.bench", "--_worker", json.dumps(cfg)]
    cfg = {"runtime": "torch", "task": "gradients", "gelu": "sigmoid", "weight_grads": eng == "torch-weights",
           "threads": threads, "codes": str(codes), "pth": str(pth), "tracks": tracks, "bins": bins}
    return [sys.executable, str(Path(peers.__file__)), json.dumps(cfg)]


def prep(args) -> None:
    """The random full-size model: .pth for torch, .safetensors (sigmoid GELU) for ours."""
    cfg = json.loads(args._prep)
    import torch

    from basenji2_fast.peers import random_basenji2_pytorch

    torch.save(random_basenji2_pytorch(cfg["seed"]).state_dict(), cfg["pth"])
    b2.convert(cfg["pth"], cfg["st"], gelu="sigmoid")


# ---------------------------------------------------------------------------------------------
# parent

def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=default_threads(), help="threads for every engine (default: all CPUs)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per engine after one warm-up (default 5)")
    ap.add_argument("--tracks", default="all", help="all (default), a count N spread over the head, or i,j,...")
    ap.add_argument("--bins", default="all",
                    help="all (default), center (bins 448-449, as sat's center statistic) or A-B (bins A..B-1)")
    ap.add_argument("--engines", default="forward,gradients,torch",
                    help="a subset of " + ",".join(ENGINES) + " (default forward,gradients,torch)")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights and the sequence")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--_prep", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._prep:
        prep(args)
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or not set(engines) <= set(ENGINES):
        ap.error("--engines: a comma-separated subset of " + ",".join(ENGINES))
    if args.threads < 1 or args.repeats < 1:
        ap.error("--threads and --repeats must be >= 1")
    tracks, bins = parse_tracks(args.tracks), parse_bins(args.bins)

    results = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_info()["model"], "logical_cpus": os.cpu_count(), "threads": args.threads,
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": dist_version("torch"), "basenji2_pytorch": dist_version("basenji2-pytorch"),
                     "basenji2_fast": b2.__version__},
        "settings": {"repeats": args.repeats, "warmup": 1, "seed": args.seed, "tracks": args.tracks,
                     "bins": args.bins, "gelu": "sigmoid", "batch": 1},
        "build": build_provenance(),
        "load_average_before": list(os.getloadavg()),
    }
    env = _env(args.threads)
    with tempfile.TemporaryDirectory(prefix="b2grad-") as tmp:
        tmp = Path(tmp)
        pth, st, codes_path = tmp / "basenji2_random.pth", tmp / "basenji2_random.safetensors", tmp / "codes.npy"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--_prep", json.dumps({"seed": args.seed, "pth": str(pth),
                                                                         "st": str(st)})], env=env, check=True)
        print(f"random full-size Basenji2 -> .pth and .safetensors in {time.perf_counter() - t0:.1f} s", flush=True)
        np.save(codes_path, random_codes(1, SEQ_LENGTH, args.seed + 1000))
        workers, times, cpus = {}, {e: [] for e in engines}, {e: [] for e in engines}
        try:
            for eng in engines:
                print(f"loading {NAMES[eng]} ... ", end="", flush=True)
                workers[eng] = Worker(eng, worker_cmd(eng, codes_path, pth, st, args.threads, tracks, bins), env)
                if not workers[eng].report.get("ready"):
                    raise RuntimeError(f"{NAMES[eng]}: {workers[eng].report}")
                time.sleep(IDLE_S)
                print(f"warm-up pass {workers[eng].ask('run')['t']:.2f} s", flush=True)
            for r in range(args.repeats):
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for eng in order:
                    time.sleep(IDLE_S)
                    answer = workers[eng].ask("run")
                    times[eng].append(answer["t"])
                    cpus[eng].append(answer["cpu"])
                print(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{NAMES[e]} {times[e][-1]:.2f} s" for e in engines),
                      flush=True)
            for eng in engines:
                if eng != "forward":
                    workers[eng].ask(f"save {tmp / f'{eng}.npy'}")
            reports = {eng: workers[eng].finish() for eng in engines}
        finally:
            for w in workers.values():
                w.kill()
        runs = {}
        for eng in engines:
            runs[eng] = dict(reports[eng], times_s=times[eng], cpu_s=cpus[eng], median_s=statistics.median(times[eng]),
                             min_s=min(times[eng]), median_cpu_s=statistics.median(cpus[eng]))
        g = runs.get("gradients")
        if g and "forward" in runs:
            g["ratio_to_forward"] = g["median_s"] / runs["forward"]["median_s"]
            g["cpu_ratio_to_forward"] = g["median_cpu_s"] / runs["forward"]["median_cpu_s"]
            g["rss_ratio_to_forward"] = g["peak_rss_mb"] / runs["forward"]["peak_rss_mb"]
        for peer in ("torch", "torch-weights"):
            if g and peer in runs:
                runs[peer]["slowdown_vs_gradients"] = runs[peer]["median_s"] / g["median_s"]
                runs[peer]["cpu_slowdown_vs_gradients"] = runs[peer]["median_cpu_s"] / g["median_cpu_s"]
                runs[peer]["agreement"] = compare_gradients(np.load(tmp / "gradients.npy")[0],
                                                            np.load(tmp / f"{peer}.npy")[0])
        results["runs"] = runs
    results["load_average_after"] = list(os.getloadavg())
    print_table(results, engines)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def print_table(results: dict, engines) -> None:
    m, s = results["machine"], results["settings"]
    print()
    print(f"{results['date']}  CPU: {m['cpu']}  threads: {m['threads']}  torch {results['versions']['torch']}  "
          f"tracks: {s['tracks']}  bins: {s['bins']}  repeats: {s['repeats']} (+1 warm-up)")
    hdr = (f"{'engine':<24} {'median s':>9} {'min s':>8} {'vs ours fwd':>11} {'vs ours grad':>12} "
           f"{'CPU s':>7} {'vs fwd':>7} {'vs grad':>8} {'peak RSS MB':>12}")
    print(hdr)
    print("-" * len(hdr))
    runs = results["runs"]
    fwd, fwd_cpu = runs.get("forward", {}).get("median_s"), runs.get("forward", {}).get("median_cpu_s")
    grad, grad_cpu = runs.get("gradients", {}).get("median_s"), runs.get("gradients", {}).get("median_cpu_s")

    def ratio(a, b):
        return f"{a / b:.2f}x" if b else "-"

    for eng in engines:
        r = runs[eng]
        print(f"{NAMES[eng]:<24} {r['median_s']:>9.2f} {r['min_s']:>8.2f} {ratio(r['median_s'], fwd):>11} "
              f"{ratio(r['median_s'], grad):>12} {r['median_cpu_s']:>7.2f} {ratio(r['median_cpu_s'], fwd_cpu):>7} "
              f"{ratio(r['median_cpu_s'], grad_cpu):>8} {r['peak_rss_mb']:>12.0f}")
    print("s: wall seconds per pass; CPU s: the process's CPU seconds per pass (all its threads, a spinning "
          "thread's wait included), less affected by other processes than wall time")
    for peer in ("torch", "torch-weights"):
        a = runs.get(peer, {}).get("agreement")
        if a:
            print(f"ours vs {NAMES[peer]}: max |delta| / max |grad| {a['max_rel']:.2e} (median position "
                  f"{a['median_rel']:.1e}; {a['share_beyond_tol']:.2%} of positions beyond {a['tol']:g}; relative L2 "
                  f"{a['l2_rel']:.2e}; max |grad| {a['max_abs_grad']:.3g})")
    la, lb = results["load_average_before"], results["load_average_after"]
    print(f"load average (1 min) before {la[0]:.2f}, after {lb[0]:.2f}: a shared machine; compare the ratios")
    print()


if __name__ == "__main__":
    sys.exit(main())
