"""test / evaluate: bigWigs of the model's own predictions give R = R^2 = 1 (through sum, mean
and scale), noise gives R ~ 0, clipping is applied, the streaming statistics equal NumPy's,
plots, and bad input."""
import argparse

import numpy as np
import pytest

from basenji2_fast import dna
from basenji2_fast.workflows.evaluate import TrackStats, add_test_subcommand, evaluate
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.windows import window
from conftest import fixture_path
from synthetic_coverage import chrom_sizes, tiling_regions, write_bigwig, write_targets

# Head columns the synthetic targets file names (fewer rows than the head: its index column
# names the columns, as basenji).
COLUMNS = [3, 7, 0, 5]


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    add_test_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _targets(path, rows):
    """rows: (index, identifier, file, clip, scale, sum_stat, description)."""
    write_targets(path, [r[1:] for r in rows], index=[r[0] for r in rows])


@pytest.fixture(scope="module")
def synth(tmp_path_factory, model, visible):
    """Tiling regions, the model's predictions for them, and bigWigs written from them:
    column 3 summed per base, column 7 as means, column 0 as half values with scale 2,
    column 5 as means but clipped at its median; plus noise bigWigs."""
    tmp = tmp_path_factory.mktemp("evaluate")
    fasta = visible / "genome.fa"
    sizes = chrom_sizes(fasta)
    regions = tiling_regions(model, sizes)
    fa = open_fasta(fasta)
    codes = np.stack([dna.encode(fetch(fa, r[0], *window(r, model.seq_length))) for r in regions])
    pred = model.predict(codes)  # [regions, bins, 12]
    bs = model.bin_size
    clip5 = float(np.median(pred[..., 5]))
    write_bigwig(tmp / "c3.bw", sizes, model, regions, pred[..., 3], bs)
    write_bigwig(tmp / "c7.bw", sizes, model, regions, pred[..., 7])
    write_bigwig(tmp / "c0.bw", sizes, model, regions, pred[..., 0], 2)
    write_bigwig(tmp / "c5.bw", sizes, model, regions, pred[..., 5])
    rows = [(3, "T3", "c3.bw", 1e9, 1, "sum", "CAGE:sum"), (7, "T7", "c7.bw", 1e9, 1, "mean", "DNASE:mean"),
            (0, "T0", "c0.bw", 1e9, 2, "mean", "DNASE:scaled"), (5, "T5", "c5.bw", clip5, 1, "mean", "ATAC:clipped")]
    _targets(tmp / "targets.txt", rows)
    rng = np.random.default_rng(3)
    noise_rows = []
    for k, c in enumerate(COLUMNS):
        write_bigwig(tmp / f"noise{k}.bw", sizes, model, regions, rng.exponential(2.0, pred.shape[:2]))
        noise_rows.append((c, f"N{c}", f"noise{k}.bw", 1e9, 1, "mean", f"CHIP:noise {k}"))
    _targets(tmp / "noise.txt", noise_rows)
    bed = tmp / "tiles.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return dict(tmp=tmp, fasta=fasta, bed=bed, regions=regions, pred=pred, clip5=clip5)


