"""predict-bed against basenji_predict_bed.py, strand-pair ensembles, and region edge cases."""
import argparse

import h5py
import numpy as np
import pytest

from basenji2_fast import dna
from basenji2_fast.genome import fetch, open_fasta, parse_interval, read_bed
from basenji2_fast.windows import site_bins, window
from basenji2_fast.workflows.regions import add_predict_bed_subcommand, predict_regions
from basenji2_fast.targets import read_targets, select_tracks
from conftest import fixture_path

# basenji 2021 replaces each N with a random base, so only windows without N (inside the
# chromosome, no N run) are comparable: regions 0, 1, 6, 7 of regions.bed (README.txt
# section 8, regions_design.tsv); every region of regions_interior.bed.
N_FREE = {"regions.bed": [0, 1, 6, 7], "regions_interior.bed": [0, 1, 2, 3]}

# run -> (BED, options) as in each run's cmd.txt
RUNS = {
    "predict_targets": ("regions.bed", ["-t", "targets.txt"]),
    "predict_targets_sub": ("regions.bed", ["-t", "targets_sub.txt"]),
    "predict_sum_l2048": ("regions.bed", ["-s", "-l", "2048"]),
    "predict_rc_shifts": ("regions.bed", ["--rc", "--shifts", "0,1"]),
    "predict_bigwig_interior": ("regions_interior.bed", ["-b", "0,3", "-g", "chrom.sizes"]),
}


