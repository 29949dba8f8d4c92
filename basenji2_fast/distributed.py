"""Runs beyond one process: Dask clusters (``--scheduler`` / ``--workers``) and shards
(``--shard I/N`` + ``basenji2-fast merge``) for predict-genome, predict-bed, sad and sat.

Tasks
-----
Each command splits its work into tasks that are whole units of its output: ``batch_size``
windows of one chromosome (predict-genome), ``batch_size`` regions (predict-bed), one
variant batch (sad: exactly the batches a single-process run commits) or one region (sat).
A task runs one function of the command's module (the same one the single-process loop
calls) and writes one file, ``<OUTDIR>/<task folder>/<name>.npz``, under a temporary name
renamed when complete. The driver merges the committed files, in task order, into the
outputs a single-process run writes (bigWigs + manifest.json, predict.h5, sad.h5, scores.h5).

Faults and resume
-----------------
A task whose file exists does nothing, so a retried task (Dask reschedules the tasks of a
worker that died) never writes a window or variant twice, and a restarted driver submits
only the tasks without a file. The task folder holds ``job.json`` (the job's key over its
inputs and options); files of another job are never merged.

Workers
-------
A task carries a :class:`ModelRef` (the model file and load options), never the engine:
each worker process loads the model once (memory-mapped weights) into a module-level cache
and checks its weights' sha256 against the driver's. ``--workers N`` starts a
``distributed.LocalCluster`` of N processes with one task thread each and the CPUs split
between them for the engine's threads.

Shards
------
``--shard I/N`` runs only the tasks whose position in the job's task list is I modulo N,
writes their files to its OUTDIR and, when all are committed, ``OUTDIR/shard.json`` (the
job's key, the shard's tasks, the command line). ``basenji2-fast merge -o OUT SHARD...``
checks that the shards are of one job, that every shard 0..N-1 is there once and every task
once, gathers the task files into OUT and reruns the command line there, which only merges.
"""
from __future__ import annotations

import argparse
import contextvars
import datetime as _dt
import os
import shutil
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ._io import atomic_output, canonical_sha, read_json, write_json
from .version import __version__

SHARD_RECORD = "shard.json"
JOB_RECORD = "job.json"
SHARD_FORMAT = "basenji2-fast shard"
#: Sentinel ``shard`` value of a merge: every task must be committed already, none is computed.
MERGE = "merge"

# The command line being run, recorded in shard.json so that `merge` can rerun it (set by
# cli.main while a command runs; None when the API is called from Python).
_cli_call: contextvars.ContextVar = contextvars.ContextVar("basenji2_fast_cli_call", default=None)


@contextmanager
def cli_call(argv: Sequence[str]) -> Iterator[None]:
    token = _cli_call.set({"argv": list(argv), "cwd": os.getcwd()})
    try:
        yield
    finally:
        _cli_call.reset(token)


def _require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ImportError("distributed runs need Dask: pip install 'basenji2-fast[distributed]' "
                          "(dask and distributed)") from None
    return distributed


# ----------------------------------------------------------------------------------------------
# The model on the workers
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """How a worker loads the driver's model: the file, its load options and the weights'
    sha256 (checked once per worker process)."""

    path: str
    threads: Optional[int]
    params: object = None
    gelu: Optional[str] = None
    isa: Optional[str] = None
    tile_mb: Optional[float] = 16.0
    weights_sha256: Optional[str] = None
    precision: Optional[str] = None  # the driver's compute precision (bf16 results differ from fp32)
    algorithm: str = "auto"  # the driver's convolution algorithm (fast and direct results differ)

    @classmethod
    def of(cls, model, workers: Optional[int]) -> "ModelRef":
        """The worker's copy of ``model``: its load options, with the engine threads it was
        loaded with, else this machine's CPUs split between ``workers`` local workers (None:
        all CPUs of each worker's machine)."""
        from .genome_tiling import weights_sha256

        opts = getattr(model, "load_options", None)
        if opts is None:
            raise ValueError("distributed runs need a model loaded from a file (b2.load(path)): each worker "
                             "loads its own copy")
        return cls(opts["path"], local_threads(workers, opts.get("threads")), opts["params"], opts["gelu"],
                   opts.get("isa"), opts.get("tile_mb", 16.0), weights_sha256(model.spec),
                   getattr(model, "precision", None), getattr(model, "algorithm", "auto"))


