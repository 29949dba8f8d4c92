#!/usr/bin/env python
"""Same-run speed, memory and agreement: basenji2_fast vs basenji2-pytorch, full Basenji2.

Both engines run the *same* weights and the *same* maths:

* basenji2-pytorch (PyPI) builds the full Basenji2 (131,072 bp -> 896 x 5,313) from its
  own ``basenji2_params["model"]``; every conv / linear weight and every BatchNorm
  parameter *and running statistic* is set from a seeded generator (so BN folding is
  exercised, not an identity), eval mode.  Its state dict goes to a temporary ``.pth``.
* basenji2_fast loads that file with ``b2.load(pth, gelu="erf")`` (basenji2-pytorch uses
  the exact erf GELU, not the published sigmoid one).

Each engine runs in its own long-lived subprocess, so each one's peak RSS is its own
(``VmHWM`` of that child, model construction included; equal to its ``ru_maxrss`` because
the parent never imports torch and stays small).  Engine "ours-st" is our engine again
on the same weights converted to its ``.safetensors``: the same maths without torch in
the process (reading a ``.pth`` needs ``torch.load``), i.e. the deployment footprint.
All engines see the same seeded random sequences: torch the float one-hot ``[B, 4, L]``,
ours the uint8 codes ``[B, L]``.  Each engine does one warm-up pass, then ``--repeats``
timed passes, interleaved across engines (round r runs one pass of each, the order
rotating), all at ``--threads`` threads (``torch.set_num_threads`` / ``threads=``;
``OMP_NUM_THREADS`` set to the same value in every child).  Reported: median and min
seconds per sequence, the speed-up (torch / ours, from medians), peak RSS, max |delta|
between each engine's output and torch's on the same input (must be <= 1e-3; exit status
1 otherwise), machine info, the engine binary's sha256 and the date.

    python benchmarks/bench_vs_pytorch.py                      # batch 1, 5 repeats, all CPUs
    python benchmarks/bench_vs_pytorch.py --batch 1,4 --repeats 3 --json results.json
"""
from __future__ import annotations

import argparse
import copy
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

SEQ_LENGTH = 131072
#: torch: basenji2-pytorch; ours: basenji2_fast reading the .pth (b2.load(pth, gelu="erf"));
#: ours-st: basenji2_fast reading the same weights converted to its .safetensors (no torch).
ENGINES = ("torch", "ours", "ours-st")
IDLE_S = 0.3  # pause before each pass: libgomp threads of the previous engine spin briefly
NAMES = {"torch": "basenji2-pytorch", "ours": "basenji2_fast .pth", "ours-st": "basenji2_fast .st"}
TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# helpers shared by parent and children: the package's benchmark module (also behind
# `basenji2-fast bench`)

try:
    import basenji2_fast as b2
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    import basenji2_fast as b2
from basenji2_fast.bench import (Worker as _Worker, build_provenance, codes_to_onehot_ncl, cpu_info,  # noqa: E402
                                 default_threads, dist_version, engine_binary, peak_rss_mb, random_codes, serve)


def random_codes_b(batch: int, seed: int) -> np.ndarray:
    """uint8 [batch, L] base codes 0..3 (A, C, G, T)."""
    return random_codes(batch, SEQ_LENGTH, seed)


# ---------------------------------------------------------------------------------------------
# children: the weights, then one long-lived worker per engine and batch size
#
# A worker loads its engine and input, says "ready", then runs one pass per "run" line on
# its stdin and answers with the seconds it took; "finish" saves the last output and
# reports peak RSS.  The parent interleaves the engines' passes, so load from other
# processes on the machine hits both engines alike instead of whichever ran second.

def _serve(run, save, report: dict) -> None:
    """Answer "run" with the seconds one pass took; "finish" saves the last output."""
    last = {}

    def timed(_arg):
        t0 = time.perf_counter()
        last["out"] = run()
        return {"t": time.perf_counter() - t0}

    serve({"run": timed, "finish": lambda _arg: save(last.get("out"))}, report)


def child_prep(args) -> dict:
    """Build the random torch model, save its state dict, convert it for ours-st."""
    import torch

    from basenji2_fast.bench import _prepare_weights

    _prepare_weights(args.seed, Path(args.pth), Path(args.codes))  # --_codes carries the .safetensors path
    return {"torch_version": torch.__version__}


def child_torch(args) -> None:
    import torch
    from basenji2_pytorch import Basenji2, basenji2_params

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = Basenji2(copy.deepcopy(basenji2_params["model"]))
    model.load_state_dict(torch.load(args.pth, map_location="cpu", weights_only=True))
    model.eval()
    load_s = time.perf_counter() - t0
    x = torch.from_numpy(codes_to_onehot_ncl(np.load(args.codes)))

    def run():
        with torch.inference_mode():
            return model(x)

    _serve(run, lambda out: np.save(args.out, out.numpy()),
           {"engine": "basenji2-pytorch", "load_s": load_s, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()})


