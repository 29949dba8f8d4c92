"""The Python face of the engine: load a model, predict tracks, extract embeddings.

Batching, input conversion, ensembles (reverse complement, shifts) and head/track
selection live here; the arithmetic runs in the compiled engine (``_engine``).
"""
from __future__ import annotations

import math
import mmap
import numbers
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import cuda_backend, dna
from .formats import engine_format
from .genome import as_fasta, centred_span, check_span, fetch, parse_interval
from .spec import (ALGORITHMS, CODE_UNIFORM, PRECISIONS, ConvOp, Head, ModelSpec, check_bool,
                   check_int_sequence, check_n_encoding, check_positive_int, is_integer)
from .version import __version__

try:  # the package imports without the extension; compute says what is missing
    from . import _engine
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _engine = None
    _ENGINE_IMPORT_ERROR = exc


SequenceInput = Union[str, bytes, Sequence[str], np.ndarray]


def _require_engine():
    if _engine is None:
        raise ImportError(
            "basenji2_fast's compiled engine is not built (" + str(_ENGINE_IMPORT_ERROR) + "); "
            "reinstall with `pip install -e .` to compute predictions")
    return _engine


def build_info() -> dict:
    """What this installation can run: version, compiled kernels, compiler, thread pool, DNA module."""
    cuda = cuda_backend.build_info()
    info = {"version": __version__, "engine": _engine is not None, "cython_dna": dna.is_available(),
            "devices": ["cpu"] + (["cuda"] if cuda["devices"] else [])}
    if _engine is not None:
        info.update(_engine.build_info())
    info["cuda"] = cuda  # {compiled, archs, nvcc, devices, device_error}
    return info


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _drop_mapped_pages(*arrays: np.ndarray) -> None:
    """Let the OS drop the pages under these arrays when they view a memory-mapped file.

    Called as soon as the engine has packed its own copy of a weight array, so the model is
    never resident twice (mapped pages plus packed copy: 240 MB instead of 120 for Basenji2
    in fp32); the pages come back from the page cache if read again. Arrays that do not view
    a file mapping (e.g. read from HDF5) are left alone: for anonymous memory the same call
    would discard the data.
    """
    page = mmap.PAGESIZE
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.size == 0:
            continue
        root, m = a, a.base
        while m is not None and not isinstance(m, mmap.mmap):
            root, m = m, getattr(m, "base", None)
        if m is None or not isinstance(root, np.ndarray) or m.closed:
            continue
        start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        if start < 0 or start + a.nbytes > len(m):
            continue
        lo, hi = start // page * page, min(len(m), -(-(start + a.nbytes) // page) * page)
        try:
            m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (AttributeError, OSError, ValueError):  # not on every platform; only a saving
            pass


def _is_bf16_bits(a: np.ndarray) -> bool:
    """Weights kept as bfloat16 bit patterns (uint16) from a bf16 file, not widened."""
    return isinstance(a, np.ndarray) and a.dtype == np.uint16


def _engine_weight(a: np.ndarray) -> np.ndarray:
    """A weight array as the engine borrows it: bf16 bits as they are, else float32 (a
    view, no copy, when it already is contiguous float32: e.g. a file mapping)."""
    return np.ascontiguousarray(a) if _is_bf16_bits(a) else np.ascontiguousarray(a, np.float32)


def bf16_plan(spec: ModelSpec) -> tuple:
    """Which parts of ``spec`` compute in bf16 under ``precision="bf16"``:
    (set of op indices, heads in bf16).

    Every conv whose input is activated, but the last, and the heads. The stem stays a table
    gather in fp32 (no multiplies; its table is [k, 7, C]), a conv without pre-activation
    stays fp32 (its raw input is the fp32 residual stream), and so do the raw (pre-activation)
    tensors that residual blocks add: only the activated tensors that convs read are bf16.
    The last conv (Basenji2's 1x1, 768 -> 1536, under 1% of the FLOPs) stays fp32: on the
    full-size fixture it lifts the median per-track Pearson r against fp32 from 0.99946 to
    0.99950 for 2.4 MB of weights (keeping the head in fp32 too would add 16 MB for +0.00004;
    benchmarks/bf16_accuracy.py --variants).
    """
    convs = [i for i, op in enumerate(spec.ops) if isinstance(op, ConvOp)]
    ops = {i for i in convs if i > 0 and spec.ops[i].gelu_in}
    if len(convs) > 1:
        ops.discard(convs[-1])
    return ops, bool(spec.final_gelu)


#: The Winograd tile sizes m of F(m, k) that fast convolutions may use, per precision of the
#: products ("fp32"; "fp32-in-bf16", the fp32 products of precision="bf16" / "bf16-fast"; or
#: "bf16" under precision="bf16-fast") and kernel size; each layer takes
#: the one that executes the fewest products (:func:`fast_tile`). The largest is chosen from
#: the error measured in the engine on the TensorFlow golden files (max |delta| of fp32, every
#: fast layer on; bounds tf-small 1e-4, tf-full 1e-3 and 1e-4 of the largest output):
#: direct 3.8e-6 / 7.2e-5 (4.5e-6); F(4,5)+F(4,3) 3.6e-6 / 6.7e-5 (4.2e-6); F(6,5)+F(6,3)
#: 7.2e-6 / 1.1e-4 (6.7e-6); F(8,5)+F(8,3) 2.2e-5 / 2.4e-4 (1.5e-5). F(6, k) keeps a tenfold
#: margin to the bounds for weights other than the fixtures'; F(8, k) saves 5-6% of an fp32
#: pass (Zen 4, paired runs) but would need every per-layer and workflow bound relaxed.
#: Inside a bf16 model the fp32 products' error is far below bf16 rounding's (r against fp32
#: unchanged to 1e-5), so there F(8, k) is allowed: 4% of a bf16 pass (Zen 4, paired runs).
#: bf16 products (precision="bf16-fast"; benchmarks/bf16_accuracy.py --fast-variants): per-track
#: r against fp32 over tf-full's tracks that vary, median / min, bound 0.997 / 0.9966:
#: F(2,5)+F(2,3) 0.99901 / 0.99779; F(4,5)+F(4,3) 0.99874 / 0.99717; F(6, k) is far below
#: (one layer's error grows ~5x from F(4, k), FAST_CONV.md).
FAST_TILES = {"fp32": {3: (4, 6), 5: (4, 6)}, "fp32-in-bf16": {3: (4, 6, 8), 5: (4, 6, 8)},
              "bf16": {3: (2, 4), 5: (2, 4)}}


#: algorithm="auto" uses tile blocks of at most this many positions (m * dilation): a
#: single-base substitution recomputes every block its cone touches, so long blocks widen the
#: cones of predict_substitutions at each layer. On Basenji2 (tf-full, CPU seconds, same run)
#: fast dilated layers save 1-5% of a full pass but double the cost per substitution (0.37 s
#: instead of 0.18; F(2,3) only: 0.29): auto keeps the tower and the undilated first block.
#: An undilated layer's cone is a few positions wide whatever its block, so it may take any
#: of its tiles (F(8, k) inside a bf16 model).
FAST_AUTO_MAX_BLOCK = 6


