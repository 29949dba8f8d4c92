"""Command-line options shared by the subcommands (each module adds its own subcommand; the
options that mean the same everywhere are defined once here). A bad input becomes a one-line
error in :func:`basenji2_fast._io.one_line_errors`, which every subcommand uses."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import List

from ._io import check_input_file, one_line_errors, parse_shard  # noqa: F401  (one_line_errors: re-exported, the error block every subcommand uses)
from . import cuda_backend
from .model import TrackRequest, load
from .spec import ALGORITHMS, GELU_VARIANTS, N_ENCODINGS, PRECISIONS
from .targets import read_targets


def add_model_options(parser: argparse.ArgumentParser, required: bool = True, model_group=None) -> None:
    """``-m MODEL [--params P] [--gelu V] [--threads N] [--device D] [--precision P] [--algorithm A]``,
    read by :func:`load_model`. ``model_group``: where ``-m`` goes (e.g. a mutually exclusive group)."""
    (model_group or parser).add_argument("-m", "--model", required=required,
                                         help="model file (.safetensors, .h5 or .pth)")
    parser.add_argument("--params", default=None, help="basenji params JSON (for .pth files of non-published shapes)")
    parser.add_argument("--gelu", choices=GELU_VARIANTS, default=None, help="override the model's GELU variant")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="compute threads (default: every CPU this process may use)")
    parser.add_argument("--device", type=device_spec, default="cpu",
                        help="cpu (default), cuda, cuda:N, or auto (the GPU when one is usable, else the CPU); "
                             "CUDA computes in bf16 with fp32 accumulation")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="compute precision: fp32 (the CPU's default), bf16 (bf16 weights and activations, "
                             "fp32 sums; the only precision on CUDA) or bf16-fast (fast convolutions with bf16 "
                             "products too: faster on CPUs with avx512_bf16, less accurate)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="auto",
                        help="convolutions: auto (Winograd fast convolution where it saves arithmetic and keeps "
                             "mutation cones short; default), fast (wherever a layer's shape allows: fastest for "
                             "whole-sequence predictions) or direct")


def add_fasta_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``-f FASTA``: the genome the windows are read from."""
    parser.add_argument("-f", "--fasta", required=required, help="genome FASTA (indexed with pyfaidx)")


def add_run_options(parser: argparse.ArgumentParser, n_encoding: bool = True) -> None:
    """``[--n-encoding zeros|uniform] [-q]``: how N enters the model, and no progress bar."""
    if n_encoding:
        parser.add_argument("--n-encoding", choices=N_ENCODINGS, default="zeros", help="how N is encoded")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other error of the command:
    ``basenji2-fast COMMAND: error: MESSAGE (see basenji2-fast COMMAND --help)``, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        # argparse reports a subcommand's unknown options from the top parser ("basenji2-fast:
        # error: unrecognized arguments"); say them from the subcommand's parser instead.
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            self._command_parser(parsed).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The (sub)parser of the subcommand ``parsed`` holds, else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None) or "")
                if isinstance(sub, OneLineParser):
                    return sub._command_parser(parsed)
        return self


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--batch-size``, ``--threads``, ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``--l2``, ``--cache-mb``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a figure's ``--width``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def device_spec(text: str) -> str:
    """argparse type of ``--device``: cpu, cuda, cuda:N or auto (whether a GPU is usable is
    asked when the model loads, :func:`load_model`)."""
    try:
        cuda_backend.parse_device(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}") from None
    return text


def input_file(what: str):
    """argparse type factory: a path naming a readable file (``what``: "targets file"), else
    one line saying which file it is and what is wrong (not found, a folder, unreadable)."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty; expected the path of a {what}")
        try:
            check_input_file(text, what)
        except (OSError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    check.__name__ = what  # argparse's "invalid <name> value" for anything else
    return check


def shard_spec(text: str) -> str:
    """argparse type of ``--shard``: ``I/N`` with 0 <= I < N (_io.parse_shard, here so that a
    bad value exits before any output folder is made); the text as given."""
    try:
        parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("shard ")) from None
    return text


def add_batch_size_option(parser: argparse.ArgumentParser, default: int, unit: str = "windows per engine call") -> None:
    """``--batch-size N``: how many windows (or variants, ...) go through the engine together."""
    parser.add_argument("--batch-size", type=positive_int, default=default, help=f"{unit} (default {default})")


def int_list(text: str) -> List[int]:
    """argparse type for comma-separated integers ("0,3,7", "-1,0,1"); at least one."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


