"""The engine's own weight file: one ``.safetensors`` holding a converted ModelSpec.

Layout (safetensors: little-endian u64 header length, JSON header, raw tensor bytes):

* tensors ``ops.<i>.kernel`` [k, c_in, c_out] and ``ops.<i>.bias`` [c_out] for every conv
  op ``i`` (BatchNorm already folded), ``heads.<name>.weight`` [c, tracks] and
  ``heads.<name>.bias`` [tracks]; dtype F32, or BF16 for ``precision="bf16"``;
* ``__metadata__["basenji2_fast"]``: JSON with ``format_version``, ``seq_length``, ``gelu``,
  ``final_gelu``, ``ops`` (conv: name, dilation, gelu_in, pool, residual; crop: name,
  left, right), ``heads`` (name, activation, tracks), ``precision``, ``source`` (the
  converted files and their sha256) and ``package_version``.

Loading maps the file (``np.memmap``): fp32 tensors are read-only views of the mapping
(no copy, so opening the 120 MB model costs page faults, not a read); bf16 tensors are
widened to float32 on load, or (``keep_bf16``, as :func:`basenji2_fast.load` reads them)
kept as uint16 bit views of the mapping that the engine packs directly.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict

import numpy as np

from .._io import atomic_output, check_output
from ..spec import FILE_PRECISIONS, ConvOp, CropOp, Head, ModelSpec
from ..version import __version__
from . import ENGINE, FormatError, checked

FORMAT_VERSION = 1
METADATA_KEY = "basenji2_fast"

_ITEMSIZE = {"F32": 4, "BF16": 2}
# A header this large is not ours (the full model's is ~10 kB); refuse before allocating.
_MAX_HEADER = 100 << 20


# --------------------------------------------------------------------------------------
# bfloat16 (numpy has no such dtype: carry the bits as uint16)

def fp32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 array -> uint16 bfloat16 bit patterns, rounded to nearest even.

    a: any shape; returns the same shape.  NaN stays a (quiet) NaN: the rounding add
    could otherwise carry a NaN's payload into the exponent and produce Inf.
    """
    a = np.ascontiguousarray(a, np.float32)
    bits = a.view(np.uint32)
    out = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact: bf16 is fp32's top half)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


# --------------------------------------------------------------------------------------
# Writing

def _metadata_json(spec: ModelSpec, precision: str) -> str:
    ops = []
    for op in spec.ops:
        if isinstance(op, ConvOp):
            ops.append({"type": "conv", "name": op.name, "dilation": int(op.dilation),
                        "gelu_in": bool(op.gelu_in), "pool": int(op.pool),
                        "residual": None if op.residual is None else int(op.residual)})
        else:
            ops.append({"type": "crop", "name": op.name, "left": int(op.left), "right": int(op.right)})
    meta = {
        "format_version": FORMAT_VERSION,
        "seq_length": int(spec.seq_length),
        "gelu": spec.gelu,
        "final_gelu": bool(spec.final_gelu),
        "ops": ops,
        "heads": [{"name": h.name, "activation": h.activation, "tracks": h.tracks}
                  for h in spec.heads.values()],
        "precision": precision,
        "source": list(spec.metadata.get("source", [])),
        "package_version": __version__,
    }
    return json.dumps(meta, separators=(",", ":"))


def _tensors(spec: ModelSpec) -> Dict[str, np.ndarray]:
    out = {}
    for i, op in enumerate(spec.ops):
        if isinstance(op, ConvOp):
            out[f"ops.{i}.kernel"] = np.ascontiguousarray(op.kernel, np.float32)
            out[f"ops.{i}.bias"] = np.ascontiguousarray(op.bias, np.float32)
    for name, h in spec.heads.items():
        out[f"heads.{name}.weight"] = np.ascontiguousarray(h.weight, np.float32)
        out[f"heads.{name}.bias"] = np.ascontiguousarray(h.bias, np.float32)
    return out


