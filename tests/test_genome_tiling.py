"""Whole-genome tiling into bigWigs (basenji2_fast.workflows.genome_tiling): window placement, values
against direct Model.predict, gaps, short and all-N chromosomes, resume after a kill, no-op
reruns, option conflicts, read-only FASTA folders, and the command line.

basenji's own bigWigs (fixtures/basenji-cli/visible/out/predict_bigwig_interior/bigwig) are not
compared: they hold the 96 bins of BED-centred windows starting at e.g. chr1:93,919, which is
not a multiple of 128, so no bin of theirs coincides with a bin of the genome tiling (whose bins
start at multiples of 128 from the chromosome start) and no window has the same content.
"""
import argparse
import fcntl
import json
import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import pyBigWig
import pytest

import basenji2_fast as b2
from basenji2_fast import genome as genome_mod
from basenji2_fast.workflows import genome_tiling as gt
from basenji2_fast.dna import encode, revcomp
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.workflows.genome_tiling import Tiling, predict_genome

from conftest import fixture_path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "weights" / "demo"
DEMO_MODEL = DEMO / "demo_random_weights.safetensors"
STRIDE, CROP, BIN = 12288, 2048, 128  # tf-small / demo geometry: 96 bins x 128 bp, 16 bins cropped

FakeSelection = namedtuple("FakeSelection", "columns identifiers labels strand_pair")


@pytest.fixture(scope="module")
def demo_model():
    return b2.load(DEMO_MODEL)


@pytest.fixture(scope="module")
def small_model():
    return b2.load(fixture_path("tf-small", "model.h5"))


@pytest.fixture
def fixture_genome():
    return fixture_path("basenji-cli", "visible", "genome.fa")