_HEAD_KEY = re.compile(r"^([A-Za-z_][\w.-]*)=(.*)$")


class _PerHead(argparse.Action):
    """``VALUE`` (stored in ``dest``, once) or ``HEAD=VALUE`` (repeatable; stored in
    ``<dest>_by_head``, a dict). A targets path that exists as given is never split at '='."""

    one_head = False  # _OneHead: commands of one head take no HEAD=

    def __call__(self, parser, namespace, value, option_string=None):
        m = _HEAD_KEY.match(value)
        if m and not (self.dest == "targets" and os.path.exists(value)):
            if self.one_head:
                raise argparse.ArgumentError(self, f"{value}: this command takes one head: choose it with --head "
                                                   f"and give {option_string} without HEAD=")
            value = self._check(m.group(2), f"{m.group(1)}=")
            by_head = dict(getattr(namespace, self.dest + "_by_head", None) or {})
            if m.group(1) in by_head:
                parser.error(f"{option_string} {m.group(1)}=... given twice")
            by_head[m.group(1)] = m.group(2)
            setattr(namespace, self.dest + "_by_head", by_head)
        elif getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice without HEAD= (use {option_string} HEAD=VALUE per head)")
        else:
            setattr(namespace, self.dest, self._check(value))

    def _check(self, value: str, head: str = "") -> str:
        """``value``, when it may be one: an empty selector (``--tracks ''``, ``--tracks HEAD=``) is
        a mistake, never "every track"; a targets file must be there (checked at once, so a wrong
        path fails before any output folder is made, with the file's role, not the OS's words)."""
        if self.dest == "tracks" and not value.strip():
            raise argparse.ArgumentError(self, f"{head} is empty (drop it to select every track of {head[:-1]})"
                                         if head else "empty (leave --tracks out to select every track)")
        if self.dest == "targets":
            try:
                input_file("targets file")(value)
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentError(self, f"{head}{e}") from None
        return value


class _OneHead(_PerHead):
    one_head = True


def _one_head_name(text: str) -> str:
    """--head of a command that draws or evaluates one head: a name, not 'both' or a list."""
    if text in ("both", "all") or "," in text:
        raise argparse.ArgumentTypeError(f"{text!r}: this command takes one head; name it (e.g. --head human)")
    return text


def add_track_options(parser: argparse.ArgumentParser, one_head: bool = False) -> None:
    """``[-t [HEAD=]targets.txt] [--tracks [HEAD=]SELECTOR] [--head NAME|both]``, resolved by
    multihead.plan_heads and targets.select_tracks. ``one_head``: for commands of one head
    (plot, test): no HEAD= forms, no 'both', and help that offers neither."""
    several = "" if one_head else " With several heads: -t HEAD=FILE, once per head"
    parser.add_argument("-t", "--targets", default=None, action=_OneHead if one_head else _PerHead,
                        help="basenji targets file: track identifiers, labels and strand pairs; with fewer rows "
                             "than the head has outputs, its index column names the head columns to compute." + several)
    parser.add_argument("--tracks", default=None, action=_OneHead if one_head else _PerHead,
                        help="which tracks: comma-separated row numbers of the targets file (head columns without "
                             "-t), comma-separated identifiers, or a regular expression searched in the "
                             "descriptions, e.g. 'CAGE:.*K562' (default: all)."
                             + ("" if one_head else " Per head: --tracks HEAD=SELECTOR"))
    if one_head:
        parser.add_argument("--head", default=None, type=_one_head_name,
                            help="head name (default: the model's first head, or the one head with as many outputs "
                                 "as the targets file has rows)")
    else:
        parser.add_argument("--head", default=None,
                            help="head name, 'both' (every head of the model, one trunk pass) or a comma list "
                                 "(default: the model's first head, or the one head with as many outputs as the "
                                 "targets file has rows); several heads write OUT/<head>/ each")
    parser.set_defaults(targets_by_head=None, tracks_by_head=None)


