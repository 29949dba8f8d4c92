"""Observed coverage in model bins: pooling statistics, missing data and chromosome ends,
basenji's clip_soft -> clip -> scale order, and bad targets rows."""
import numpy as np
import pytest

from basenji2_fast.coverage import coverage_tracks, open_coverage


@pytest.fixture
def bigwig(tmp_path):
    """chr1 of 50 bp: [0,10) = 1, [10,20) = 3, no data in [20,30), [30,40) = 5, none in [40,50)."""
    import pyBigWig

    path = tmp_path / "cov.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 50)])
    bw.addEntries(["chr1", "chr1", "chr1"], [0, 10, 30], ends=[10, 20, 40], values=[1.0, 3.0, 5.0])
    bw.close()
    return path


def _targets(path, rows):
    """rows: (file, clip, clip_soft, scale, sum_stat)."""
    lines = ["index\tidentifier\tfile\tclip\tclip_soft\tscale\tsum_stat\tdescription"]
    lines += [f"{i}\tT{i}\t{f}\t{c}\t{cs}\t{s}\t{st}\tx" for i, (f, c, cs, s, st) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_pooling_statistics_and_edges(bigwig):
    # bins of 10 bp from -10: off the chromosome, 1s, 3s, no data, 5s, no data
    with open_coverage([bigwig]) as cov:
        np.testing.assert_array_equal(cov.read("chr1", -10, 6, 10)[:, 0], [0, 10, 30, 0, 50, 0])
        # past the chromosome end counts as 0 too
        np.testing.assert_array_equal(cov.read("chr1", 40, 2, 10)[:, 0], [0, 0])
    with open_coverage([bigwig], sum_stat="mean") as cov:
        np.testing.assert_array_equal(cov.read("chr1", 0, 4, 10)[:, 0], [1, 3, 0, 5])
        np.testing.assert_array_equal(cov.read("chr1", 5, 2, 10)[:, 0], [2, 1.5])  # mixed bins
    with open_coverage([bigwig], sum_stat="median") as cov:
        np.testing.assert_array_equal(cov.read("chr1", 0, 4, 10)[:, 0], [1, 3, 0, 5])
    with open_coverage([bigwig], sum_stat="max") as cov:
        np.testing.assert_array_equal(cov.read("chr1", 15, 2, 10)[:, 0], [3, 5])


def test_median_is_numpy_median(bigwig):
    with open_coverage([bigwig], sum_stat="median") as cov:
        got = cov.read("chr1", 5, 4, 10)[:, 0]
    base = np.array([1.0] * 10 + [3.0] * 10 + [0.0] * 10 + [5.0] * 10 + [0.0] * 10)
    np.testing.assert_array_equal(got, [np.median(base[s:s + 10]) for s in (5, 15, 25, 35)])


def test_clip_soft_clip_scale_in_basenji_order(bigwig, tmp_path):
    t = tmp_path / "targets.txt"
    _targets(t, [(bigwig, 1e9, 20, 2, "sum"), (bigwig, 22, 20, 0.5, "sum"), ("cov.bw", 1e9, 1e9, 1, "")])
    with open_coverage(t) as cov:
        y = cov.read("chr1", 0, 4, 10).astype(np.float64)
    sums = np.array([10.0, 30.0, 0.0, 50.0])
    soft = np.where(sums > 20, 20 + np.sqrt(np.maximum(sums - 20, 0)), sums)
    np.testing.assert_allclose(y[:, 0], 2 * soft, rtol=1e-6)                  # soft clip, then scale
    np.testing.assert_allclose(y[:, 1], 0.5 * np.minimum(soft, 22), rtol=1e-6)  # soft clip, clip, scale
    np.testing.assert_array_equal(y[:, 2], sums)  # empty sum_stat: sum; a relative path: beside the file
    # a file without clip / clip_soft / scale / sum_stat columns: summed, untransformed
    t.write_text(f"index\tidentifier\tfile\tdescription\n0\tA\t{bigwig}\tx\n")
    with open_coverage(t) as cov:
        np.testing.assert_array_equal(cov.read("chr1", 0, 4, 10)[:, 0], sums)


def test_bad_rows_and_chromosomes(bigwig, tmp_path):
    t = tmp_path / "targets.txt"
    _targets(t, [(bigwig, 32, 32, 1, "sum"), ("", 32, 32, 1, "sum")])
    with pytest.raises(ValueError, match=r"targets.txt: line 3: no bigWig"):
        coverage_tracks(t)
    _targets(t, [(bigwig, 32, 32, 1, "peak")])
    with pytest.raises(ValueError, match=r"line 2: sum_stat 'peak'"):
        coverage_tracks(t)
    _targets(t, [(bigwig, -1, 32, 1, "sum")])
    with pytest.raises(ValueError, match=r"line 2: clip -1.0 is negative"):
        coverage_tracks(t)
    _targets(t, [(tmp_path / "none.bw", 32, 32, 1, "sum")])
    with pytest.raises(ValueError, match=r"line 2: .*none.bw: bigWig file not found"):
        open_coverage(t)
    with pytest.raises(ValueError, match="sum_stat 'total'"):
        coverage_tracks([bigwig], sum_stat="total")
    with open_coverage([bigwig]) as cov:
        with pytest.raises(ValueError, match="no chromosome 'chr2'"):
            cov.read("chr2", 0, 1, 10)
        with pytest.raises(ValueError, match=r"bed: line 4: no chromosome 'chr2' in the bigWig"):
            from basenji2_fast.genome import Region

            cov.check_chroms([Region("chr1", 0, 1, "a", line=3), Region("chr2", 0, 1, "b", line=4)], "x.bed")


def test_a_file_that_is_not_a_bigwig_is_one_clean_line(bigwig, tmp_path, capfd):
    """Checked by its magic number before libBigWig sees it (which prints its own lines to
    stderr); a real bigWig in either byte order opens."""
    from basenji2_fast.coverage import open_bigwig

    fake = tmp_path / "fake.bw"
    fake.write_text(">chr1\nACGT\n")
    with pytest.raises(ValueError, match=r"fake.bw: not a bigWig file"):
        open_bigwig(fake)
    assert capfd.readouterr().err == ""
    open_bigwig(bigwig).close()
