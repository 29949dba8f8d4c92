"""Run a job's tasks: in this process, on a Dask cluster (``--scheduler`` / ``--workers``) or
one shard's share (``--shard I/N``, then ``basenji2-fast merge``). The runner knows no
workflow: each workflow module hands it task functions and writes its own output from the
committed task files.

Tasks
-----
A workflow splits its work into tasks that are whole units of its output (a batch of
windows, regions or variants; one region) and describes each as a :class:`Task`: a file
name, and a module-level function ``fn(model, path, *args)`` that computes the unit and
writes ``path`` (:func:`save_task`: an ``.npz`` under a temporary name, renamed when
complete). The workflow then reads the committed files, in task order, into the output a
single-process run writes.

Faults and resume
-----------------
A task whose file exists does nothing, so a retried task (Dask reschedules the tasks of a
worker that died) never writes a unit twice, and a restarted driver submits only the tasks
without a file. The task folder holds ``job.json``: the job record the workflow gives (every
input and option that changes the output) and its key; the files of another job are removed,
never merged.

Workers
-------
A task carries a :class:`ModelRef` (the model file and load options), never the engine:
each worker process loads the model once (memory-mapped weights) into a module-level cache
and checks its weights' sha256 against the driver's; :func:`worker_fasta` opens a FASTA once
per process. ``--workers N`` starts a ``distributed.LocalCluster`` of N processes with one
task thread each and the CPUs split between them for the engine's threads.

Shards
------
``--shard I/N`` runs only the tasks whose position in the job's task list is I modulo N,
writes their files to its OUTDIR and, when all are committed, ``OUTDIR/shard.json`` (the
job's key, the shard's tasks, the command line). ``basenji2-fast merge -o OUT SHARD...``
checks with :func:`gather_shards` that the shards are of one job, that every shard 0..N-1
is there once and every task once, gathers the task files into OUT and reruns the command
line there with ``shard="merge"``: every task is then committed and the workflow only writes.
"""
from __future__ import annotations

import contextvars
import datetime as _dt
import json
import os
import shutil
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ._io import MERGE, OptionError, atomic_output, canonical_sha, parse_shard, read_json, write_json
from .genome import open_fasta
from .model import load
from .spec import weights_sha256
from .version import __version__

SHARD_RECORD = "shard.json"
JOB_RECORD = "job.json"
SHARD_FORMAT = "basenji2-fast shard"

# The command line being run, recorded in shard.json so that `merge` can rerun it (set by
# cli.main while a command runs; None when the API is called from Python).
_cli_call: contextvars.ContextVar = contextvars.ContextVar("basenji2_fast_cli_call", default=None)


@contextmanager
def cli_call(argv: Sequence[str]) -> Iterator[None]:
    """While the block runs, ``argv`` (and the working folder) is the command line a shard
    records in its shard.json, for ``merge`` to rerun."""
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
        model = worker_model(ref) if ref is not None else local_model
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
def check_scheduler(scheduler) -> None:
    """A scheduler file (``*.json``) must exist and hold a Dask scheduler's ``address``: a
    missing file would have ``distributed.Client`` wait minutes for it to appear, and another
    JSON file fails deep inside Dask. One-line errors, before anything is written."""
    if not isinstance(scheduler, (str, os.PathLike)) or not os.fspath(scheduler).endswith(".json"):
        return
    path = Path(scheduler)
    if not path.exists():
        raise FileNotFoundError(f"{scheduler}: scheduler file not found")
    if path.is_dir():
        raise ValueError(f"{scheduler}: a folder, not a Dask scheduler file")
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        rec = None
    if not isinstance(rec, dict) or not isinstance(rec.get("address"), str) or not rec["address"]:
        raise ValueError(f"{scheduler}: not a Dask scheduler file (no JSON \"address\" of a running scheduler)")


class _PlacementFields(NamedTuple):
    scheduler: object = None
    workers: Optional[int] = None
    shard: object = None