_models: Dict[tuple, object] = {}
_models_lock = threading.Lock()
# One engine call at a time per process: a worker with several task threads shares one model.
_compute_lock = threading.Lock()


def worker_model(ref: ModelRef):
    """The model of ``ref``, loaded once per process (a cache keyed by file and options)."""
    from .genome_tiling import weights_sha256
    from .model import load

    st = os.stat(ref.path)
    key = (ref.path, st.st_size, st.st_mtime_ns, ref.threads, repr(ref.params), ref.gelu, ref.isa, ref.tile_mb,
           ref.precision, ref.algorithm)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = load(ref.path, threads=ref.threads, params=ref.params, gelu=ref.gelu, isa=ref.isa,
                         tile_mb=ref.tile_mb, precision=ref.precision, algorithm=ref.algorithm)
            if ref.weights_sha256 is not None and weights_sha256(model.spec) != ref.weights_sha256:
                raise RuntimeError(f"{ref.path}: the worker's copy of the model differs from the driver's "
                                   "(another file at this path?)")
            _models[key] = model
    return model


_fastas: Dict[str, object] = {}


def worker_fasta(path: str):
    """An open pyfaidx.Fasta per process and path."""
    from .genome import open_fasta

    with _models_lock:
        fa = _fastas.get(path)
        if fa is None:
            fa = _fastas[path] = open_fasta(path)
    return fa


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _execute(fn: Callable, ref: Optional[ModelRef], path: str, args: tuple, local_model=None) -> dict:
    """Run one task (on a worker, or in the driver): ``fn(model, path, *args)`` writes ``path``
    atomically. A task whose file is committed does nothing (retries never duplicate)."""
    t0 = time.time()
    if not os.path.isfile(path):
        model = local_model if local_model is not None else worker_model(ref)
        with _compute_lock:
            fn(model, Path(path), *args)
    return {"seconds": time.time() - t0, "worker": _worker_address()}


def save_task(path: Path, **arrays) -> None:
    """A task's file: an ``.npz`` written under a temporary name, renamed when complete."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)


# ----------------------------------------------------------------------------------------------
# Clusters and the task runner
# ----------------------------------------------------------------------------------------------
def parse_shard(shard) -> Optional[Union[Tuple[int, int], str]]:
    """``"I/N"`` or ``(I, N)`` -> (I, N) with 0 <= I < N; None and :data:`MERGE` pass."""
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


def wanted(scheduler=None, workers=None, shard=None) -> bool:
    """Whether a call asks for anything but the single-process run."""
    return scheduler is not None or workers is not None or shard is not None


def one_head_only(multi: bool, scheduler=None, workers=None, shard=None, shard_only: bool = False) -> None:
    """Several heads in one job run in one process (predict-bed), or without shards (sad,
    sat: each head is its own job in ``OUTDIR/<head>/``, which one merge cannot combine)."""
    if multi and (shard is not None if shard_only else wanted(scheduler, workers, shard)):
        raise ValueError("--head both with " + ("--shard" if shard_only else "--workers/--scheduler/--shard")
                         + ": run one head per job")


@contextmanager
def dask_client(scheduler=None, workers: Optional[int] = None):
    """A ``distributed.Client``: ``scheduler`` is a Client, an address (``tcp://host:8786``)
    or a scheduler file (``*.json``); ``workers`` starts a LocalCluster of that many worker
    processes with one task thread each. Yields None when neither is given."""
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ValueError("give a scheduler address or a number of local workers, not both")
    _require_dask()
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # a Client the caller owns
        return
    with ExitStack() as stack:
        if scheduler is not None:
            kw = {"scheduler_file": scheduler} if scheduler.endswith(".json") else {"address": scheduler}
            client = stack.enter_context(Client(**kw))
        else:
            workers = int(workers)
            if workers < 1:
                raise ValueError(f"workers={workers}: must be at least 1")
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       host="127.0.0.1", dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
        yield client


def local_threads(workers: Optional[int], threads: Optional[int]) -> Optional[int]:
    """Engine threads per worker: as asked, else this machine's CPUs split between local workers
    (None, all CPUs of its machine, for a remote scheduler's workers)."""
    if threads is not None:
        return int(threads)
    if workers is None:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, int(workers)))