def run_cli(argv):
    """predict-bed through its own argparse subcommand (as cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    add_predict_bed_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _visible_args(visible, opts):
    """Options naming fixture files become their paths."""
    return [str(visible / o) if (visible / o).is_file() else o for o in opts]


# Against basenji_predict_bed.py ------------------------------------------------------------

@pytest.mark.parametrize("run", sorted(RUNS))
def test_predict_bed_matches_basenji(run, visible, tmp_path):
    bed, opts = RUNS[run]
    rc = run_cli(["predict-bed", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(visible / bed), "-o", str(tmp_path), "-q"] + _visible_args(visible, opts))
    assert rc == 0
    rows = N_FREE[bed]
    with h5py.File(tmp_path / "predict.h5") as ours, h5py.File(visible / "out" / run / "predict.h5") as theirs:
        assert sorted(ours) == sorted(theirs)  # the same datasets, no more
        for key in theirs:
            assert ours[key].shape == theirs[key].shape and ours[key].dtype == theirs[key].dtype, key
        for key in ("chrom", "start", "end"):  # every region's coordinates, N or not
            np.testing.assert_array_equal(ours[key][:], theirs[key][:])
        a = ours["preds"][:].astype(np.float64)[rows]
        b = theirs["preds"][:].astype(np.float64)[rows]
    # float16 storage: at most one unit in the last place (2^-11 relative) of either value;
    # values here reach ~3 (sums ~40 with -s)
    assert np.all(np.abs(a - b) <= 1e-3 * np.abs(b) + 1e-3), np.max(np.abs(a - b))


def test_bigwigs_match_basenji(visible, tmp_path):
    import pyBigWig

    rc = run_cli(["predict", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(visible / "regions_interior.bed"), "-o", str(tmp_path), "-q", "-b", "0,3",
                  "-g", str(visible / "chrom.sizes")])
    assert rc == 0
    theirs_dir = visible / "out" / "predict_bigwig_interior" / "bigwig"
    names = sorted(p.name for p in theirs_dir.iterdir())
    assert sorted(p.name for p in (tmp_path / "bigwig").iterdir()) == names
    for name in names:
        theirs, ours = pyBigWig.open(str(theirs_dir / name)), pyBigWig.open(str(tmp_path / "bigwig" / name))
        assert ours.chroms() == theirs.chroms()
        for chrom in theirs.chroms():
            a, b = ours.intervals(chrom) or (), theirs.intervals(chrom) or ()
            assert [iv[:2] for iv in a] == [iv[:2] for iv in b]
            # float32 predictions, not rounded to float16
            assert all(abs(x[2] - y[2]) <= 1e-4 for x, y in zip(a, b))
    # a rerun with other -b tracks leaves only its own bigWigs (not the first run's beside them)
    rc = run_cli(["predict", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(visible / "regions_interior.bed"), "-o", str(tmp_path), "-q", "-b", "1",
                  "-g", str(visible / "chrom.sizes")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "bigwig").iterdir()) == sorted(n.replace("_t0", "_t1") for n in names
                                                                             if "_t0" in n)


def test_predict_regions_api_matches_basenji_sums(model, visible):
    regions = read_bed(visible / "regions.bed")
    rows = N_FREE["regions.bed"]
    sums = predict_regions(model, visible / "genome.fa", [tuple(regions[i][:3]) for i in rows],
                           site_length=2048, site_sum=True)
    assert sums.dtype == np.float32 and sums.shape == (4, 12)
    with h5py.File(visible / "out" / "predict_sum_l2048" / "predict.h5") as h5:
        ref = h5["preds"][:].astype(np.float64)[rows]
    assert np.all(np.abs(sums - ref) <= 1e-3 * np.abs(ref) + 1e-3)
    # and the full site equals the bins the sum was taken over
    full = predict_regions(model, visible / "genome.fa", [regions[i] for i in rows])
    b0, b1 = site_bins(model, 2048)
    assert (b0, b1) == (40, 56)
    np.testing.assert_allclose(full[:, b0:b1].sum(axis=1), sums, rtol=1e-5)


def test_targets_sub_selects_head_columns(model, visible):
    plain = predict_regions(model, visible / "genome.fa", visible / "regions_interior.bed")
    sub = predict_regions(model, visible / "genome.fa", visible / "regions_interior.bed",
                          targets=visible / "targets_sub.txt", tracks="CHIP:")
    np.testing.assert_allclose(sub, plain[:, :, [2, 10]], rtol=1e-6, atol=1e-7)


# Strand pairs and reverse-complement ensembles ------------------------------------------------

def _random_codes(model, n, seed):
    return np.random.default_rng(seed).integers(0, 4, (n, model.seq_length)).astype(np.uint8)


def test_rc_ensemble_swaps_strand_pairs(model):
    x = _random_codes(model, 2, 1)
    tracks, pair = [5, 0, 3, 9], [1, 0, 2, 3]  # 5<->0 a strand pair; 3 and 9 unstranded
    got = model.predict(x, tracks=tracks, rc=True, strand_pair=pair)
    fwd = model.predict(x, tracks=tracks)
    rev = model.predict(dna.revcomp(x), tracks=tracks)
    manual = (fwd + rev[:, ::-1][:, :, pair]) / 2  # flip bins back, then swap the partners
    np.testing.assert_allclose(got, manual, rtol=1e-6, atol=1e-7)
    unpaired = model.predict(x, tracks=tracks, rc=True)
    assert not np.allclose(got[..., :2], unpaired[..., :2])  # the swap changed the paired tracks
    np.testing.assert_array_equal(got[..., 2:], unpaired[..., 2:])
    # without rc there is nothing to swap
    np.testing.assert_array_equal(model.predict(x, tracks=tracks, strand_pair=pair), fwd)


def test_rc_ensemble_is_strand_symmetric(model):
    """E(x) = (f(x) + S R f(rc x)) / 2, with R the bin flip and S the (involutive) pair swap,
    so E(rc x) = S R E(x): the ensemble of the other strand is the same prediction read
    from the other strand."""
    x = _random_codes(model, 2, 2)
    pair = [1, 0, 2, 4, 3, 5, 6, 7, 8, 9, 11, 10]
    e = model.predict(x, rc=True, strand_pair=pair)
    e_rc = model.predict(dna.revcomp(x), rc=True, strand_pair=pair)
    np.testing.assert_allclose(e_rc, e[:, ::-1][:, :, pair], rtol=1e-6, atol=1e-7)


def test_strand_pair_from_targets_file(model, visible, tmp_path):
    lines = (visible / "targets.txt").read_text().splitlines()
    pairs = [1, 0, 2, 3, 4, 5, 6, 11, 8, 9, 10, 7]  # as index values (= rows here)
    text = "\n".join([lines[0] + "\tstrand_pair"] + [f"{ln}\t{p}" for ln, p in zip(lines[1:], pairs)]) + "\n"
    (tmp_path / "targets_sp.txt").write_text(text)
    bed = visible / "regions_interior.bed"
    got = predict_regions(model, visible / "genome.fa", bed, targets=tmp_path / "targets_sp.txt",
                          tracks="11,0,1,7", rc=True)
    sel = select_tracks(read_targets(tmp_path / "targets_sp.txt"), "11,0,1,7", 12)
    assert sel.columns == [11, 0, 1, 7] and sel.strand_pair == [3, 2, 1, 0]
    fa = open_fasta(visible / "genome.fa")
    x = np.stack([dna.encode(fetch(fa, r.chrom, *window(r, model.seq_length))) for r in read_bed(bed)])
    fwd = model.predict(x, tracks=sel.columns)
    rev = model.predict(dna.revcomp(x), tracks=sel.columns)[:, ::-1][:, :, sel.strand_pair]
    np.testing.assert_allclose(got, (fwd + rev) / 2, rtol=1e-6, atol=1e-7)


def test_rc_refuses_a_stranded_track_without_its_partner(model, visible, tmp_path):
    """With rc a track takes its partner's reverse-complement prediction: a selection without
    the partner would give a track values that depend on what else is selected."""
    lines = (visible / "targets.txt").read_text().splitlines()
    pairs = [1, 0, 2, 3, 4, 5, 6, 11, 8, 9, 10, 7]
    text = "\n".join([lines[0] + "\tstrand_pair"] + [f"{ln}\t{p}" for ln, p in zip(lines[1:], pairs)]) + "\n"
    (tmp_path / "targets_sp.txt").write_text(text)
    bed = visible / "regions_interior.bed"
    sel = select_tracks(read_targets(tmp_path / "targets_sp.txt"), "11,2", 12)
    assert sel.unpaired == [0] and sel.strand_pair == [0, 1]
    with pytest.raises(ValueError, match=r"targets_sp.txt: track .* \(row 11\) is stranded but its strand partner "
                                         r"is not selected"):
        predict_regions(model, visible / "genome.fa", bed, targets=tmp_path / "targets_sp.txt", tracks="11,2",
                        rc=True)
    # without rc, or with both strands, it predicts
    predict_regions(model, visible / "genome.fa", bed, targets=tmp_path / "targets_sp.txt", tracks="11,2")
    predict_regions(model, visible / "genome.fa", bed, targets=tmp_path / "targets_sp.txt", tracks="11,7,2",
                    rc=True)
    # predict-genome refuses it too, before it makes its output folder
    from basenji2_fast.workflows.genome_tiling import predict_genome
    with pytest.raises(ValueError, match=r"row 11\) is stranded but its strand partner is not selected"):
        predict_genome(model, visible / "genome.fa", tmp_path / "pg", tracks=sel, rc=True, chroms=["chrX"],
                       progress=False)
    assert not (tmp_path / "pg").exists()
    # a strand_pair naming no row's index is an error naming the line
    (tmp_path / "bad_sp.txt").write_text(text.replace("\t11\n", "\t12\n", 1))
    with pytest.raises(ValueError, match=r"bad_sp.txt: line 9: strand_pair 12 is no row's index"):
        read_targets(tmp_path / "bad_sp.txt")


def test_strand_pair_is_validated(model):
    x = _random_codes(model, 1, 3)
    with pytest.raises(ValueError, match="expected 2 integers"):
        model.predict(x, tracks=[0, 1], rc=True, strand_pair=[1, 0, 2])
    with pytest.raises(ValueError, match="0..1"):
        model.predict(x, tracks=[0, 1], rc=True, strand_pair=[1, 2])


# Chromosome ends, missing contigs, intervals ---------------------------------------------------

def test_regions_past_contig_ends_are_n_padded(model, visible):
    # near_chr1_start (window starts at -7272) and near_chrX_end_Ntail (window past the end)
    regions = [r for r in read_bed(visible / "regions.bed") if r.name.startswith("near_")]
    fa = open_fasta(visible / "genome.fa")
    sizes = {r.chrom: len(fa[r.chrom]) for r in regions}
    assert any(window(r, model.seq_length)[0] < 0 for r in regions)
    assert any(window(r, model.seq_length)[1] > sizes[r.chrom] for r in regions)
    for enc in ("zeros", "uniform"):
        got = predict_regions(model, fa, regions, n_encoding=enc)
        seqs = [fetch(fa, r.chrom, *window(r, model.seq_length)) for r in regions]
        assert all(len(s) == model.seq_length for s in seqs)
        np.testing.assert_array_equal(got, model.predict(seqs, n_encoding=enc))


def test_missing_contig_is_a_one_line_error_naming_the_bed_line(visible, tmp_path, capsys):
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t99613\t100514\tok\n# comment\nchrZ\t10\t20\tmissing\n")
    rc = run_cli(["predict-bed", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(bed), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "r.bed: line 3" in err and "'chrZ'" in err and err.startswith("basenji2-fast predict-bed: error:")
    assert not (tmp_path / "out" / "predict.h5").exists()


def test_predict_interval(model, visible):
    fa = open_fasta(visible / "genome.fa")
    L = model.seq_length
    # an interval of exactly seq_length bp is the window itself
    exact = model.predict_interval(visible / "genome.fa", f"chr1:{90_000:,}-{90_000 + L:,}", tracks=[3, 1])
    np.testing.assert_array_equal(exact, model.predict(fetch(fa, "chr1", 90_000, 90_000 + L), tracks=[3, 1])[0])
    # any other interval: the window centred on it, as predict_regions
    region = read_bed(visible / "regions.bed")[0]
    centred = model.predict_interval(fa, f"{region.chrom}:{region.start}-{region.end}", rc=True)
    assert centred.shape == (model.n_bins, 12)
    np.testing.assert_array_equal(centred, predict_regions(model, fa, [region], rc=True)[0])
    with pytest.raises(ValueError, match="no sequence 'chr9'"):
        model.predict_interval(fa, "chr9:1-100")


def test_parse_interval():
    assert parse_interval("chr1:1,000,000-1,131,072") == ("chr1", 1_000_000, 1_131_072)
    assert parse_interval("chrX:500") == ("chrX", 500, 501)
    for bad in ("chr1", "chr1:10-5", "chr1:a-b", "chr1:-5-10"):
        with pytest.raises(ValueError, match="interval"):
            parse_interval(bad)


def test_site_length_must_be_centred_whole_bins(model):
    assert site_bins(model, None) == (0, 96)
    assert site_bins(model, 128 * 96) == (0, 96)
    for bad in (100, 128 * 3, 128 * 98, 0):
        with pytest.raises(ValueError, match="site length"):
            site_bins(model, bad)


def test_cli_options(visible, tmp_path):
    """--shifts -1,0,1 parses (argparse would take it for an option); --target-names adds
    sad.h5-style names; the alias and the regex selector reach predict_bed."""
    rc = run_cli(["predict", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(visible / "regions_interior.bed"), "-o", str(tmp_path), "-q", "--shifts", "-1,0,1",
                  "-t", str(visible / "targets.txt"), "--tracks", "^CAGE:", "--target-names", "-l", "256"])
    assert rc == 0
    with h5py.File(tmp_path / "predict.h5") as h5:
        assert h5["preds"].shape == (4, 2, 3)
        assert list(h5["target_ids"][:]) == [b"CNhs8870", b"CNhs4308", b"CNhs0020"]
        assert h5["target_labels"][0] == b"CAGE:synthetic sample 3 (visible)"
        mid = (99613 + 100514) // 2
        assert (h5["start"][0], h5["end"][0]) == (mid - 128, mid + 128)


def test_targets_file_picks_the_head_it_fits(visible, tmp_path):
    """A merged human+mouse model: a targets file with as many rows as the mouse head has
    outputs selects that head (rows by position; its index may be a global one)."""
    from basenji2_fast.convert import merge_heads
    from basenji2_fast.formats import load_spec
    from basenji2_fast.model import Model
    from basenji2_fast.windows import resolve_tracks

    both = Model(merge_heads(load_spec(fixture_path("tf-small", "model.h5")),
                             load_spec(fixture_path("tf-small", "model_mouse.h5"))), threads=2)
    header = "index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
    rows = "".join(f"{12 + i}\t1\tm{i}\t/x\t32\t2\tmean\tDNASE:mouse {i}\n" for i in range(7))
    (tmp_path / "targets_mouse.txt").write_text(header + rows)
    head, sel = resolve_tracks(both, targets=tmp_path / "targets_mouse.txt", tracks="m6,m2")
    assert head == "mouse" and sel.columns == [6, 2]
    got = predict_regions(both, visible / "genome.fa", visible / "regions_interior.bed",
                          targets=tmp_path / "targets_mouse.txt", tracks="m6,m2")
    ref = predict_regions(both, visible / "genome.fa", visible / "regions_interior.bed", head="mouse")
    np.testing.assert_allclose(got, ref[:, :, [6, 2]], rtol=1e-6, atol=1e-7)
    assert resolve_tracks(both)[0] == "human"


def test_bigwig_bins_off_the_chromosome_are_dropped(visible, tmp_path):
    """basenji crashes on a window that starts before 0 (README.txt quirk 12); bins off the
    chromosome are left out and a partial bin is clipped to it. Header: the FASTA's sequences."""
    import pyBigWig

    bed = tmp_path / "edge.bed"
    bed.write_text("chr1\t247\t1594\tnear_chr1_start\n")  # window -7272..9112, bins from -5224
    assert run_cli(["predict-bed", "-m", str(fixture_path("tf-small", "model.h5")), "-f",
                    str(visible / "genome.fa"), str(bed), "-o", str(tmp_path), "-q", "-b", "1"]) == 0
    bw = pyBigWig.open(str(tmp_path / "bigwig" / "s0_t1.bw"))
    assert bw.chroms() == {"chr1": 302420, "chr2": 120450, "chrX": 60640}
    iv = bw.intervals("chr1")
    assert iv[0][:2] == (0, -5224 + 41 * 128) and iv[-1][1] == -5224 + 96 * 128 and len(iv) == 96 - 40


def test_bed_and_tuple_strands(tmp_path):
    """Column 6 of a BED line and the fifth item of a region tuple are its strand: +, - or .
    (empty = .); anything else is an error naming the line or the region, not a silent +."""
    from basenji2_fast.genome import as_regions

    bed = tmp_path / "s.bed"
    bed.write_text("c\t0\t10\tn\t0\t-\nc\t0\t10\tn\t0\t+\nc\t0\t10\tn\t0\t.\nc\t0\t10\tn\t0\t\nc\t0\t10\n")
    assert [r.strand for r in read_bed(bed)] == ["-", "+", ".", ".", "."]
    bed.write_text("c\t0\t10\tn\t0\t+\nc\t0\t10\tn\t0\t-1\n")
    with pytest.raises(ValueError, match=r"s.bed: line 2: bad strand '-1' in column 6"):
        read_bed(bed)
    regions, _ = as_regions([("c", 0, 10, "a", "-"), ("c", 0, 10, "b"), ("c", 0, 10, "c", ".")])
    assert [r.strand for r in regions] == ["-", ".", "."]
    with pytest.raises(ValueError, match=r"region 1: bad strand '\?'"):
        as_regions([("c", 0, 10, "a", "+"), ("c", 0, 10, "b", "?")])
