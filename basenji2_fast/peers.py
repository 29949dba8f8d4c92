"""Framework peers of ``basenji2-fast bench``: the same model on TensorFlow, torch,
torch.compile, ONNX Runtime and OpenVINO, each driven in its own worker process.

This module imports only the standard library and NumPy at the top (each framework inside
its loader), so that it also runs as a script in an interpreter that has a framework but
not this package (``--peer-python tf=/path/to/python``)::

    python peers.py '{"runtime": "ort", "threads": 2, "codes": "codes.npy", "onnx": "m.onnx"}'

A worker answers its parent line by line (:func:`serve`): ``run B`` times one pass of
batch ``B`` and answers ``{"t": seconds, "cpu": the process's CPU seconds, "n": sequences
computed}``; ``save PATH`` writes the output of sequence 0 (float32 [1, bins, tracks]; a
gradient worker's, ``"task": "gradients"``, [1, L, 4]); ``finish`` answers the worker's
report with its peak RSS. A framework that is not installed answers ``{"not_installed":
why}`` instead of ``ready``; a configuration the CPU cannot run, ``{"unsupported": why}``.

The runtimes (:data:`RUNTIMES`): the original Keras model on TensorFlow (the published
sigmoid GELU, from the ``.h5`` file itself), and basenji2-pytorch carrying the same weights
(:func:`basenji2_fast.formats.torch_pth.state_dict_from_spec`) as shipped, with its erf
GELU: eager, ``torch.compile`` (inductor, freezing on), each also under bf16 autocast; and
its ONNX export (torch's default exporter) on ONNX Runtime and on OpenVINO, whose CPU plugin
runs in a LATENCY configuration (one request, all threads) or a THROUGHPUT one (the streams
and requests in flight it picks; one pass keeps every request busy).
"""
from __future__ import annotations

import copy
import json
import os
import resource
import sys
import time

import numpy as np

MAGIC = "@@b2bench "

# name: what runs, the file it reads ("h5": the Keras model; "pth": basenji2-pytorch's state
# dict; "onnx": its export), the GELU it computes, its precision, the modules it imports
# (for the "not installed" line) and the pip requirement that brings them.
RUNTIMES = {
    "tf": dict(title="TensorFlow (the Keras .h5)", reads="h5", gelu="sigmoid", precision="fp32",
               modules=("tensorflow", "tf_keras"), pip="tensorflow-cpu tf-keras"),
    "torch": dict(title="torch eager (basenji2-pytorch)", reads="pth", gelu="erf", precision="fp32",
                  modules=("torch", "basenji2_pytorch"), pip="torch basenji2-pytorch"),
    "torch-compile": dict(title="torch.compile (inductor)", reads="pth", gelu="erf", precision="fp32",
                          modules=("torch", "basenji2_pytorch"), pip="torch basenji2-pytorch"),
    "torch-bf16": dict(title="torch eager, bf16 autocast", reads="pth", gelu="erf", precision="bf16",
                       modules=("torch", "basenji2_pytorch"), pip="torch basenji2-pytorch"),
    "torch-compile-bf16": dict(title="torch.compile, bf16 autocast", reads="pth", gelu="erf", precision="bf16",
                               modules=("torch", "basenji2_pytorch"), pip="torch basenji2-pytorch"),
    "ort": dict(title="ONNX Runtime (CPU)", reads="onnx", gelu="erf", precision="fp32",
                modules=("onnxruntime",), pip="onnxruntime"),
    "ov": dict(title="OpenVINO LATENCY", reads="onnx", gelu="erf", precision="fp32",
               modules=("openvino",), pip="openvino"),
    "ov-bf16": dict(title="OpenVINO LATENCY", reads="onnx", gelu="erf", precision="bf16",
                    modules=("openvino",), pip="openvino"),
    "ov-tput": dict(title="OpenVINO THROUGHPUT", reads="onnx", gelu="erf", precision="fp32",
                    modules=("openvino",), pip="openvino"),
    "ov-tput-bf16": dict(title="OpenVINO THROUGHPUT", reads="onnx", gelu="erf", precision="bf16",
                         modules=("openvino",), pip="openvino"),
}


# ---------------------------------------------------------------------------------------------
# the worker side of the protocol (also used by the engine's own workers in bench.py)

