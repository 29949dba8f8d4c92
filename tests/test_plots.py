"""Pictures: predicted tracks around a region, bigWig tracks, the ``plot`` subcommand."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from basenji2_fast import plots
from basenji2_fast.plots import GenomicRegion, parse_region

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "weights" / "demo"
MODEL = DEMO / "demo_random_weights.safetensors"
FASTA = DEMO / "demo.fa"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    import basenji2_fast as b2

    return b2.load(MODEL, threads=2)


def png_size(path):
    """(width, height) from the PNG header, after checking the signature."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_pixels(n_tracks, width=plots.FIG_WIDTH, dpi=plots.DPI):
    w, h = plots.figure_size(n_tracks, width)
    return round(w * dpi), round(h * dpi)


def suptitle(fig):
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def titles(fig):
    return [ax.get_title(loc="left") for ax in fig.axes]


# ----------------------------------------------------------------------------------------
# Regions

def test_parse_region_is_one_based_inclusive():
    assert parse_region("chr1:1,000,001-1,100,000") == GenomicRegion("chr1", 1_000_000, 1_100_000)
    assert parse_region(" chrDemo1:30001-30500 ") == GenomicRegion("chrDemo1", 30_000, 30_500)
    assert parse_region("chr5:7-7").length == 1
    assert parse_region("HLA-A*01:01:01:01:1-100") == GenomicRegion("HLA-A*01:01:01:01", 0, 100)
    assert str(GenomicRegion("chr1", 999, 2000)) == "chr1:1,000-2,000"


@pytest.mark.parametrize("text", ["chr1", "chr1:100", "chr1:100-", ":1-100", "chr1:a-100", "chr1:1-1e5",
                                  "chr1:200-100", "chr1:0-100", "chr1:-5-100", "", "chr 1:1-100"])
def test_bad_region_strings_raise_one_line(text):
    with pytest.raises(ValueError) as e:
        parse_region(text)
    assert len(str(e.value).splitlines()) == 1


def test_region_checks_against_the_genome(model, tmp_path):
    with pytest.raises(ValueError, match=r"no chromosome 'chrX' \(has chrDemo1, chrDemo2\)"):
        plots.plot_region_from_model(model, FASTA, "chrX:1-100", out_path=tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"runs past the end of chrDemo1 \(60,000 bp"):
        plots.plot_region_from_model(model, FASTA, "chrDemo1:59,001-60,001", out_path=tmp_path / "a.png")
    with pytest.raises(ValueError, match="unknown picture format"):
        plots.plot_region_from_model(model, FASTA, "chrDemo1:1-100", out_path=tmp_path / "a.jpeg")
    with pytest.raises(ValueError, match="at most 2"):
        plots.plot_region_from_model(model, FASTA, "chrDemo1:1-60000", out_path=tmp_path / "a.png", max_windows=2)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------
# From the model

