"""``sad`` (basenji2_fast.workflows.variants) against basenji_sad.py's files on the tf-small model, and the
documented corrections of its bugs (multi-allelic rows, skipped variants, chromosome ends)."""
from __future__ import annotations

import argparse
import gzip
import shlex
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import fixture_path
from basenji2_fast import load
from basenji2_fast.dna import encode
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.windows import engine_tracks
from basenji2_fast.workflows.variants import (PERCENTILES, add_sad_subcommand, compute_stats,
                                    score_variants, write_sad)

# the sad_* runs on variants_sadsafe.vcf (README.txt section 8: the comparable ones)
SADSAFE_RUNS = ["sad_default", "sad_default_unwrapped", "sad_targets", "sad_allstats", "sad_allstats_rc_shifts",
                "sad_rc", "sad_shifts_m1_0_1", "sad_targets_sub", "sad_pseudo0.5"]
PROFILE = ("REF", "ALT")


@pytest.fixture(scope="module")
def visible() -> Path:
    return fixture_path("basenji-cli", "visible")


@pytest.fixture(scope="module")
def model_path() -> Path:
    return fixture_path("tf-small", "model.h5")


@pytest.fixture(scope="module")
def model(model_path):
    return load(model_path, threads=2)


def run_sad(argv) -> int:
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sad_subcommand(sub)
    args = parser.parse_args(["sad", *map(str, argv)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return args.func(args)


def basenji_args(visible: Path, run: str):
    """Our options for a run's cmd.txt: (vcf path, option list)."""
    line = next(l for l in (visible / "out" / run / "cmd.txt").read_text().splitlines()
                if l.startswith("TF_USE") and "seeded_run" not in l)
    toks = shlex.split(line)
    toks = toks[toks.index("basenji_sad.py") + 1:]
    opts, pos, i = [], [], 0
    while i < len(toks):
        t = toks[i]
        if t == "-o":
            i += 2
        elif t in ("-f", "-t"):
            opts += [t, str(visible / toks[i + 1])]
            i += 2
        elif t in ("--stats", "--shifts", "--pseudo"):
            opts += [t, toks[i + 1]]
            i += 2
        elif t == "--rc":
            opts.append(t)
            i += 1
        else:
            pos.append(t)
            i += 1
    return visible / pos[-1], opts


def tolerance(name: str, ref: np.ndarray) -> np.ndarray:
    base = name[:-4] if name.endswith("_pct") else name
    if base in PROFILE:
        return 1e-3 + 1e-3 * np.abs(ref)
    return 2e-3 + 2e-3 * np.abs(ref)


def compare_h5(expected: Path, ours: Path, rows=None) -> dict:
    """Dataset by dataset: names, shapes, dtypes, strings exactly; numbers within README's
    tolerances. ``rows``: only these rows of per-variant datasets (and no _pct). Returns max |d|."""
    out = {}
    with h5py.File(expected) as a, h5py.File(ours) as b:
        assert sorted(a) == sorted(b)
        for k in a:
            x, y = a[k][()], b[k][()]
            assert x.dtype == y.dtype, k
            assert x.shape == y.shape, k
            if rows is not None and k not in ("target_ids", "target_labels", "percentiles"):
                if k.endswith("_pct"):
                    continue
                x, y = x[rows], y[rows]
            if x.dtype.kind == "S" or k in ("pos", "percentiles"):
                assert np.array_equal(x, y), k
                continue
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            d = np.abs(x64 - y64)
            bad = d > tolerance(k, x64)
            assert not bad.any(), f"{k}: {bad.sum()} values off, max |d| {d.max():.3g} at {np.argwhere(bad)[0]}"
            out[k] = float(d.max()) if d.size else 0.0
    return out


@pytest.mark.parametrize("run", SADSAFE_RUNS)
def test_matches_basenji_sad(run, visible, model_path, tmp_path):
    vcf, opts = basenji_args(visible, run)
    assert run_sad(["-m", model_path, vcf, "-o", tmp_path, "-q", "--basenji-edge-padding", *opts]) == 0
    compare_h5(visible / "out" / run / "sad.h5", tmp_path / "sad.h5")
    assert (tmp_path / "skipped.tsv").read_text().count("\n") == 1  # header only
    with h5py.File(tmp_path / "sad.h5") as h5:
        # the _pct tables are numpy's linear percentiles of the stored float16 columns
        assert np.array_equal(h5["percentiles"][()], PERCENTILES)
        for k in h5:
            if k.endswith("_pct"):
                want = np.percentile(h5[k[:-4]][()], 100 * PERCENTILES, axis=0).T.astype(np.float16)
                assert np.array_equal(h5[k][()], want)


def direct(model, fasta, chrom, start, L, **kw):
    """model.predict of genome[start, start + L) with N off the chromosome, N as 0.25."""
    return model.predict(encode(fetch(fasta, chrom, start, start + L))[None], n_encoding="uniform", **kw)[0]


def test_sadsafe_correct_padding(visible, model, model_path, tmp_path):
    """Default (correct) padding: every row equals basenji's except the 8-bp deletion near the
    chr2 end (row 35), whose windows are the fully N-padded ones."""
    vcf, opts = basenji_args(visible, "sad_allstats")
    assert run_sad(["-m", model_path, vcf, "-o", tmp_path, "-q", *opts]) == 0
    rows = [i for i in range(40) if i != 35]
    compare_h5(visible / "out" / "sad_allstats" / "sad.h5", tmp_path / "sad.h5", rows=rows)
    fa = open_fasta(visible / "genome.fa")
    L = model.seq_length
    with h5py.File(tmp_path / "sad.h5") as h5:
        assert h5["snp"][35] == b"rs1100135" and h5["pos"][35] == 118391
        pos, k = 118391, 8
        # REF window: genome[pos - L/2, pos + L/2 + k) trimmed k//2 on the left -> starts at pos - L/2 + k//2
        ref = direct(model, fa, "chr2", pos - L // 2 + k // 2, L)
        np.testing.assert_allclose(h5["REF"][35].astype(np.float64), ref, atol=1e-3, rtol=1e-3)
        # ALT window: L bases of the deleted sequence, starting at pos - L/2
        seq = fetch(fa, "chr2", pos - L // 2, pos + L // 2 + k)
        c = L // 2 - 1
        alt_seq = seq[:c] + "C" + seq[c + 9:]
        assert len(alt_seq) == L
        alt = model.predict(encode(alt_seq)[None], n_encoding="uniform")[0]
        np.testing.assert_allclose(h5["ALT"][35].astype(np.float64), alt, atol=1e-3, rtol=1e-3)


def test_edge_probe(visible, model, model_path, tmp_path):
    """SNPs at chr1 POS 1/8190/8192/last base and the 2-bp indels at the end: rows as basenji
    except the even-length indels at the right end (rows 3, 4), which get the correct padding."""
    vcf, opts = basenji_args(visible, "sad_edge_probe")
    assert run_sad(["-m", model_path, vcf, "-o", tmp_path, "-q", *opts]) == 0
    compare_h5(visible / "out" / "sad_edge_probe" / "sad.h5", tmp_path / "sad.h5", rows=[0, 1, 2, 5])
    fa = open_fasta(visible / "genome.fa")
    L, size = model.seq_length, len(fa["chr1"])
    with h5py.File(tmp_path / "sad.h5") as h5:
        assert list(h5["pos"][()]) == [1, 8190, 8192, 302418, 302419, 302420]
        # SNP at POS 1: REF window = L/2 Ns then the chromosome's first L/2 bases
        np.testing.assert_allclose(h5["REF"][0].astype(np.float64), direct(model, fa, "chr1", 1 - L // 2, L),
                                   atol=1e-3, rtol=1e-3)
        # last base: window [size - L/2, size + L/2), N past the end
        np.testing.assert_allclose(h5["REF"][5].astype(np.float64),
                                   direct(model, fa, "chr1", size - L // 2, L), atol=1e-3, rtol=1e-3)
        # 2-bp deletion TGA>T of the last bases: REF window [pos - L/2 + 1, pos + L/2 + 1)
        pos = 302418
        np.testing.assert_allclose(h5["REF"][3].astype(np.float64),
                                   direct(model, fa, "chr1", pos - L // 2 + 1, L), atol=1e-3, rtol=1e-3)
        # 2-bp insertion G>GAC one base before the end: REF window = the plain interior rule
        pos = 302419
        np.testing.assert_allclose(h5["REF"][4].astype(np.float64),
                                   direct(model, fa, "chr1", pos - L // 2, L), atol=1e-3, rtol=1e-3)
        seq = fetch(fa, "chr1", pos - L // 2, pos + L // 2)
        c = L // 2 - 1
        alt_seq = (seq[:c] + "GAC" + seq[c + 1:])[1:1 + L]  # L+2 long: trim 1 left, 1 right
        alt = model.predict(encode(alt_seq)[None], n_encoding="uniform")[0]
        np.testing.assert_allclose(h5["ALT"][4].astype(np.float64), alt, atol=1e-3, rtol=1e-3)


def test_pos8191(visible, model, model_path, tmp_path):
    """POS = L/2 - 1 crashes basenji_sad.py; here its window starts one base before the chromosome."""
    vcf = visible / "pos8191.vcf"
    assert run_sad(["-m", model_path, vcf, "-o", tmp_path, "-q", "-f", visible / "genome.fa",
                    "--stats", "SAD,REF,ALT"]) == 0
    fa = open_fasta(visible / "genome.fa")
    L = model.seq_length
    with h5py.File(tmp_path / "sad.h5") as h5:
        assert h5["SAD"].shape == (1, 12) and h5["pos"][0] == 8191
        np.testing.assert_allclose(h5["REF"][0].astype(np.float64), direct(model, fa, "chr1", 8191 - L // 2, L),
                                   atol=1e-3, rtol=1e-3)
        seq = fetch(fa, "chr1", 8191 - L // 2, 8191 + L // 2)
        assert seq[0] == "N" and seq[L // 2 - 1] == "G"
        alt = model.predict(encode(seq[:L // 2 - 1] + "C" + seq[L // 2:])[None], n_encoding="uniform")[0]
        np.testing.assert_allclose(h5["ALT"][0].astype(np.float64), alt, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["variants.vcf", "variants_noskip.vcf"])
def test_design_vcf_rows_per_alt(name, visible, model_path, tmp_path):
    """The multi-allelic record gives one row per ALT and the REF/ALT-both-mismatch record is
    skipped (listed in skipped.tsv): the result is exactly basenji's on variants_sadsafe.vcf,
    with no misaligned row."""
    assert run_sad(["-m", model_path, visible / name, "-o", tmp_path, "-q", "--basenji-edge-padding",
                    "-f", visible / "genome.fa", "-t", visible / "targets.txt",
                    "--stats", "SAD,SAX,SADR,SAXR,SAR,REF,ALT"]) == 0
    compare_h5(visible / "out" / "sad_allstats" / "sad.h5", tmp_path / "sad.h5")
    with h5py.File(tmp_path / "sad.h5") as h5:
        assert [h5["alt_allele"][i] for i in (10, 11)] == [b"T", b"G"]
        assert h5["snp"][10] == h5["snp"][11] == b"rs1100110"
        assert h5["snp"][15] == b"chr1:167892"  # ID '.'
        assert list(h5["snp"][()]).count(b"rs1100102") == 2  # duplicate IDs kept
    lines = (tmp_path / "skipped.tsv").read_text().splitlines()
    assert lines[0] == "line\tchrom\tpos\tid\tref\talt\treason"
    if name == "variants.vcf":
        assert len(lines) == 2
        f = lines[1].split("\t")
        assert f[1:6] == ["chr2", "8563", "rs1100121", "G", "C"] and "neither" in f[6]
    else:
        assert len(lines) == 1


def write_vcf(path: Path, records, contigs=("chr1", "chr2", "chrX")) -> Path:
    head = ["##fileformat=VCFv4.2"] + [f"##contig=<ID={c}>" for c in contigs]
    head.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    path.write_text("\n".join(head + ["\t".join(map(str, r)) + "\t.\tPASS\t." for r in records]) + "\n")
    return path


def test_bad_records_skipped(visible, model, tmp_path):
    """IUPAC REF, symbolic ALTs, a missing contig, a position past the end: skipped with reasons,
    the other rows unchanged."""
    snp = ("chr1", 20307, "rs1100103", "T", "A")
    vcf = write_vcf(tmp_path / "v.vcf", [
        ("chr1", 20074, "iupac", "R", "A"),
        ("chr1", 20074, "sym", "A", "<DEL>,*,T"),
        ("chrZ", 100, "nocontig", "A", "C"),
        ("chr1", 10 ** 7, "past_end", "A", "C"),
        snp,
    ], contigs=("chr1", "chrZ"))
    with pytest.warns(UserWarning, match="skipping"):
        path = write_sad(model, visible / "genome.fa", vcf, tmp_path / "out", stats=("SAD", "REF"), progress=False)
    with h5py.File(path) as h5:
        assert list(h5["snp"][()]) == [b"sym", b"rs1100103"]
        assert list(h5["alt_allele"][()]) == [b"T", b"A"]
        sad = h5["SAD"][()]
    rows = [l.split("\t") for l in (tmp_path / "out" / "skipped.tsv").read_text().splitlines()[1:]]
    assert [(r[3], r[5]) for r in rows] == [("iupac", "A"), ("sym", "<DEL>"), ("sym", "*"), ("nocontig", "C"),
                                            ("past_end", "C")]
    assert "A,C,G,T,N" in rows[0][6] and "symbolic" in rows[1][6] and "not in the FASTA" in rows[3][6]
    assert "outside" in rows[4][6]
    # the last row is what basenji computed for this SNP (row 3 of sad_default)
    with h5py.File(visible / "out" / "sad_default" / "sad.h5") as ref:
        np.testing.assert_allclose(sad[1].astype(np.float64), ref["SAD"][3].astype(np.float64), atol=2e-3, rtol=2e-3)


def test_malformed_line(visible, model_path, tmp_path, capsys):
    # a line htslib cannot read is skipped by name (line 7), the records around it scored
    vcf = write_vcf(tmp_path / "bad.vcf", [("chr1", 20307, "ok", "T", "A"), ("chr1", "abc", "bad", "T", "A"),
                                           ("chr1", 20307, "after", "T", "A")])
    rc = run_sad(["-m", model_path, vcf, "-o", tmp_path / "out", "-q", "-f", visible / "genome.fa"])
    assert rc == 0
    assert (tmp_path / "out" / "skipped.tsv").read_text().splitlines()[1:] == [
        "7\t.\t.\t.\t.\t.\tnot a VCF record (htslib cannot parse the line)"]
    with h5py.File(tmp_path / "out" / "sad.h5") as h5:
        assert [s.decode() for s in h5["snp"][()]] == ["ok", "after"]


def test_reading_stops_cleanly_part_way(tmp_path):
    """A caller that stops reading a large VCF early leaves no thread blocked on the pipe."""
    import itertools
    import threading

    from basenji2_fast.workflows.variants import read_vcf

    vcf = write_vcf(tmp_path / "big.vcf", [("chr1", 20307 + i, f"v{i}", "T", "A") for i in range(30000)])
    before = threading.active_count()
    records = read_vcf(vcf)
    first = list(itertools.islice(records, 2))
    records.close()
    assert [r.id for r, _, _ in first] == ["v0", "v1"] and [line for _, _, line in first] == [6, 7]
    assert threading.active_count() == before


def test_empty_vcf(visible, model, tmp_path):
    vcf = write_vcf(tmp_path / "empty.vcf", [])
    path = write_sad(model, visible / "genome.fa", vcf, tmp_path / "out", stats=("SAD", "SAR", "REF"),
                     targets=visible / "targets_sub.txt", progress=False)
    with h5py.File(path) as h5:
        assert sorted(h5) == sorted(["REF", "SAD", "SAD_pct", "SAR", "SAR_pct", "alt_allele", "chr", "percentiles",
                                     "pos", "ref_allele", "snp", "target_ids", "target_labels"])
        assert h5["SAD"].shape == (0, 5) and h5["SAD"].dtype == np.float16
        assert h5["REF"].shape == (0, 96, 5)
        assert h5["pos"].shape == (0,) and h5["pos"].dtype == np.uint32
        assert h5["snp"].dtype.kind == "S"
        assert h5["SAD_pct"].shape == (5, 279) and np.isnan(h5["SAD_pct"][()]).all()
        assert h5["target_ids"][0] == b"ATAC2692"


def test_chr_prefix_and_gzip(visible, model, tmp_path):
    """A VCF naming chromosomes without 'chr' (gzipped) scores against the FASTA's chr names."""
    text = (visible / "variants_sadsafe.vcf").read_text()
    lines = [l if l.startswith("#") else l[3:] for l in text.splitlines() if not l.startswith("##contig")]
    vcf = tmp_path / "nochr.vcf.gz"
    with gzip.open(vcf, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="using the FASTA's 'chr1'"):
        res = score_variants(model, visible / "genome.fa", vcf, stats=("SAD",))
    assert res["chr"][:2] == ["1", "1"] and len(res["snp"]) == 40
    with h5py.File(visible / "out" / "sad_default" / "sad.h5") as ref:
        rows = [i for i in range(40) if i != 35]  # row 35: basenji's right-end padding bug
        np.testing.assert_allclose(res["SAD"][rows], ref["SAD"][()][rows].astype(np.float64), atol=2e-3, rtol=2e-3)


def test_tsv_matches_h5(visible, model, tmp_path):
    vcf = visible / "edge_probe.vcf"
    h5p = write_sad(model, visible / "genome.fa", vcf, tmp_path / "h5", stats=("SAD", "SAR", "REF"),
                    targets=visible / "targets.txt", progress=False)
    tsv = write_sad(model, visible / "genome.fa", vcf, tmp_path / "tsv", stats=("SAD", "SAR", "REF"),
                    targets=visible / "targets.txt", fmt="tsv", progress=False)
    lines = tsv.read_text().splitlines()
    head = lines[0].split("\t")
    assert head == ["snp", "chr", "pos", "ref_allele", "alt_allele", "target_index", "target_id", "target_label",
                    "SAD", "SAR", "REF_sum"]
    assert len(lines) == 1 + 6 * 12
    vals = np.array([[float(v) for v in l.split("\t")[8:]] for l in lines[1:]]).reshape(6, 12, 3)
    with h5py.File(h5p) as h5:
        np.testing.assert_allclose(vals[:, :, 0], h5["SAD"][()].astype(np.float64), atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(vals[:, :, 1], h5["SAR"][()].astype(np.float64), atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(vals[:, :, 2], h5["REF"][()].astype(np.float64).sum(1), rtol=1e-2)
        assert lines[1].split("\t")[:8] == ["edge_chr1_1", "chr1", "1", "A", "C", "0", "ENCFF6446",
                                            "DNASE:synthetic sample 0 (visible)"]


def test_new_stats(visible, model):
    res = score_variants(model, visible / "genome.fa", visible / "edge_probe.vcf",
                         stats=("REF", "ALT", "D1", "D2", "logD2", "JS", "SAD"))
    ref, alt = res["REF"], res["ALT"]
    np.testing.assert_allclose(res["D1"], np.abs(alt - ref).sum(1))
    np.testing.assert_allclose(res["D2"], np.sqrt(((alt - ref) ** 2).sum(1)))
    np.testing.assert_allclose(res["logD2"], np.sqrt(((np.log2(alt + 1) - np.log2(ref + 1)) ** 2).sum(1)))
    c = np.percentile(ref, 25, axis=1, keepdims=True)
    r = (ref + c) / (ref + c).sum(1, keepdims=True)
    a = (alt + c) / (alt + c).sum(1, keepdims=True)
    js = ((r * np.log(r / a)).sum(1) + (a * np.log(a / r)).sum(1)) / 2
    np.testing.assert_allclose(res["JS"], js, rtol=1e-9, atol=1e-15)
    assert (res["JS"] >= 0).all()
    # stats of identical predictions are zero
    z = compute_stats(ref[:1], ref[:1], ("SAD", "SAX", "SADR", "SAXR", "SAR", "D1", "D2", "logD2", "JS"))
    assert all(np.all(v == 0) for v in z.values())


def test_ref_splice_warning(visible, model):
    """rs1100108: genome has the ALT; the reference window gets the VCF REF spliced in."""
    vcf = visible / "variants_sadsafe.vcf"
    fa = open_fasta(visible / "genome.fa")
    with pytest.warns(UserWarning, match="spliced in"):
        res = score_variants(model, fa, vcf, stats=("SAD",))
    assert res["snp"][8] == "rs1100108"


def test_snps_take_the_incremental_path_with_identical_results(visible, model, monkeypatch):
    """SNPs go through Model.predict_substitutions, indels through full passes; forcing full
    passes for everything gives the same numbers bit for bit."""
    import basenji2_fast.model as model_module

    calls = []
    real = model_module.Model.predict_substitutions

    def counting(self, *args, **kwargs):
        calls.append(len(args[1]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(model_module.Model, "predict_substitutions", counting)
    fast = score_variants(model, visible / "genome.fa", visible / "variants_sadsafe.vcf", stats=("SAD", "REF", "ALT"))
    assert sum(calls) > 0
    monkeypatch.setattr(model_module.Model, "predict_substitutions",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("not expected")))
    monkeypatch.setattr("basenji2_fast.workflows.variants._predict_alleles", _full_passes)
    slow = score_variants(model, visible / "genome.fa", visible / "variants_sadsafe.vcf", stats=("SAD", "REF", "ALT"))
    for key in ("SAD", "REF", "ALT"):
        np.testing.assert_array_equal(fast[key], slow[key])


def _full_passes(model, ref_codes, alt_codes, head, sel, ensemble):
    tracks, pair = engine_tracks(model, head, sel, ensemble.rc)
    p = model.predict(np.concatenate([ref_codes, alt_codes]), head=head, tracks=tracks, strand_pair=pair,
                      **ensemble.options())
    return p[:len(ref_codes)], p[len(ref_codes):]


# --------------------------------------------------------------------------------------
# Resume

class _Killed(Exception):
    pass


def _counting_predict(monkeypatch, fail_after=None):
    """Patch the prediction function: count calls (one per batch), raise after ``fail_after``."""
    import basenji2_fast.workflows.variants as variants

    real = variants._predict_alleles
    calls = []

    def wrapped(*args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise _Killed("simulated kill")
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(variants, "_predict_alleles", wrapped)
    return calls


def _assert_same_h5(a: Path, b: Path) -> None:
    with h5py.File(a) as x, h5py.File(b) as y:
        assert sorted(x) == sorted(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
            u, v = x[k][()], y[k][()]
            if u.dtype.kind == "f":  # bit for bit, NaN included
                assert np.array_equal(u.view(f"u{u.dtype.itemsize}"), v.view(f"u{v.dtype.itemsize}")), k
            else:
                assert np.array_equal(u, v), k


RESUME_STATS = ("SAD", "SAR", "JS", "REF", "ALT")


@pytest.mark.parametrize("fmt", ["h5", "tsv"])
def test_resume_after_kill(fmt, visible, model, tmp_path, monkeypatch):
    """Killed after 2 of 7 batches, then rerun: only the 5 missing batches are predicted and
    the files equal an uninterrupted run's exactly; the partials are gone."""
    vcf = visible / "variants.vcf"  # 40 scored alleles + one skipped record
    kw = dict(stats=RESUME_STATS, targets=visible / "targets.txt", batch_size=6, fmt=fmt, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = write_sad(model, visible / "genome.fa", vcf, tmp_path / "full", **kw)
        out = tmp_path / "resumed"
        calls = _counting_predict(monkeypatch, fail_after=2)
        with pytest.raises(_Killed):
            write_sad(model, visible / "genome.fa", vcf, out, **kw)
        assert len(calls) == 2
        name = "sad.h5" if fmt == "h5" else "sad.tsv"
        assert not (out / name).exists() and not (out / "sad.options.json").exists()
        assert sorted(p.name for p in (out / ".sad_partial").glob("*.npz")) == ["0.npz", "1.npz"]
        monkeypatch.undo()
        calls = _counting_predict(monkeypatch)
        res = write_sad(model, visible / "genome.fa", vcf, out, **kw)
    assert calls == [6, 6, 6, 6, 4]  # batches 2..6 only (40 rows = 6 x 6 + 4)
    assert res == out / name
    assert not (out / ".sad_partial").exists() and not (out / ".sad.lock").exists()
    assert (out / "sad.options.json").is_file()
    if fmt == "h5":
        _assert_same_h5(full, res)
    else:
        assert res.read_bytes() == full.read_bytes()
    assert (out / "skipped.tsv").read_bytes() == (tmp_path / "full" / "skipped.tsv").read_bytes()
    assert (out / "skipped.tsv").read_text().count("\n") == 2


def test_resume_cli_noop_and_mismatch(visible, model_path, tmp_path, monkeypatch, capsys):
    """CLI: a run killed mid-way resumes; a finished rerun predicts nothing and leaves the file
    untouched; other options are refused with one line unless --overwrite."""
    vcf = visible / "variants_sadsafe.vcf"
    base = ["-m", model_path, vcf, "-q", "-f", visible / "genome.fa", "--stats", "SAD,REF", "--batch-size", "8"]
    assert run_sad([*base, "-o", tmp_path / "full"]) == 0
    out = tmp_path / "out"
    calls = _counting_predict(monkeypatch, fail_after=3)
    with pytest.raises(_Killed):
        run_sad([*base, "-o", out])
    monkeypatch.undo()
    calls = _counting_predict(monkeypatch)
    assert run_sad([*base, "-o", out]) == 0
    assert len(calls) == 2  # 40 rows: batches 3 and 4
    _assert_same_h5(tmp_path / "full" / "sad.h5", out / "sad.h5")
    capsys.readouterr()

    # finished: a no-op
    mtime = (out / "sad.h5").stat().st_mtime_ns
    calls.clear()
    assert run_sad([*base, "-o", out]) == 0
    assert calls == []
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "sad.h5").stat().st_mtime_ns == mtime

    # other options: refused, nothing touched
    assert run_sad([*base, "-o", out, "--rc"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("basenji2-fast sad: error: ") and "other options" in err[0]
    assert calls == [] and (out / "sad.h5").stat().st_mtime_ns == mtime
    # --overwrite starts over
    assert run_sad([*base, "-o", out, "--rc", "--overwrite"]) == 0
    assert len(calls) == 5
    with h5py.File(out / "sad.h5") as h5, h5py.File(tmp_path / "full" / "sad.h5") as ref:
        assert h5["SAD"].shape == ref["SAD"].shape and not np.array_equal(h5["SAD"][()], ref["SAD"][()])


def test_interrupted_job_with_other_options_refused(visible, model, tmp_path, monkeypatch):
    """The partials of an interrupted job belong to its options: another job is refused (and
    the partials kept), --overwrite discards them."""
    vcf = visible / "variants_sadsafe.vcf"
    out = tmp_path / "out"
    _counting_predict(monkeypatch, fail_after=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(_Killed):
            write_sad(model, visible / "genome.fa", vcf, out, stats=("SAD",), batch_size=8, progress=False)
        monkeypatch.undo()
        for other in (dict(stats=("SAD", "SAR")), dict(stats=("SAD",), pseudo=0.5), dict(stats=("SAD",), fmt="tsv"),
                      dict(stats=("SAD",), batch_size=4)):
            other = {"batch_size": 8, **other}
            with pytest.raises(ValueError, match="other options"):
                write_sad(model, visible / "genome.fa", vcf, out, progress=False, **other)
        assert (out / ".sad_partial" / "0.npz").is_file()
        calls = _counting_predict(monkeypatch)
        write_sad(model, visible / "genome.fa", vcf, out, stats=("SAD", "SAR"), batch_size=8, progress=False,
                  overwrite=True)
    assert len(calls) == 5 and not (out / ".sad_partial").exists()
    with h5py.File(out / "sad.h5") as h5:
        assert "SAR" in h5 and h5["SAD"].shape[0] == 40


def test_killed_after_finishing(visible, model, tmp_path, monkeypatch):
    """Killed after sad.h5 and its record were written but before the partials were removed:
    the rerun predicts nothing, leaves sad.h5 alone and removes the partials."""
    import basenji2_fast.workflows.variants as variants

    vcf = visible / "edge_probe.vcf"
    out = tmp_path / "out"

    def killed(path, *a, **k):
        raise _Killed("simulated kill")

    monkeypatch.setattr(variants.shutil, "rmtree", killed)
    with pytest.raises(_Killed):
        write_sad(model, visible / "genome.fa", vcf, out, stats=("SAD",), batch_size=2, progress=False)
    monkeypatch.undo()
    assert (out / "sad.h5").is_file() and (out / ".sad_partial").is_dir()
    mtime = (out / "sad.h5").stat().st_mtime_ns
    calls = _counting_predict(monkeypatch)
    write_sad(model, visible / "genome.fa", vcf, out, stats=("SAD",), batch_size=2, progress=False)
    assert calls == [] and (out / "sad.h5").stat().st_mtime_ns == mtime
    assert not (out / ".sad_partial").exists()


def test_skip_warnings_are_capped(visible, model, tmp_path, monkeypatch):
    """A VCF with many unusable alleles: the first SKIP_WARNINGS warn one by one, then one
    summary; skipped.tsv still lists every one."""
    from basenji2_fast.workflows import variants

    monkeypatch.setattr(variants, "SKIP_WARNINGS", 2)
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 20074 + i, f"iupac{i}", "R", "A") for i in range(5)]
                    + [("chr1", 20307, "rs1100103", "T", "A")], contigs=("chr1",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_sad(model, visible / "genome.fa", vcf, tmp_path / "out", stats=("SAD",), progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert [m.split(" (")[0] for m in messages if m.startswith("skipping")] == ["skipping iupac0", "skipping iupac1"]
    assert sum("more than 2 alleles skipped" in m for m in messages) == 1
    rows = (tmp_path / "out" / "skipped.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[3] for r in rows] == [f"iupac{i}" for i in range(5)]
