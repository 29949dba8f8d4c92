"""What the package writes: output paths checked before the work (:func:`check_output`),
output files under a temporary name beside the target, renamed when complete (an interrupted
run never leaves a partial file under the real name), float16 saturated; the records of
resumable jobs; and a bad input's one-line error (the one place a command turns an exception
into ``basenji2-fast COMMAND: error: ...``, and a warning into ``... warning: ...``)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import stat
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple, Union

import numpy as np

#: What a bad input raises anywhere in the package (a weight file's FormatError is a ValueError):
#: a command prints it as one line and exits with status 1.
ERRORS = (ValueError, KeyError, OSError, ImportError, RuntimeError)

#: The largest float16; output files that store float16 saturate at it (a plain cast gives inf).
FLOAT16_MAX = float(np.finfo(np.float16).max)


class OptionError(ValueError):
    """A bad input whose remedy is an option, worded for Python (``str(e)``: ``overwrite=True``)
    and for the command line (``e.cli``: ``--overwrite``; what :func:`one_line_errors` prints).
    ``text`` holds ``{name}`` fields; ``options`` map each name to (Python, command line)."""

    def __init__(self, text: str, **options: Tuple[str, str]):
        super().__init__(text.format(**{k: api for k, (api, _) in options.items()}))
        self.cli = text.format(**{k: cli for k, (_, cli) in options.items()})


def check_input_file(path: Union[str, os.PathLike], what: str, random_access: bool = False) -> Path:
    """``path`` as a Path when it names a readable input, else a one-line error saying what it
    is instead: missing (FileNotFoundError), a folder, or (with ``random_access``, for files
    read by position) a pipe such as ``/dev/stdin``."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path}: a folder, not a {what}")
    if random_access and not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file (a pipe?); the {what} is read by position, so give a file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: the {what} is not readable (permission denied)")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output(path, inputs: Iterable = (), folder: bool = False, parents: bool = False) -> Path:
    """Check, before a long computation, that the output ``path`` can be written: not one of
    the ``inputs`` (paths; None entries ignored), a file name that is no folder in an existing,
    writable folder (``parents=True``: or in folders to be created under a writable one), or
    (``folder=True``) a folder, existing or to be created under a writable one. A one-line
    OSError / ValueError naming the path otherwise."""
    path = Path(os.fspath(path))
    what = "output folder" if folder else "output file"
    for inp in inputs:
        if inp is not None and isinstance(inp, (str, os.PathLike)) and _same_file(path, Path(os.fspath(inp))):
            raise ValueError(f"{path}: the {what} is also an input ({os.fspath(inp)}); write to another path")
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise ValueError(f"{path}: exists and is not a folder (the {what})")
        if not folder and path.is_dir():
            raise ValueError(f"{path}: a folder; the {what} must be a file name")
    where = path if folder and path.is_dir() else path.parent
    if folder or parents:
        while not where.exists() and where != where.parent:
            where = where.parent  # created below the nearest existing folder
    elif not where.exists():
        raise FileNotFoundError(f"{path}: the folder {where} does not exist")
    if not where.is_dir():
        raise ValueError(f"{path}: {where} is not a folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot write in {where} (permission denied)")
    try:  # os.access trusts root and mode bits: /proc, a read-only mount, a full quota say no only when asked
        os.rmdir(tempfile.mkdtemp(prefix=".basenji2-fast-check-", dir=where))
    except OSError as e:
        raise OSError(f"{path}: cannot write the {what} in {where} ({e.strerror or e})") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success give it the permissions a new
    file gets (0666 less the umask: some writers create 0600 files), fsync and rename it to
    ``path``. On any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def to_float16(values: np.ndarray) -> np.ndarray:
    """float values -> float16 for an output file, clipped to +-:data:`FLOAT16_MAX`."""
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


#: Sentinel ``shard`` value of a merge: every task must be committed already, none is computed.
MERGE = "merge"


def parse_shard(shard) -> Optional[Union[Tuple[int, int], str]]:
    """``"I/N"`` or ``(I, N)`` -> (I, N) with 0 <= I < N; None and :data:`MERGE` pass. (Here, below
    the runner, so that the command line's ``--shard`` type checks it with the same words.)"""
    if shard is None or shard == MERGE:
        return shard
    try:
        i, n = (shard.split("/") if isinstance(shard, str) else shard)
        i, n = int(i), int(n)
    except (ValueError, TypeError):
        raise ValueError(f"shard {shard!r}: expected I/N, e.g. 0/4 (shards are numbered 0..N-1)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: expected I/N with 0 <= I < N")
    return i, n


# Resumable jobs (predict-genome, sad): one run per output folder, JSON records of what was
# committed, and a key over the job's options to tell the same job from another.

def canonical_sha(obj) -> str:
    """sha256 of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_json(path, obj) -> None:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path):
    """The parsed file, or None when it is missing or unreadable (an interrupted write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def job_lock(out_dir: Path, lock_name: str, what: str) -> Iterator[None]:
    """One run per output folder: two processes committing the same partials would mix jobs.
    The lock file is removed when the job finishes; a killed run's lock is released by the OS."""
    lock = Path(out_dir) / lock_name
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"{out_dir}: another {what} run is using this folder") from None
        ok = False
        try:
            yield
            ok = True
        finally:
            if ok:
                lock.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


def one_line_errors(command: str, work) -> int:
    """Run ``work()``: 0, or for a bad input (:data:`ERRORS`) its message as one line on
    stderr, ``basenji2-fast COMMAND: error: ...``, and 1. Warnings meanwhile are one line
    each, ``basenji2-fast COMMAND: warning: ...`` (no source lines)."""
    with one_line_warnings(command):
        try:
            work()
        except BrokenPipeError:
            raise  # stdout's reader left (| head): no error of the input; cli.main exits quietly
        except ERRORS as e:
            msg = getattr(e, "cli", None) or (e.args[0] if isinstance(e, KeyError) and e.args else e)
            if isinstance(e, OSError) and e.filename is not None and e.strerror and str(e).startswith("[Errno"):
                # A file the code did not check first: its path and the reason, not Python's wording
                # ("[Errno 2] No such file or directory: 'x'").
                msg = f"{e.filename}: {e.strerror[:1].lower()}{e.strerror[1:]}"
            print(f"basenji2-fast {command}: error: {' '.join(str(msg).split())}", file=sys.stderr)
            return 1
    return 0


@contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """While it runs, a warning prints as ``basenji2-fast COMMAND: warning: MESSAGE`` on one line."""
    previous = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        return f"basenji2-fast {command}: warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous
