"""bf16 accuracy on the full-size Basenji2 fixture (tf-full: random weights, real shapes).

For the fixture's sequences (inputs.npy [B, 131072, 4]) it reports, as JSON:

* per-track Pearson r of precision="bf16" against fp32 over every bin of every sequence
  (median and minimum over the 5,313 tracks);
* max |error| against the float64 reference (basenji2_fast.reference, cached with
  --ref-cache because it takes about a minute per sequence), for fp32, bf16, and
  basenji2-pytorch under ``torch.autocast("cpu", torch.bfloat16)`` running the same
  weights (the folded kernels written into its state dict, its GELU set to the model's
  sigmoid GELU) -- the bound bf16 must meet;
* the same for variants of the bf16 plan (``--variants``): the last conv in bf16 too, the
  head in fp32 too, to show what keeping a sensitive layer in fp32 buys;
* precision="bf16-fast" (Winograd with bf16 products), and with ``--fast-variants`` other
  choices of its bf16 tiles (``FAST_TILES["bf16"]``), the measurements behind the choice;
* every Pearson r also over the tracks whose fp32 values vary (std >= --std-min, 0.01: the
  bound bf16-fast is held to; constant tracks make r noise).

    python benchmarks/bf16_accuracy.py --ref-cache /tmp/ref64 [--peer] [--variants] [--fast-variants]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf-full"


def pearson_per_track(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b: [B, bins, tracks] -> r per track over all B x bins values, float64 [tracks]."""
    x = a.reshape(-1, a.shape[-1]).astype(np.float64)
    y = b.reshape(-1, b.shape[-1]).astype(np.float64)
    x -= x.mean(0)
    y -= y.mean(0)
    return (x * y).sum(0) / np.sqrt((x * x).sum(0) * (y * y).sum(0))


def float64_reference(spec, x: np.ndarray, cache: Path | None) -> np.ndarray:
    """The float64 reference predictions [B, bins, tracks], per sequence, cached as .npy."""
    from basenji2_fast import reference as R

    outs = []
    for b in range(x.shape[0]):
        f = cache / f"ref64_{b}.npy" if cache else None
        if f is not None and f.exists():
            outs.append(np.load(f))
            continue
        y = R.predict(spec, x[b:b + 1].astype(np.float64))[0]
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, y)
        outs.append(y)
    return np.stack(outs)