def fast_tile(op: ConvOp, length: int, products: str = "fp32", algorithm: str = "auto") -> int:
    """The tile size m of Winograd F(m, k) for conv ``op`` over ``length`` input positions, or
    0 for a direct convolution.

    Of :data:`FAST_TILES`, the m whose tiles execute the fewest products: n = m + k - 1 per
    tile, tiles of m outputs per dilation phase in whole blocks of m * dilation positions
    (a short, strongly dilated layer computes a partial last block of padding). "fast": every
    conv whose shape allows it (kernel size 3 or 5, not both pooled and dilated). "auto":
    blocks of at most :data:`FAST_AUTO_MAX_BLOCK` positions (any block of an undilated layer),
    and only where the products fall to 80% of the direct convolution's or less and both
    channel counts are at least 8 (else the transforms cost about as much as they save).
    """
    if algorithm == "direct":
        return 0
    sizes = FAST_TILES[products].get(op.k, ())
    if algorithm == "auto":
        sizes = tuple(m for m in sizes if op.dilation == 1 or m * op.dilation <= FAST_AUTO_MAX_BLOCK)
    if not sizes or (op.pool != 1 and op.dilation != 1):
        return 0

    def products_of(m):  # per input and output channel
        return (m + op.k - 1) * -(-length // (m * op.dilation)) * op.dilation

    m = min(sizes, key=lambda m: (products_of(m), m))
    if algorithm == "fast":
        return m
    return m if products_of(m) <= 0.8 * op.k * length and min(op.c_in, op.c_out) >= 8 else 0


def compute_plan(spec: ModelSpec, precision: str = "fp32", algorithm: str = "auto") -> tuple:
    """How each op of ``spec`` computes: ([{"bf16": bool, "fast_m": int} per op], heads in bf16).

    ``fast_m``: Winograd F(m, k) tiles, or 0 for a direct convolution (:func:`fast_tile`).
    fp32: nothing in bf16. bf16: the ops and heads of :func:`bf16_plan` in bf16, but a conv that
    runs fast convolution stays fp32: fp32 Winograd products are cheaper than bf16 direct ones
    (the tower: 60 instead of 185 GFLOP, at F(8, k), ``FAST_TILES["fp32-in-bf16"]``) and more
    accurate. bf16-fast: the bf16 ops whose kernel size has a bf16 tile in :data:`FAST_TILES`
    run Winograd with bf16 products (transformed weights and inputs rounded to bf16, fp32
    sums); the others as under bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {PRECISIONS}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; expected one of {ALGORITHMS}")
    bf16_ops, head_bf16 = bf16_plan(spec) if precision != "fp32" else (set(), False)
    plan, length = [], spec.seq_length
    for i, op in enumerate(spec.ops):
        if not isinstance(op, ConvOp):
            plan.append({"bf16": False, "fast_m": 0})
            length -= op.left + op.right
            continue
        bf16, m = i in bf16_ops, 0
        if i and bf16 and precision == "bf16-fast":
            m = fast_tile(op, length, "bf16", algorithm)
        if i and not m:
            m = fast_tile(op, length, "fp32" if precision == "fp32" else "fp32-in-bf16", algorithm)
            bf16 = bf16 and not m
        plan.append({"bf16": bf16, "fast_m": m})
        length //= op.pool
    return plan, head_bf16


def _gflop(flops: float) -> float:
    """FLOPs as GFLOP to 5 significant digits (info() of small and full-size models alike)."""
    return float(f"{flops / 1e9:.5g}")


#: What :meth:`Model.saliency` returns: the gradient, the one-hot input times it, or the gradient
#: less its mean over the four bases.
SALIENCY_METHODS = ("grad", "input_x_grad", "centered")


@dataclass(frozen=True)
class Ensemble:
    """basenji's test-time ensemble, and how sequences go through the engine.

    rc : also predict the reverse complement of every member, flipped back (``--rc``)
    shifts : the members' shifts (``--shifts``); the prediction is the mean over all members
    n_encoding : how N enters the model: "zeros" or "uniform" (0.25 in each channel)
    batch_size : sequences per engine call (None: the model's default)

    Checked here, for every entry point that takes these arguments: rc a bool, shifts a
    non-empty sequence of integers, batch_size None or an integer >= 1 (TypeError /
    ValueError naming the argument).
    """

    rc: bool = False
    shifts: Tuple[int, ...] = (0,)
    n_encoding: str = "zeros"
    batch_size: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "rc", check_bool("rc", self.rc))
        object.__setattr__(self, "shifts", check_int_sequence("shifts", self.shifts, "(-1, 0, 1)"))
        check_n_encoding(self.n_encoding)
        object.__setattr__(self, "batch_size", check_positive_int("batch_size", self.batch_size, "the default"))

    def passes(self) -> List[Tuple[int, bool]]:
        """The members in basenji's order: (shift, reverse-complemented), forward strand first."""
        return [(s, False) for s in self.shifts] + ([(s, True) for s in self.shifts] if self.rc else [])

    def options(self) -> dict:
        """The ensemble as :meth:`Model.predict`'s keywords (``rc, shifts, n_encoding, batch_size``)."""
        return {"rc": self.rc, "shifts": self.shifts, "n_encoding": self.n_encoding, "batch_size": self.batch_size}


class _TrackRequestFields(NamedTuple):
    head: object = None
    tracks: object = None
    targets: object = None


class TrackRequest(_TrackRequestFields):
    """What a user asked to predict, not yet resolved against a model (see
    :func:`basenji2_fast.windows.resolve_tracks` and :func:`~basenji2_fast.windows.plan_heads`).

    head : None (the default head), a head name, "both" / "all", "a,b" or a list of heads
    tracks : None (all), a selector, or for several heads a dict {head: selector}
    targets : None, a targets file (path or Targets), or a dict {head: targets}

    The types are checked here (a TypeError / ValueError naming the argument); the values
    against the model where they are resolved.
    """

    __slots__ = ()

    def __new__(cls, head=None, tracks=None, targets=None):
        _check_head_argument(head)
        for h, t in (tracks.items() if isinstance(tracks, dict) else [(None, tracks)]):
            _check_track_selector("tracks" if h is None else f"tracks[{h!r}]", t)
        for h, t in (targets.items() if isinstance(targets, dict) else [(None, targets)]):
            if not (t is None or isinstance(t, (str, os.PathLike)) or hasattr(t, "identifier")):
                raise TypeError(f"{'targets' if h is None else f'targets[{h!r}]'}={t!r}: expected the path of a "
                                "targets file or a Targets")
        return super().__new__(cls, head, tracks, targets)


def _check_head_argument(head) -> None:
    """head: None, a name (or "both" / "all" / "a,b"), or a non-empty list of names."""
    if head is None or (isinstance(head, str) and head.strip()):
        return
    if isinstance(head, (list, tuple)) and head and all(isinstance(h, str) and h for h in head):
        return
    raise TypeError(f"head={head!r}: expected a head name, 'both', or a list of head names")


def _check_track_selector(name: str, tracks) -> None:
    """A track selector: None (all), a non-empty selector string, a selection (an object with
    ``columns``), or a non-empty sequence of integers."""
    if tracks is None or hasattr(tracks, "columns"):
        return
    if isinstance(tracks, str):
        if not tracks.strip():
            raise ValueError(f"{name}={tracks!r}: an empty selector (None selects every track)")
        return
    check_int_sequence(name, tracks)


def _pass_codes(codes: np.ndarray, shift: int, flip: bool) -> np.ndarray:
    """The input of one ensemble member (:meth:`Ensemble.passes`): shifted, then reverse
    complemented when ``flip``. codes: uint8 [B, L] -> C-contiguous [B, L]."""
    c = dna.shift_codes(codes, shift)
    return np.ascontiguousarray(dna.revcomp(c)) if flip else c


class Model:
    """A Basenji-family model on the engine.

    Parameters
    ----------
    spec : ModelSpec
        The model, as returned by :func:`basenji2_fast.load_spec`.
    device : "cpu" (default), "cuda", "cuda:N" or "auto" (the GPU when one is usable, else the CPU)
        "cuda" without a usable GPU or without the compiled CUDA module is a one-line RuntimeError.
    precision : None (the device's: "fp32" on the CPU, "bf16" on CUDA), "fp32", "bf16" or "bf16-fast"
        bf16: weights packed once as bfloat16, the activations that convs read stored as
        bfloat16 (rounded to nearest even), products accumulated in fp32 and the fused
        epilogue (bias, residual, pool, GELU, softplus) in fp32 (see :func:`bf16_plan`);
        layers that run fast convolution stay fp32 (:func:`compute_plan`). On CPUs with
        avx512_bf16 the convs use vdpbf16ps. bf16-fast (opt-in, less accurate): the fast
        convolutions multiply in bf16 too. The CUDA engine computes in bf16 only (tensor cores).
    algorithm : "auto" (default), "fast" or "direct"
        Winograd fast convolution (fewer multiplies, a few times the rounding error of a
        direct convolution) where a layer's shape allows it ("fast") or where it also saves
        arithmetic ("auto"; :func:`fast_tile`), or direct convolution everywhere. Results of a
        model do not depend on batch size, threads, tiling or incremental recomputation with
        either. The CUDA engine runs direct convolution ("auto" means that there).
    threads : int, optional
        Threads for the kernels (default: the CPUs this process may use).
    isa : str, optional
        Force a CPU kernel set ("avx512bf16", "avx512", "avx2", "generic"); default: the best
        this CPU runs (or the environment variable ``BASENJI2_FAST_ISA``).
    tile_mb : float or None
        Largest activation tile of the stem and conv tower, in MB: they run tile by tile
        along the sequence (halos recomputed at tile edges), so the full-resolution
        activations (131,072 x 288 for Basenji2) are never held. None: whole tensors.
        Results are identical either way. (CPU only.)
    graphs : bool
        CUDA only: capture the forward pass once per batch shape as a CUDA Graph and replay it
        (saves the kernel launches' overhead at small batches; results are identical).
    """

    def __init__(self, spec: ModelSpec, device: str = "cpu", precision: Optional[str] = None,
                 threads: Optional[int] = None, isa: Optional[str] = None, tile_mb: Optional[float] = 16.0,
                 graphs: bool = False, algorithm: str = "auto"):
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not supported; use one of {PRECISIONS}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={algorithm!r}; expected one of {ALGORITHMS}")
        if tile_mb is not None and (not isinstance(tile_mb, numbers.Real) or isinstance(tile_mb, (bool, np.bool_))
                                    or not math.isfinite(tile_mb) or tile_mb <= 0):
            raise ValueError(f"tile_mb={tile_mb!r}: expected a number of MB > 0, or None for whole tensors")
        kind, index = cuda_backend.resolve_device(device, precision)
        precision = precision or ("bf16" if kind == "cuda" else "fp32")
        if kind == "cuda" and precision != "bf16":
            raise ValueError(f"precision={precision!r}: the CUDA engine computes in bf16 (fp32 accumulation); "
                             "fp32 runs on device='cpu'")
        if kind == "cuda" and algorithm == "fast":
            raise ValueError("algorithm='fast': the CUDA engine runs direct convolution; use 'direct' or 'auto'")
        self.spec = spec.validate()
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.precision = precision
        self.algorithm = algorithm
        self.threads = (_default_threads() if threads is None
                        else check_positive_int("threads", threads, "every CPU this process may use"))
        plan, head_bf16 = self._plan = compute_plan(spec, precision, "direct" if kind == "cuda" else algorithm)
        ops = []
        for i, op in enumerate(spec.ops):
            if isinstance(op, ConvOp):
                ops.append({"type": "conv", "kernel": _engine_weight(op.kernel),
                            "bias": np.ascontiguousarray(op.bias, np.float32), "dilation": int(op.dilation),
                            "pool": int(op.pool), "gelu_in": bool(op.gelu_in),
                            "residual": -1 if op.residual is None else int(op.residual), "bf16": plan[i]["bf16"],
                            "fast_m": plan[i]["fast_m"]})
            else:
                ops.append({"type": "crop", "left": int(op.left), "right": int(op.right)})
        if kind == "cuda":
            self._engine = cuda_backend.CudaEngine(spec.seq_length, spec.gelu, spec.final_gelu, ops, index, graphs)
        else:
            tile_floats = 0 if tile_mb is None else max(1, int(tile_mb * (1 << 20) / 4))

            def packed(i):  # the engine holds op i's packed copy: release the file's pages under it
                _drop_mapped_pages(ops[i]["kernel"], spec.ops[i].kernel, spec.ops[i].bias)

            self._engine = _require_engine().Engine(spec.seq_length, spec.gelu, spec.final_gelu, ops, self.threads,
                                                    isa or "", tile_floats, head_bf16, packed)
        ops = None  # the engines packed their own copies: let the borrowed arrays go
        self._default_batch = cuda_backend.DEFAULT_BATCH if kind == "cuda" else 8
        self.head_names: List[str] = list(spec.heads)
        self._head_index = {}
        for name, head in spec.heads.items():
            weight = _engine_weight(head.weight)
            if kind == "cuda" and _is_bf16_bits(weight):  # the CUDA module takes fp32 heads (it packs bf16 itself)
                weight = (weight.astype(np.uint32) << 16).view(np.float32)
            self._head_index[name] = self._engine.add_head(weight, np.ascontiguousarray(head.bias, np.float32),
                                                           head.activation)
            _drop_mapped_pages(weight, head.weight, head.bias)
            del weight

    # Geometry ---------------------------------------------------------------------------------
    @property
    def seq_length(self) -> int:
        return self.spec.seq_length

    @property
    def n_bins(self) -> int:
        return self.spec.n_bins

    @property
    def bin_size(self) -> int:
        return self.spec.bin_size

    def info(self) -> dict:
        """Geometry, heads, GELU variant, the kernels that run and the arithmetic they do.

        ``flops_per_sequence``: :meth:`executed_flops`. ``layers`` (CPU): per conv op its
        algorithm ("stem" gather, "direct", or "F(m,k)" Winograd tiles), the precision of its
        products, and GFLOP per sequence for a direct convolution (``gflop_nominal``) and as
        executed (``gflop_executed``); ``gflop_nominal`` / ``gflop_executed``: the same over
        the trunk and every track of the first head (a multiply-add counts 2).
        """
        info = {
            "seq_length": self.seq_length, "bin_size": self.bin_size, "n_bins": self.n_bins,
            "crop_bins": self.spec.crop_bins, "trunk_channels": self.spec.trunk_channels,
            "heads": {n: h.tracks for n, h in self.spec.heads.items()}, "gelu": self.spec.gelu,
            "n_params": self.spec.n_params(), "device": self.device, "precision": self.precision,
            "algorithm": self.algorithm,
            "threads": self.threads, "isa": self._engine.isa, "stem_tower_tiles": self._engine.prefix_tiles,
            "weight_mb": round(self._engine.weight_bytes / 1e6, 1),
            "flops_per_sequence": self.executed_flops(),
            "version": __version__,
            "source": self.spec.metadata.get("source"),
        }
        if info["flops_per_sequence"] is not None:
            info.update(self._layers(info["flops_per_sequence"]))
        return info

    def _layers(self, executed: dict) -> dict:
        """Per conv op: algorithm, precision and GFLOP, nominal and executed (see :meth:`info`)."""
        plan, head_bf16 = self._plan
        layers, nominal, length = [], 0, self.seq_length
        for i, op in enumerate(self.spec.ops):
            if not isinstance(op, ConvOp):
                length -= op.left + op.right
                continue
            f = int(self._engine.op_flops(i, 0, length, True))
            layers.append({"op": i, "name": op.name, "algorithm": self._engine.op_algorithm(i),
                           "precision": "bf16" if plan[i]["bf16"] else "fp32",
                           "gflop_nominal": _gflop(f), "gflop_executed": _gflop(executed["ops"][i])})
            nominal += f
            length //= op.pool
        head = executed["heads"].get(self.head_names[0], 0) if self.head_names else 0
        return {"layers": layers, "head_precision": "bf16" if head_bf16 else "fp32",
                "gflop_nominal": _gflop(nominal + head), "gflop_executed": _gflop(executed["trunk"] + head)}

    def executed_flops(self) -> Optional[dict]:
        """The arithmetic one sequence's forward pass executes here, in FLOPs (a multiply-add
        counts 2), as the engine counts it: ``{"ops": [per op of spec.ops], "trunk": their
        sum, "heads": {name: every track}}``. What a direct convolution would compute is
        :func:`basenji2_fast.bench.op_flops`; this is what this engine's algorithm does (the
        stem's table gather adds rows instead of multiplying). None where the engine does
        not count (CUDA)."""
        if not hasattr(self._engine, "pass_flops"):
            return None
        ops = [int(f) for f in self._engine.pass_flops]
        heads = {name: int(self._engine.head_flops(self._head_index[name], self.spec.heads[name].tracks,
                                                   self.n_bins)) for name in self.head_names}
        return {"ops": ops, "trunk": sum(ops), "heads": heads}

    def __repr__(self) -> str:
        heads = ", ".join(f"{n}={h.tracks}" for n, h in self.spec.heads.items())
        return (f"<basenji2_fast.Model {self.seq_length} bp -> {self.n_bins} x {self.bin_size} bp bins; "
                f"heads {heads}; {self.spec.gelu} GELU; {self.device}/{self.precision}/{self._engine.isa}>")

    # Inputs -----------------------------------------------------------------------------------
    def encode(self, x: SequenceInput) -> tuple:
        """Any accepted input -> (codes uint8 [B, L], literal_zero_rows).

        x: a DNA string, a list of strings, uint8 codes [B, L] / [L] (A,C,G,T,N = 0..4; 5 = an N
        that is 0.25 in each channel whatever ``n_encoding`` says, as a uniform one-hot row
        reads; any other code is an error), or a float one-hot [B, L, 4] / [L, 4] in A,C,G,T
        order.
        """
        zero_rows = False
        if isinstance(x, (str, bytes)) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, bytes))):
            codes = dna.encode_batch(x)
        else:
            arr = np.asarray(x)
            # uint8 [L, 4] is a one-hot (as codes it would be L sequences of 4 bases)
            onehot_u8 = arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == 4 != self.seq_length
            if arr.dtype == np.uint8 and arr.ndim in (1, 2) and not onehot_u8:
                codes = arr[None] if arr.ndim == 1 else arr
                if codes.size and codes.max() > CODE_UNIFORM:
                    b, p = np.argwhere(codes > CODE_UNIFORM)[0]
                    raise ValueError(f"base code {codes[b, p]} at sequence {b}, position {p} (expected 0..5)")
            elif arr.ndim in (2, 3) and arr.shape[-1] == 4 and arr.dtype != object:
                codes, zero_rows = dna.onehot_to_codes(arr)
            else:
                raise ValueError(f"cannot read sequences from an array of shape {arr.shape} and dtype {arr.dtype}: "
                                 "expected strings, uint8 codes [B, L] or a one-hot [B, L, 4]")
        if codes.shape[1] != self.seq_length:
            raise ValueError(f"sequence length {codes.shape[1]:,} != the model's seq_length {self.seq_length:,}")
        return np.ascontiguousarray(codes, np.uint8), zero_rows

    def _n_uniform(self, n_encoding: str, zero_rows: bool) -> bool:
        check_n_encoding(n_encoding)
        # A float one-hot's all-zero rows are literal zeros, whatever n_encoding says.
        return n_encoding == "uniform" and not zero_rows

    def _resolve_heads(self, head) -> List[str]:
        if head is None:
            return [self.head_names[0]]
        if head == "both" or head == "all":
            return list(self.head_names)
        _check_head_argument(head)
        names = [head] if isinstance(head, str) else list(head)
        for n in names:
            if n not in self._head_index:
                raise ValueError(f"no head {n!r}; this model has {self.head_names}")
        return names

    # Compute ----------------------------------------------------------------------------------
    def predict(self, x: SequenceInput, head: Optional[str] = None,
                tracks: Union[None, Iterable[int], Dict[str, Iterable[int]]] = None, rc: bool = False,
                shifts: Sequence[int] = (0,), batch_size: Optional[int] = None,
                n_encoding: str = "zeros",
                strand_pair: Union[None, Sequence[int], Dict[str, Sequence[int]]] = None,
                out: str = "numpy",
                ) -> Union[np.ndarray, Dict[str, np.ndarray]]:
        """Predict tracks.

        Parameters
        ----------
        x : str, list of str, uint8 codes [B, L] or float one-hot [B, L, 4]
        head : None (the first head), a head name, or "both" (every head from one trunk pass)
        tracks : column indices of the head to compute (only those are computed), or for
            several heads a dict {head: indices}
        rc, shifts : ensemble as basenji's ``--rc`` / ``--shifts``: the mean over every shift,
            and with ``rc`` also the reverse complement of each, its predictions flipped back
        batch_size : sequences per engine call (bounds the memory of the outputs)
        n_encoding : "zeros" or "uniform" (0.25 in each channel) for N
        strand_pair : list of int [tracks], or for several heads a dict {head: list}
            For each output track (the requested ones, or the whole head), the position
            among the output tracks of its opposite-strand partner (its own position for
            unstranded tracks). In reverse-complement passes the partners' predictions are
            swapped after the bins are flipped back, as basenji's ``SwitchReverse``: a
            reverse-complemented input predicts the + strand track in the - strand column.
            Ignored without ``rc``. :func:`basenji2_fast.targets.select_tracks` makes it
            from a targets file's ``strand_pair`` column.

        out : "numpy" (default) or "cupy" (device="cuda" only): cupy arrays that the engine
            writes in place. x may also be uint8 codes on the GPU (cupy, or anything with
            ``__cuda_array_interface__``); they are read there, without a copy to the host.

        Returns
        -------
        float32 [B, n_bins, tracks], or {head: [B, n_bins, tracks]} for head="both".
        """
        if out not in cuda_backend.OUTPUTS:
            raise ValueError(f"out={out!r}; expected one of {cuda_backend.OUTPUTS}")
        device_in = cuda_backend.is_device_array(x)
        on_device = out == "cupy" or device_in
        if on_device and not self.device.startswith("cuda"):
            raise ValueError("GPU arrays in or out (cupy, out='cupy') need a model loaded with device='cuda'")
        ensemble = self._ensemble(rc, shifts, n_encoding, batch_size)
        codes, zero_rows = (None, False) if device_in else self.encode(x)
        n_uniform = self._n_uniform(n_encoding, zero_rows)
        names = self._resolve_heads(head)
        requests = [self._request(n, self._per_head("tracks", tracks, n, names)) for n in names]
        pairs = [self._strand_pair(n, self._per_head("strand_pair", strand_pair, n, names),
                                   len(idx) or self.spec.heads[n].tracks) for n, (_, idx) in zip(names, requests)]
        passes = ensemble.passes()
        if on_device:
            outs = cuda_backend.predict_on_device(self, x if device_in else codes, names, requests, pairs, passes,
                                                  n_uniform, batch_size, out)
            return self._by_head(head, names, outs)
        B = codes.shape[0]
        bs = ensemble.batch_size or max(1, min(B, self._default_batch))
        outs = [np.empty((B, self.n_bins, len(r[1]) or self.spec.heads[n].tracks), np.float32)
                for n, r in zip(names, requests)]
        for b0 in range(0, B, bs):
            chunk = codes[b0:b0 + bs]
            for k, (shift, flip) in enumerate(passes):
                c = _pass_codes(chunk, shift, flip)
                if k == 0:  # forward strand, first shift: straight into the outputs (one copy in memory)
                    self._engine.predict(c, requests, n_uniform, [out[b0:b0 + bs] for out in outs])
                    continue
                preds = self._engine.predict(c, requests, n_uniform)
                for o, p, pair in zip(outs, preds, pairs):
                    if flip:
                        # bins back in forward order; then the - strand column takes what
                        # the reversed input predicted for the + strand, and vice versa
                        p = p[:, ::-1] if pair is None else p[:, ::-1][:, :, pair]
                    o[b0:b0 + bs] += p
        if len(passes) > 1:
            for o in outs:
                o /= len(passes)
        return self._by_head(head, names, outs)

    def _ensemble(self, rc, shifts, n_encoding, batch_size=None) -> Ensemble:
        """The entry points' ensemble arguments, checked (:class:`Ensemble`; a shift must be
        shorter than the sequence)."""
        ensemble = Ensemble(rc, shifts, n_encoding, batch_size)
        far = next((s for s in ensemble.shifts if abs(s) >= self.seq_length), None)
        if far is not None:
            raise ValueError(f"shifts: shift {far:,} moves the whole {self.seq_length:,}-bp sequence out of the window")
        return ensemble

    @staticmethod
    def _per_head(what: str, value, head: str, names: List[str]):
        """A per-head argument (``tracks``, ``strand_pair``): a dict {head: value} names only
        predicted heads; a plain value applies to every head."""
        if not isinstance(value, dict):
            return value
        stray = [k for k in value if k not in names]
        if stray:
            raise ValueError(f"{what} given for head {stray[0]!r}, which is not predicted (heads: {', '.join(names)})")
        return value.get(head)

    @staticmethod
    def _by_head(head, names, outs):
        if head in ("both", "all") or (not isinstance(head, str) and head is not None):
            return dict(zip(names, outs))
        return outs[0]

    def _one_head(self, x: SequenceInput, head, tracks, n_encoding: str, strand_pair, what: str) -> tuple:
        """The inputs of a computation on one head: (codes [B, L], n_uniform, head name, engine
        head index, requested columns ([] = all), output tracks, strand pairs or None).
        what: the computation, for the error when ``head`` names several heads."""
        codes, zero_rows = self.encode(x)
        n_uniform = self._n_uniform(n_encoding, zero_rows)
        names = self._resolve_heads(head)
        if len(names) != 1:
            raise ValueError(f"{what} for one head at a time")
        name = names[0]
        head_index, idx = self._request(name, tracks)
        n_out = len(idx) or self.spec.heads[name].tracks
        return codes, n_uniform, name, head_index, idx, n_out, self._strand_pair(name, strand_pair, n_out)

    def _request(self, head: str, tracks) -> tuple:
        """(engine head index, head columns to compute, [] = all) with the columns checked."""
        idx = [] if tracks is None else list(check_int_sequence("tracks", tracks))  # [] would mean every track
        n_tracks = self.spec.heads[head].tracks
        bad = [t for t in idx if not 0 <= t < n_tracks]
        if bad:
            raise ValueError(f"track index {bad[0]} out of range for head {head!r} with {n_tracks} tracks")
        return self._head_index[head], idx

    @staticmethod
    def _strand_pair(head: str, pair, n_out: int) -> Optional[np.ndarray]:
        """Validate a strand_pair list for ``n_out`` output tracks; None when it is the identity."""
        if pair is None:
            return None
        arr = np.asarray(list(pair))
        if arr.shape != (n_out,) or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(f"strand_pair for head {head!r}: expected {n_out} integers (one per output track), "
                             f"got {arr.size} {arr.dtype} values")
        if arr.size and (arr.min() < 0 or arr.max() >= n_out):
            raise ValueError(f"strand_pair for head {head!r}: positions must lie in 0..{n_out - 1}")
        arr = arr.astype(np.intp)
        return None if np.array_equal(arr, np.arange(n_out)) else arr

    def predict_substitutions(self, x: SequenceInput, positions, alts, head: Optional[str] = None,
                              tracks: Optional[Iterable[int]] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                              n_encoding: str = "zeros", strand_pair: Optional[Sequence[int]] = None) -> tuple:
        """REF and ALT predictions for single-base substitutions of one sequence, incrementally.

        One full pass of ``x`` per ensemble member; each substitution then recomputes only the
        positions its receptive field reaches at each layer (through the dilated blocks at most
        +-212 bins of Basenji2's 1,024, and the head only on the changed bins). The result
        equals :meth:`predict` of each mutated sequence bit for bit. For many substitutions
        (saturation mutagenesis) use :meth:`substitution_scorer` and score them in chunks.

        Parameters
        ----------
        x : one sequence (a string, uint8 codes [L] or [1, L], or a one-hot [L, 4])
        positions : int [n], 0-based positions in the window
        alts : the new bases, a string of n letters or uint8 codes [n]
        head, tracks, rc, shifts, n_encoding, strand_pair : as :meth:`predict`

        Returns
        -------
        (ref float32 [n_bins, tracks], alt float32 [n, n_bins, tracks])
        """
        scorer = self.substitution_scorer(x, head=head, tracks=tracks, rc=rc, shifts=shifts, n_encoding=n_encoding,
                                          strand_pair=strand_pair)
        return scorer.ref, scorer.alts(positions, alts)

    def substitution_scorer(self, x: SequenceInput, head: Optional[str] = None,
                            tracks: Optional[Iterable[int]] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                            n_encoding: str = "zeros", strand_pair: Optional[Sequence[int]] = None
                            ) -> "SubstitutionScorer":
        """Run ``x`` once per ensemble member and keep its tensors, to score single-base
        substitutions of it in as many calls as you like (see :class:`SubstitutionScorer`)."""
        return SubstitutionScorer(self, x, head, tracks, rc, shifts, n_encoding, strand_pair)

    def predict_interval(self, fasta, interval: str, head: Optional[str] = None,
                         tracks: Optional[Iterable[int]] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                         n_encoding: str = "zeros", strand_pair: Optional[Sequence[int]] = None) -> np.ndarray:
        """Predict the model window centred on a genome interval.

        Parameters
        ----------
        fasta : path of a FASTA, or an open ``pyfaidx.Fasta`` (:func:`basenji2_fast.genome.open_fasta`)
        interval : str
            ``"chr1:1,000,000-1,131,072"``: 0-based, end-exclusive (BED coordinates, as in
            ``predict.h5``); commas allowed. The window is ``seq_length`` bp centred on
            ``(start + end) // 2``, as ``basenji_predict_bed.py`` centres its regions, so an
            interval of exactly ``seq_length`` bp is itself the window. ``"chr1:1,065,536"``
            (one position) centres the window on that base. The interval must lie on the
            chromosome (ValueError otherwise); the window's positions off it are N.
        head, tracks, rc, shifts, n_encoding, strand_pair : as :meth:`predict`

        Returns
        -------
        float32 [n_bins, tracks]; output bin ``b`` covers
        ``window_start + (crop_bins + b) * bin_size`` onwards (``crop_bins`` of the model).
        """
        if head in ("both", "all") or (head is not None and not isinstance(head, str)):
            raise ValueError("predict_interval predicts one head; call it once per head")
        chrom, start, end = parse_interval(interval)
        fa = as_fasta(fasta)
        check_span(fa, chrom, start, end, f"interval {interval!r}")
        w0, w1 = centred_span(start, end, self.seq_length)  # centred as basenji_predict_bed.py
        codes = dna.encode(fetch(fa, chrom, w0, w1), what=f"{chrom}:{w0}-{w1}")
        return self.predict(codes[None], head=head, tracks=tracks, rc=rc, shifts=shifts, n_encoding=n_encoding,
                            strand_pair=strand_pair)[0]

    # Gradients ---------------------------------------------------------------------------------
    def require_gradients(self) -> None:
        """Raise ValueError, saying what to load instead, when this model cannot compute
        :meth:`gradients` (they run on the CPU engine in fp32), so a workflow can refuse before
        its long work."""
        if self.device != "cpu":
            raise ValueError("gradients run on the CPU engine: load the model with device='cpu'")
        if self.precision != "fp32":
            raise ValueError(f"gradients are computed in fp32: load the model with precision='fp32' "
                             f"(this one is {self.precision})")

    def gradients(self, x: SequenceInput, tracks: Optional[Iterable[int]] = None, bins: Optional[Iterable[int]] = None,
                  head: Optional[str] = None, rc: bool = False, shifts: Sequence[int] = (0,),
                  n_encoding: str = "zeros", strand_pair: Optional[Sequence[int]] = None,
                  batch_size: Optional[int] = None) -> np.ndarray:
        """The gradient of the summed predictions with respect to the one-hot input.

        For each sequence ``b``, ``d/dx[b]`` of ``predict(x, head, tracks, rc, shifts, ...)[b][bins].sum()``:
        the sum over the chosen output bins and tracks of the (ensemble-mean) predictions,
        differentiated at the one-hot input the engine reads (A, C, G, T columns; N as zeros
        or 0.25 per ``n_encoding``). Computed in fp32 by the engine's backward pass: one
        forward and one backward pass per ensemble member, no framework.

        Parameters
        ----------
        x : as :meth:`predict` (a string, list of strings, uint8 codes [B, L] or a one-hot [B, L, 4])
        tracks : head columns to sum (default: every track of the head)
        bins : output bins to sum, ints in 0..n_bins-1 (default: all); a bin listed twice counts twice
        head : the head's name (default: the first); one head
        rc, shifts : the ensemble of :meth:`predict`; the gradient of its mean. A reverse-complement
            pass's gradient is mapped back to forward coordinates (reversed along the sequence,
            A<->T and C<->G swapped) and a shifted pass's to the unshifted positions (the bases
            a shift pushes out of the window get nothing from that pass).
        n_encoding, strand_pair : as :meth:`predict` (``strand_pair`` maps the tracks of a
            reverse-complement pass, which for a sum over tracks changes nothing but their order)
        batch_size : sequences per engine call

        Returns
        -------
        float32 [B, L, 4]
        """
        self.require_gradients()
        ensemble = self._ensemble(rc, shifts, n_encoding, batch_size)
        codes, n_uniform, _, head_index, idx, n_out, pair = self._one_head(x, head, tracks, n_encoding, strand_pair,
                                                                           "gradients are taken")
        nb, L = self.n_bins, self.seq_length
        if bins is None:
            bin_list = []  # the engine's "all"
        else:
            if isinstance(bins, (str, bytes)) or not hasattr(bins, "__iter__"):
                raise TypeError(f"bins={bins!r}: expected a sequence of output bins, e.g. [447, 448] "
                                "(or None for all)")
            arr = np.asarray(list(bins) if not isinstance(bins, np.ndarray) else bins).ravel()
            if arr.size == 0:
                raise ValueError("bins is empty: name at least one output bin (or None for all)")
            if arr.dtype.kind not in "iu":
                raise ValueError(f"bins must be integers, got dtype {arr.dtype}")
            bad = arr[(arr < 0) | (arr >= nb)]
            if bad.size:
                raise ValueError(f"bin {int(bad[0])} out of range (0..{nb - 1})")
            bin_list = [int(b) for b in arr]
        passes = ensemble.passes()
        # The fast (Winograd) ops' packings hold transformed weights: their kernels are lent per call.
        plan = self._plan[0]
        kernels = [_engine_weight(op.kernel) if isinstance(op, ConvOp) and plan[i]["fast_m"] else None
                   for i, op in enumerate(self.spec.ops)]
        # What a reverse-complement pass sums: the same bins counted from the other end, and
        # for forward track j the column its reversed input predicts it in (strand pairs).
        cols = idx or list(range(n_out))
        rc_cols = cols if pair is None else [cols[int(p)] for p in pair]
        rc_bins = [nb - 1 - b for b in bin_list]
        B = codes.shape[0]
        bs = ensemble.batch_size or max(1, min(B, self._default_batch))
        out = np.zeros((B, L, 4), np.float32)
        for b0 in range(0, B, bs):
            chunk = codes[b0:b0 + bs]
            o = out[b0:b0 + bs]
            for shift, flip in passes:
                c = _pass_codes(chunk, shift, flip)
                req = (head_index, rc_cols if flip and pair is not None else idx)
                g = self._engine.gradient(c, req, rc_bins if flip else bin_list, n_uniform, kernels)
                if flip:  # back to forward coordinates: positions reversed, A<->T, C<->G (channels reversed)
                    g = g[:, ::-1, ::-1]
                # the pass read x[p] at position p + shift of its input
                lo, hi = max(0, -shift), L - max(0, shift)
                o[:, lo:hi] += g[:, lo + shift:hi + shift]
        if len(passes) > 1:
            out /= len(passes)
        return out

    def saliency(self, x: SequenceInput, method: str = "grad", tracks: Optional[Iterable[int]] = None,
                 bins: Optional[Iterable[int]] = None, head: Optional[str] = None, rc: bool = False,
                 shifts: Sequence[int] = (0,), n_encoding: str = "zeros",
                 strand_pair: Optional[Sequence[int]] = None, batch_size: Optional[int] = None) -> np.ndarray:
        """Contribution scores of each base to the summed predictions (:meth:`gradients`).

        method : "grad" (the gradient itself), "input_x_grad" (the one-hot input times the
            gradient: each position's score sits on its own base; an N position with
            ``n_encoding="uniform"`` has 0.25 x the gradient on every base, zeros otherwise), or
            "centered" (the gradient minus its mean over the four bases at each position).
        Other parameters: as :meth:`gradients`.

        Returns
        -------
        float32 [B, L, 4]
        """
        if method not in SALIENCY_METHODS:
            raise ValueError(f"method={method!r}; expected one of {SALIENCY_METHODS}")
        g = self.gradients(x, tracks=tracks, bins=bins, head=head, rc=rc, shifts=shifts, n_encoding=n_encoding,
                           strand_pair=strand_pair, batch_size=batch_size)
        if method == "centered":
            return g - g.mean(axis=-1, keepdims=True)
        if method == "input_x_grad":
            codes, zero_rows = self.encode(x)
            q = np.float32(0.25 if self._n_uniform(n_encoding, zero_rows) else 0.0)
            # the one-hot the engine reads for codes A, C, G, T, N, uniform (0..5)
            onehot = np.concatenate([np.eye(4, dtype=np.float32), np.full((1, 4), q, np.float32),
                                     np.full((1, 4), 0.25, np.float32)])
            return onehot[codes] * g
        return g

    def release_memory(self) -> None:
        """Free the activation buffers the engine keeps between calls (about one forward
        pass's working set: ~26 MB for Basenji2 in fp32; after :meth:`gradients`, also one
        gradient pass's: ~210 MB); the next call allocates them again."""
        self._engine.release_buffers()

    def embed(self, x: SequenceInput, batch_size: Optional[int] = None, n_encoding: str = "zeros",
              rc: bool = False, shifts: Sequence[int] = (0,)) -> np.ndarray:
        """The trunk output (after its final GELU): float32 [B, n_bins, trunk_channels].

        ``rc`` / ``shifts``: the mean over the ensemble members of :meth:`predict` (a reverse
        complement's embeddings flipped back along the bins; channels have no strand to swap).
        """
        ensemble = self._ensemble(rc, shifts, n_encoding, batch_size)
        codes, zero_rows = self.encode(x)
        n_uniform = self._n_uniform(n_encoding, zero_rows)
        passes = ensemble.passes()
        bs = ensemble.batch_size or max(1, min(codes.shape[0], self._default_batch))
        parts = []
        for b in range(0, codes.shape[0], bs):
            out = None
            for shift, flip in passes:  # the first pass is forward: out is the engine's fresh array
                e = self._engine.trunk(_pass_codes(codes[b:b + bs], shift, flip), n_uniform)
                if flip:
                    e = e[:, ::-1]
                if out is None:
                    out = e
                else:
                    out += e
            if len(passes) > 1:
                out /= len(passes)
            parts.append(out)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # Heads ------------------------------------------------------------------------------------
    def add_head(self, name: str, weight: np.ndarray, bias: np.ndarray, activation: str = "softplus",
                 replace: bool = False) -> None:
        """Attach a dense head on the trunk: ``activation(embed(x) @ weight + bias)``.

        Parameters
        ----------
        name : the head's name (``predict(x, head=name)``)
        weight : float [trunk_channels, tracks]
        bias : float [tracks]
        activation : "softplus" (Basenji2's heads) or "linear"
        replace : allow replacing an existing head of that name

        The head joins :attr:`spec`, so :meth:`save` writes it with the model.
        """
        if not isinstance(name, str) or not name or name in ("both", "all"):
            raise ValueError(f"head name {name!r}: expected a non-empty name other than 'both' / 'all'")
        if name in self._head_index and not replace:
            raise ValueError(f"this model already has a head {name!r} (pass replace=True to replace it)")
        w = np.ascontiguousarray(weight, np.float32)
        b = np.ascontiguousarray(bias, np.float32)
        if w.ndim != 2 or w.shape[0] != self.spec.trunk_channels or b.shape != (w.shape[1],):
            raise ValueError(f"head {name!r}: weight must be [{self.spec.trunk_channels}, tracks] and bias [tracks]; "
                             f"got {w.shape} and {b.shape}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError(f"head {name!r}: weight and bias must be finite")
        if activation not in ("softplus", "linear"):
            raise ValueError(f"head {name!r}: activation must be 'softplus' or 'linear', got {activation!r}")
        # The engine packs its own copy; a replaced head's old slot is simply no longer named.
        self._head_index[name] = self._engine.add_head(w, b, activation)
        self.spec.heads[name] = Head(name=name, weight=w, bias=b, activation=activation)
        if name not in self.head_names:
            self.head_names.append(name)

    def save(self, path: Union[str, os.PathLike], precision: str = "fp32") -> None:
        """Write the model, every head included (:meth:`add_head`'s too), as the engine's
        ``.safetensors`` file (atomically; see :func:`basenji2_fast.formats.engine_format.save`)."""
        engine_format.save(self.spec, path, precision=precision)


class SubstitutionScorer:
    """One sequence's forward passes (one per ensemble member) with every tensor kept, for
    scoring its single-base substitutions incrementally, in chunks.

    ``ref``: float32 [n_bins, tracks]; :meth:`alts` gives [n, n_bins, tracks], equal bit for bit
    to :meth:`Model.predict` of the mutated sequences with the same options. Holds about one
    forward pass's activations per ensemble member (~250 MB for Basenji2).
    """

    def __init__(self, model: Model, x, head, tracks, rc, shifts, n_encoding, strand_pair):
        passes = model._ensemble(rc, shifts, n_encoding).passes()
        codes, n_uniform, _, head_index, idx, self.n_tracks, self._pair = model._one_head(
            x, head, tracks, n_encoding, strand_pair, "substitutions are scored")
        if codes.shape[0] != 1:
            raise ValueError(f"substitutions are scored on one sequence, got {codes.shape[0]}")
        self._request = [(head_index, idx)]
        self._engine, self._L, self._bins = model._engine, model.seq_length, model.n_bins
        self._passes = passes
        self.codes = codes[0]
        self._caches = []
        ref_sum = np.zeros((self._bins, self.n_tracks), np.float32)
        for shift, flip in self._passes:
            c = _pass_codes(codes, shift, flip)[0]
            cache = self._engine.cache_trunk(np.ascontiguousarray(c, np.uint8), n_uniform)
            ref, _ = self._engine.predict_substitutions(cache, np.zeros(0, np.int64), np.zeros(0, np.uint8),
                                                        self._request)
            self._caches.append((cache, ref))  # the pass's REF head output, reused by alts()
            ref_sum += self._unflip(ref[0], flip)
        self.ref = ref_sum / len(self._passes) if len(self._passes) > 1 else ref_sum

    def _unflip(self, p: np.ndarray, flip: bool) -> np.ndarray:
        """A reverse-complement pass's predictions back in forward bin order (pairs swapped)."""
        if not flip:
            return p
        p = p[..., ::-1, :]
        return p if self._pair is None else p[..., self._pair]

    def alts(self, positions, alts) -> np.ndarray:
        """ALT predictions for substitutions (positions int [n], 0-based in the window; alts a
        string of n letters or uint8 codes [n]) -> float32 [n, n_bins, tracks]."""
        pos = np.asarray(positions).ravel()
        if pos.size and not (pos.dtype.kind in "iu" or all(is_integer(p) for p in pos)):
            raise TypeError(f"positions: expected integers (0-based positions in the window), got {pos.dtype} values")
        pos = pos.astype(np.int64)
        if isinstance(alts, (str, bytes)):
            alt = dna.encode(alts)
        else:
            alt = np.asarray(alts).ravel()
            if alt.size and alt.dtype.kind not in "iu":
                raise TypeError(f"alts: expected a string of bases or uint8 codes, got {alt.dtype} values")
            if alt.size and (alt.min() < 0 or alt.max() > CODE_UNIFORM):
                raise ValueError(f"alts: base code {int(alt.max() if alt.max() > CODE_UNIFORM else alt.min())} "
                                 f"(expected 0..{CODE_UNIFORM})")
            alt = alt.astype(np.uint8)
        if pos.shape != alt.shape:
            raise ValueError(f"{pos.size} positions but {alt.size} alternative bases")
        L = self._L
        if pos.size and (pos.min() < 0 or pos.max() >= L):
            raise ValueError(f"substitution positions must lie in 0..{L - 1}")
        out = None
        for (shift, flip), (cache, pass_ref) in zip(self._passes, self._caches):
            p = pos + shift
            inside = (p >= 0) & (p < L)  # a base shifted out of the window changes nothing
            a = alt[inside]
            if flip:
                p, a = L - 1 - p, dna.COMPLEMENT[a]
            refs, alts_ = self._engine.predict_substitutions(cache, p[inside], np.ascontiguousarray(a),
                                                             self._request, pass_ref)
            contrib = self._unflip(alts_[0], flip)
            if out is None and inside.all():
                out = np.array(contrib, copy=True) if flip else contrib  # the engine's array, no copy
                continue
            if out is None:
                out = np.zeros((pos.size, self._bins, self.n_tracks), np.float32)
            if inside.all():
                out += contrib
            else:
                out[inside] += contrib
                out[~inside] += self._unflip(refs[0], flip)
        if len(self._passes) > 1:
            out /= len(self._passes)
        return out


def load(path: Union[str, os.PathLike], device: str = "cpu", precision: Optional[str] = None,
         threads: Optional[int] = None, params=None, gelu: Optional[str] = None, isa: Optional[str] = None,
         tile_mb: Optional[float] = 16.0, graphs: bool = False, algorithm: str = "auto") -> Model:
    """Load a model from Keras HDF5 (.h5), a basenji2-pytorch state dict (.pth) or the engine's
    own .safetensors file (conversion happens in memory), or the published Basenji2 by name:
    "basenji2" (= "basenji2-human"), "basenji2-mouse", "basenji2-both" (both heads on one
    trunk) or "basenji2-pth", downloaded and checked on first use (:mod:`basenji2_fast.fetch`). ``params``: a basenji params JSON
    for files that lack the geometry; ``gelu``: override the GELU variant; the other
    arguments are :class:`Model`'s. Any file runs in either precision: an fp32 file is
    rounded to bf16 while packing, a bf16 file (``convert --precision bf16``) widened
    exactly for fp32. A ``.safetensors`` file's weights are packed straight from its
    mapping, one tensor at a time, so the model is never in memory twice."""
    from .fetch import is_published_name, published_spec  # pooch and the checks: only for names
    from .formats import load_spec

    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {PRECISIONS}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; expected one of {ALGORITHMS}")
    # The device is resolved before the weights are read: "cuda" without a GPU fails at once.
    cuda_backend.resolve_device(device, precision)
    named = is_published_name(path)  # "basenji2", "basenji2-both", ...: fetched into the cache
    spec = (published_spec(path, params=params, gelu=gelu, keep_bf16=True) if named
            else load_spec(path, params=params, gelu=gelu, keep_bf16=True))
    model = Model(spec, device=device, precision=precision, threads=threads, isa=isa, tile_mb=tile_mb, graphs=graphs,
                  algorithm=algorithm)
    # How to load it again: distributed workers (basenji2_fast.runner) load their own copy.
    model.load_options = {"path": path if named else os.path.abspath(os.fspath(path)), "threads": threads,
                          "params": params, "gelu": gelu, "isa": isa, "tile_mb": tile_mb,
                          "algorithm": algorithm}
    return model
