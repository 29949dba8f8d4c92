"""Saturation mutagenesis pictures (``sat-plot``): basenji_sat_bed.py's scores.h5, read in place."""
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from basenji2_fast import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def sat_file(fixture_file, name):
    return fixture_file("basenji-cli", "visible", "out", name, "scores.h5")


@pytest.fixture
def targets(fixture_file):
    return fixture_file("basenji-cli", "visible", "targets.txt")


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_pixels(n_panels, length, dpi=plots.DPI):
    w, h = plots.sat_figure_size(n_panels, length)
    return round(w * dpi), round(h * dpi)


def logo_axes(fig):
    """The logo axes (each carries a pair's titles)."""
    return [ax for ax in fig.axes if ax.get_title(loc="left")]


def write_sat(path, length=30, n_regions=1, n_tracks=3, strand=b"+", ids=None, labels=None):
    rng = np.random.default_rng(7)
    seqs = np.eye(4, dtype=bool)[rng.integers(0, 4, (n_regions, length))]
    raw = rng.normal(0, 0.05, (n_regions, length, 4, n_tracks))
    raw[seqs] = 0.0  # the reference base: no change
    with h5py.File(path, "w") as f:
        f["sum"] = (raw - raw.mean(axis=2, keepdims=True)).astype(np.float16)
        f["seqs"] = seqs
        f["chr"] = np.array([b"chr11"] * n_regions)
        f["strand"] = np.array([strand] * n_regions)
        f["start"] = np.arange(n_regions, dtype=np.int64) * 1000 + 5_227_000
        f["end"] = f["start"][()] + length
        if ids is not None:
            f["target_ids"] = np.array(ids, dtype="S")
        if labels is not None:
            f["target_labels"] = np.array(labels, dtype="S")
    return raw, seqs


# ----------------------------------------------------------------------------------------
# Pictures

def test_sat_default_png(fixture_file, tmp_path):
    out = tmp_path / "sat.png"
    fig = plots.plot_sat(sat_file(fixture_file, "sat_default"), out, regions="0,1", tracks="0,3")
    assert png_size(out) == expected_pixels(4, 20)
    assert plots.sat_figure_size(4, 20) == (10.0, 12.5)
    logos = logo_axes(fig)
    assert [ax.get_title(loc="left") for ax in logos] == ["track 0", "track 3"] * 2
    assert "chr1:203,078-203,097 (+)" in logos[0].get_title(loc="right")
    assert "chr2:31,476-31,495 (-)" in logos[2].get_title(loc="right")
    assert not list(tmp_path.glob(".*"))  # atomic: no temporary left behind


def test_sat_targets_labels_and_regex(fixture_file, targets, tmp_path):
    out = tmp_path / "cage.png"
    fig = plots.plot_sat(sat_file(fixture_file, "sat_targets"), out, regions=[1], tracks="^CAGE:", labels=targets)
    assert png_size(out) == expected_pixels(3, 20)
    logos = logo_axes(fig)
    assert [ax.get_title(loc="left") for ax in logos] == [f"CAGE:synthetic sample {c} (visible)" for c in (3, 7, 11)]
    assert all("region 1" in ax.get_title(loc="right") for ax in logos)
    assert "CNhs8870" in logos[0].get_title(loc="right")


def test_sat_svg_and_pdf(fixture_file, targets, tmp_path):
    h5 = sat_file(fixture_file, "sat_targets")
    plots.plot_sat(h5, tmp_path / "s.svg", regions="0", tracks="0", labels=targets)
    text = (tmp_path / "s.svg").read_text()
    assert "<svg" in text[:1000] and "DNASE" in text
    plots.plot_sat(h5, tmp_path / "s.pdf", regions="0", tracks="0")
    assert (tmp_path / "s.pdf").read_bytes()[:5] == b"%PDF-"


def test_other_stats_and_minus_strand_axis(fixture_file):
    fig = plots.plot_sat(sat_file(fixture_file, "sat_allstats"), None, stat="scd", regions="1", tracks="2")
    heat = [ax for ax in fig.axes if [t.get_text() for t in ax.get_yticklabels()] == list("ACGT")]
    assert len(heat) == 1
    ticks = [int(t.get_text().replace(",", "")) for t in heat[0].get_xticklabels()]
    assert len(ticks) >= 3 and ticks == sorted(ticks, reverse=True)  # minus strand: decreasing
    assert all(31_476 <= t <= 31_495 for t in ticks)
    assert "minus strand" in heat[0].get_xlabel()


def test_importance_is_minus_mean_substitution_effect(fixture_file):
    with h5py.File(sat_file(fixture_file, "sat_allstats"), "r") as f:
        scores = f["sum"][0].astype(np.float64)
        seqs = f["seqs"][0]
    effects, imp = plots.sat_importance(scores, seqs)
    assert effects.shape == scores.shape and imp.shape == (20, 12)
    assert np.all(effects[seqs] == 0.0)
    alt = ~seqs
    expected = -np.stack([effects[i][alt[i]].mean(axis=0) for i in range(20)])
    np.testing.assert_allclose(imp, expected, atol=1e-12)
    ref_score = scores[seqs]  # [20, 12]
    np.testing.assert_allclose(imp, 4.0 / 3.0 * ref_score, atol=2e-4)  # the stored scores sum to ~0


