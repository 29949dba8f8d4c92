"""``basenji2-fast``: one subcommand per workflow, each a thin call into the package.

Each module registers its own subcommand (``add_<name>_subcommand(subparsers)``, options from
:mod:`basenji2_fast.cli_options`); this module lists them, and holds the two commands that
belong to no workflow: ``info`` and ``merge`` (shards of any distributed workflow).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence, Union

from . import runner
from ._io import check_output
from .bench import add_bench_subcommand
from .cli_options import OneLineParser, add_model_options, load_model, one_line_errors
from .convert import add_convert_subcommand
from .model import build_info
from .plots import add_plot_subcommand, add_saliency_plot_subcommand, add_sat_plot_subcommand
from .workflows.embed import add_embed_subcommand
from .workflows.evaluate import add_test_subcommand
from .workflows.genome_tiling import add_predict_genome_subcommand
from .workflows.heads import add_fit_head_subcommand
from .workflows.ism import add_sat_subcommand
from .workflows.orthologs import add_orthologs_subcommand
from .workflows.regions import add_predict_bed_subcommand
from .workflows.saliency import add_saliency_subcommand
from .workflows.variants import add_sad_subcommand
from .fetch import add_fetch_subcommand


def run_info(args) -> int:
    def work():
        info = {"build": build_info()}
        if args.model:
            info["model"] = load_model(args).info()
        print(json.dumps(info, indent=2, default=str))

    return one_line_errors("info", work)


def merge_shards(shard_dirs: Sequence[Union[str, os.PathLike]], out_dir) -> dict:
    """Combine shard folders into ``out_dir``'s final output (the same files as a run without
    shards). Shards written by the command line are finished by rerunning it with ``-o
    out_dir`` in merge mode; for shards written from Python, call the same function with the
    same arguments, ``out_dir`` and ``shard="merge"`` after this. Returns the shard record."""
    rec = runner.gather_shards(shard_dirs, out_dir)
    call = rec.get("call")
    if call is None:
        return rec
    out_dir = os.path.abspath(os.fspath(out_dir))
    old = os.getcwd()
    os.chdir(call["cwd"])  # the shards' relative paths (input files are checked while parsing)
    try:
        args = build_parser().parse_args(call["argv"])
        args.out_dir = out_dir
        args.shard, args.scheduler, args.workers = runner.MERGE, None, None
        status = args.func(args)
    finally:
        os.chdir(old)
    if status != 0:
        raise RuntimeError(f"merging into {out_dir} failed (the message above)")
    return rec


def run_merge(args: argparse.Namespace) -> int:
    def work():
        check_output(args.out_dir, inputs=args.shards, folder=True)  # merging into a shard would consume it
        rec = merge_shards(args.shards, args.out_dir)
        if rec.get("call") is None:
            raise ValueError(f"{args.shards[0]}: shards written from Python; call the same function with "
                             f"out_dir={args.out_dir!r} and shard='merge' to finish (the tasks are gathered)")
        print(f"merged {rec['shard'][1]} shards ({rec['n_tasks']} tasks) into {args.out_dir}")

    return one_line_errors("merge", work)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="basenji2-fast", description="Basenji2 on fused C++ kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_subcommand(sub)
    add_fetch_subcommand(sub)
    add_predict_genome_subcommand(sub)
    add_predict_bed_subcommand(sub)
    add_sad_subcommand(sub)
    add_sat_subcommand(sub)
    add_saliency_subcommand(sub)
    add_orthologs_subcommand(sub)
    add_plot_subcommand(sub)
    add_sat_plot_subcommand(sub)
    add_saliency_plot_subcommand(sub)
    add_embed_subcommand(sub)
    add_fit_head_subcommand(sub)
    add_test_subcommand(sub)
    add_bench_subcommand(sub)

    p = sub.add_parser(
        "merge", help="combine --shard outputs into the final output",
        description="Check that the shard folders hold every shard 0..N-1 of one job exactly once and every task "
                    "once, then write the output a run without --shard writes (bigWigs, predict.h5, sad.h5, "
                    "scores.h5, saliency.h5) into OUT_DIR.")
    p.add_argument("shards", nargs="+", help="shard folders (the -o of each --shard I/N run)")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    p.set_defaults(func=run_merge)

    p = sub.add_parser(
        "info", help="what this build runs, and a model's geometry",
        description="Print, as JSON, what this installation runs (version, compiled kernels and the instruction set "
                    "chosen, compiler, thread pool, CUDA) and, with -m, the model's geometry (sequence length, bins, "
                    "heads and their tracks, GELU variant, parameters, precision, weight memory).")
    add_model_options(p, required=False)
    p.set_defaults(func=run_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    status = 1

    def work():
        nonlocal status
        with runner.cli_call(sys.argv[1:] if argv is None else argv):  # recorded by --shard runs, for merge
            status = args.func(args)

    try:
        one_line_errors(args.command, work)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # stdout's reader has gone (| head, | true): stop quietly, as other Unix tools; what is
        # still buffered goes nowhere instead of failing again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell gives a writer killed by it
    except KeyboardInterrupt:
        # Ctrl-C: one line, not the traceback of wherever the work was; the resumable jobs
        # (predict-genome, sad, saliency, sharded runs) keep what they committed.
        print(f"basenji2-fast {args.command}: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
