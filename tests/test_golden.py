"""The whole engine against the original TensorFlow model's outputs (golden files).

Small fixtures: max |Δ| <= 1e-4. tf-full (the real Basenji2 architecture, random weights):
max |Δ| <= 1e-3 absolute and <= 1e-4 of the largest output.
"""
import numpy as np
import pytest

import basenji2_fast as b2

SMALL_TOL = 1e-4


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("folder,model_file,outputs,head", [
    ("tf-small", "model.h5", "outputs.npy", None),
    ("tf-small", "model_legacystr.h5", "outputs.npy", None),
    ("tf-small", "model_mouse.h5", "outputs_mouse.npy", None),
    ("tf-small-aug", "model.h5", "outputs.npy", None),
    ("tf-small-aug", "model_mouse.h5", "outputs_mouse.npy", None),
])
def test_small_keras_models_match_tensorflow(fixture_file, folder, model_file, outputs, head):
    x = np.load(fixture_file(folder, "inputs.npy"))
    model = b2.load(fixture_file(folder, model_file), threads=2)
    got = model.predict(x, head=head)
    err = max_abs(got, np.load(fixture_file(folder, outputs)))
    print(f"{folder}/{model_file}: max |Δ| = {err:.2e}")
    assert err <= SMALL_TOL
    trunk_err = max_abs(model.embed(x), np.load(fixture_file(folder, "trunk.npy")))
    assert trunk_err <= SMALL_TOL


def test_small_both_heads_one_trunk_pass(fixture_file, tmp_path):
    out = tmp_path / "both.safetensors"
    b2.convert(fixture_file("tf-small", "model.h5"), out, mouse=fixture_file("tf-small", "model_mouse.h5"))
    model = b2.load(out, threads=2)
    x = np.load(fixture_file("tf-small", "inputs.npy"))
    both = model.predict(x, head="both")
    assert set(both) == {"human", "mouse"}
    assert max_abs(both["human"], np.load(fixture_file("tf-small", "outputs.npy"))) <= SMALL_TOL
    assert max_abs(both["mouse"], np.load(fixture_file("tf-small", "outputs_mouse.npy"))) <= SMALL_TOL
    np.testing.assert_array_equal(model.predict(x, head="mouse"), both["mouse"])


def test_params_restore_path_matches_tensorflow(fixture_file):
    from basenji2_fast.formats.keras_h5 import load_keras_params

    spec = load_keras_params(fixture_file("tf-small", "params.json"), fixture_file("tf-small", "model.h5"))
    x = np.load(fixture_file("tf-small", "inputs.npy"))
    got = b2.Model(spec, threads=2).predict(x)
    assert max_abs(got, np.load(fixture_file("tf-small", "outputs.npy"))) <= SMALL_TOL


def test_pth_sigmoid_gives_tensorflow_and_erf_gives_basenji2_pytorch(fixture_file):
    pytest.importorskip("torch")
    pth = fixture_file("tf-small", "model_basenji2_pytorch.pth")
    x = np.load(fixture_file("tf-small", "inputs.npy"))
    sig = b2.load(pth, threads=2)
    assert sig.info()["gelu"] == "sigmoid"
    assert max_abs(sig.predict(x), np.load(fixture_file("tf-small", "outputs.npy"))) <= SMALL_TOL
    erf = b2.load(pth, threads=2, gelu="erf")
    want = np.load(fixture_file("tf-small", "outputs_basenji2_pytorch_erf_gelu.npy"))
    assert max_abs(erf.predict(x), want) <= SMALL_TOL


def test_conversion_round_trip_is_bit_identical(fixture_file, tmp_path):
    src = fixture_file("tf-small", "model.h5")
    x = np.load(fixture_file("tf-small", "inputs.npy"))
    direct = b2.load(src, threads=2).predict(x)
    dst = tmp_path / "small.safetensors"
    b2.convert(src, dst)
    np.testing.assert_array_equal(b2.load(dst, threads=2).predict(x), direct)
    np.testing.assert_array_equal(b2.load(dst, threads=1).predict(x, batch_size=1), direct)


@pytest.mark.slow
def test_full_basenji2_matches_tensorflow(fixture_file):
    model = b2.load(fixture_file("tf-full", "model_human.h5"), threads=2)
    info = model.info()
    assert (info["seq_length"], info["n_bins"], info["bin_size"], info["heads"]) == (131072, 896, 128, {"human": 5313})
    x = np.load(fixture_file("tf-full", "inputs.npy"))
    want = np.load(fixture_file("tf-full", "outputs.npy"))
    got = model.predict(x)
    err = max_abs(got, want)
    rel = err / float(np.max(np.abs(want)))
    print(f"tf-full: max |Δ| = {err:.2e} (outputs up to {np.max(want):.2f}; relative {rel:.2e})")
    assert err <= 1e-3 and rel <= 1e-4
    trunk = np.load(fixture_file("tf-full", "trunk.npy"))
    assert max_abs(model.embed(x), trunk) <= 1e-3
    # a subset of tracks is computed alone and equals the same columns of the full head
    sel = [0, 17, 5312, 2500]
    np.testing.assert_array_equal(model.predict(x[:1], tracks=sel), got[:1][..., sel])
