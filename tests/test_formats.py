"""Readers, the engine's file format, convert, and the errors bad files must give."""
from __future__ import annotations

import argparse
import json
import mmap
import shutil

import h5py
import numpy as np
import pytest

from basenji2_fast import reference
from basenji2_fast.convert import add_convert_subcommand, convert
from basenji2_fast.formats import FormatError, engine_format, load_spec, sniff_format
from basenji2_fast.formats.engine_format import bf16_bits_to_fp32, fp32_to_bf16_bits
from basenji2_fast.formats.keras_h5 import load_keras_params
from basenji2_fast.formats.params import expand_params, read_params
from basenji2_fast.formats.published import BASENJI2_PARAMS
from basenji2_fast.formats import torch_pth
from basenji2_fast.spec import ConvOp, CropOp


@pytest.fixture
def small(fixture_file):
    """fixture_file("tf-small", name)."""
    return lambda name: fixture_file("tf-small", name)


def _conv_ops(spec):
    return [op for op in spec.ops if isinstance(op, ConvOp)]


def assert_same_spec(a, b, exact=True):
    assert (a.seq_length, a.gelu, a.final_gelu) == (b.seq_length, b.gelu, b.final_gelu)
    assert len(a.ops) == len(b.ops)
    for x, y in zip(a.ops, b.ops):
        assert type(x) is type(y) and x.name == y.name
        if isinstance(x, ConvOp):
            assert (x.dilation, x.gelu_in, x.pool, x.residual) == (y.dilation, y.gelu_in, y.pool, y.residual)
            for u, v in ((x.kernel, y.kernel), (x.bias, y.bias)):
                assert u.shape == v.shape and v.dtype == np.float32
                if exact:
                    assert np.array_equal(u, v)
                else:  # bf16 keeps 8 significant bits: error at most half an ulp
                    assert np.all(np.abs(u - v) <= np.abs(u) * 2.0 ** -8)
        else:
            assert (x.left, x.right) == (y.left, y.right)
    assert list(a.heads) == list(b.heads)
    for name in a.heads:
        assert a.heads[name].activation == b.heads[name].activation
        assert np.array_equal(a.heads[name].weight, b.heads[name].weight) if exact else \
            np.all(np.abs(a.heads[name].weight - b.heads[name].weight) <= np.abs(a.heads[name].weight) * 2.0 ** -8)


# --------------------------------------------------------------------------------------
# Keras HDF5

def test_small_h5_structure(small):
    spec = load_spec(small("model.h5"))
    convs = _conv_ops(spec)
    assert spec.seq_length == 16384 and spec.n_bins == 96 and spec.bin_size == 128
    assert len(spec.ops) == 17 and isinstance(spec.ops[15], CropOp)
    assert [op.dilation for op in convs if op.k == 3] == [1, 2, 3, 4]
    assert [op.residual for op in convs] == [None] * 8 + [7, None, 9, None, 11, None, 13, None]
    assert [op.pool for op in convs] == [2] * 7 + [1] * 9
    assert all(op.gelu_in for op in convs) and spec.final_gelu and spec.gelu == "sigmoid"
    assert list(spec.heads) == ["human"] and spec.heads["human"].tracks == 12
    src = spec.metadata["source"][0]
    assert src["file"] == "model.h5" and len(src["sha256"]) == 64
    assert spec.metadata["keras_version"] == "2.21.0"


def test_legacy_and_aug_files_give_the_same_spec(small, fixture_file):
    spec = load_spec(small("model.h5"))
    assert_same_spec(spec, load_spec(small("model_legacystr.h5")))
    assert_same_spec(spec, load_spec(fixture_file("tf-small-aug", "model.h5")))
    assert load_spec(small("model_legacystr.h5")).metadata["keras_version"] == "2.3.0-tf"


