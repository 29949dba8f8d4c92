"""Keras HDF5 files saved by basenji -> ModelSpec.

Two ways in, as in basenji itself:

* :func:`read_graph`: a whole-model file (``model.save``).  The architecture comes from
  the ``model_config`` JSON by walking the functional graph (``inbound_nodes``) and fusing
  each ``[GELU] -> Conv1D -> [BatchNormalization] -> [Dropout] -> [Add] -> [MaxPooling1D]``
  run into one :class:`~basenji2_fast.spec.ConvOp`.  Nothing depends on layer names or on
  Basenji2's sizes, so any model built from basenji's blocks reads the same way.
* :func:`load_keras_params`: basenji's restore path, params JSON + weights assigned by
  layer order (Keras ``load_weights`` semantics for HDF5).

HDF5 layout: ``model_weights`` (or the root, for ``save_weights`` files) has the attribute
``layer_names``; each ``model_weights/<layer>`` group lists its datasets in ``weight_names``
(e.g. ``conv1d/kernel:0``).  Strings may be variable-length ``str`` (h5py 3 writers) or
fixed-length ``bytes`` (older writers); both are decoded.  ``training_config`` and
``optimizer_weights`` are ignored.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ..spec import BN_EPSILON, ConvOp, CropOp, Head, ModelSpec, fold_batchnorm
from . import KERAS_H5, FormatError, checked, one_line, source_entry
from .params import CropPlan, expand_params, match_head, read_params, rename_heads

UNSUPPORTED = "not a basenji model of the supported architecture"

# Layers that are the identity at inference.  basenji's augmentation layers pass the
# sequence through unchanged when training=False; SwitchReverse's second input is the
# reverse flag, which is False then.
_IDENTITY = {"Dropout", "SpatialDropout1D", "StochasticReverseComplement", "StochasticShift",
             "SwitchReverse"}
# Layers whose extra inbound tensors are not data (only the first input is followed).
_FIRST_INPUT_ONLY = {"SwitchReverse"}


# --------------------------------------------------------------------------------------
# HDF5 access

def _text(value) -> str:
    """An HDF5 string attribute (str, bytes, numpy bytes or a 0-d array) -> str."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def _texts(value) -> List[str]:
    """An HDF5 string-array attribute -> list of str (empty for a missing/empty attribute)."""
    return [_text(v) for v in np.asarray(value).reshape(-1)] if value is not None else []


@contextmanager
def _open_h5(path: Path):
    """Open read-only; any h5py/HDF5 failure, now or while reading, becomes a FormatError."""
    import h5py  # noqa: PLC0415  (only the Keras reader needs it)

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not a readable HDF5 file ({one_line(e)})") from None
    try:
        yield f
    except FormatError:
        raise
    except (OSError, KeyError, IndexError, AttributeError, ValueError, TypeError, RuntimeError) as e:
        # h5py reports damage as any of these, and so does a model_config of the wrong shape.
        raise FormatError(f"{path}: corrupt or unexpected HDF5 content ({one_line(e)})") from None
    finally:
        f.close()


class _Weights:
    """The ``model_weights`` layout of one file: layer order and each layer's arrays."""

    def __init__(self, f, path: Path):
        self.path = path
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise FormatError(f"{path}: no model_weights/layer_names; not a Keras weights file")
        self.group = group
        self.layer_names = _texts(group.attrs["layer_names"])

    def weight_names(self, layer: str) -> List[str]:
        if layer not in self.group:
            raise FormatError(f"{self.path}: layer {layer!r}: no weights group")
        return _texts(self.group[layer].attrs.get("weight_names"))

    def arrays(self, layer: str) -> List[tuple]:
        """[(short name, array)] in the file's order; "conv1d/kernel:0" -> "kernel"."""
        g = self.group[layer]
        out = []
        for wn in self.weight_names(layer):
            if wn not in g:
                raise FormatError(f"{self.path}: layer {layer!r}: weight {wn!r} is listed but missing")
            short = wn.rsplit("/", 1)[-1].split(":", 1)[0]
            out.append((short, np.asarray(g[wn][()])))
        return out

    def weighted_layers(self) -> List[str]:
        return [n for n in self.layer_names if self.weight_names(n)]