def ru_maxrss_mb() -> float:
    """getrusage(RUSAGE_SELF).ru_maxrss in MB (Linux reports KiB, macOS bytes)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it exec'd, in MB: ``VmHWM`` (Linux's
    ``ru_maxrss`` of a child starts at its parent's RSS at fork time), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return ru_maxrss_mb()


def reply(obj) -> None:
    """A worker's answer to its parent: one marked JSON line on stdout."""
    sys.stdout.write(MAGIC + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(handlers: dict, report: dict) -> None:
    """A worker's loop: say ``ready`` (with ``report``), then answer each stdin line
    ``COMMAND [ARG]`` with ``handlers[COMMAND](ARG)``; ``finish`` adds the peak RSS to
    ``report``, answers it and returns."""
    reply({"ready": True, **report})
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "finish":
            if "finish" in handlers:
                handlers["finish"](arg)
            report.update(peak_rss_mb=peak_rss_mb(), ru_maxrss_mb=ru_maxrss_mb(),
                          torch_imported="torch" in sys.modules)
            reply(report)
            return
        try:
            reply(handlers[cmd](arg))
        except Exception as e:  # noqa: BLE001  (the parent reports it and goes on)
            reply({"error": f"{type(e).__name__}: {e}"})


def onehot(codes: np.ndarray, layout: str) -> np.ndarray:
    """uint8 codes [B, L] (A, C, G, T = 0..3; anything else all zeros) -> float32 one-hot,
    [B, L, 4] (``"blc"``: Keras) or [B, 4, L] (``"bcl"``: torch and its export)."""
    table = np.zeros((256, 4), np.float32)
    table[np.arange(4), np.arange(4)] = 1.0
    x = table[codes]
    return x if layout == "blc" else np.ascontiguousarray(x.transpose(0, 2, 1))


# ---------------------------------------------------------------------------------------------
# random weights (tests, and the benchmark when no model file is given)

def random_basenji2_pytorch(seed: int = 0):
    """Full-size basenji2-pytorch ``Basenji2``, eval mode, every parameter and BatchNorm
    statistic random (so a loader that mishandles BN folding shows up).

    Scales keep activations O(1) through all 28 conv layers and put the softplus outputs
    around 0..20, the real model's range: He-like gain 2 for the convs, 0.5 for the second
    conv of each residual block (so the residual stream grows slowly).
    """
    import torch  # noqa: PLC0415  (optional dependency)
    from basenji2_pytorch import Basenji2, basenji2_params  # noqa: PLC0415

    torch.manual_seed(seed)
    model = Basenji2(copy.deepcopy(basenji2_params["model"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Conv1d):
                fan_in = mod.in_channels * mod.kernel_size[0]
                gain = 0.5 if ".module.1." in name else 2.0
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (gain / fan_in) ** 0.5)
            elif isinstance(mod, torch.nn.BatchNorm1d):
                n = mod.num_features
                mod.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=g))
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=g))
            elif isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.0 / mod.in_features) ** 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.5)
    return model.eval()


def use_sigmoid_gelu(model):
    """Swap every ``torch.nn.GELU`` of a basenji2-pytorch model (the exact erf GELU) for the
    published model's ``x * sigmoid(1.702 x)``, in place; returns the model."""
    import torch  # noqa: PLC0415  (optional dependency)

    class SigmoidGELU(torch.nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GELU):
                setattr(parent, name, SigmoidGELU())
    return model


def basenji2_pytorch(pth: str):
    """basenji2-pytorch's ``Basenji2`` (the published architecture, as shipped: erf GELU)
    with the state dict in ``pth``, eval mode."""
    import torch  # noqa: PLC0415
    from basenji2_pytorch import Basenji2, basenji2_params  # noqa: PLC0415

    model = Basenji2(copy.deepcopy(basenji2_params["model"]))
    model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def export_onnx(pth: str, out: str) -> dict:
    """basenji2-pytorch with the weights in ``pth`` -> ONNX at ``out``, with torch's default
    exporter (torch.export based; needs onnxscript): BatchNorm folded into the convolutions,
    GELU as the ONNX Gelu op, input "x" [batch, 4, L], batch dynamic. (The older TorchScript
    exporter writes the dilated convolutions' "same" padding as auto_pad, which ONNX Runtime
    refuses for dilated convolutions.) Written to a temporary name, then renamed."""
    import torch  # noqa: PLC0415

    model = basenji2_pytorch(pth)
    x = torch.zeros(1, 4, 131072)
    x[0, 0] = 1.0
    tmp = out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, (x,), tmp, dynamo=True, external_data=False, input_names=["x"],
                          output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}})
    os.replace(tmp, out)
    return {"onnx": out, "exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
            "onnx_mb": os.path.getsize(out) / 1e6}