def test_params_restore_path_equals_graph(small):
    graph = load_spec(small("model.h5"))
    restored = load_keras_params(small("params.json"), small("model.h5"))
    for x, y in zip(graph.ops, restored.ops):
        if isinstance(x, ConvOp):
            assert np.array_equal(x.kernel, y.kernel) and np.array_equal(x.bias, y.bias)
            assert (x.dilation, x.pool, x.residual) == (y.dilation, y.pool, y.residual)
    # the params JSON names the 7-track head
    mouse = load_keras_params(small("params.json"), small("model_mouse.h5"))
    assert list(mouse.heads) == ["mouse"]


def test_full_h5_structure(fixture_file):
    spec = load_spec(fixture_file("tf-full", "model_human.h5"))
    convs = _conv_ops(spec)
    assert len(spec.ops) == 31 and len(convs) == 30
    assert [op.dilation for op in convs if op.k == 3] == [1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72]
    assert [op.c_out for op in convs[:7]] == [288, 339, 399, 470, 554, 652, 768]
    assert [op.c_out for op in convs[7:29]] == [384, 768] * 11
    assert convs[-1].c_out == spec.trunk_channels == 1536
    assert spec.heads["human"].tracks == 5313
    assert spec.n_bins == 896 and spec.bin_size == 128 and spec.crop_bins == 64
    assert abs(spec.n_params() - 30.1e6) < 0.1e6
    # the head alone, on TF's trunk output for a few bins (the full trunk is too slow in float64)
    trunk = np.load(fixture_file("tf-full", "trunk.npy"), mmap_mode="r")[0, 400:432]
    want = np.load(fixture_file("tf-full", "outputs.npy"), mmap_mode="r")[0, 400:432]
    got = reference.head(spec, trunk)
    assert np.abs(got - want).max() <= 1e-3 + 1e-4 * np.abs(want).max()