def torch_peer_autocast(spec, x: np.ndarray, autocast: bool) -> np.ndarray:
    """basenji2-pytorch on ``spec``'s weights: each folded conv kernel into its Conv1d, the
    folded bias into an identity BatchNorm (weight 1, mean 0, var 1 - eps), the head into
    its Linear; GELU modules replaced by the sigmoid GELU the Keras model uses.
    x: [B, L, 4] -> [B, bins, tracks] float32."""
    import torch
    from basenji2_pytorch import Basenji2, basenji2_params

    from basenji2_fast.formats.params import ConvPlan, expand_params
    from basenji2_fast.formats.published import BASENJI2_PARAMS
    from basenji2_fast.formats.torch_pth import TORCH_BN_EPSILON
    from basenji2_fast.spec import ConvOp

    import copy

    model = Basenji2(copy.deepcopy(basenji2_params["model"])).eval()
    plan = expand_params(BASENJI2_PARAMS["model"])
    sd = model.state_dict()
    convs = [p for p in plan.ops if isinstance(p, ConvPlan)]
    ops = [op for op in spec.ops if isinstance(op, ConvOp)]
    assert len(convs) == len(ops)
    for p, op in zip(convs, ops):
        conv, bn = f"{p.torch_prefix}.1", f"{p.torch_prefix}.2"
        sd[f"{conv}.weight"] = torch.from_numpy(np.ascontiguousarray(np.asarray(op.kernel, np.float32).transpose(2, 1, 0)))
        sd[f"{bn}.weight"] = torch.ones(op.c_out)
        sd[f"{bn}.bias"] = torch.from_numpy(np.asarray(op.bias, np.float32))
        sd[f"{bn}.running_mean"] = torch.zeros(op.c_out)
        sd[f"{bn}.running_var"] = torch.full((op.c_out,), 1.0 - TORCH_BN_EPSILON)
    head = next(iter(spec.heads.values()))
    sd["model.head.final.block.1.weight"] = torch.from_numpy(np.ascontiguousarray(np.asarray(head.weight, np.float32).T))
    sd["model.head.final.block.1.bias"] = torch.from_numpy(np.asarray(head.bias, np.float32))
    model.load_state_dict(sd)

    class SigmoidGelu(torch.nn.Module):
        def forward(self, t):
            return t * torch.sigmoid(1.702 * t)

    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if type(child).__name__ == "GELU":
                setattr(mod, child_name, SigmoidGelu())
    outs = []
    with torch.inference_mode():
        for b in range(x.shape[0]):
            t = torch.from_numpy(np.ascontiguousarray(x[b:b + 1].transpose(0, 2, 1)))
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = model.model.head(model.model.trunk(t))
            else:
                y = model.model.head(model.model.trunk(t))
            outs.append(y.float().numpy()[0])
    return np.stack(outs)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(FIXTURE / "model_human.h5"))
    p.add_argument("--inputs", default=str(FIXTURE / "inputs.npy"))
    p.add_argument("--ref-cache", default=None, help="folder for the float64 reference outputs (reused)")
    p.add_argument("--peer", action="store_true", help="also basenji2-pytorch under bf16 autocast")
    p.add_argument("--peer-only", action="store_true", help="only basenji2-pytorch (with fp32 for the Pearson r)")
    p.add_argument("--variants", action="store_true", help="also bf16 with the head / final conv in fp32")
    p.add_argument("--fast-variants", action="store_true", help="also bf16-fast with other bf16 tiles")
    p.add_argument("--std-min", type=float, default=0.01, help="tracks that vary: fp32 std at least this")
    p.add_argument("--no-ref", action="store_true", help="skip the float64 reference (minutes per sequence)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON here too")
    args = p.parse_args(argv)

    import basenji2_fast.model as M
    from basenji2_fast.formats import load_spec

    spec = load_spec(args.model)
    x = np.load(args.inputs)
    ref = None if args.no_ref else float64_reference(spec, x, Path(args.ref_cache) if args.ref_cache else None)
    result = {"model": args.model, "sequences": int(x.shape[0])}
    if ref is not None:
        result["max_abs_output"] = float(np.abs(ref).max())

    import sys

    def note(name):  # progress on stderr: the float64 reference and the peer take minutes
        print(f"{name}: {json.dumps(result[name])}", file=sys.stderr, flush=True)

    def run(precision, plan=None, bf16_tiles=None):
        saved, saved_tiles = M.bf16_plan, dict(M.FAST_TILES["bf16"])
        if plan is not None:
            M.bf16_plan = plan
        if bf16_tiles is not None:
            M.FAST_TILES["bf16"].clear()
            M.FAST_TILES["bf16"].update(bf16_tiles)
        try:
            m = M.Model(spec, precision=precision, threads=args.threads)
            t = time.perf_counter()
            y = m.predict(x, batch_size=1)
            layers = sorted({f"{l['algorithm']} {l['precision']}" for l in m.info()["layers"]})
            return y, m.info()["isa"], (time.perf_counter() - t) / x.shape[0], layers
        finally:
            M.bf16_plan = saved
            M.FAST_TILES["bf16"].clear()
            M.FAST_TILES["bf16"].update(saved_tiles)

    fp32, isa, _, _ = run("fp32")
    result["isa"] = isa
    flat = fp32.reshape(-1, fp32.shape[-1]).astype(np.float64)
    varying = flat.std(0) >= args.std_min
    result["tracks_varying"] = {"std_min": args.std_min, "count": int(varying.sum()), "of": int(varying.size)}

    def scores(y):
        r = pearson_per_track(y, fp32)
        out = {"pearson_vs_fp32_median": float(np.median(r)), "pearson_vs_fp32_min": float(r.min()),
               "varying_pearson_vs_fp32_median": float(np.median(r[varying])),
               "varying_pearson_vs_fp32_min": float(r[varying].min()),
               "max_abs_err_vs_fp32": float(np.abs(y - fp32).max())}
        if ref is not None:
            out["max_abs_err_vs_float64"] = float(np.abs(y - ref).max())
        return out

    if ref is not None:
        result["fp32"] = {"max_abs_err_vs_float64": float(np.abs(fp32 - ref).max())}
        note("fp32")
    # name: (precision, bf16 plan or None, bf16 tiles or None)
    variants = {} if args.peer_only else {"bf16": ("bf16", None, None), "bf16-fast": ("bf16-fast", None, None)}
    if args.variants:
        final = max(i for i, op in enumerate(spec.ops) if isinstance(op, M.ConvOp))
        default = M.bf16_plan
        variants["bf16, final conv bf16 too"] = ("bf16", lambda s: (default(s)[0] | {final}, True), None)
        variants["bf16, head fp32 too"] = ("bf16", lambda s: (default(s)[0], False), None)
    if args.fast_variants:
        for tiles in ({5: (2,), 3: (2,)}, {5: (4,), 3: (2,)}, {5: (2,)}, {3: (2,)}, {5: (4,), 3: (4,)},
                      {5: (2, 4), 3: (2, 4)}):
            name = "bf16-fast, bf16 tiles " + " + ".join(f"F({','.join(map(str, v))},{k})" for k, v in tiles.items())
            variants[name] = ("bf16-fast", None, tiles)
    for name, (prec, plan, tiles) in variants.items():
        y, _, secs, layers = run(prec, plan, tiles)
        result[name] = dict(scores(y), layers=layers, seconds_per_sequence=secs)
        note(name)
    if args.peer or args.peer_only:
        for name, ac in (("basenji2-pytorch fp32", False), ("basenji2-pytorch bf16 autocast", True)):
            y = torch_peer_autocast(spec, x, ac)
            result[name] = scores(y)
            note(name)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