class Unsupported(Exception):
    """A configuration this CPU cannot run (the worker answers ``{"unsupported": why}``)."""


# ---------------------------------------------------------------------------------------------
# the runtimes: each loader returns (run, report); run(codes [B, L]) -> (output of the first
# B sequences' pass or None, sequences computed)

def _keras_custom_objects(tf):
    """The layers of basenji's Keras models that Keras does not know: the published GELU
    (x * sigmoid(1.702 x)) and the training-time augmentations, which are identities at
    inference (StochasticReverseComplement then says "not reversed" to SwitchReverse)."""
    layers = tf.keras.layers

    class GELU(layers.Layer):
        def call(self, x):
            return x * tf.math.sigmoid(1.702 * x)

    class StochasticReverseComplement(layers.Layer):
        def call(self, x, training=None):
            return x, tf.constant(False)

    class StochasticShift(layers.Layer):
        def __init__(self, shift_max=0, symmetric=True, pad="uniform", **kw):
            super().__init__(**kw)
            self.shift_max, self.symmetric, self.pad = shift_max, symmetric, pad

        def call(self, x, training=None):
            return x

        def get_config(self):
            return dict(super().get_config(), shift_max=self.shift_max, symmetric=self.symmetric, pad=self.pad)

    class SwitchReverse(layers.Layer):
        def call(self, x_reverse):
            x, reverse = x_reverse
            return tf.cond(reverse, lambda: tf.reverse(x, axis=[1]), lambda: x)

    return {c.__name__: c for c in (GELU, StochasticReverseComplement, StochasticShift, SwitchReverse)}


def _load_tf(cfg: dict):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2 (tf-keras) reads Keras 2 .h5 models
    import tensorflow as tf  # noqa: PLC0415

    n = cfg["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    model = tf.keras.models.load_model(cfg["h5"], custom_objects=_keras_custom_objects(tf), compile=False)
    fn = tf.function(lambda t: model(t, training=False))

    def run(codes):
        y = fn(tf.constant(onehot(codes, "blc")))
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.numpy(), len(codes)

    return run, {"version": tf.__version__, "keras": tf.keras.__name__,
                 "threads": f"intra {tf.config.threading.get_intra_op_parallelism_threads()}, "
                            f"inter {tf.config.threading.get_inter_op_parallelism_threads()}"}


def _load_torch(cfg: dict, compiled: bool, bf16: bool):
    import torch  # noqa: PLC0415

    n = cfg["threads"]
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = basenji2_pytorch(cfg["pth"])
    if compiled:
        import torch._inductor.config as inductor  # noqa: PLC0415

        inductor.freezing = True  # weights as constants: the inference setting
        model = torch.compile(model)

    def run(codes):
        x = torch.from_numpy(onehot(codes, "bcl"))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).float().numpy(), len(codes)

    return run, {"version": torch.__version__, "threads": torch.get_num_threads(),
                 "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "config": ("torch.compile inductor, freezing" if compiled else "eager")
                           + (", bf16 autocast" if bf16 else "")}


