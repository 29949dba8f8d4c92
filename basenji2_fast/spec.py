"""The engine's model description: one trunk of fused conv ops, a crop, and named heads.

Every source format (Keras HDF5, basenji params + weights, basenji2-pytorch state
dicts, the engine's own safetensors file) is parsed into a :class:`ModelSpec`; the
C++ engine and the float64 reference both execute a ``ModelSpec`` and nothing else.

One fused conv op computes, for output positions ``p`` of a channels-last tensor::

    y[p] = bias + sum_t  act(x[p + (t - k//2) * dilation]) @ kernel[t]     (zero padding, "same")
    y[p] += x_in_of(residual)[p]                                              (optional)
    y     = maxpool(y, pool)                                                  (optional, stride = pool)

where ``act`` is the model's GELU when ``gelu_in`` is true (pre-activation blocks) and the
identity otherwise, and BatchNorm has been folded into ``kernel`` and ``bias``.
"""
from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

GELU_VARIANTS = ("sigmoid", "erf", "tanh")

#: Compute precisions: fp32; bf16 (bf16 weights and activations with fp32 sums, the only one
#: on CUDA; the layers that run fast convolution stay fp32, more accurate and cheaper there);
#: bf16-fast (opt-in: fast convolutions with bf16 products too, less accurate). See
#: :func:`basenji2_fast.model.compute_plan`.
PRECISIONS = ("fp32", "bf16", "bf16-fast")

#: Weight storage of the engine's file (any file runs in any compute precision).
FILE_PRECISIONS = ("fp32", "bf16")

#: How convolutions compute: "direct", "fast" (Winograd tiles wherever a layer's shape allows)
#: or "auto" (fast where it does less arithmetic; the default).
ALGORITHMS = ("direct", "fast", "auto")

#: How N enters the model: all-zero one-hot columns, or 0.25 in each channel.
N_ENCODINGS = ("zeros", "uniform")


def check_n_encoding(n_encoding: str) -> str:
    """``n_encoding`` when it is one of :data:`N_ENCODINGS`, else a one-line ValueError."""
    if not isinstance(n_encoding, str) or n_encoding not in N_ENCODINGS:
        raise ValueError(f"n_encoding={n_encoding!r}; expected one of {N_ENCODINGS}")
    return n_encoding


# Argument checks shared by the API's entry points (the value objects of basenji2_fast.model
# and Model's methods use them): a wrong type is a TypeError, a value out of range a
# ValueError, each one line naming the argument. A bool is not an integer here (True would
# otherwise be track 1), nor is a float with an integral value (1.7 would become 1).

def is_integer(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_positive_int(name: str, value, none_means: Optional[str] = None) -> Optional[int]:
    """``value`` as an int >= 1. ``none_means``: what None stands for (None is then
    allowed and returned; the messages say it)."""
    if value is None and none_means is not None:
        return None
    alt = f", or None for {none_means}" if none_means is not None else ""
    if not is_integer(value):
        raise TypeError(f"{name}={value!r}: expected a positive integer{alt}")
    if value < 1:
        raise ValueError(f"{name}={int(value)}: must be at least 1{alt}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """``value`` when it is a bool (Python or NumPy): ``rc="no"`` must not mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: expected True or False")
    return bool(value)


def check_int_sequence(name: str, value, example: str = "[0, 3, 7]") -> tuple:
    """A non-empty sequence of integers (a list, tuple, range or integer array) -> tuple of
    int. A string, a single number or an empty sequence is an error: ``tracks=[]`` must not
    read as "every track", nor ``tracks="10"`` as tracks 1 and 0."""
    if isinstance(value, (str, bytes)) or is_integer(value) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name}={value!r}: expected a sequence of integers, e.g. {example}")
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        items = [int(v) for v in value.ravel()]
    else:
        items = list(value)
        bad = next((v for v in items if not is_integer(v)), None)
        if bad is not None:
            raise TypeError(f"{name}: {bad!r} is not an integer (expected a sequence of integers, e.g. {example})")
        items = [int(v) for v in items]
    if not items:
        raise ValueError(f"{name} is empty: name at least one, e.g. {example}")
    return tuple(items)

# Keras BatchNormalization default, used by every basenji model.
BN_EPSILON = 1e-3

#: Codes for DNA crossing into the engine (uint8).  4 = N, encoded as zeros or 0.25
#: per the ``n_encoding`` argument; 5 = always 0.25 in each channel (the padding basenji
#: uses for shifted ensemble members, independent of how N is encoded).
BASE_CODES = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}
CODE_N = 4
CODE_UNIFORM = 5


