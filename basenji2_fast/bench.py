"""``basenji2-fast bench``: seconds per sequence, GFLOP/s and share of the machine's FMA
peak per layer group, and peak RSS, per precision and kernel set, next to basenji2-pytorch
in the same run.

Every engine configuration runs in its own long-lived worker process (``python -m
basenji2_fast.bench --_worker CONFIG``), so peak memory is per engine and load from other
processes on the machine hits all engines alike: after one warm-up pass each, round ``r``
runs one pass of every worker, the order rotating. Peak RSS comes from separate short
processes that load the model and predict one sequence. The parent never imports torch
nor builds the model (on Linux a child's ``ru_maxrss`` starts at its parent's RSS).

The FLOP count (:func:`op_flops`) is the one place FLOPs are defined: 2·k·c_in·c_out per
output position of each convolution (before pooling) and 2·channels·tracks per bin for a
head; GELU, bias, residual adds and pooling are not counted.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .spec import PRECISIONS, ConvOp, CropOp, Head, ModelSpec

GROUPS = ("stem", "tower", "dilated", "head")
GROUP_TITLES = {"stem": "stem", "tower": "conv tower", "dilated": "dilated residual tower",
                "head": "final 1x1 + head"}
MAGIC = "@@b2bench "
IDLE_S = 0.3  # pause before each timed pass: the previous worker's OpenMP threads spin briefly


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
    """FLOPs of one sequence, per op and for the head.

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
    """{group: FLOPs of one sequence} in :data:`GROUPS` order (from :func:`op_flops`)."""
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


def fma_peak(flags, ghz: float, cores: int, vendor: str = "", family: Optional[int] = None) -> dict:
    """FMA-limited peak GFLOP/s of ``cores`` cores at ``ghz``, for fp32 and bf16.

    Assumptions (stated in the result): two FMA pipes per core (AMD Zen 2-5, most Intel
    server cores); an FMA is 2 FLOPs per lane. AVX2+FMA: 2 x 8 lanes x 2 = 32 fp32
    FLOP/cycle. AVX-512: 2 x 16 x 2 = 64, except on AMD family 25 (Zen 4), whose 512-bit
    instructions run as two 256-bit halves (32). bf16: with ``avx512_bf16`` the dot-product
    instruction (vdpbf16ps) does twice the fp32 rate; without it bf16 is computed with
    fp32 FMAs (the fp32 peak). AMX is not modelled.
    """
    flags = set(flags)
    if "avx512f" in flags:
        zen4 = vendor == "AuthenticAMD" and family == 25
        per, isa = (32, "AVX-512 (Zen 4: 256-bit datapath)") if zen4 else (64, "AVX-512")
    elif "avx2" in flags and "fma" in flags:
        per, isa = 32, "AVX2+FMA"
    elif "avx" in flags:
        per, isa = 16, "AVX (no FMA: 1 mul + 1 add pipe)"
    else:
        per, isa = 8, "SSE"
    bf16 = "avx512_bf16" in flags
    per_bf16 = 2 * per if bf16 else per
    return {
        "fp32": per * ghz * cores, "bf16": per_bf16 * ghz * cores, "ghz": ghz, "cores": cores,
        "flop_per_cycle_core": {"fp32": per, "bf16": per_bf16},
        "assumption": (f"{isa}: 2 FMA pipes/core, {per} fp32 FLOP/cycle/core"
                       + (f", bf16 {per_bf16} (vdpbf16ps = 2x fp32)" if bf16 else ", bf16 = fp32 rate (no avx512_bf16)")
                       + f"; x {ghz:.2f} GHz x {cores} core(s)"),
    }


# ---------------------------------------------------------------------------------------------
# process helpers (also used by benchmarks/bench_vs_pytorch.py)

