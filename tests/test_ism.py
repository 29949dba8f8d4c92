"""sat (saturation mutagenesis) against basenji_sat_bed.py, incremental vs naive mutants,
bad input and N in the mutated stretch."""
import argparse
import re

import h5py
import numpy as np
import pytest

from basenji2_fast import dna
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.workflows.ism import _stat, add_sat_subcommand, mutation_range, saturation_mutagenesis
from conftest import fixture_path, recording_task

# run -> our options, as in each out/sat_*/cmd.txt (-f genome.fa ... sat.bed)
RUNS = {
    "sat_default": ["-l", "20"],
    "sat_allstats": ["-l", "20", "--stats", "sum,center,scd"],
    "sat_allstats_rc_shifts": ["-l", "20", "--stats", "sum,center,scd", "--rc", "--shifts", "0,1"],
    "sat_targets": ["-l", "20", "-t", "targets.txt"],
    "sat_up5_down12": ["-u", "5", "-d", "12"],
}


def run_cli(argv):
    """sat through its own argparse subcommand (as cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    add_sat_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _sat(visible, out, opts, bed="sat.bed"):
    opts = [str(visible / o) if (visible / o).is_file() else o for o in opts]
    return run_cli(["sat", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                    str(visible / bed) if (visible / bed).is_file() else str(bed), "-o", str(out), "-q"] + opts)


def _tolerance(ref16: np.ndarray) -> np.ndarray:
    """1e-4 (README.txt section 8), or one float16 ulp of basenji's stored value where that
    is larger (values >= 0.125 have an ulp of 1.2e-4): the scores are stored as float16, so
    float32 numbers 1e-6 apart can round to neighbouring float16 values."""
    ulp = np.spacing(np.abs(ref16).astype(np.float16)).astype(np.float64)
    return np.maximum(1e-4, ulp)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_sat_matches_basenji(run, visible, tmp_path):
    assert _sat(visible, tmp_path, RUNS[run]) == 0
    with h5py.File(tmp_path / "scores.h5") as ours, h5py.File(visible / "out" / run / "scores.h5") as theirs:
        assert sorted(ours) == sorted(theirs)
        for k in theirs:
            a, b = ours[k][()], theirs[k][()]
            assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, b.dtype, a.shape, b.shape)
            if b.dtype == np.float16:
                d = np.abs(a.astype(np.float64) - b.astype(np.float64))
                assert (d <= _tolerance(b)).all(), (k, d.max())
                # each (position, track) sums to ~0 over the four bases
                assert np.abs(a.astype(np.float64).sum(axis=2)).max() < 2e-3
            else:
                assert np.array_equal(a, b), k


def test_api_matches_cli_and_coordinates(model, visible, tmp_path):
    """saturation_mutagenesis on an interval == the CLI's row for that BED region."""
    assert _sat(visible, tmp_path, ["-l", "20", "--stats", "sum,scd"]) == 0
    with h5py.File(tmp_path / "scores.h5") as h5:
        for i, (chrom, s, e, strand) in enumerate([("chr1", 203077, 203097, "+"), ("chr2", 31475, 31495, "-")]):
            r = saturation_mutagenesis(model, f"{chrom}:{s}-{e}", fasta=visible / "genome.fa", mut_len=20,
                                       stats=("sum", "scd"), strand=strand)
            assert r["sum"].shape == (20, 4, 12) and r["seqs"].shape == (20, 4)
            assert np.array_equal(r["sum"].astype(np.float16), h5["sum"][i])
            assert np.array_equal(r["scd"].astype(np.float16), h5["scd"][i])
            assert np.array_equal(r["seqs"], h5["seqs"][i])
            assert (r["chr"], r["strand"], r["start"], r["end"]) == \
                (h5["chr"][i].decode(), h5["strand"][i].decode(), h5["start"][i], h5["end"][i])
            # '-': stretch index k is genomic end-1-k, complemented
            g = fetch(open_fasta(visible / "genome.fa"), chrom, r["start"], r["end"])
            codes = dna.encode(g)
            if strand == "-":
                codes = dna.revcomp(codes)
            assert np.array_equal(r["seqs"].argmax(1), codes)


def test_mutation_range_as_basenji():
    assert mutation_range(16384, 20) == (8182, 20)
    assert mutation_range(16384, None, 5, 12) == (8187, 17)
    assert mutation_range(16384, 1) == (8192, 1)


def test_incremental_equals_naive(model):
    """Every score comes from predict_substitutions; it must equal Model.predict of the
    mutated windows bit for bit (random positions, with and without an ensemble), and the
    statistics computed from naive passes must equal saturation_mutagenesis's."""
    rng = np.random.default_rng(7)
    L = model.seq_length
    codes = rng.integers(0, 4, L).astype(np.uint8)
    pos = np.sort(rng.choice(L, 12, replace=False))
    alts = ((codes[pos] + rng.integers(1, 4, pos.size)) % 4).astype(np.uint8)
    for kw in ({}, {"rc": True, "shifts": (0, 1)}, {"tracks": [1, 5, 9]}):
        ref, alt = model.predict_substitutions(codes, pos, alts, **kw)
        assert np.array_equal(ref, model.predict(codes[None], **kw)[0])
        muts = np.repeat(codes[None], pos.size, axis=0)
        muts[np.arange(pos.size), pos] = alts
        assert np.array_equal(alt, model.predict(muts, **kw)), kw

    first, n = 8000, 6
    r = saturation_mutagenesis(model, codes, mut_start=first, mut_len=n, stats=("sum", "center", "scd"))
    P_ref = model.predict(codes[None])[0]
    for s in ("sum", "center", "scd"):
        want = np.zeros((n, 4, 12), np.float32)
        for k in range(n):
            for b in range(4):
                mut = codes.copy()
                mut[first + k] = b
                P = P_ref if b == codes[first + k] else model.predict(mut[None])[0]
                want[k, b] = _stat(s, P, P_ref)
        want -= want.mean(axis=1, keepdims=True)
        assert np.array_equal(r[s], want), s


