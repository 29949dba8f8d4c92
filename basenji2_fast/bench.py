"""``basenji2-fast bench``: this engine next to every framework that runs Basenji2, in the same
run, on the machine's measured limit.

* **The limit.** At the start and the end of the run the engine's register-only multiply-add
  loops (``_engine.measure_peak``) measure the machine's fp32 and bf16 peak for every kernel
  set this CPU runs, on the benchmark's thread count (best of a few short trials). Every
  "% of peak" is of that measured number.
* **Two kinds of FLOPs.** *Nominal*: what a direct convolution of the model computes
  (:func:`op_flops`: 2·k·c_in·c_out per output position of each conv before pooling,
  2·channels·tracks per bin for the head; 233.3 GFLOP per Basenji2 sequence). *Effective
  GFLOP/s* = nominal / time, comparable across engines. *Executed*: what our engine's
  algorithm actually does, as the engine counts it (``Model.executed_flops``: tile halos,
  the stem's table gather, a fast convolution's transforms); our % of peak is executed / time
  / peak. A framework's executed arithmetic is unknown: its % of peak is of the nominal.
* **The engines.** Ours (per precision, and per convolution algorithm when the engine has a
  choice) and the framework peers of :mod:`basenji2_fast.peers` (TensorFlow on the Keras
  file, basenji2-pytorch eager / torch.compile / bf16 autocast, ONNX Runtime and OpenVINO
  LATENCY / THROUGHPUT on its ONNX export), every one in its own long-lived worker process,
  so peak memory is per engine. After a warm-up pass each, ``rounds`` rounds run
  ``passes`` timed passes of every engine, the order rotating from round to round, so that
  load from other processes hits all engines alike; medians and minima per sequence.
  The parent never imports a framework (on Linux a child's ``ru_maxrss`` starts at its
  parent's RSS).
* **Fidelity.** Each engine's output for the same sequence is compared with ours in fp32
  (direct convolution) computing the same GELU (the Keras model's sigmoid form for
  TensorFlow, basenji2-pytorch's erf for the torch family and its export): max |Δ| and the
  per-track Pearson r over the bins (median and minimum over the tracks whose reference
  varies, std >= 0.01), flagged when out of bounds (:data:`FIDELITY`).
* **Throughput.** Batch sizes beyond 1 for a subset of the engines (fresh workers per batch),
  and ``predict-genome`` windows per second in bf16 on a small synthetic genome.
* **Gradients.** Our forward pass, our gradient pass (``Model.gradients``: the predictions
  summed over all tracks and bins, differentiated with respect to the one-hot input) and torch
  autograd computing the same gradient on basenji2-pytorch (our GELU swapped in, frozen
  weights), rounds alternating as above: the ratios gradients / forward and torch / ours, and
  how the two gradients agree (:func:`compare_gradients`).

The weights copy into basenji2-pytorch and its ONNX export are made once into a cache folder.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .peers import MAGIC, RUNTIMES, peak_rss_mb, reply, serve  # serve: also benchmarks/bench_vs_pytorch.py
from .spec import PRECISIONS, ConvOp, CropOp, Head, ModelSpec

GROUPS = ("stem", "tower", "dilated", "head")
GROUP_TITLES = {"stem": "stem", "tower": "conv tower", "dilated": "dilated residual tower",
                "head": "final 1x1 + head"}
IDLE_S = 0.3  # pause before each timed pass: the previous worker's threads spin briefly
#: Fidelity bounds against our fp32 output with the same GELU: an fp32 engine within max |Δ|
#: 1e-3 (the tolerance our fp32 keeps against TensorFlow on the full-size fixture); a bf16
#: engine with per-track r >= 0.99 on every track that varies (bf16 frameworks reach 0.995+).
FIDELITY = {"fp32_max_abs": 1e-3, "bf16_r_min": 0.99, "min_std": 0.01}
#: The batch sweep's engines unless --batch-engines says otherwise (memory: every engine of
#: a batch runs at once).
DEFAULT_BATCH_ENGINES = ("ours", "torch", "ov", "ov-tput")


# ---------------------------------------------------------------------------------------------
# FLOPs and layer groups

def op_groups(spec: ModelSpec) -> List[str]:
    """The layer group of each op of ``spec.ops``: ``stem`` (op 0), ``dilated`` (the ops of
    a residual block: from the op whose input is added to the op that adds it), ``head``
    (everything after the first crop: Basenji2's final 1x1 conv) and ``tower`` (the rest)."""
    groups = ["tower"] * len(spec.ops)
    groups[0] = "stem"
    for i, op in enumerate(spec.ops):
        if isinstance(op, ConvOp) and op.residual is not None:
            for j in range(op.residual, i + 1):
                groups[j] = "dilated"
    crops = [i for i, op in enumerate(spec.ops) if isinstance(op, CropOp)]
    if crops:
        for j in range(crops[0], len(spec.ops)):
            groups[j] = "head"
    return groups


def op_flops(spec: ModelSpec, head: Optional[str] = None, tracks: Optional[int] = None) -> List[dict]:
    """Nominal FLOPs of one sequence (a direct convolution's), per op and for the head.

    Returns one dict per conv op (``index``, ``name``, ``group``, ``length``: output positions
    before pooling = the op's input length, ``flops`` = 2·k·c_in·c_out·length) and a last
    entry for the dense head (``index`` None, ``flops`` = 2·channels·tracks·n_bins; ``head``:
    the head's name, default the first; ``tracks``: columns computed, default all).
    """
    groups = op_groups(spec)
    out, length = [], spec.seq_length
    for i, op in enumerate(spec.ops):
        if isinstance(op, ConvOp):
            out.append({"index": i, "name": op.name, "group": groups[i], "length": length,
                        "flops": 2 * op.k * op.c_in * op.c_out * length})
            length //= op.pool
        else:
            length -= op.left + op.right
    name = head if head is not None else next(iter(spec.heads), None)
    if name is not None:
        h = spec.heads[name]
        t = h.tracks if tracks is None else int(tracks)
        out.append({"index": None, "name": f"head {name}", "group": "head", "length": length,
                    "flops": 2 * h.weight.shape[0] * t * length})
    return out


def group_flops(spec: ModelSpec, head: Optional[str] = None) -> Dict[str, int]:
    """{group: nominal FLOPs of one sequence} in :data:`GROUPS` order (from :func:`op_flops`)."""
    total = dict.fromkeys(GROUPS, 0)
    for e in op_flops(spec, head):
        total[e["group"]] += e["flops"]
    return total


# ---------------------------------------------------------------------------------------------
# the machine

def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """Model name, vendor, family, model, flags, MHz and physical cores from /proc/cpuinfo."""
    info = {"model": platform.processor() or platform.machine(), "flags": [], "mhz": None, "vendor": "",
            "family": None, "cpu_model": None, "cores": os.cpu_count() or 1}
    try:
        text = Path(path).read_text()
    except OSError:
        return info
    cores = set()
    phys = None
    for line in text.splitlines():
        key, _, val = (s.strip() for s in line.partition(":"))
        if key == "model name" and info["model"] in (platform.processor() or platform.machine(), ""):
            info["model"] = val
        elif key == "flags" and not info["flags"]:
            info["flags"] = val.split()
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(val)
        elif key == "vendor_id":
            info["vendor"] = val
        elif key == "cpu family" and info["family"] is None:
            info["family"] = int(val)
        elif key == "model" and info["cpu_model"] is None and val.isdigit():
            info["cpu_model"] = int(val)
        elif key == "physical id":
            phys = val
        elif key == "core id":
            cores.add((phys, val))
    if cores:
        info["cores"] = len(cores)
    return info


def measure_peaks(threads: int, trials: int = 5, seconds: float = 0.2, isas: Optional[Sequence[str]] = None) -> dict:
    """The machine's multiply-add limit per kernel set and precision, measured by the
    engine's register-only loops on ``threads`` threads: ``{isa: {"fp32"|"bf16": {"gflops":
    best trial, "trials": [...], "instruction": ...}}}``. The best of ``trials`` short runs:
    other processes only ever slow a trial down. Where bf16 runs the fp32 loop (no bf16
    arithmetic), both precisions get the best of all its trials."""
    from . import _engine

    out = {}
    for isa in isas or available_isas():
        out[isa] = {}
        for prec in ("fp32", "bf16"):
            runs = [_engine.measure_peak(isa, prec, threads, seconds) for _ in range(trials)]
            out[isa][prec] = {"gflops": max(r["gflops"] for r in runs), "trials": [r["gflops"] for r in runs],
                              "instruction": runs[0]["instruction"], "threads": runs[0]["threads"]}
        f, b = out[isa]["fp32"], out[isa]["bf16"]
        if f["instruction"] == b["instruction"]:
            f["gflops"] = b["gflops"] = max(f["gflops"], b["gflops"])
    return out


def available_isas() -> List[str]:
    """Kernel sets this build holds and this CPU runs, best first."""
    from .model import build_info

    return [s for s in str(build_info().get("isas", "")).split(",") if s]


# ---------------------------------------------------------------------------------------------
# process helpers (also used by benchmarks/bench_vs_pytorch.py)

def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def random_codes(batch: int, length: int, seed: int) -> np.ndarray:
    """uint8 [batch, length] base codes 0..3 (A, C, G, T)."""
    return np.random.default_rng(seed).integers(0, 4, size=(batch, length), dtype=np.uint8)


def codes_to_onehot_ncl(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [B, L] -> float32 one-hot [B, 4, L] (torch layout); N (4) -> all zeros."""
    eye = np.concatenate([np.eye(4, dtype=np.float32), np.zeros((2, 4), np.float32)])
    return np.ascontiguousarray(eye[codes].transpose(0, 2, 1))


def dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001  (provenance is best effort)
        return "?"


def engine_binary() -> dict:
    """The compiled extension this process imported: file name, sha256, mtime."""
    try:
        from . import _engine

        so = Path(_engine.__file__)
        return {"engine_so": so.name, "engine_so_sha256": hashlib.sha256(so.read_bytes()).hexdigest(),
                "engine_so_mtime": _dt.datetime.fromtimestamp(so.stat().st_mtime).astimezone().isoformat(
                    timespec="seconds")}
    except Exception as e:  # noqa: BLE001
        return {"engine_so_error": str(e)}


def build_provenance() -> dict:
    """Which engine binary is measured: build info, the extension's sha256, the git commit."""
    from .model import build_info

    info = {}
    try:
        info.update(build_info())
    except Exception as e:  # noqa: BLE001
        info["error"] = str(e)
    info.update(engine_binary())
    repo = Path(__file__).resolve().parent.parent
    try:
        git = ["git", "-C", str(repo)]
        info["git_commit"] = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                                            check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "csrc", "basenji2_fast"], capture_output=True,
                               text=True, check=True).stdout
        info["git_dirty"] = bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


