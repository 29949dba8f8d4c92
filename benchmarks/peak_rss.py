"""Peak resident memory of a process that loads a converted model and predicts one sequence.

    python benchmarks/peak_rss.py weights/basenji2.safetensors [--precision bf16] [--algorithm direct] [--threads 2]

A fresh child process imports basenji2_fast, loads MODEL and predicts one random sequence
of the model's length (all of its first head's tracks); its peak RSS is read by
``/usr/bin/time -v`` when present (else from ``getrusage(RUSAGE_CHILDREN)``, the same
kernel counter). The child also reports its RSS after the import, after the load and after
the prediction, and the bytes of packed weights, as one JSON line.

``--bare-import`` imports only the modules that load + predict need (``basenji2_fast.model``
and what it imports), without the package ``__init__`` that imports every workflow module;
it shows the floor that a lazy ``import basenji2_fast`` reaches.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys


def _rss_mb() -> float:
    """Current resident set of this process, MB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """The measured process: import, load, predict one sequence."""
    steps = {"start": _rss_mb()}
    if args.bare_import:
        import importlib.util
        import types

        where = importlib.util.find_spec("basenji2_fast").submodule_search_locations  # does not run __init__
        pkg = types.ModuleType("basenji2_fast")
        pkg.__path__ = list(where)
        sys.modules["basenji2_fast"] = pkg
        from basenji2_fast.model import load
    else:
        from basenji2_fast import load
    import numpy as np

    steps["import"] = _rss_mb()
    model = load(args.model, precision=args.precision, threads=args.threads, algorithm=args.algorithm)
    steps["load"] = _rss_mb()
    steps["load_peak"] = _peak_mb()
    codes = np.random.default_rng(0).integers(0, 4, (1, model.seq_length)).astype(np.uint8)
    pred = model.predict(codes)
    steps["predict"] = _rss_mb()
    info = model.info()
    print(json.dumps({"child": {k: round(v, 1) for k, v in steps.items()}, "peak_mb_self": round(_peak_mb(), 1),
                      "weight_mb": info["weight_mb"], "isa": info["isa"], "precision": info["precision"],
                      "algorithm": info["algorithm"],
                      "stem_tower_tiles": info["stem_tower_tiles"], "output_shape": list(pred.shape)}))


def measure(model: str, precision: str = "fp32", threads: int | None = None, bare_import: bool = False,
            algorithm: str = "auto") -> dict:
    """Run the child once; returns its report with ``peak_rss_mb`` (what /usr/bin/time -v says)."""
    cmd = [sys.executable, os.path.abspath(__file__), model, "--child", "--precision", precision,
           "--algorithm", algorithm]
    if threads:
        cmd += ["--threads", str(threads)]
    if bare_import:
        cmd += ["--bare-import"]
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if timer:
        cmd = [timer, "-v"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"the measured process failed: {r.stderr.strip().splitlines()[-1:]}")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    report["peak_rss_mb"] = round(int(m.group(1)) / 1024, 1) if m else round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    report["measured_by"] = "/usr/bin/time -v" if m else "getrusage(RUSAGE_CHILDREN)"
    report.update(model=model, bare_import=bare_import)
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a converted .safetensors model (basenji2-fast convert)")
    # no choices: importing basenji2_fast.spec here would defeat --bare-import (load checks them)
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or bf16-fast")
    p.add_argument("--algorithm", default="auto", help="auto, fast or direct")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bare-import", action="store_true", help="import only what load + predict need")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return
    print(json.dumps(measure(args.model, args.precision, args.threads, args.bare_import, args.algorithm), indent=1))


if __name__ == "__main__":
    main()
