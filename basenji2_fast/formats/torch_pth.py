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
