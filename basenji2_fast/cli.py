"""``basenji2-fast``: one subcommand per workflow, each a thin call into the package."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .convert import add_convert_subcommand
from .formats import FormatError
from .spec import GELU_VARIANTS


def _ints(text: str) -> List[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, help="model file (.safetensors, .h5 or .pth)")
    p.add_argument("--params", default=None, help="basenji params JSON (for .pth files of non-published shapes)")
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None, help="override the model's GELU variant")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: all CPUs)")


def _load(args):
    from .model import load

    return load(args.model, threads=args.threads, params=args.params, gelu=args.gelu)


def run_predict(args) -> int:
    from .regions import predict_bed

    model = _load(args)
    path = predict_bed(model, args.fasta, args.bed, args.out_dir, head=args.head, tracks=args.tracks, rc=args.rc,
                       shifts=args.shifts, batch_size=args.batch_size, n_encoding=args.n_encoding,
                       progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def run_info(args) -> int:
    from .model import build_info

    info = {"build": build_info()}
    if args.model:
        info["model"] = _load(args).info()
    print(json.dumps(info, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basenji2-fast", description="Basenji2 on fused C++ kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_subcommand(sub)

    p = sub.add_parser("predict", help="predict tracks for BED regions (basenji_predict_bed.py's predict.h5)",
                       description="Predict the model window centred on each BED region; write OUT_DIR/predict.h5.")
    _model_args(p)
    p.add_argument("-f", "--fasta", required=True, help="genome FASTA (indexed with pyfaidx)")
    p.add_argument("bed", help="BED file of regions")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    p.add_argument("--head", default=None, help="head name (default: the model's first head)")
    p.add_argument("--tracks", type=_ints, default=None, help="comma-separated head columns to compute")
    p.add_argument("--rc", action="store_true", help="average with the reverse complement")
    p.add_argument("--shifts", type=_ints, default=[0], help="comma-separated ensemble shifts (default 0)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--n-encoding", choices=("zeros", "uniform"), default="zeros", help="how N is encoded")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)

    p = sub.add_parser("info", help="what this build runs, and a model's geometry")
    p.add_argument("-m", "--model", default=None)
    p.add_argument("--params", default=None)
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FormatError, ValueError, KeyError, OSError, ImportError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"basenji2-fast {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