def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def ru_maxrss_mb() -> float:
    """getrusage(RUSAGE_SELF).ru_maxrss in MB (Linux reports KiB, macOS bytes)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it exec'd, in MB: ``VmHWM`` (Linux's
    ``ru_maxrss`` of a child starts at its parent's RSS at fork time), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return ru_maxrss_mb()


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
    import hashlib

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


def reply(obj) -> None:
    """A worker's answer to its parent: one marked JSON line on stdout."""
    sys.stdout.write(MAGIC + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(handlers: dict, report: dict) -> None:
    """A worker's loop: say ``ready`` (with ``report``), then answer each stdin line
    ``COMMAND [ARG]`` with ``handlers[COMMAND](ARG)``; ``finish`` adds the peak RSS to
    ``report``, answers it and returns."""
    reply({"ready": True, **report})
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "finish":
            if "finish" in handlers:
                handlers["finish"](arg)
            report.update(peak_rss_mb=peak_rss_mb(), ru_maxrss_mb=ru_maxrss_mb(),
                          torch_imported="torch" in sys.modules)
            reply(report)
            return
        try:
            reply(handlers[cmd](arg))
        except Exception as e:  # noqa: BLE001  (the parent reports it and goes on)
            reply({"error": f"{type(e).__name__}: {e}"})


class Worker:
    """One engine in its own long-lived process, driven line by line (see :func:`serve`)."""

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

        torch.save(random_basenji2_pytorch(seed).state_dict(), pth)
        convert(pth, st, gelu="erf")
        return {"source": "basenji2-pytorch random (peers.random_basenji2_pytorch)", "gelu": "erf"}
    from .formats import engine_format
    from .formats.published import BASENJI2_PARAMS

    engine_format.save(random_spec(BASENJI2_PARAMS["model"], seed), st)
    return {"source": "random_spec(published Basenji2 params)", "gelu": "sigmoid"}


# ---------------------------------------------------------------------------------------------
# layer-group timing (in an engine worker)

def time_layer_groups(model, repeats: int, seed: int = 0) -> dict:
    """Median seconds per layer group of one sequence, on ``model``'s precision and kernels.

    * stem: the stem alone over the whole sequence (a copy of the model cut after the stem,
      plus a crop to two positions so almost nothing is copied out), through ``embed``;
    * every other conv op: the engine's ``op_range`` over all its output positions, from
      random input rows, on a copy of the model whose ops take their input pre-activated.
      ``op_range`` otherwise applies the input GELU in a serial pre-pass that the fused
      pipeline never runs (there the previous op's epilogue writes the activated tensor);
      each call still copies its input rows into a padded buffer and allocates its output;
    * head: a one-op model of ``n_bins`` positions whose trunk output feeds the head
      (a 1x1 table-gather stem, < 0.1% of the time), through ``predict``.

    Not timed here: GELU epilogues, crops, tile halos, buffer management (the difference
    between the whole pass and the sum of the groups). Returns {"ops": [...], "groups":
    {group: {"s", "flops"}}}.
    """
    from .model import Model

    spec = model.spec
    kw = dict(precision=model.precision, threads=model.threads, isa=model.info()["isa"])
    rng = np.random.default_rng(seed)
    entries = op_flops(spec)
    lengths, chans = [], []
    L, C = spec.seq_length, 4
    for op in spec.ops:
        lengths.append(L), chans.append(C)
        if isinstance(op, ConvOp):
            L, C = L // op.pool, op.c_out
        else:
            L -= op.left + op.right

    def median_time(fn) -> float:
        fn()  # warm-up (buffers, page faults)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    times = {}
    stem = spec.ops[0]
    ls = spec.seq_length // stem.pool
    cut = ModelSpec(spec.seq_length, [stem, CropOp("bench_crop", ls // 2 - 1, ls - ls // 2 - 1)], {},
                    final_gelu=True, gelu=spec.gelu)
    stem_model = Model(cut, **kw)
    codes = random_codes(1, spec.seq_length, seed)
    times[0] = median_time(lambda: stem_model.embed(codes))
    stem_model = None  # its buffers go before the next model's

    twin = dataclasses.replace(spec, ops=[dataclasses.replace(op, gelu_in=False) if i and isinstance(op, ConvOp)
                                          else op for i, op in enumerate(spec.ops)])
    twin_model = Model(twin, **kw)
    for e in entries:
        i = e["index"]
        if not i:
            continue
        op = spec.ops[i]
        x = rng.standard_normal((lengths[i], op.c_in), np.float32)
        res = rng.standard_normal((lengths[i], op.c_out), np.float32) if op.residual is not None else None
        times[i] = median_time(lambda: twin_model._engine.op_range(i, x, 0, res, 0, lengths[i]))  # noqa: B023
    twin_model = None

    name = next(iter(spec.heads), None)
    if name is not None:
        h = spec.heads[name]
        n, c = L, h.weight.shape[0]
        feed = ConvOp("bench_feed", rng.standard_normal((1, 4, c), np.float32), np.zeros(c, np.float32))
        head_model = Model(ModelSpec(n, [feed], {name: h}, final_gelu=True, gelu=spec.gelu), **kw)
        hcodes = random_codes(1, n, seed + 1)
        times[None] = median_time(lambda: head_model.predict(hcodes))

    groups = {g: {"s": 0.0, "flops": 0} for g in GROUPS}
    ops = []
    for e in entries:
        s = times[e["index"]]
        ops.append(dict(e, s=s))
        groups[e["group"]]["s"] += s
        groups[e["group"]]["flops"] += e["flops"]
    return {"ops": ops, "groups": groups, "repeats": repeats}


# ---------------------------------------------------------------------------------------------
# workers

def _worker_ours(cfg: dict) -> None:
    from . import load

    t0 = time.perf_counter()
    model = load(cfg["model"], precision=cfg["precision"], threads=cfg["threads"], gelu=cfg.get("gelu"))
    load_s = time.perf_counter() - t0
    codes = np.load(cfg["codes"])
    info = model.info()

    def run(arg):
        b = int(arg or 1)
        t = time.perf_counter()
        model.predict(codes[:b], batch_size=b)
        return {"t": time.perf_counter() - t}

    def groups(arg):
        return time_layer_groups(model, int(arg or 1))

    def save(path):
        np.save(path, model.predict(codes[:1]))
        return {"saved": path}

    serve({"run": run, "groups": groups, "save": save},
          {"engine": "basenji2-fast", "precision": model.precision, "isa": info["isa"], "threads": info["threads"],
           "load_s": load_s, **engine_binary()})


def _worker_torch(cfg: dict) -> None:
    import torch
    from basenji2_pytorch import Basenji2, basenji2_params

    torch.set_num_threads(cfg["threads"])
    t0 = time.perf_counter()
    if cfg.get("pth"):
        model = Basenji2(copy.deepcopy(basenji2_params["model"]))
        model.load_state_dict(torch.load(cfg["pth"], map_location="cpu", weights_only=True))
    else:
        from .peers import random_basenji2_pytorch

        model = random_basenji2_pytorch(cfg.get("seed", 0))
    model.eval()
    load_s = time.perf_counter() - t0
    x = torch.from_numpy(codes_to_onehot_ncl(np.load(cfg["codes"])))
    bf16 = cfg["precision"] == "bf16"

    def forward(b):
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x[:b])
            return model(x[:b])

    def run(arg):
        b = int(arg or 1)
        t = time.perf_counter()
        forward(b)
        return {"t": time.perf_counter() - t}

    def save(path):
        np.save(path, forward(1).float().numpy())
        return {"saved": path}

    serve({"run": run, "save": save},
          {"engine": "basenji2-pytorch", "precision": "bf16 autocast" if bf16 else "fp32", "load_s": load_s,
           "torch_version": torch.__version__, "threads": torch.get_num_threads()})


def _worker_rss(cfg: dict) -> None:
    """Load the model and predict one sequence; report this process's peak RSS."""
    codes = np.load(cfg["codes"])[:1]
    try:
        if cfg["engine"] == "torch":
            import torch

            torch.set_num_threads(cfg["threads"])
            from basenji2_pytorch import Basenji2, basenji2_params

            model = Basenji2(copy.deepcopy(basenji2_params["model"]))
            model.load_state_dict(torch.load(cfg["pth"], map_location="cpu", weights_only=True))
            model.eval()
            t0 = time.perf_counter()
            with torch.inference_mode():
                x = torch.from_numpy(codes_to_onehot_ncl(codes))
                if cfg["precision"] == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(x)
                else:
                    model(x)
        else:
            from . import load

            model = load(cfg["model"], precision=cfg["precision"], threads=cfg["threads"], gelu=cfg.get("gelu"))
            t0 = time.perf_counter()
            model.predict(codes)
    except ValueError as e:  # a precision or kernel set this build does not run
        reply({"unsupported": str(e)})
        return
    reply({"peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(), "torch_imported": "torch" in sys.modules,
           "first_pass_s": time.perf_counter() - t0})


def _worker_main(cfg: dict) -> int:
    kind = cfg["kind"]
    if kind == "prep":
        reply(_prepare_weights(cfg["seed"], Path(cfg["pth"]) if cfg.get("pth") else None, Path(cfg["st"])))
    elif kind == "ours":
        try:
            _worker_ours(cfg)
        except ValueError as e:  # precision / ISA this build does not run: the parent reports it
            reply({"unsupported": str(e)})
    elif kind == "torch":
        _worker_torch(cfg)
    elif kind == "rss":
        _worker_rss(cfg)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    return 0


# ---------------------------------------------------------------------------------------------
# parent

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
    return [sys.executable, "-m", "basenji2_fast.bench", "--_worker", json.dumps(cfg)]


def _one_shot(cfg: dict, env: dict) -> dict:
    r = subprocess.run(_worker_cmd(cfg), env=env, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith(MAGIC):
            return json.loads(line[len(MAGIC):])
    raise RuntimeError(f"{cfg['kind']} worker failed (status {r.returncode}): {r.stderr.strip()[-2000:]}")


def available_isas() -> List[str]:
    """Kernel sets this build holds and this CPU runs, best first."""
    from .model import build_info

    return [s for s in str(build_info().get("isas", "")).split(",") if s]


def _peer_available() -> Optional[str]:
    """None when torch and basenji2-pytorch import, else why not (checked in a child so the
    parent stays small)."""
    r = subprocess.run([sys.executable, "-c", "import torch, basenji2_pytorch"], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


def _tf_available() -> Optional[str]:
    import importlib.util

    return None if importlib.util.find_spec("tensorflow") else "tensorflow is not installed"


def run_bench(model: Optional[str], precisions, isas, threads: int, repeats: int, batches, peer: bool, seed: int,
              ghz: Optional[float], group_repeats: Optional[int] = None, peer_precisions=None, log=print) -> dict:
    """Run the benchmark; returns the results (see :func:`format_table`)."""
    from .formats import load_spec
    from .version import __version__

    cpu = cpu_info()
    ghz = ghz or ((cpu["mhz"] or 0) / 1000.0) or None
    cores = min(threads, cpu["cores"])
    peak = fma_peak(cpu["flags"], ghz, cores, cpu["vendor"], cpu["family"]) if ghz else None
    res = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu["model"], "vendor": cpu["vendor"], "family": cpu["family"],
                    "cpu_model": cpu["cpu_model"], "cores": cpu["cores"], "logical_cpus": os.cpu_count(),
                    "flags": [f for f in cpu["flags"] if f.startswith(("avx", "fma", "amx"))],
                    "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": list(os.getloadavg())},
        "peak": peak,
        "settings": {"threads": threads, "repeats": repeats, "warmup": 1, "batches": list(batches), "seed": seed,
                     "group_repeats": group_repeats or repeats},
        "versions": {"basenji2_fast": __version__, "numpy": np.__version__},
        "build": build_provenance(),
        "engines": [], "groups": [], "notes": [],
    }
    isas = list(isas or available_isas())
    peer_why = None if peer else "--no-peer"
    if peer and peer_why is None:
        peer_why = _peer_available()
    tf_why = _tf_available() if peer else "--no-peer"
    with tempfile.TemporaryDirectory(prefix="b2bench-") as tmp:
        tmp = Path(tmp)
        pth = None
        if model is None:
            st = tmp / "basenji2_random.safetensors"
            if peer_why is None:
                pth = tmp / "basenji2_random.pth"
            log(f"building a random full-size Basenji2 ({'basenji2-pytorch weights' if pth else 'no torch'}) ...")
            prep = _one_shot({"kind": "prep", "seed": seed, "pth": str(pth) if pth else None, "st": str(st)},
                             _env(threads))
            model_path, gelu = str(st), None
            res["model"] = {"path": None, **prep}
        else:
            model_path, gelu = str(model), None
            res["model"] = {"path": model_path, "source": "file"}
            if model_path.endswith(".pth") and peer_why is None:
                pth, gelu = Path(model_path), "erf"  # basenji2-pytorch's own file and GELU: same maths
        spec = load_spec(model_path, gelu=gelu)
        flops = group_flops(spec)
        total = sum(flops.values())
        head_name = next(iter(spec.heads))
        res["model"].update(seq_length=spec.seq_length, n_bins=spec.n_bins, tracks=spec.heads[head_name].tracks,
                            head=head_name, gelu=spec.gelu, gflop=total / 1e9,
                            group_gflop={g: f / 1e9 for g, f in flops.items()})
        is_basenji2 = (spec.seq_length, spec.n_bins, spec.heads[head_name].tracks) == (131072, 896, 5313)
        same_weights = pth is not None and is_basenji2
        if peer_why is None and not is_basenji2:
            peer_why = "the model is not the full-size Basenji2 (basenji2-pytorch builds only that)"
        if peer_why is None and not same_weights:
            # the peer loads a file too (its RSS then counts a load, as ours does)
            res["notes"].append("basenji2-pytorch runs its own random weights (same architecture): "
                                "timings compare, outputs do not")
            pth = tmp / "peer_random.pth"
            _one_shot({"kind": "prep", "seed": seed, "pth": str(pth), "st": str(tmp / "peer_unused.safetensors")},
                      _env(threads))
        del spec
        codes_path = tmp / "codes.npy"
        np.save(codes_path, random_codes(max(batches), res["model"]["seq_length"], seed + 1000))

        # Peak RSS: one process per configuration that loads and predicts one sequence
        # (ours with the first kernel set only: memory hardly depends on it).
        configs = [("ours", p, i) for p in precisions for i in isas]
        rss, unsupported = {}, {}

        def measure_rss(eng, prec, isa):
            cfg = {"kind": "rss", "engine": eng, "precision": prec, "threads": threads, "codes": str(codes_path),
                   "model": model_path, "gelu": gelu, "pth": str(pth) if pth else None, "seed": seed}
            log(f"peak RSS: {eng} {prec} ... ", end="")
            r = _one_shot(cfg, _env(threads, isa))
            if "unsupported" in r:
                unsupported[(eng, prec)] = r["unsupported"]
                log(f"not supported by this build ({r['unsupported']})")
            else:
                rss[(eng, prec)] = r
                log(f"{r['peak_rss_mb']:.0f} MB")

        for prec in precisions:
            measure_rss("ours", prec, isas[0])
        if peer_why is None:
            native_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu["flags"]))
            for prec in peer_precisions or precisions:
                if peer_precisions is None and prec == "bf16":
                    # A ratio needs our bf16 row; and without bf16 instructions torch's bf16
                    # autocast falls back to kernels that take minutes per sequence.
                    if ("ours", "bf16") in unsupported:
                        res["notes"].append("basenji2-pytorch bf16 autocast: not run (no basenji2-fast bf16 to "
                                            "compare; --peer-precisions fp32,bf16 runs it)")
                        continue
                    if not native_bf16:
                        res["notes"].append("basenji2-pytorch bf16 autocast: not run (this CPU has no avx512_bf16/"
                                            "amx_bf16: torch's bf16 path takes minutes per sequence; "
                                            "--peer-precisions fp32,bf16 runs it)")
                        continue
                configs.append(("torch", prec, None))
                measure_rss("torch", prec, None)

        workers: Dict[tuple, Worker] = {}
        rows: Dict[tuple, dict] = {}
        try:
            for eng, prec, isa in configs:
                key = (eng, prec, isa)
                if (eng, prec) in unsupported:
                    rows[key] = {"unsupported": unsupported[(eng, prec)]}
                    continue
                cfg = {"kind": eng, "precision": prec, "threads": threads, "codes": str(codes_path),
                       "model": model_path, "gelu": gelu, "pth": str(pth) if pth else None, "seed": seed}
                name = f"{eng} {prec} {isa or ''}".strip()
                log(f"loading {name} ... ", end="")
                w = Worker(name, _worker_cmd(cfg), _env(threads, isa))
                if "unsupported" in w.report:
                    rows[key] = {"unsupported": w.report["unsupported"]}
                    log(f"not supported ({w.report['unsupported']})")
                    w.kill()
                    continue
                workers[key] = w
                time.sleep(IDLE_S)
                warm = w.ask(f"run {max(batches)}")
                log(f"{w.report['load_s']:.1f} s; warm-up {warm['t']:.2f} s")
            keys = list(workers)
            times = {(k, b): [] for k in keys for b in batches}
            for b in batches:
                for r in range(repeats):
                    order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
                    for k in order:
                        time.sleep(IDLE_S)
                        times[(k, b)].append(workers[k].ask(f"run {b}")["t"] / b)
                    log(f"batch {b} round {r + 1}/{repeats}: " + ", ".join(
                        f"{workers[k].name} {times[(k, b)][-1]:.2f}" for k in keys) + " s/seq")
            outs = {}
            for k in keys:
                out = tmp / f"out_{'_'.join(str(x) for x in k)}.npy"
                workers[k].ask(f"save {out}")
                outs[k] = out
            for k in keys:
                if k[0] == "ours":
                    log(f"layer groups: {workers[k].name} ... ", end="")
                    g = workers[k].ask(f"groups {group_repeats or repeats}")
                    if "error" in g:
                        log(g["error"])
                        res["groups"].append({"precision": k[1], "isa": k[2], "error": g["error"]})
                        continue
                    log("done")
                    res["groups"].append({"precision": k[1], "isa": workers[k].report["isa"], **g})
            for k in keys:
                rows[k] = dict(workers[k].finish(), times_s_per_seq={str(b): times[(k, b)] for b in batches})
        finally:
            for w in workers.values():
                w.kill()

        ref_key = ("torch", "fp32", None)
        ref = np.load(outs[ref_key]) if same_weights and ref_key in outs else None
        for eng, prec, isa in configs:
            row = {"engine": "basenji2-fast" if eng == "ours" else "basenji2-pytorch", "precision": prec,
                   "isa": isa, **rows.get((eng, prec, isa), {})}
            if eng == "torch":
                row["precision"] = "bf16 autocast" if prec == "bf16" else "fp32"
            if (eng, prec) in rss:
                row["peak_rss_mb"] = rss[(eng, prec)]["peak_rss_mb"]
                row["ru_maxrss_mb"] = rss[(eng, prec)]["ru_maxrss_mb"]
            if "times_s_per_seq" in row:
                row["batches"] = {}
                for b in batches:
                    ts = row["times_s_per_seq"][str(b)]
                    med = statistics.median(ts)
                    row["batches"][str(b)] = {"median_s_per_seq": med, "min_s_per_seq": min(ts),
                                              "gflop_per_s": total / 1e9 / med,
                                              "pct_peak": (100 * total / 1e9 / med / peak[prec]) if peak else None}
                if ref is not None and (eng, prec, isa) != ref_key:
                    row["max_abs_diff_vs_torch_fp32"] = float(np.abs(np.load(outs[(eng, prec, isa)]).astype(
                        np.float64) - ref).max())
            res["engines"].append(row)
        if ref is not None:
            res["model"]["max_abs_output"] = float(np.abs(ref).max())
        # ratios: a peer's median over ours, same batch (same-precision peer and fp32 peer)
        meds = {(r["engine"], r["precision"].split()[0], r["isa"]): r["batches"] for r in res["engines"]
                if "batches" in r}
        for r in res["engines"]:
            if r["engine"] != "basenji2-fast" or "batches" not in r:
                continue
            for b, stats in r["batches"].items():
                for peer_prec in PRECISIONS:
                    pb = meds.get(("basenji2-pytorch", peer_prec, None))
                    if pb:
                        stats[f"speedup_vs_torch_{peer_prec}"] = pb[b]["median_s_per_seq"] / stats["median_s_per_seq"]
    for g in res["groups"]:
        for name, v in g.get("groups", {}).items():
            v["gflop_per_s"] = v["flops"] / 1e9 / v["s"] if v["s"] else None
            v["pct_peak"] = 100 * v["gflop_per_s"] / peak[g["precision"]] if peak and v["gflop_per_s"] else None
    res["peer_skipped"] = peer_why
    res["tensorflow"] = tf_why or "importable, but this command does not drive it yet"
    res["machine"]["load_average_after"] = list(os.getloadavg())
    res["parent_peak_rss_mb"] = peak_rss_mb()
    return res


