"""pytest-benchmark timings of one fused conv layer of each Basenji2 size class, on our engine.

    python -m pytest benchmarks/test_bench_kernels.py --benchmark-only
    python -m pytest benchmarks/test_bench_kernels.py --benchmark-json kernels.json

Timing only: nothing passes or fails on speed (each test just checks the output is finite).
The engine's trunk always starts from a 4-channel one-hot, so every layer except the stem
is preceded by a 1x1 "prelude" conv 4 -> c_in (< 3% of the layer's FLOPs, but at long
lengths a noticeable share of the time: it writes L x c_in floats), and every timing
includes copying the trunk output back to NumPy (``Model.embed``).  The ``prelude_*``
cases time those overheads alone, for subtraction.  ``gflop_per_s`` in extra_info counts
the layer under test plus the prelude.  Weights are random
(seeded), GELU sigmoid, all threads.  Every layer runs on every kernel set this build holds
and this CPU runs (one benchmark group per layer, so the relative columns compare kernel
sets), and in every precision the build accepts (others are skipped with the reason).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import basenji2_fast  # noqa: F401  (importable as installed?)
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from basenji2_fast.bench import PRECISIONS, available_isas
from basenji2_fast.model import Model
from basenji2_fast.spec import ConvOp, ModelSpec

pytest.importorskip("pytest_benchmark")

# name: (length at the layer's input, c_in, c_out, k, dilation, pool, residual pair)
LAYERS = {
    # stem: GELU(one-hot) -> conv k15 4->288 -> maxpool 2, full 131,072 bp
    "stem_k15_4x288_L131072": (131072, 4, 288, 15, 1, 2, False),
    # first and last conv tower layers (k5 + pool 2), at their real lengths
    "tower_k5_288x339_L65536": (65536, 288, 339, 5, 1, 2, False),
    "tower_k5_652x768_L2048": (2048, 652, 768, 5, 1, 2, False),
    # one dilated residual block: k3 768->384 (dilation 9) then k1 384->768 + residual
    "dilated_k3d9_768x384x768_L1024": (1024, 768, 384, 3, 9, 1, True),
    # final 1x1 conv after the crop
    "final_k1_768x1536_L896": (896, 768, 1536, 1, 1, 1, False),
    # baselines: the prelude alone (1x1 conv from the one-hot, output returned to NumPy),
    # to subtract from the layers above that run after it
    "prelude_k1_4x288_L65536": (65536, 4, 288, 1, 1, 1, False),
    "prelude_k1_4x652_L2048": (2048, 4, 652, 1, 1, 1, False),
    "prelude_k1_4x768_L1024": (1024, 4, 768, 1, 1, 1, False),
}


def _conv(rng, name, k, c_in, c_out, **kw) -> ConvOp:
    w = rng.standard_normal((k, c_in, c_out)).astype(np.float32) * np.float32((2.0 / (k * c_in)) ** 0.5)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    return ConvOp(name, w, b, **kw)


def _layer_model(length, c_in, c_out, k, dilation, pool, residual, precision="fp32", isa=None):
    rng = np.random.default_rng(0)
    ops = []
    flops = 0
    if c_in != 4:  # prelude: 1x1 conv from the one-hot to c_in channels
        ops.append(_conv(rng, "prelude", 1, 4, c_in, gelu_in=True))
        flops += 2 * length * 4 * c_in
    ops.append(_conv(rng, "layer", k, c_in, c_out, dilation=dilation, pool=1 if residual else pool))
    flops += 2 * length * k * c_in * c_out
    if residual:
        ops.append(_conv(rng, "layer_b", 1, c_out, c_in, residual=len(ops) - 1))
        flops += 2 * length * c_out * c_in
    spec = ModelSpec(seq_length=length, ops=ops, heads={}, final_gelu=False, gelu="sigmoid",
                     metadata={"source": "benchmarks/test_bench_kernels.py"})
    return Model(spec, precision=precision, isa=isa), flops


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("isa", available_isas())
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer(benchmark, name, isa, precision):
    try:
        model, flops = _layer_model(*LAYERS[name], precision=precision, isa=isa)
    except ValueError as e:
        pytest.skip(f"{precision}: not supported by this build ({e})")
    codes = np.random.default_rng(1).integers(0, 4, size=(1, model.seq_length), dtype=np.uint8)
    benchmark.group = name
    benchmark.extra_info.update({"gflop": flops / 1e9, "isa": model.info()["isa"], "precision": precision,
                                 "threads": model.threads})
    out = benchmark.pedantic(model.embed, args=(codes,), rounds=5, warmup_rounds=1, iterations=1)
    assert np.isfinite(out).all()
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflop_per_s"] = flops / 1e9 / benchmark.stats.stats.median