def test_model_window_is_predicts_window():
    from basenji2_fast.workflows.regions import Region, window

    for start, end in [(30_000, 30_500), (100, 900), (19_000, 23_000), (5, 6)]:
        starts, out0 = plots.model_windows(16_384, 2_048, 12_288, GenomicRegion("c", start, end))
        assert starts == [window(Region("c", start, end, "r"), 16_384)[0]] and out0 == starts[0] + 2_048
    # Longer regions: abutting windows whose outputs cover the region, centred on it.
    for start, end in [(0, 60_000), (1_000, 13_289), (7, 100_000)]:
        starts, out0 = plots.model_windows(16_384, 2_048, 12_288, GenomicRegion("c", start, end))
        assert np.all(np.diff(starts) == 12_288) and out0 == starts[0] + 2_048
        assert out0 <= start and out0 + 12_288 * len(starts) >= end
        assert len(starts) == -(-(end - start) // 12_288)


def test_plot_region_from_model_png(model, tmp_path):
    out = tmp_path / "plot.png"
    fig = plots.plot_region_from_model(model, FASTA, "chrDemo1:30,001-30,500", tracks=[0, 3, 5],
                                       labels=["DNase liver", "CAGE K562", "H3K27ac"], out_path=out)
    assert png_size(out) == expected_pixels(3) == (1500, 600)
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (600, 1500)
    assert titles(fig) == ["DNase liver", "CAGE K562", "H3K27ac"]
    assert fig.axes[-1].get_xlabel() == "chrDemo1 position (kb)"
    # every output bin of the window predict uses: [30,250 - 8,192 + 2,048, + 96 x 128)
    assert fig.axes[0].get_xlim() == (24_106, 24_106 + 96 * 128)
    assert suptitle(fig).startswith("chrDemo1:24,107-36,394: predicted human tracks")
    assert "shaded: chrDemo1:30,001-30,500 (500 bp)" in suptitle(fig)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left behind


def test_predict_region_values_are_the_models(model):
    from basenji2_fast.dna import encode
    from basenji2_fast.genome import fetch, open_fasta

    r = plots.predict_region(model, FASTA, "chrDemo1:1-60000", tracks=[1, 2])
    assert r.meta["windows"] == 5 and r.values.shape == (5 * 96, 2)
    fa = open_fasta(FASTA)
    for k, w in enumerate(r.meta["window_starts"]):
        p = model.predict(encode(fetch(fa, "chrDemo1", w, w + 16_384)), tracks=[1, 2])[0]
        got = r.values[k * 96:(k + 1) * 96]
        on = np.isfinite(got[:, 0])
        np.testing.assert_allclose(got[on], p[on], rtol=1e-6)
    # bins wholly off the chromosome are blank, every other one has a value
    off = (r.edges[1:] <= 0) | (r.edges[:-1] >= 60_000)
    assert off.any() and np.all(np.isnan(r.values[off])) and np.all(np.isfinite(r.values[~off]))
    assert r.labels == ["track 1", "track 2"] and r.columns == [1, 2]


def test_region_at_chromosome_start_and_region_only(model, tmp_path):
    fig = plots.plot_region_from_model(model, FASTA, "chrDemo1:101-900", tracks=[0], out_path=tmp_path / "a.png")
    assert fig.axes[0].get_xlim()[0] == 0  # the N padding before the chromosome is not drawn
    fig = plots.plot_region_from_model(model, FASTA, "chrDemo1:101-900", tracks=[0], region_only=True,
                                       out_path=tmp_path / "b.svg")
    assert fig.axes[0].get_xlim() == (100, 900) and fig.axes[0].get_xlabel() == "chrDemo1 position (bp)"
    assert b"<svg" in (tmp_path / "b.svg").read_bytes()[:1000]


def test_labels_from_targets(model, fixture_file, tmp_path):
    targets = fixture_file("basenji-cli", "visible", "targets.txt")
    fig = plots.plot_region_from_model(model, FASTA, "chrDemo2:15,001-15,200", targets=targets, tracks="^CAGE:",
                                       out_path=tmp_path / "cage.png")
    assert all(t.startswith("CAGE:synthetic sample") for t in titles(fig)) and len(fig.axes) >= 2
    assert all("column" in ax.get_title(loc="right") for ax in fig.axes)


def test_too_many_panels_asks_for_a_selection(tmp_path):
    with pytest.raises(ValueError, match="at most 48 panels"):
        plots.plot_tracks(np.ones((10, 49)), "chr1", 0, 128, out_path=tmp_path / "x.png")


# ----------------------------------------------------------------------------------------
# plot_tracks

def test_plot_tracks_gaps_units_and_sizes(tmp_path):
    v = np.abs(np.sin(np.arange(400)[:, None] / np.array([7.0, 19.0])))
    v[150:170, :] = np.nan  # a gap
    fig = plots.plot_tracks(v, "chr7", 5_530_000, 128, ["H3K4me3", "CAGE"], tmp_path / "t.png", dpi=100,
                            width=8)
    assert png_size(tmp_path / "t.png") == expected_pixels(2, width=8, dpi=100) == (800, 300)
    assert fig.axes[-1].get_xlabel() == "chr7 position (kb)"
    assert fig.axes[0].get_xlim() == (5_530_000, 5_530_000 + 400 * 128)
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels() if t.get_text()]
    assert ticks and all("," in t or len(t) <= 5 for t in ticks)  # 5,540 kb style
    assert suptitle(fig) == "chr7:5,530,001-5,581,200"
    # Mb for long spans; one track as a 1-d array
    fig = plots.plot_tracks(np.ones(10_000), "chr1", 0, 128, ["x"])
    assert fig.axes[0].get_xlabel() == "chr1 position (Mb)"
    with pytest.raises(ValueError, match="2 labels for 1 tracks"):
        plots.plot_tracks(np.ones(10), "chr1", 0, 128, ["a", "b"])


def test_no_pyplot_and_lazy_matplotlib(tmp_path):
    code = ("import sys; import basenji2_fast.plots as p; assert 'matplotlib' not in sys.modules; "
            "import numpy as np; p.plot_tracks(np.ones((5, 1)), 'c', 0, 10, ['a'], sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png")], check=True)


# ----------------------------------------------------------------------------------------
# From bigWigs

