"""Distributed runs (Dask) and shards: the same files as a single-process run.

A ``distributed.LocalCluster`` of 2 worker processes on loopback runs each command on the
tf-small model and the basenji CLI fixture genome; the outputs are compared byte for byte
with a single-process run's (bigWigs, predict.h5, sad.h5, skipped.tsv, scores.h5; the
predict-genome manifest field by field, less its timings). Which workers ran the tasks is
read from the scheduler's task stream. A worker process that kills itself on its first task
(a worker plugin and a flag file) must not change the outputs; shards merged must equal a
single run, and merge must refuse missing, duplicated or foreign shards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

distributed = pytest.importorskip("distributed")

from basenji2_fast import load  # noqa: E402
from basenji2_fast.cli import main  # noqa: E402
from basenji2_fast.workflows.genome_tiling import predict_genome  # noqa: E402
from basenji2_fast.workflows.ism import sat_bed  # noqa: E402
from basenji2_fast.workflows.regions import predict_bed  # noqa: E402
from basenji2_fast.workflows.saliency import saliency_bed  # noqa: E402
from basenji2_fast.workflows.variants import write_sad  # noqa: E402

from conftest import fixture_path  # noqa: E402

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    """2 worker processes, 1 task thread each, on loopback; the workers import this checkout."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old] if old else []))
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
            c.wait_for_workers(2)
            yield c
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def model_path():
    return str(fixture_path("tf-small", "model.h5"))


@pytest.fixture(scope="module")
def small(model_path):
    return load(model_path, threads=1)


def _same_files(a: Path, b: Path, names) -> None:
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def _workers_of(stream, command: str) -> list:
    """Worker addresses that ran tasks of ``command``, as the scheduler recorded them."""
    return [t["worker"] for t in stream.data if str(t["key"]).startswith(f"{command}-")]


def _run(client, command, fn):
    with distributed.get_task_stream(client) as ts:
        out = fn()
    return out, _workers_of(ts, command)


def _manifest_without_timing(path: Path) -> dict:
    m = json.loads(path.read_text())
    m.pop("timing")
    for c in m["chromosomes"]:
        c.pop("seconds")
    return m


