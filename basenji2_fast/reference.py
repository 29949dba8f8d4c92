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
    for t in range(k):
        y += xp[t * dilation:t * dilation + L] @ np.asarray(kernel[t], np.float64)
    return y


def maxpool(x: np.ndarray, size: int) -> np.ndarray:
    L = x.shape[0] // size
    return x[:L * size].reshape(L, size, -1).max(axis=1)


def conv_op(op: ConvOp, x: np.ndarray, residual: np.ndarray | None, variant: str) -> np.ndarray:
    """One fused op in float64.  x: [L, c_in] (pre-activation input) -> [L // pool, c_out]."""
    a = gelu(x, variant) if op.gelu_in else np.asarray(x, np.float64)
    y = conv1d(a, op.kernel, op.bias, op.dilation)
    if op.residual is not None:
        y = y + residual
    if op.pool > 1:
        y = maxpool(y, op.pool)
    return y


def trunk(spec: ModelSpec, onehot: np.ndarray) -> np.ndarray:
    """onehot: [L, 4] or [B, L, 4] float -> trunk output [(B,) bins, channels] float64.

    The trunk output includes the final GELU when the model has one (the "embedding").
    """
    onehot = np.asarray(onehot, np.float64)
    if onehot.ndim == 3:
        return np.stack([trunk(spec, s) for s in onehot])
    x = onehot
    inputs = []
    for op in spec.ops:
        inputs.append(x)
        if isinstance(op, ConvOp):
            res = inputs[op.residual] if op.residual is not None else None
            x = conv_op(op, x, res, spec.gelu)
        elif isinstance(op, CropOp):
            x = x[op.left:x.shape[0] - op.right]
        else:  # pragma: no cover - ModelSpec.validate rejects these
            raise TypeError(type(op))
    return gelu(x, spec.gelu) if spec.final_gelu else x


def head(spec: ModelSpec, trunk_out: np.ndarray, name: str | None = None) -> np.ndarray:
    """trunk_out: [..., bins, channels] -> [..., bins, tracks] float64."""
    h = spec.heads[name] if name is not None else next(iter(spec.heads.values()))
    y = np.asarray(trunk_out, np.float64) @ np.asarray(h.weight, np.float64) + np.asarray(h.bias, np.float64)
    return softplus(y) if h.activation == "softplus" else y


def predict(spec: ModelSpec, onehot: np.ndarray, head_name: str | None = None) -> np.ndarray:
    """onehot: [B, L, 4] -> [B, bins, tracks] float64."""
    return head(spec, trunk(spec, onehot), head_name)
