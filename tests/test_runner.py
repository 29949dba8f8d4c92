"""The generic runner (basenji2_fast.runner) with a workflow of its own: task functions that
know nothing of the model, run in this process, as shards, merged, resumed. The runner knows
no workflow; a new distributed workflow needs only its task function, its job record and its
writer (README, Layout)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from basenji2_fast import runner

CALLS = []


def square_task(model, path: Path, k: int, scale: float) -> None:
    """A toy unit of work: k^2 * scale -> path."""
    CALLS.append(k)
    runner.save_task(path, value=np.array([k * k * scale]))


def _tasks(n: int, scale: float = 1.0, done=None):
    return [runner.Task(f"{k}.npz", square_task, (k, scale), 1, done) for k in range(n)]


def _values(task_dir: Path, n: int):
    out = []
    for k in range(n):
        with np.load(task_dir / f"{k}.npz") as z:
            out.append(float(z["value"][0]))
    return out


def test_local_run_commits_every_task_once_and_resumes(tmp_path):
    CALLS.clear()
    task_dir = tmp_path / ".toy_partial"
    job = {"command": "toy", "n": 5}
    done = []
    assert runner.run_tasks("toy", None, runner.Placement(), task_dir, job, _tasks(5, done=done.append), 5, "unit",
                            progress=False) is None
    assert _values(task_dir, 5) == [0.0, 1.0, 4.0, 9.0, 16.0]
    assert sorted(done) == [f"{k}.npz" for k in range(5)] and CALLS == [0, 1, 2, 3, 4]
    assert json.loads((task_dir / runner.JOB_RECORD).read_text())["job_key"] == runner.job_key(job)
    # resume: a committed task is not computed again, a missing one is
    (task_dir / "3.npz").unlink()
    CALLS.clear()
    runner.run_tasks("toy", None, runner.Placement(), task_dir, job, _tasks(5), 5, "unit", progress=False)
    assert CALLS == [3] and _values(task_dir, 5)[3] == 9.0
    # another job in the same folder: its files are never merged with ours
    CALLS.clear()
    runner.run_tasks("toy", None, runner.Placement(), task_dir, {"command": "toy", "n": 5, "scale": 2},
                     _tasks(5, 2.0), 5, "unit", progress=False)
    assert CALLS == [0, 1, 2, 3, 4] and _values(task_dir, 5) == [0.0, 2.0, 8.0, 18.0, 32.0]
    runner.finish(task_dir)
    assert not task_dir.exists()


def test_shards_gathered_then_merged_without_computing(tmp_path):
    CALLS.clear()
    job = {"command": "toy", "n": 7}
    for i in range(3):
        shard = runner.run_tasks("toy", None, runner.Placement(shard=f"{i}/3"), tmp_path / f"s{i}" / ".toy", job,
                                 _tasks(7), 7, "unit", progress=False)
        assert shard == tmp_path / f"s{i}" / runner.SHARD_RECORD
        rec = json.loads(shard.read_text())
        assert [j for j, _ in rec["tasks"]] == list(range(i, 7, 3)) and rec["task_dir"] == ".toy"
    assert sorted(CALLS) == list(range(7))
    rec = runner.gather_shards([tmp_path / "s2", tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert rec["n_tasks"] == 7 and rec["call"] is None
    CALLS.clear()
    assert runner.run_tasks("toy", None, runner.Placement(shard=runner.MERGE), tmp_path / "merged" / ".toy", job,
                            _tasks(7), 7, "unit", progress=False) is None
    assert CALLS == [] and _values(tmp_path / "merged" / ".toy", 7) == [float(k * k) for k in range(7)]
    with pytest.raises(ValueError, match="no shard computed it"):
        runner.run_tasks("toy", None, runner.Placement(shard=runner.MERGE), tmp_path / "merged" / ".toy", job,
                         _tasks(8), 8, "unit", progress=False)


def test_placement():
    assert not runner.Placement().distributed
    assert runner.Placement(workers=2).distributed and runner.Placement(shard="0/2").distributed
    with pytest.raises(ValueError, match="run one head per job"):
        runner.Placement(shard="0/2").refuse_heads(True, shard_only=True)
    runner.Placement(workers=2).refuse_heads(True, shard_only=True)  # a cluster runs each head's job in turn
    with pytest.raises(ValueError, match="run one head per job"):
        runner.Placement(workers=2).refuse_heads(True)
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            runner.parse_shard(bad)
