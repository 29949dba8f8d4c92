"""User-facing defects of the workflows, one test each: a bad input gets one line
``basenji2-fast COMMAND: error: ...`` (or one warning) naming what is wrong, exit status 1,
and leaves nothing behind. Driven in-process through ``basenji2_fast.cli.main`` on a small
model converted from the tf-small fixture and the CLI fixture genome."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, fixture_path, one_line
from basenji2_fast.cli import main


@pytest.fixture(scope="module")
def small(converted_small) -> Path:
    return converted_small




# ----------------------------------------------------------------------------------------------
# 1. --scheduler FILE.json: checked before OUT_DIR is made (missing: waited minutes; another
#    JSON: a traceback from inside Dask), for every distributed command
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["predict-genome", "predict-bed", "sad", "sat"])
@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_scheduler_file_checked_before_the_output(small, genome, visible, tmp_path, capsys, monkeypatch,
                                                  command, kind):
    monkeypatch.chdir(tmp_path)
    sched = tmp_path / "sched.json"
    if kind == "garbage":
        sched.write_text('{"foo": 1}\n')
    inputs = {"predict-genome": ["-f", genome], "predict-bed": ["-f", genome, visible / "regions.bed"],
              "sad": ["-f", genome, visible / "variants.vcf"],
              "sat": ["-f", genome, visible / "sat.bed"]}[command]
    out = tmp_path / "out"
    rc, err = cli(capsys, command, "-m", small, *inputs, "-o", out, "--scheduler", sched, "-q")
    assert rc == 1
    one_line(err, f"basenji2-fast {command}: error:", "sched.json",
             "scheduler file not found" if kind == "missing" else "not a Dask scheduler file")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 2. A shift beyond the window is refused before the job record is written (sad wrote
#    .sad_partial/job.json, so the corrected rerun was refused as "another job")
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["sad", "predict-genome", "predict-bed", "sat"])
def test_far_shift_refused_before_the_job_record(small, genome, visible, tmp_path, capsys, command):
    inputs = {"predict-genome": ["--chroms", "chr1"], "predict-bed": [visible / "regions.bed"],
              "sad": [visible / "variants.vcf"], "sat": [visible / "sat.bed", "-l", "2"]}[command]
    out = tmp_path / "out"
    rc, err = cli(capsys, command, "-m", small, "-f", genome, *inputs, "-o", out, "--shifts", "100000", "-q")
    assert rc == 1
    one_line(err, f"basenji2-fast {command}: error:", "shift 100,000 moves the whole")
    assert not out.exists(), sorted(out.rglob("*"))
    if command == "sad":  # the corrected command line runs
        rc, err = cli(capsys, command, "-m", small, "-f", genome, *inputs, "-o", out, "--shifts", "0", "-q")
        assert rc == 0, err
        assert (out / "sad.h5").is_file()


# ----------------------------------------------------------------------------------------------
# 3. predict-bed -b with a chrom sizes file that lacks a BED contig names the BED line (the
#    message began with the Python list of every region)
# ----------------------------------------------------------------------------------------------
def test_predict_bed_chrom_sizes_missing_contig_names_the_bed_line(small, genome, visible, tmp_path, capsys):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("".join(line for line in (visible / "chrom.sizes").read_text().splitlines(True)
                             if not line.startswith("chrX")))
    bed = visible / "regions.bed"
    line_x = next(i for i, line in enumerate(bed.read_text().splitlines(), 1) if line.startswith("chrX"))
    out = tmp_path / "out"
    rc, err = cli(capsys, "predict-bed", "-m", small, "-f", genome, bed, "-o", out, "-b", "0", "-g", sizes, "-q")
    assert rc == 1
    msg = one_line(err, f"{bed}: line {line_x} (chrX:", "no chromosome 'chrX' in", str(sizes))
    assert "Region(" not in msg
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 4. test: constant observed coverage warns once naming the track; the summary means are over
#    the defined tracks (it printed NumPy's "Mean of empty slice" and "mean r2 -inf")
# ----------------------------------------------------------------------------------------------
def test_constant_observed_coverage_warns_once_and_means_skip_it(small, genome, tmp_path, capsys):
    import warnings

    from basenji2_fast import load
    from synthetic_coverage import chrom_sizes, tiling_regions, write_bigwig, write_targets

    model = load(small, threads=1)
    sizes = chrom_sizes(genome)
    regions = tiling_regions(model, sizes)
    shape = (len(regions), model.n_bins)
    write_bigwig(tmp_path / "flat.bw", sizes, model, regions, np.full(shape, 2.0))
    write_bigwig(tmp_path / "noise.bw", sizes, model, regions, np.random.default_rng(0).exponential(2.0, shape))
    bed = tmp_path / "tiles.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    write_targets(tmp_path / "both.txt", [("FLAT", "flat.bw", 1e9, 1, "mean", "flat"),
                                          ("NOISE", "noise.bw", 1e9, 1, "mean", "noise")], index=[0, 1])
    write_targets(tmp_path / "flat.txt", [("FLAT", "flat.bw", 1e9, 1, "mean", "flat")], index=[0])
    def run(targets, out):
        """(exit status, stdout, [warning messages]) of the test command, every warning recorded."""
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            rc = main([str(a) for a in ("test", "-m", small, "-f", genome, bed, "-t", targets, "-o", out, "-q")])
        return rc, capsys.readouterr().out, [str(w.message) for w in seen]

    rc, out, seen = run(tmp_path / "both.txt", tmp_path / "acc.tsv")
    assert rc == 0
    one_line(seen, "observed coverage is constant over the regions", "1 of 2 tracks", "FLAT",
             "R and R^2 undefined")  # and none of NumPy's
    rows = [line.split("\t") for line in (tmp_path / "acc.tsv").read_text().splitlines()[1:]]
    assert rows[0][1:3] == ["nan", "nan"] and rows[0][3] == "FLAT"
    r_noise, r2_noise = float(rows[1][1]), float(rows[1][2])
    assert np.isfinite(r_noise) and np.isfinite(r2_noise)
    assert f"mean pearsonr {r_noise:.4f} (over 1 of 2 tracks)" in out and "inf" not in out, out

    rc, out, seen = run(tmp_path / "flat.txt", tmp_path / "acc3.tsv")  # no track defined
    assert rc == 0
    one_line(seen, "constant", "FLAT")
    assert "mean pearsonr nan" in out and "inf" not in out, out


# ----------------------------------------------------------------------------------------------
# 5. merge: a shard folder that does not exist is "not found" (it was "no shard.json: not a
#    shard folder"); rerunning a finished merge leaves no gathered task files behind
# ----------------------------------------------------------------------------------------------
def test_merge_of_a_missing_folder_says_not_found(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x\n")
    rc, err = cli(capsys, "merge", "nonexist", "afile", "-o", "m")
    assert rc == 1
    one_line(err, "basenji2-fast merge: error: nonexist: not found")
    rc, err = cli(capsys, "merge", "afile", "-o", "m")
    assert rc == 1
    one_line(err, "basenji2-fast merge: error: afile: not a folder")
    assert not (tmp_path / "m").exists()


def test_rerun_merge_of_a_finished_job_leaves_no_task_files(small, genome, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        rc, err = cli(capsys, "predict-genome", "-m", small, "-f", genome, "--chroms", "chr2", "--tracks", "0",
                      "-o", f"sh{i}", "--shard", f"{i}/2", "-q")
        assert rc == 0, err
    for _ in range(2):
        capsys.readouterr()
        assert main(["merge", "sh0", "sh1", "-o", "m"]) == 0
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["0_t0.bw", "manifest.json"]
    assert "already holds this finished job" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# 6, 7. VCF headers and damaged gzip streams: a #CHROM line short of the 8 columns is named as
#    such (it said "no header ending in a #CHROM line"); a truncated .vcf.gz names the line
#    where decompression fails (it said line 6 for a stream that broke after ~1,000 lines)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chrom_line, words", [
    ("#CHROM\tPOS\tID\tREF\tALT", "(it has CHROM POS ID REF ALT)"),
    ("#CHROM POS ID REF ALT QUAL FILTER INFO", "(it is not tab-separated)"),
])
def test_vcf_chrom_line_short_of_the_required_columns(small, genome, tmp_path, capsys, chrom_line, words):
    vcf = tmp_path / "short.vcf"
    vcf.write_text(f"##fileformat=VCFv4.2\n{chrom_line}\nchr1\t20307\trs1\tT\tA\t.\tPASS\t.\n")
    out = tmp_path / "out"
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", out, "-q")
    assert rc == 1
    one_line(err, f"{vcf}: line 2: the #CHROM line lacks the 8 required tab-separated columns "
                  "CHROM POS ID REF ALT QUAL FILTER INFO", words)
    assert not out.exists()


def test_damaged_gzip_vcf_names_the_line_where_it_breaks(small, genome, tmp_path, capsys):
    import zlib

    rng = np.random.default_rng(1)
    text = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"chr1\t{20000 + i}\trs{rng.integers(1, 10**9)}\tT\tA\t.\tPASS\t.\n" for i in range(20000))
    full = gzip.compress(text.encode())
    damaged = full[:8000]
    whole_lines = zlib.decompressobj(31).decompress(damaged).count(b"\n")
    assert 500 < whole_lines < 5000
    vcf = tmp_path / "t.vcf.gz"
    vcf.write_bytes(damaged)
    out = tmp_path / "out"
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", out, "-q")
    assert rc == 1
    one_line([e for e in err if "warning: skipping" not in e],
             f"{vcf}: line {whole_lines + 1}: the compressed file is damaged or truncated")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 8. sat-plot: the default (all regions, all tracks) draws the first 16 panels with a warning
#    (it failed: "24 panels: plot at most 16"); a region given twice is refused
# ----------------------------------------------------------------------------------------------
def test_sat_plot_default_draws_the_first_panels_that_fit(tmp_path, capsys):
    import warnings

    from basenji2_fast import plots

    h5 = fixture_path("basenji-cli", "visible", "out", "sat_default", "scores.h5")  # 2 regions x 12 tracks

    def run(out, *args):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            rc = plots.main(["sat-plot", str(h5), "-o", str(out), *args])
        assert rc == 0 and out.is_file(), capsys.readouterr().err
        return [str(w.message) for w in seen]

    one_line(run(tmp_path / "p.png"), "24 panels", "drawing the first 12", "regions 0, tracks 0-11",
             "--regions and --tracks")
    one_line(run(tmp_path / "q.png", "--tracks", "0,1,2,3,4,5,6,7,8"), "18 panels", "drawing the first 9",
             "regions 0,")
    rc, err = cli(capsys, "sat-plot", h5, "-o", tmp_path / "r.png", "--regions", "0,0", "--tracks", "0")
    assert rc == 1
    one_line(err, "basenji2-fast sat-plot: error: regions: region 0 given twice")
    assert not (tmp_path / "r.png").exists()
