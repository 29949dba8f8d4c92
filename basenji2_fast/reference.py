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


def gelu_grad(x: np.ndarray, variant: str = "sigmoid") -> np.ndarray:
    """d gelu(x) / dx, float64, for every variant of :func:`gelu`."""
    x = np.asarray(x, np.float64)
    if variant == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-1.702 * x))
        return s + 1.702 * x * s * (1.0 - s)
    if variant == "erf":
        from scipy.special import erf  # noqa: PLC0415

        return 0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    if variant == "tanh":
        c = 0.044715
        th = np.tanh(_SQRT_2_OVER_PI * (x + c * x**3))
        return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _SQRT_2_OVER_PI * (1.0 + 3.0 * c * x * x)
    raise ValueError(f"unknown GELU variant {variant!r}")


def conv1d_input_grad(g: np.ndarray, kernel: np.ndarray, dilation: int = 1) -> np.ndarray:
    """The gradient of :func:`conv1d`'s input: g [L, c_out] (the output's gradient) ->
    [L, c_in]. Each output row p read input row p + (t - k//2) * dilation through tap t."""
    k = kernel.shape[0]
    L = g.shape[0]
    half = (k // 2) * dilation
    gp = np.zeros((L + 2 * half, g.shape[1]), np.float64)
    gp[half:half + L] = g
    kernel = weights(kernel)
    dx = np.zeros((L, kernel.shape[1]), np.float64)
    for t in range(k):
        s = (k - 1 - t) * dilation
        dx += gp[s:s + L] @ kernel[t].T
    return dx


def gradient(spec: ModelSpec, onehot: np.ndarray, head_name: str | None = None, tracks=None,
             bins=None) -> np.ndarray:
    """The gradient of ``predict(...)[bins][:, tracks].sum()`` with respect to the one-hot
    input, float64: onehot [L, 4] -> [L, 4] (or [B, L, 4] -> [B, L, 4]).

    tracks, bins: head columns and output bins (None = all; a repeated index counts again).
    A max-pool passes each output's gradient to the row it took, the even one on ties.
    """
    onehot = np.asarray(onehot, np.float64)
    if onehot.ndim == 3:
        return np.stack([gradient(spec, s, head_name, tracks, bins) for s in onehot])
    h = spec.heads[head_name] if head_name is not None else next(iter(spec.heads.values()))
    # forward, keeping every op's input and pre-pool output
    x, inputs, pre = onehot, [], []
    for op in spec.ops:
        inputs.append(x)
        if isinstance(op, ConvOp):
            a = gelu(x, spec.gelu) if op.gelu_in else x
            y = conv1d(a, op.kernel, op.bias, op.dilation)
            if op.residual is not None:
                y = y + inputs[op.residual]
            pre.append(y)
            x = maxpool(y, op.pool) if op.pool > 1 else y
        else:
            pre.append(None)
            x = x[op.left:x.shape[0] - op.right]
    trunk_raw = x
    trunk_out = gelu(x, spec.gelu) if spec.final_gelu else x
    w, b = weights(h.weight), np.asarray(h.bias, np.float64)
    cols = np.arange(w.shape[1]) if tracks is None else np.asarray(list(tracks), np.intp)
    rows = np.arange(trunk_out.shape[0]) if bins is None else np.asarray(list(bins), np.intp)
    z = trunk_out[rows] @ w[:, cols] + b[cols]
    s = 1.0 / (1.0 + np.exp(-z)) if h.activation == "softplus" else np.ones_like(z)
    g = np.zeros_like(trunk_out)
    np.add.at(g, rows, s @ w[:, cols].T)
    if spec.final_gelu:
        g = g * gelu_grad(trunk_raw, spec.gelu)
    # backward through the ops; grads[i] is the gradient of op i's input
    grads = [None] * len(spec.ops)

    def add(i, v):
        grads[i] = v if grads[i] is None else grads[i] + v

    for i in range(len(spec.ops) - 1, -1, -1):
        op = spec.ops[i]
        if isinstance(op, CropOp):
            full = np.zeros_like(inputs[i])
            full[op.left:op.left + g.shape[0]] = g
            add(i, full)
        else:
            y = pre[i]
            if op.pool > 1:
                gp = np.zeros_like(y)
                m = y.shape[0] // op.pool
                groups = y[:m * op.pool].reshape(m, op.pool, -1)
                take = np.argmax(groups, axis=1)  # the first maximum
                for j in range(op.pool):
                    gp[j:m * op.pool:op.pool] = np.where(take == j, g, 0.0)
            else:
                gp = g
            if op.residual is not None:
                add(op.residual, gp)
            da = conv1d_input_grad(gp, op.kernel, op.dilation)
            add(i, da * gelu_grad(inputs[i], spec.gelu) if op.gelu_in else da)
        g = grads[i]
    return g