def _file_metadata(f, path: Path) -> dict:
    keras_version = _text(f.attrs["keras_version"]) if "keras_version" in f.attrs else None
    return {"source": [source_entry(path, KERAS_H5, keras_version=keras_version)],
            "keras_version": keras_version}


# --------------------------------------------------------------------------------------
# The functional graph

@dataclass(frozen=True)
class _Act:
    """A materialised tensor: the input of op ``pos``, with GELU ``gelu`` applied (or not)."""

    pos: int
    gelu: Optional[str] = None


@dataclass(frozen=True)
class _Conv:
    """A conv op still being fused; emitted when something that cannot fuse consumes it."""

    layer: str
    kernel: np.ndarray
    bias: np.ndarray
    gelu_in: bool
    dilation: int
    bn: bool = False
    residual: Optional[int] = None
    pool: int = 1


@dataclass(frozen=True)
class _Dense:
    head: Head
    trunk: _Act


def _inbound(layer: dict, path: Path) -> List[tuple]:
    """[(source layer, tensor index)] of the layer's single call (Keras 2 and 3 layouts)."""
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return []
    if len(nodes) > 1:
        raise FormatError(f"{path}: layer {layer['name']!r} is called {len(nodes)} times; {UNSUPPORTED}")
    node = nodes[0]
    if isinstance(node, dict):
        # Keras 3: {"args": [...], "kwargs": {...}} with tensors as __keras_tensor__ entries.
        refs = []

        def walk(x):
            if isinstance(x, dict):
                if x.get("class_name") == "__keras_tensor__":
                    hist = x["config"]["keras_history"]
                    refs.append((hist[0], int(hist[2])))
                else:
                    for v in x.values():
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)

        walk(node.get("args", []))
        return refs
    # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
    return [(ref[0], int(ref[2])) for ref in node]


def _class_name(layer: dict) -> str:
    # Registered custom layers are saved as "package>Class" (e.g. "Custom>GELU").
    return layer["class_name"].rsplit(">", 1)[-1]


def _endpoints(value) -> List[str]:
    """input_layers / output_layers: [[name, 0, 0], ...] or a single [name, 0, 0]."""
    if value and isinstance(value[0], str):
        value = [value]
    return [v[0] for v in value or []]


def _ints(value) -> List[int]:
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


