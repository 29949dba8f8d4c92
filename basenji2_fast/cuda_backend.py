"""The CUDA backend: device selection, the engine :class:`~basenji2_fast.Model` runs on a GPU,
and cupy interop.

The compiled module ``basenji2_fast._cuda`` is built only where nvcc was found
(``BASENJI2_FAST_CUDA=auto|1|0`` at build time); it links the CUDA runtime statically, so it
imports on machines without a GPU or driver and says so when asked to compute. The kernels
compute in bf16 on tensor cores with fp32 accumulation (``precision="bf16"``); the epilogues,
the residual stream and the outputs are fp32.

cupy is optional: ``Model.predict`` accepts any array with ``__cuda_array_interface__``
(uint8 base codes [B, L] on the model's GPU) and returns cupy arrays with ``out="cupy"``;
the engine reads and writes those device buffers directly.
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import dna

# The compiled module, imported on first use so that CPU-only processes never load it
# (absent when the package was built without nvcc; tests may set it to _cuda_emu).
_cuda = None
_CUDA_IMPORT_ERROR: Optional[BaseException] = None
_cuda_tried = False


def _module():
    """basenji2_fast._cuda, or None when this build has none (the reason in _CUDA_IMPORT_ERROR)."""
    global _cuda, _CUDA_IMPORT_ERROR, _cuda_tried
    if _cuda is None and not _cuda_tried:
        _cuda_tried = True
        try:
            from . import _cuda as module
            _cuda = module
        except ImportError as exc:
            _CUDA_IMPORT_ERROR = exc
    return _cuda

DEVICES = ("cpu", "cuda", "cuda:N", "auto")
OUTPUTS = ("numpy", "cupy")
#: Sequences per engine call on a GPU when the caller does not say (activations ~95 MB each
#: for Basenji2).
DEFAULT_BATCH = 32


def build_info() -> dict:
    """``{"compiled": bool, "archs": ["sm_80", ...], "nvcc": "13.0.88", "devices": n,
    "device_error": reason or None}``: what this installation's CUDA module holds and sees."""
    if _module() is None:
        return {"compiled": False, "archs": [], "nvcc": None, "devices": 0,
                "device_error": f"built without CUDA ({_CUDA_IMPORT_ERROR})"}
    info = dict(_cuda.build_info())
    n, why = _cuda.device_status()
    info.update(devices=int(n), device_error=why or None)
    return info


def usable() -> Tuple[bool, str]:
    """(True, "") when a CUDA device can run the engine, else (False, why) in one line."""
    if _module() is None:
        return False, ("basenji2_fast was built without its CUDA module (nvcc was not found at build time, or "
                       "BASENJI2_FAST_CUDA=0); rebuild with nvcc on PATH, or use device='cpu'")
    n, why = _cuda.device_status()
    if n == 0:
        return False, f"no usable CUDA device ({why}); use device='cpu'"
    return True, ""


def parse_device(device: str) -> Tuple[str, int]:
    """"cpu" | "cuda" | "cuda:N" | "auto" -> ("cpu", 0), ("cuda", N) or ("auto", 0)."""
    d = str(device).strip().lower()
    if d in ("cpu", "auto"):
        return d, 0
    m = re.fullmatch(r"cuda(?::(\d+))?", d)
    if not m:
        raise ValueError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return "cuda", int(m.group(1) or 0)


def resolve_device(device: str, precision: Optional[str]) -> Tuple[str, int]:
    """The device a Model runs on: ("cpu", 0) or ("cuda", N). "auto" takes GPU 0 when one is
    usable (and the precision allows bf16), else the CPU. An explicit "cuda" without a usable
    GPU is a one-line RuntimeError."""
    kind, index = parse_device(device)
    if kind == "auto":
        ok, _ = usable()
        return ("cuda", 0) if ok and precision in (None, "bf16") else ("cpu", 0)
    if kind == "cuda":
        ok, why = usable()
        if not ok:
            raise RuntimeError(f"device={device!r}: {why}")
    return kind, index


def is_device_array(x) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def _cupy():
    try:
        import cupy  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise ImportError("GPU arrays in or out (__cuda_array_interface__, out='cupy') need cupy: "
                          "pip install cupy-cuda13x") from None
    return cupy


