"""pytest-benchmark timings of the whole model: our engine per precision and kernel set
next to basenji2-pytorch (fp32 and bf16 autocast), all in one session and one benchmark
group per batch size, so pytest-benchmark's relative columns are the ratios.

    python -m pytest benchmarks/test_bench_model.py --benchmark-only
    python -m pytest benchmarks/test_bench_model.py --benchmark-json model.json
    B2_BENCH_MODEL=weights/basenji2.safetensors python -m pytest benchmarks/test_bench_model.py

Timing only: nothing passes or fails on speed (each case checks its output's shape and
that it is finite). Default model: a random full-size Basenji2 made by basenji2-pytorch
(``basenji2_fast.peers``) and converted to our .safetensors, so both engines run the same
weights; without torch, a random Basenji2 from the published params (the torch cases
skip). ``B2_BENCH_MODEL`` names another file for our engine (torch then times its own
random Basenji2). A precision this build does not run is skipped with the reason. Each
case: 1 warm-up round, then 3 rounds (``B2_BENCH_ROUNDS``), all threads.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import basenji2_fast  # noqa: F401  (importable as installed?)
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from basenji2_fast import bench, load

pytest.importorskip("pytest_benchmark")

ROUNDS = int(os.environ.get("B2_BENCH_ROUNDS", "3"))
BATCHES = (1,)
SEED = 0


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """{"st": our model file, "pth": the same weights for basenji2-pytorch or None}."""
    given = os.environ.get("B2_BENCH_MODEL")
    if given:
        return {"st": given, "pth": None}
    tmp = tmp_path_factory.mktemp("b2bench")
    import importlib.util

    have_peer = all(importlib.util.find_spec(m) for m in ("torch", "basenji2_pytorch"))
    pth = tmp / "basenji2_random.pth" if have_peer else None
    st = tmp / "basenji2_random.safetensors"
    bench._prepare_weights(SEED, pth, st)
    return {"st": str(st), "pth": None if pth is None else str(pth)}


def _group(batch: int) -> str:
    return f"whole model, batch {batch}"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("isa", bench.available_isas())
@pytest.mark.parametrize("precision", bench.PRECISIONS)
def test_predict_ours(benchmark, weights, precision, isa, batch):
    try:
        model = load(weights["st"], precision=precision, isa=isa)  # the file records its GELU (erf from torch)
    except ValueError as e:
        pytest.skip(f"{precision}: not supported by this build ({e})")
    codes = bench.random_codes(batch, model.seq_length, SEED + 1000)
    gflop = sum(bench.group_flops(model.spec).values()) / 1e9
    benchmark.group = _group(batch)
    benchmark.extra_info.update({"engine": "basenji2-fast", "precision": precision, "isa": model.info()["isa"],
                                 "threads": model.threads, "gflop_per_seq": gflop})
    out = benchmark.pedantic(model.predict, args=(codes,), kwargs={"batch_size": batch}, rounds=ROUNDS,
                             warmup_rounds=1, iterations=1)
    assert out.shape == (batch, model.n_bins, next(iter(model.spec.heads.values())).tracks)
    assert np.isfinite(out).all()
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflop_per_s"] = gflop * batch / benchmark.stats.stats.median
    model.release_memory()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", bench.PRECISIONS)
def test_predict_basenji2_pytorch(benchmark, weights, precision, batch):
    torch = pytest.importorskip("torch")
    bp = pytest.importorskip("basenji2_pytorch")
    if weights["pth"]:
        model = bp.Basenji2(copy.deepcopy(bp.basenji2_params["model"]))
        model.load_state_dict(torch.load(weights["pth"], map_location="cpu", weights_only=True))
        model.eval()
    else:
        from basenji2_fast.peers import random_basenji2_pytorch

        model = random_basenji2_pytorch(SEED)
    torch.set_num_threads(bench.default_threads())
    x = torch.from_numpy(bench.codes_to_onehot_ncl(bench.random_codes(batch, 131072, SEED + 1000)))

    def forward():
        with torch.inference_mode():
            if precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x)
            return model(x)

    benchmark.group = _group(batch)
    benchmark.extra_info.update({"engine": "basenji2-pytorch", "precision": "bf16 autocast" if precision == "bf16"
                                 else "fp32", "threads": torch.get_num_threads(), "torch": torch.__version__})
    out = benchmark.pedantic(forward, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert out.shape == (batch, 896, 5313)
    assert torch.isfinite(out.float()).all()