def _published_state_dict(shared):
    """The published .pth's keys and shapes (from the shared key list), constant values."""
    sd = {}
    for line in shared("basenji2", "basenji2_pytorch_state_dict_keys.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        if not key.endswith("num_batches_tracked"):
            shape = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
            sd[key] = np.broadcast_to(np.float32(0.5), shape)  # no memory for 30 M values
    return sd


def test_published_params_match_tf_full_and_pytorch_keys(fixture_file, shared):
    plan = expand_params(read_params(BASENJI2_PARAMS), "published")
    full = load_spec(fixture_file("tf-full", "model_human.h5"))
    convs = _conv_ops(full)
    pconvs = [p for p in plan.ops if hasattr(p, "kernel_size")]
    assert [(p.kernel_size, p.c_in, p.c_out, p.dilation, p.pool, p.residual) for p in pconvs] == \
        [(op.k, op.c_in, op.c_out, op.dilation, op.pool, op.residual) for op in convs]
    # every key of the published basenji2-pytorch file is one the plan assigns
    sd = _published_state_dict(shared)
    spec = torch_pth.spec_from_state_dict(sd, plan, "basenji2.pth", "published", None,
                                          BASENJI2_PARAMS["model"])
    assert list(spec.heads) == ["human"] and spec.heads["human"].tracks == 5313
    assert spec.validate().n_bins == 896


def test_published_fallback_for_pth_without_params(tmp_path, monkeypatch, fixture_file, shared):
    """A .pth with no params beside it loads when its shapes are the published model's."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "basenji2.pth"
    torch.save({"placeholder": torch.zeros(1)}, path)
    monkeypatch.setattr(torch_pth, "load_state_dict", lambda p: _published_state_dict(shared))
    spec = load_spec(path)
    assert spec.seq_length == 131072 and spec.crop_bins == 64 and list(spec.heads) == ["human"]
    assert spec.metadata["params"] == "the published Basenji2 params"


# --------------------------------------------------------------------------------------
# basenji2-pytorch

def test_pth_equals_h5(small):
    h5 = load_spec(small("model.h5"))
    pth = load_spec(small("model_basenji2_pytorch.pth"))
    assert pth.gelu == "sigmoid" and list(pth.heads) == ["human"]
    for x, y in zip(_conv_ops(h5), _conv_ops(pth)):
        np.testing.assert_allclose(y.kernel, x.kernel, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(y.bias, x.bias, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pth.heads["human"].weight, h5.heads["human"].weight)
    assert load_spec(small("model_basenji2_pytorch.pth"), gelu="erf").gelu == "erf"


# --------------------------------------------------------------------------------------
# The engine's file

def _is_mapped(a):
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_roundtrip(small, tmp_path, precision):
    spec = load_spec(small("model.h5"))
    out = tmp_path / "m.safetensors"
    engine_format.save(spec, out, precision=precision)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    back = load_spec(out)
    assert_same_spec(spec, back, exact=precision == "fp32")
    assert back.metadata["precision"] == precision
    assert back.metadata["source"] == spec.metadata["source"]
    assert back.metadata["package_version"]
    if precision == "fp32":
        k = back.ops[0].kernel
        assert not k.flags.writeable and _is_mapped(k)  # a view of the file mapping, not a copy
        from safetensors.numpy import load_file
        assert np.array_equal(load_file(out)["ops.0.kernel"], spec.ops[0].kernel)
    else:
        torch = pytest.importorskip("torch")
        from safetensors.torch import load_file
        t = load_file(out)["ops.0.kernel"]  # our hand-written header is valid safetensors
        assert t.dtype == torch.bfloat16
        assert np.array_equal(t.float().numpy(), back.ops[0].kernel)


def test_bf16_rounding_is_nearest_even():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=10000).astype(np.float32) * 10.0 ** rng.integers(-5, 5, 10000),
                        np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 0.0, -0.0,
                                  np.inf, -np.inf, 3.4e38], np.float32)])
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(fp32_to_bf16_bits(x), want)
    assert np.isnan(bf16_bits_to_fp32(fp32_to_bf16_bits(np.array([np.nan], np.float32)))).all()


def test_engine_file_renamed_still_loads(small, tmp_path):
    spec = load_spec(small("model.h5"))
    out = tmp_path / "model.bin"
    engine_format.save(spec, out)
    assert sniff_format(out) == "basenji2_fast-safetensors"
    assert load_spec(out, head_names=["hs"]).heads["hs"].tracks == 12


def test_engine_file_truncated(small, tmp_path):
    out = tmp_path / "m.safetensors"
    engine_format.save(load_spec(small("model.h5")), out)
    data = out.read_bytes()
    for n in (len(data) - 100, 200, 4):
        bad = tmp_path / f"cut{n}.safetensors"
        bad.write_bytes(data[:n])
        with pytest.raises(FormatError, match=bad.name):
            load_spec(bad)


def test_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(FormatError, match="other.safetensors.*convert"):
        load_spec(path)


# --------------------------------------------------------------------------------------
# convert

def test_convert_merges_human_and_mouse(small, tmp_path):
    out = tmp_path / "both.safetensors"
    spec = convert(small("model.h5"), out, mouse=small("model_mouse.h5"))
    assert {n: h.tracks for n, h in spec.heads.items()} == {"human": 12, "mouse": 7}
    back = load_spec(out)
    assert list(back.heads) == ["human", "mouse"]
    assert [s["file"] for s in back.metadata["source"]] == ["model.h5", "model_mouse.h5"]
    # each head on TF's trunk output gives TF's head output
    trunk = np.load(small("trunk.npy"))
    for name, golden in (("human", "outputs.npy"), ("mouse", "outputs_mouse.npy")):
        err = np.abs(reference.head(back, trunk, name) - np.load(small(golden))).max()
        assert err <= 1e-4, name


def test_convert_head_names_and_bf16(small, tmp_path):
    out = tmp_path / "x.safetensors"
    spec = convert(small("model_basenji2_pytorch.pth"), out, mouse=small("model_mouse.h5"),
                   head_names="hs,mm", precision="bf16")
    assert list(spec.heads) == ["hs", "mm"]
    assert load_spec(out).metadata["precision"] == "bf16"


def test_convert_trunks_differ(small, tmp_path):
    other = tmp_path / "model_mouse.h5"
    shutil.copy(small("model_mouse.h5"), other)
    with h5py.File(other, "r+") as f:
        f["model_weights/conv1d_3/conv1d_3/kernel:0"][0, 0, 0] += 1.0
    with pytest.raises(FormatError, match="trunks differ"):
        convert(small("model.h5"), tmp_path / "out.safetensors", mouse=other)
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_cli(small, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_convert_subcommand(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.safetensors"
    args = parser.parse_args(["convert", str(small("model.h5")), str(small("model_mouse.h5")),
                              "-o", str(out), "--precision", "bf16", "--gelu", "sigmoid"])
    assert args.func(args) == 0 and out.exists()
    assert "human (12 tracks), mouse (7 tracks)" in capsys.readouterr().out
    bad = tmp_path / "bad.h5"
    bad.write_text("not a model")
    args = parser.parse_args(["convert", str(bad), "-o", str(tmp_path / "no.safetensors")])
    assert args.func(args) == 1
    assert "bad.h5" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Bad input: one-line FormatError naming the file

def test_truncated_h5(small, tmp_path):
    data = small("model.h5").read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated.h5") as e:
        load_spec(bad)
    assert "\n" not in str(e.value)


def test_text_file_named_h5(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("hello, I am not HDF5\n")
    with pytest.raises(FormatError, match=r"notes.h5: not an HDF5 \(Keras .h5\) file"):
        load_spec(bad)


def _tiny_h5(path, layers, weights=()):
    config = {"class_name": "Functional",
              "config": {"name": "m", "layers": layers,
                         "input_layers": [["sequence", 0, 0]], "output_layers": [[layers[-1]["name"], 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.21.0"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [l["name"].encode() for l in layers]
        for l in layers:
            g = mw.create_group(l["name"])
            ws = [(n, a) for (ln, n, a) in weights if ln == l["name"]]
            g.attrs["weight_names"] = [f"{l['name']}/{n}:0".encode() for n, _ in ws]
            for n, a in ws:
                g[f"{l['name']}/{n}:0"] = a


def _layer(cls, name, src, **config):
    return {"class_name": cls, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [[[s, 0, 0, {}] for s in src]] if src else []}


def test_h5_of_another_architecture(tmp_path):
    path = tmp_path / "lstm.h5"
    _tiny_h5(path, [_layer("InputLayer", "sequence", [], batch_input_shape=[None, 64, 4]),
                    _layer("LSTM", "lstm", ["sequence"], units=8),
                    _layer("Dense", "dense", ["lstm"], units=3, activation="linear")])
    with pytest.raises(FormatError, match=r"lstm.h5.*'lstm' \(LSTM\).*not a basenji model"):
        load_spec(path)
    path = tmp_path / "relu.h5"
    _tiny_h5(path, [_layer("InputLayer", "sequence", [], batch_input_shape=[None, 64, 4]),
                    _layer("Activation", "relu", ["sequence"], activation="relu"),
                    _layer("Conv1D", "conv1d", ["relu"], filters=2, kernel_size=[3], strides=[1],
                           padding="same", dilation_rate=[1], use_bias=False),
                    _layer("Dense", "dense", ["conv1d"], units=3, activation="linear")],
             [("conv1d", "kernel", np.zeros((3, 4, 2), np.float32)),
              ("dense", "kernel", np.zeros((2, 3), np.float32)), ("dense", "bias", np.zeros(3, np.float32))])
    with pytest.raises(FormatError, match=r"relu.h5.*'relu' \(Activation\)"):
        load_spec(path)


def test_tiny_conv_without_batchnorm_uses_its_bias(tmp_path):
    """A Conv1D not followed by BN is fine: its bias is the op's bias."""
    path = tmp_path / "tiny.h5"
    k = np.arange(24, dtype=np.float32).reshape(3, 4, 2) / 10
    b = np.array([0.5, -1.0], np.float32)
    _tiny_h5(path, [_layer("InputLayer", "sequence", [], batch_input_shape=[None, 64, 4]),
                    _layer("Conv1D", "conv1d", ["sequence"], filters=2, kernel_size=[3], strides=[1],
                           padding="same", dilation_rate=[2], use_bias=True),
                    _layer("Dense", "dense", ["conv1d"], units=3, activation="linear")],
             [("conv1d", "kernel", k), ("conv1d", "bias", b),
              ("dense", "kernel", np.ones((2, 3), np.float32)), ("dense", "bias", np.zeros(3, np.float32))])
    spec = load_spec(path)
    op, = spec.ops
    assert not op.gelu_in and op.dilation == 2 and not spec.final_gelu
    assert np.array_equal(op.kernel, k) and np.array_equal(op.bias, b)


@pytest.mark.parametrize("layer, key, value, match", [
    ("conv1d_2", "padding", "valid", r"'conv1d_2' \(Conv1D\).*padding"),
    ("conv1d_2", "strides", [2], r"'conv1d_2' \(Conv1D\).*strides"),
    ("gelu_3", "class_name", "ReLU", r"'gelu_3' \(ReLU\)"),
    ("add_1", "inbound_nodes", [[["gelu_9", 0, 0, {}], ["dropout_1", 0, 0, {}]]], r"'add_1' \(Add\)"),
])
def test_h5_unsupported_layer(small, tmp_path, layer, key, value, match):
    path = tmp_path / "edited.h5"
    shutil.copy(small("model.h5"), path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        entry = next(l for l in config["config"]["layers"] if l["name"] == layer)
        if key in ("class_name", "inbound_nodes"):
            entry[key] = value
        else:
            entry["config"][key] = value
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(FormatError, match="edited.h5.*" + match):
        load_spec(path)


def test_weights_only_h5_needs_params(small, tmp_path):
    path = tmp_path / "weights.h5"
    shutil.copy(small("model.h5"), path)
    with h5py.File(path, "r+") as f:
        del f.attrs["model_config"]
    with pytest.raises(FormatError, match="weights.h5.*params="):
        load_spec(path)
    spec = load_spec(path, params=small("params.json"))
    assert_same_spec(load_keras_params(small("params.json"), small("model.h5")), spec)


def test_params_restore_shape_mismatch(small, fixture_file):
    with pytest.raises(FormatError, match=r"model.h5: layer 'conv1d'.*kernel"):
        load_keras_params(fixture_file("tf-full", "params_human.json"), small("model.h5"))


def test_pth_missing_key(small, tmp_path):
    torch = pytest.importorskip("torch")
    sd = torch.load(small("model_basenji2_pytorch.pth"), map_location="cpu", weights_only=True)
    del sd["model.trunk.1.tower.2.block.2.running_var"]
    path = tmp_path / "missing.pth"
    torch.save(sd, path)
    with pytest.raises(FormatError, match=r"missing.pth: missing key 'model.trunk.1.tower.2.block.2.running_var'"):
        load_spec(path, params=small("params.json"))


def test_pth_wrong_shape(small, tmp_path):
    torch = pytest.importorskip("torch")
    sd = torch.load(small("model_basenji2_pytorch.pth"), map_location="cpu", weights_only=True)
    sd["model.head.final.block.1.bias"] = torch.zeros(13)
    path = tmp_path / "shape.pth"
    torch.save(sd, path)
    (tmp_path / "params.json").write_bytes(small("params.json").read_bytes())  # found beside it
    with pytest.raises(FormatError, match=r"shape.pth: key 'model.head.final.block.1.bias' has shape \(13,\)"):
        load_spec(path)


def test_pth_without_params_and_unpublished_shapes(small, tmp_path):
    torch = pytest.importorskip("torch")
    sd = torch.load(small("model_basenji2_pytorch.pth"), map_location="cpu", weights_only=True)
    path = tmp_path / "alone.pth"
    torch.save(sd, path)
    with pytest.raises(FormatError, match=r"alone.pth: .*published Basenji2.*params="):
        load_spec(path)


def test_pth_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(FormatError, match="junk.pth"):
        load_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "nothing.h5")