def test_n_in_the_stretch(model):
    """An N in the mutated stretch has no reference base: all four bases are substituted
    there (4 mutants), its seqs row is all False and its scores are the four mutants'
    statistics minus their mean; N is encoded as zeros (never randomly), so runs repeat."""
    rng = np.random.default_rng(3)
    L = model.seq_length
    codes = rng.integers(0, 4, L).astype(np.uint8)
    first, n = 8190, 4
    codes[first + 1] = 4  # N
    r = saturation_mutagenesis(model, codes, mut_start=first, mut_len=n, stats=("sum", "scd"))
    assert not r["seqs"][1].any() and r["seqs"][[0, 2, 3]].sum() == 3
    P_ref = model.predict(codes[None])[0]
    want = np.zeros((4, 12), np.float32)
    for b in range(4):
        mut = codes.copy()
        mut[first + 1] = b
        want[b] = _stat("sum", model.predict(mut[None])[0], P_ref)
    want -= want.mean(axis=0)
    assert np.array_equal(r["sum"][1], want)
    assert np.isfinite(r["scd"]).all() and (r["scd"][1].max(axis=0) > 0).all()
    again = saturation_mutagenesis(model, codes, mut_start=first, mut_len=n, stats=("sum", "scd"))
    assert np.array_equal(again["sum"], r["sum"])


def test_stretch_too_long_is_a_one_line_error(visible, tmp_path, capsys):
    assert _sat(visible, tmp_path / "o", ["-l", "20000"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("basenji2-fast sat: error:") and "16,384" in err
    assert not (tmp_path / "o" / "scores.h5").exists()


@pytest.mark.parametrize("line", ["chr1\t100\n", "chr1\tx\t200\tr\t0\t+\n", "chr1\t300\t200\n"])
def test_malformed_bed_is_a_one_line_error(visible, tmp_path, capsys, line):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t203077\t203097\tok\t0\t+\n" + line)
    assert _sat(visible, tmp_path / "o", ["-l", "4"], bed=bed) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("basenji2-fast sat: error:") and "line 2" in err


@pytest.mark.parametrize("opts, what", [(["--stats", "sum,sad"], "unknown statistic"),
                                        (["-l", "4", "-u", "2", "-d", "2"], "not both"),
                                        (["-u", "3"], "both")])
def test_bad_options_are_one_line_errors(visible, tmp_path, capsys, opts, what):
    assert _sat(visible, tmp_path / "o", opts) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and what in err


def test_missing_contig_names_the_bed_line(visible, tmp_path, capsys):
    bed = tmp_path / "x.bed"
    bed.write_text("chrZ\t100\t120\tz\t0\t+\n")
    assert _sat(visible, tmp_path / "o", ["-l", "4"], bed=bed) == 1
    err = capsys.readouterr().err.strip()
    assert "line 1" in err and "chrZ" in err


def test_an_interrupted_sat_resumes_from_its_committed_regions(monkeypatch, tmp_path):
    """One process, no shards: each region is committed as it finishes, so a rerun after an
    interrupt computes only the rest, and scores.h5 is byte-identical to an uninterrupted run's."""
    from basenji2_fast.model import load
    from basenji2_fast.workflows import ism as ism_module

    model = load(fixture_path("tf-small", "model.h5"), threads=1)
    genome, bed = fixture_path("basenji-cli", "visible", "genome.fa"), fixture_path("basenji-cli", "visible",
                                                                                    "sat.bed")
    one = ism_module.sat_bed(model, genome, bed, tmp_path / "one", mut_len=2, progress=False)
    real, calls = ism_module.region_task, []

    monkeypatch.setattr(ism_module, "region_task", recording_task(real, calls, die_at=2))
    out = tmp_path / "two"
    with pytest.raises(KeyboardInterrupt):
        ism_module.sat_bed(model, genome, bed, out, mut_len=2, progress=False)
    assert not (out / "scores.h5").exists()
    assert sorted(p.name for p in (out / ".sat_partial").glob("*.npz")) == ["0.npz"]

    calls.clear()
    monkeypatch.setattr(ism_module, "region_task", recording_task(real, calls))
    ism_module.sat_bed(model, genome, bed, out, mut_len=2, progress=False)
    assert calls and "0.npz" not in calls  # only the regions not committed
    assert (out / "scores.h5").read_bytes() == one.read_bytes()
    assert not (out / ".sat_partial").exists()


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(mut_len=2.5), TypeError, "mut_len=2.5"),
    (dict(mut_len="4"), TypeError, "mut_len='4'"),
    (dict(mut_len=True), TypeError, "mut_len=True"),
    (dict(mut_len=0), ValueError, "mut_len=0"),
    (dict(mut_len=4, mut_start=1.5), TypeError, "mut_start=1.5"),
])
def test_saturation_mutagenesis_checks_its_arguments(model, kwargs, exc, words):
    codes = np.zeros(model.seq_length, np.uint8)
    with pytest.raises(exc, match=re.escape(words)):
        saturation_mutagenesis(model, codes, **kwargs)


def test_saturation_mutagenesis_interval_or_sequence(model, visible):
    with pytest.raises(ValueError, match="a genome interval: give fasta="):
        saturation_mutagenesis(model, "chr1:1,000-1,020", mut_len=4)
    seq = "A" * model.seq_length
    with pytest.raises(ValueError) as e:
        saturation_mutagenesis(model, seq, fasta=visible / "genome.fa", mut_len=4)
    assert "not AAAA" in str(e.value) and len(str(e.value)) < 200