class _GraphReader:
    """Evaluates the Keras graph symbolically, layer by layer, emitting engine ops in order."""

    def __init__(self, path: Path, weights: _Weights):
        self.path = path
        self.weights = weights
        self.ops: list = []
        self.pending: Optional[_Conv] = None
        self.gelu_variants: set = set()
        self.seq_length: Optional[int] = None

    # -- helpers ---------------------------------------------------------------------
    def fail(self, name: str, cls: str, why: str = ""):
        why = f": {why}" if why else ""
        raise FormatError(f"{self.path}: layer {name!r} ({cls}){why}; {UNSUPPORTED}")

    def materialise(self, v, name, cls) -> _Act:
        if isinstance(v, _Conv):
            if v is not self.pending:
                self.fail(name, cls, "input is a convolution branch that is not the current one")
            self.ops.append(ConvOp(name=v.layer, kernel=np.ascontiguousarray(v.kernel, np.float32),
                                   bias=np.ascontiguousarray(v.bias, np.float32), dilation=v.dilation,
                                   gelu_in=v.gelu_in, pool=v.pool, residual=v.residual))
            self.pending = None
            return _Act(len(self.ops))
        if isinstance(v, _Dense):
            self.fail(name, cls, "consumes a Dense output")
        return v

    def head_of_chain(self, v, name, cls) -> _Act:
        """The input must be the newest tensor (ops run as one chain)."""
        v = self.materialise(v, name, cls)
        if v.pos != len(self.ops) or self.pending is not None:
            self.fail(name, cls, "input is not the end of the main chain")
        return v

    def set_pending(self, conv: _Conv) -> _Conv:
        self.pending = conv
        return conv

    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        return dict(self.weights.arrays(name))

    def expect(self, name: str, arrays: Dict[str, np.ndarray], key: str, shape: tuple) -> np.ndarray:
        if key not in arrays:
            raise FormatError(f"{self.path}: layer {name!r}: missing weight {key!r}")
        a = arrays[key]
        if tuple(a.shape) != tuple(shape):
            raise FormatError(f"{self.path}: layer {name!r}: weight {key!r} has shape "
                              f"{tuple(a.shape)}, config implies {tuple(shape)}")
        return a

    # -- layers ----------------------------------------------------------------------
    def layer(self, cls: str, name: str, cfg: dict, inputs: list):
        if cls == "InputLayer":
            shape = cfg.get("batch_input_shape", cfg.get("batch_shape"))
            if not shape or len(shape) != 3 or shape[2] != 4 or not isinstance(shape[1], int):
                self.fail(name, cls, f"input shape {shape} is not [batch, length, 4]")
            if self.seq_length is not None:
                self.fail(name, cls, "second input")
            self.seq_length = int(shape[1])
            return _Act(0)
        if not inputs:
            self.fail(name, cls, "no inbound tensors")
        if cls in _IDENTITY:
            return inputs[0]
        if cls == "Activation":
            act = cfg.get("activation")
            if act == "linear":
                return inputs[0]
            if act == "gelu":
                # Keras's built-in gelu defaults to the exact (erf) form.
                return self.gelu(inputs[0], name, cls, "erf")
            if act == "softplus" and isinstance(inputs[0], _Dense) and inputs[0].head.activation == "linear":
                return replace(inputs[0], head=replace(inputs[0].head, activation=act))
            self.fail(name, cls, f"activation {act!r}")
        if cls == "GELU":
            # basenji's custom layer: x * sigmoid(1.702 x).
            return self.gelu(inputs[0], name, cls, "sigmoid")
        if cls == "Conv1D":
            return self.conv(name, cfg, inputs[0])
        if cls == "BatchNormalization":
            return self.batchnorm(name, cfg, inputs[0])
        if cls == "MaxPooling1D":
            return self.maxpool(name, cfg, inputs[0])
        if cls == "Add":
            return self.add(name, inputs)
        if cls == "Cropping1D":
            v = self.head_of_chain(inputs[0], name, cls)
            if v.gelu is not None:
                self.fail(name, cls, "crop after an activation")
            left, right = (_ints(cfg.get("cropping", [1, 1])) * 2)[:2]
            self.ops.append(CropOp(name=name, left=left, right=right))
            return _Act(len(self.ops))
        if cls == "Dense":
            return self.dense(name, cfg, inputs[0])
        self.fail(name, cls)

    def gelu(self, v, name, cls, variant):
        v = self.materialise(v, name, cls)
        if v.gelu is not None:
            self.fail(name, cls, "two activations in a row")
        self.gelu_variants.add(variant)
        return _Act(v.pos, variant)

    def conv(self, name, cfg, v):
        cls = "Conv1D"
        v = self.head_of_chain(v, name, cls)
        if cfg.get("padding") != "same":
            self.fail(name, cls, f"padding {cfg.get('padding')!r} (only 'same')")
        if _ints(cfg.get("strides", 1)) != [1]:
            self.fail(name, cls, f"strides {cfg.get('strides')}")
        if cfg.get("activation", "linear") != "linear":
            self.fail(name, cls, f"activation {cfg.get('activation')!r}")
        if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("groups", 1) != 1:
            self.fail(name, cls, "channels_first or grouped convolution")
        k, = _ints(cfg["kernel_size"])
        dilation, = _ints(cfg.get("dilation_rate", 1))
        filters = int(cfg["filters"])
        w = self.arrays(name)
        kernel = w.get("kernel")
        if kernel is None or kernel.ndim != 3 or kernel.shape[0] != k or kernel.shape[2] != filters:
            self.fail(name, cls, f"kernel shape {None if kernel is None else kernel.shape} "
                                 f"does not match kernel_size={k}, filters={filters}")
        bias = (self.expect(name, w, "bias", (filters,)) if cfg.get("use_bias", True)
                else np.zeros(filters, np.float32))
        return self.set_pending(_Conv(layer=name, kernel=kernel, bias=bias, gelu_in=v.gelu is not None,
                                      dilation=dilation))

    def batchnorm(self, name, cfg, v):
        cls = "BatchNormalization"
        if not (isinstance(v, _Conv) and v is self.pending and not v.bn and v.residual is None and v.pool == 1):
            self.fail(name, cls, "does not directly follow a Conv1D")
        axis = _ints(cfg.get("axis", -1))
        if axis not in ([-1], [2]):
            self.fail(name, cls, f"axis {axis}")
        c = v.kernel.shape[2]
        w = self.arrays(name)
        gamma = self.expect(name, w, "gamma", (c,)) if cfg.get("scale", True) else np.ones(c)
        beta = self.expect(name, w, "beta", (c,)) if cfg.get("center", True) else np.zeros(c)
        mean = self.expect(name, w, "moving_mean", (c,))
        var = self.expect(name, w, "moving_variance", (c,))
        kernel, bias = fold_batchnorm(v.kernel, gamma, beta, mean, var, conv_bias=v.bias,
                                      eps=float(cfg.get("epsilon", BN_EPSILON)))
        return self.set_pending(replace(v, kernel=kernel, bias=bias, bn=True))

    def maxpool(self, name, cfg, v):
        cls = "MaxPooling1D"
        if not (isinstance(v, _Conv) and v is self.pending and v.pool == 1):
            self.fail(name, cls, "does not follow a convolution")
        size, = _ints(cfg.get("pool_size", 2))
        strides = _ints(cfg.get("strides") or size)
        if strides != [size]:
            self.fail(name, cls, f"pool_size {size} with strides {strides}")
        if cfg.get("data_format", "channels_last") != "channels_last":
            self.fail(name, cls, "channels_first")
        # 'same' and 'valid' agree because ModelSpec.validate requires divisible lengths.
        return self.set_pending(replace(v, pool=size))

    def add(self, name, inputs):
        cls = "Add"
        if len(inputs) != 2:
            self.fail(name, cls, f"{len(inputs)} inputs")
        convs = [x for x in inputs if isinstance(x, _Conv)]
        acts = [x for x in inputs if isinstance(x, _Act)]
        if len(convs) != 1 or len(acts) != 1:
            self.fail(name, cls, "the branch does not come from a convolution block")
        conv, skip = convs[0], acts[0]
        if conv is not self.pending or conv.residual is not None or conv.pool != 1:
            self.fail(name, cls, "the branch does not come from a convolution block")
        if skip.gelu is not None or skip.pos >= len(self.ops):
            self.fail(name, cls, "the skip input is not an earlier block's input")
        return self.set_pending(replace(conv, residual=skip.pos))

    def dense(self, name, cfg, v):
        cls = "Dense"
        v = self.head_of_chain(v, name, cls)
        act = cfg.get("activation", "linear")
        if act not in ("softplus", "linear"):
            self.fail(name, cls, f"activation {act!r}")
        units = int(cfg["units"])
        w = self.arrays(name)
        kernel = w.get("kernel")
        if kernel is None or kernel.ndim != 2 or kernel.shape[1] != units:
            self.fail(name, cls, f"kernel shape {None if kernel is None else kernel.shape} "
                                 f"does not match units={units}")
        bias = (self.expect(name, w, "bias", (units,)) if cfg.get("use_bias", True)
                else np.zeros(units, np.float32))
        head = Head(name=name, weight=np.ascontiguousarray(kernel, np.float32),
                    bias=np.ascontiguousarray(bias, np.float32), activation=act)
        return _Dense(head=head, trunk=v)