class Worker:
    """One engine in its own long-lived process, driven line by line (see :func:`serve`).
    ``report`` is its first answer: ``ready`` with its description, or ``not_installed`` /
    ``unsupported`` when it cannot run (the process has then ended)."""

    def __init__(self, name: str, cmd: List[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.report = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MAGIC):
                return json.loads(line[len(MAGIC):])
            sys.stderr.write(line)  # anything else the libraries print
        raise RuntimeError(f"{self.name} worker exited with status {self.proc.wait()}")

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def finish(self, arg: str = "") -> dict:
        report = self.ask(("finish " + arg).strip())
        self.proc.stdin.close()
        self.proc.wait()
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# models

def random_spec(params_model: dict, seed: int = 0, gelu: Optional[str] = None) -> ModelSpec:
    """A model with a basenji params JSON's architecture and random weights (seeded), scaled
    as :func:`basenji2_fast.peers.random_basenji2_pytorch`: He-like convs, gain 0.5 for the
    second conv of each residual block. Only the first head is built."""
    from .formats.params import ConvPlan, expand_params

    plan = expand_params(params_model)
    rng = np.random.default_rng(seed)
    ops = []
    for p in plan.ops:
        if not isinstance(p, ConvPlan):
            ops.append(CropOp(p.name, p.left, p.right))
            continue
        gain = 0.5 if p.residual is not None else 2.0
        w = rng.standard_normal((p.kernel_size, p.c_in, p.c_out), np.float32)
        w *= np.float32((gain / (p.kernel_size * p.c_in)) ** 0.5)
        ops.append(ConvOp(p.name, w, (rng.standard_normal(p.c_out) * 0.1).astype(np.float32), dilation=p.dilation,
                          pool=p.pool, residual=p.residual))
    hp = plan.heads[0]
    c = plan.trunk_channels
    head = Head(hp.key[len("head_"):] or hp.key,
                (rng.standard_normal((c, hp.units), np.float32) * np.float32(c ** -0.5)),
                (rng.standard_normal(hp.units) * 0.5).astype(np.float32), hp.activation)
    return ModelSpec(plan.seq_length, ops, {head.name: head}, final_gelu=plan.final_gelu,
                     gelu=gelu or plan.gelu, metadata={"source": "basenji2_fast.bench.random_spec"}).validate()


def _prepare_weights(seed: int, pth: Optional[Path], st: Path) -> dict:
    """(Worker body) The random full-size Basenji2: with torch, from basenji2-pytorch
    (``pth``, and converted to ``st`` with its erf GELU), so every engine runs the same
    weights; without torch, from :func:`random_spec` straight to ``st``."""
    from .convert import convert

    if pth is not None:
        import torch

        from .peers import random_basenji2_pytorch

        tmp = Path(str(pth) + ".tmp")
        torch.save(random_basenji2_pytorch(seed).state_dict(), tmp)
        os.replace(tmp, pth)
        convert(pth, st, gelu="erf")
        return {"source": "basenji2-pytorch random (peers.random_basenji2_pytorch)", "gelu": "erf"}
    from .formats import engine_format
    from .formats.published import BASENJI2_PARAMS

    engine_format.save(random_spec(BASENJI2_PARAMS["model"], seed), st)
    return {"source": "random_spec(published Basenji2 params)", "gelu": "sigmoid"}


def _prepare_peer_files(model: Optional[str], pth: Path, onnx: Optional[Path]) -> dict:
    """(Worker body) The files the torch family and the ONNX runtimes read: ``pth``, a
    basenji2-pytorch state dict with ``model``'s weights (None: ``pth`` exists already), and
    ``onnx``, its export (None: not wanted). Each step says what failed instead of raising."""
    out = {}
    if model is not None:
        try:
            import torch

            from .formats import load_spec
            from .formats.torch_pth import state_dict_from_spec

            sd = state_dict_from_spec(load_spec(model, keep_bf16=True))
            tmp = Path(str(pth) + ".tmp")
            torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, tmp)
            os.replace(tmp, pth)
        except Exception as e:  # noqa: BLE001  (reported as the peers' reason not to run)
            out["pth_error"] = f"{type(e).__name__}: {e}"
            return out
    out["pth"] = str(pth)
    if onnx is not None:
        from .peers import export_onnx

        try:
            out.update(export_onnx(str(pth), str(onnx)))
        except Exception as e:  # noqa: BLE001
            out["onnx_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return out


# ---------------------------------------------------------------------------------------------
# our engine's workers

def executed_by_precision(model) -> Dict[str, int]:
    """{"fp32": FLOPs, "bf16": FLOPs}: the arithmetic one sequence's pass executes (trunk and
    the first head, :meth:`Model.executed_flops`), split by the precision of each op's
    products. A bf16 model's Winograd tower multiplies in fp32, so its share is held to the
    fp32 peak and the rest to the bf16 one (:func:`pct_of_peak`)."""
    info = model.info()
    flops = info["flops_per_sequence"]
    out = {"fp32": 0, "bf16": 0}
    for layer in info["layers"]:
        out[layer["precision"]] += int(flops["ops"][layer["op"]])
    heads = flops["heads"]
    if heads:
        out[info.get("head_precision", "fp32")] += int(next(iter(heads.values())))
    return out


def pct_of_peak(by_precision: Dict[str, float], seconds: float, peaks: Dict[str, float]) -> Optional[float]:
    """The share of ``seconds`` that the executed FLOPs ``by_precision`` would take at the
    measured peaks ({"fp32": GFLOP/s, "bf16": GFLOP/s}), in %: 100 at the machine's limit."""
    if not seconds:
        return None
    ideal = sum(f / 1e9 / peaks[p] for p, f in by_precision.items() if f)
    return 100 * ideal / seconds


def time_layer_groups(model, repeats: int, seed: int = 0) -> dict:
    """Median wall seconds per layer group of one sequence's pass, as the pass runs it:
    the engine's own per-op timing (``profile``: the tiled stem and tower summed over tiles,
    the model's precision, algorithms and kernels, all tracks of the first head), with the
    nominal FLOPs (:func:`op_flops`) and the FLOPs executed, split by the precision of the
    products. Crops count with their group; a pass's epilogues (bias, residual, pooling,
    GELU) with the op they follow. Returns {"ops": [...], "groups": {group: {"s", "flops",
    "executed_flops", "executed_by_precision"}}, "pass_s": median sum over the ops}.
    """
    spec = model.spec
    info = model.info()
    engine = model._engine
    codes = random_codes(1, spec.seq_length, seed)[0]
    name = next(iter(spec.heads), None)
    requests = [(0, list(range(spec.heads[name].tracks)))] if name is not None else []
    engine.profile(codes, requests)  # warm-up (buffers, page faults)
    runs = np.stack([np.asarray(engine.profile(codes, requests)) for _ in range(max(1, repeats))])
    n = runs.shape[1] // 2
    wall = np.median(runs[:, :n], axis=0)  # [ops + 1]: the heads last
    flops = info["flops_per_sequence"]
    prec = {layer["op"]: layer["precision"] for layer in info["layers"]}
    nominal = {e["index"]: e["flops"] for e in op_flops(spec)}
    groups = op_groups(spec)
    ops = [{"index": i, "name": op.name, "group": groups[i], "s": float(wall[i]), "flops": nominal.get(i, 0),
            "executed_flops": int(flops["ops"][i]), "precision": prec.get(i, "fp32")}
           for i, op in enumerate(spec.ops)]
    if name is not None:
        ops.append({"index": None, "name": f"head {name}", "group": "head", "s": float(wall[n - 1]),
                    "flops": nominal[None], "executed_flops": int(flops["heads"][name]),
                    "precision": info.get("head_precision", "fp32")})
    out = {g: {"s": 0.0, "flops": 0, "executed_flops": 0, "executed_by_precision": {"fp32": 0, "bf16": 0}}
           for g in GROUPS}
    for e in ops:
        g = out[e["group"]]
        g["s"] += e["s"]
        g["flops"] += e["flops"]
        g["executed_flops"] += e["executed_flops"]
        g["executed_by_precision"][e["precision"]] += e["executed_flops"]
    return {"ops": ops, "groups": out, "repeats": repeats, "pass_s": float(wall.sum())}


def engine_accepts_algorithm() -> bool:
    """Whether this engine takes a convolution algorithm (``load(..., algorithm=...)``)."""
    from .model import load

    return "algorithm" in inspect.signature(load).parameters


def _ours_options(cfg: dict) -> dict:
    """Our engine's options beyond precision and threads: the convolution algorithm, if any."""
    return {"algorithm": cfg["algorithm"]} if cfg.get("algorithm") else {}


def _load_ours(cfg: dict):
    from .model import load

    return load(cfg["model"], precision=cfg["precision"], threads=cfg["threads"], gelu=cfg.get("gelu"),
                **_ours_options(cfg))


def _worker_ours(cfg: dict) -> None:
    """Our engine: ``predict`` (``cfg["task"]`` "predict", the default) or ``gradients`` of the
    predictions summed over ``cfg["tracks"]`` and ``cfg["bins"]`` (None: all)."""
    t0 = time.perf_counter()
    model = _load_ours(cfg)
    load_s = time.perf_counter() - t0
    codes = np.load(cfg["codes"])
    info = model.info()
    flops = info.get("flops_per_sequence")
    tracks, bins = cfg.get("tracks"), cfg.get("bins")
    if cfg.get("task", "predict") == "gradients":
        def compute(c):
            return model.gradients(c, tracks=tracks, bins=bins, batch_size=len(c))
    else:
        def compute(c):
            return model.predict(c, tracks=tracks, batch_size=len(c))

    def run(arg):
        b = int(arg or 1)
        t, c = time.perf_counter(), time.process_time()
        compute(codes[:b])
        return {"t": time.perf_counter() - t, "cpu": time.process_time() - c, "n": b}

    def save(path):
        np.save(path, compute(codes[:1]))
        return {"saved": path}

    serve({"run": run, "save": save},
          {"engine": "basenji2-fast", "precision": model.precision, "isa": info["isa"], "threads": info["threads"],
           "algorithm": cfg.get("algorithm"), "load_s": load_s,
           "executed_flops": None if flops is None else flops["trunk"] + next(iter(flops["heads"].values())),
           "executed_by_precision": None if flops is None else executed_by_precision(model),
           **engine_binary()})


def _worker_groups(cfg: dict) -> None:
    model = _load_ours(cfg)
    reply({"isa": model.info()["isa"], **time_layer_groups(model, cfg["repeats"], cfg["seed"])})


def _worker_genome(cfg: dict) -> None:
    """predict-genome on a synthetic genome of ``windows`` windows (random bases, one
    chromosome), ``tracks`` tracks; the wall time of the call after loading."""
    from .workflows.genome_tiling import predict_genome, tiling_of

    model = _load_ours(cfg)
    tiling = tiling_of(model)
    length = cfg["windows"] * tiling.stride
    with tempfile.TemporaryDirectory(prefix="b2genome-") as tmp:
        fa = Path(tmp) / "synthetic.fa"
        bases = np.frombuffer(b"ACGT", np.uint8)[random_codes(1, length, cfg["seed"])[0]]
        with open(fa, "wb") as f:
            f.write(b">chrSynthetic\n")
            for i in range(0, length, 80):
                f.write(bases[i:i + 80].tobytes() + b"\n")
        t = time.perf_counter()
        man = predict_genome(model, fa, Path(tmp) / "out", tracks=list(range(cfg["tracks"])), progress=False)
        wall = time.perf_counter() - t
    n = man["windows"]["predicted"]
    reply({"windows": n, "length_bp": length, "tracks": cfg["tracks"], "wall_s": wall, "windows_per_s": n / wall,
           "precision": model.precision, "isa": model.info()["isa"], "manifest_timing": man.get("timing")})


def _worker_main(cfg: dict) -> int:
    kind = cfg["kind"]
    try:
        if kind == "convert":
            from .convert import convert

            convert(cfg["model"], cfg["st"])  # written atomically
            reply({"st": cfg["st"]})
        elif kind == "prep-random":
            reply(_prepare_weights(cfg["seed"], Path(cfg["pth"]) if cfg.get("pth") else None, Path(cfg["st"])))
        elif kind == "prep-peers":
            reply(_prepare_peer_files(cfg.get("model"), Path(cfg["pth"]), Path(cfg["onnx"]) if cfg.get("onnx") else None))
        elif kind == "ours":
            _worker_ours(cfg)
        elif kind == "groups":
            _worker_groups(cfg)
        elif kind == "genome":
            _worker_genome(cfg)
        else:
            raise SystemExit(f"unknown worker kind {kind!r}")
    except ValueError as e:  # a precision / kernel set / option this build does not run
        reply({"unsupported": str(e)})
    except ImportError as e:  # an optional package (torch) the step needs
        reply({"error": f"{type(e).__name__}: {e}"})
    return 0


# ---------------------------------------------------------------------------------------------
# fidelity

def compare_outputs(y: np.ndarray, ref: np.ndarray, min_std: float = FIDELITY["min_std"]) -> dict:
    """An engine's output vs the reference (both [..., tracks], same shape): max |Δ|, the
    reference's max |value|, and the per-track Pearson r over the other axes (the bins):
    median and minimum over the tracks whose reference varies (std >= ``min_std``), and
    the minimum over all. A track whose output is constant while the reference varies gets
    r = 0."""
    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape} differs from the reference's {ref.shape}")
    t = ref.shape[-1]
    y, ref = y.astype(np.float64).reshape(-1, t), ref.astype(np.float64).reshape(-1, t)
    yc, rc = y - y.mean(0), ref - ref.mean(0)
    den = np.sqrt((yc ** 2).sum(0) * (rc ** 2).sum(0))
    r = np.divide((yc * rc).sum(0), den, out=np.zeros(t), where=den > 0)
    live = ref.std(0) >= min_std
    rl = r[live] if live.any() else r
    return {"max_abs_diff": float(np.abs(y - ref).max()), "max_abs_ref": float(np.abs(ref).max()),
            "r_median": float(np.median(rl)), "r_min": float(rl.min()), "r_min_all": float(r.min()),
            "live_tracks": int(live.sum()), "tracks": int(t)}


