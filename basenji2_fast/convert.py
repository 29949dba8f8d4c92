"""Convert published weights (Keras .h5, basenji2-pytorch .pth) into the engine's file.

    basenji2-fast convert model_human.h5 model_mouse.h5 -o basenji2.safetensors

The human and mouse Basenji2 files share one trunk (trained jointly); merged, they make
one file with two heads that runs the trunk once for both species.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np

from ._io import check_output, one_line_errors
from .formats import FormatError, load_spec
from .formats import engine_format
from .formats.params import parse_head_names, rename_heads
from .spec import FILE_PRECISIONS, GELU_VARIANTS, ConvOp, ModelSpec


def _trunk_difference(a: ModelSpec, b: ModelSpec) -> Optional[str]:
    """What first differs between two trunks (None if identical, names aside)."""
    for what in ("seq_length", "final_gelu", "gelu"):
        if getattr(a, what) != getattr(b, what):
            return f"{what} {getattr(a, what)!r} != {getattr(b, what)!r}"
    if len(a.ops) != len(b.ops):
        return f"{len(a.ops)} ops != {len(b.ops)} ops"
    for i, (x, y) in enumerate(zip(a.ops, b.ops)):
        if type(x) is not type(y):
            return f"op {i} ({x.name} / {y.name}): {type(x).__name__} != {type(y).__name__}"
        if isinstance(x, ConvOp):
            for what in ("dilation", "gelu_in", "pool", "residual"):
                if getattr(x, what) != getattr(y, what):
                    return f"op {i} ({x.name} / {y.name}): {what} {getattr(x, what)} != {getattr(y, what)}"
            for what in ("kernel", "bias"):
                if not np.array_equal(getattr(x, what), getattr(y, what)):
                    return f"op {i} ({x.name} / {y.name}): {what} values differ"
        elif (x.left, x.right) != (y.left, y.right):
            return f"op {i} ({x.name} / {y.name}): crop ({x.left}, {x.right}) != ({y.left}, {y.right})"
    return None


def merge_heads(first: ModelSpec, second: ModelSpec, head_names=None, names=("first", "second")) -> ModelSpec:
    """One spec with the trunk of ``first`` and the heads of both (trunks must be identical).

    Heads are named ``human`` and ``mouse`` in argument order when each file has one head,
    unless ``head_names`` says otherwise.
    """
    diff = _trunk_difference(first, second)
    if diff is not None:
        raise FormatError(f"trunks differ: {names[0]} and {names[1]}: {diff}")
    heads = list(first.heads.values()) + list(second.heads.values())
    wanted = parse_head_names(head_names)
    if wanted is None:
        wanted = (["human", "mouse"] if len(first.heads) == len(second.heads) == 1
                  else [h.name for h in heads])
    metadata = dict(first.metadata)
    metadata["source"] = list(first.metadata.get("source", [])) + list(second.metadata.get("source", []))
    return ModelSpec(seq_length=first.seq_length, ops=first.ops, heads=rename_heads(heads, wanted),
                     final_gelu=first.final_gelu, gelu=first.gelu, metadata=metadata).validate()


def convert(src, dst, mouse=None, params=None, precision: str = "fp32", head_names=None,
            gelu: Optional[str] = None) -> ModelSpec:
    """Read ``src`` (and optionally a second file with the same trunk) and write ``dst``.

    Parameters
    ----------
    src : str or PathLike
        Any file :func:`~basenji2_fast.formats.load_spec` reads (.h5, .pth, .safetensors).
    dst : str or PathLike
        The ``.safetensors`` to write (atomically).
    mouse : str or PathLike, optional
        A second model whose trunk must equal ``src``'s (e.g. ``model_mouse.h5``); its head
        is added.  Otherwise FormatError "trunks differ".
    params : path or dict, optional
        basenji params JSON (for .pth files and weights-only .h5; names heads).
    precision : {"fp32", "bf16"}
    head_names : list of str or "a,b", optional
        Names for all heads in order (default ``human``, ``mouse``; a single head is
        "human" unless it has 1,643 tracks or params name it).
    gelu : {"sigmoid", "erf", "tanh"}, optional
        Override the GELU variant recorded in the output.

    Returns
    -------
    ModelSpec
        What was written (fp32 arrays; ``metadata["precision"]`` says how it was stored).
    """
    # The output first: a bad -o fails before the weights are read, and never replaces an input.
    check_output(dst, inputs=[src, mouse, params if isinstance(params, (str, os.PathLike)) else None])
    if mouse is None:
        spec = load_spec(src, params=params, gelu=gelu, head_names=head_names)
    else:
        spec = merge_heads(load_spec(src, params=params, gelu=gelu),
                           load_spec(mouse, params=params, gelu=gelu),
                           head_names, names=(str(src), str(mouse)))
    engine_format.save(spec, dst, precision=precision)
    spec.metadata["precision"] = precision
    return spec


# --------------------------------------------------------------------------------------
# Command line

def add_convert_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``convert SRC [SRC2] -o OUT [--params P] [--head-names a,b] [--precision fp32|bf16]
    [--gelu sigmoid|erf|tanh]`` to an argparse ``subparsers``; ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "convert", help="convert .h5/.pth weights into one .safetensors file",
        description="Convert Basenji2 weights (Keras .h5, basenji2-pytorch .pth) into the engine's "
                    ".safetensors file. Give two files with the same trunk (human, mouse) to get "
                    "one file with both heads.")
    p.add_argument("src", help="model file (.h5, .pth or .safetensors)")
    p.add_argument("src2", nargs="?", default=None,
                   help="second model with the same trunk, e.g. model_mouse.h5 (its head is added)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--params", default=None,
                   help="basenji params JSON (needed for .pth files of non-published shapes)")
    p.add_argument("--head-names", default=None, help="comma-separated head names (default human,mouse)")
    p.add_argument("--precision", choices=FILE_PRECISIONS, default="fp32",
                   help="stored precision (default fp32)")
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None,
                   help="override the GELU variant (erf reproduces basenji2-pytorch)")
    p.set_defaults(func=run_convert)
    return p


def run_convert(args: argparse.Namespace) -> int:
    """The ``convert`` subcommand; prints a one-line summary, or the error (exit status 1)."""
    def work():
        spec = convert(args.src, args.output, mouse=args.src2, params=args.params,
                       precision=args.precision, head_names=args.head_names, gelu=args.gelu)
        heads = ", ".join(f"{name} ({h.tracks} tracks)" for name, h in spec.heads.items())
        print(f"wrote {args.output}: {spec.n_params():,} parameters, {len(spec.ops)} ops, "
              f"{spec.seq_length} bp -> {spec.n_bins} bins x {spec.bin_size} bp, heads {heads}, "
              f"{args.precision}, GELU {spec.gelu}")

    return one_line_errors("convert", work)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m basenji2_fast.convert convert SRC ...`` without the package CLI."""
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_subcommand(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