def test_labels_from_the_file_and_long_sequences(tmp_path):
    h5 = tmp_path / "scores.h5"
    write_sat(h5, length=300, ids=["CNhs1", "ENCFF2", "X3"],
              labels=["CAGE:K562", "DNASE:HepG2", "CHIP:H3K27ac"])
    out = tmp_path / "long.png"
    fig = plots.plot_sat(h5, out, tracks="DNASE|CHIP")
    assert [ax.get_title(loc="left") for ax in logo_axes(fig)] == ["DNASE:HepG2", "CHIP:H3K27ac"]
    assert plots.sat_figure_size(2, 300)[0] == plots.SAT_MAX_WIDTH
    assert png_size(out) == expected_pixels(2, 300)
    fig = plots.plot_sat(h5, None, tracks="ENCFF2")  # identifiers
    assert [ax.get_title(loc="left") for ax in logo_axes(fig)] == ["DNASE:HepG2"]
    fig = plots.plot_sat(h5, None, tracks="1", labels=["a", "b", "c"])  # one name per track of the file
    assert [ax.get_title(loc="left") for ax in logo_axes(fig)] == ["b"]


def test_heatmap_score_mode(tmp_path):
    h5 = tmp_path / "scores.h5"
    write_sat(h5, length=12, n_tracks=1)
    fig = plots.plot_sat(h5, None, heatmap="score")
    img = [ax for ax in fig.axes if ax.images][0].images[0]
    with h5py.File(h5, "r") as f:
        np.testing.assert_allclose(np.asarray(img.get_array()), f["sum"][0, :, :, 0].astype(np.float64).T)
    with pytest.raises(ValueError, match="heatmap must be"):
        plots.plot_sat(h5, None, heatmap="raw")


# ----------------------------------------------------------------------------------------
# Errors: one line, nothing written

@pytest.mark.parametrize("kwargs, message", [
    (dict(stat="center"), "no statistic 'center' (has sum)"),
    (dict(regions="2"), "region 2 out of range"),
    (dict(regions="-1"), "region -1 out of range"),
    (dict(regions="0,x"), "regions: expected comma-separated integers"),
    (dict(tracks="12"), "track 12 out of range"),
    (dict(regions="0,1", tracks="0,1,2,3,4,5,6,7,8"), "18 panels: plot at most 16"),
    (dict(regions="0,0"), "regions: region 0 given twice"),
    (dict(tracks="^RNA:"), "matched nothing"),
])
def test_errors_are_one_line(fixture_file, tmp_path, kwargs, message):
    out = tmp_path / "x.png"
    with pytest.raises(ValueError) as e:
        plots.plot_sat(sat_file(fixture_file, "sat_default"), out, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_bad_files(fixture_file, tmp_path):
    with pytest.raises(ValueError, match="unknown picture format '.jpg'"):
        plots.plot_sat(sat_file(fixture_file, "sat_default"), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="no such file"):
        plots.plot_sat(tmp_path / "nope.h5", tmp_path / "x.png")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        plots.plot_sat(tmp_path / "text.h5", None)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a saturation mutagenesis scores.h5"):
        plots.plot_sat(tmp_path / "other.h5", None)


# ----------------------------------------------------------------------------------------
# Command line

def test_cli_sat_plot(fixture_file, targets, tmp_path, capsys):
    out = tmp_path / "p.png"
    rc = plots.main(["sat-plot", str(sat_file(fixture_file, "sat_targets")), "-o", str(out), "--regions", "0,1",
                     "--tracks", "CAGE", "-t", str(targets), "--dpi", "100"])
    assert rc == 0 and png_size(out) == expected_pixels(6, 20, dpi=100)
    assert capsys.readouterr().out.strip() == f"wrote {out}"


@pytest.mark.parametrize("args, message", [
    (["--stat", "scd"], "no statistic 'scd'"),
    (["--regions", "5"], "region 5 out of range: "),
    (["--regions", "0,1", "--tracks", "0,1,2,3,4,5,6,7,8"], "plot at most 16 (choose --regions and --tracks)"),
])
def test_cli_sat_plot_errors_are_one_line(fixture_file, tmp_path, capsys, args, message):
    out = tmp_path / "x.png"
    rc = plots.main(["sat-plot", str(sat_file(fixture_file, "sat_default")), "-o", str(out)] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert err.startswith("basenji2-fast sat-plot: error: ")
    assert not out.exists()


def test_no_pyplot(fixture_file, tmp_path):
    code = ("import sys; from basenji2_fast import plots; "
            f"plots.plot_sat({str(sat_file(fixture_file, 'sat_default'))!r}, {str(tmp_path / 'a.png')!r}, "
            "regions='0', tracks='0'); assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
