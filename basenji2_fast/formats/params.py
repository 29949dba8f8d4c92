"""basenji params JSON -> a weightless layer plan, shared by the Keras restore path and
the basenji2-pytorch reader; plus head naming.

The plan mirrors what basenji's ``SeqNN.build_model`` builds from ``params["model"]``
(``conv_block``, ``conv_tower``, ``dilated_residual``, ``Cropping1D``, the trunk's final
activation, and one ``final``/``dense`` block per ``head_*`` key), one entry per engine op,
so that assigning weights is a walk over the plan.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..spec import Head, dilation_schedule
from . import FormatError
from .published import MOUSE_TRACKS


@dataclass
class ConvPlan:
    """One GELU -> Conv1D -> BN [-> residual add] [-> max-pool] op, without weights.

    ``residual``: index (in the plan) of the op whose input is added, or None.
    ``torch_prefix``: where basenji2-pytorch keeps this block (``<prefix>.1`` = conv,
    ``<prefix>.2`` = BatchNorm).
    """

    name: str
    kernel_size: int
    c_in: int
    c_out: int
    dilation: int = 1
    pool: int = 1
    residual: Optional[int] = None
    torch_prefix: str = ""


@dataclass
class CropPlan:
    name: str
    left: int
    right: int


@dataclass
class HeadPlan:
    key: str            # the params key, e.g. "head_human"
    units: int
    activation: str
    torch_prefix: str   # e.g. "model.head.final.block.1" (the nn.Linear)


@dataclass
class Plan:
    seq_length: int
    ops: list           # ConvPlan | CropPlan, in execution order
    heads: List[HeadPlan]
    final_gelu: bool = True
    gelu: str = "sigmoid"

    @property
    def trunk_channels(self) -> int:
        return [op for op in self.ops if isinstance(op, ConvPlan)][-1].c_out


def read_params(params, where: str = "params") -> dict:
    """Return the ``model`` section of a basenji params JSON.

    params: a path to the JSON, the parsed JSON (with a "model" key), or the model section.
    """
    if isinstance(params, (str, Path)):
        where = str(params)
        try:
            with open(params) as f:
                params = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{where}: cannot read params JSON ({e})") from None
    if not isinstance(params, dict):
        raise FormatError(f"{where}: params must be a JSON object, got {type(params).__name__}")
    model = params.get("model", params)
    if not isinstance(model, dict) or "trunk" not in model:
        raise FormatError(f"{where}: no model.trunk in params")
    return model


def _natural_key(s: str):
    # basenji orders heads with natsort: head_2 before head_10.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def head_items(model: dict) -> List[tuple]:
    """[(key, block dict)] for every ``head*`` entry of the model section, in basenji's order."""
    items = []
    for key in sorted((k for k in model if k.startswith("head")), key=_natural_key):
        block = model[key]
        if isinstance(block, list):
            # A multi-block head is beyond the supported architecture, but naming only
            # needs its last block's width.
            block = block[-1] if block else {}
        items.append((key, block))
    return items


_UNSUPPORTED_MSG = "not a basenji model of the supported architecture"