def _f(v, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"


def format_table(res: dict) -> str:
    """The results as text: machine, peak, the whole-model table, the layer-group table."""
    m, pk, md = res["machine"], res["peak"], res["model"]
    lines = [f"basenji2-fast bench  {res['date']}  CPU: {m['cpu']} (family {m['family']} model {m['cpu_model']}), "
             f"{m['cores']} cores; SIMD flags: {' '.join(m['flags']) or '-'}",
             f"threads {res['settings']['threads']}; repeats {res['settings']['repeats']} after 1 warm-up, "
             f"engines interleaved; load average {m['load_average_before'][0]:.2f} before, "
             f"{m['load_average_after'][0]:.2f} after"]
    if pk:
        lines.append(f"FMA peak: fp32 {pk['fp32']:.1f} GFLOP/s, bf16 {pk['bf16']:.1f} GFLOP/s  [{pk['assumption']}]")
    else:
        lines.append("FMA peak: unknown (no clock in /proc/cpuinfo; pass --ghz)")
    src = md.get("path") or md.get("source")
    lines.append(f"model: {src}; {md['seq_length']:,} bp -> {md['n_bins']} bins x {md['tracks']} tracks; "
                 f"{md['gflop']:.4g} GFLOP/sequence (" + ", ".join(
                     f"{GROUP_TITLES[g]} {v:.4g}" for g, v in md["group_gflop"].items()) + ")")
    lines.append("")
    batches = res["settings"]["batches"]
    hdr = (f"{'engine':<17} {'precision':<13} {'isa':<8} {'batch':>5} {'med s/seq':>9} {'min s/seq':>9} "
           f"{'GFLOP/s':>8} {'%peak':>6} {'x torch32':>9} {'x torch16':>9} {'RSS MB':>7} {'max|d| t32':>10}")
    lines += [hdr, "-" * len(hdr)]
    for r in res["engines"]:
        head = f"{r['engine']:<17} {r['precision']:<13} {r['isa'] or '-':<8}"
        if "unsupported" in r:
            lines.append(f"{head} {r['precision'].split()[0]}: not supported by this build")
            continue
        for b in batches:
            s = r["batches"][str(b)]
            lines.append(f"{head} {b:>5} {s['median_s_per_seq']:>9.3f} {s['min_s_per_seq']:>9.3f} "
                         f"{s['gflop_per_s']:>8.1f} {_f(s['pct_peak'], '.1f', 6)} "
                         f"{_f(s.get('speedup_vs_torch_fp32'), '.2f', 8)}{'x' if 'speedup_vs_torch_fp32' in s else ' '} "
                         f"{_f(s.get('speedup_vs_torch_bf16'), '.2f', 8)}{'x' if 'speedup_vs_torch_bf16' in s else ' '} "
                         f"{_f(r.get('peak_rss_mb'), '.0f', 7)} {_f(r.get('max_abs_diff_vs_torch_fp32'), '.1e', 10)}")
    if res.get("peer_skipped"):
        lines.append(f"basenji2-pytorch: not run ({res['peer_skipped']})")
    lines.append(f"TensorFlow basenji: {res['tensorflow']}")
    for n in res["notes"]:
        lines.append("note: " + n)
    lines.append("x torchNN = basenji2-pytorch median (fp32 / bf16 autocast) / this median, same batch; %peak of "
                 "this machine's FMA peak for the row's precision; RSS = peak of a process that loads the model "
                 "and predicts one sequence (VmHWM)")
    for g in res["groups"]:
        lines.append("")
        if "error" in g:
            lines.append(f"layer groups {g['precision']} {g['isa']}: {g['error']}")
            continue
        lines.append(f"layer groups, {g['precision']} {g['isa']} (median of {g['repeats']}; stem via embed of the "
                     "stem alone, convs via op_range, head via a head-only model):")
        hdr = f"  {'group':<24} {'GFLOP':>8} {'median ms':>10} {'GFLOP/s':>8} {'%peak':>6}"
        lines += [hdr, "  " + "-" * (len(hdr) - 2)]
        tot_s = tot_f = 0.0
        for name in GROUPS:
            v = g["groups"][name]
            tot_s += v["s"]
            tot_f += v["flops"]
            lines.append(f"  {GROUP_TITLES[name]:<24} {v['flops'] / 1e9:>8.4g} {1e3 * v['s']:>10.1f} "
                         f"{_f(v['gflop_per_s'], '.1f', 8)} {_f(v['pct_peak'], '.1f', 6)}")
        lines.append(f"  {'sum of groups':<24} {tot_f / 1e9:>8.4g} {1e3 * tot_s:>10.1f} "
                     f"{tot_f / 1e9 / tot_s if tot_s else 0:>8.1f}")
    lines.append("")
    b = res["build"]
    if b.get("engine_so_sha256"):
        lines.append(f"engine {b['engine_so']} sha256 {b['engine_so_sha256'][:12]}, git {b.get('git_commit', '?')[:10]}"
                     f"{' + local changes' if b.get('git_dirty') else ''}")
    return "\n".join(lines)


def _csv(value: str, what: str, allowed=None) -> List[str]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{what}: empty list")
    if allowed is not None:
        bad = [s for s in items if s not in allowed]
        if bad:
            raise ValueError(f"{what}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return items


def run_bench_command(args) -> int:
    precisions = _csv(args.precisions, "--precisions", PRECISIONS)
    isas = _csv(args.isas, "--isas", available_isas()) if args.isas else None
    batches = [int(b) for b in _csv(args.batch, "--batch")]
    if args.threads < 1 or args.repeats < 1 or min(batches) < 1:
        raise ValueError("--threads, --repeats and --batch must be >= 1")
    res = run_bench(args.model, precisions, isas, args.threads, args.repeats, batches, not args.no_peer, args.seed,
                    args.ghz, args.group_repeats,
                    _csv(args.peer_precisions, "--peer-precisions", PRECISIONS) if args.peer_precisions else None,
                    log=(lambda *a, **k: print(*a, file=sys.stderr, flush=True, **k)))
    print(format_table(res))
    if args.json:
        from ._io import write_json

        write_json(args.json, res)
    return 0


def add_bench_subcommand(sub) -> None:
    p = sub.add_parser("bench", help="speed (per layer group, vs basenji2-pytorch) and peak memory on this machine",
                       description="Seconds per sequence, GFLOP/s and % of this machine's FMA peak per layer "
                                   "group, and peak RSS, per precision and kernel set, next to basenji2-pytorch "
                                   "(fp32 and bf16 autocast) in the same run, engines interleaved.")
    p.add_argument("-m", "--model", default=None,
                   help="model file (.safetensors/.h5/.pth); default: a random full-size Basenji2 "
                        "(basenji2-pytorch's weights when torch is installed, so every engine runs the same)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per engine after one warm-up (default 5)")
    p.add_argument("--group-repeats", type=int, default=None, help="timed runs per layer (default: --repeats)")
    p.add_argument("--threads", type=int, default=default_threads(), help="threads for every engine (default: all)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated, of fp32,bf16 (default both)")
    p.add_argument("--isas", default=None, help="our kernel sets, comma-separated (default: all this CPU runs)")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated (default 1)")
    p.add_argument("--no-peer", action="store_true", help="skip basenji2-pytorch")
    p.add_argument("--peer-precisions", default=None,
                   help="basenji2-pytorch precisions, of fp32,bf16 (default: fp32, and bf16 autocast when "
                        "basenji2-fast runs bf16 and the CPU has bf16 instructions)")
    p.add_argument("--ghz", type=float, default=None, help="clock for the FMA peak (default: cpu MHz of /proc/cpuinfo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run_bench_command)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        sys.exit(_worker_main(json.loads(sys.argv[2])))
    raise SystemExit("usage: basenji2-fast bench (this module's own entry point is for its worker processes)")
