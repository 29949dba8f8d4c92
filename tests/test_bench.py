"""``basenji2-fast bench``: runs on a small model, reports every precision x kernel set and
layer group, and counts FLOPs as an independent count from the params file does.
Timings are printed, never judged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from basenji2_fast import bench, cli
from basenji2_fast.formats import load_spec
from conftest import fixture_path


def independent_flops(params: dict) -> dict:
    """FLOPs of one sequence by layer group, from the basenji params JSON alone:
    2*k*c_in*c_out per position of each conv (before pooling), 2*channels*tracks per bin."""
    m = params["model"]
    L = m["seq_length"]
    stem, tower, dilated, crop, final = m["trunk"]
    flops = {"stem": 2 * stem["kernel_size"] * 4 * stem["filters"] * L}
    L //= stem["pool_size"]
    c, f = stem["filters"], float(tower["filters_init"])
    flops["tower"] = 0
    for _ in range(tower["repeat"]):
        out = int(np.round(f))
        flops["tower"] += 2 * tower["kernel_size"] * c * out * L
        L //= tower["pool_size"]
        c, f = out, f * tower["filters_mult"]
    # each residual block: k3 c -> filters (dilated), then k1 filters -> c
    flops["dilated"] = dilated["repeat"] * (2 * 3 * c * dilated["filters"] * L + 2 * dilated["filters"] * c * L)
    L -= 2 * crop["cropping"]
    flops["head"] = 2 * c * final["filters"] * L + 2 * final["filters"] * m["head_human"]["units"] * L
    return flops


def test_flop_count_matches_an_independent_count():
    params = json.loads(fixture_path("tf-small", "params.json").read_text())
    spec = load_spec(fixture_path("tf-small", "model.h5"))
    assert bench.group_flops(spec) == independent_flops(params)
    ops = bench.op_flops(spec)
    assert [e["group"] for e in ops] == ["stem"] + ["tower"] * 6 + ["dilated"] * 8 + ["head"] * 2
    assert ops[0]["flops"] == 2 * 15 * 4 * 16 * 16384


def test_full_basenji2_flops():
    """The published architecture: 233 GFLOP per 131,072-bp sequence with the human head."""
    from basenji2_fast.formats.published import BASENJI2_PARAMS

    spec = bench.random_spec(BASENJI2_PARAMS["model"], seed=0)
    got = bench.group_flops(spec)
    assert got == independent_flops(BASENJI2_PARAMS)
    assert round(sum(got.values()) / 1e9) == 233


def test_fma_peak_assumptions():
    zen3 = bench.fma_peak(["avx", "avx2", "fma"], 2.5, 2, "AuthenticAMD", 25)
    assert zen3["fp32"] == 2 * 8 * 2 * 2.5 * 2 and zen3["bf16"] == zen3["fp32"]
    zen5 = bench.fma_peak(["avx2", "fma", "avx512f", "avx512_bf16"], 2.0, 1, "AuthenticAMD", 26)
    assert zen5["fp32"] == 64 * 2.0 and zen5["bf16"] == 128 * 2.0
    zen4 = bench.fma_peak(["avx2", "fma", "avx512f", "avx512_bf16"], 2.0, 1, "AuthenticAMD", 25)
    assert zen4["fp32"] == 32 * 2.0 and zen4["bf16"] == 64 * 2.0
    assert "2 FMA pipes" in zen5["assumption"]


def test_cpu_info_reads_proc_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    core = ("processor\t: {p}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 68\n"
            "model name\t: AMD EPYC 9B45\ncpu MHz\t\t: 2600.000\nphysical id\t: 0\ncore id\t\t: {c}\n"
            "flags\t\t: fpu avx2 fma avx512f avx512_bf16\n\n")
    f.write_text("".join(core.format(p=p, c=p // 2) for p in range(4)))  # 2 cores x 2 SMT threads
    info = bench.cpu_info(str(f))
    assert (info["model"], info["family"], info["cpu_model"], info["mhz"], info["cores"]) == (
        "AMD EPYC 9B45", 26, 68, 2600.0, 2)
    assert "avx512_bf16" in info["flags"]


def test_bench_command_on_a_small_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    model = fixture_path("tf-small", "model.h5")
    assert cli.main(["bench", "-m", str(model), "--repeats", "1", "--no-peer", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    isas = bench.available_isas()
    assert isas and isas[-1] == "generic"
    # one row per precision x kernel set, in that order; bf16 either measured or refused clearly
    rows = res["engines"]
    assert [(r["precision"], r["isa"]) for r in rows] == [(p, i) for p in ("fp32", "bf16") for i in isas]
    for r in rows:
        if "unsupported" in r:
            assert r["precision"] == "bf16" and "bf16" in r["unsupported"]
            assert "bf16: not supported by this build" in text
            continue
        b1 = r["batches"]["1"]
        assert b1["median_s_per_seq"] > 0 and b1["gflop_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert len(r["times_s_per_seq"]["1"]) == 1
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert all("batches" in r for r in fp32)
    # the layer groups of every measured configuration, FLOPs as counted independently
    params = json.loads(fixture_path("tf-small", "params.json").read_text())
    expect = independent_flops(params)
    measured = [(r["precision"], r["isa"]) for r in rows if "batches" in r]
    assert [(g["precision"], g["isa"]) for g in res["groups"]] == measured
    for g in res["groups"]:
        assert list(g["groups"]) == list(bench.GROUPS)
        assert {k: v["flops"] for k, v in g["groups"].items()} == expect
        assert all(v["s"] > 0 for v in g["groups"].values())
        assert len(g["ops"]) == 17  # 16 convs + the head
    assert res["model"]["gflop"] == pytest.approx(sum(expect.values()) / 1e9)
    # the table: header columns, one line per measured row, the layer-group blocks
    for col in ("engine", "precision", "isa", "med s/seq", "GFLOP/s", "%peak", "RSS MB"):
        assert col in text
    for prec, isa in measured:
        assert any(line.startswith("basenji2-fast") and f" {prec} " in line and f" {isa} " in line
                   for line in text.splitlines())
        assert f"layer groups, {prec} {isa}" in text
    for title in bench.GROUP_TITLES.values():
        assert text.count(title) >= len(measured)
    assert "FMA peak" in text and "TensorFlow basenji" in text


def test_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--precisions", "fp16", "--no-peer"]) == 1
    assert "--precisions: 'fp16' is not one of fp32, bf16" in capsys.readouterr().err