def write_bigwigs(folder):
    """Two tiny bigWigs on chrA (10,000 bp) and chrB: a fixed-step 128-bp track with a hole at
    [2,560, 3,840) and a last partial bin, and a bedGraph-like track of uneven intervals."""
    import pyBigWig

    folder.mkdir(exist_ok=True)
    chroms = [("chrA", 10_000), ("chrB", 5_000)]
    a = np.arange(79, dtype=np.float64) / 10  # bins 0..78 (the last one 10,000 - 9,984 = 16 bp)
    bw = pyBigWig.open(str(folder / "0_DNASE1.bw"), "w")
    bw.addHeader(chroms)
    bw.addEntries("chrA", 0, values=a[:20], span=128, step=128)
    bw.addEntries("chrA", 3_840, values=a[30:78], span=128, step=128)
    bw.addEntries(["chrA"], [9_984], ends=[10_000], values=[a[78]])
    bw.close()
    bw = pyBigWig.open(str(folder / "5_CAGE7.bw"), "w")
    bw.addHeader(chroms)
    bw.addEntries(["chrA"] * 3, [0, 1_000, 5_000], ends=[1_000, 5_000, 10_000], values=[1.0, 3.0, 2.0])
    bw.addEntries(["chrB"], [0], ends=[5_000], values=[9.0])
    bw.close()
    return a


def test_binned_means_is_exact():
    iv = [(0, 100, 1.0), (100, 150, 3.0), (300, 400, 2.0)]
    edges = np.array([0, 128, 256, 384, 512])
    want = [(100 * 1 + 28 * 3) / 128, 3.0, 2.0, 2.0]
    got = plots.binned_means(iv, edges)
    np.testing.assert_allclose(got[:2], want[:2])
    np.testing.assert_allclose(got[2:], [2.0, 2.0])  # partly covered bins: mean over the covered part
    assert np.all(np.isnan(plots.binned_means(iv, np.array([500, 600, 700]))))
    assert np.all(np.isnan(plots.binned_means((), edges)))


def test_plot_region_from_bigwig_files(tmp_path):
    a = write_bigwigs(tmp_path / "bw")
    files = [tmp_path / "bw" / "0_DNASE1.bw", tmp_path / "bw" / "5_CAGE7.bw"]
    out = tmp_path / "bw.png"
    fig = plots.plot_region_from_bigwigs(files, "chrA:1-10000", out)
    assert png_size(out) == expected_pixels(2)
    assert titles(fig) == ["0_DNASE1", "5_CAGE7"]
    r = plots.read_bigwig_region(files, "chrA:1-10000")
    assert r.meta["bin_size"] == 128 and r.edges[0] == 0 and r.edges[-1] == 10_000
    want = a.copy()
    want[20:30] = np.nan  # the hole is a gap, not zeros
    np.testing.assert_allclose(r.values[:, 0], want)
    # uneven intervals, averaged over each 128-bp bin
    np.testing.assert_allclose(r.values[7, 1], (1_000 - 896) / 128 * 1.0 + (1_024 - 1_000) / 128 * 3.0)
    # a long region with few bins: means over multiples of the native bin
    r = plots.read_bigwig_region(files, "chrA:1-10000", max_bins=10)
    assert r.meta["bin_size"] == 1_024 and len(r.values) == 10
    np.testing.assert_allclose(r.values[0, 0], np.mean(a[:8]))
    # a region inside one chromosome of one file only
    with pytest.raises(ValueError, match=r"runs past the end of chrB"):
        plots.read_bigwig_region(files, "chrB:1-6000")


def test_plot_region_from_predict_genome_folder(tmp_path):
    write_bigwigs(tmp_path / "out")
    manifest = {"tracks": {"columns": [0, 5], "identifiers": ["DNASE1", "CAGE7"],
                           "labels": ["DNASE:liver", "CAGE:K562 ENCODE, biol_"],
                           "files": ["0_DNASE1.bw", "5_CAGE7.bw"]},
                "tiling": {"bin_size": 128}, "options": {"head": "human"}}
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    fig = plots.plot_region_from_bigwigs(tmp_path / "out", "chrA:2,001-6,000", tmp_path / "m.png")
    assert titles(fig) == ["DNASE:liver", "CAGE:K562 ENCODE, biol_"]
    assert [ax.get_title(loc="right") for ax in fig.axes] == ["DNASE1 \u00b7 column 0", "CAGE7 \u00b7 column 5"]
    assert fig.axes[0].get_xlim() == (2_000, 6_000)
    assert "predicted human tracks" in suptitle(fig)
    assert png_size(tmp_path / "m.png") == expected_pixels(2)
    # selecting tracks by column, identifier, or a pattern over the labels
    for sel in ("5", "CAGE7", "^CAGE:"):
        fig = plots.plot_region_from_bigwigs(tmp_path / "out", "chrA:2,001-6,000", tracks=sel)
        assert titles(fig) == ["CAGE:K562 ENCODE, biol_"]
    with pytest.raises(ValueError, match="no bigWig for track column 3"):
        plots.plot_region_from_bigwigs(tmp_path / "out", "chrA:2,001-6,000", tracks="3")
    with pytest.raises(ValueError, match="no chromosome 'chr1'"):
        plots.plot_region_from_bigwigs(tmp_path / "out", "chr1:1-100")
    # the list-of-records manifest form and a folder without a manifest
    manifest["tracks"] = [{"column": 5, "identifier": "CAGE7", "label": "CAGE:K562"}]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    assert titles(plots.plot_region_from_bigwigs(tmp_path / "out", "chrA:1-100")) == ["CAGE:K562"]
    (tmp_path / "out" / "manifest.json").unlink()
    fig = plots.plot_region_from_bigwigs(tmp_path / "out", "chrA:1-100")
    assert titles(fig) == ["DNASE1", "CAGE7"]


