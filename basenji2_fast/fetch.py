"""The published Basenji2 weights by name: downloaded once into a cache, checked, reused.

    basenji2-fast fetch human mouse          # model_human.h5, model_mouse.h5 -> their cached paths
    b2.load("basenji2")                      # model_human.h5, fetched on first use
    b2.load("basenji2-both")                 # human + mouse heads on one trunk

The files and their sources are in :mod:`basenji2_fast.formats.published`. Downloads go
through pooch into ``$BASENJI2_FAST_CACHE`` or pooch's per-user cache folder
(``--cache`` / ``cache=`` override both); ``$BASENJI2_FAST_WEIGHTS_URL`` replaces every
file's address by ``<that URL>/<file name>`` (a mirror, or a local server in the tests).

A file enters the cache under its own name only once checked: the ``.pth`` against its
published md5; the Keras ``.h5`` files, which have no published checksum, by loading them
and comparing the architecture and every weight's shape with the published Basenji2 (and
all weights finite). The sha256 of each checked file is recorded beside it
(``<file>.sha256``); a cached file whose sha256 no longer matches is checked again, and
replaced by a new download if it fails. A broken transfer, a truncated or a corrupted file
is refused with a one-line :class:`FetchError` and nothing of it is left in the cache.
What loading cannot see in an ``.h5`` is a changed weight value that is still finite: only
a published checksum could.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from .convert import merge_heads
from .formats import file_digest, file_sha256, load_spec, one_line
from .formats.params import ConvPlan, expand_params
from .formats.published import BASENJI2_PARAMS, PUBLISHED_FILES, PUBLISHED_MODELS, PublishedFile
from .spec import ConvOp, ModelSpec

CACHE_ENV = "BASENJI2_FAST_CACHE"
URL_ENV = "BASENJI2_FAST_WEIGHTS_URL"


class FetchError(RuntimeError):
    """A published file that could not be fetched or failed its check (one line)."""


def cache_dir(cache: Union[None, str, os.PathLike] = None) -> Path:
    """Where fetched files live: ``cache``, else ``$BASENJI2_FAST_CACHE``, else pooch's
    per-user cache folder for basenji2-fast."""
    if cache:
        return Path(cache)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import pooch

    return Path(pooch.os_cache("basenji2-fast"))


def source_url(f: PublishedFile) -> str:
    """The file's published address, or ``$BASENJI2_FAST_WEIGHTS_URL/<file name>``."""
    base = os.environ.get(URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{f.filename}" if base else f.url


def architecture_problem(spec: ModelSpec, f: PublishedFile) -> Optional[str]:
    """What differs between ``spec`` and the published Basenji2 with ``f``'s head (None if
    nothing): sequence length, every op's kind, kernel and bias shapes, dilation, pooling,
    residual and crop, the head's shape and activation, and non-finite weights."""
    plan = expand_params(BASENJI2_PARAMS["model"], where="the published Basenji2 params")
    if spec.seq_length != plan.seq_length:
        return f"sequence length {spec.seq_length} != {plan.seq_length}"
    if len(spec.ops) != len(plan.ops):
        return f"{len(spec.ops)} layers != {len(plan.ops)}"
    for i, (op, want) in enumerate(zip(spec.ops, plan.ops)):
        if isinstance(want, ConvPlan):
            if not isinstance(op, ConvOp):
                return f"op {i} is a {type(op).__name__}, expected a convolution"
            shape = (want.kernel_size, want.c_in, want.c_out)
            got = (tuple(op.kernel.shape), tuple(op.bias.shape), op.dilation, op.pool, op.residual)
            expected = (shape, (want.c_out,), want.dilation, want.pool, want.residual)
            if got != expected:
                return (f"op {i} ({op.name}): kernel, bias, dilation, pool, residual {got} "
                        f"!= {expected}")
            if not (np.isfinite(op.kernel).all() and np.isfinite(op.bias).all()):
                return f"op {i} ({op.name}): non-finite weights"
        elif isinstance(op, ConvOp) or (op.left, op.right) != (want.left, want.right):
            return f"op {i}: expected a crop of ({want.left}, {want.right})"
    if len(spec.heads) != 1:
        return f"{len(spec.heads)} heads, expected one"
    head = next(iter(spec.heads.values()))
    if head.weight.shape != (plan.trunk_channels, f.tracks) or head.bias.shape != (f.tracks,):
        return (f"head weight {head.weight.shape} and bias {head.bias.shape}; the published {f.head} head is "
                f"({plan.trunk_channels}, {f.tracks})")
    if head.activation != "softplus":
        return f"head activation {head.activation}, expected softplus"
    if not (np.isfinite(head.weight).all() and np.isfinite(head.bias).all()):
        return "head: non-finite weights"
    return None


def _check(f: PublishedFile, path: Path, where: str, md5_checked: bool = False) -> None:
    """Raise FetchError unless ``path`` is a sound copy of ``f``: its published md5, or
    (no md5 published) it loads as the published architecture."""
    if f.md5 is not None:
        if not md5_checked and file_digest(path, "md5") != f.md5:
            raise FetchError(f"{f.filename} from {where}: its md5 is not the published {f.md5} "
                             "(truncated or corrupted)")
        return
    try:
        spec = load_spec(path)
    except Exception as e:  # any reader error means a damaged file
        raise FetchError(f"{f.filename} from {where} does not load ({one_line(e)}): truncated or corrupted") from None
    problem = architecture_problem(spec, f)
    if problem:
        raise FetchError(f"{f.filename} from {where} is not the published Basenji2 {f.head} model: {problem}")


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _recorded_sha(target: Path) -> Optional[str]:
    try:
        return _record_path(target).read_text().split()[0]
    except (OSError, IndexError):
        return None


def _download(f: PublishedFile, folder: Path, url: str, progress: bool) -> Path:
    """Download ``f`` into ``folder`` under a temporary name (md5-checked by pooch when it
    has one); nothing is left behind on failure."""
    import pooch
    import requests

    name = f".{f.filename}.{os.getpid()}.part"
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # no "Downloading data from ..." line: a failure is one line, a success its path
    # The bar is ours, not pooch's: cleared when it closes, so a failed transfer (which pooch
    # leaves half drawn) or a failed check leaves only the error's line on stderr.
    bar = _progress_bar(f.filename) if progress else None
    try:
        path = pooch.retrieve(url, known_hash=f"md5:{f.md5}" if f.md5 else None, fname=name, path=folder,
                              downloader=pooch.HTTPDownloader(progressbar=False if bar is None else bar, timeout=60))
    except ValueError as e:  # pooch: the md5 does not match (its temporary file is gone)
        if "hash" not in str(e).lower():
            raise
        raise FetchError(f"{f.filename} from {url}: its md5 is not the published {f.md5} "
                         "(truncated or corrupted download)") from None
    except requests.RequestException as e:  # pooch removed its temporary file
        raise FetchError(f"cannot download {f.filename} from {url}: {one_line(e)}") from None
    finally:
        logger.setLevel(level)
        if bar is not None:
            bar.close()
    return Path(path)


def _progress_bar(filename: str):
    """A download bar (tqdm, as pooch's own) that leaves nothing behind when it closes. pooch
    sets its total; it starts at 1 because a tqdm of total 0 is falsy, which pooch reads as
    "no bar"."""
    from tqdm import tqdm

    return tqdm(total=1, desc=filename, ncols=79, unit="B", unit_scale=True, leave=False)


def fetch(which: str, cache: Union[None, str, os.PathLike] = None, progress: bool = False) -> Path:
    """The checked local copy of a published file, downloaded on first use.

    Parameters
    ----------
    which : "human" (model_human.h5), "mouse" (model_mouse.h5) or "pth" (basenji2.pth)
    cache : folder of the cache (default: see :func:`cache_dir`)
    progress : show a download progress bar

    Returns the path of the cached file. Raises :class:`FetchError` (one line) when the
    download fails or the file fails its check; nothing of it is then left in the cache.
    """
    if which not in PUBLISHED_FILES:
        raise ValueError(f"no published file {which!r}; expected one of {', '.join(PUBLISHED_FILES)}")
    f = PUBLISHED_FILES[which]
    folder = cache_dir(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the weight cache {folder}: {e.strerror}") from None
    target = folder / f.filename
    url = source_url(f)
    if target.exists():
        sha = file_sha256(target)
        if sha == _recorded_sha(target):
            return target
        # Not recorded, or changed since: check it as if new; a bad one is downloaded again.
        try:
            _check(f, target, str(target))
            _commit(target, target, sha)
            return target
        except FetchError:
            target.unlink(missing_ok=True)
            _record_path(target).unlink(missing_ok=True)
    part = _download(f, folder, url, progress)
    try:
        _check(f, part, url, md5_checked=True)
        _commit(part, target, file_sha256(part))
    finally:
        part.unlink(missing_ok=True)
    return target


def _commit(src: Path, target: Path, sha: str) -> None:
    """Record the checked file's sha256, then give it its own name (atomically)."""
    record = _record_path(target)
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{sha}  {target.name}\n")
    if src != target:
        os.replace(src, target)
    os.replace(tmp, record)


def published_spec(name: str, cache=None, progress: bool = False, **load_kw) -> ModelSpec:
    """The ModelSpec of a published model name (``basenji2``, ``basenji2-human``,
    ``basenji2-mouse``, ``basenji2-both``, ``basenji2-pth``), its files fetched if needed.
    ``load_kw`` go to :func:`basenji2_fast.formats.load_spec`."""
    if name not in PUBLISHED_MODELS:
        raise ValueError(f"no published model {name!r}; expected one of {', '.join(PUBLISHED_MODELS)}")
    specs = [load_spec(fetch(k, cache=cache, progress=progress), **load_kw) for k in PUBLISHED_MODELS[name]]
    return specs[0] if len(specs) == 1 else merge_heads(*specs, names=PUBLISHED_MODELS[name])


def is_published_name(path) -> bool:
    """True when ``path`` names a published model and is not an existing file."""
    return isinstance(path, str) and path in PUBLISHED_MODELS and not os.path.exists(path)


def run_fetch(args) -> int:
    keys: List[str] = list(PUBLISHED_FILES) if "all" in args.files else list(dict.fromkeys(args.files))
    for k in keys:
        print(fetch(k, cache=args.cache, progress=not args.quiet))
    return 0


def add_fetch_subcommand(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch", help="download the published Basenji2 weights into a cache (checked) and print their paths",
        description="Download the published Basenji2 weight files once into a cache, check them (the .pth "
                    "against its published md5; the .h5 files, which have none, by loading them against the "
                    "published architecture) and print their local paths. Also done on first use by "
                    "load('basenji2'), load('basenji2-mouse'), load('basenji2-both'), load('basenji2-pth').")
    p.add_argument("files", nargs="+", choices=list(PUBLISHED_FILES) + ["all"],
                   help="human (model_human.h5), mouse (model_mouse.h5), pth (basenji2.pth) or all")
    p.add_argument("--cache", default=None,
                   help=f"cache folder (default: ${CACHE_ENV}, else the per-user cache of pooch)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_fetch)
    return p
