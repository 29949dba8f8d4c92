"""The float64 NumPy forward pass: the maths in plain code, the yardstick for every kernel.

It executes a :class:`~basenji2_fast.spec.ModelSpec` with no fusion and no tricks, in
float64, on a float one-hot input.  Slow (the full model takes minutes); tests use it on
small models and single layers.
"""
from __future__ import annotations

import math

import numpy as np

from .spec import ConvOp, CropOp, ModelSpec

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: np.ndarray, variant: str = "sigmoid") -> np.ndarray:
    """GELU variants, float64.

    sigmoid: x * sigmoid(1.702 x)  (basenji's custom Keras layer; the published model)
    erf:     x * Phi(x)            (torch.nn.GELU(), used by basenji2-pytorch)
    tanh:    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    """
    x = np.asarray(x, np.float64)
    if variant == "sigmoid":
        return x / (1.0 + np.exp(-1.702 * x))
    if variant == "erf":
        from scipy.special import erf  # noqa: PLC0415  (only the reference needs SciPy)

        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if variant == "tanh":
        return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    raise ValueError(f"unknown GELU variant {variant!r}")


def weights(a: np.ndarray) -> np.ndarray:
    """A weight array as float64; uint16 arrays are bfloat16 bit patterns (a bf16 file's
    weights as :func:`basenji2_fast.load` keeps them) and are widened exactly."""
    a = np.asarray(a)
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """x rounded to bfloat16 (through float32, nearest even), as float64: what the engine's
    bf16 precision stores. Any shape."""
    from .formats.engine_format import bf16_bits_to_fp32, fp32_to_bf16_bits  # noqa: PLC0415

    return bf16_bits_to_fp32(fp32_to_bf16_bits(np.asarray(x, np.float32))).astype(np.float64)


def softplus(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.logaddexp(0.0, x)


def conv1d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int = 1) -> np.ndarray:
    """'same' zero-padded dilated conv.  x: [L, c_in]; kernel: [k, c_in, c_out] -> [L, c_out]."""
    k = kernel.shape[0]
    L = x.shape[0]
    half = (k // 2) * dilation
    xp = np.zeros((L + 2 * half, x.shape[1]), np.float64)
    xp[half:half + L] = x
    y = np.tile(np.asarray(bias, np.float64), (L, 1))
    kernel = weights(kernel)
    for t in range(k):
        y += xp[t * dilation:t * dilation + L] @ kernel[t]
    return y


def maxpool(x: np.ndarray, size: int) -> np.ndarray:
    L = x.shape[0] // size
    return x[:L * size].reshape(L, size, -1).max(axis=1)


def conv_op(op: ConvOp, x: np.ndarray, residual: np.ndarray | None, variant: str, bf16: bool = False) -> np.ndarray:
    """One fused op in float64.  x: [L, c_in] (pre-activation input) -> [L // pool, c_out].

    bf16: the op as the engine's bf16 precision defines it: the activated input and the
    kernel rounded to bfloat16, everything else (sums, bias, residual, pool) exact."""
    a = gelu(x, variant) if op.gelu_in else np.asarray(x, np.float64)
    kernel = weights(op.kernel)
    if bf16:
        a, kernel = bf16_round(a), bf16_round(kernel)
    y = conv1d(a, kernel, op.bias, op.dilation)
    if op.residual is not None:
        y = y + residual
    if op.pool > 1:
        y = maxpool(y, op.pool)
    return y


def trunk(spec: ModelSpec, onehot: np.ndarray, bf16_ops=()) -> np.ndarray:
    """onehot: [L, 4] or [B, L, 4] float -> trunk output [(B,) bins, channels] float64.

    The trunk output includes the final GELU when the model has one (the "embedding").
    bf16_ops: indices of the ops computed as the engine's bf16 precision does (conv_op).
    """
    onehot = np.asarray(onehot, np.float64)
    if onehot.ndim == 3:
        return np.stack([trunk(spec, s, bf16_ops) for s in onehot])
    x = onehot
    inputs = []
    for i, op in enumerate(spec.ops):
        inputs.append(x)
        if isinstance(op, ConvOp):
            res = inputs[op.residual] if op.residual is not None else None
            x = conv_op(op, x, res, spec.gelu, bf16=i in bf16_ops)
        elif isinstance(op, CropOp):
            x = x[op.left:x.shape[0] - op.right]
        else:  # pragma: no cover - ModelSpec.validate rejects these
            raise TypeError(type(op))
    return gelu(x, spec.gelu) if spec.final_gelu else x


def head(spec: ModelSpec, trunk_out: np.ndarray, name: str | None = None, bf16: bool = False) -> np.ndarray:
    """trunk_out: [..., bins, channels] -> [..., bins, tracks] float64. bf16: trunk output and
    weight rounded to bfloat16 first (the engine's bf16 heads)."""
    h = spec.heads[name] if name is not None else next(iter(spec.heads.values()))
    x, w = np.asarray(trunk_out, np.float64), weights(h.weight)
    if bf16:
        x, w = bf16_round(x), bf16_round(w)
    y = x @ w + np.asarray(h.bias, np.float64)
    return softplus(y) if h.activation == "softplus" else y


def predict(spec: ModelSpec, onehot: np.ndarray, head_name: str | None = None, bf16_ops=(),
            bf16_head: bool = False) -> np.ndarray:
    """onehot: [B, L, 4] -> [B, bins, tracks] float64. bf16_ops, bf16_head: the parts computed
    as the engine's bf16 precision does (:func:`basenji2_fast.model.bf16_plan`)."""
    return head(spec, trunk(spec, onehot, bf16_ops), head_name, bf16=bf16_head)