def child_ours(args) -> None:
    t0 = time.perf_counter()
    # A .pth goes through torch.load (torch is imported: ~200 MB of RSS); the converted
    # .safetensors (engine "ours-st") is read without torch, as a deployment would.
    gelu = "erf" if args.pth.endswith(".pth") else None
    model = b2.load(args.pth, gelu=gelu, threads=args.threads, isa=args.isa or None)
    load_s = time.perf_counter() - t0
    binary = engine_binary()  # hashed right after the import: the binary this worker runs
    codes = np.load(args.codes)
    batch = codes.shape[0]
    info = model.info()

    def run():
        return model.predict(codes, batch_size=batch)

    _serve(run, lambda out: np.save(args.out, out),
           {"engine": "basenji2_fast", "weights": Path(args.pth).suffix, "load_s": load_s, "gelu": info["gelu"],
            "isa": info["isa"], "version": info["version"], "threads": info["threads"], **binary})


# ---------------------------------------------------------------------------------------------
# parent

def _child_cmd(engine: str, pth: Path, codes: Path, out: Path, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.isa:
        env["BASENJI2_FAST_ISA"] = args.isa
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", engine, "--_pth", str(pth),
           "--_codes", str(codes), "--_out", str(out), "--_report", str(out.with_suffix(".json")),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.isa:
        cmd += ["--isa", args.isa]
    return cmd, env


class Worker(_Worker):
    """One engine in its own process (so its peak RSS is its own)."""

    def __init__(self, engine: str, pth: Path, codes: Path, out: Path, args):
        cmd, env = _child_cmd(engine, pth, codes, out, args)
        self.engine = engine
        super().__init__(engine, cmd, env)

    def run(self) -> float:
        return self.ask("run")["t"]


def time_engines(engines, weights, codes_path: Path, tmp: Path, args, batch: int) -> dict:
    """Start one worker per engine (one at a time), warm each up once, then ``repeats``
    rounds of one pass per engine, the order rotating each round."""
    workers = {}
    try:
        for eng in engines:
            print(f"batch {batch}: loading {NAMES[eng]} ... ", end="", flush=True)
            workers[eng] = Worker(eng, weights[eng], codes_path, tmp / f"{eng}_b{batch}.npy", args)
            print(f"{workers[eng].report['load_s']:.1f} s; warm-up pass ... ", end="", flush=True)
            time.sleep(IDLE_S)
            print(f"{workers[eng].run():.2f} s", flush=True)
        times = {eng: [] for eng in engines}
        for r in range(args.repeats):
            order = engines[r % len(engines):] + engines[:r % len(engines)]
            for eng in order:
                time.sleep(IDLE_S)  # let the other engines' OpenMP threads stop spinning
                times[eng].append(workers[eng].run())
            print(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{NAMES[e]} {times[e][-1]:.2f} s" for e in engines),
                  flush=True)
        return {eng: dict(workers[eng].finish(), times_s=times[eng]) for eng in engines}
    finally:
        for w in workers.values():
            w.kill()


def summarise(res: dict, batch: int) -> dict:
    per_seq = [t / batch for t in res["times_s"]]
    res["median_s_per_seq"] = statistics.median(per_seq)
    res["min_s_per_seq"] = min(per_seq)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="threads for both engines (default: all CPUs this process may use)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed passes per engine after one warm-up, interleaved across engines (default 5)")
    ap.add_argument("--batch", default="1", help="batch size(s), comma-separated (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights and sequences")
    ap.add_argument("--isa", default="", help="force our kernel set (avx512, avx2, generic)")
    ap.add_argument("--engines", default="torch,ours,ours-st",
                    help="which engines to run (default torch,ours,ours-st; ours-st = our engine on the "
                         "weights converted to .safetensors, peak RSS without torch imported)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    # internal: the per-engine child processes
    ap.add_argument("--_child", choices=ENGINES + ("prep",), help=argparse.SUPPRESS)
    ap.add_argument("--_pth", dest="pth", help=argparse.SUPPRESS)
    ap.add_argument("--_codes", dest="codes", help=argparse.SUPPRESS)
    ap.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    ap.add_argument("--_report", dest="report", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child == "prep":
        Path(args.report).write_text(json.dumps(child_prep(args)))
        return 0
    if args._child:
        (child_torch if args._child == "torch" else child_ours)(args)
        return 0

    batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.threads < 1 or args.repeats < 1 or not batches or min(batches) < 1:
        ap.error("--threads, --repeats and --batch must be >= 1")
    if not set(engines) <= set(ENGINES) or not engines:
        ap.error("--engines: a comma-separated subset of " + ",".join(ENGINES))

    # The parent stays small (no torch): a child's ru_maxrss starts from its parent's RSS.
    results = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_info()["model"], "logical_cpus": os.cpu_count(), "threads": args.threads,
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": dist_version("torch"), "basenji2_pytorch": dist_version("basenji2-pytorch"),
                     "basenji2_fast": b2.__version__, "numpy": np.__version__},
        "settings": {"repeats": args.repeats, "warmup": 1, "seed": args.seed, "seq_length": SEQ_LENGTH,
                     "gelu": "erf", "tolerance": TOLERANCE},
        "build": build_provenance(),
        "load_average_before": list(os.getloadavg()),
        "runs": [],
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="b2bench-") as tmp:
        tmp = Path(tmp)
        pth = tmp / "basenji2_random.pth"
        st = tmp / "basenji2_random.safetensors"
        t0 = time.perf_counter()
        cmd, env = _child_cmd("prep", pth, st, tmp / "prep.npy", args)
        subprocess.run(cmd, env=env, check=True)
        print(f"random full-size Basenji2 -> {pth.name} ({pth.stat().st_size / 2**20:.0f} MiB) and {st.name} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        weights = {"torch": pth, "ours": pth, "ours-st": st}
        for batch in batches:
            codes_path = tmp / f"codes_b{batch}.npy"
            np.save(codes_path, random_codes_b(batch, args.seed + 1000 + batch))
            run = {"batch": batch}
            for eng, res in time_engines(engines, weights, codes_path, tmp, args, batch).items():
                run[eng] = summarise(res, batch)
                if eng != "torch":
                    results["machine"]["isa"] = res["isa"]
            if "torch" in engines and len(engines) > 1:
                # memory-mapped and one sequence at a time: the parent stays small
                a = np.load(tmp / f"torch_b{batch}.npy", mmap_mode="r")
                run["max_abs_output"] = max(float(np.abs(s).max()) for s in a)
                for eng in [e for e in engines if e != "torch"]:
                    b = np.load(tmp / f"{eng}_b{batch}.npy", mmap_mode="r")
                    if a.shape != b.shape:
                        raise SystemExit(f"output shapes differ: torch {a.shape} vs {eng} {b.shape}")
                    run["output_shape"] = list(a.shape)
                    r = run[eng]
                    r["max_abs_diff"] = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))
                    r["speedup_median"] = run["torch"]["median_s_per_seq"] / r["median_s_per_seq"]
                    r["speedup_min"] = run["torch"]["min_s_per_seq"] / r["min_s_per_seq"]
                    r["rss_ratio"] = run["torch"]["peak_rss_mb"] / r["peak_rss_mb"]
                    r["agree"] = r["max_abs_diff"] <= TOLERANCE
                    ok &= r["agree"]
                    del b
                del a
            results["runs"].append(run)
    results["load_average_after"] = list(os.getloadavg())
    shas = {run[e].get("engine_so_sha256") for run in results["runs"] for e in engines if e != "torch"}
    shas.add(results["build"].get("engine_so_sha256"))
    if len(shas) > 1:
        results["build"]["warning"] = "the engine binary changed during the run: " + ", ".join(
            sorted(str(x)[:12] for x in shas))
        print("WARNING: " + results["build"]["warning"], file=sys.stderr)
    results["parent_peak_rss_mb"] = peak_rss_mb()

    print_table(results, engines)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not ok:
        print(f"FAIL: max |delta| above {TOLERANCE}", file=sys.stderr)
        return 1
    return 0


