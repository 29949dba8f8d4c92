"""Readers and writers for every weight file the engine accepts.

All of them return a validated :class:`~basenji2_fast.spec.ModelSpec`:

========================  =====================================================
``.h5`` / ``.hdf5``       Keras HDF5 saved by basenji (graph from ``model_config``);
                          a weights-only file needs ``params=`` (basenji's restore path)
``.pth`` / ``.pt``        basenji2-pytorch state dict (architecture from params)
``.safetensors``          the engine's own converted file
========================  =====================================================

The format is recognised from the file's first bytes, not its name, so a renamed file
still loads and a text file called ``model.h5`` fails with a one-line message.
These modules are pure Python: they import without the compiled extension.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional, Union

from .._io import check_input_file

PathLike = Union[str, "os.PathLike[str]"]


class FormatError(ValueError):
    """A weight file that cannot be read; the message names the file (and layer or key)."""


# The sniffed kinds, and the names users know them by (for error messages).
KERAS_H5 = "keras-h5"
TORCH_PTH = "torch-pth"
ENGINE = "basenji2_fast-safetensors"

_KIND_NAMES = {KERAS_H5: "an HDF5 (Keras .h5)", TORCH_PTH: "a PyTorch (.pth)", ENGINE: "a safetensors"}

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EXTENSIONS = {".h5": KERAS_H5, ".hdf5": KERAS_H5, ".keras": KERAS_H5,
               ".pth": TORCH_PTH, ".pt": TORCH_PTH, ".safetensors": ENGINE}


def sniff_format(path: PathLike) -> Optional[str]:
    """Recognise a weight file from its first bytes.

    Returns one of ``KERAS_H5``, ``TORCH_PTH``, ``ENGINE``, or None when nothing matches.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if head.startswith(_HDF5_SIGNATURE):
            return KERAS_H5
        # HDF5 allows a user block before the superblock: the signature may sit at
        # 512, 1024, 2048, ... bytes.
        offset = 512
        size = os.fstat(f.fileno()).st_size
        while offset + 8 <= min(size, 1 << 20):
            f.seek(offset)
            if f.read(8) == _HDF5_SIGNATURE:
                return KERAS_H5
            offset *= 2
    # safetensors: little-endian u64 header length, then a JSON object.  Checked before
    # the pickle opcode below, which a header length's low byte can equal.
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return ENGINE
    # torch.save writes a zip archive since torch 1.6; older files are raw pickles
    # (protocol opcode 0x80, then the protocol number).
    if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)):
        return TORCH_PTH
    return None


def load_spec(path: PathLike, params=None, gelu: Optional[str] = None, head_names=None, keep_bf16: bool = False):
    """Read any supported weight file into a validated ModelSpec.

    Parameters
    ----------
    path : str or PathLike
        ``.h5``/``.hdf5`` (Keras), ``.pth``/``.pt`` (basenji2-pytorch state dict) or
        ``.safetensors`` (converted by :func:`basenji2_fast.convert`).
    params : str, PathLike or dict, optional
        A basenji params JSON (path or parsed).  Needed for a ``.pth`` whose shapes are not
        the published Basenji2 and that has no ``params.json`` beside it, and for a Keras
        weights-only ``.h5`` (no ``model_config``); otherwise used only to name heads
        (keys ``head_human`` / ``head_mouse``).
    gelu : {"sigmoid", "erf", "tanh"}, optional
        Override the GELU variant the file implies (Keras ``GELU`` layer and ``.pth``:
        sigmoid; Keras ``Activation('gelu')``: erf).  ``"erf"`` reproduces basenji2-pytorch.
    head_names : list of str or "a,b" string, optional
        Names for the file's heads, in order.
    keep_bf16 : bool
        A bf16 ``.safetensors`` file's kernels and head weights stay uint16 bfloat16 bit
        patterns viewing the file mapping (no widened copy); the engine reads them as such.

    Returns
    -------
    ModelSpec
        Validated; convolution kernels float32 ``[k, c_in, c_out]`` with BatchNorm folded.

    Raises
    ------
    FormatError
        The file is not a supported model, or is corrupt; the message names the file.
    """
    path = check_input_file(path, "model file", random_access=True)
    kind = sniff_format(path)
    if kind is None:
        expected = _EXTENSIONS.get(path.suffix.lower())
        what = f"not {_KIND_NAMES[expected]} file" if expected else "not a recognised weight file"
        raise FormatError(f"{path}: {what} (expected Keras HDF5 .h5, basenji2-pytorch .pth "
                          f"or basenji2_fast .safetensors)")
    if kind == KERAS_H5:
        from . import keras_h5

        spec = keras_h5.read(path, params=params, head_names=head_names)
    elif kind == TORCH_PTH:
        from . import torch_pth

        spec = torch_pth.read(path, params=params, head_names=head_names)
    else:
        from . import engine_format

        spec = engine_format.load(path, keep_bf16=keep_bf16)
        if head_names is not None:
            from .params import rename_heads

            spec.heads = rename_heads(list(spec.heads.values()), head_names)
    if gelu is not None:
        spec.gelu = gelu
    return checked(spec, path)


def checked(spec, path: PathLike):
    """spec.validate(), with its ValueError turned into a FormatError naming the file."""
    try:
        return spec.validate()
    except FormatError:
        raise
    except ValueError as e:
        raise FormatError(f"{path}: {e}") from None


def one_line(e: BaseException) -> str:
    """An exception's message, first line only (h5py and torch messages run long)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours parts of its messages
    lines = text.strip().splitlines()
    return lines[0] if lines else type(e).__name__


def file_sha256(path: PathLike) -> str:
    return file_digest(path, "sha256")


def file_digest(path: PathLike, algorithm: str) -> str:
    """Hex digest of a file with a hashlib ``algorithm`` ("sha256", "md5", ...)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def source_entry(path: PathLike, fmt: str, **extra) -> dict:
    """Provenance of one input file, as recorded in ``ModelSpec.metadata['source']``."""
    return {"file": Path(path).name, "sha256": file_sha256(path), "format": fmt, **extra}


__all__ = ["FormatError", "load_spec", "sniff_format", "KERAS_H5", "TORCH_PTH", "ENGINE"]