class Placement(_PlacementFields):
    """Where a job's tasks run: ``scheduler`` (a Dask scheduler address ``tcp://host:8786``, a
    scheduler file ``*.json`` or a ``distributed.Client``), ``workers`` (a local cluster of
    that many processes) or ``shard`` (``"I/N"`` or ``(I, N)``: only shard I's tasks;
    :data:`MERGE`: none, every task must be committed). All None: one process, no task files.
    A scheduler file is checked when the placement is made (:func:`check_scheduler`)."""

    __slots__ = ()

    def __new__(cls, scheduler=None, workers: Optional[int] = None, shard=None):
        if isinstance(scheduler, os.PathLike):
            scheduler = os.fspath(scheduler)
        check_scheduler(scheduler)
        return super().__new__(cls, scheduler, workers, shard)

    @property
    def distributed(self) -> bool:
        """Whether anything but the single-process run is asked for."""
        return self.scheduler is not None or self.workers is not None or self.shard is not None

    def refuse_heads(self, multi: bool, shard_only: bool = False) -> None:
        """Several heads in one job run in one process (predict-bed), or without shards (sad,
        sat: each head is its own job in ``OUTDIR/<head>/``, which one merge cannot combine)."""
        if multi and (self.shard is not None if shard_only else self.distributed):
            raise OptionError("{head} with {placement}: run one head per job",
                              head=("several heads", "--head both"),
                              placement=("shard=" if shard_only else "scheduler=/workers=/shard=",
                                         "--shard" if shard_only else "--workers/--scheduler/--shard"))


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
    check_scheduler(scheduler)
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


class Task(NamedTuple):
    """One unit of a job: ``fn(model, path, *args)`` computes it and writes ``path``, the file
    ``name`` in the job's task folder (with :func:`save_task`). ``fn`` is a module-level
    function (Dask workers import it by name). ``units``: what it adds to the progress bar;
    ``on_done(name)`` runs in the driver once the task is committed."""

    name: str
    fn: Callable
    args: tuple = ()
    units: int = 1
    on_done: Optional[Callable[[str], None]] = None


class Runner:
    """Runs one job's tasks: in this process, on a Dask cluster, or only one shard's share.

    Use as a context manager (it owns the cluster it starts). Call :meth:`open` with the task
    folder and the job record, :meth:`add` for every task of the job in order, then
    :meth:`wait`; a shard then records itself with :meth:`write_shard`. ``on_done(name)``
    callbacks run in the driver as tasks complete (already committed tasks included), in
    completion order.
    """

    def __init__(self, command: str, model, placement: Placement = Placement(), progress: bool = True):
        self.command = command
        self.shard = parse_shard(placement.shard)
        self.scheduler, self.workers = placement.scheduler, placement.workers
        self.progress = progress
        self.local_model = model
        self.ref = None
        if self.scheduler is not None or self.workers is not None:
            self.ref = ModelRef.of(model, self.workers)
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

    def open(self, task_dir: Path, job: dict, total_units: Optional[int], unit: str) -> None:
        """Use ``task_dir`` for the task files of ``job`` (a JSON-able record of every input
        and option that changes the output; :func:`job_key` keys it): files of another job are
        removed (a command checks an OUTDIR's job before it gets here). ``total_units`` and
        ``unit`` label the progress bar."""
        key = job_key(job)
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

    def add(self, task: Task) -> None:
        """Run ``task`` unless it is committed or another shard's. Blocks while too many tasks
        are in flight (bounded driver memory)."""
        name, fn, args, units, on_done = task
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

    def write_shard(self, out_dir: Path) -> dict:
        """Record a finished shard: ``out_dir/shard.json``; returns the record (``status``: "shard")."""
        rec = {"format": SHARD_FORMAT, "version": __version__, "command": self.command, "job_key": self.key,
               "job": self.job, "task_dir": self.task_dir.name, "shard": list(self.shard), "n_tasks": self.n,
               "tasks": [[j, name] for j, name in self.mine], "call": _cli_call.get(),
               "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(Path(out_dir) / SHARD_RECORD, rec)
        return {**rec, "status": "shard"}


def run_tasks(command: str, model, placement: Placement, task_dir: Path, job: dict, tasks: Iterable[Task],
              total_units: Optional[int], unit: str, progress: bool = True) -> Optional[Path]:
    """Run every task of a job (:class:`Runner`, in one call). Returns None when all are
    committed in ``task_dir``, or the path of ``shard.json`` (beside the task folder) when
    ``placement`` is one shard."""
    with Runner(command, model, placement, progress=progress) as run:
        run.open(task_dir, job, total_units, unit)
        for task in tasks:
            run.add(task)
        run.wait()
        if run.is_shard:
            run.write_shard(Path(task_dir).parent)
            return Path(task_dir).parent / SHARD_RECORD
    return None


def finish(task_dir: Path) -> None:
    """The output is written: the job's task files go."""
    shutil.rmtree(task_dir, ignore_errors=True)


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
        if not Path(d).exists():
            raise FileNotFoundError(f"{d}: not found")
        if not Path(d).is_dir():
            raise ValueError(f"{d}: not a folder (give the -o folders of the --shard I/N runs)")
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


def job_key(obj) -> str:
    """The key of a job record (sha256 of its canonical JSON)."""
    return canonical_sha(obj)