def _load_torch_gradients(cfg: dict):
    """basenji2-pytorch's gradient of its summed predictions with respect to the one-hot input,
    by autograd, fp32: the published sigmoid GELU swapped in when ``cfg["gelu"]`` is "sigmoid";
    ``tracks`` / ``bins`` (None: all) choose what is summed. The weights are frozen (autograd
    then computes the input's gradient only, its cheapest configuration) unless
    ``cfg["weight_grads"]``, as a model fresh from ``torch.load`` has them. run(codes) ->
    (gradient float32 [B, L, 4], B)."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(cfg["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = basenji2_pytorch(cfg["pth"])
    if cfg.get("gelu") == "sigmoid":
        use_sigmoid_gelu(model)
    weight_grads = bool(cfg.get("weight_grads"))
    for prm in model.parameters():
        prm.requires_grad_(weight_grads)
    tracks, bins = cfg.get("tracks"), cfg.get("bins")
    cols = slice(None) if tracks is None else torch.tensor(tracks)
    rows = slice(None) if bins is None else torch.tensor(bins)

    def run(codes):
        model.zero_grad(set_to_none=True)
        x = torch.from_numpy(onehot(codes, "bcl")).requires_grad_(True)
        model(x)[:, rows][:, :, cols].sum().backward()
        return x.grad.numpy().transpose(0, 2, 1), len(codes)  # [B, L, 4]

    return run, {"version": torch.__version__, "threads": torch.get_num_threads(),
                 "config": f"autograd, {cfg.get('gelu') or 'erf'} GELU, "
                           + ("weight gradients too" if weight_grads else "frozen weights")}


def _load_ort(cfg: dict):
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg["threads"]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(cfg["onnx"], so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(codes):
        return sess.run(None, {name: onehot(codes, "bcl")})[0], len(codes)

    return run, {"version": ort.__version__, "threads": f"intra {cfg['threads']}, sequential",
                 "providers": sess.get_providers()}


def _load_ov(cfg: dict, bf16: bool, throughput: bool):
    import openvino as ov  # noqa: PLC0415

    core = ov.Core()
    caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if bf16 and "BF16" not in caps:
        raise Unsupported(f"this CPU has no bf16 for OpenVINO (capabilities {','.join(caps)}): it would run f32")
    model = core.read_model(cfg["onnx"])
    inp = model.inputs[0].get_any_name()
    length = int(model.inputs[0].get_partial_shape()[2].get_length())
    hint = "THROUGHPUT" if throughput else "LATENCY"
    compiled = {}  # batch -> (compiled model, requests); OpenVINO compiles for a static shape

    def compiled_for(b: int):
        if b not in compiled:
            model.reshape({inp: [b, 4, length]})
            cm = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": cfg["threads"],
                                                   # explicit: on a CPU with bf16 OpenVINO's default is bf16
                                                   "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"})
            nreq = int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if throughput else 1
            compiled[b] = (cm, ov.AsyncInferQueue(cm, nreq) if throughput else cm.create_infer_request(), nreq)
            prec = cm.get_property("INFERENCE_PRECISION_HINT")
            report.update(precision=prec.get_type_name() if hasattr(prec, "get_type_name") else str(prec),
                          streams=int(cm.get_property("NUM_STREAMS")), requests=nreq,
                          ov_threads=int(cm.get_property("INFERENCE_NUM_THREADS")))
        return compiled[b]

    def run(codes):
        cm, req, nreq = compiled_for(len(codes))
        x = onehot(codes, "bcl")
        if not throughput:
            return req.infer({0: x})[cm.output(0)], len(codes)
        for _ in range(nreq):  # every stream busy: nreq requests in flight
            req.start_async({0: x})
        req.wait_all()
        return None, nreq * len(codes)

    def output(codes):
        cm, _, _ = compiled_for(len(codes))
        return cm.create_infer_request().infer({0: onehot(codes, "bcl")})[cm.output(0)]

    report = {"version": ov.__version__.split("-")[0], "build": ov.__version__, "hint": hint, "capabilities": caps}
    compiled_for(1)
    return run, report, output


def _worker(cfg: dict) -> int:
    rt = cfg["runtime"]
    spec = RUNTIMES[rt]
    missing = []
    import importlib.util  # noqa: PLC0415

    for mod in spec["modules"]:
        if importlib.util.find_spec(mod) is None:
            missing.append(mod)
    if missing:
        reply({"not_installed": f"{' and '.join(missing)} not installed (pip install {spec['pip']}, "
                                f"or pip install 'basenji2-fast[peers]')"})
        return 0
    codes = np.load(cfg["codes"])
    t0 = time.perf_counter()
    output = None
    try:
        if rt == "tf":
            run, report = _load_tf(cfg)
        elif rt == "torch" and cfg.get("task") == "gradients":
            run, report = _load_torch_gradients(cfg)
        elif rt.startswith("torch"):
            run, report = _load_torch(cfg, compiled="compile" in rt, bf16=rt.endswith("bf16"))
        elif rt == "ort":
            run, report = _load_ort(cfg)
        else:
            run, report, output = _load_ov(cfg, bf16=rt.endswith("bf16"), throughput="tput" in rt)
    except Unsupported as e:
        reply({"unsupported": str(e)})
        return 0
    except ImportError as e:  # present but broken (e.g. a missing shared library)
        reply({"not_installed": f"importing it failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        return 0
    report.update(runtime=rt, load_s=time.perf_counter() - t0)

    def timed(arg):
        b = int(arg or 1)
        t, c = time.perf_counter(), time.process_time()
        _, n = run(codes[:b])
        return {"t": time.perf_counter() - t, "cpu": time.process_time() - c, "n": n}

    def save(path):
        y = output(codes[:1]) if output is not None else run(codes[:1])[0]
        np.save(path, np.asarray(y, np.float32)[:1])
        return {"saved": path}

    serve({"run": timed, "save": save}, report)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python peers.py CONFIG_JSON (a worker of basenji2-fast bench)")
    sys.exit(_worker(json.loads(sys.argv[1])))
