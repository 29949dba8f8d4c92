"""The float64 reference, fed by every reader, against TensorFlow's golden outputs.

Tolerance 1e-4 absolute (the small fixture's outputs are O(1); an independent float64
executor reached 3e-6).
"""
from __future__ import annotations

import numpy as np
import pytest

from basenji2_fast import reference
from basenji2_fast.formats import load_spec
from basenji2_fast.formats.keras_h5 import load_keras_params
from basenji2_fast.spec import ConvOp, CropOp, fold_batchnorm, dilation_schedule

TOL = 1e-4


@pytest.fixture
def inputs(fixture_file):
    return np.load(fixture_file("tf-small", "inputs.npy"))


# (id, loader(f) with f = fixture_file, golden outputs, golden trunk or None): every way a
# model reaches a ModelSpec.
T, TA = ("tf-small", "trunk.npy"), ("tf-small-aug", "trunk.npy")
CASES = [
    ("h5", lambda f: load_spec(f("tf-small", "model.h5")), ("tf-small", "outputs.npy"), T),
    ("h5-mouse", lambda f: load_spec(f("tf-small", "model_mouse.h5")), ("tf-small", "outputs_mouse.npy"), T),
    ("h5-legacy-strings", lambda f: load_spec(f("tf-small", "model_legacystr.h5")),
     ("tf-small", "outputs.npy"), T),
    ("h5-augmentation-layers", lambda f: load_spec(f("tf-small-aug", "model.h5")),
     ("tf-small-aug", "outputs.npy"), TA),
    ("h5-aug-mouse", lambda f: load_spec(f("tf-small-aug", "model_mouse.h5")),
     ("tf-small-aug", "outputs_mouse.npy"), TA),
    ("params-restore", lambda f: load_keras_params(f("tf-small", "params.json"), f("tf-small", "model.h5")),
     ("tf-small", "outputs.npy"), T),
    ("params-restore-mouse",
     lambda f: load_keras_params(f("tf-small", "params.json"), f("tf-small", "model_mouse.h5")),
     ("tf-small", "outputs_mouse.npy"), T),
    ("pth-sigmoid", lambda f: load_spec(f("tf-small", "model_basenji2_pytorch.pth")),
     ("tf-small", "outputs.npy"), T),
    # basenji2-pytorch's own numbers (erf GELU): TF's trunk does not apply
    ("pth-erf", lambda f: load_spec(f("tf-small", "model_basenji2_pytorch.pth"), gelu="erf"),
     ("tf-small", "outputs_basenji2_pytorch_erf_gelu.npy"), None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_golden(case, inputs, fixture_file):
    _, load, golden, golden_trunk = case
    spec = load(fixture_file)
    trunk = reference.trunk(spec, inputs)
    if golden_trunk is not None:
        want = np.load(fixture_file(*golden_trunk))
        assert trunk.shape == want.shape == (4, 96, 64)
        err = np.abs(trunk - want).max()
        assert err <= TOL, f"trunk: max |diff| {err:.3g}"
    want = np.load(fixture_file(*golden))
    got = reference.head(spec, trunk)
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err <= TOL, f"outputs: max |diff| {err:.3g}"
    # the one-call path gives the same numbers
    np.testing.assert_allclose(reference.predict(spec, inputs[:1]), got[:1], rtol=1e-12, atol=1e-12)


def _op_outputs(spec, x):
    """Output of every op for one sequence (x: [L, 4])."""
    outs, ins = [], []
    for op in spec.ops:
        ins.append(x)
        if isinstance(op, ConvOp):
            res = ins[op.residual] if op.residual is not None else None
            x = reference.conv_op(op, x, res, spec.gelu)
        else:
            x = x[op.left:x.shape[0] - op.right]
        outs.append(x)
    return outs


def test_layer_outputs(inputs, fixture_file):
    """Fused ops against the TF layer whose output each one ends on."""
    spec = load_spec(fixture_file("tf-small", "model.h5"))
    layers = np.load(fixture_file("tf-small", "layer_outputs_seq0.npz"))
    outs = _op_outputs(spec, inputs[0])
    # op index -> last Keras layer fused into it
    for i, layer in [(0, "max_pooling1d"), (6, "max_pooling1d_6"), (7, "batch_normalization_7"),
                     (8, "add"), (14, "add_3"), (15, "cropping1d"), (16, "batch_normalization_15")]:
        want = layers[layer]
        assert outs[i].shape == want.shape, layer
        assert np.abs(outs[i] - want).max() <= TOL, layer
    assert isinstance(spec.ops[15], CropOp)
    embed = reference.gelu(outs[-1], spec.gelu)
    assert np.abs(embed - layers["gelu_16"]).max() <= TOL


def test_gelu_variants():
    # gelu(1) of the published (sigmoid) form: the first op's value on a one-hot base.
    assert reference.gelu(np.array(1.0), "sigmoid") == pytest.approx(0.8458, abs=1e-4)
    assert reference.gelu(np.array(1.0), "erf") == pytest.approx(0.841345, abs=1e-6)
    assert reference.gelu(np.array(1.0), "tanh") == pytest.approx(0.841192, abs=1e-6)
    assert reference.gelu(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_fold_batchnorm_matches_unfolded():
    rng = np.random.default_rng(0)
    k, cin, cout, L = 5, 7, 6, 40
    kernel = rng.normal(size=(k, cin, cout)).astype(np.float32)
    conv_bias = rng.normal(size=cout).astype(np.float32)
    gamma, beta, mean = rng.normal(size=(3, cout)).astype(np.float32)
    var = rng.uniform(0.1, 3.0, size=cout).astype(np.float32)
    x = rng.normal(size=(L, cin))
    y = reference.conv1d(x, kernel, conv_bias, dilation=2)
    unfolded = gamma * (y - mean) / np.sqrt(var.astype(np.float64) + 1e-3) + beta
    fk, fb = fold_batchnorm(kernel, gamma, beta, mean, var, conv_bias=conv_bias)
    assert fk.dtype == np.float32 and fb.dtype == np.float32 and fk.shape == kernel.shape
    folded = reference.conv1d(x, fk, fb, dilation=2)
    assert np.abs(folded - unfolded).max() <= 1e-5 * (1 + np.abs(unfolded).max())
    # without a conv bias the mean alone shifts the output
    fk0, fb0 = fold_batchnorm(kernel, gamma, beta, mean, var)
    np.testing.assert_allclose(fb0, beta - gamma * mean / np.sqrt(var.astype(np.float64) + 1e-3), rtol=1e-6)


def test_dilation_schedule():
    assert dilation_schedule(11, 1.5) == [1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72]
    # 1.5 * 3 = 4.5 rounds half to even
    assert dilation_schedule(4, 1.5) == [1, 2, 3, 4]
    assert dilation_schedule(4, 2) == [1, 2, 4, 8]