def read_graph(path, head_names=None, params=None) -> ModelSpec:
    """A whole-model Keras HDF5 file -> ModelSpec, from its ``model_config`` graph.

    Parameters
    ----------
    path : str or PathLike
        File written by ``tf.keras.Model.save`` (basenji's ``SeqNN.save``).
    head_names : list of str or "a,b", optional
        Names for the Dense heads in output order (default: see
        :func:`~basenji2_fast.formats.params.default_head_names`).
    params : path or dict, optional
        basenji params, used only to name heads by their ``head_<species>`` units.

    Returns
    -------
    ModelSpec
        ``seq_length`` from the InputLayer; ops fused as described in the module doc.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "model_config" not in f.attrs:
            raise FormatError(f"{path}: no model_config attribute (a weights-only file); "
                              f"pass params= (basenji params JSON) to load it by layer order")
        try:
            config = json.loads(_text(f.attrs["model_config"]))
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}: model_config is not JSON ({e})") from None
        if config.get("class_name") not in ("Functional", "Model"):
            raise FormatError(f"{path}: model class {config.get('class_name')!r} is not a functional "
                              f"Keras model; {UNSUPPORTED}")
        layers = config["config"]["layers"]
        spec = _walk(path, _Weights(f, path), layers, _endpoints(config["config"].get("output_layers")))
        spec.metadata.update(_file_metadata(f, path))
    spec.heads = rename_heads(list(spec.heads.values()), head_names,
                              read_params(params) if params is not None else None)
    return checked(spec, path)


def _walk(path: Path, weights: _Weights, layers: List[dict], outputs: List[str]) -> ModelSpec:
    by_name = {}
    for layer in layers:
        name = layer.get("name") or layer["config"]["name"]
        by_name[name] = layer
    data_inputs = {}
    for name, layer in by_name.items():
        refs = _inbound(layer, path)
        if _class_name(layer) in _FIRST_INPUT_ONLY:
            refs = refs[:1]
        for src, _ in refs:
            if src not in by_name:
                raise FormatError(f"{path}: layer {name!r} takes input from unknown layer {src!r}")
        data_inputs[name] = [src for src, _ in refs]
    if not outputs:
        raise FormatError(f"{path}: model_config has no output layers")

    # Only the layers that feed an output matter; count how many consumers each has, so a
    # convolution whose result is used twice is emitted before either use changes it.
    needed, stack = set(), list(outputs)
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(data_inputs[n])
    consumers = {n: 0 for n in needed}
    for n in needed:
        for src in data_inputs[n]:
            consumers[src] += 1
    for n in outputs:
        consumers[n] += 1

    reader = _GraphReader(path, weights)
    values: Dict[str, object] = {}
    # Keras lists layers in a topological order; the loop tolerates one that is not.
    remaining = [n for n in by_name if n in needed]
    while remaining:
        progressed = []
        for name in remaining:
            if all(src in values for src in data_inputs[name]):
                layer = by_name[name]
                v = reader.layer(_class_name(layer), name, layer.get("config", {}),
                                 [values[s] for s in data_inputs[name]])
                if isinstance(v, _Conv) and consumers[name] > 1:
                    v = reader.materialise(v, name, _class_name(layer))
                values[name] = v
                progressed.append(name)
        if not progressed:
            raise FormatError(f"{path}: the layer graph has a cycle or dangling inputs")
        remaining = [n for n in remaining if n not in values]

    heads = [values[n] for n in outputs]
    for n, h in zip(outputs, heads):
        if not isinstance(h, _Dense):
            raise FormatError(f"{path}: output {n!r} is not a Dense head; {UNSUPPORTED}")
    if len({(h.trunk.pos, h.trunk.gelu) for h in heads}) != 1 or heads[0].trunk.pos != len(reader.ops):
        raise FormatError(f"{path}: the heads do not share the trunk output; {UNSUPPORTED}")
    if len(reader.gelu_variants) > 1:
        raise FormatError(f"{path}: the model mixes GELU variants {sorted(reader.gelu_variants)}")
    if reader.seq_length is None:
        raise FormatError(f"{path}: no InputLayer")
    final_gelu = heads[0].trunk.gelu
    gelu = final_gelu or next(iter(reader.gelu_variants), "sigmoid")
    return ModelSpec(seq_length=reader.seq_length, ops=reader.ops,
                     heads={h.head.name: h.head for h in heads},
                     final_gelu=final_gelu is not None, gelu=gelu)


# --------------------------------------------------------------------------------------
# basenji's restore path: params JSON + weights by layer order

def load_keras_params(params_json_path, weights_h5_path, head: Union[None, str, int] = None,
                      head_names=None) -> ModelSpec:
    """Build the model from basenji's params and assign weights from a Keras HDF5 by order.

    This is what ``SeqNN(params).restore(weights_h5_path, head_i)`` does: Keras
    ``load_weights`` on an HDF5 file walks the layers that have weights in ``layer_names``
    order and assigns them positionally.  Every shape is checked.

    Parameters
    ----------
    params_json_path : str, PathLike or dict
        basenji params JSON (``params["model"]`` describes trunk and heads).
    weights_h5_path : str or PathLike
        A Keras ``.h5`` (whole model or ``save_weights``), holding the trunk and one head.
    head : str or int, optional
        Which params head the file's Dense layer is (``"head_mouse"`` or an index into the
        natural-sorted ``head*`` keys).  Default: the head whose ``units`` match the file.
    head_names : list of str or "a,b", optional
        Name for the head (default: from the params key, e.g. ``head_mouse`` -> "mouse").

    Returns
    -------
    ModelSpec
        ``seq_length`` from params; BatchNorm (epsilon 1e-3, Keras's default) folded.
    """
    path = Path(weights_h5_path)
    where = str(params_json_path) if not isinstance(params_json_path, dict) else "params"
    model = read_params(params_json_path)
    plan = expand_params(model, where=where)
    with _open_h5(path) as f:
        w = _Weights(f, path)
        order = w.weighted_layers()
        pos = 0

        def take(what: str):
            nonlocal pos
            if pos >= len(order):
                raise FormatError(f"{path}: has {len(order)} layers with weights; params {where} "
                                  f"need more (missing {what})")
            name = order[pos]
            pos += 1
            return name, [a for _, a in w.arrays(name)]

        def check(name, a, shape, what):
            if tuple(a.shape) != tuple(shape):
                raise FormatError(f"{path}: layer {name!r}: {what} has shape {tuple(a.shape)}, "
                                  f"expected {tuple(shape)} from {where}")

        ops = []
        for p in plan.ops:
            if isinstance(p, CropPlan):
                ops.append(CropOp(name=p.name, left=p.left, right=p.right))
                continue
            conv_name, arrays = take(f"conv of {p.name}")
            if len(arrays) not in (1, 2):
                raise FormatError(f"{path}: layer {conv_name!r}: {len(arrays)} weights, expected a "
                                  f"Conv1D kernel for {p.name}")
            check(conv_name, arrays[0], (p.kernel_size, p.c_in, p.c_out), "kernel")
            conv_bias = arrays[1] if len(arrays) == 2 else None
            if conv_bias is not None:
                check(conv_name, conv_bias, (p.c_out,), "bias")
            bn_name, bn = take(f"batch norm of {p.name}")
            if len(bn) != 4:
                raise FormatError(f"{path}: layer {bn_name!r}: {len(bn)} weights, expected the 4 of "
                                  f"a BatchNormalization after {conv_name!r}")
            for a, what in zip(bn, ("gamma", "beta", "moving_mean", "moving_variance")):
                check(bn_name, a, (p.c_out,), what)
            kernel, bias = fold_batchnorm(arrays[0], *bn, conv_bias=conv_bias)
            ops.append(ConvOp(name=conv_name, kernel=kernel, bias=bias, dilation=p.dilation,
                              pool=p.pool, residual=p.residual))

        dense_name, arrays = take("the Dense head")
        if len(arrays) != 2 or arrays[0].ndim != 2:
            raise FormatError(f"{path}: layer {dense_name!r}: expected a Dense kernel and bias")
        if head is None:
            hp = match_head(plan, arrays[0].shape[1], str(path))
        else:
            keys = [h.key for h in plan.heads]
            idx = head if isinstance(head, int) else keys.index(head) if head in keys else None
            if idx is None or not 0 <= idx < len(keys):
                raise ValueError(f"head {head!r} not in params heads {keys}")
            hp = plan.heads[idx]
        check(dense_name, arrays[0], (plan.trunk_channels, hp.units), "kernel")
        check(dense_name, arrays[1], (hp.units,), "bias")
        if pos != len(order):
            raise FormatError(f"{path}: has {len(order)} layers with weights, params {where} "
                              f"describe {pos} (first extra: {order[pos]!r})")
        metadata = _file_metadata(f, path)

    head_obj = Head(name=hp.key, weight=np.ascontiguousarray(arrays[0], np.float32),
                    bias=np.ascontiguousarray(arrays[1], np.float32), activation=hp.activation)
    if head_names is None:
        # The params key says which species this head is.
        head_names = [hp.key[len("head_"):]] if hp.key.startswith("head_") else None
    spec = ModelSpec(seq_length=plan.seq_length, ops=ops,
                     heads=rename_heads([head_obj], head_names, model),
                     final_gelu=plan.final_gelu, gelu=plan.gelu, metadata=metadata)
    spec.metadata["params"] = where
    return checked(spec, path)


def read(path, params=None, head_names=None) -> ModelSpec:
    """Dispatch: the graph when the file has ``model_config``; else params + layer order."""
    path = Path(path)
    with _open_h5(path) as f:
        has_config = "model_config" in f.attrs
    if has_config or params is None:
        return read_graph(path, head_names=head_names, params=params)
    return load_keras_params(params, path, head_names=head_names)