def fidelity_flag(precision: str, cmp: dict) -> str:
    """"" when the comparison is within :data:`FIDELITY` for the precision, else why not."""
    if precision == "fp32":
        if cmp["max_abs_diff"] > FIDELITY["fp32_max_abs"]:
            return f"WRONG: max|d| {cmp['max_abs_diff']:.2g} > {FIDELITY['fp32_max_abs']:g}"
    elif cmp["r_min"] < FIDELITY["bf16_r_min"]:
        return f"WRONG: r min {cmp['r_min']:.4f} < {FIDELITY['bf16_r_min']}"
    return ""


def compare_gradients(ours: np.ndarray, peer: np.ndarray, tol: float = 1e-3) -> dict:
    """Our input gradient vs a peer's (both [..., L, 4]), relative to the peer's largest |value|:
    the largest and the median position's max |Δ| over the four bases, the share of positions
    beyond ``tol`` (``share_beyond_tol``), and the relative L2 error."""
    a, b = ours.astype(np.float64), peer.astype(np.float64)
    scale = float(np.abs(b).max())
    per_pos = np.abs(a - b).max(axis=-1).ravel() / scale
    return {"max_abs_grad": scale, "max_rel": float(per_pos.max()), "median_rel": float(np.median(per_pos)),
            "tol": tol, "share_beyond_tol": float(np.mean(per_pos > tol)),
            "l2_rel": float(np.linalg.norm(a - b) / np.linalg.norm(b))}


# ---------------------------------------------------------------------------------------------
# the run