class CudaEngine:
    """The compiled CUDA engine behind the interface Model uses for the CPU engine
    (``add_head``, ``predict``, ``trunk``, ``release_buffers``, ``isa``)."""

    def __init__(self, seq_length: int, gelu: str, final_gelu: bool, ops: List[dict], device: int = 0,
                 graphs: bool = False):
        cuda = _module()
        if cuda is None:
            raise RuntimeError(usable()[1])
        try:
            self._e = cuda.Engine(seq_length, gelu, final_gelu, ops, device, graphs)
        except RuntimeError as e:  # e.g. "no usable CUDA device (...)": one line, naming the device
            raise RuntimeError(f"device='cuda:{device}': {e}") from None
        self.device = device
        self.device_name = cuda.device_name(device)

    def add_head(self, weight: np.ndarray, bias: np.ndarray, activation: str) -> int:
        return self._e.add_head(weight, bias, activation)

    def predict(self, codes: np.ndarray, requests, n_uniform: bool, outs=None) -> List[np.ndarray]:
        """codes uint8 [B, L] (host) -> list of float32 [B, bins, tracks], one per request
        (written into ``outs``, host arrays of those shapes, when given: as the CPU engine)."""
        return self._e.predict(codes, requests, n_uniform, outs)

    def predict_device(self, codes, requests, n_uniform: bool, outs) -> None:
        """codes: device uint8 [B, L]; outs: device float32 [B, bins, tracks] per request
        (C-contiguous; anything with ``__cuda_array_interface__``), written in place."""
        self._e.predict_device(_device_ptr(codes, np.uint8, 2), int(codes.shape[0]), requests, n_uniform,
                               [_device_ptr(o, np.float32, 3) for o in outs])

    def trunk(self, codes: np.ndarray, n_uniform: bool) -> np.ndarray:
        return self._e.trunk(codes, n_uniform)

    def release_buffers(self) -> None:
        self._e.release_buffers()

    @property
    def isa(self) -> str:
        return f"cuda:{self.device} bf16 tensor cores ({self.device_name})"

    @property
    def prefix_tiles(self) -> int:
        return 1  # whole tensors, batch-wide

    @property
    def raw(self):
        """The compiled engine (single-kernel entry points for tests: op_forward, stem_forward,
        head_forward; use_graphs)."""
        return self._e

    def cache_trunk(self, *args, **kwargs):
        raise NotImplementedError("incremental substitutions (predict_substitutions, sad, sat) run on "
                                  "device='cpu' only in this version")

    predict_substitutions = cache_trunk


def _device_ptr(a, dtype, ndim: int) -> int:
    """The device pointer of a C-contiguous array of ``dtype`` and ``ndim`` dimensions."""
    cai = a.__cuda_array_interface__
    shape = tuple(cai["shape"])
    if np.dtype(cai["typestr"]) != np.dtype(dtype) or len(shape) != ndim:
        raise ValueError(f"expected a {ndim}-d {np.dtype(dtype).name} device array, got {cai['typestr']} "
                         f"of shape {shape}")
    strides = cai.get("strides")
    if strides is not None:
        want, step = [], np.dtype(dtype).itemsize
        for n in reversed(shape):
            want.append(step)
            step *= n
        if tuple(strides) != tuple(reversed(want)) and int(np.prod(shape)) > 0:
            raise ValueError("device arrays must be C-contiguous")
    return int(cai["data"][0])


def predict_on_device(model, x, names: Sequence[str], requests, pairs, passes, n_uniform: bool,
                      batch_size: Optional[int], out: str):
    """Model.predict for device arrays in or out: codes stay on the GPU, outputs are written by
    the engine straight into cupy arrays. Same ensembles and strand pairs as the host path.

    x: uint8 codes [B, L] or [L] with ``__cuda_array_interface__``, or host input (encoded on
    the host, then uploaded). Returns [float32 [B, bins, tracks] per name], cupy or numpy.
    """
    cp = _cupy()
    if is_device_array(x):
        codes = cp.asarray(x)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.dtype != cp.uint8 or codes.ndim != 2:
            raise ValueError(f"device input must be uint8 base codes [B, L], got {codes.dtype} of shape {codes.shape}")
        if codes.shape[1] != model.seq_length:
            raise ValueError(f"sequence length {codes.shape[1]:,} != the model's seq_length {model.seq_length:,}")
        if codes.size and int(codes.max()) > 5:
            bad = cp.argwhere(codes > 5)[0].get()
            raise ValueError(f"base code {int(codes[bad[0], bad[1]])} at sequence {bad[0]}, position {bad[1]} "
                             "(expected 0..5)")
        codes = cp.ascontiguousarray(codes)
    else:
        codes = cp.asarray(model.encode(x)[0])
    B, bins = codes.shape[0], model.n_bins
    widths = [len(idx) or model.spec.heads[n].tracks for n, (_, idx) in zip(names, requests)]
    outs = [cp.zeros((B, bins, w), cp.float32) for w in widths]
    comp = cp.asarray(dna.COMPLEMENT)
    bs = int(batch_size) if batch_size else max(1, min(B, DEFAULT_BATCH))
    for b0 in range(0, B, bs):
        chunk = codes[b0:b0 + bs]
        nb = chunk.shape[0]
        for shift, flip in passes:
            c = dna.shift_codes(chunk, shift, xp=cp)
            if flip:
                c = comp[c[:, ::-1].astype(cp.intp)]
            c = cp.ascontiguousarray(c)
            direct = len(passes) == 1  # one pass: the engine writes the result in place
            preds = [o[b0:b0 + nb] if direct else cp.empty((nb, bins, w), cp.float32) for o, w in zip(outs, widths)]
            # The engine runs on its own stream: whatever cupy queued for c must be done first.
            cp.cuda.get_current_stream().synchronize()
            model._engine.predict_device(c, requests, n_uniform, preds)
            if direct:
                continue
            for o, p, pair in zip(outs, preds, pairs):
                if flip:
                    p = p[:, ::-1] if pair is None else p[:, ::-1][:, :, cp.asarray(pair)]
                o[b0:b0 + nb] += p
    if len(passes) > 1:
        for o in outs:
            o /= len(passes)
    return outs if out == "cupy" else [cp.asnumpy(o) for o in outs]