def test_streaming_stats_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(1000.0, 1.0, size=(5000, 3))  # a large mean: naive sums would cancel
    y = 0.5 * x + rng.normal(0.0, 0.5, size=x.shape) + 3.0
    st = TrackStats(3)
    for a, b in ((0, 1), (1, 777), (777, 778), (778, 5000)):
        st.update(x[a:b], y[a:b])
    assert st.n == 5000
    want_r = [np.corrcoef(x[:, t], y[:, t])[0, 1] for t in range(3)]
    want_r2 = 1 - ((y - x) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(st.pearsonr(), want_r, rtol=1e-10)
    np.testing.assert_allclose(st.r2(), want_r2, rtol=1e-9)


def test_own_predictions_give_r_one(model, synth, tmp_path):
    acc = evaluate(model, synth["fasta"], synth["bed"], synth["tmp"] / "targets.txt", batch_size=3,
                   plot_tracks="T3,T0", plot_dir=tmp_path / "plots")
    assert acc.index == COLUMNS and acc.identifiers == ["T3", "T7", "T0", "T5"]
    assert acc.n_bins == len(synth["regions"]) * model.n_bins
    # sum of per-base values, means, and half values scaled by 2: the predictions exactly
    np.testing.assert_allclose(acc.pearsonr[:3], 1.0, atol=1e-6)
    np.testing.assert_allclose(acc.r2[:3], 1.0, atol=1e-6)
    # clipped at the median: the statistics of min(pred, clip) against pred
    p = synth["pred"][..., 5].ravel().astype(np.float64)
    obs = np.minimum(p, np.float32(synth["clip5"]))
    np.testing.assert_allclose(acc.pearsonr[3], np.corrcoef(p, obs)[0, 1], rtol=1e-5)
    np.testing.assert_allclose(acc.r2[3], 1 - ((obs - p) ** 2).sum() / ((obs - obs.mean()) ** 2).sum(), rtol=1e-5)
    assert acc.pearsonr[3] < 0.99
    assert [p.name for p in acc.plots] == ["0_T3.png", "2_T0.png"]
    for f in acc.plots:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_gives_r_near_zero(model, synth):
    acc = evaluate(model, synth["fasta"], synth["bed"], synth["tmp"] / "noise.txt")
    assert acc.n_bins > 3000  # |R| < 0.1 is then > 5 standard errors
    assert np.all(np.abs(acc.pearsonr) < 0.1), acc.pearsonr
    assert np.all(acc.r2 < 0.0)  # worse than the observed mean


def test_cli_writes_acc_tsv(synth, tmp_path, capsys):
    out = tmp_path / "acc.tsv"
    rc = run_cli(["test", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(synth["fasta"]),
                  str(synth["bed"]), "--targets", str(synth["tmp"] / "targets.txt"), "-o", str(out),
                  "--tracks", "T7,T5", "--plot-tracks", "T5", "-q"])
    assert rc == 0, capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["index", "pearsonr", "r2", "identifier", "description"]
    rows = [l.split("\t") for l in lines[1:]]
    assert [r[0] for r in rows] == ["7", "5"] and [r[3] for r in rows] == ["T7", "T5"]
    assert rows[0][1:3] == ["1.00000", "1.00000"] and rows[0][4] == "DNASE:mean"
    assert (tmp_path / "1_T5.png").is_file()


def test_ensemble_predictions_are_compared(model, synth):
    """With --rc/--shifts the ensemble mean is what is scored."""
    regions = synth["regions"][:10]
    acc = evaluate(model, synth["fasta"], regions, synth["tmp"] / "targets.txt", tracks="T7", rc=True,
                   shifts=(0, 1))
    fa = open_fasta(synth["fasta"])
    codes = np.stack([dna.encode(fetch(fa, r[0], *window(r, model.seq_length))) for r in regions])
    ens = model.predict(codes, tracks=[7], rc=True, shifts=(0, 1))[..., 0].ravel().astype(np.float64)
    obs = synth["pred"][:10, :, 7].ravel().astype(np.float64)
    np.testing.assert_allclose(acc.pearsonr, [np.corrcoef(ens, obs)[0, 1]], rtol=1e-6)
    np.testing.assert_allclose(acc.r2, [1 - ((obs - ens) ** 2).sum() / ((obs - obs.mean()) ** 2).sum()], rtol=1e-6)


def test_bad_input(synth, tmp_path, capsys):
    out = tmp_path / "acc.tsv"
    model_path = str(fixture_path("tf-small", "model.h5"))

    def cli(bed, targets, *extra):
        rc = run_cli(["test", "-m", model_path, "-f", str(synth["fasta"]), str(bed), "--targets", str(targets),
                      "-o", str(out), "-q"] + list(extra))
        return rc, capsys.readouterr().err.strip()

    t = tmp_path / "t.txt"
    _targets(t, [(3, "T3", "", 32, 1, "sum", "x")])
    rc, err = cli(synth["bed"], t)
    assert rc == 1 and "t.txt: line 2" in err and "no bigWig" in err and "\n" not in err
    _targets(t, [(3, "T3", str(tmp_path / "gone.bw"), 32, 1, "sum", "x")])
    rc, err = cli(synth["bed"], t)
    assert rc == 1 and "line 2" in err and "gone.bw" in err and "not found" in err
    _targets(t, [(3, "T3", str(synth["tmp"] / "c3.bw"), 32, 1, "median3", "x")])
    rc, err = cli(synth["bed"], t)
    assert rc == 1 and "sum_stat 'median3'" in err
    _targets(t, [(30, "T3", str(synth["tmp"] / "c3.bw"), 32, 1, "sum", "x")])
    rc, err = cli(synth["bed"], t)
    assert rc == 1 and "index 30 is not a column" in err
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t100\t200\nchr1\t5\n")
    rc, err = cli(bed, synth["tmp"] / "targets.txt")
    assert rc == 1 and "r.bed: line 2" in err
    rc, err = cli(synth["bed"], synth["tmp"] / "targets.txt", "--plot-tracks", "T7", "--tracks", "T3")
    assert rc == 1 and "not among the evaluated tracks" in err
    # a bigWig without one of the regions' chromosomes
    import pyBigWig

    bw = pyBigWig.open(str(tmp_path / "chr1only.bw"), "w")
    bw.addHeader([("chr1", 302420)])
    bw.addEntries(["chr1"], [0], ends=[100], values=[1.0])
    bw.close()
    _targets(t, [(3, "T3", str(tmp_path / "chr1only.bw"), 32, 1, "sum", "x")])
    bed.write_text("chr1\t100000\t100001\nchr2\t50000\t50001\n")
    rc, err = cli(bed, t)
    assert rc == 1 and "r.bed: line 2" in err and "no chromosome 'chr2'" in err
    rc = run_cli(["test", "-m", model_path, "-f", str(synth["fasta"]), str(bed), "-o", str(out), "-q"])
    assert rc == 1 and "--targets is required" in capsys.readouterr().err
    assert not out.exists()
