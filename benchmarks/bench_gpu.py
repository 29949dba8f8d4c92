#!/usr/bin/env python
"""Sequences per second on one GPU: basenji2_fast (CUDA, bf16 tensor cores) vs basenji2-pytorch
(fp32, and bf16 autocast) on the same card, full Basenji2 (131,072 bp -> 896 x 5,313).

Both engines run the same weights and maths: basenji2-pytorch's full model with every
parameter and BatchNorm statistic random (basenji2_fast.peers.random_basenji2_pytorch), saved
to a temporary .pth that basenji2_fast loads with its exact-erf GELU (as basenji2-pytorch).
Inputs: the same seeded random sequences; torch gets the float one-hot [B, 4, L] on the GPU,
ours the uint8 codes [B, L].

Measured per engine and batch size (after warm-up passes), as the median of --repeats timed
runs of enough passes to fill --seconds each:

* ``ours-device``: codes already on the GPU, predictions written to a GPU buffer
  (Model's engine.predict_device; the same as cupy in / out="cupy"): compute only, like torch.
* ``ours-graph``: the same with the host path's CUDA Graph replay (codes copied in and the
  outputs copied out to numpy each pass: the end-to-end cost a numpy user sees).
* ``ours-numpy``: numpy in, numpy out without graphs.
* ``torch-fp32`` / ``torch-bf16``: basenji2-pytorch under ``torch.inference_mode()``, output
  left on the GPU; bf16 = ``torch.autocast("cuda", dtype=torch.bfloat16)``.

Agreement on the first batch (reported, and the exit status is 1 when it fails): per-track
Pearson r of ours and torch-bf16 against torch-fp32, and the normalised squared error of
each; ours must reach r >= 0.999 and, as the house rule for reduced precision, an error at
most twice torch-bf16's (plus a floor of 1e-6).

    python benchmarks/bench_gpu.py                         # batch 1, 8, 32
    python benchmarks/bench_gpu.py --batch 32 --repeats 3 --json benchmarks/results/gpu.json
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEQ_LENGTH = 131072


def _import_b2():
    try:
        import basenji2_fast as b2
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO))
        import basenji2_fast as b2
    return b2


def timed(fn, sync, seconds: float, repeats: int) -> list:
    """Seconds per pass: `repeats` runs of n passes, n chosen to fill `seconds`."""
    fn(), sync()  # one more warm-up
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(seconds / one))
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        out.append((time.perf_counter() - t0) / n)
    return out


def per_track_r(got, want) -> np.ndarray:
    g = np.asarray(got, np.float64).reshape(-1, got.shape[-1])
    w = np.asarray(want, np.float64).reshape(-1, want.shape[-1])
    g, w = g - g.mean(0), w - w.mean(0)
    return (g * w).sum(0) / np.sqrt((g * g).sum(0) * (w * w).sum(0) + 1e-300)


def nse(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.sum((got - want) ** 2) / np.sum(want ** 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="target seconds per timed run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default="ours-device,ours-graph,ours-numpy,torch-fp32,torch-bf16")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    import torch
    from basenji2_pytorch import Basenji2, basenji2_params

    b2 = _import_b2()
    from basenji2_fast.peers import random_basenji2_pytorch

    ok, why = b2.cuda_backend.usable()
    if not ok or not torch.cuda.is_available():
        print(f"bench_gpu: needs a CUDA device for both engines ({why or 'torch sees no GPU'})", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(0)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"card: {card}  ({b2.cuda_backend._module().device_name(0)})")
    print(f"date: {date}")
    print(f"basenji2_fast {b2.__version__} (CUDA build {b2.build_info()['cuda']}), torch {torch.__version__}, "
          f"python {platform.python_version()}")

    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "basenji2_random.pth")
        tmodel = random_basenji2_pytorch(args.seed)
        torch.save(tmodel.state_dict(), pth)
        ours = b2.load(pth, device="cuda", gelu="erf")
        ours_graph = b2.load(pth, device="cuda", gelu="erf", graphs=True)
    tmodel = tmodel.cuda().eval()
    assert isinstance(tmodel, Basenji2) and basenji2_params  # the peer, as published

    rng = np.random.default_rng(args.seed)
    results = {"card": card, "date": date, "torch": torch.__version__, "basenji2_fast": b2.__version__,
               "cuda_build": b2.build_info()["cuda"], "seq_per_s": {}, "agreement": {}}
    status = 0
    eye = torch.cat([torch.eye(4), torch.zeros(2, 4)]).cuda()
    for B in batches:
        codes = rng.integers(0, 4, size=(B, SEQ_LENGTH), dtype=np.uint8)
        codes_dev = torch.from_numpy(codes).cuda()
        x_t = eye[codes_dev.long()].transpose(1, 2).contiguous()  # [B, 4, L]
        out_dev = torch.empty((B, ours.n_bins, 5313), dtype=torch.float32, device="cuda")
        req = [ours._request(ours.head_names[0], None)]
        sync = torch.cuda.synchronize

        def run_torch(bf16: bool):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                return tmodel(x_t)

        runs = {
            "ours-device": lambda: ours._engine.predict_device(codes_dev, req, False, [out_dev]),
            "ours-graph": lambda: ours_graph.predict(codes, batch_size=B),
            "ours-numpy": lambda: ours.predict(codes, batch_size=B),
            "torch-fp32": lambda: run_torch(False),
            "torch-bf16": lambda: run_torch(True),
        }
        if B == batches[0]:  # agreement, once
            ref = run_torch(False).float().cpu().numpy()
            tb = run_torch(True).float().cpu().numpy()
            ours.predict(codes, batch_size=B)
            ob = ours.predict(codes, batch_size=B)
            agree = {"ours_r_min": float(per_track_r(ob, ref).min()), "ours_nse": nse(ob, ref),
                     "torch_bf16_r_min": float(per_track_r(tb, ref).min()), "torch_bf16_nse": nse(tb, ref)}
            results["agreement"] = agree
            print(f"agreement vs torch fp32: ours bf16 r_min {agree['ours_r_min']:.5f} NSE {agree['ours_nse']:.2e}; "
                  f"torch bf16 r_min {agree['torch_bf16_r_min']:.5f} NSE {agree['torch_bf16_nse']:.2e}")
            if agree["ours_r_min"] < 0.999 or agree["ours_nse"] > 2 * agree["torch_bf16_nse"] + 1e-6:
                print("bench_gpu: ours disagrees with torch beyond the tolerance", file=sys.stderr)
                status = 1
        row = {}
        for name in engines:
            secs = timed(runs[name], sync, args.seconds, args.repeats)
            row[name] = B / statistics.median(secs)
        results["seq_per_s"][B] = row
        speedup = row.get("ours-device", float("nan")) / row.get("torch-bf16", float("nan"))
        print(f"batch {B:3d}: " + "  ".join(f"{k} {v:8.1f} seq/s" for k, v in row.items()) +
              f"  | ours-device / torch-bf16 = {speedup:.2f}x")
        del x_t, out_dev, codes_dev
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
