"""basenji2-fast saliency (contribution scores of BED regions -> saliency.h5) and saliency-plot,
on the tf-small model and the basenji CLI fixture genome: the file's contents against
Model.saliency of the same windows, --stretch / --bins / --method / --rc / --shifts, shards and
merge, resume after an interrupted run, several heads, bad input, and the picture."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from basenji2_fast import dna, load
from basenji2_fast.cli import main
from basenji2_fast.genome import fetch, open_fasta, read_bed
from basenji2_fast.windows import engine_tracks, parse_bins, resolve_tracks, window_codes
from basenji2_fast.workflows import saliency as saliency_module
from conftest import fixture_path, recording_task

L, BINS, TRACKS = 16384, 96, 12  # tf-small


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(fixture_path("tf-small", "model.h5"))


@pytest.fixture(scope="module")
def genome(visible) -> Path:
    return visible / "genome.fa"


@pytest.fixture(scope="module")
def bed(visible) -> Path:
    """8 regions: both strands, near contig starts and ends (windows padded with N), a 1-bp
    region, one over an N run."""
    return visible / "regions.bed"


def run(capsys, *argv) -> tuple:
    """(exit status, stderr lines) of ``basenji2-fast ARGV`` in this process."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: a bad option value
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


def saliency(capsys, model_path, genome, bed, out, *opts) -> Path:
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", out, "-q", *opts)
    assert rc == 0, err
    return Path(out) / "saliency.h5"


def windows(genome, bed) -> np.ndarray:
    """uint8 codes [regions, L] of each region's window in its orientation, read independently."""
    fa = open_fasta(genome)
    return np.stack([window_codes(fa, r, L, r.strand) for r in read_bed(bed)])


def read(path: Path) -> dict:
    with h5py.File(path) as h5:
        out = {k: h5[k][()] for k in h5}
        out["attrs"] = dict(h5.attrs)
    return out