def expand_params(model: dict, where: str = "params") -> Plan:
    """Expand a params ``model`` section into a Plan (what basenji's build_model would build).

    Parameters
    ----------
    model : dict
        ``params["model"]`` (see :func:`read_params`).
    where : str
        Used in error messages (the params file name).
    """
    def fail(msg):
        raise FormatError(f"{where}: {msg}")

    seq_length = model.get("seq_length")
    if not isinstance(seq_length, int) or seq_length <= 0:
        fail(f"model.seq_length must be a positive integer, got {seq_length!r}")

    # SeqNN.build_block copies these globals into every block unless the block sets them.
    global_activation = model.get("activation", "relu")
    global_bn = bool(model.get("batch_norm", False)) or model.get("norm_type") == "batch"
    if model.get("norm_type") not in (None, "batch"):
        fail(f"norm_type {model['norm_type']!r} is not supported (only batch norm)")

    ops: list = []
    channels = 4

    def conv(block: dict, name: str, prefix: str, filters, kernel_size=1, dilation_rate=1,
             pool_size=1, residual=None):
        nonlocal channels
        activation = block.get("activation", global_activation)
        if activation != "gelu":
            fail(f"{name}: activation {activation!r} is not supported (only gelu); {_UNSUPPORTED_MSG}")
        if not (block.get("batch_norm", global_bn) or block.get("norm_type") == "batch"):
            fail(f"{name}: blocks without batch norm are not supported; {_UNSUPPORTED_MSG}")
        for key, ok in (("strides", 1), ("conv_type", "standard"), ("padding", "same"),
                        ("activation_end", None)):
            if block.get(key, ok) != ok:
                fail(f"{name}: {key}={block[key]!r} is not supported; {_UNSUPPORTED_MSG}")
        if block.get("residual"):
            # A conv_block adding its own input is not a fused op the engine has.
            fail(f"{name}: residual conv_block is not supported; {_UNSUPPORTED_MSG}")
        c_out = channels if filters is None else int(filters)
        ops.append(ConvPlan(name=name, kernel_size=int(kernel_size), c_in=channels, c_out=c_out,
                            dilation=int(dilation_rate), pool=int(pool_size), residual=residual,
                            torch_prefix=prefix))
        channels = c_out

    def expand_block(t: int, block: dict):
        kind = block["name"]
        base = f"model.trunk.{t}"
        if kind == "conv_block":
            conv(block, f"trunk.{t}.conv_block", f"{base}.block", block.get("filters"),
                 block.get("kernel_size", 1), block.get("dilation_rate", 1), block.get("pool_size", 1))
        elif kind == "conv_tower":
            repeat = int(block.get("repeat", 1))
            div = block.get("divisible_by", 1)
            f_init = block["filters_init"]
            mult = block.get("filters_mult")
            if mult is None:
                if block.get("filters_end") is None:
                    fail(f"trunk[{t}] conv_tower needs filters_mult or filters_end")
                mult = np.exp(np.log(block["filters_end"] / f_init) / (repeat - 1))
            rep_filters = f_init
            for j in range(repeat):
                # basenji's _round: to the nearest multiple of divisible_by, half to even.
                filters = int(np.round(rep_filters / div) * div)
                conv(block, f"trunk.{t}.conv_tower.{j}", f"{base}.tower.{j}.block", filters,
                     block.get("kernel_size", 1), block.get("dilation_rate", 1), block.get("pool_size", 1))
                rep_filters *= mult
        elif kind == "dilated_residual":
            repeat = int(block.get("repeat", 1))
            rates = dilation_schedule(repeat, float(block.get("rate_mult", 2)), bool(block.get("round", False)))
            sub = {k: v for k, v in block.items() if k not in ("pool_size", "residual")}
            for i, rate in enumerate(rates):
                block_in, first = channels, len(ops)
                conv(sub, f"trunk.{t}.dilated_residual.{i}.0", f"{base}.block.{i}.module.0.block",
                     block["filters"], block.get("kernel_size", 3), rate)
                # The second conv returns to the block's input width so the add lines up.
                conv(sub, f"trunk.{t}.dilated_residual.{i}.1", f"{base}.block.{i}.module.1.block",
                     block_in, 1, 1, residual=first)
        elif kind == "Cropping1D":
            crop = block.get("cropping", 0)
            left, right = (crop, crop) if isinstance(crop, int) else (int(crop[0]), int(crop[1]))
            ops.append(CropPlan(name=f"trunk.{t}.cropping1d", left=left, right=right))
        else:
            fail(f"trunk block {kind!r} is not supported; {_UNSUPPORTED_MSG}")

    for t, block in enumerate(model["trunk"]):
        if not isinstance(block, dict) or "name" not in block:
            fail(f"trunk[{t}] is not a block with a name")
        try:
            expand_block(t, block)
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            fail(f"trunk[{t}] ({block['name']}): bad or missing setting ({type(e).__name__}: {e})")

    if global_activation != "gelu":
        fail(f"activation {global_activation!r} is not supported (only gelu)")

    heads = []
    for key, block in head_items(model):
        if isinstance(model[key], list) and len(model[key]) != 1:
            fail(f"{key}: multi-block heads are not supported; {_UNSUPPORTED_MSG}")
        if block.get("name") not in ("final", "dense"):
            fail(f"{key}: head block {block.get('name')!r} is not supported; {_UNSUPPORTED_MSG}")
        if block.get("flatten", False):
            fail(f"{key}: flatten heads are not supported")
        activation = block.get("activation", "linear")
        if activation not in ("softplus", "linear"):
            fail(f"{key}: head activation {activation!r} is not supported")
        if not isinstance(block.get("units"), int):
            fail(f"{key}: units must be an integer, got {block.get('units')!r}")
        heads.append(HeadPlan(key=key, units=block["units"], activation=activation,
                              torch_prefix=f"model.head.{block['name']}.block.1"))
    # basenji's GELU layer (2020-2021) is x * sigmoid(1.702 x).
    return Plan(seq_length=seq_length, ops=ops, heads=heads, final_gelu=True, gelu="sigmoid")