@dataclasses.dataclass
class BenchOptions:
    """What ``basenji2-fast bench`` runs (the command's options)."""

    model: Optional[str] = None  # None: random full-size Basenji2 weights (no TensorFlow peer then)
    precisions: Sequence[str] = PRECISIONS
    algorithms: Optional[Sequence[str]] = None  # None: "direct" and "fast" when the engine has a choice
    isas: Optional[Sequence[str]] = None  # None: the best kernel set this CPU runs
    peers: Optional[Sequence[str]] = None  # None: every runtime (torch bf16 only with native bf16)
    threads: int = dataclasses.field(default_factory=default_threads)
    rounds: int = 2
    passes: int = 5
    batches: Sequence[int] = (1, 2, 4, 8)
    batch_engines: Sequence[str] = DEFAULT_BATCH_ENGINES
    batch_rounds: int = 2
    gradient_passes: int = 2  # per round, of our forward, our gradients and torch autograd; 0: none
    genome_windows: int = 4  # 0: no predict-genome measurement
    genome_tracks: int = 10
    group_repeats: int = 3
    peak_trials: int = 5
    seed: int = 0
    cache_dir: Optional[str] = None
    peer_python: Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Entry:
    """One engine configuration of the table."""

    key: str  # "ours fp32 avx2", "ours bf16 fast avx2", or a RUNTIMES name
    label: str
    precision: str  # fp32 | bf16 | bf16-fast
    gelu: Optional[str]  # the GELU it computes: which reference it is compared with
    cmd: List[str]
    env: dict
    isa: Optional[str] = None
    select: tuple = ()  # names --batch-engines may give it

    @property
    def ours(self) -> bool:
        return self.key.startswith("ours")

    @property
    def family(self) -> str:
        """The precision whose peak applies."""
        return "fp32" if self.precision == "fp32" else "bf16"


def _env(threads: int, isa: Optional[str] = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("BASENJI2_FAST_ISA", None)
    if isa:
        env["BASENJI2_FAST_ISA"] = isa
    # the children import this very package, wherever it lives
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _worker_cmd(cfg: dict) -> List[str]:
    # -P: the working folder stays off sys.path (-m would put it first), so a folder there named
    # like a module (a scratch "z3" shadowed the z3 that torch.export imports, and the ONNX export
    # of every OpenVINO / ONNX Runtime peer failed) is never imported; the package comes from
    # _env's PYTHONPATH.
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *isolate, "-m", "basenji2_fast.bench", "--_worker", json.dumps(cfg)]


def _one_shot(cfg: dict, env: dict) -> dict:
    r = subprocess.run(_worker_cmd(cfg), env=env, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith(MAGIC):
            return json.loads(line[len(MAGIC):])
    raise RuntimeError(f"{cfg['kind']} worker failed (status {r.returncode}): {r.stderr.strip()[-2000:]}")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "basenji2-fast" / "bench"


def _file_key(path: str) -> str:
    from .formats import file_sha256

    return file_sha256(path)[:16]


def _native_bf16(flags) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _peer_python(opts: BenchOptions, rt: str) -> str:
    """The interpreter of runtime ``rt``: --peer-python by runtime name or family, else ours."""
    family = rt.split("-")[0]
    return opts.peer_python.get(rt) or opts.peer_python.get(family) or sys.executable


class _Run:
    """One benchmark run's state (see :func:`run_bench`)."""

    def __init__(self, opts: BenchOptions, log):
        self.opts, self.log = opts, log
        self.notes: List[str] = []
        self.status: Dict[str, str] = {}  # entry key -> why it has no row of numbers
        self.reports: Dict[str, dict] = {}  # entry key -> its worker's final report (batch 1)

    # -- one phase: every entry in its own worker, rounds of passes, order rotating ----------
    def phase(self, entries: List[Entry], batch: int, rounds: int, passes: int, codes: Path,
              save_dir: Optional[Path] = None) -> Dict[str, dict]:
        """Times ``entries`` at ``batch``; returns {key: {"times": [s/seq], "report", "output"}}."""
        workers: Dict[str, Worker] = {}
        out: Dict[str, dict] = {}

        def drop(key, why):
            self.log(f"  {key}: {why}")
            if batch == 1:
                self.status.setdefault(key, why)
            out.pop(key, None)
            w = workers.pop(key, None)
            if w is not None:
                w.kill()

        try:
            for e in entries:
                self.log(f"batch {batch}: loading {e.label} ... ", end="")
                try:
                    w = Worker(e.key, e.cmd, e.env)
                except RuntimeError as ex:
                    self.log("")
                    drop(e.key, f"failed to start: {ex}")
                    continue
                rep = w.report
                if not rep.get("ready"):
                    why = rep.get("not_installed") and f"not installed ({rep['not_installed']})" or \
                        rep.get("unsupported") and f"not supported here ({rep['unsupported']})" or \
                        f"failed ({rep.get('error', rep)})"
                    self.log("")
                    w.kill()
                    drop(e.key, why)
                    continue
                workers[e.key] = w
                out[e.key] = {"times": [], "report": rep}
                try:
                    time.sleep(IDLE_S)
                    warm = w.ask(f"run {batch}")
                    if "error" in warm:
                        raise RuntimeError(warm["error"])
                    self.log(f"{rep.get('load_s', 0):.1f} s; warm-up {warm['t']:.2f} s")
                except RuntimeError as ex:
                    self.log("")
                    drop(e.key, f"failed in its warm-up pass: {ex}")
            for r in range(rounds):
                keys = list(workers)
                order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
                for k in order:
                    for _ in range(passes):
                        time.sleep(IDLE_S)
                        try:
                            a = workers[k].ask(f"run {batch}")
                            if "error" in a:
                                raise RuntimeError(a["error"])
                        except RuntimeError as ex:
                            drop(k, f"failed: {ex}")
                            break
                        out[k]["times"].append(a["t"] / a["n"])
                        out[k]["n_per_pass"] = a["n"]
                self.log(f"batch {batch} round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {statistics.median(out[k]['times'][-passes:]):.2f}" for k in workers) + " s/seq")
            for k in list(workers):
                try:
                    if save_dir is not None:
                        path = save_dir / f"out_{len(out)}_{hashlib.md5(k.encode()).hexdigest()[:8]}.npy"
                        a = workers[k].ask(f"save {path}")
                        if "error" in a:
                            raise RuntimeError(a["error"])
                        out[k]["output"] = path
                    out[k]["report"] = workers.pop(k).finish()
                except RuntimeError as ex:
                    drop(k, f"failed: {ex}")
        finally:
            for w in workers.values():
                w.kill()
        return out


def _ours_entries(opts: BenchOptions, model_path: str, codes: Path, isas: List[str]) -> List[Entry]:
    """Our configurations: per kernel set, precision and (when the engine has a choice)
    convolution algorithm."""
    algos: List[Optional[str]] = [None]
    if opts.algorithms is not None:
        algos = list(opts.algorithms)
    elif engine_accepts_algorithm():
        algos = ["direct", "fast"]
    entries = []
    for isa in isas:
        for prec in opts.precisions:
            # a precision beyond fp32/bf16 (bf16-fast) brings its own algorithm
            for algo in (algos if prec in ("fp32", "bf16") else [None]):
                name = " ".join(x for x in ("ours", prec, algo, isa) if x)
                cfg = {"kind": "ours", "precision": prec, "algorithm": algo, "threads": opts.threads,
                       "codes": str(codes), "model": model_path}
                entries.append(Entry(name, "basenji2-fast " + " ".join(x for x in (prec, algo, isa) if x), prec,
                                     None, _worker_cmd(cfg), _env(opts.threads, isa), isa, ("ours", f"ours-{prec}")))
    return entries


