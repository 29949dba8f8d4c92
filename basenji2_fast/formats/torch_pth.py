"""basenji2-pytorch state dicts (``.pth``) -> ModelSpec.

basenji2-pytorch builds the same blocks as basenji from the same params JSON, so the
state-dict keys follow the params (``BasenjiConvBlock.block`` = [GELU, Conv1d,
BatchNorm1d, ...]):

====================================================  ==================================
``model.trunk.<t>.block.1.weight`` [out, in, k]        conv of a ``conv_block``
``model.trunk.<t>.block.2.{weight,bias,running_*}``    its BatchNorm1d (eps 1e-3)
``model.trunk.<t>.tower.<j>.block.{1,2}.*``            ``conv_tower`` repeat j
``model.trunk.<t>.block.<i>.module.{0,1}.block.*``     ``dilated_residual`` repeat i
``model.head.final.block.1.{weight [tracks, c],bias}`` the head's nn.Linear
====================================================  ==================================

A state dict has no sequence length, crop or dilation rates.  They come from ``params=``,
else a ``params.json`` beside the file, else the published Basenji2 params when every
shape matches them exactly.  The file is read with ``torch.load(weights_only=True)`` only:
a ``.pth`` is a pickle, and the full unpickler would run arbitrary code.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..spec import ConvOp, CropOp, Head, ModelSpec, fold_batchnorm
from . import TORCH_PTH, FormatError, checked, one_line, source_entry
from .params import ConvPlan, Plan, expand_params, match_head, read_params, rename_heads
from .published import BASENJI2_PARAMS

# basenji2-pytorch builds every BatchNorm1d with Keras's default epsilon.
TORCH_BN_EPSILON = 1e-3


def load_state_dict(path) -> Dict[str, np.ndarray]:
    """Read a ``.pth`` into {key: float32 array}, without running pickled code.

    Accepts a bare state dict, a Lightning checkpoint (``{"state_dict": ...}``) and the
    ``basenji2.`` prefix of a ``PLBasenji2`` module.  ``num_batches_tracked`` counters are
    dropped (training-only).
    """
    path = Path(path)
    try:
        import torch  # noqa: PLC0415  (optional dependency, only for .pth files)
    except ImportError:
        raise FormatError(f"{path}: install torch to read .pth files") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FormatError(f"{path}: holds pickled Python objects besides tensors; refusing to unpickle "
                          f"it (torch.load weights_only=True)") from None
    except Exception as e:  # noqa: BLE001  (torch.load raises many unrelated types for bad files)
        raise FormatError(f"{path}: not a readable PyTorch state dict ({one_line(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise FormatError(f"{path}: does not hold a state dict (got {type(obj).__name__})")
    if obj and all(k.startswith("basenji2.") for k in obj):
        obj = {k[len("basenji2."):]: v for k, v in obj.items()}
    out = {}
    for key, value in obj.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise FormatError(f"{path}: key {key!r} is not a floating-point tensor")
        out[key] = value.detach().to(torch.float32).numpy()
    return out


def spec_from_state_dict(sd: Dict[str, np.ndarray], plan: Plan, path, where: str,
                         head_names=None, params_model: Optional[dict] = None) -> ModelSpec:
    """Assign a state dict to the ops of ``plan``, checking every key and shape.

    Parameters
    ----------
    sd : dict of str -> ndarray
        From :func:`load_state_dict`.
    plan : Plan
        From :func:`~basenji2_fast.formats.params.expand_params`.
    path, where : used in messages (the .pth file; where the params came from).
    """
    used = set()

    def get(key: str, shape: tuple) -> np.ndarray:
        if key not in sd:
            raise FormatError(f"{path}: missing key {key!r} (architecture from {where})")
        a = sd[key]
        if tuple(a.shape) != tuple(shape):
            raise FormatError(f"{path}: key {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)} "
                              f"from {where}")
        used.add(key)
        return a

    ops = []
    for p in plan.ops:
        if not isinstance(p, ConvPlan):
            ops.append(CropOp(name=p.name, left=p.left, right=p.right))
            continue
        conv, bn = f"{p.torch_prefix}.1", f"{p.torch_prefix}.2"
        # nn.Conv1d stores [out, in, k]; the engine keeps Keras's [k, in, out].
        kernel = get(f"{conv}.weight", (p.c_out, p.c_in, p.kernel_size)).transpose(2, 1, 0)
        conv_bias = get(f"{conv}.bias", (p.c_out,)) if f"{conv}.bias" in sd else None
        gamma, beta, mean, var = (get(f"{bn}.{n}", (p.c_out,))
                                  for n in ("weight", "bias", "running_mean", "running_var"))
        kernel, bias = fold_batchnorm(kernel, gamma, beta, mean, var, conv_bias=conv_bias,
                                      eps=TORCH_BN_EPSILON)
        ops.append(ConvOp(name=p.torch_prefix, kernel=np.ascontiguousarray(kernel), bias=bias, dilation=p.dilation,
                          pool=p.pool, residual=p.residual))

    heads, keys = [], []
    for prefix in dict.fromkeys(hp.torch_prefix for hp in plan.heads):
        wkey = f"{prefix}.weight"
        if wkey not in sd:
            continue
        units = sd[wkey].shape[0]
        hp = match_head(plan, units, f"{path}: key {wkey!r}")
        # nn.Linear stores [out, in]; the engine's head weight is [in, out].
        weight = get(wkey, (hp.units, plan.trunk_channels)).T
        bias = get(f"{prefix}.bias", (hp.units,))
        heads.append(Head(name=hp.key, weight=np.ascontiguousarray(weight, np.float32),
                          bias=np.ascontiguousarray(bias, np.float32), activation=hp.activation))
        keys.append(hp.key)
    if not heads:
        want = plan.heads[0].torch_prefix + ".weight" if plan.heads else "model.head.*"
        raise FormatError(f"{path}: missing key {want!r} (no head)")
    extra = sorted(set(sd) - used)
    if extra:
        raise FormatError(f"{path}: unexpected key {extra[0]!r} (architecture from {where}"
                          f"{f'; {len(extra)} unexpected keys' if len(extra) > 1 else ''})")
    if head_names is None:
        names = [k[len("head_"):] for k in keys if k.startswith("head_")]
        head_names = names if len(names) == len(keys) else None
    return ModelSpec(seq_length=plan.seq_length, ops=ops,
                     heads=rename_heads(heads, head_names, params_model),
                     final_gelu=plan.final_gelu, gelu=plan.gelu)


def read(path, params=None, head_names=None) -> ModelSpec:
    """A basenji2-pytorch ``.pth`` -> ModelSpec (GELU "sigmoid"; pass gelu="erf" to
    :func:`~basenji2_fast.formats.load_spec` to reproduce basenji2-pytorch itself).

    Parameters
    ----------
    path : str or PathLike
    params : str, PathLike or dict, optional
        basenji params JSON giving seq_length, crop and dilation rates.  Default: a
        ``params.json`` beside the file, else the published Basenji2 params when every
        shape matches.
    head_names : list of str or "a,b", optional
    """
    path = Path(path)
    sd = load_state_dict(path)
    beside = path.with_name("params.json")
    if params is not None or beside.is_file():
        src = params if params is not None else beside
        where = str(src) if not isinstance(src, dict) else "params"
        model = read_params(src, where)
        spec = spec_from_state_dict(sd, expand_params(model, where), path, where, head_names, model)
    else:
        model = BASENJI2_PARAMS["model"]
        where = "the published Basenji2 params"
        try:
            spec = spec_from_state_dict(sd, expand_params(model, where), path, where, head_names, model)
        except FormatError as e:
            raise FormatError(f"{path}: shapes differ from the published Basenji2 and no params.json "
                              f"is beside it; pass params= (basenji params JSON) "
                              f"[{str(e).split(': ', 1)[-1]}]") from None
    spec.metadata.update({"source": [source_entry(path, TORCH_PTH)], "params": where})
    return checked(spec, path)


def state_dict_from_spec(spec: ModelSpec, params_model: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """A ModelSpec -> a basenji2-pytorch state dict (NumPy arrays; ``torch.save`` it after
    ``torch.from_numpy``), so that basenji2-pytorch, and an ONNX export of it, run the same
    weights as the engine (benchmarks of framework peers).

    The spec's BatchNorm is already folded into its convolutions, so each conv gets the
    folded kernel and each BatchNorm1d the identity with the folded bias as its shift
    (gamma 1, mean 0, variance 1 - eps: var + eps is exactly 1 in float32). The first head
    becomes the nn.Linear of ``params_model``'s first head (default: the published
    Basenji2, the only architecture basenji2-pytorch builds). Inverse of
    :func:`spec_from_state_dict` up to the float32 rounding of the fold; raises
    FormatError when the spec's shapes are not those of ``params_model``.
    """
    model = params_model if params_model is not None else BASENJI2_PARAMS["model"]
    plan = expand_params(model, "params")
    ops = [op for op in spec.ops]
    if len(ops) != len(plan.ops):
        raise FormatError(f"the model has {len(ops)} ops, the basenji2-pytorch architecture {len(plan.ops)}")
    one = np.float32(1)
    var = one - np.float32(TORCH_BN_EPSILON)
    sd: Dict[str, np.ndarray] = {}
    for i, (op, p) in enumerate(zip(ops, plan.ops)):
        if not isinstance(p, ConvPlan):
            if not isinstance(op, CropOp) or (op.left, op.right) != (p.left, p.right):
                raise FormatError(f"op {i} ({op.name}): expected the crop {p.left}/{p.right} of {p.name}")
            continue
        shape = (p.kernel_size, p.c_in, p.c_out)
        if not isinstance(op, ConvOp) or op.kernel.shape != shape or (op.dilation, op.pool, op.residual) != (
                p.dilation, p.pool, p.residual):
            raise FormatError(f"op {i} ({op.name}): expected a convolution {shape} as {p.torch_prefix}")
        conv, bn = f"{p.torch_prefix}.1", f"{p.torch_prefix}.2"
        kernel = np.asarray(op.kernel)
        if kernel.dtype == np.uint16:  # bf16 bit patterns (a bf16 file), widened exactly
            kernel = (kernel.astype(np.uint32) << 16).view(np.float32)
        sd[f"{conv}.weight"] = np.ascontiguousarray(kernel.astype(np.float32).transpose(2, 1, 0))
        sd[f"{bn}.weight"] = np.ones(p.c_out, np.float32)
        sd[f"{bn}.bias"] = np.asarray(op.bias, np.float32).copy()
        sd[f"{bn}.running_mean"] = np.zeros(p.c_out, np.float32)
        sd[f"{bn}.running_var"] = np.full(p.c_out, var, np.float32)
        sd[f"{bn}.num_batches_tracked"] = np.zeros((), np.int64)
    hp = plan.heads[0]
    head = next(iter(spec.heads.values()))
    weight = np.asarray(head.weight)
    if weight.dtype == np.uint16:
        weight = (weight.astype(np.uint32) << 16).view(np.float32)
    if weight.shape != (plan.trunk_channels, hp.units) or head.activation != hp.activation:
        raise FormatError(f"head {head.name!r}: expected [{plan.trunk_channels}, {hp.units}] with {hp.activation}")
    sd[f"{hp.torch_prefix}.weight"] = np.ascontiguousarray(weight.astype(np.float32).T)
    sd[f"{hp.torch_prefix}.bias"] = np.asarray(head.bias, np.float32).copy()
    return sd