# ----------------------------------------------------------------------------------------
# Command line

def test_cli_plot(tmp_path, capsys):
    out = tmp_path / "p.png"
    rc = plots.main(["plot", "-m", str(MODEL), "-f", str(FASTA), "--region", "chrDemo1:30,001-30,500",
                     "--tracks", "0,1", "-o", str(out), "--threads", "2"])
    assert rc == 0 and png_size(out) == expected_pixels(2)
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    write_bigwigs(tmp_path / "bw")
    rc = plots.main(["plot", "--bigwigs", str(tmp_path / "bw"), "--region", "chrA:1-5000", "--tracks", "5",
                     "-o", str(tmp_path / "b.svg")])
    assert rc == 0 and b"<svg" in (tmp_path / "b.svg").read_bytes()[:1000]


@pytest.mark.parametrize("args, message", [
    (["--region", "chrDemo1:100"], "bad region 'chrDemo1:100'"),
    (["--region", "chrNope:1-100"], "no chromosome 'chrNope'"),
    (["--region", "chrDemo2:30,000-31,000"], "runs past the end of chrDemo2"),
    (["--region", "chrDemo1:1-100", "--tracks", "12"], "track 12 out of range"),
])
def test_cli_plot_errors_are_one_line(tmp_path, capsys, args, message):
    rc = plots.main(["plot", "-m", str(MODEL), "-f", str(FASTA), "-o", str(tmp_path / "x.png")] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert err.startswith("basenji2-fast plot: error: ")
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_needs_one_source(tmp_path, capsys):
    rc = plots.main(["plot", "-m", str(MODEL), "--region", "chrDemo1:1-100", "-o", str(tmp_path / "x.png")])
    assert rc == 1 and "needs -f/--fasta" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plots.main(["plot", "--region", "chrDemo1:1-100", "-o", str(tmp_path / "x.png")])


def test_cli_plot_takes_the_shared_options(model, tmp_path, capsys):
    """plot's options are the shared ones: --shifts -1,0,1, --rc, --device, --precision."""
    from basenji2_fast.cli import main

    region = "chrDemo1:30,001-30,500"
    base = ["plot", "-m", str(MODEL), "-f", str(FASTA), "--region", region, "--tracks", "0,1", "--threads", "2"]
    assert main(base + ["--shifts", "-1,0,1", "--rc", "--device", "cpu", "--precision", "fp32",
                        "-o", str(tmp_path / "a.png")]) == 0
    plots.plot_region_from_model(model, FASTA, region, tracks="0,1", rc=True, shifts=(-1, 0, 1),
                                 out_path=tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert main(base + ["--precision", "bf16", "-o", str(tmp_path / "c.png")]) == 0
    with pytest.raises(SystemExit) as e:  # plot draws one head: refused while parsing
        main(base + ["--head", "both", "-o", str(tmp_path / "d.png")])
    assert e.value.code == 2 and "this command takes one head" in capsys.readouterr().err


def test_predicted_tracks_are_predict_beds(model, tmp_path):
    """The picture of a region shows predict-bed's numbers for the same window, ensemble and
    strand pairs (the reverse-complement passes swap paired tracks)."""
    from basenji2_fast.workflows.regions import predict_regions

    pairs = [1, 0] + list(range(2, 12))
    (tmp_path / "t.txt").write_text("index\tidentifier\tdescription\tstrand_pair\n" + "".join(
        f"{i}\tt{i}\tCAGE:{i}\t{p}\n" for i, p in enumerate(pairs)))
    kw = dict(tracks="0,1,5", targets=tmp_path / "t.txt", rc=True, shifts=(0, 1))
    r = plots.predict_region(model, FASTA, "chrDemo1:30,001-30,500", **kw)
    p = predict_regions(model, FASTA, [("chrDemo1", 30_000, 30_500)], **kw)
    assert r.meta["windows"] == 1
    np.testing.assert_array_equal(r.values.astype(np.float32), p[0])