class Runner:
    """Runs one job's tasks: in this process, on a Dask cluster, or only one shard's share.

    Use as a context manager (it owns the cluster it starts). Call :meth:`open` with the task
    folder and the job's key, :meth:`add` for every task of the job in order, then :meth:`wait`.
    ``on_done(name)`` callbacks run in the driver as tasks complete (already committed tasks
    included), in completion order.
    """

    def __init__(self, command: str, model, scheduler=None, workers: Optional[int] = None, shard=None,
                 progress: bool = True):
        self.command = command
        self.shard = parse_shard(shard)
        self.scheduler, self.workers = scheduler, workers
        self.progress = progress
        self.local_model = model
        self.ref = None
        if scheduler is not None or workers is not None:
            self.ref = ModelRef.of(model, workers)
        self.client = None
        self._stack = ExitStack()
        self.n = 0                      # tasks of the job so far (all shards)
        self.mine: List[Tuple[int, str]] = []   # (position, name) of this shard's tasks
        self.records: List[dict] = []   # per computed task: name, worker, seconds
        self._inflight: Dict[object, Tuple[str, int, Optional[Callable]]] = {}
        self._ac = None
        self.bar = None

    def __enter__(self) -> "Runner":
        self.client = self._stack.enter_context(dask_client(self.scheduler, self.workers))
        if self.client is not None:
            from distributed import as_completed

            self._ac = as_completed()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._inflight and self.client is not None:
                self.client.cancel(list(self._inflight))
            if self.bar is not None:
                self.bar.close()
        finally:
            self._stack.close()

    @property
    def merge_only(self) -> bool:
        return self.shard == MERGE

    @property
    def is_shard(self) -> bool:
        return isinstance(self.shard, tuple)

    def open(self, task_dir: Path, key: str, job: dict, total_units: Optional[int], unit: str) -> None:
        """Use ``task_dir`` for this job's task files: files of another job are removed (a
        command checks an OUTDIR's job before it gets here)."""
        self.task_dir, self.key = Path(task_dir), key
        rec = read_json(self.task_dir / JOB_RECORD) if (self.task_dir / JOB_RECORD).exists() else None
        if self.task_dir.exists() and (rec is None or rec.get("job_key") != key):
            if self.merge_only:
                raise ValueError(f"{self.task_dir}: the gathered tasks are of another job than this command line's "
                                 "(did an input file change since the shards ran?)")
            shutil.rmtree(self.task_dir)
        self.task_dir.mkdir(parents=True, exist_ok=True)
        if rec is None or rec.get("job_key") != key:
            write_json(self.task_dir / JOB_RECORD, {"job_key": key, "job": job})
        for tmp in self.task_dir.glob(".*.tmp"):  # temporaries of a killed run
            tmp.unlink(missing_ok=True)
        self.job = job
        self.bar = tqdm(total=None if self.is_shard else total_units, unit=unit, desc=self.command,
                        disable=not self.progress, dynamic_ncols=True)

    def path(self, name: str) -> Path:
        return self.task_dir / name

    def add(self, name: str, fn: Callable, args: tuple, units: int = 1,
            on_done: Optional[Callable[[str], None]] = None) -> None:
        """Task ``name`` (its file name) runs ``fn(model, path, *args)`` unless committed or
        another shard's. Blocks while too many tasks are in flight (bounded driver memory)."""
        j = self.n
        self.n += 1
        if self.is_shard and j % self.shard[1] != self.shard[0]:
            return
        self.mine.append((j, name))
        path = self.path(name)
        if path.is_file():
            self.bar.update(units)
            if on_done is not None:
                on_done(name)
            return
        if self.merge_only:
            raise ValueError(f"task {name} (position {j}) is missing from {self.task_dir}: no shard computed it")
        if self.client is None:
            self._record(name, _execute(fn, None, str(path), args, local_model=self.local_model))
            self.bar.update(units)
            if on_done is not None:
                on_done(name)
            return
        cap = max(64, 4 * len(self.client.scheduler_info().get("workers", {})))
        while len(self._inflight) >= cap:
            self._complete_one()
        fut = self.client.submit(_execute, fn, self.ref, str(path), args, pure=False,
                                 key=f"{self.command}-{self.key[:12]}-{name}", retries=1)
        self._inflight[fut] = (name, units, on_done)
        self._ac.add(fut)

    def _record(self, name: str, res: dict) -> None:
        self.records.append({"task": name, **res})

    def _complete_one(self) -> None:
        fut = next(self._ac)
        name, units, on_done = self._inflight.pop(fut)
        try:
            res = fut.result()
        except Exception as e:  # the task's own error (after retries), or KilledWorker
            raise RuntimeError(f"{self.command}: task {name} failed: {type(e).__name__}: {e}") from None
        self._record(name, res)
        self.bar.update(units)
        if on_done is not None:
            on_done(name)

    def wait(self) -> None:
        """Until every submitted task is committed; the first failure raises RuntimeError."""
        while self._inflight:
            self._complete_one()
        self.bar.close()

    def write_shard(self, out_dir: Path, task_dir_name: str) -> dict:
        """Record a finished shard: ``out_dir/shard.json``."""
        rec = {"format": SHARD_FORMAT, "version": __version__, "command": self.command, "job_key": self.key,
               "job": self.job, "task_dir": task_dir_name, "shard": list(self.shard), "n_tasks": self.n,
               "tasks": [[j, name] for j, name in self.mine], "call": _cli_call.get(),
               "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(Path(out_dir) / SHARD_RECORD, rec)
        return {**rec, "status": "shard"}


# ----------------------------------------------------------------------------------------------
# predict-genome: tasks of batch_size windows of one chromosome
# ----------------------------------------------------------------------------------------------
def genome_task(model, path: Path, fasta: str, name: str, size: int, tiling, tr, all_columns: bool, head: str,
                rc: bool, shifts, batch_size: int, n_encoding: str, dtype: str, k0: int, k1: int) -> None:
    """Windows [k0, k1) of one chromosome -> ``path``: ``b0`` (first bin of each predicted
    window), ``values`` [bins, tracks] (their bins, concatenated, in the partial's dtype),
    ``skipped`` (all-N windows), ``seconds``."""
    from .genome_tiling import _predict_windows, _window_codes

    t0 = time.time()
    fa = worker_fasta(fasta)
    ks, codes, skipped = [], [], []
    for k in range(k0, k1):
        c = _window_codes(fa, tiling, name, size, k)
        if c is None:
            skipped.append(k)
        else:
            ks.append(k)
            codes.append(c)
    T = len(tr.columns)
    parts = (_predict_windows(model, tiling, size, ks, codes, head, tr, all_columns, rc, shifts, batch_size,
                              n_encoding, np.dtype(dtype)) if ks else [])
    save_task(path, b0=np.array([b for b, _ in parts], np.int64),
              n=np.array([len(v) for _, v in parts], np.int64),
              values=np.concatenate([v for _, v in parts]) if parts else np.zeros((0, T), dtype),
              skipped=np.array(skipped, np.int64), seconds=np.float64(time.time() - t0))


def run_genome(model, fasta, partial: Path, todo, state, tiling, tr, all_columns, head, rc, shifts, batch_size,
               n_encoding, key, job, scheduler, workers, shard, progress) -> Optional[dict]:
    """predict-genome's chromosomes not yet committed, as tasks; each chromosome's task files
    are merged into its partial (``<i>.npy`` + ``<i>.json``, as a single-process run commits
    them) as soon as all are in. Returns the shard record for a shard, else None."""
    from .genome_tiling import _PartialArray, _partial_dtype

    fasta = os.path.abspath(os.fspath(fasta))
    left: Dict[int, set] = {}

    def commit(i: int, name: str, size: int) -> None:
        shape = (len(tr.columns), tiling.n_chrom_bins(size))
        dtype = _partial_dtype(*shape)
        inprog = partial / f"{i}.npy.inprogress"
        arr = _PartialArray(inprog, shape, dtype, create=True)
        skipped, seconds = [], 0.0
        files = [partial / f"t{i}_{k0}.npz" for k0 in range(0, tiling.n_windows(size), batch_size)]
        try:
            for f in files:
                with np.load(f) as z:
                    values, r = z["values"], 0
                    for b0, n in zip(z["b0"], z["n"]):
                        arr.write(int(b0), values[r:r + n])
                        r += n
                    skipped += [int(k) for k in z["skipped"]]
                    seconds += float(z["seconds"])
            arr.sync()
        finally:
            arr.close()
        os.replace(inprog, partial / f"{i}.npy")
        write_json(partial / f"{i}.json", {"job_key": key, "name": name, "length": size,
                                             "windows": tiling.n_windows(size), "skipped": sorted(skipped),
                                             "dtype": dtype.str, "shape": list(shape), "seconds": seconds})
        (partial / f"{i}.progress.json").unlink(missing_ok=True)
        for f in files:
            f.unlink()

    with Runner("predict-genome", model, scheduler, workers, shard, progress=progress) as run:
        total = sum(tiling.n_windows(s) for _, _, s in todo)
        done = sum(tiling.n_windows(s) for (_, _, s), st in zip(todo, state) if st["done"])
        run.open(partial, key, job, total - done, "window")
        chroms = {}
        for (i, name, size), st in zip(todo, state):
            if st["done"]:
                continue
            n_win = tiling.n_windows(size)
            chroms[i] = (name, size)
            left[i] = {f"t{i}_{k0}.npz" for k0 in range(0, n_win, batch_size)}

        def on_done(task: str) -> None:
            i = int(task[1:].split("_")[0])
            left[i].discard(task)
            if not left[i] and not run.is_shard:
                commit(i, *chroms[i])

        dtype = {i: _partial_dtype(len(tr.columns), tiling.n_chrom_bins(s)).str for i, (_, s) in chroms.items()}
        for i, (name, size) in chroms.items():
            n_win = tiling.n_windows(size)
            for k0 in range(0, n_win, batch_size):
                k1 = min(n_win, k0 + batch_size)
                run.add(f"t{i}_{k0}.npz", genome_task, (fasta, name, size, tiling, tr, all_columns, head, rc,
                                                         list(shifts), batch_size, n_encoding, dtype[i], k0, k1),
                        units=k1 - k0, on_done=on_done)
        run.wait()
        if run.is_shard:
            return run.write_shard(partial.parent, partial.name)
    return None


# ----------------------------------------------------------------------------------------------
# sad: one task per variant batch (the batches a single-process run commits)
# ----------------------------------------------------------------------------------------------
def sad_task(model, path: Path, fasta: str, head: str, sel, stats, batch, rc: bool, shifts, pseudo: float,
             batch_size: int, basenji_edge: bool, fmt: str) -> None:
    from .variants import _commit_batch, _setup

    su = _setup(model, worker_fasta(fasta), head, sel, None, stats)
    _commit_batch(model, path, su, batch, rc, shifts, pseudo, batch_size, basenji_edge, fmt)


# ----------------------------------------------------------------------------------------------
# predict-bed and sat: tasks of region batches; the driver writes the HDF5 file in order
# ----------------------------------------------------------------------------------------------
BED_TASKS = ".predict_partial"
SAT_TASKS = ".sat_partial"


def _fasta_identity(fasta: str, fa) -> dict:
    return {"path": fasta, "bytes": os.path.getsize(fasta), "chromosomes": [[n, len(fa[n])] for n in fa.keys()]}


def regions_task(model, path: Path, fasta: str, batch, head: str, sel, rc: bool, shifts, batch_size: int,
                 n_encoding: str, site, site_sum: bool, bigwig_tracks) -> None:
    """A batch of predict-bed regions -> ``path``: ``rows`` (its preds rows, float16) and
    ``bigwig`` (float32 [batch, bins, len(bigwig_tracks)] for the driver's bigWigs)."""
    from .regions import _predict_batch, _site_rows

    p = _predict_batch(model, worker_fasta(fasta), batch, head, sel, rc, shifts, batch_size, n_encoding)
    cols = [int(t) for t in bigwig_tracks or ()]
    save_task(path, rows=_site_rows(p, site, site_sum), bigwig=p[:, :, cols])


def _fasta_path(fasta_arg, fa) -> str:
    return os.path.abspath(os.fspath(fasta_arg if isinstance(fasta_arg, (str, bytes, os.PathLike))
                                     else fa.filename))


def run_regions(model, fasta_arg, fa, regions, head, sel, rc, shifts, batch_size, n_encoding, site, site_sum,
                bigwig_tracks, header, out_dir: Path, scheduler, workers, shard, progress):
    """predict-bed's region batches as tasks. Returns (iterator of (first region, preds rows)
    in order, which also writes the ``-b`` bigWigs; None), or (None, shard.json path) for a shard."""
    from .genome_tiling import weights_sha256
    from .regions import _write_batch_bigwigs

    fasta = _fasta_path(fasta_arg, fa)
    job = {"command": "predict-bed", "model": weights_sha256(model.spec), "fasta": _fasta_identity(fasta, fa),
           "regions": [list(r[:5]) for r in regions], "head": head, "columns": list(sel.columns),
           "strand_pair": list(sel.strand_pair) if rc and sel.strand_pair is not None else None, "rc": bool(rc),
           "shifts": [int(x) for x in shifts], "batch_size": int(batch_size), "n_encoding": n_encoding,
           "site": list(site), "site_sum": bool(site_sum), "bigwig_tracks": [int(t) for t in bigwig_tracks or ()],
           "header": header}
    starts = range(0, len(regions), batch_size)
    with Runner("predict-bed", model, scheduler, workers, shard, progress=progress) as run:
        run.open(out_dir / BED_TASKS, job_key(job), job, len(regions), "region")
        for b0 in starts:
            batch = regions[b0:b0 + batch_size]
            run.add(f"{b0}.npz", regions_task, (fasta, batch, head, sel, rc, list(shifts), batch_size, n_encoding,
                                                 tuple(site), site_sum, bigwig_tracks), units=len(batch))
        run.wait()
        if run.is_shard:
            run.write_shard(out_dir, BED_TASKS)
            return None, out_dir / SHARD_RECORD

    def rows():
        for b0 in starts:
            with np.load(out_dir / BED_TASKS / f"{b0}.npz") as z:
                if bigwig_tracks:
                    _write_batch_bigwigs(model, z["bigwig"], b0, regions[b0:b0 + batch_size], bigwig_tracks,
                                         header, out_dir)
                yield b0, z["rows"]
    return rows(), None


def sat_task(model, path: Path, fasta: str, region, first: int, n: int, stats, head: str, cols, rc: bool, shifts,
             n_encoding: str, strand_pair) -> None:
    """One sat region -> ``path``: ``seqs`` (bool [n, 4]) and ``stat_<name>`` (float16 [n, 4, tracks])."""
    from .ism import _sat_region

    row, scores = _sat_region(model, worker_fasta(fasta), region, first, n, stats, head, cols, rc, shifts,
                              n_encoding, strand_pair)
    save_task(path, seqs=row, **{f"stat_{s}": v for s, v in scores.items()})


def run_sat(model, fasta_arg, fa, regions, first, n, stats, head, cols, rc, shifts, n_encoding, strand_pair,
            out_dir: Path, scheduler, workers, shard, progress):
    """sat's regions as tasks. Returns (iterator of (seqs row, {stat: scores}) in region order;
    None), or (None, shard.json path) for a shard."""
    from .genome_tiling import weights_sha256

    fasta = _fasta_path(fasta_arg, fa)
    job = {"command": "sat", "model": weights_sha256(model.spec), "fasta": _fasta_identity(fasta, fa),
           "regions": [list(r[:5]) for r in regions], "head": head, "columns": None if cols is None else list(cols),
           "strand_pair": None if strand_pair is None else list(strand_pair), "rc": bool(rc),
           "shifts": [int(x) for x in shifts], "n_encoding": n_encoding, "first": int(first), "n": int(n),
           "stats": list(stats)}
    with Runner("sat", model, scheduler, workers, shard, progress=progress) as run:
        run.open(out_dir / SAT_TASKS, job_key(job), job, len(regions), "region")
        for i, r in enumerate(regions):
            run.add(f"{i}.npz", sat_task, (fasta, r, first, n, tuple(stats), head, cols, rc, list(shifts), n_encoding,
                                           strand_pair))
        run.wait()
        if run.is_shard:
            run.write_shard(out_dir, SAT_TASKS)
            return None, out_dir / SHARD_RECORD

    def results():
        for i in range(len(regions)):
            with np.load(out_dir / SAT_TASKS / f"{i}.npz") as z:
                yield z["seqs"], {s: z[f"stat_{s}"] for s in stats}
    return results(), None


def finish_regions(out_dir: Path, tasks: str = BED_TASKS) -> None:
    """The output is committed: its task files go."""
    shutil.rmtree(Path(out_dir) / tasks, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Merging shards
# ----------------------------------------------------------------------------------------------
def gather_shards(shard_dirs: Sequence[Union[str, os.PathLike]], out_dir) -> dict:
    """Check shard folders (one job, every shard 0..N-1 once, every task once) and gather their
    task files into ``out_dir``; returns the first shard's record. One-line ValueErrors."""
    if not shard_dirs:
        raise ValueError("no shard folders given")
    recs = []
    for d in shard_dirs:
        rec = read_json(Path(d) / SHARD_RECORD)
        if rec is None or rec.get("format") != SHARD_FORMAT:
            raise ValueError(f"{d}: no {SHARD_RECORD}: not a shard folder, or its shard did not finish (rerun it)")
        recs.append((Path(d), rec))
    d0, r0 = recs[0]
    for d, r in recs[1:]:
        for field, what in (("command", "command"), ("job_key", "job (inputs and options)"),
                            ("n_tasks", "task list")):
            if r[field] != r0[field]:
                raise ValueError(f"{d} and {d0} are shards of different jobs (their {what} differ)")
        if r["shard"][1] != r0["shard"][1]:
            raise ValueError(f"{d} is shard {r['shard'][0]}/{r['shard'][1]}, {d0} shard "
                             f"{r0['shard'][0]}/{r0['shard'][1]}: shards of one job have one N")
    n = r0["shard"][1]
    seen: Dict[int, Path] = {}
    for d, r in recs:
        i = r["shard"][0]
        if i in seen:
            raise ValueError(f"shard {i}/{n} given twice: {seen[i]} and {d}")
        seen[i] = d
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise ValueError(f"shard {missing[0]}/{n} is missing ({len(missing)} of {n} shards missing)")
    owner: Dict[int, Tuple[Path, str]] = {}
    for d, r in recs:
        for j, name in r["tasks"]:
            if j in owner:
                raise ValueError(f"task {name} is in two shards: {owner[j][0]} and {d}")
            owner[j] = (d, name)
    lost = [j for j in range(r0["n_tasks"]) if j not in owner]
    if lost:
        raise ValueError(f"task {lost[0]} of {r0['n_tasks']} is in no shard ({len(lost)} missing)")
    for j, (d, name) in owner.items():
        if not (d / r0["task_dir"] / name).is_file():
            raise ValueError(f"{d / r0['task_dir'] / name}: missing (the shard's task file was removed?)")
    dest = Path(out_dir) / r0["task_dir"]
    rec = read_json(dest / JOB_RECORD) if (dest / JOB_RECORD).exists() else None
    if rec is not None and rec.get("job_key") != r0["job_key"]:
        raise ValueError(f"{dest} holds the tasks of another job; merge into another folder")
    dest.mkdir(parents=True, exist_ok=True)
    if rec is None:
        write_json(dest / JOB_RECORD, {"job_key": r0["job_key"], "job": r0["job"]})
    for j in sorted(owner):
        d, name = owner[j]
        target = dest / name
        if target.is_file():
            continue
        with atomic_output(target) as tmp:
            shutil.copyfile(d / r0["task_dir"] / name, tmp)
    return r0


def merge_shards(shard_dirs: Sequence[Union[str, os.PathLike]], out_dir) -> dict:
    """Combine shard folders into ``out_dir``'s final output (the same files as a run without
    shards). Shards written by the command line are finished by rerunning it with ``-o
    out_dir`` in merge mode; for shards written from Python, call the same function with the
    same arguments, ``out_dir`` and ``shard="merge"`` after this. Returns the shard record."""
    rec = gather_shards(shard_dirs, out_dir)
    call = rec.get("call")
    if call is None:
        return rec
    from .cli import build_parser

    args = build_parser().parse_args(call["argv"])
    args.out_dir = os.path.abspath(os.fspath(out_dir))
    args.shard, args.scheduler, args.workers = MERGE, None, None
    old = os.getcwd()
    os.chdir(call["cwd"])  # the shards' relative paths
    try:
        status = args.func(args)
    finally:
        os.chdir(old)
    if status != 0:
        raise RuntimeError(f"merging into {out_dir} failed (the message above)")
    return rec


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("distributed runs (pip install 'basenji2-fast[distributed]')")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tasks on this Dask scheduler (tcp://host:8786, or a scheduler file *.json)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the tasks on a local Dask cluster of N worker processes (the CPUs split between them)")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="run only shard I of N (0-based) into OUT_DIR; combine with 'basenji2-fast merge'")


def distributed_kwargs(args: argparse.Namespace) -> dict:
    return {"scheduler": getattr(args, "scheduler", None), "workers": getattr(args, "workers", None),
            "shard": getattr(args, "shard", None)}


def add_merge_subcommand(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "merge", help="combine --shard outputs into the final output",
        description="Check that the shard folders hold every shard 0..N-1 of one job exactly once and every task "
                    "once, then write the output a run without --shard writes (bigWigs, predict.h5, sad.h5, "
                    "scores.h5) into OUT_DIR.")
    p.add_argument("shards", nargs="+", help="shard folders (the -o of each --shard I/N run)")
    p.add_argument("-o", "--out-dir", required=True, help="output folder")
    p.set_defaults(func=run_merge)
    return p


def run_merge(args: argparse.Namespace) -> int:
    from .cli_options import one_line_errors

    def work():
        rec = merge_shards(args.shards, args.out_dir)
        if rec.get("call") is None:
            raise ValueError(f"{args.shards[0]}: shards written from Python; call the same function with "
                             f"out_dir={args.out_dir!r} and shard='merge' to finish (the tasks are gathered)")
        print(f"merged {rec['shard'][1]} shards ({rec['n_tasks']} tasks) into {args.out_dir}")

    return one_line_errors("merge", work)


def job_key(obj) -> str:
    return canonical_sha(obj)
