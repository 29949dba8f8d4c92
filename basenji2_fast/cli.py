"""``basenji2-fast``: one subcommand per workflow, each a thin call into the package."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .bench import add_bench_subcommand
from .convert import add_convert_subcommand
from .formats import FormatError
from .spec import ALGORITHMS, GELU_VARIANTS, PRECISIONS


def run_info(args) -> int:
    from .model import build_info, load

    info = {"build": build_info()}
    if args.model:
        info["model"] = load(args.model, threads=args.threads, params=args.params, gelu=args.gelu,
                             precision=args.precision, algorithm=args.algorithm).info()
    print(json.dumps(info, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .genome_tiling import add_predict_genome_subcommand
    from .plots import add_plot_subcommand, add_sat_plot_subcommand
    from .regions import add_predict_bed_subcommand
    from .variants import add_sad_subcommand
    from .ism import add_sat_subcommand
    from .orthologs import add_orthologs_subcommand
    from .embed import add_embed_subcommand
    from .heads import add_fit_head_subcommand
    from .evaluate import add_test_subcommand
    from .distributed import add_merge_subcommand

    parser = argparse.ArgumentParser(prog="basenji2-fast", description="Basenji2 on fused C++ kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_subcommand(sub)
    add_predict_genome_subcommand(sub)
    add_predict_bed_subcommand(sub)
    add_sad_subcommand(sub)
    add_sat_subcommand(sub)
    add_orthologs_subcommand(sub)
    add_plot_subcommand(sub)
    add_sat_plot_subcommand(sub)
    add_embed_subcommand(sub)
    add_fit_head_subcommand(sub)
    add_test_subcommand(sub)
    add_bench_subcommand(sub)
    add_merge_subcommand(sub)

    p = sub.add_parser("info", help="what this build runs, and a model's geometry")
    p.add_argument("-m", "--model", default=None)
    p.add_argument("--params", default=None)
    p.add_argument("--gelu", choices=GELU_VARIANTS, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="auto")
    p.set_defaults(func=run_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .distributed import cli_call

    try:
        with cli_call(sys.argv[1:] if argv is None else argv):  # recorded by --shard runs, for merge
            return args.func(args)
    except (FormatError, ValueError, KeyError, OSError, ImportError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"basenji2-fast {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
