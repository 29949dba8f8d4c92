"""Fast (Winograd) against direct convolution: same model, same process, same run.

    python benchmarks/bench_fast_conv.py [--model PATH] [--precisions fp32,bf16] [--rounds 3]
                                         [--threads N] [--json out.json]

Default model: the tf-full fixture (Basenji2's real shapes, random weights), read in place
from ../shared. For each precision it loads the model twice, ``algorithm="direct"`` and
``algorithm="auto"`` (fast where it saves arithmetic), and in alternating rounds times

* whole forward passes (``predict``, batch 1, every track of the head): the median per
  variant and the ratio fast / direct;
* one profiled pass per variant (``Engine.profile``: wall seconds of every op inside the
  fused, tiled pass, and of the head), summed per layer group: the medians per group, with
  the group's nominal GFLOP (what a direct convolution computes: Basenji2 has 233.3) and the
  GFLOP its algorithm executes (the engine's count: transforms included, tile halos and
  partial tile blocks too).

Every time is taken twice: wall seconds, and the CPU seconds of all the process's threads
(OpenMP threads wait passively here, so a thread waiting at a barrier costs none). On an idle
machine CPU seconds / threads equals the wall time; on a shared one other processes steal
cores and stretch wall times unevenly, while CPU time still counts this process's work: its
ratios are the ones to quote there ("cpu"), next to the load average.

GFLOP/s "effective" = nominal GFLOP / time (what the fast path looks like against a direct
convolution), "executed" = executed GFLOP / time (how busy the FMA units are), with time =
CPU seconds / threads; % of peak is the executed rate over the machine's multiply-add peak,
the best of a register-only loop run at the start and at the end (``_engine.measure_peak``;
bf16 without avx512_bf16 is computed with fp32 multiply-adds, so its peak is fp32's).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before the engine's OpenMP starts

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import basenji2_fast as b2  # noqa: E402
from basenji2_fast.model import _engine  # noqa: E402
from basenji2_fast.spec import ConvOp, CropOp  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf-full" / "model_human.h5"
GROUPS = ("stem", "tower k=5", "dilated k=3", "1x1 in blocks", "final 1x1", "head", "crops")


def op_group(spec, i: int) -> str:
    """The layer group of op i of a Basenji-family spec."""
    op = spec.ops[i]
    if isinstance(op, CropOp):
        return "crops"
    if i == 0:
        return "stem"
    if op.k > 1 and op.residual is None and op.dilation == 1 and op.pool > 1:
        return "tower k=5"
    if op.k > 1:
        return "dilated k=3"
    last = max(j for j, o in enumerate(spec.ops) if isinstance(o, ConvOp))
    return "final 1x1" if i == last else "1x1 in blocks"


def peak(isa: str, precision: str, threads: int) -> float:
    """GFLOP/s of the register-only multiply-add loop per `threads` threads' CPU time (on a
    shared machine its wall time stretches like ours)."""
    p = "bf16" if precision.startswith("bf16") and isa == "avx512bf16" else "fp32"
    c = time.process_time()
    r = _engine.measure_peak(isa, p, threads, 0.5)
    return r["gflops"] * r["seconds"] * threads / (time.process_time() - c)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (each: one pass and one profile per variant)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    variants = {}
    for prec in args.precisions.split(","):
        for alg in ("direct", "auto"):
            log(f"loading {prec} {alg} ...")
            variants[(prec, alg)] = b2.load(args.model, threads=args.threads, precision=prec, algorithm=alg)
    first = next(iter(variants.values()))
    spec, isa = first.spec, first.info()["isa"]
    codes = np.random.default_rng(0).integers(0, 4, (1, first.seq_length)).astype(np.uint8)
    groups = [op_group(spec, i) for i in range(len(spec.ops))]
    peaks = {p: [peak(isa, p, args.threads)] for p in {k[0] for k in variants}}

    for m in variants.values():  # warm-up: buffers, page faults, head panels
        m.predict(codes)
    times = {k: [] for k in variants}  # (wall, cpu) per pass
    profiles = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            m = variants[k]
            t, c = time.perf_counter(), time.process_time()
            m.predict(codes)
            times[k].append((time.perf_counter() - t, time.process_time() - c))
            profiles[k].append(m._engine.profile(codes[0], [(0, [])]))
        log(f"round {r + 1}: " + ", ".join(f"{p} {a} {times[(p, a)][-1][0]:.3f}s" for p, a in variants))
    for p in peaks:
        peaks[p].append(peak(isa, p, args.threads))

    nops = len(spec.ops)
    result = {"model": args.model, "isa": isa, "threads": args.threads, "rounds": args.rounds,
              "load_average": list(os.getloadavg()),
              "peak_gflops": {p: max(v) for p, v in peaks.items()}, "precisions": {}}
    for prec in peaks:
        res = {"whole": {}, "groups": {}}
        pk = result["peak_gflops"][prec]
        for alg in ("direct", "auto"):
            m = variants[(prec, alg)]
            info = m.info()
            nominal = {g: 0.0 for g in GROUPS}
            executed = {g: 0.0 for g in GROUPS}
            length = spec.seq_length
            for i, op in enumerate(spec.ops):
                if isinstance(op, ConvOp):
                    nominal[groups[i]] += m._engine.op_flops(i, 0, length, True)
                    executed[groups[i]] += info["flops_per_sequence"]["ops"][i]
                    length //= op.pool
                else:
                    length -= op.left + op.right
            head = info["flops_per_sequence"]["heads"][m.head_names[0]]
            nominal["head"] += head
            executed["head"] += head
            prof = np.median(np.array(profiles[(prec, alg)]), axis=0)  # wall [n_ops + 1], cpu [n_ops + 1]
            wall = {g: 0.0 for g in GROUPS}
            cpu = {g: 0.0 for g in GROUPS}
            for i, g in enumerate(groups + ["head"]):
                wall[g] += float(prof[i])
                cpu[g] += float(prof[nops + 1 + i])
            w = statistics.median(t[0] for t in times[(prec, alg)])
            c = statistics.median(t[1] for t in times[(prec, alg)])
            nom, exe = sum(nominal.values()) / 1e9, sum(executed.values()) / 1e9
            res["whole"][alg] = {"wall_s": w, "cpu_s": c, "gflop_nominal": nom, "gflop_executed": exe,
                                 "effective_gflops": nom * args.threads / c, "pct_peak": 100 * exe * args.threads / c / pk}
            for g in GROUPS:
                cs = cpu[g]
                res["groups"].setdefault(g, {})[alg] = {
                    "wall_s": wall[g], "cpu_s": cs, "gflop_nominal": nominal[g] / 1e9,
                    "gflop_executed": executed[g] / 1e9,
                    "effective_gflops": nominal[g] / 1e9 * args.threads / cs if cs else None,
                    "executed_gflops": executed[g] / 1e9 * args.threads / cs if cs else None,
                    "pct_peak": 100 * executed[g] / 1e9 * args.threads / cs / pk if cs else None,
                    "algorithms": sorted({l["algorithm"] for l in info["layers"] if groups[l["op"]] == g}),
                }
        for key in ("wall_s", "cpu_s"):
            res["whole"][f"ratio_{key[:-2]}"] = res["whole"]["auto"][key] / res["whole"]["direct"][key]
            for g in GROUPS:
                d, f = res["groups"][g]["direct"][key], res["groups"][g]["auto"][key]
                res["groups"][g][f"ratio_{key[:-2]}"] = f / d if d else None
        result["precisions"][prec] = res

    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


def format_table(result: dict) -> str:
    lines = [f"{result['model']}: {result['isa']}, {result['threads']} threads, medians of {result['rounds']} "
             f"alternating rounds; load average {', '.join(f'{x:.1f}' for x in result['load_average'])}; "
             "measured peak " + ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in result["peak_gflops"].items()),
             "times: CPU seconds of all threads / threads (wall seconds in the JSON); GF/s from CPU time"]
    pct = lambda x: f"{x:5.0f}" if x is not None else "    -"  # noqa: E731
    for prec, res in result["precisions"].items():
        lines.append("")
        lines.append(f"{prec}: {'group':<14} {'fast alg':<14} {'GFLOP nom':>9} {'exec':>7} {'direct s':>9} "
                     f"{'%pk':>5} {'fast s':>8} {'eff GF/s':>9} {'%pk':>5} {'fast/dir':>8} {'wall f/d':>8}")
        t = result["threads"]
        for g, v in res["groups"].items():
            d, f = v["direct"], v["auto"]
            if not d["cpu_s"] and not f["cpu_s"]:
                continue
            lines.append(f"      {g:<14} {','.join(f['algorithms']) or '-':<14} {f['gflop_nominal']:9.2f} "
                         f"{f['gflop_executed']:7.2f} {d['cpu_s'] / t:9.3f} {pct(d['pct_peak'])} {f['cpu_s'] / t:8.3f} "
                         f"{f['effective_gflops'] or 0:9.1f} {pct(f['pct_peak'])} {v['ratio_cpu'] or 0:8.3f} "
                         f"{v['ratio_wall'] or 0:8.3f}")
        w = res["whole"]
        lines.append(f"      {'whole model':<14} {'':<14} {w['auto']['gflop_nominal']:9.2f} "
                     f"{w['auto']['gflop_executed']:7.2f} {w['direct']['cpu_s'] / t:9.3f} {w['direct']['pct_peak']:5.0f} "
                     f"{w['auto']['cpu_s'] / t:8.3f} {w['auto']['effective_gflops']:9.1f} {w['auto']['pct_peak']:5.0f} "
                     f"{w['ratio_cpu']:8.3f} {w['ratio_wall']:8.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