def print_table(results: dict, engines) -> None:
    m = results["machine"]
    print()
    print(f"{results['date']}  CPU: {m['cpu']}  threads: {m['threads']}  our ISA: {m.get('isa', '-')}  "
          f"torch {results['versions']['torch']}  repeats: {results['settings']['repeats']} (+1 warm-up)")
    hdr = (f"{'batch':>5}  {'engine':<19} {'median s/seq':>12} {'min s/seq':>10} {'speed-up':>9} {'load s':>7} "
           f"{'peak RSS MB':>12} {'max |delta|':>12}")
    print(hdr)
    print("-" * len(hdr))
    for run in results["runs"]:
        for eng in engines:
            r = run[eng]
            su = f"{r['speedup_median']:.2f}x" if "speedup_median" in r else "-"
            d = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-"
            print(f"{run['batch']:>5}  {NAMES[eng]:<19} {r['median_s_per_seq']:>12.3f} {r['min_s_per_seq']:>10.3f} "
                  f"{su:>9} {r['load_s']:>7.2f} {r['peak_rss_mb']:>12.0f} {d:>12}")
    if any("max_abs_output" in run for run in results["runs"]):
        print(f"speed-up = torch median / that engine's median; max |delta| vs torch on the same input "
              f"(tolerance {TOLERANCE:g}; torch outputs up to "
              f"{max(run.get('max_abs_output', 0) for run in results['runs']):.1f})")
    bld = results.get("build", {})
    if bld.get("engine_so_sha256"):
        print(f"engine {bld['engine_so']} sha256 {bld['engine_so_sha256'][:12]} (built {bld.get('engine_so_mtime')}), "
              f"git {bld.get('git_commit', '?')[:10]}{' + local changes' if bld.get('git_dirty') else ''}")
    if bld.get("warning"):
        print("WARNING: " + bld["warning"])
    la, lb = results.get("load_average_before"), results.get("load_average_after")
    if la and lb:
        print(f"load average (1 min) before {la[0]:.2f}, after {lb[0]:.2f}")
    print()


if __name__ == "__main__":
    sys.exit(main())