def _prepare_files(opts: BenchOptions, peers: List[str], log) -> tuple:
    """The model our engine loads (a cached ``.safetensors`` conversion of ``opts.model``, or
    random full-size weights) and the files the peers read (the Keras ``h5`` itself; a
    basenji2-pytorch ``pth`` with the same weights and its ``onnx`` export, made once into
    the cache folder). Returns (model path, the model's description, {kind: path or None},
    {runtime: why it cannot run})."""
    from .formats import load_spec

    cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    want_pth = any(RUNTIMES[p]["reads"] in ("pth", "onnx") for p in peers)
    want_onnx = any(RUNTIMES[p]["reads"] == "onnx" for p in peers)
    peer_files: Dict[str, Optional[str]] = {"h5": None, "pth": None, "onnx": None}
    peer_why: Dict[str, str] = {}
    if opts.model is None:
        folder = cache / f"random-seed{opts.seed}"
        folder.mkdir(parents=True, exist_ok=True)
        st, pth = folder / "basenji2_random.safetensors", folder / "basenji2_pytorch.pth"
        if not st.exists() or (want_pth and not pth.exists()):
            log(f"building a random full-size Basenji2 in {folder} ...")
            prep = _one_shot({"kind": "prep-random", "seed": opts.seed, "pth": str(pth) if want_pth else None,
                              "st": str(st)}, _env(opts.threads))
            if "unsupported" in prep or "error" in prep:
                prep = _one_shot({"kind": "prep-random", "seed": opts.seed, "pth": None, "st": str(st)},
                                 _env(opts.threads))
        model_path = str(st)
        info = {"path": None, "source": f"random weights (seed {opts.seed}), cached in {folder}"}
        peer_why["tf"] = "needs a Keras .h5 model (-m model_human.h5)"
        peer_model = None
        if pth.exists():
            peer_files["pth"] = str(pth)
    else:
        model_path = str(opts.model)
        info = {"path": model_path, "source": "file"}
        if model_path.endswith(".h5"):
            peer_files["h5"] = model_path  # TensorFlow reads the Keras file itself
        else:
            peer_why["tf"] = "needs a Keras .h5 model"
        folder = cache / _file_key(model_path)
        peer_model = model_path
        if not model_path.endswith(".safetensors"):
            # ours runs from its own format, as deployed (memory-mapped weights)
            st = folder / "model.safetensors"
            if not st.exists():
                folder.mkdir(parents=True, exist_ok=True)
                log(f"converting {model_path} to {st} ...")
                _one_shot({"kind": "convert", "model": model_path, "st": str(st)}, _env(opts.threads))
            model_path = str(st)
            info["engine_file"] = model_path
    spec = load_spec(model_path)
    head_name = next(iter(spec.heads))
    groups = group_flops(spec)
    info.update(seq_length=spec.seq_length, n_bins=spec.n_bins, tracks=spec.heads[head_name].tracks,
                head=head_name, gelu=spec.gelu, nominal_flops=sum(groups.values()), gflop=sum(groups.values()) / 1e9,
                group_gflop={g: f / 1e9 for g, f in groups.items()})
    is_basenji2 = (spec.seq_length, spec.n_bins, spec.heads[head_name].tracks) == (131072, 896, 5313)
    del spec
    if want_pth and not is_basenji2:
        for p in peers:
            if RUNTIMES[p]["reads"] != "h5":
                peer_why[p] = "basenji2-pytorch builds only the full-size Basenji2 (131,072 bp, 5,313 tracks)"
    elif want_pth:
        folder.mkdir(parents=True, exist_ok=True)
        pth, onnx = folder / "basenji2_pytorch.pth", folder / "basenji2.onnx"
        need_pth = not pth.exists()
        need_onnx = want_onnx and not onnx.exists()
        if need_pth or need_onnx:
            log(f"writing the peers' files into {folder} (weights copy{' + ONNX export' if need_onnx else ''}) ...")
            prep = _one_shot({"kind": "prep-peers", "model": peer_model if need_pth else None, "pth": str(pth),
                              "onnx": str(onnx) if need_onnx else None}, _env(opts.threads))
            for k in ("pth_error", "onnx_error"):
                if k in prep:
                    log(f"  {k}: {prep[k]}")
            info["peer_files"] = prep
        if pth.exists():
            peer_files["pth"] = str(pth)
        else:
            for p in peers:
                if RUNTIMES[p]["reads"] in ("pth", "onnx"):
                    peer_why.setdefault(p, "no basenji2-pytorch weights (torch and basenji2-pytorch needed "
                                           "to copy them)")
        if onnx.exists():
            peer_files["onnx"] = str(onnx)
        else:
            for p in peers:
                if RUNTIMES[p]["reads"] == "onnx":
                    peer_why.setdefault(p, "no ONNX export (torch, basenji2-pytorch and onnxscript needed "
                                           "to make it)")
    info["cache"] = str(folder)
    return model_path, info, peer_files, peer_why


def _gradient_phase(run: "_Run", opts: BenchOptions, model_path: str, info: dict, codes: Path, tmp: Path,
                    peers: List[str], peer_files: dict, peer_why: Dict[str, str], isa: str) -> dict:
    """Same run, batch 1, fp32: our forward (``predict``), our gradient pass (``gradients``: one
    forward and one backward pass) of the predictions summed over all tracks and all bins, and
    torch autograd computing the same gradient on basenji2-pytorch carrying the same weights
    with our GELU (frozen weights: the input's gradient only). Rows, the ratios gradients /
    forward and torch / gradients, and how our gradient agrees with torch's."""
    gelu = info["gelu"]
    entries = []
    for task, label in (("predict", "basenji2-fast forward (predict)"),
                        ("gradients", "basenji2-fast gradients (forward + backward)")):
        cfg = {"kind": "ours", "task": task, "precision": "fp32", "threads": opts.threads, "codes": str(codes),
               "model": model_path}
        entries.append(Entry(f"gradients: ours {task}", label, "fp32", gelu, _worker_cmd(cfg), _env(opts.threads, isa),
                             isa))
    torch_key = "gradients: torch autograd"
    torch_label = f"torch autograd (basenji2-pytorch, {gelu} GELU, frozen weights)"
    if "torch" not in peers:
        run.status[torch_key] = "not run: framework peers left out (--peers / --no-peer)"
    elif peer_files.get("pth") is None:
        run.status[torch_key] = f"not run: {peer_why.get('torch', 'no basenji2-pytorch weights')}"
    else:
        cfg = {"runtime": "torch", "task": "gradients", "gelu": gelu, "threads": opts.threads, "codes": str(codes),
               "pth": peer_files["pth"]}
        entries.append(Entry(torch_key, torch_label, "fp32", gelu, [_peer_python(opts, "torch"),
                             str(Path(__file__).with_name("peers.py")), json.dumps(cfg)], _env(opts.threads)))
    got = run.phase(entries, 1, opts.rounds, opts.gradient_passes, codes, save_dir=tmp)
    rows, med = [], {}
    for key, label in [(e.key, e.label) for e in entries[:2]] + [(torch_key, torch_label)]:
        row = {"key": key, "label": label}
        if key in got and got[key]["times"]:
            ts = got[key]["times"]
            med[key] = statistics.median(ts)
            row.update(median_s_per_seq=med[key], min_s_per_seq=min(ts), times_s_per_seq=ts,
                       peak_rss_mb=got[key]["report"].get("peak_rss_mb"), report=got[key]["report"])
        else:
            row["status"] = run.status.get(key, "failed")
        rows.append(row)
    fwd, grad = (med.get(e.key) for e in entries[:2])
    out = {"tracks": "all", "bins": "all", "gelu": gelu, "rows": rows,
           "gradients_over_forward": grad / fwd if grad and fwd else None,
           "torch_over_gradients": med[torch_key] / grad if grad and torch_key in med else None}
    ours_out, torch_out = got.get(entries[1].key, {}).get("output"), got.get(torch_key, {}).get("output")
    if ours_out is not None and torch_out is not None:
        out["agreement"] = compare_gradients(np.load(ours_out), np.load(torch_out))
    return out