def track_request(args: argparse.Namespace) -> TrackRequest:
    """The :class:`~basenji2_fast.model.TrackRequest` (head, tracks, targets) of
    :func:`add_track_options`' options; targets files are read here, so a bad line fails
    before the model loads. tracks / targets are plain values, or dicts {head: value}
    (``None``: the plain one)."""
    def merged(plain, by_head, read=lambda v: v):
        if not by_head:
            return None if plain is None else read(plain)
        out = {h: read(v) for h, v in by_head.items()}
        if plain is not None:
            out[None] = read(plain)
        return out

    return TrackRequest(args.head, merged(args.tracks, getattr(args, "tracks_by_head", None)),
                        merged(args.targets, getattr(args, "targets_by_head", None), read_targets))


def add_ensemble_options(parser: argparse.ArgumentParser) -> None:
    """``[--rc] [--shifts -1,0,1]``: basenji's ensemble (see Model.predict)."""
    parser.add_argument("--rc", action="store_true", help="average with the reverse complement")
    parser.add_argument("--shifts", type=int_list, default=[0],
                        help="comma-separated ensemble shifts (default 0), e.g. --shifts -1,0,1")
    accept_negative_lists(parser)


def accept_negative_lists(parser: argparse.ArgumentParser) -> None:
    """Let ``--shifts -1,0,1`` parse: argparse takes "-1,0,1" for an option unless it looks
    like a negative number, so teach the parser that comma lists of integers are numbers."""
    matcher = getattr(parser, "_negative_number_matcher", None)
    if matcher is not None and not matcher.match("-1,0"):
        parser._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d+(,-?\d+)+$")


def load_model(args: argparse.Namespace):
    """The model named by :func:`add_model_options`' options."""
    device, precision = getattr(args, "device", "cpu"), getattr(args, "precision", None)
    algorithm = getattr(args, "algorithm", "auto")
    _check_device(device, precision, algorithm)
    return load(args.model, threads=args.threads, params=args.params, gelu=args.gelu, device=device,
                precision=precision, algorithm=algorithm)


def _check_device(device: str, precision, algorithm: str) -> None:
    """load()'s device checks, worded with the options (``--device cpu``, not ``device='cpu'``),
    before the weights are read."""
    try:
        kind, _ = cuda_backend.resolve_device(device, precision)
    except RuntimeError as e:
        why = str(e).removeprefix(f"device={device!r}: ").replace("device='cpu'", "--device cpu")
        raise RuntimeError(f"--device {device}: {why}") from None
    if kind == "cuda" and precision not in (None, "bf16"):
        raise ValueError(f"--precision {precision} with --device {device}: the CUDA engine computes in bf16 "
                         "(fp32 accumulation); use --precision bf16, or --device cpu")
    if kind == "cuda" and algorithm == "fast":
        raise ValueError(f"--algorithm fast with --device {device}: the CUDA engine runs direct convolution; "
                         "use --algorithm direct or auto")


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """``[--scheduler ADDRESS | --workers N] [--shard I/N]``: where the tasks run
    (:class:`basenji2_fast.runner.Placement`; read by :func:`distributed_kwargs`)."""
    g = parser.add_argument_group("distributed runs (pip install 'basenji2-fast[distributed]')")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tasks on this Dask scheduler (tcp://host:8786, or a scheduler file *.json)")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="run the tasks on a local Dask cluster of N worker processes (the CPUs split between them)")
    g.add_argument("--shard", type=shard_spec, default=None, metavar="I/N",
                   help="run only shard I of N (0-based) into OUT_DIR; combine with 'basenji2-fast merge'")


def distributed_kwargs(args: argparse.Namespace) -> dict:
    """``scheduler``, ``workers``, ``shard`` of :func:`add_distributed_options`' options, as
    the workflow functions take them."""
    return {"scheduler": getattr(args, "scheduler", None), "workers": getattr(args, "workers", None),
            "shard": getattr(args, "shard", None)}


def print_written(path) -> None:
    """Say what a workflow wrote: its output file, one per head (a dict {head: path}), or a
    shard's ``shard.json`` with the step that follows."""
    if isinstance(path, dict):
        print(f"wrote {', '.join(map(str, path.values()))}")
    else:
        print(f"wrote {path}" + ("; combine the shards with basenji2-fast merge" if Path(path).name == "shard.json"
                                 else ""))