def _write_safetensors(path: Path, tensors: Dict[str, tuple], metadata: Dict[str, str]) -> None:
    """Minimal safetensors writer.  tensors: name -> (dtype code, array of the raw bits)."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, arr) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces (valid JSON) so the data section starts 8-byte aligned, as the
    # safetensors library does; fp32 views of the mapping are then aligned too.
    hb += b" " * (-(8 + len(hb)) % 8)
    with open(path, "xb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, arr in tensors.values():
            f.write(np.ascontiguousarray(arr).tobytes())


def save(spec: ModelSpec, path, precision: str = "fp32") -> None:
    """Write ``spec`` to ``path`` as one safetensors file, atomically.

    Parameters
    ----------
    spec : ModelSpec
        Validated first; its ``metadata["source"]`` (list of {file, sha256, ...}) is kept.
    path : str or PathLike
        Destination; written to a temporary file in the same folder, then ``os.replace``d,
        so readers never see a half-written model.
    precision : {"fp32", "bf16"}
        bf16 rounds every tensor to nearest even (halves the file; ~3 significant digits).
    """
    if precision not in FILE_PRECISIONS:
        raise ValueError(f"precision must be one of {FILE_PRECISIONS}, got {precision!r}")
    spec.validate()
    path = check_output(path)
    tensors = _tensors(spec)
    metadata = {METADATA_KEY: _metadata_json(spec, precision)}
    with atomic_output(path) as tmp:
        if precision == "bf16":
            _write_safetensors(tmp, {k: ("BF16", fp32_to_bf16_bits(v)) for k, v in tensors.items()}, metadata)
        else:
            from safetensors.numpy import save_file  # noqa: PLC0415

            save_file(tensors, str(tmp), metadata=metadata)


# --------------------------------------------------------------------------------------
# Reading

def read_header(path) -> tuple:
    """(header dict without ``__metadata__``, metadata dict, data offset) of a safetensors file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{path}: truncated safetensors file ({size} bytes)")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8 or n > _MAX_HEADER:
            raise FormatError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, "
                              f"file of {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def load(path, keep_bf16: bool = False) -> ModelSpec:
    """Map a converted ``.safetensors`` file and return its ModelSpec.

    Parameters
    ----------
    keep_bf16 : bool
        Keep bf16 kernels and head weights as uint16 bfloat16 bit patterns, read-only views
        of the mapping (for the engine, which packs them directly); biases are widened.

    Returns
    -------
    ModelSpec
        fp32 arrays are read-only views of the file mapping; bf16 ones are float32 copies
        (or, with ``keep_bf16``, uint16 bit views for kernels and head weights).
        ``metadata`` holds format, format_version, precision, source, package_version, file.

    Raises
    ------
    FormatError
        Not a basenji2_fast file, truncated, or inconsistent; the message names the file.
    """
    path = Path(path)
    header, file_meta, data_start = read_header(path)
    if METADATA_KEY not in file_meta:
        raise FormatError(f"{path}: a safetensors file without {METADATA_KEY!r} metadata; "
                          f"convert the model with `basenji2-fast convert`")
    try:
        meta = json.loads(file_meta[METADATA_KEY])
        version = int(meta["format_version"])
    except (TypeError, KeyError, ValueError) as e:
        raise FormatError(f"{path}: corrupt {METADATA_KEY} metadata ({e})") from None
    if version > FORMAT_VERSION:
        raise FormatError(f"{path}: format version {version} is newer than this basenji2_fast "
                          f"({__version__}) reads ({FORMAT_VERSION}); upgrade the package")

    size = path.stat().st_size
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > 0 else np.zeros(0, np.uint8)
    arrays: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise FormatError(f"{path}: tensor {name!r}: corrupt header entry") from None
        if dtype not in _ITEMSIZE:
            raise FormatError(f"{path}: tensor {name!r}: dtype {dtype} is not F32 or BF16")
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= size - data_start) or end - begin != count * _ITEMSIZE[dtype]:
            raise FormatError(f"{path}: tensor {name!r}: data [{begin}, {end}) is outside the file "
                              f"or the wrong size (truncated file?)")
        if dtype == "F32":
            arrays[name] = np.frombuffer(mm, "<f4", count, data_start + begin).reshape(shape)
        else:
            bits = np.frombuffer(mm, "<u2", count, data_start + begin).reshape(shape)
            keep = keep_bf16 and (name.endswith(".kernel") or name.endswith(".weight"))
            arrays[name] = bits if keep else bf16_bits_to_fp32(bits)

    def take(key):
        if key not in arrays:
            raise FormatError(f"{path}: missing tensor {key!r}")
        return arrays.pop(key)

    try:
        ops = []
        for i, o in enumerate(meta["ops"]):
            if o["type"] == "conv":
                ops.append(ConvOp(name=o["name"], kernel=take(f"ops.{i}.kernel"), bias=take(f"ops.{i}.bias"),
                                  dilation=int(o["dilation"]), gelu_in=bool(o["gelu_in"]), pool=int(o["pool"]),
                                  residual=None if o["residual"] is None else int(o["residual"])))
            elif o["type"] == "crop":
                ops.append(CropOp(name=o["name"], left=int(o["left"]), right=int(o["right"])))
            else:
                raise FormatError(f"{path}: op {i} has unknown type {o['type']!r}")
        heads = {}
        for h in meta["heads"]:
            heads[h["name"]] = Head(name=h["name"], weight=take(f"heads.{h['name']}.weight"),
                                    bias=take(f"heads.{h['name']}.bias"), activation=h["activation"])
            if heads[h["name"]].tracks != int(h["tracks"]):
                raise FormatError(f"{path}: head {h['name']!r} has {heads[h['name']].tracks} tracks, "
                                  f"metadata says {h['tracks']}")
        spec = ModelSpec(seq_length=int(meta["seq_length"]), ops=ops, heads=heads,
                         final_gelu=bool(meta["final_gelu"]), gelu=meta["gelu"])
    except FormatError:
        raise
    except (TypeError, KeyError, ValueError, IndexError) as e:
        raise FormatError(f"{path}: corrupt {METADATA_KEY} metadata ({type(e).__name__}: {e})") from None
    if arrays:
        raise FormatError(f"{path}: unexpected tensor {sorted(arrays)[0]!r}")
    for op in spec.ops:
        if isinstance(op, ConvOp) and op.kernel.ndim != 3:
            raise FormatError(f"{path}: op {op.name!r}: kernel is not [k, c_in, c_out]")
    spec.metadata = {"format": ENGINE, "format_version": version, "precision": meta.get("precision", "fp32"),
                     "source": meta.get("source", []), "package_version": meta.get("package_version"),
                     "file": path.name}
    return checked(spec, path)