def run_bench(opts: BenchOptions, log=print) -> dict:
    """Run the benchmark; returns the results (see :func:`format_table`)."""
    from .version import __version__

    cpu = cpu_info()
    res = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu["model"], "vendor": cpu["vendor"], "family": cpu["family"],
                    "cpu_model": cpu["cpu_model"], "cores": cpu["cores"], "logical_cpus": os.cpu_count(),
                    "flags": [f for f in cpu["flags"] if f.startswith(("avx", "fma", "amx"))],
                    "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": list(os.getloadavg())},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(opts).items()},
        "versions": {"basenji2_fast": __version__, "numpy": np.__version__},
        "build": build_provenance(), "fidelity_bounds": FIDELITY,
        "engines": [], "groups": [], "batches": [], "notes": [],
    }
    run = _Run(opts, log)
    all_isas = available_isas()
    isas = list(opts.isas or all_isas[:1])
    log(f"measuring the peak ({opts.peak_trials} trials per kernel set and precision, {opts.threads} threads) ...")
    peaks_start = measure_peaks(opts.threads, opts.peak_trials)
    peers = list(RUNTIMES) if opts.peers is None else list(opts.peers)
    for p in peers:
        if p not in RUNTIMES:
            raise ValueError(f"--peers: {p!r} is not one of {', '.join(RUNTIMES)}")
    if not peers:
        run.notes.append("framework peers: not run (--no-peer)")
    with tempfile.TemporaryDirectory(prefix="b2bench-") as tmp:
        tmp = Path(tmp)
        model_path, res["model"], peer_files, peer_why = _prepare_files(opts, peers, log)
        nominal = res["model"]["nominal_flops"]
        codes = tmp / "codes.npy"
        np.save(codes, random_codes(max(opts.batches), res["model"]["seq_length"], opts.seed + 1000))

        # -- the entries -------------------------------------------------------------------------
        entries = _ours_entries(opts, model_path, codes, isas)
        native_bf16 = _native_bf16(cpu["flags"])
        for p in peers:
            rt = RUNTIMES[p]
            if p in peer_why:
                run.status[p] = f"not run: {peer_why[p]}"
                continue
            if opts.peers is None and rt["precision"] == "bf16" and p.startswith("torch") and not native_bf16:
                run.status[p] = ("not run: this CPU has no avx512_bf16/amx_bf16, where torch's bf16 autocast takes "
                                 "minutes per sequence (--peers names it to run it anyway)")
                continue
            cfg = {"runtime": p, "threads": opts.threads, "codes": str(codes), **peer_files}
            cmd = [_peer_python(opts, p), str(Path(__file__).with_name("peers.py")), json.dumps(cfg)]
            entries.append(Entry(p, rt["title"], rt["precision"], rt["gelu"], cmd, _env(opts.threads), None, (p,)))
        for e in entries:
            if e.ours:
                e.gelu = res["model"]["gelu"]
        order = [e.key for e in entries]

        # -- batch 1: every engine, outputs saved ------------------------------------------------
        main = run.phase(entries, 1, opts.rounds, opts.passes, codes, save_dir=tmp)
        # -- the references: ours, fp32, direct convolution, with each GELU compared ---------------
        refs = {}
        for gelu in sorted({e.gelu for e in entries if e.key in main and "output" in main[e.key]}):
            cfg = {"kind": "ours", "precision": "fp32", "threads": opts.threads, "codes": str(codes),
                   "model": model_path, "gelu": gelu,
                   "algorithm": "direct" if engine_accepts_algorithm() else None}
            log(f"reference: ours fp32 with the {gelu} GELU ... ", end="")
            path = tmp / f"ref_{gelu}.npy"
            w = Worker(f"reference {gelu}", _worker_cmd(cfg), _env(opts.threads))
            try:
                a = w.ask(f"save {path}") if w.report.get("ready") else w.report
                if "saved" not in a:
                    raise RuntimeError(str(a))
                w.finish()
                refs[gelu] = np.load(path)
                log("done")
            except RuntimeError as ex:
                log(f"failed ({ex}): no fidelity for the {gelu} GELU's engines")
            finally:
                w.kill()
        # -- layer groups of our configurations ---------------------------------------------------
        for e in entries:
            if e.ours and e.key in main:
                cfg = json.loads(e.cmd[-1])
                log(f"layer groups: {e.label} ... ", end="")
                g = _one_shot(dict(cfg, kind="groups", repeats=opts.group_repeats, seed=opts.seed), e.env)
                log("done" if "groups" in g else g.get("unsupported", g.get("error")))
                res["groups"].append({"key": e.key, "label": e.label, "precision": e.precision, "isa": e.isa, **g})
        # -- the batch sweep ------------------------------------------------------------------------
        sweep = [e for e in entries if e.key in main and set(e.select) & set(opts.batch_engines)]
        for b in [b for b in opts.batches if b != 1]:
            got = run.phase(sweep, b, opts.batch_rounds, 1, codes)
            for e in sweep:
                row = {"key": e.key, "label": e.label, "batch": b}
                if e.key in got and got[e.key]["times"]:
                    ts = got[e.key]["times"]
                    row.update(median_s_per_seq=statistics.median(ts), min_s_per_seq=min(ts), times=ts,
                               n_per_pass=got[e.key].get("n_per_pass"),
                               peak_rss_mb=got[e.key]["report"].get("peak_rss_mb"))
                else:
                    row["status"] = "failed"
                res["batches"].append(row)
        # -- gradients: our forward, our gradient pass, torch autograd -------------------------------
        if opts.gradient_passes > 0:
            res["gradients"] = _gradient_phase(run, opts, model_path, res["model"], codes, tmp, peers, peer_files,
                                               peer_why, isas[0])
        # -- predict-genome windows per second, bf16 ----------------------------------------------
        if opts.genome_windows > 0:
            prec = "bf16" if "bf16" in PRECISIONS else "fp32"
            cfg = {"kind": "genome", "precision": prec, "threads": opts.threads, "model": model_path,
                   "windows": opts.genome_windows, "tracks": min(opts.genome_tracks, res["model"]["tracks"]),
                   "seed": opts.seed}
            log(f"predict-genome: {opts.genome_windows} windows, {prec} ... ", end="")
            g = _one_shot(cfg, _env(opts.threads, isas[0]))
            log(f"{g.get('windows_per_s', 0):.3f} windows/s" if "windows" in g else str(g))
            res["genome"] = g

        # -- rows -----------------------------------------------------------------------------------
        peaks_end = measure_peaks(opts.threads, opts.peak_trials)
        peaks = {isa: {p: dict(peaks_start[isa][p], start=peaks_start[isa][p]["gflops"],
                               end=peaks_end[isa][p]["gflops"], end_trials=peaks_end[isa][p]["trials"],
                               gflops=max(peaks_start[isa][p]["gflops"], peaks_end[isa][p]["gflops"]))
                       for p in ("fp32", "bf16")} for isa in peaks_start}
        res["peak"] = peaks
        best = all_isas[0]
        by_key = {e.key: e for e in entries}
        for key in order:
            e = by_key[key]
            row = {"key": key, "label": e.label, "precision": e.precision, "isa": e.isa, "gelu": e.gelu,
                   "ours": e.ours}
            if key not in main or not main[key]["times"]:
                row["status"] = run.status.get(key, "failed")
                res["engines"].append(row)
                continue
            m = main[key]
            rep = m["report"]
            ts = m["times"]
            med = statistics.median(ts)
            peak = peaks[e.isa or best][e.family]["gflops"]
            executed = rep.get("executed_flops") if e.ours else None
            split = rep.get("executed_by_precision") if e.ours else None
            isa_peaks = {p: peaks[e.isa or best][p]["gflops"] for p in ("fp32", "bf16")}
            row.update(times_s_per_seq=ts, median_s_per_seq=med, min_s_per_seq=min(ts),
                       n_per_pass=m.get("n_per_pass"), effective_gflop_per_s=nominal / 1e9 / med,
                       executed_gflop_per_s=None if executed is None else executed / 1e9 / med,
                       # ours: each precision's executed share at its own peak; frameworks:
                       # the nominal FLOPs at the peak of their precision
                       pct_peak=(pct_of_peak(split, med, isa_peaks) if split
                                 else 100 * (executed if executed is not None else nominal) / 1e9 / med / peak),
                       peak_gflops=peak, peak_rss_mb=rep.get("peak_rss_mb"), report=rep)
            if "output" in m and e.gelu in refs:
                cmp = compare_outputs(np.load(m["output"]), refs[e.gelu])
                row["fidelity"] = dict(cmp, vs=f"ours fp32 direct, {e.gelu} GELU",
                                       flag=fidelity_flag(e.family, cmp))
            res["engines"].append(row)
        for p in peers:
            if p not in by_key:
                res["engines"].append({"key": p, "label": RUNTIMES[p]["title"], "precision": RUNTIMES[p]["precision"],
                                       "ours": False, "status": run.status.get(p, "not run")})
    for g in res["groups"]:
        isa = g.get("isa") or best
        isa_peaks = {p: peaks.get(isa, peaks[best])[p]["gflops"] for p in ("fp32", "bf16")}
        for v in g.get("groups", {}).values():
            v["gflop_per_s"] = v["flops"] / 1e9 / v["s"] if v["s"] else None
            v["executed_gflop_per_s"] = v["executed_flops"] / 1e9 / v["s"] if v["s"] else None
            v["pct_peak"] = pct_of_peak(v["executed_by_precision"], v["s"], isa_peaks)
    res["targets"] = _targets(res["engines"])
    res["notes"] += run.notes
    res["machine"]["load_average_after"] = list(os.getloadavg())
    res["parent_peak_rss_mb"] = peak_rss_mb()
    return res


def _targets(rows: List[dict]) -> List[dict]:
    """Ours vs the best peer configuration of the same precision (same run, batch 1):
    the ratio of median times (ours / theirs; < 1: ours is faster)."""
    med = {r["key"]: r["median_s_per_seq"] for r in rows if "median_s_per_seq" in r}
    out = []
    for prec, peer_prec, peers in (("fp32", "fp32", ("ov", "ov-tput")), ("bf16", "bf16", ("ov-bf16", "ov-tput-bf16")),
                                   ("bf16-fast", "bf16", ("ov-bf16", "ov-tput-bf16")),
                                   ("fp32", "fp32", ("torch",)), ("bf16", "bf16", ("torch-bf16",))):
        mine = [r for r in rows if r.get("ours") and r["precision"] == prec and "median_s_per_seq" in r]
        theirs = [k for k in peers if k in med]
        if not mine or not theirs:
            continue
        fastest = min(mine, key=lambda r: r["median_s_per_seq"])
        peer = min(theirs, key=lambda k: med[k])
        out.append({"ours": fastest["key"], "peer": peer, "ratio": fastest["median_s_per_seq"] / med[peer]})
    return out


# ---------------------------------------------------------------------------------------------
# the report