# ----------------------------------------------------------------------------------------------
# Identical outputs, tasks on both workers
# ----------------------------------------------------------------------------------------------
def test_predict_genome_identical_on_two_workers(client, small, visible, tmp_path):
    genome = visible / "genome.fa"
    predict_genome(small, genome, tmp_path / "one", tracks=[0, 3, 7], progress=False)
    man, workers = _run(client, "predict-genome", lambda: predict_genome(
        small, genome, tmp_path / "dask", tracks=[0, 3, 7], progress=False, scheduler=client))
    assert len(set(workers)) == 2, workers
    assert len(workers) == sum(-(-c["windows"] // 4) for c in man["chromosomes"])  # tasks of batch_size windows
    _same_files(tmp_path / "one", tmp_path / "dask", man["tracks"]["files"])
    assert _manifest_without_timing(tmp_path / "one" / "manifest.json") == \
        _manifest_without_timing(tmp_path / "dask" / "manifest.json")
    assert not (tmp_path / "dask" / ".partial").exists()


def test_sad_identical_on_two_workers(client, small, visible, tmp_path):
    kw = dict(stats=("SAD", "SAR", "REF", "JS"), batch_size=4, progress=False)
    with pytest.warns(UserWarning):
        write_sad(small, visible / "genome.fa", visible / "variants.vcf", tmp_path / "one", **kw)
    with pytest.warns(UserWarning):
        _, workers = _run(client, "sad", lambda: write_sad(small, visible / "genome.fa", visible / "variants.vcf",
                                                           tmp_path / "dask", scheduler=client, **kw))
    assert len(set(workers)) == 2, workers
    with h5py.File(tmp_path / "one" / "sad.h5") as h5:
        assert len(workers) == -(-len(h5["snp"]) // 4)
    _same_files(tmp_path / "one", tmp_path / "dask", ["sad.h5", "skipped.tsv", "sad.options.json"])


def test_predict_bed_identical_on_two_workers(client, small, visible, tmp_path):
    kw = dict(batch_size=2, bigwig_tracks=[1, 4], site_length=1024, progress=False)
    predict_bed(small, visible / "genome.fa", visible / "regions.bed", tmp_path / "one", **kw)
    _, workers = _run(client, "predict-bed", lambda: predict_bed(
        small, visible / "genome.fa", visible / "regions.bed", tmp_path / "dask", scheduler=client, **kw))
    assert len(set(workers)) == 2, workers
    bigwigs = sorted(p.name for p in (tmp_path / "one" / "bigwig").iterdir())
    assert len(bigwigs) == 2 * 8
    _same_files(tmp_path / "one", tmp_path / "dask", ["predict.h5"] + [f"bigwig/{b}" for b in bigwigs])
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == ["bigwig", "predict.h5"]


def test_sat_identical_on_two_workers(client, small, visible, tmp_path):
    kw = dict(mut_len=6, stats=("sum", "center", "scd"), progress=False)
    sat_bed(small, visible / "genome.fa", visible / "regions.bed", tmp_path / "one", **kw)
    _, workers = _run(client, "sat", lambda: sat_bed(
        small, visible / "genome.fa", visible / "regions.bed", tmp_path / "dask", scheduler=client, **kw))
    assert len(set(workers)) == 2 and len(workers) == 8, workers
    _same_files(tmp_path / "one", tmp_path / "dask", ["scores.h5"])


def test_saliency_identical_on_two_workers(client, small, visible, tmp_path):
    kw = dict(stretch=64, bins="all", batch_size=2, progress=False)
    saliency_bed(small, visible / "genome.fa", visible / "regions.bed", tmp_path / "one", **kw)
    _, workers = _run(client, "saliency", lambda: saliency_bed(
        small, visible / "genome.fa", visible / "regions.bed", tmp_path / "dask", scheduler=client, **kw))
    assert len(set(workers)) == 2 and len(workers) == 4, workers
    _same_files(tmp_path / "one", tmp_path / "dask", ["saliency.h5"])


# ----------------------------------------------------------------------------------------------
# A worker dies mid-run
# ----------------------------------------------------------------------------------------------
class KillOnFirstTask(distributed.WorkerPlugin):
    """Kill this worker process when it starts executing a task of ``command``, once (the flag
    file says it happened): the task it was running is lost with it."""

    def __init__(self, command: str, flag: str):
        self.command, self.flag = command, flag

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith(f"{self.command}-") and not os.path.exists(self.flag):
            Path(self.flag).write_text(f"{os.getpid()} {key}\n")
            os._exit(1)


@pytest.mark.parametrize("command", ["predict-genome", "sad"])
def test_killed_worker_loses_nothing(client, small, visible, tmp_path, command):
    genome, vcf = visible / "genome.fa", visible / "variants_noskip.vcf"
    if command == "predict-genome":
        run = lambda out, **kw: predict_genome(small, genome, out, tracks=[2, 5], progress=False, **kw)  # noqa
        files = ["2_t2.bw", "5_t5.bw", "manifest.json"]
    else:
        run = lambda out, **kw: write_sad(small, genome, vcf, out, stats=("SAD", "D2"), batch_size=3,  # noqa
                                          progress=False, **kw)
        files = ["sad.h5", "skipped.tsv"]
    run(tmp_path / "one")
    pids = set(client.run(os.getpid).values())
    flag = tmp_path / "killed"
    client.register_plugin(KillOnFirstTask(command, str(flag)), name="kill-once")
    try:
        with distributed.get_task_stream(client) as ts:
            run(tmp_path / "dask", scheduler=client)
    finally:
        client.unregister_worker_plugin("kill-once")
    killed_pid, killed_key = flag.read_text().split()
    assert int(killed_pid) in pids  # one of the workers died, at the start of a task
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it
    assert int(killed_pid) not in set(client.run(os.getpid).values())
    done = [str(t["key"]) for t in ts.data if str(t["key"]).startswith(f"{command}-")]
    assert killed_key in done  # retried elsewhere
    assert len(done) == len(set(done))  # every task completed once
    if command == "predict-genome":
        assert _manifest_without_timing(tmp_path / "one" / files[-1]) == \
            _manifest_without_timing(tmp_path / "dask" / files[-1])
        files = files[:-1]
    _same_files(tmp_path / "one", tmp_path / "dask", files)


def test_restarted_driver_resumes_from_committed_tasks(client, small, visible, tmp_path):
    """A driver that stopped after committing some tasks (here: the tasks of shard 0/2, in the
    same folder) submits only the others when rerun."""
    genome, vcf = visible / "genome.fa", visible / "variants_noskip.vcf"
    kw = dict(stats=("SAD",), batch_size=2, progress=False)
    write_sad(small, genome, vcf, tmp_path / "one", **kw)
    rec = write_sad(small, genome, vcf, tmp_path / "dask", shard="0/2", **kw)
    committed = json.loads(Path(rec).read_text())["tasks"]
    (tmp_path / "dask" / "shard.json").unlink()
    _, workers = _run(client, "sad", lambda: write_sad(small, genome, vcf, tmp_path / "dask", scheduler=client, **kw))
    with h5py.File(tmp_path / "one" / "sad.h5") as h5:
        n_tasks = -(-len(h5["snp"]) // 2)
    assert len(committed) == -(-n_tasks // 2) and len(workers) == n_tasks - len(committed)
    _same_files(tmp_path / "one", tmp_path / "dask", ["sad.h5", "skipped.tsv"])


def test_workers_option_starts_a_local_cluster(small, visible, tmp_path, model_path):
    """``--workers 2`` (a LocalCluster of its own) on the command line."""
    v = visible
    args = ["sat", "-m", model_path, "-f", str(v / "genome.fa"), str(v / "sat.bed"), "-l", "4", "-q"]
    assert main(args + ["-o", str(tmp_path / "one")]) == 0
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old] if old else []))
    try:
        assert main(args + ["-o", str(tmp_path / "dask"), "--workers", "2"]) == 0
    finally:
        os.environ["PYTHONPATH"] = old if old is not None else ""
        if old is None:
            del os.environ["PYTHONPATH"]
    _same_files(tmp_path / "one", tmp_path / "dask", ["scores.h5"])


# ----------------------------------------------------------------------------------------------
# Shards and merge (no Dask needed)
# ----------------------------------------------------------------------------------------------
def _cli(command, v, model_path, extra=()):
    inputs = {"predict-genome": ["-f", str(v / "genome.fa"), "--tracks", "1,6", "--batch-size", "3"],
              "sad": ["-f", str(v / "genome.fa"), str(v / "variants.vcf"), "--stats", "SAD,ALT", "--batch-size", "5"],
              "predict-bed": ["-f", str(v / "genome.fa"), str(v / "regions.bed"), "--batch-size", "3", "-b", "0"],
              "sat": ["-f", str(v / "genome.fa"), str(v / "regions.bed"), "-l", "4", "--stats", "sum,scd"],
              "saliency": ["-f", str(v / "genome.fa"), str(v / "regions.bed"), "--stretch", "50", "--batch-size", "3",
                           "--bins", "all"]}[command]
    return [command, "-m", model_path, "-q"] + inputs + list(extra)


OUTPUTS = {"predict-genome": ["1_t1.bw", "6_t6.bw"], "sad": ["sad.h5", "skipped.tsv"],
           "predict-bed": ["predict.h5", "bigwig/s0_t0.bw", "bigwig/s7_t0.bw"], "sat": ["scores.h5"],
           "saliency": ["saliency.h5"]}


@pytest.mark.filterwarnings("ignore::UserWarning")  # sad's skipped variants
@pytest.mark.parametrize("command", ["predict-genome", "sad", "predict-bed", "sat", "saliency"])
def test_shards_merged_equal_a_single_run(visible, model_path, tmp_path, command):
    assert main(_cli(command, visible, model_path, ["-o", str(tmp_path / "one")])) == 0
    for i in range(3):
        assert main(_cli(command, visible, model_path, ["-o", str(tmp_path / f"s{i}"), "--shard", f"{i}/3"])) == 0
    recs = [json.loads((tmp_path / f"s{i}" / "shard.json").read_text()) for i in range(3)]
    assert sorted(j for r in recs for j, _ in r["tasks"]) == list(range(recs[0]["n_tasks"]))
    assert all(r["tasks"] for r in recs)
    assert main(["merge", str(tmp_path / "s2"), str(tmp_path / "s0"), str(tmp_path / "s1"),
                 "-o", str(tmp_path / "merged")]) == 0
    _same_files(tmp_path / "one", tmp_path / "merged", OUTPUTS[command])
    hidden = [p.name for p in (tmp_path / "merged").iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden  # the gathered task files are gone once the output is written


def test_merge_refuses_missing_duplicate_and_foreign_shards(visible, model_path, tmp_path, capsys):
    def shard(i, n, out, extra=()):
        assert main(_cli("sat", visible, model_path, ["-o", str(tmp_path / out), "--shard", f"{i}/{n}", *extra])) == 0

    shard(0, 2, "a0")
    shard(1, 2, "a1")
    shard(0, 2, "b0", ["--stats", "center"])  # another job (the later --stats wins)
    capsys.readouterr()

    def refuse(*dirs):
        assert main(["merge", *[str(tmp_path / d) for d in dirs], "-o", str(tmp_path / "m")]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert not (tmp_path / "m" / "scores.h5").exists()
        return err

    assert "shard 1/2 is missing" in refuse("a0")
    assert "shard 0/2 given twice" in refuse("a0", "a0", "a1")
    assert "different jobs" in refuse("a0", "b0")
    assert refuse("a0", "nothing").endswith("nothing: not found")
    (tmp_path / "empty").mkdir()
    assert "no shard.json" in refuse("a0", "empty")
    # merging into one of its own shards would consume that shard's task files
    assert main(["merge", str(tmp_path / "a0"), str(tmp_path / "a1"), "-o", str(tmp_path / "a1")]) == 1
    assert "the output folder is also an input" in capsys.readouterr().err
    assert (tmp_path / "a1" / ".sat_partial" / "1.npz").exists()
    (tmp_path / "a1" / ".sat_partial" / "1.npz").unlink()
    assert "1.npz: missing" in refuse("a0", "a1")


def test_shard_option_errors(small, visible, tmp_path):
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            sat_bed(small, visible / "genome.fa", visible / "sat.bed", tmp_path, mut_len=2, shard=bad)
    with pytest.raises(ValueError, match="not both"):
        sat_bed(small, visible / "genome.fa", visible / "sat.bed", tmp_path, mut_len=2, scheduler="tcp://x:1",
                workers=2)


def test_python_api_shards_then_merge(small, visible, tmp_path):
    """Shards written from Python: merge_shards gathers them, the same call with shard="merge"
    writes the output without computing."""
    from basenji2_fast.cli import merge_shards

    kw = dict(mut_len=3, stats=("sum",), progress=False)
    args = (small, visible / "genome.fa", visible / "regions.bed")
    sat_bed(*args, tmp_path / "one", **kw)
    for i in range(2):
        assert sat_bed(*args, tmp_path / f"s{i}", shard=(i, 2), **kw).name == "shard.json"
    rec = merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert rec["call"] is None and rec["n_tasks"] == 8
    (tmp_path / "s0" / ".sat_partial" / "0.npz").unlink()  # gathered already: the shards are not read again
    sat_bed(*args, tmp_path / "merged", shard="merge", **kw)
    _same_files(tmp_path / "one", tmp_path / "merged", ["scores.h5"])
    with pytest.raises(ValueError, match="missing"):
        sat_bed(*args, tmp_path / "nothing", shard="merge", **kw)


# ----------------------------------------------------------------------------------------------
# Several heads (--head both)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def both_path(tmp_path_factory):
    """tf-small's human and mouse heads on one trunk."""
    from basenji2_fast import convert

    out = tmp_path_factory.mktemp("both") / "both.safetensors"
    convert(fixture_path("tf-small", "model.h5"), out, mouse=fixture_path("tf-small", "model_mouse.h5"))
    return str(out)


@pytest.fixture(scope="module")
def both(both_path):
    return load(both_path, threads=1)


def test_predict_genome_both_heads_on_two_workers_and_shards(client, both, both_path, visible, tmp_path):
    """Tasks run the trunk once per window for both heads; the per-head bigWigs and the
    manifest equal a single-process run's, on a cluster and from merged shards."""
    genome = visible / "genome.fa"
    one = predict_genome(both, genome, tmp_path / "one", head="both", progress=False)
    files = one["tracks"]["files"]
    assert {f.split("/")[0] for f in files} == {"human", "mouse"}
    _, workers = _run(client, "predict-genome", lambda: predict_genome(
        both, genome, tmp_path / "dask", head="both", progress=False, scheduler=client))
    assert len(set(workers)) == 2, workers
    _same_files(tmp_path / "one", tmp_path / "dask", files)
    assert _manifest_without_timing(tmp_path / "one" / "manifest.json") == \
        _manifest_without_timing(tmp_path / "dask" / "manifest.json")
    args = ["predict-genome", "-m", both_path, "-q", "-f", str(genome), "--head", "both"]
    for i in range(2):
        assert main(args + ["-o", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]) == 0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(tmp_path / "merged")]) == 0
    _same_files(tmp_path / "one", tmp_path / "merged", files)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sad's skipped variants
def test_sad_and_sat_both_heads_run_each_head_on_the_cluster(client, both, visible, tmp_path):
    g, vcf, bed = visible / "genome.fa", visible / "variants.vcf", visible / "sat.bed"
    sad_kw = dict(head="both", stats=("SAD",), batch_size=4, progress=False)
    sat_kw = dict(head="both", mut_len=3, stats=("sum",), progress=False)
    write_sad(both, g, vcf, tmp_path / "one", **sad_kw)
    sat_bed(both, g, bed, tmp_path / "one_sat", **sat_kw)
    _, sad_workers = _run(client, "sad", lambda: write_sad(both, g, vcf, tmp_path / "dask", scheduler=client,
                                                           **sad_kw))
    _, sat_workers = _run(client, "sat", lambda: sat_bed(both, g, bed, tmp_path / "dask_sat", scheduler=client,
                                                         **sat_kw))
    assert sad_workers and sat_workers
    for h in ("human", "mouse"):
        _same_files(tmp_path / "one" / h, tmp_path / "dask" / h, ["sad.h5", "skipped.tsv"])
        _same_files(tmp_path / "one_sat" / h, tmp_path / "dask_sat" / h, ["scores.h5"])


def test_both_heads_refused_where_one_job_per_head_is_needed(both, both_path, visible, tmp_path, capsys):
    """predict-bed runs several heads in one process only; sad and sat shards are per head."""
    g = visible / "genome.fa"
    with pytest.raises(ValueError, match=r"^several heads with scheduler=/workers=/shard=: run one head per job$"):
        predict_bed(both, g, visible / "regions.bed", tmp_path / "bed", head="both", workers=2)
    with pytest.raises(ValueError, match=r"^several heads with shard=: run one head per job$"):
        write_sad(both, g, visible / "variants.vcf", tmp_path / "sad", head="both", shard="0/2", progress=False)
    with pytest.raises(ValueError, match=r"^several heads with shard=: run one head per job$"):
        sat_bed(both, g, visible / "sat.bed", tmp_path / "sat", head="both", mut_len=2, shard="0/2")
    assert main(["predict-bed", "-m", both_path, "-q", "-f", str(g), str(visible / "regions.bed"), "--head", "both",
                 "-o", str(tmp_path / "cli"), "--shard", "0/2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--head both with --workers/--scheduler/--shard: run one head per job" in err and "\n" not in err
    assert not any(p.exists() for p in (tmp_path / "bed", tmp_path / "sad", tmp_path / "sat", tmp_path / "cli"))