@dataclass
class ConvOp:
    """A fused GELU -> Conv1D -> folded BN -> [residual add] -> [max-pool] op.

    kernel: float32 [k, c_in, c_out] (Keras layout), BatchNorm folded in.
    bias:   float32 [c_out].
    residual: index of an earlier op whose *input* (pre-activation) is added after the
        BN and before the pool, or None.
    """

    name: str
    kernel: np.ndarray
    bias: np.ndarray
    dilation: int = 1
    gelu_in: bool = True
    pool: int = 1
    residual: Optional[int] = None

    @property
    def k(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def c_in(self) -> int:
        return int(self.kernel.shape[1])

    @property
    def c_out(self) -> int:
        return int(self.kernel.shape[2])

    @property
    def halo(self) -> int:
        """Input positions needed on each side of an output position ("same" padding)."""
        return (self.k // 2) * self.dilation


@dataclass
class CropOp:
    """Drop ``left`` positions at the start and ``right`` at the end."""

    name: str
    left: int
    right: int


@dataclass
class Head:
    """Dense layer over trunk channels.  weight: float32 [c_trunk, tracks]; bias: [tracks]."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    activation: str = "softplus"  # or "linear"

    @property
    def tracks(self) -> int:
        return int(self.weight.shape[1])


@dataclass
class ModelSpec:
    """A whole model.  ``ops`` run in order on a [seq_length, 4] one-hot input."""

    seq_length: int
    ops: List[object]
    heads: Dict[str, Head]
    final_gelu: bool = True
    gelu: str = "sigmoid"
    metadata: Dict[str, object] = field(default_factory=dict)

    def validate(self) -> "ModelSpec":
        """Check that shapes chain; raise ValueError naming the first bad op."""
        if self.gelu not in GELU_VARIANTS:
            raise ValueError(f"unknown GELU variant {self.gelu!r}; expected one of {GELU_VARIANTS}")
        channels, length = 4, self.seq_length
        in_shapes = []
        for i, op in enumerate(self.ops):
            in_shapes.append((length, channels))
            if isinstance(op, ConvOp):
                if op.c_in != channels:
                    raise ValueError(f"op {i} ({op.name}): expects {op.c_in} input channels, gets {channels}")
                if op.bias.shape != (op.c_out,):
                    raise ValueError(f"op {i} ({op.name}): bias shape {op.bias.shape} != ({op.c_out},)")
                if op.k % 2 != 1:
                    raise ValueError(f"op {i} ({op.name}): even kernel size {op.k} is not supported")
                if op.residual is not None:
                    if not 0 <= op.residual < i:
                        raise ValueError(f"op {i} ({op.name}): residual source {op.residual} is not earlier")
                    if in_shapes[op.residual] != (length, op.c_out):
                        raise ValueError(f"op {i} ({op.name}): residual shape {in_shapes[op.residual]} "
                                         f"!= output {(length, op.c_out)}")
                channels = op.c_out
                if op.pool > 1:
                    if length % op.pool:
                        raise ValueError(f"op {i} ({op.name}): length {length} not divisible by pool {op.pool}")
                    length //= op.pool
            elif isinstance(op, CropOp):
                length -= op.left + op.right
                if length <= 0:
                    raise ValueError(f"op {i} ({op.name}): crop leaves no positions")
            else:
                raise ValueError(f"op {i}: unknown op type {type(op).__name__}")
        for name, head in self.heads.items():
            if head.weight.shape[0] != channels:
                raise ValueError(f"head {name!r}: expects {head.weight.shape[0]} channels, trunk gives {channels}")
            if head.activation not in ("softplus", "linear"):
                raise ValueError(f"head {name!r}: unsupported activation {head.activation!r}")
        return self

    # Derived geometry -------------------------------------------------------------------
    @property
    def bin_size(self) -> int:
        return int(np.prod([op.pool for op in self.ops if isinstance(op, ConvOp)]))

    @property
    def crop_bins(self) -> int:
        return sum(op.left for op in self.ops if isinstance(op, CropOp))

    @property
    def n_bins(self) -> int:
        n = self.seq_length
        for op in self.ops:
            if isinstance(op, ConvOp):
                n //= op.pool
            else:
                n -= op.left + op.right
        return n

    @property
    def trunk_channels(self) -> int:
        return [op for op in self.ops if isinstance(op, ConvOp)][-1].c_out

    def n_params(self) -> int:
        n = sum(op.kernel.size + op.bias.size for op in self.ops if isinstance(op, ConvOp))
        return int(n + sum(h.weight.size + h.bias.size for h in self.heads.values()))


def fold_batchnorm(kernel, gamma, beta, mean, var, conv_bias=None, eps=BN_EPSILON):
    """Fold inference BatchNorm into the preceding convolution (done in float64).

    BN(conv(x) + b) = s * conv(x) + (beta + s * (b - mean)),  s = gamma / sqrt(var + eps).
    kernel: [k, c_in, c_out]; the BN vectors: [c_out].  Returns float32 (kernel, bias).
    """
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.zeros_like(s) if conv_bias is None else np.asarray(conv_bias, np.float64)
    k = np.asarray(kernel, np.float64) * s
    bias = np.asarray(beta, np.float64) + s * (b - np.asarray(mean, np.float64))
    return k.astype(np.float32), bias.astype(np.float32)


def dilation_schedule(repeat: int, rate_mult: float, round_rates: bool = True) -> List[int]:
    """basenji's dilated_residual rates: start at 1, multiply, round half to even each step."""
    rates, r = [], 1.0
    for _ in range(repeat):
        rates.append(int(np.round(r)))
        r *= rate_mult
        if round_rates:
            r = float(np.round(r))
    return rates


def weights_sha256(spec) -> str:
    """sha256 over everything that changes a model's outputs (arrays, wiring, GELU, heads):
    the identity of a job's model even when it was loaded from memory or converted."""
    h = hashlib.sha256()

    def add(*items):
        for it in items:
            if isinstance(it, np.ndarray):
                if it.dtype == np.uint16:  # bf16 bit patterns (a bf16 file): hash their float32 values
                    it = (it.astype(np.uint32) << 16).view(np.float32)
                a = np.ascontiguousarray(it, np.float32)
                h.update(repr(a.shape).encode())
                h.update(a.tobytes())
            else:
                h.update(repr(it).encode())

    add(spec.seq_length, spec.gelu, spec.final_gelu)
    for op in spec.ops:
        if isinstance(op, ConvOp):
            add("conv", op.kernel, op.bias, op.dilation, op.gelu_in, op.pool, op.residual)
        elif isinstance(op, CropOp):
            add("crop", op.left, op.right)
    for name, head in spec.heads.items():
        add("head", name, head.weight, head.bias, head.activation)
    return h.hexdigest()