def _f(v, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"


def _versions(rep: dict) -> str:
    bits = [f"{k} {rep[k]}" for k in ("version",) if rep.get(k)]
    for k in ("config", "hint", "precision", "streams", "requests", "threads", "cpu_capability"):
        if rep.get(k) not in (None, ""):
            bits.append(f"{k} {rep[k]}")
    return ", ".join(bits)


def _trial_range(peak: dict) -> str:
    """"lo-hi" GFLOP/s over a peak's trials at start and end: on a shared host, two vCPUs
    measured 98-201 GFLOP/s in 1-second fp32 trials of the same loop (Zen 3), so the spread
    says how much of the run the machine was itself."""
    t = list(peak["trials"]) + list(peak.get("end_trials", []))
    return f"{min(t):.1f}-{max(t):.1f}"


def format_table(res: dict) -> str:
    """The results as text: machine and measured peak, the same-run table at batch 1 with
    fidelity, the layer groups of our configurations, the batch sweep, predict-genome."""
    m, md = res["machine"], res["model"]
    lines = [f"basenji2-fast bench  {res['date']}  CPU: {m['cpu']} (family {m['family']} model {m['cpu_model']}), "
             f"{m['cores']} cores; SIMD flags: {' '.join(m['flags']) or '-'}",
             f"threads {res['settings']['threads']}; {res['settings']['rounds']} rounds x {res['settings']['passes']} "
             f"passes after 1 warm-up, engines in their own processes, order rotating; load average "
             f"{m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after"]
    for isa, pk in res["peak"].items():
        lines.append(f"measured peak, {isa}: fp32 {pk['fp32']['gflops']:.1f} GFLOP/s ({pk['fp32']['instruction']}), "
                     f"bf16 {pk['bf16']['gflops']:.1f} GFLOP/s ({pk['bf16']['instruction']}); best of "
                     f"{len(pk['fp32']['trials'])} trials at start ({pk['fp32']['start']:.1f} / "
                     f"{pk['bf16']['start']:.1f}) and end ({pk['fp32']['end']:.1f} / {pk['bf16']['end']:.1f}); "
                     f"fp32 trials {_trial_range(pk['fp32'])} (a wide range: the host gave these CPUs less "
                     f"than whole cores part of the time)")
    src = md.get("path") or md.get("source")
    lines.append(f"model: {src}; {md['seq_length']:,} bp -> {md['n_bins']} bins x {md['tracks']} tracks; "
                 f"{md['gflop']:.4g} GFLOP/sequence nominal (" + ", ".join(
                     f"{GROUP_TITLES[g]} {v:.4g}" for g, v in md["group_gflop"].items()) + ")")
    lines.append("")
    ref32 = next((r for r in res["engines"] if r.get("ours") and r["precision"] == "fp32" and "median_s_per_seq" in r),
                 None)
    hdr = (f"{'engine':<44} {'prec':<9} {'med s/seq':>9} {'min s/seq':>9} {'eff GF/s':>8} {'exec GF/s':>9} "
           f"{'%peak':>6} {'/ours32':>7} {'RSS MB':>7} {'max|d|':>8} {'r med':>8} {'r min':>8}  flag")
    lines += [hdr, "-" * len(hdr)]
    for r in res["engines"]:
        label = r["label"]
        if not r.get("ours") and r.get("report", {}).get("version"):
            label = f"{label} {r['report']['version'].split('+')[0]}"
        if "median_s_per_seq" not in r:
            lines.append(f"{label:<44} {r['precision']:<9} {r.get('status', 'not run')}")
            continue
        fid = r.get("fidelity", {})
        rel = r["median_s_per_seq"] / ref32["median_s_per_seq"] if ref32 else None
        lines.append(f"{label:<44} {r['precision']:<9} {r['median_s_per_seq']:>9.3f} {r['min_s_per_seq']:>9.3f} "
                     f"{r['effective_gflop_per_s']:>8.1f} {_f(r.get('executed_gflop_per_s'), '.1f', 9)} "
                     f"{r['pct_peak']:>5.1f}{'' if r.get('executed_gflop_per_s') else '*'}{' ' if r.get('executed_gflop_per_s') else ''}"
                     f"{_f(rel, '.2f', 7)} {_f(r.get('peak_rss_mb'), '.0f', 7)} "
                     f"{_f(fid.get('max_abs_diff'), '.1e', 8)} {_f(fid.get('r_median'), '.5f', 8)} "
                     f"{_f(fid.get('r_min'), '.5f', 8)}  {fid.get('flag', '')}")
    lines.append("")
    lines.append("eff GF/s: nominal GFLOP (a direct convolution's) / median time; exec GF/s: the arithmetic our engine "
                 "executes / median time; %peak: ours, the time its executed arithmetic takes at the measured peaks "
                 "(fp32 products at the fp32 peak, bf16 ones at the bf16 peak: a bf16 model's Winograd tower "
                 "multiplies in fp32) over the median time; frameworks (*), nominal GFLOP/s over the peak of the "
                 "row's precision (their executed arithmetic is unknown); /ours32: median over "
                 "ours fp32's; RSS: the worker's peak (VmHWM) over its life; max|d| and per-track Pearson r (median "
                 f"and min over the tracks whose reference varies, std >= {FIDELITY['min_std']}) of sequence 0 vs ours "
                 "fp32 direct with the same GELU (sigmoid for TensorFlow and ours on a Keras file, erf for the torch "
                 f"family and its ONNX export); WRONG: fp32 max|d| > {FIDELITY['fp32_max_abs']:g} or bf16 r min < "
                 f"{FIDELITY['bf16_r_min']}")
    for r in res["engines"]:
        rep = r.get("report")
        if rep and not r.get("ours"):
            lines.append(f"  {r['key']}: {_versions(rep)}")
    for t in res.get("targets", []):
        lines.append(f"{t['ours']} / {t['peer']} (median s/seq): {t['ratio']:.2f}")
    for n in res["notes"]:
        lines.append("note: " + n)
    for g in res["groups"]:
        lines.append("")
        if "groups" not in g:
            lines.append(f"layer groups {g['label']}: {g.get('unsupported') or g.get('error')}")
            continue
        lines.append(f"layer groups, {g['label']} (the pass's own per-op wall times, median of {g['repeats']}; "
                     "%peak: each precision's executed GFLOP at its measured peak):")
        hdr = (f"  {'group':<24} {'nominal GF':>10} {'exec GF':>8} {'median ms':>10} {'eff GF/s':>8} "
               f"{'exec GF/s':>9} {'%peak':>6}")
        lines += [hdr, "  " + "-" * (len(hdr) - 2)]
        tot_s = tot_f = tot_x = 0.0
        for name in GROUPS:
            v = g["groups"][name]
            tot_s, tot_f, tot_x = tot_s + v["s"], tot_f + v["flops"], tot_x + v["executed_flops"]
            lines.append(f"  {GROUP_TITLES[name]:<24} {v['flops'] / 1e9:>10.4g} {v['executed_flops'] / 1e9:>8.4g} "
                         f"{1e3 * v['s']:>10.1f} {_f(v['gflop_per_s'], '.1f', 8)} "
                         f"{_f(v['executed_gflop_per_s'], '.1f', 9)} {_f(v['pct_peak'], '.1f', 6)}")
        lines.append(f"  {'sum of groups':<24} {tot_f / 1e9:>10.4g} {tot_x / 1e9:>8.4g} {1e3 * tot_s:>10.1f} "
                     f"{tot_f / 1e9 / tot_s if tot_s else 0:>8.1f} {tot_x / 1e9 / tot_s if tot_s else 0:>9.1f}")
    if res["batches"]:
        lines.append("")
        lines.append(f"batch sweep ({res['settings']['batch_rounds']} rounds x 1 pass, fresh workers per batch): "
                     "median s/sequence (sequences/s), peak RSS MB")
        keys = list(dict.fromkeys(b["key"] for b in res["batches"]))
        batches = sorted({b["batch"] for b in res["batches"]})
        one = {r["key"]: r for r in res["engines"] if "median_s_per_seq" in r}
        lines.append(f"  {'engine':<44} " + " ".join(f"{'batch ' + str(b):>22}" for b in [1] + batches))
        for k in keys:
            cells = []
            r1 = one.get(k)
            cells.append(f"{r1['median_s_per_seq']:.3f} ({1 / r1['median_s_per_seq']:.2f}) {r1.get('peak_rss_mb') or 0:.0f}"
                         if r1 else "-")
            for b in batches:
                row = next((x for x in res["batches"] if x["key"] == k and x["batch"] == b), None)
                cells.append(f"{row['median_s_per_seq']:.3f} ({1 / row['median_s_per_seq']:.2f}) "
                             f"{row.get('peak_rss_mb') or 0:.0f}" if row and "median_s_per_seq" in row else "failed")
            label = next(b["label"] for b in res["batches"] if b["key"] == k)
            lines.append(f"  {label:<44} " + " ".join(f"{c:>22}" for c in cells))
    gr = res.get("gradients")
    if gr:
        lines.append("")
        st = res["settings"]
        lines.append(f"gradients, fp32, batch 1 ({st['rounds']} rounds x {st['gradient_passes']} passes, same run): "
                     "d(sum of the predictions over all tracks and all bins) / d(one-hot input)")
        hdr = f"  {'engine':<66} {'med s/seq':>9} {'min s/seq':>9} {'RSS MB':>7}"
        lines += [hdr, "  " + "-" * (len(hdr) - 2)]
        for r in gr["rows"]:
            if "median_s_per_seq" not in r:
                lines.append(f"  {r['label']:<66} {r.get('status', 'not run')}")
                continue
            lines.append(f"  {r['label']:<66} {r['median_s_per_seq']:>9.3f} {r['min_s_per_seq']:>9.3f} "
                         f"{_f(r.get('peak_rss_mb'), '.0f', 7)}")
        if gr.get("gradients_over_forward") is not None:
            lines.append(f"  ours gradients / ours forward (median s/seq): {gr['gradients_over_forward']:.2f}")
        if gr.get("torch_over_gradients") is not None:
            lines.append(f"  torch autograd / ours gradients (median s/seq): {gr['torch_over_gradients']:.2f}")
        a = gr.get("agreement")
        if a:
            lines.append(f"  ours vs torch autograd: max |d| / max |grad| {a['max_rel']:.2e} (median position "
                         f"{a['median_rel']:.1e}, relative L2 {a['l2_rel']:.2e}, max |grad| {a['max_abs_grad']:.3g})")
    g = res.get("genome")
    if g:
        lines.append("")
        if "windows" in g:
            lines.append(f"predict-genome, {g['precision']} {g['isa']}: {g['windows']} windows ({g['length_bp']:,} bp "
                         f"synthetic genome, {g['tracks']} tracks written as bigWigs) in {g['wall_s']:.1f} s = "
                         f"{g['windows_per_s']:.3f} windows/s ({g['wall_s'] / g['windows']:.2f} s per window)")
        else:
            lines.append(f"predict-genome: {g.get('unsupported') or g.get('error') or g}")
    lines.append("")
    b = res["build"]
    if b.get("engine_so_sha256"):
        lines.append(f"engine {b['engine_so']} sha256 {b['engine_so_sha256'][:12]}, git {b.get('git_commit', '?')[:10]}"
                     f"{' + local changes' if b.get('git_dirty') else ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the command

def _csv(value: str, what: str, allowed=None) -> List[str]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{what}: empty list")
    if allowed is not None:
        bad = [s for s in items if s not in allowed]
        if bad:
            raise ValueError(f"{what}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return items


def options_from_args(args) -> BenchOptions:
    """The command line's options, checked (one-line ValueError naming the option)."""
    isas = available_isas()
    peer_python = {}
    for item in args.peer_python or []:
        name, sep, path = item.partition("=")
        if not sep or not path or name not in set(RUNTIMES) | {r.split("-")[0] for r in RUNTIMES}:
            raise ValueError(f"--peer-python {item!r}: expected RUNTIME=PYTHON, RUNTIME one of "
                             f"{', '.join(sorted(set(RUNTIMES) | {r.split('-')[0] for r in RUNTIMES}))}")
        peer_python[name] = path
    opts = BenchOptions(
        model=args.model,
        precisions=_csv(args.precisions, "--precisions", PRECISIONS) if args.precisions else PRECISIONS,
        algorithms=_csv(args.algorithms, "--algorithms") if args.algorithms else None,
        isas=(isas if args.isas == "all" else _csv(args.isas, "--isas", isas)) if args.isas else None,
        peers=[] if args.no_peer else (None if args.peers in (None, "all") else _csv(args.peers, "--peers", RUNTIMES)),
        threads=args.threads, rounds=args.rounds, passes=args.passes,
        batches=[int(b) for b in _csv(args.batch, "--batch")],
        batch_engines=_csv(args.batch_engines, "--batch-engines"), batch_rounds=args.batch_rounds,
        gradient_passes=args.gradient_passes, genome_windows=args.genome_windows, genome_tracks=args.genome_tracks,
        group_repeats=args.group_repeats,
        peak_trials=args.peak_trials, seed=args.seed, cache_dir=args.cache_dir, peer_python=peer_python)
    if opts.algorithms is not None and not engine_accepts_algorithm():
        raise ValueError("--algorithms: this engine has one convolution algorithm")
    for name, v in (("--threads", opts.threads), ("--rounds", opts.rounds), ("--passes", opts.passes),
                    ("--batch-rounds", opts.batch_rounds), ("--group-repeats", opts.group_repeats),
                    ("--peak-trials", opts.peak_trials), ("--batch", min(opts.batches)),
                    ("--genome-tracks", opts.genome_tracks)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1")
    if opts.genome_windows < 0:
        raise ValueError("--genome-windows must be >= 0")
    if opts.gradient_passes < 0:
        raise ValueError("--gradient-passes must be >= 0")
    return opts


def run_bench_command(args) -> int:
    opts = options_from_args(args)
    if args.json:
        from ._io import check_output

        check_output(args.json, inputs=[args.model])  # before the minutes of measuring
    res = run_bench(opts, log=(lambda *a, **k: print(*a, file=sys.stderr, flush=True, **k)))
    print(format_table(res))
    if args.json:
        from ._io import write_json

        write_json(args.json, res)
    return 0


def add_bench_subcommand(sub) -> None:
    p = sub.add_parser("bench", help="speed, %% of the measured peak, memory and fidelity vs every framework",
                       description="This engine next to TensorFlow, torch, torch.compile, ONNX Runtime and "
                                   "OpenVINO in the same run (each in its own process, rounds alternating): "
                                   "s/sequence, effective and executed GFLOP/s, % of the measured peak, peak RSS, "
                                   "max |d| and per-track r against our fp32 output; layer groups; batch sweep; "
                                   "predict-genome windows/s. Peers need pip install 'basenji2-fast[peers]'.")
    p.add_argument("-m", "--model", default=None,
                   help="model file (.h5/.pth/.safetensors); a Keras .h5 also runs on TensorFlow. Default: random "
                        "full-size Basenji2 weights (cached), no TensorFlow")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all engines (default 2)")
    p.add_argument("--passes", type=int, default=5, help="timed passes per engine per round (default 5)")
    p.add_argument("--group-repeats", type=int, default=3, help="timed runs per layer (default 3)")
    p.add_argument("--threads", type=int, default=default_threads(), help="threads for every engine (default: all)")
    p.add_argument("--precisions", default=None, help=f"ours, comma-separated, of {','.join(PRECISIONS)} (default all)")
    p.add_argument("--algorithms", default=None,
                   help="ours, comma-separated convolution algorithms (default: direct,fast when the engine has them)")
    p.add_argument("--isas", default=None, help="our kernel sets, comma-separated, or 'all' (default: the best)")
    p.add_argument("--peers", default=None,
                   help=f"framework runtimes, comma-separated, of {','.join(RUNTIMES)} or 'all' (default all; torch "
                        "bf16 only on CPUs with native bf16 unless named)")
    p.add_argument("--no-peer", action="store_true", help="ours only")
    p.add_argument("--peer-python", action="append", metavar="RUNTIME=PYTHON",
                   help="run a runtime (or family: tf, torch, ort, ov) in another interpreter, e.g. "
                        "tf=/opt/tf/bin/python (repeatable; it needs numpy and the framework only)")
    p.add_argument("--batch", default="1,2,4,8", help="batch sizes, comma-separated (default 1,2,4,8); "
                                                      "1 is the main table")
    p.add_argument("--batch-engines", default=",".join(DEFAULT_BATCH_ENGINES),
                   help="engines of the batch sweep: ours, ours-fp32, ours-bf16, ... and runtime names "
                        f"(default {','.join(DEFAULT_BATCH_ENGINES)})")
    p.add_argument("--batch-rounds", type=int, default=2, help="rounds of one pass per batch size > 1 (default 2)")
    p.add_argument("--gradient-passes", type=int, default=2,
                   help="passes per round of our forward, our gradients and torch autograd, all tracks and bins "
                        "(default 2; 0: skip)")
    p.add_argument("--genome-windows", type=int, default=4,
                   help="predict-genome windows of a synthetic genome, bf16 (default 4; 0: skip)")
    p.add_argument("--genome-tracks", type=int, default=10, help="tracks predict-genome writes (default 10)")
    p.add_argument("--peak-trials", type=int, default=5, help="trials of the peak loops, best kept (default 5)")
    p.add_argument("--cache-dir", default=None,
                   help="where the weights copy and the ONNX export are kept (default ~/.cache/basenji2-fast/bench)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run_bench_command)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        sys.exit(_worker_main(json.loads(sys.argv[2])))
    raise SystemExit("usage: basenji2-fast bench (this module's own entry point is for its worker processes)")