def _write_fasta(path, records, width=60):
    with open(path, "w") as fh:
        for name, seq in records:
            fh.write(f">{name}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + "\n")
    return path


def _random_dna(rng, n):
    return "".join(rng.choice(list("ACGT"), n))


@pytest.fixture(scope="module")
def tiny_genome(tmp_path_factory):
    """chrShort: shorter than one window's output, soft-masked, partial last bin;
    chrShortUp: the same bases upper case; chrAllN: only N; chrGap: window 1's output is all N
    (the gap reaches into windows 0 and 2); chrExact: exactly two windows' output."""
    rng = np.random.default_rng(7)
    short = _random_dna(rng, 5000)
    masked = short[:1000] + short[1000:3000].lower() + short[3000:]
    gap = list(_random_dna(rng, 3 * STRIDE + 100))
    gap[STRIDE - 300:2 * STRIDE + 50] = "N" * (STRIDE + 350)
    records = [("chrShort", masked), ("chrShortUp", short), ("chrAllN", "N" * 20000),
               ("chrGap", "".join(gap)), ("chrExact", _random_dna(rng, 2 * STRIDE))]
    folder = tmp_path_factory.mktemp("tiny")
    return _write_fasta(folder / "tiny.fa", records)


def _expected(model, fasta_path, chrom, tracks=None, rc=False, shifts=(0,), n_encoding="zeros"):
    """Direct predictions on the tiled windows, built independently of genome_tiling:
    {window k: float32 [bins, tracks]} for windows whose output is not all N."""
    fa = open_fasta(fasta_path)
    size = len(fa[chrom])
    out = {}
    for k in range(-(-size // STRIDE)):
        start = k * STRIDE - CROP
        seq = fetch(fa, chrom, start, start + model.seq_length)
        inside = seq[CROP:CROP + min(STRIDE, size - k * STRIDE)]
        if set(inside) == {"N"}:
            continue
        out[k] = model.predict(seq, tracks=tracks, rc=rc, shifts=shifts, n_encoding=n_encoding)[0]
    return out


def _intervals(path, chrom):
    with pyBigWig.open(str(path)) as bw:
        return bw.intervals(chrom) or ()


def _check_track(path, chrom, size, expected, col, atol=1e-6, rtol=1e-6):
    """The bigWig's entries for chrom: abutting bins over the predicted windows only, the last
    one ending at the chromosome end, values equal to the direct predictions."""
    iv = _intervals(path, chrom)
    want = []
    for k, pred in sorted(expected.items()):
        n = min(96, -(-size // BIN) - k * 96)
        for b in range(n):
            s = k * STRIDE + b * BIN
            want.append((s, min(s + BIN, size), float(pred[b, col])))
    assert [(s, e) for s, e, _ in iv] == [(s, e) for s, e, _ in want]
    np.testing.assert_allclose([v for _, _, v in iv], [v for _, _, v in want], rtol=rtol, atol=atol)


def _bigwigs(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.bw"))}


# ---------------------------------------------------------------------------------------------
def test_tiling_geometry_basenji2():
    t = Tiling(seq_length=131072, n_bins=896, bin_size=128, crop_bins=64)
    assert t.stride == 114688 and t.crop == 8192
    assert t.window(0) == (-8192, 122880)  # first output bin = the chromosome's first 128 bp
    assert t.window(1) == (114688 - 8192, 114688 - 8192 + 131072)
    # output regions abut: window k's output ends where window k+1's starts
    assert all(t.output(k, 10 ** 9)[1] == t.output(k + 1, 10 ** 9)[0] for k in range(5))
    size = 248_956_422  # hg38 chr1
    assert t.n_windows(size) == 2171 and t.n_chrom_bins(size) == 1_944_973
    assert t.bins(2170, size) == (2170 * 896, 1_944_973)
    assert gt._runs(6, [0, 2, 3]) == [(1, 2), (4, 6)]


def test_values_equal_direct_predict_on_fixture_genome(small_model, fixture_genome, tmp_path):
    cols = [0, 3, 11]
    man = predict_genome(small_model, fixture_genome, tmp_path, tracks=cols, track_names=["dnase", "cage", "x/y"],
                         progress=False)
    assert man["tracks"]["files"] == ["0_dnase.bw", "3_cage.bw", "11_x_y.bw"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(man["tracks"]["files"] + ["manifest.json"])
    sizes = dict(l.split("\t")[:2] for l in open(str(fixture_genome) + ".fai").read().splitlines())
    for chrom, size in sizes.items():
        exp = _expected(small_model, fixture_genome, chrom, tracks=cols)
        assert len(exp) == -(-int(size) // STRIDE)  # no window of this genome is all N
        for j, f in enumerate(man["tracks"]["files"]):
            _check_track(tmp_path / f, chrom, int(size), exp, j)
    with pyBigWig.open(str(tmp_path / "0_dnase.bw")) as bw:
        assert list(bw.chroms().items()) == [(c, int(s)) for c, s in sizes.items()]  # FASTA order
    assert man["windows"] == {"total": 25 + 10 + 5, "predicted": 40, "skipped": 0}
    assert [c["name"] for c in man["chromosomes"]] == ["chr1", "chr2", "chrX"]
    assert man["model"]["source"][0]["sha256"]  # the Keras file's checksum, from its metadata


def test_short_all_n_gap_and_softmasked_chromosomes(demo_model, tiny_genome, tmp_path):
    man = predict_genome(demo_model, tiny_genome, tmp_path, tracks=[2, 5], progress=False)
    files = [tmp_path / f for f in man["tracks"]["files"]]
    sizes = {"chrShort": 5000, "chrShortUp": 5000, "chrAllN": 20000, "chrGap": 3 * STRIDE + 100,
             "chrExact": 2 * STRIDE}
    for chrom, size in sizes.items():
        exp = _expected(demo_model, tiny_genome, chrom, tracks=[2, 5])
        for j, f in enumerate(files):
            _check_track(f, chrom, size, exp, j)
    # shorter than one window: 40 bins, the last one 5000 - 39*128 = 8 bp long
    iv = _intervals(files[0], "chrShort")
    assert len(iv) == 40 and iv[-1][:2] == (4992, 5000) and iv[0][0] == 0
    assert _intervals(files[0], "chrShort") == _intervals(files[0], "chrShortUp")  # soft-masking ignored
    assert _intervals(files[0], "chrAllN") == ()  # no entries at all, not zeros
    gap = [(s, e) for s, e, _ in _intervals(files[0], "chrGap")]
    assert gap[95][1] == STRIDE and gap[96][0] == 2 * STRIDE  # window 1 absent
    assert gap[-1][1] == 3 * STRIDE + 100
    assert _intervals(files[0], "chrExact")[-1][:2] == (2 * STRIDE - BIN, 2 * STRIDE)
    per = {c["name"]: c for c in man["chromosomes"]}
    assert per["chrAllN"]["skipped_windows"] == [0, 1] and per["chrGap"]["skipped_windows"] == [1]
    assert man["windows"]["skipped"] == 3


def test_n_encoding_uniform_reaches_the_padding(demo_model, tiny_genome, tmp_path):
    man = predict_genome(demo_model, tiny_genome, tmp_path, tracks=[0], chroms=["chrShort"],
                         n_encoding="uniform", progress=False)
    exp = _expected(demo_model, tiny_genome, "chrShort", tracks=[0], n_encoding="uniform")
    _check_track(tmp_path / man["tracks"]["files"][0], "chrShort", 5000, exp, 0)
    zeros = _expected(demo_model, tiny_genome, "chrShort", tracks=[0])
    assert not np.allclose(exp[0], zeros[0])  # the N padding is encoded differently


def test_rc_shifts_and_strand_pairs(demo_model, tiny_genome, tmp_path):
    man = predict_genome(demo_model, tiny_genome, tmp_path / "a", tracks=[1, 4], chroms=["chrExact"], rc=True,
                         shifts=(0, 1), progress=False)
    exp = _expected(demo_model, tiny_genome, "chrExact", tracks=[1, 4], rc=True, shifts=(0, 1))
    for j, f in enumerate(man["tracks"]["files"]):
        _check_track(tmp_path / "a" / f, "chrExact", 2 * STRIDE, exp, j, atol=1e-5, rtol=1e-5)

    # Strand pairs: the reverse-complement passes read each track's pair (basenji swaps them).
    sel = FakeSelection([1, 4, 7], ["plus", "minus", "dnase"], ["CAGE:+", "CAGE:-", "DNASE:"],
                        [1, 0, 2])  # partners' positions in the selection; 7 is unstranded
    man = predict_genome(demo_model, tiny_genome, tmp_path / "b", tracks=sel, chroms=["chrExact"], rc=True,
                         shifts=(0, 1), progress=False)
    assert man["tracks"]["files"] == ["1_plus.bw", "4_minus.bw", "7_dnase.bw"]
    assert man["tracks"]["strand_pair"] == [1, 0, 2]
    fa = open_fasta(tiny_genome)
    for k in range(2):
        x = encode(fetch(fa, "chrExact", k * STRIDE - CROP, k * STRIDE - CROP + 16384))[None]
        passes = []
        for s in (0, 1):
            xs = x.copy()
            if s:
                xs[:, s:], xs[:, :s] = x[:, :-s], 5  # basenji's shift: uniform columns prepended
            passes.append(demo_model.predict(xs, tracks=[1, 4, 7])[0])
            passes.append(demo_model.predict(revcomp(xs), tracks=[4, 1, 7])[0, ::-1])
        want = np.mean(passes, axis=0)
        for j, f in enumerate(man["tracks"]["files"]):
            got = np.array([v for _, _, v in _intervals(tmp_path / "b" / f, "chrExact")])[k * 96:(k + 1) * 96]
            np.testing.assert_allclose(got, want[:, j], rtol=1e-5, atol=1e-5)


def test_float16_partials_for_large_chromosomes(demo_model, tiny_genome, tmp_path, monkeypatch):
    monkeypatch.setattr(gt, "FLOAT32_PARTIAL_LIMIT", 0)
    man = predict_genome(demo_model, tiny_genome, tmp_path, tracks=[0, 7], chroms=["chrGap"], progress=False)
    assert man["chromosomes"][0]["partial_dtype"] == "<f2"
    exp = _expected(demo_model, tiny_genome, "chrGap", tracks=[0, 7])
    for j, f in enumerate(man["tracks"]["files"]):
        _check_track(tmp_path / f, "chrGap", 3 * STRIDE + 100, exp, j, rtol=1e-3, atol=1e-4)


def _counting(model, monkeypatch, fail_at=None, max_batch=None):
    """Wrap model.predict: count windows, optionally raise at the fail_at-th call (a kill)."""
    real = model.predict
    calls = {"n": 0, "windows": 0}

    def predict(codes, *a, **kw):
        calls["n"] += 1
        if fail_at is not None and calls["n"] >= fail_at:
            raise KeyboardInterrupt("simulated kill")
        if max_batch is not None:
            assert codes.shape[0] <= max_batch
        calls["windows"] += codes.shape[0]
        return real(codes, *a, **kw)

    monkeypatch.setattr(model, "predict", predict)
    return calls


def test_kill_after_first_chromosome_then_resume(small_model, fixture_genome, tmp_path, monkeypatch):
    predict_genome(small_model, fixture_genome, tmp_path / "ref", tracks=[0, 5], progress=False)
    out = tmp_path / "job"
    # chr1 has 25 windows: with batch_size 5, calls 1-5 finish it; call 6 (chr2) is killed
    _counting(small_model, monkeypatch, fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        predict_genome(small_model, fixture_genome, out, tracks=[0, 5], batch_size=5, progress=False)
    assert not list(out.glob("*.bw")) and not (out / "manifest.json").exists()
    assert (out / ".partial" / "0.json").exists() and not (out / ".partial" / "1.json").exists()
    monkeypatch.undo()
    calls = _counting(small_model, monkeypatch, max_batch=5)
    man = predict_genome(small_model, fixture_genome, out, tracks=[0, 5], batch_size=5, progress=False)
    assert calls["windows"] == 10 + 5  # only chr2 and chrX are computed again
    assert _bigwigs(out) == _bigwigs(tmp_path / "ref")  # byte-identical
    assert sorted(p.name for p in out.iterdir()) == sorted(man["tracks"]["files"] + ["manifest.json"])


def test_kill_mid_chromosome_resumes_from_checkpoint(small_model, fixture_genome, tmp_path, monkeypatch):
    predict_genome(small_model, fixture_genome, tmp_path / "ref", tracks=[1], chroms=["chr1"], progress=False)
    out = tmp_path / "job"
    monkeypatch.setattr(gt, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every batch
    _counting(small_model, monkeypatch, fail_at=4)  # windows 0-2 done and checkpointed
    with pytest.raises(KeyboardInterrupt):
        predict_genome(small_model, fixture_genome, out, tracks=[1], chroms=["chr1"], batch_size=1, progress=False)
    prog = json.loads((out / ".partial" / "0.progress.json").read_text())
    assert prog["next_window"] == 3
    monkeypatch.undo()
    calls = _counting(small_model, monkeypatch)
    predict_genome(small_model, fixture_genome, out, tracks=[1], chroms=["chr1"], batch_size=1, progress=False)
    assert calls["windows"] == 25 - 3
    assert _bigwigs(out) == _bigwigs(tmp_path / "ref")


def test_parallel_assembly_writes_the_same_files(demo_model, tiny_genome, tmp_path, monkeypatch):
    serial = predict_genome(demo_model, tiny_genome, tmp_path / "serial", tracks=[0, 4, 9], progress=False)
    assert serial["timing"]["assembly_workers"] == 1
    monkeypatch.setattr(gt, "PARALLEL_ASSEMBLY_VALUES", 0)
    par = predict_genome(demo_model, tiny_genome, tmp_path / "par", tracks=[0, 4, 9], assembly_workers=2,
                         progress=False)
    assert par["timing"]["assembly_workers"] == 2
    assert _bigwigs(tmp_path / "par") == _bigwigs(tmp_path / "serial")
    assert sorted(p.name for p in (tmp_path / "par").iterdir()) == sorted(par["tracks"]["files"] + ["manifest.json"])


KILLER = """
import os, signal, sys
import basenji2_fast as b2
from basenji2_fast.workflows import genome_tiling as gt
gt.CHECKPOINT_SECONDS = 0.0
model = b2.load(sys.argv[1])
real, calls = model.predict, [0]
def predict(*a, **kw):
    calls[0] += 1
    if calls[0] == 30:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as a real kill
    return real(*a, **kw)
model.predict = predict
gt.predict_genome(model, sys.argv[2], sys.argv[3], tracks=[2, 6], batch_size=1, progress=False)
"""


def test_sigkill_mid_chromosome_then_resume(small_model, fixture_genome, tmp_path):
    """A real SIGKILL in chr2 (chr1 = windows 1-25 is committed, chr2 checkpointed at 4)."""
    import subprocess
    import sys

    predict_genome(small_model, fixture_genome, tmp_path / "ref", tracks=[2, 6], progress=False)
    out = tmp_path / "job"
    model = fixture_path("tf-small", "model.h5")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(model), str(fixture_genome), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (out / ".partial" / "0.json").exists()
    assert json.loads((out / ".partial" / "1.progress.json").read_text())["next_window"] == 4
    assert not list(out.glob("*.bw")) and not (out / "manifest.json").exists()
    (out / ".2_t2.bw.deadbeef.tmp").write_bytes(b"half a bigWig")  # as if killed while writing one
    predict_genome(small_model, fixture_genome, out, tracks=[2, 6], batch_size=3, progress=False)
    assert _bigwigs(out) == _bigwigs(tmp_path / "ref")
    assert sorted(p.name for p in out.iterdir()) == ["2_t2.bw", "6_t6.bw", "manifest.json"]


def test_rerun_is_a_noop_and_other_options_are_refused(demo_model, tmp_path, monkeypatch):
    fa = DEMO / "demo.fa"
    man = predict_genome(demo_model, fa, tmp_path, tracks=[0, 1], progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    _counting(demo_model, monkeypatch, fail_at=1)  # any prediction would raise
    again = predict_genome(demo_model, fa, tmp_path, tracks=[0, 1], batch_size=2, progress=False)
    assert again.pop("status") == "up-to-date" and again == man
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    with pytest.raises(ValueError, match="other options"):
        predict_genome(demo_model, fa, tmp_path, tracks=[0, 1], rc=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    monkeypatch.undo()
    man2 = predict_genome(demo_model, fa, tmp_path, tracks=[3], overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3_t3.bw", "manifest.json"]
    assert man2["tracks"]["columns"] == [3]


def test_interrupted_job_refuses_other_options(demo_model, tmp_path, monkeypatch):
    _counting(demo_model, monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        predict_genome(demo_model, DEMO / "demo.fa", tmp_path, tracks=[0], progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other options"):
        predict_genome(demo_model, DEMO / "demo.fa", tmp_path, tracks=[0], shifts=(0, 1), progress=False)
    predict_genome(demo_model, DEMO / "demo.fa", tmp_path, tracks=[0], progress=False)  # resumes
    assert (tmp_path / "0_t0.bw").exists()


def test_bad_inputs_leave_nothing(demo_model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'chrZ'"):
        predict_genome(demo_model, DEMO / "demo.fa", out, chroms=["chrDemo1", "chrZ"], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        predict_genome(demo_model, DEMO / "demo.fa", out, tracks=[12], progress=False)
    with pytest.raises(ValueError, match="selected twice"):
        predict_genome(demo_model, DEMO / "demo.fa", out, tracks=[1, 1], progress=False)
    with pytest.raises(ValueError, match="no head"):
        predict_genome(demo_model, DEMO / "demo.fa", out, head="mouse", progress=False)
    assert not out.exists()


def test_one_run_per_output_folder(demo_model, tmp_path):
    with open(tmp_path / ".predict-genome.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another predict-genome run"):
            predict_genome(demo_model, DEMO / "demo.fa", tmp_path, tracks=[0], progress=False)


def test_fasta_in_read_only_folder_without_index(demo_model, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "g.fa").write_bytes((DEMO / "demo.fa").read_bytes())
    folder.chmod(0o555)
    # Tests run as root, where the mode does not stop writes: make the folder look read-only.
    real_access = os.access
    monkeypatch.setattr(genome_mod.os, "access",
                        lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK
                        else real_access(p, mode, **kw))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        man = predict_genome(demo_model, folder / "g.fa", tmp_path / "out", tracks=[0], progress=False)
    finally:
        folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["g.fa"]  # no .fai written beside it
    assert list((tmp_path / "cache").rglob("*.fai"))
    ref = predict_genome(demo_model, DEMO / "demo.fa", tmp_path / "ref", tracks=[0], progress=False)
    assert _bigwigs(tmp_path / "out") == _bigwigs(tmp_path / "ref")
    assert man["windows"] == ref["windows"]


# ---------------------------------------------------------------------------------------------
def _cli(argv, capsys):
    """``basenji2-fast`` with predict-genome: through cli.main once the subcommand is wired
    there, else through a parser with only this subcommand and cli.main's error handling."""
    from basenji2_fast import cli

    try:
        wired = "predict-genome" in cli.build_parser()._subparsers._group_actions[0].choices
    except Exception:
        wired = False
    if wired:
        rc = cli.main(argv)
    else:
        parser = argparse.ArgumentParser(prog="basenji2-fast")
        gt.add_predict_genome_subcommand(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        try:
            rc = args.func(args)
        except (ValueError, KeyError, OSError) as e:
            print(f"basenji2-fast {args.command}: error: {e}", file=__import__("sys").stderr)
            rc = 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_predict_genome(fixture_genome, tmp_path, capsys):
    model = str(Path(fixture_genome).parents[2] / "tf-small" / "model.h5")
    rc, out, err = _cli(["predict-genome", "-m", model, "-f", str(fixture_genome), "-o", str(tmp_path / "o"),
                         "--tracks", "0,3", "--chroms", "chrX,chr2", "--threads", "1", "-q"], capsys)
    assert rc == 0, err
    assert "wrote 2 bigWigs" in out
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()}
    rc, out, err = _cli(["predict-genome", "-m", model, "-f", str(fixture_genome), "-o", str(tmp_path / "o"),
                         "--tracks", "0,3", "--chroms", "chr2,chrX", "-q"], capsys)
    assert rc == 0 and "nothing to do" in out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()} == mtimes
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [c["name"] for c in man["chromosomes"]] == ["chr2", "chrX"]  # FASTA order
    assert len(man["model"]["file_sha256"]) == 64 and man["model"]["file"] == "model.h5"
    assert man["options"]["threads"] == 1
    assert _intervals(tmp_path / "o" / man["tracks"]["files"][0], "chr1") == ()


def test_cli_targets_file_and_selector(fixture_genome, tmp_path, capsys):
    visible = Path(fixture_genome).parent
    model = str(visible.parents[1] / "tf-small" / "model.h5")
    rc, out, err = _cli(["predict-genome", "-m", model, "-f", str(fixture_genome), "-o", str(tmp_path / "o"),
                         "-t", str(visible / "targets.txt"), "--tracks", "^CAGE:", "--chroms", "chrX", "-q"], capsys)
    assert rc == 0, err
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    rows = [l.split("\t") for l in (visible / "targets.txt").read_text().splitlines()[1:]]
    cage = [r for r in rows if r[-1].startswith("CAGE:")]
    assert man["tracks"]["columns"] == [int(r[0]) for r in cage]
    assert man["tracks"]["files"] == [f"{r[0]}_{r[1]}.bw" for r in cage]
    assert man["tracks"]["labels"] == [r[-1] for r in cage]
    assert sorted(p.name for p in (tmp_path / "o").glob("*.bw")) == sorted(man["tracks"]["files"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    base = ["predict-genome", "-m", str(DEMO_MODEL), "-f", str(DEMO / "demo.fa"), "-o", str(tmp_path / "o"), "-q"]
    rc, _, err = _cli(base + ["--chroms", "chrDemo1,chrNope"], capsys)
    assert rc == 1 and "chrNope" in err and len(err.strip().splitlines()) == 1
    bad_model = ["-m", str(tmp_path / "nope.safetensors")]
    rc, _, err = _cli(base + bad_model + ["--precision", "bf16"], capsys)
    assert rc == 1 and "nope.safetensors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_bf16_precision(tmp_path, capsys):
    """--precision bf16 (the shared model option) predicts; a bf16 job is not an fp32 job."""
    base = ["predict-genome", "-m", str(DEMO_MODEL), "-f", str(DEMO / "demo.fa"), "-q", "--chroms", "chrDemo1"]
    rc, _, err = _cli(base + ["-o", str(tmp_path / "bf"), "--precision", "bf16"], capsys)
    assert rc == 0, err
    rc, _, err = _cli(base + ["-o", str(tmp_path / "fp"), "--tracks", "0"], capsys)
    assert rc == 0, err
    man = json.loads((tmp_path / "bf" / "manifest.json").read_text())
    assert man["windows"]["predicted"] > 0
    # resuming the bf16 folder in fp32 is another job
    rc, _, err = _cli(base + ["-o", str(tmp_path / "bf")], capsys)
    assert rc == 1 and "overwrite" in err