# ----------------------------------------------------------------------------------------------
# The file's contents
# ----------------------------------------------------------------------------------------------
def test_whole_windows_equal_model_saliency(model, model_path, genome, bed, tmp_path, capsys):
    got = read(saliency(capsys, model_path, genome, bed, tmp_path))
    codes = windows(genome, bed)
    want = model.saliency(codes, bins=[BINS // 2, BINS // 2 + 1])  # the default: grad, center bins
    assert got["scores"].dtype == np.float32 and got["scores"].shape == (8, L, 4)
    assert np.array_equal(got["scores"], want)
    assert got["seqs"].dtype == bool and np.array_equal(got["seqs"], dna.onehot_mask(codes))
    assert not got["seqs"][2, :100].any()  # near chr1's start: the window's first bases are off the contig (N)
    regions = read_bed(bed)
    assert [c.decode() for c in got["chr"]] == [r.chrom for r in regions]
    assert [s.decode() for s in got["strand"]] == [r.strand for r in regions]
    mids = np.array([(r.start + r.end) // 2 for r in regions])
    assert np.array_equal(got["start"], mids - L // 2) and np.array_equal(got["end"], mids + L // 2)
    a = got["attrs"]
    assert a["method"] == "grad" and a["bins"] == "center" and list(a["bin_indices"]) == [48, 49]
    assert a["head"] == "human" and list(a["track_columns"]) == list(range(TRACKS))
    assert not a["rc"] and list(a["shifts"]) == [0] and a["n_encoding"] == "zeros"
    assert a["seq_length"] == L and a["stretch_first"] == 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the task files are gone


def test_stretch_is_the_central_bases_in_the_regions_orientation(model, model_path, genome, bed, tmp_path,
                                                                  capsys):
    full = read(saliency(capsys, model_path, genome, bed, tmp_path / "full", "--bins", "all"))
    got = read(saliency(capsys, model_path, genome, bed, tmp_path / "s", "--bins", "all", "--stretch", "301"))
    first = L // 2 - 301 // 2
    assert got["scores"].shape == (8, 301, 4) and got["attrs"]["stretch_first"] == first
    assert np.array_equal(got["scores"], full["scores"][:, first:first + 301])
    assert np.array_equal(got["seqs"], full["seqs"][:, first:first + 301])
    fa = open_fasta(genome)
    for i, r in enumerate(read_bed(bed)):
        s, e = int(got["start"][i]), int(got["end"][i])
        assert e - s == 301
        codes = dna.encode(fetch(fa, r.chrom, s, e))
        if r.strand == "-":  # stretch index k is genomic end - 1 - k, complemented
            codes = dna.revcomp(codes)
        assert np.array_equal(got["seqs"][i], dna.onehot_mask(codes)), r


@pytest.mark.parametrize("bins, indices", [("center", [48, 49]), ("all", None), ("10-13", [10, 11, 12]),
                                           ("0-96", list(range(96)))])
def test_bin_choices(model, model_path, genome, bed, tmp_path, capsys, bins, indices):
    got = read(saliency(capsys, model_path, genome, bed, tmp_path, "--bins", bins, "--stretch", "64",
                        "--method", "input_x_grad"))
    want = model.saliency(windows(genome, bed), method="input_x_grad", bins=indices)[:, L // 2 - 32:L // 2 + 32]
    assert np.array_equal(got["scores"], want)
    assert ("bin_indices" in got["attrs"]) == (indices is not None)
    assert parse_bins(bins).indices(BINS) == indices


def test_bins_all_and_the_full_range_agree(model_path, genome, bed, tmp_path, capsys):
    a = read(saliency(capsys, model_path, genome, bed, tmp_path / "a", "--bins", "all", "--stretch", "40"))
    b = read(saliency(capsys, model_path, genome, bed, tmp_path / "b", "--bins", "0-96", "--stretch", "40"))
    assert np.array_equal(a["scores"], b["scores"])


@pytest.mark.parametrize("method", ["input_x_grad", "centered"])
def test_methods_follow_from_the_gradient(model_path, genome, bed, tmp_path, capsys, method):
    g = read(saliency(capsys, model_path, genome, bed, tmp_path / "g", "--stretch", "50"))
    m = read(saliency(capsys, model_path, genome, bed, tmp_path / "m", "--stretch", "50", "--method", method))
    assert m["attrs"]["method"] == method
    want = g["scores"] * g["seqs"] if method == "input_x_grad" else \
        g["scores"] - g["scores"].mean(axis=-1, keepdims=True)
    assert np.array_equal(m["scores"], want.astype(np.float32))


def test_tracks_ensemble_and_strand_pairs(model, model_path, genome, bed, visible, tmp_path, capsys):
    """-t with a strand_pair column, --tracks by regular expression, --rc --shifts: the sum over the
    selected CAGE tracks of the ensemble's mean, the pairs swapped in the reverse-complement passes."""
    rows = (visible / "targets.txt").read_text().splitlines()
    pair = {3: 7, 7: 3}  # two CAGE tracks as the two strands of one assay
    targets = tmp_path / "targets_pairs.txt"
    targets.write_text("\n".join([rows[0] + "\tstrand_pair"] + [f"{ln}\t{pair.get(i, i)}"
                                                                 for i, ln in enumerate(rows[1:])]) + "\n")
    got = read(saliency(capsys, model_path, genome, bed, tmp_path / "o", "-t", targets, "--tracks", "^CAGE:",
                        "--rc", "--shifts", "-1,0,2", "--stretch", "80", "--bins", "40-56"))
    head, sel = resolve_tracks(model, None, "^CAGE:", targets)
    cols, strand_pair = engine_tracks(model, head, sel, True)
    assert cols == [3, 7, 11] and list(strand_pair) == [1, 0, 2]
    want = model.saliency(windows(genome, bed), tracks=cols, bins=range(40, 56), rc=True, shifts=(-1, 0, 2),
                          strand_pair=strand_pair)[:, L // 2 - 40:L // 2 + 40]
    assert np.array_equal(got["scores"], want)
    a = got["attrs"]
    assert list(a["track_columns"]) == [3, 7, 11] and list(a["track_ids"]) == ["CNhs8870", "CNhs4308", "CNhs0020"]
    assert a["track_labels"][0] == "CAGE:synthetic sample 3 (visible)"
    assert a["rc"] and list(a["shifts"]) == [-1, 0, 2]


def test_batch_size_changes_nothing(model_path, genome, bed, tmp_path, capsys):
    a = saliency(capsys, model_path, genome, bed, tmp_path / "a", "--stretch", "30", "--batch-size", "1")
    b = saliency(capsys, model_path, genome, bed, tmp_path / "b", "--stretch", "30", "--batch-size", "3")
    assert np.array_equal(read(a)["scores"], read(b)["scores"])


# ----------------------------------------------------------------------------------------------
# Shards, merge, resume
# ----------------------------------------------------------------------------------------------
def test_shards_merged_equal_a_single_run(model_path, genome, bed, tmp_path, capsys):
    opts = ["--stretch", "100", "--batch-size", "2"]
    one = saliency(capsys, model_path, genome, bed, tmp_path / "one", *opts)
    for i in range(3):
        rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / f"s{i}", "-q",
                      *opts, "--shard", f"{i}/3")
        assert rc == 0, err
        assert not (tmp_path / f"s{i}" / "saliency.h5").exists()
    recs = [json.loads((tmp_path / f"s{i}" / "shard.json").read_text()) for i in range(3)]
    assert sorted(j for r in recs for j, _ in r["tasks"]) == list(range(4))  # 8 regions in batches of 2
    rc, err = run(capsys, "merge", tmp_path / "s1", tmp_path / "s2", tmp_path / "s0", "-o", tmp_path / "merged")
    assert rc == 0, err
    assert (tmp_path / "merged" / "saliency.h5").read_bytes() == one.read_bytes()
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["saliency.h5"]
    # a missing shard: a one-line refusal, no output
    rc, err = run(capsys, "merge", tmp_path / "s0", tmp_path / "s2", "-o", tmp_path / "m2")
    assert rc == 1 and len(err) == 1 and "shard 1/3 is missing" in err[0]
    assert not (tmp_path / "m2" / "saliency.h5").exists()


def test_an_interrupted_run_resumes_from_its_committed_batches(model_path, genome, bed, tmp_path, capsys,
                                                               monkeypatch):
    opts = ["--stretch", "20", "--batch-size", "3"]
    one = saliency(capsys, model_path, genome, bed, tmp_path / "one", *opts)
    real = saliency_module.batch_task
    calls = []

    monkeypatch.setattr(saliency_module, "batch_task", recording_task(real, calls, die_at=2))
    out = tmp_path / "two"
    assert main(["saliency", "-m", model_path, "-f", str(genome), str(bed), "-o", str(out), "-q", *opts]) == 130
    assert not (out / "saliency.h5").exists()  # no output that looks finished
    assert sorted(p.name for p in (out / ".saliency_partial").glob("*.npz")) == ["0.npz"]

    calls.clear()
    monkeypatch.setattr(saliency_module, "batch_task", recording_task(real, calls))
    saliency(capsys, model_path, genome, bed, out, *opts)
    assert calls == ["3.npz", "6.npz"]  # only the batches not committed
    assert (out / "saliency.h5").read_bytes() == one.read_bytes()
    assert not (out / ".saliency_partial").exists()


def test_another_jobs_tasks_are_not_reused(model_path, genome, bed, tmp_path, capsys):
    out = tmp_path / "o"
    rc, _ = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", out, "-q", "--stretch", "20",
                "--shard", "0/2")
    assert rc == 0
    path = saliency(capsys, model_path, genome, bed, out, "--stretch", "20", "--method", "centered")
    fresh = saliency(capsys, model_path, genome, bed, tmp_path / "fresh", "--stretch", "20", "--method", "centered")
    assert path.read_bytes() == fresh.read_bytes()


# ----------------------------------------------------------------------------------------------
# Several heads
# ----------------------------------------------------------------------------------------------
def test_both_heads_write_one_file_per_head(genome, bed, tmp_path, capsys):
    both = tmp_path / "both.safetensors"
    rc, err = run(capsys, "convert", fixture_path("tf-small", "model.h5"), fixture_path("tf-small", "model_mouse.h5"),
                  "-o", both)
    assert rc == 0, err
    saliency(capsys, both, genome, bed, tmp_path / "o", "--head", "both", "--stretch", "40")
    m = load(both)
    codes = windows(genome, bed)
    for head in m.head_names:
        got = read(tmp_path / "o" / head / "saliency.h5")
        assert got["attrs"]["head"] == head
        assert np.array_equal(got["scores"], m.saliency(codes, head=head, bins=[48, 49])[:, L // 2 - 20:L // 2 + 20])
    rc, err = run(capsys, "saliency", "-m", both, "-f", genome, bed, "-o", tmp_path / "s", "--head", "both",
                  "--shard", "0/2")
    assert rc == 1 and len(err) == 1 and "one head per job" in err[0]


# ----------------------------------------------------------------------------------------------
# Bad input: one line, no output
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bins, words", [("5", "expected center, all, or A-B"), ("12-3", "A must be less than B"),
                                         ("a-b", "expected center, all"), ("-3-5", "expected center"),
                                         ("centre", "expected center")])
def test_bad_bins_forms(model_path, genome, bed, tmp_path, capsys, bins, words):
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / "o", f"--bins={bins}")
    assert rc == 2 and len(err) == 1 and err[0].startswith("basenji2-fast saliency: error: argument --bins")
    assert words in err[0]
    assert not (tmp_path / "o").exists()


def test_bins_beyond_the_model(model_path, genome, bed, tmp_path, capsys):
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / "o", "--bins", "90-97")
    assert rc == 1 and len(err) == 1 and "bin 96 does not exist; this model has 96 output bins" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("opts, code, words", [
    (["--stretch", "20000"], 1, "does not fit in the 16,384-bp window"),
    (["--stretch", "0"], 2, "argument --stretch"),
    (["--method", "deeplift"], 2, "argument --method"),
    (["--tracks", "12"], 1, "12"),
    (["--head", "mouse"], 1, "no head 'mouse'"),
    (["--batch-size", "0"], 2, "argument --batch-size"),
])
def test_bad_options(model_path, genome, bed, tmp_path, capsys, opts, code, words):
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / "o", *opts)
    assert rc == code and len(err) == 1 and err[0].startswith("basenji2-fast saliency: error:") and words in err[0]
    assert not (tmp_path / "o").exists()


def test_regions_past_their_contig(model_path, genome, tmp_path, capsys):
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t100000\t100100\tok\t0\t+\nchrX\t60630\t60650\tpast\t0\t-\n")
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / "o")
    assert rc == 1 and len(err) == 1 and "r.bed: line 2" in err[0] and "runs past the end of chrX" in err[0]
    assert not (tmp_path / "o").exists()


def test_gradients_need_fp32(model_path, genome, bed, tmp_path, capsys):
    rc, err = run(capsys, "saliency", "-m", model_path, "-f", genome, bed, "-o", tmp_path / "o", "--precision",
                  "bf16")
    assert rc == 1 and len(err) == 1 and "gradients are computed in fp32" in err[0]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------
# The picture
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saliency_h5(model_path, genome, visible, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sal")
    assert main(["saliency", "-m", model_path, "-f", str(genome), str(visible / "regions.bed"), "-o", str(out),
                 "-q", "--stretch", "120", "-t", str(visible / "targets.txt"), "--tracks", "3,7"]) == 0
    return out / "saliency.h5"


def test_plot_png(saliency_h5, tmp_path, capsys):
    import matplotlib.image as mpimg

    from basenji2_fast.plots.logo import logo_width

    png = tmp_path / "logo.png"
    rc, err = run(capsys, "saliency-plot", saliency_h5, "-o", png, "--regions", "0,1", "--stretch", "60")
    assert rc == 0, err
    img = mpimg.imread(png)
    assert img.shape[:2] == (150 * (0.5 + 2 * 3.0), 150 * logo_width(60))  # 2 panels at 150 dpi
    assert img[..., :3].std() > 0.05  # something is drawn


def test_plot_reads_what_was_asked(saliency_h5):
    from basenji2_fast.plots import read_saliency

    with h5py.File(saliency_h5) as h5:
        scores, seqs = h5["scores"][()], h5["seqs"][()]
        start, end = h5["start"][()], h5["end"][()]
    sal = read_saliency(saliency_h5, regions="1", positions="10-30")
    assert sal.method == "grad" and sal.bins == "48, 49 (center)"
    assert sal.tracks == ["CAGE:synthetic sample 3 (visible)", "CAGE:synthetic sample 7 (visible)"]
    assert np.array_equal(sal.scores[0], scores[1, 10:30]) and np.array_equal(sal.seqs[0], seqs[1, 10:30])
    # region 1 is on the minus strand: stored index k is genomic end - 1 - k
    assert sal.places[0] == ("chr2", "-", int(end[1]) - 30, int(end[1]) - 10)
    sal = read_saliency(saliency_h5, regions=[0], stretch=20)
    assert sal.places[0] == ("chr1", "+", int(start[0]) + 50, int(start[0]) + 70)


def test_plot_svg_of_every_region(saliency_h5, tmp_path):
    from basenji2_fast.plots import plot_saliency

    fig = plot_saliency(saliency_h5, tmp_path / "all.svg")
    assert len(fig.axes) == 3 * 8 and (tmp_path / "all.svg").read_text().startswith("<?xml")


@pytest.mark.parametrize("args, words", [
    (["--regions", "8"], "region 8 out of range"),
    (["--positions", "100-130"], "expected A-B, 0 <= A < B <= 120"),
    (["--stretch", "500"], "does not fit"),
    (["--stretch", "5", "--positions", "0-5"], "not allowed with argument"),
])
def test_plot_errors_are_one_line(saliency_h5, tmp_path, capsys, args, words):
    rc, err = run(capsys, "saliency-plot", saliency_h5, "-o", tmp_path / "x.png", *args)
    assert rc in (1, 2) and len(err) == 1 and words in err[0]
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_other_files(visible, tmp_path, capsys):
    rc, err = run(capsys, "saliency-plot", visible / "out" / "sat_default" / "scores.h5", "-o", tmp_path / "x.png")
    assert rc == 1 and len(err) == 1 and "not a saliency.h5" in err[0]