# --------------------------------------------------------------------------------------
# Head naming

def parse_head_names(head_names) -> Optional[List[str]]:
    """None, ["human", "mouse"] or "human,mouse" -> list of names (or None)."""
    if head_names is None:
        return None
    if isinstance(head_names, str):
        head_names = [n.strip() for n in head_names.split(",")]
    names = [str(n) for n in head_names]
    if any(not n for n in names):
        raise ValueError(f"empty head name in {head_names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate head names in {head_names!r}")
    return names


def default_head_names(tracks: Sequence[int], params_model: Optional[dict] = None) -> List[str]:
    """Names for heads of the given widths when the user gave none.

    A params ``head_<species>`` entry with the same number of units names the head; else
    1,643 tracks (the published mouse head) is "mouse" and anything else "human"; further
    heads that would collide get "head<i>".
    """
    candidates = []
    if params_model is not None:
        for key, block in head_items(params_model):
            if isinstance(block, dict) and "units" in block:
                candidates.append((key[len("head_"):] if key.startswith("head_") else "", int(block["units"])))
    names: List[str] = []
    used = set()
    for i, n in enumerate(tracks):
        name = next((c for c, u in candidates if u == n and c and c not in used), None)
        if name is None:
            name = "mouse" if n == MOUSE_TRACKS else "human"
            if name in used:
                name = f"head{i}"
        names.append(name)
        used.add(name)
    return names


def rename_heads(heads: List[Head], head_names=None, params_model: Optional[dict] = None) -> Dict[str, Head]:
    """Give ``heads`` (in order) their names: ``head_names`` if given, else the defaults."""
    names = parse_head_names(head_names)
    if names is None:
        names = default_head_names([h.tracks for h in heads], params_model)
    if len(names) != len(heads):
        raise ValueError(f"{len(names)} head names given ({','.join(names)}) for {len(heads)} heads")
    out = {}
    for name, h in zip(names, heads):
        out[name] = Head(name=name, weight=h.weight, bias=h.bias, activation=h.activation)
    return out


def match_head(plan: Plan, units: int, where: str) -> HeadPlan:
    """The params head with ``units`` outputs (basenji's restore(head_i) picks it by index;
    a weights file only holds one head, so its width says which)."""
    for hp in plan.heads:
        if hp.units == units:
            return hp
    have = ", ".join(f"{hp.key}={hp.units}" for hp in plan.heads) or "none"
    raise FormatError(f"{where}: head has {units} tracks but params heads are {have}")
