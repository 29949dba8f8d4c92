"""Atomic output files: written under a temporary name beside the target, renamed when
complete, so an interrupted run never leaves a partial file under the real name."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
