"""What the package writes: output files under a temporary name beside the target, renamed
when complete (an interrupted run never leaves a partial file under the real name), float16
saturated; the records of resumable jobs; and a bad input's one-line error (the one place a
command turns an exception into ``basenji2-fast COMMAND: error: ...``)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

#: What a bad input raises anywhere in the package (a weight file's FormatError is a ValueError):
#: a command prints it as one line and exits with status 1.
ERRORS = (ValueError, KeyError, OSError, ImportError, RuntimeError)

#: The largest float16; output files that store float16 saturate at it (a plain cast gives inf).
FLOAT16_MAX = float(np.finfo(np.float16).max)


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
    stderr, ``basenji2-fast COMMAND: error: ...``, and 1."""
    try:
        work()
    except ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"basenji2-fast {command}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    return 0
