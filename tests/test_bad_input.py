"""Bad input, class by class: every one gets a one-line error naming the file and line, the
argument or the genome position (or, for VCF records, a named skip listed in skipped.tsv), and
leaves no output behind. The command line is driven in-process (``basenji2_fast.cli.main``)
on a small model converted from the tf-small fixture and the CLI fixture genome."""
from __future__ import annotations

import gzip
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, fixture_path, one_line
from basenji2_fast import load
from basenji2_fast.cli import main
from basenji2_fast.genome import index_problem, open_fasta
from basenji2_fast.model import Ensemble, TrackRequest

L = 16384  # the tf-small model's window
GOOD_SNP = "chr1\t20307\trs1100103\tT\tA\t.\tPASS\t."


@pytest.fixture(scope="module")
def small(converted_small) -> Path:
    return converted_small


@pytest.fixture(scope="module")
def model(small):
    return load(small, threads=2)




def left_behind(folder: Path) -> list:
    """Files under ``folder`` (nothing should be there after a refused run)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------------------------
# API arguments: type- and range-checked in one place (Ensemble, TrackRequest, Model)
# ----------------------------------------------------------------------------------------------
CODES = np.zeros((2, L), np.uint8)

API_CASES = [
    # (call on the model, exception, words the message must hold)
    (lambda m: m.predict(CODES, batch_size=-1), ValueError, "batch_size=-1"),
    (lambda m: m.predict(CODES, batch_size=0), ValueError, "batch_size=0"),
    (lambda m: m.predict(CODES, batch_size=1.5), TypeError, "batch_size=1.5"),
    (lambda m: m.predict(CODES, batch_size="4"), TypeError, "batch_size='4'"),
    (lambda m: m.predict(CODES, batch_size=True), TypeError, "batch_size=True"),
    (lambda m: m.embed(CODES, batch_size=-1), ValueError, "batch_size=-1"),
    (lambda m: m.predict(CODES, tracks=[]), ValueError, "tracks is empty"),
    (lambda m: m.predict(CODES, tracks=[1.7]), TypeError, "tracks: 1.7"),
    (lambda m: m.predict(CODES, tracks="10"), TypeError, "tracks='10'"),
    (lambda m: m.predict(CODES, tracks=[True]), TypeError, "tracks: True"),
    (lambda m: m.predict(CODES, tracks=np.array([0.0, 1.0])), TypeError, "tracks"),
    (lambda m: m.predict(CODES, tracks=[[0, 1]]), TypeError, "tracks"),
    (lambda m: m.predict(CODES, tracks=[12]), ValueError, "track index 12"),
    (lambda m: m.predict(CODES, tracks=[-1]), ValueError, "track index -1"),
    (lambda m: m.predict(CODES, head=["human"], tracks={"mouse": [0]}), ValueError, "'mouse'"),
    (lambda m: m.predict(CODES, shifts=(0.5,)), TypeError, "shifts: 0.5"),
    (lambda m: m.predict(CODES, shifts=()), ValueError, "shifts is empty"),
    (lambda m: m.predict(CODES, shifts=1), TypeError, "shifts=1"),
    (lambda m: m.predict(CODES, shifts=("1",)), TypeError, "shifts: '1'"),
    (lambda m: m.predict(CODES, shifts=(L,)), ValueError, "shift 16,384"),
    (lambda m: m.embed(CODES, shifts=(-L - 1,)), ValueError, "shift -16,385"),
    (lambda m: m.predict(CODES, rc="no"), TypeError, "rc='no'"),
    (lambda m: m.predict(CODES, rc=None), TypeError, "rc=None"),
    (lambda m: m.predict(CODES, n_encoding="ones"), ValueError, "n_encoding='ones'"),
    (lambda m: m.predict(CODES, n_encoding=None), ValueError, "n_encoding=None"),
    (lambda m: m.predict(CODES, head=3), TypeError, "head=3"),
    (lambda m: m.predict(CODES, head=[]), TypeError, "head=[]"),
    (lambda m: m.predict(CODES, head="mouse"), ValueError, "no head 'mouse'"),
    (lambda m: m.predict(np.full((1, L), 6, np.uint8)), ValueError, "base code 6"),
    (lambda m: m.predict(np.zeros((1, L), np.int64)), ValueError, "dtype int64"),
    (lambda m: m.predict(np.zeros((1, L - 1), np.uint8)), ValueError, "16,383"),
    (lambda m: m.predict(np.full((1, L, 4), 2.0, np.float32)), ValueError, "position 0"),
    (lambda m: m.predict(np.full((1, L, 4), np.nan, np.float32)), ValueError, "position 0"),
    (lambda m: m.predict(["ACGT" * (L // 4), "ACGT"]), ValueError, "sequence 1"),
    (lambda m: m.predict("ACGX" * (L // 4)), ValueError, "position 3"),
    (lambda m: m.predict(CODES, strand_pair=[0.0] * 12, rc=True), ValueError, "strand_pair"),
    (lambda m: m.predict_substitutions(CODES[0], [1.5], "A"), TypeError, "positions"),
    (lambda m: m.predict_substitutions(CODES[0], [L], "A"), ValueError, "0..16383"),
    (lambda m: m.predict_substitutions(CODES[0], [1], np.array([9])), ValueError, "alts: base code 9"),
    (lambda m: m.predict_substitutions(CODES[0], [1], np.array([0.5])), TypeError, "alts"),
    (lambda m: m.predict_substitutions(CODES[0], [1, 2], "A"), ValueError, "2 positions but 1"),
    (lambda m: m.predict_substitutions(CODES[0], [1], "A", shifts=(0.5,)), TypeError, "shifts"),
    (lambda m: m.gradients(CODES, bins=3), TypeError, "bins=3: expected a sequence of output bins"),
    (lambda m: m.gradients(CODES, bins="center"), TypeError, "bins='center'"),
]


@pytest.mark.parametrize("call, exc, words", API_CASES, ids=[c[2] for c in API_CASES])
def test_api_arguments_are_checked(model, call, exc, words):
    with pytest.raises(exc) as e:
        call(model)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("threads, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_threads_is_a_positive_integer_or_none(small, threads, exc):
    with pytest.raises(exc, match=r"threads=.*None for every CPU"):
        load(small, threads=threads)
    assert load(small, threads=None).threads >= 1


@pytest.mark.parametrize("tile_mb", [0, -1, float("nan"), float("inf"), "abc", True])
def test_tile_mb_is_a_positive_number_or_none(small, tile_mb):
    with pytest.raises(ValueError, match=r"tile_mb=.*expected a number of MB > 0, or None"):
        load(small, tile_mb=tile_mb)


def test_a_uint8_one_hot_is_read_as_one_hot(model):
    """uint8 [L, 4] is a one-hot (as codes it would be L sequences of 4 bases)."""
    onehot = np.eye(4, dtype=np.uint8)[CODES[0] % 4]
    np.testing.assert_array_equal(model.predict(onehot), model.predict(CODES[0] % 4))


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(rc=1), TypeError, "rc=1"), (dict(shifts=[0, 0.5]), TypeError, "shifts: 0.5"),
    (dict(batch_size=0), ValueError, "batch_size=0"), (dict(n_encoding="N"), ValueError, "n_encoding='N'"),
])
def test_ensemble_checks_its_values(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        Ensemble(**kwargs)
    assert Ensemble(shifts=np.array([-1, 0, 1])).shifts == (-1, 0, 1)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(head=3), TypeError, "head=3"), (dict(tracks=[]), ValueError, "tracks is empty"),
    (dict(tracks=[1.7]), TypeError, "tracks: 1.7"), (dict(tracks="  "), ValueError, "empty selector"),
    (dict(tracks={"human": []}), ValueError, "tracks['human'] is empty"), (dict(targets=5), TypeError, "targets=5"),
])
def test_track_request_checks_its_types(kwargs, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        TrackRequest(**kwargs)


def test_workflow_functions_share_the_checks(model, genome, tmp_path):
    from basenji2_fast import predict_regions
    from basenji2_fast.workflows.variants import score_variants

    with pytest.raises(ValueError, match="batch_size=0"):
        predict_regions(model, genome, [("chr1", 100, 200)], batch_size=0)
    with pytest.raises(TypeError, match="batch_size=2.5"):
        score_variants(model, genome, tmp_path / "x.vcf", batch_size=2.5)
    with pytest.raises(ValueError, match="pseudo=-1"):
        score_variants(model, genome, tmp_path / "x.vcf", pseudo=-1)
    with pytest.raises(ValueError, match="tracks is empty"):
        predict_regions(model, genome, [("chr1", 100, 200)], tracks=[])


# ----------------------------------------------------------------------------------------------
# Command-line arguments: one line, naming the option (argparse, exit status 2)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [
    ["--batch-size", "0"], ["--batch-size", "x"], ["--batch-size", "-3"], ["--threads", "0"], ["--workers", "0"],
    ["--shifts", "0.5"], ["--shifts", "a,b"],
])
def test_bad_option_values(small, genome, visible, tmp_path, capsys, option):
    rc, err = cli(capsys, "predict-bed", "-m", small, "-f", genome, visible / "regions.bed", "-o", tmp_path / "o",
                  *option)
    line = one_line(err, "basenji2-fast predict-bed: error: argument", option[0])
    assert rc == 2 and "--help" in line
    assert left_behind(tmp_path) == []


@pytest.mark.parametrize("argv, option", [
    (["plot", "--width", "0"], "--width"), (["plot", "--dpi", "0"], "--dpi"), (["plot", "--width", "inf"], "--width"),
    (["sad", "--pseudo", "-1"], "--pseudo"), (["fit-head", "--l2", "-1"], "--l2"),
    (["fit-head", "--max-iter", "0"], "--max-iter"), (["fit-head", "--cache-mb", "nan"], "--cache-mb"),
    (["test", "--plot-points", "0"], "--plot-points"),
])
def test_bad_option_values_of_other_commands(capsys, argv, option):
    command = argv[0]
    rc, err = cli(capsys, *argv)
    assert rc == 2 and one_line(err, f"basenji2-fast {command}: error: argument {option}")


def test_batch_size_has_help_everywhere():
    from basenji2_fast.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    seen = 0
    for name, p in sub.choices.items():
        for a in p._actions:
            if "--batch-size" in a.option_strings:
                seen += 1
                assert a.help and "default" in a.help, name
            if "--threads" in a.option_strings or "--workers" in a.option_strings:
                assert a.type(("7")) == 7 and a.help, name
    assert seen >= 7
    assert sub.choices["info"].description


# ----------------------------------------------------------------------------------------------
# Coordinates against contig lengths (chr1 302,420 bp, chr2 120,450, chrX 60,640)
# ----------------------------------------------------------------------------------------------
BAD_REGIONS = [
    ("chr1\t400000\t401000\tpast\n", "lies past the end of chr1 (302,420 bp)"),
    ("chr1\t302000\t302500\tstraddle\n", "runs past the end of chr1 (302,420 bp)"),
    ("chrX\t60639\t60641\tone_past\n", "runs past the end of chrX (60,640 bp)"),
    ("chrX\t60640\t60641\tjust_past\n", "lies past the end of chrX (60,640 bp)"),
    ("chr2\t-10\t100\tnegative\n", "bad interval -10-100"),
    ("chr2\t500\t100\tbackwards\n", "bad interval 500-100"),
    ("chrZ\t1\t100\tnocontig\n", "no sequence 'chrZ'"),
    ("chr1\t1e5\t2e5\tfloat\n", "must be integers"),
    ("chr1 100 200\n", "at least 3 tab-separated columns"),
    ("chr1\t100\t200\tn\xe9\n".encode("latin-1").decode("utf-8", "surrogateescape"), "not UTF-8 text"),
]


@pytest.mark.parametrize("command", ["predict-bed", "sat", "embed", "saliency"])
@pytest.mark.parametrize("line, words", BAD_REGIONS, ids=[w for _, w in BAD_REGIONS])
def test_regions_off_their_contig(small, genome, tmp_path, capsys, command, line, words):
    bed = tmp_path / "r.bed"
    bed.write_bytes(("chr1\t100000\t100100\tok\n" + line).encode("utf-8", "surrogateescape"))
    out = tmp_path / ("o.h5" if command == "embed" else "o")
    rc, err = cli(capsys, command, "-m", small, "-f", genome, bed, "-o", out, "-q")
    assert rc == 1 and one_line(err, f"basenji2-fast {command}: error: ", "r.bed: line 2", words)
    assert not out.exists()


def test_intervals_off_their_contig(model, genome, tmp_path, capsys):
    from basenji2_fast.workflows.ism import saturation_mutagenesis

    for interval, words in (("chr1:400000-401000", "lies past the end of chr1"),
                            ("chrX:60000-60641", "runs past the end of chrX"), ("chrQ:5-10", "no sequence 'chrQ'")):
        with pytest.raises(ValueError, match=words):
            model.predict_interval(genome, interval)
        with pytest.raises(ValueError, match=words):
            saturation_mutagenesis(model, interval, fasta=genome, mut_len=4)
    assert model.predict_interval(genome, "chrX:60000-60640").shape == (96, 12)  # up to the end is fine
    rc, err = cli(capsys, "plot", "-m", str(fixture_path("tf-small", "model.h5")), "-f", genome,
                  "--region", "chr2:120,000-121,000", "-o", tmp_path / "p.png")
    assert rc == 1 and one_line(err, "chr2") and not (tmp_path / "p.png").exists()


def test_chrom_sizes_lines(small, genome, visible, tmp_path, capsys):
    sizes = tmp_path / "chrom.sizes"
    for text in ("chr1\t302420\nchr2\t-5\n", "chr1\t302420\nchr2\n", "chr1\t302420\nchr2\tlong\n"):
        sizes.write_text(text)
        rc, err = cli(capsys, "predict-bed", "-m", small, "-f", genome, visible / "regions.bed", "-o", tmp_path / "o",
                      "-b", "0", "-g", sizes, "-q")
        assert rc == 1 and one_line(err, "chrom.sizes: line 2: expected 'name<TAB>length'")
        assert not (tmp_path / "o" / "predict.h5").exists()


def test_bad_base_is_reported_at_its_genome_position(small, tmp_path, capsys):
    fa = tmp_path / "g.fa"
    fa.write_text(">chrA\n" + "ACGT" * 15 + "\n" + "ACGTX" + "A" * 55 + "\n")
    bed = tmp_path / "a.bed"
    bed.write_text("chrA\t2\t5\n")
    for argv in (["predict-bed", bed, "-o", tmp_path / "pb"], ["predict-genome", "-o", tmp_path / "pg"],
                 ["sat", bed, "-o", tmp_path / "sat", "-l", "2"]):
        rc, err = cli(capsys, argv[0], "-m", small, "-f", fa, *argv[1:], "-q")
        assert rc == 1 and one_line(err, "g.fa: invalid base 'X' at chrA:65 (1-based")
    assert not (tmp_path / "pb" / "predict.h5").exists() and not (tmp_path / "sat" / "scores.h5").exists()
    assert not list((tmp_path / "pg").glob("*.bw"))


# ----------------------------------------------------------------------------------------------
# FASTA files and their index
# ----------------------------------------------------------------------------------------------
def _fai(visible) -> str:
    return (visible / "genome.fa.fai").read_text()


FAI_CASES = [
    ("shorter", lambda t: t.replace("chrX\t60640", "chrX\t30000"), "chrX: its sequence does not end"),
    ("longer", lambda t: t.replace("chrX\t60640", "chrX\t60700"), "chrX: the index says 60,700 bp"),
    ("longer_inside", lambda t: t.replace("chr1\t302420", "chr1\t302480"), "chr1: its sequence does not end"),
    ("shorter_by_one", lambda t: t.replace("chr2\t120450", "chr2\t120449"), "chr2: its sequence does not end"),
    ("renamed", lambda t: t.replace("chrX", "chrY"), "the index names 'chrY' where the FASTA has 'chrX'"),
    ("offset", lambda t: t.replace("\t307473\t", "\t307474\t"), "no header line of 'chr2'"),
    ("line_layout", lambda t: t.replace("\t60\t61", "\t70\t71", 1), "chr1: its sequence does not end"),
    ("missing_record", lambda t: "".join(l for l in t.splitlines(True) if not l.startswith("chr2")),
     "where the FASTA has 'chr2'"),
    ("garbage", lambda t: "not an index\n", "line 1 is not"),
    ("appended", None, "a record 'chrNew' the index lacks"),
]


@pytest.mark.parametrize("name, edit, words", FAI_CASES, ids=[c[0] for c in FAI_CASES])
def test_an_index_that_does_not_match_its_fasta(visible, tmp_path, monkeypatch, name, edit, words):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fa = tmp_path / "genome.fa"
    shutil.copy(visible / "genome.fa", fa)
    fai = tmp_path / "genome.fa.fai"
    if edit is None:
        with open(fa, "a") as fh:
            fh.write(">chrNew\nACGTACGTAC\n")
        fai.write_text(_fai(visible))
    else:
        fai.write_text(edit(_fai(visible)))
    before = fai.read_text()
    assert words in index_problem(fa, fai)
    with pytest.warns(UserWarning, match="does not match") as w:
        fasta = open_fasta(fa)
    assert words in str(w[0].message) and str(fai) in str(w[0].message)
    want = [("chr1", 302420), ("chr2", 120450), ("chrX", 60640)] + ([("chrNew", 10)] if edit is None else [])
    assert [(k, len(fasta[k])) for k in fasta.keys()] == want  # the truth, from an index built in the cache
    assert fai.read_text() == before  # the user's index is left alone
    with pytest.warns(UserWarning, match="does not match"):
        assert len(open_fasta(fa)["chrX"]) == 60640  # the cached index is checked and reused


def test_a_correct_index_is_trusted_whatever_its_time(visible, tmp_path):
    fa, fai = tmp_path / "genome.fa", tmp_path / "genome.fa.fai"
    shutil.copy(visible / "genome.fa", fa)
    fai.write_text(_fai(visible))
    os.utime(fai, (1, 1))  # older than the FASTA, as a checkout may leave it
    assert index_problem(fa, fai) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even pyfaidx's "older than FASTA"
        assert len(open_fasta(fa)["chr2"]) == 120450 and fai.read_text() == _fai(visible)


def test_predict_genome_with_a_stale_index_writes_the_true_lengths(small, visible, tmp_path, capsys, monkeypatch):
    import pyBigWig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copy(visible / "genome.fa", tmp_path / "genome.fa")
    (tmp_path / "genome.fa.fai").write_text(_fai(visible).replace("chrX\t60640", "chrX\t30000"))
    with pytest.warns(UserWarning, match="genome.fa.fai does not match"):
        rc, _ = cli(capsys, "predict-genome", "-m", small, "-f", tmp_path / "genome.fa", "-o", tmp_path / "o",
                    "--tracks", "0", "--chroms", "chrX", "-q")
    assert rc == 0
    with pyBigWig.open(str(tmp_path / "o" / "0_t0.bw")) as bw:
        assert bw.chroms() == {"chr1": 302420, "chr2": 120450, "chrX": 60640}


FASTA_TEXTS = [
    ("cr_only", b">chr1\rACGTACGT\rACGT\r", "lines end in CR alone"),
    ("not_fasta", b"ACGTACGT\nACGT\n", "not a FASTA file"),
    ("empty", b"", "an empty FASTA file"),
    ("blank", b"\n\n  \n", "an empty FASTA file"),
    ("binary", b"\x00\x01\x02>chr", "not a FASTA file"),
    ("gzip", __import__("gzip").compress(b">chr1\nACGT\n"), "a gzip-compressed FASTA: random access needs"),
]


@pytest.mark.parametrize("name, text, words", FASTA_TEXTS, ids=[c[0] for c in FASTA_TEXTS])
def test_fasta_files_pyfaidx_would_misread(small, tmp_path, capsys, name, text, words):
    fa = tmp_path / "g.fa"
    fa.write_bytes(text)
    rc, err = cli(capsys, "predict-genome", "-m", small, "-f", fa, "-o", tmp_path / "o", "-q")
    assert rc == 1 and one_line(err, "g.fa: ", words)
    assert not (tmp_path / "o").exists()


def test_a_bgzip_fasta_reads_or_names_what_it_needs(visible, tmp_path):
    import pysam

    fa = tmp_path / "g.fa.gz"
    pysam.tabix_compress(str(visible / "genome.fa"), str(fa))
    try:
        import Bio  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"g.fa.gz: a bgzip-compressed FASTA: reading it needs Biopython"):
            open_fasta(fa)
    else:
        assert str(open_fasta(fa)["chr1"][1000:1010]) == str(open_fasta(visible / "genome.fa")["chr1"][1000:1010])


def test_crlf_fasta_is_fine(visible, tmp_path):
    fa = tmp_path / "g.fa"
    fa.write_bytes((visible / "genome.fa").read_bytes().replace(b"\n", b"\r\n"))
    fasta = open_fasta(fa)
    assert len(fasta["chrX"]) == 60640 and str(fasta["chr1"][1000:1010]) == str(open_fasta(
        visible / "genome.fa")["chr1"][1000:1010])


def _pipe(text: bytes) -> str:
    """A pipe holding ``text``, as /dev/fd/N (what a shell's /dev/stdin is)."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as fh:
            fh.write(text)

    threading.Thread(target=feed, daemon=True).start()
    return f"/dev/fd/{r}"


def test_inputs_that_are_folders_or_pipes(small, genome, visible, tmp_path, capsys):
    rc, err = cli(capsys, "info", "-m", tmp_path)
    assert rc == 1 and one_line(err, f"{tmp_path}: a folder, not a model file")
    rc, err = cli(capsys, "predict-bed", "-m", small, "-f", tmp_path, visible / "regions.bed", "-o", tmp_path / "o")
    assert rc == 1 and one_line(err, f"{tmp_path}: a folder, not a FASTA file")
    rc, err = cli(capsys, "predict-bed", "-m", small, "-f", _pipe(genome.read_bytes()), visible / "regions.bed",
                  "-o", tmp_path / "o")
    assert rc == 1 and one_line(err, "not a regular file (a pipe?)", "FASTA")
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, _pipe(b"##fileformat=VCFv4.2\n"), "-o", tmp_path / "o")
    assert rc == 1 and one_line(err, "not a regular file (a pipe?)", "reads the VCF twice")
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, tmp_path, "-o", tmp_path / "o")
    assert rc == 1 and one_line(err, "a folder, not a VCF file")
    assert not (tmp_path / "o").exists()


def test_a_bed_file_from_a_pipe(small, genome, visible, tmp_path, capsys):
    rc, _ = cli(capsys, "predict-bed", "-m", small, "-f", genome, _pipe((visible / "regions.bed").read_bytes()),
                "-o", tmp_path / "pipe", "-q")
    assert rc == 0
    rc, _ = cli(capsys, "predict-bed", "-m", small, "-f", genome, visible / "regions.bed", "-o", tmp_path / "file",
                "-q")
    assert (tmp_path / "pipe" / "predict.h5").read_bytes() == (tmp_path / "file" / "predict.h5").read_bytes()


# ----------------------------------------------------------------------------------------------
# VCF lines: skipped by name (warning + skipped.tsv) or refused with file: line N
# ----------------------------------------------------------------------------------------------
def _vcf(visible, path: Path, *records: str, raw: bytes = b"") -> Path:
    header = "".join((visible / "variants_sadsafe.vcf").read_text().splitlines(True)[:8])  # 8 header lines
    path.write_bytes(header.encode() + "".join(r + "\n" for r in records).encode() + raw)
    return path


SKIPPED_LINES = [
    ("", "not a VCF record"),  # blank
    ("   \t ", "not a VCF record"),
    ("garbage line without tabs", "not a VCF record"),
    ("chr1 20307 rs1 T A . PASS .", "not a VCF record"),  # spaces, not tabs
    ("chr1\t20307\trs1\tT\tA", "not a VCF record"),  # 5 columns
    ("chr1\tabc\trs1\tT\tA\t.\tPASS\t.", "not a VCF record"),
    ("\t20307\trs1\tT\tA\t.\tPASS\t.", "empty CHROM"),
    ("chr1\t20307\trs1\t\tA\t.\tPASS\t.", "missing REF"),
    ("chr1\t20307\trs1\tT\t\t.\tPASS\t.", "missing ALT"),
    ("chr1\t20307\tsame\tT\tT\t.\tPASS\t.", "ALT equals REF"),
    ("chr1\t20307\tsame_case\tT\tt\t.\tPASS\t.", "ALT equals REF"),
    ("chr1\t302420\tref_past_end\tAC\tA\t.\tPASS\t.", "REF runs past the end of chr1"),
    ("chrX\t60630\tref_past_end2\tAAAAAAAAAAAAAAA\tA\t.\tPASS\t.", "REF runs past the end of chrX"),
    ("chr1\t302421\tpos_past_end\tA\tC\t.\tPASS\t.", "outside chr1"),
    ("chr1\t0\tpos_zero\tA\tC\t.\tPASS\t.", "outside chr1"),
    ("chr1\t20307\tempty_allele\tT\tA,,C\t.\tPASS\t.", "missing ALT"),
    ("chr1\t20307\tsymbolic\tT\t<DEL>\t.\tPASS\t.", "symbolic ALT"),
    ("chr9\t100\tno_contig\tA\tC\t.\tPASS\t.", "not in the FASTA"),
]


@pytest.mark.parametrize("record, reason", SKIPPED_LINES, ids=[f"{i}-{r}" for i, (_, r) in enumerate(SKIPPED_LINES)])
def test_vcf_lines_skipped_by_name(small, genome, visible, tmp_path, capsys, record, reason):
    # Unreadable lines and unscorable variants alike: a warning and a skipped.tsv row naming
    # line 10, the records around it scored in order (the line count never slips).
    vcf = _vcf(visible, tmp_path / "v.vcf", GOOD_SNP, record, GOOD_SNP.replace("rs1100103", "last"))
    with pytest.warns(UserWarning, match=f"skipping .*VCF line 10.*{reason}"):
        rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", tmp_path / "o", "-q")
    assert rc == 0 and err == []
    rows = [l.split("\t") for l in (tmp_path / "o" / "skipped.tsv").read_text().splitlines()[1:]]
    assert rows and all(r[0] == "10" and reason in r[6] for r in rows)
    import h5py

    with h5py.File(tmp_path / "o" / "sad.h5") as h5:
        ids = [s.decode() for s in h5["snp"][()]]
    assert ids[0] == "rs1100103" and ids[-1] == "last"  # the rows around it are scored, in order


def test_vcf_line_numbers_hold_across_many_bad_lines(small, genome, visible, tmp_path, capsys):
    records = [GOOD_SNP, "", "junk", "chr1\tabc\tx\tT\tA\t.\t.\t.", GOOD_SNP.replace("rs1100103", "at14"), "", ""]
    vcf = _vcf(visible, tmp_path / "v.vcf", *records)
    with pytest.warns(UserWarning):
        rc, _ = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", tmp_path / "o", "-q")
    assert rc == 0
    rows = [l.split("\t") for l in (tmp_path / "o" / "skipped.tsv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [10, 11, 12, 14, 15]


def test_a_file_that_is_not_a_vcf(small, genome, tmp_path, capsys):
    vcf = tmp_path / "plain.vcf"
    vcf.write_text((GOOD_SNP + "\n") * 20000)  # records without a header, more than a pipe holds
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", tmp_path / "o", "-q")
    assert rc == 1 and one_line(err, "plain.vcf: not a VCF file (no header ending in a #CHROM line)")
    assert left_behind(tmp_path / "o") == []


def test_vcf_bytes_and_compression(small, genome, visible, tmp_path, capsys):
    vcf = _vcf(visible, tmp_path / "v.vcf", GOOD_SNP, raw=b"chr1\t20307\t\xff\xfe\tT\tA\t.\tPASS\t.\n")
    with pytest.warns(UserWarning, match="skipping VCF line 10: not a VCF record .bytes that are not UTF-8"):
        rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", tmp_path / "o1", "-q")
    assert rc == 0 and err == []
    shutil.rmtree(tmp_path / "o1")
    text = _vcf(visible, tmp_path / "plain.vcf", *([GOOD_SNP] * 200)).read_bytes()
    gz = tmp_path / "v.vcf.gz"
    gz.write_bytes(gzip.compress(text)[:-30])  # truncated
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, gz, "-o", tmp_path / "o2", "-q")
    assert rc == 1 and one_line(err, "v.vcf.gz: line", "damaged or truncated")
    gz.write_bytes(b"\x1f\x8b" + bytes(50))  # not a gzip stream after all
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, gz, "-o", tmp_path / "o3", "-q")
    assert rc == 1 and one_line(err, "v.vcf.gz")
    gz.write_bytes(gzip.compress(b"BCF\x02\x02rest"))
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, gz, "-o", tmp_path / "o4", "-q")
    assert rc == 1 and one_line(err, "a BCF file")
    gz.write_bytes(b"BCF\x02\x02rest")  # uncompressed BCF
    rc, err = cli(capsys, "sad", "-m", small, "-f", genome, gz, "-o", tmp_path / "o5", "-q")
    assert rc == 1 and one_line(err, "a BCF file")
    assert all(left_behind(tmp_path / f"o{i}") == [] for i in range(1, 6))


def test_a_trailing_newline_is_not_a_crash(small, genome, visible, tmp_path, capsys):
    """issue 15's first case: a trailing blank line made cyvcf2 segfault on an empty record."""
    vcf = tmp_path / "t.vcf"
    vcf.write_text((visible / "variants_sadsafe.vcf").read_text() + "\n")
    with pytest.warns(UserWarning, match="skipping VCF line 49: not a VCF record"):
        rc, err = cli(capsys, "sad", "-m", small, "-f", genome, vcf, "-o", tmp_path / "o", "-q")
    assert rc == 0 and err == []
    assert (tmp_path / "o" / "skipped.tsv").read_text().splitlines()[-1] == (
        "49\t.\t.\t.\t.\t.\tnot a VCF record (htslib cannot parse the line)")


# ----------------------------------------------------------------------------------------------
# Output paths: checked before the work
# ----------------------------------------------------------------------------------------------
def test_convert_never_replaces_its_input(tmp_path, capsys):
    src = tmp_path / "model.h5"
    shutil.copy(fixture_path("tf-small", "model.h5"), src)
    before = src.read_bytes()
    for out in (src, tmp_path / "." / "model.h5"):
        rc, err = cli(capsys, "convert", src, "-o", out)
        assert rc == 1 and one_line(err, "the output file is also an input")
    rc, err = cli(capsys, "convert", src, fixture_path("tf-small", "model_mouse.h5"), "-o",
                  fixture_path("tf-small", "model_mouse.h5"))
    assert rc == 1 and one_line(err, "also an input")
    assert src.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["model.h5"]


@pytest.mark.parametrize("where, words", [
    ("missing/x.safetensors", "does not exist"), ("file.txt/x.safetensors", "is not a folder"),
    (".", "a folder; the output file must be a file name"),
])
def test_convert_into_a_bad_place(tmp_path, capsys, where, words):
    (tmp_path / "file.txt").write_text("a file")
    rc, err = cli(capsys, "convert", fixture_path("tf-small", "model.h5"), "-o", tmp_path / where)
    assert rc == 1 and one_line(err, "basenji2-fast convert: error: ", words)
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_outputs_checked_before_long_work(small, genome, visible, tmp_path, capsys, monkeypatch):
    import basenji2_fast.workflows.heads as heads

    (tmp_path / "file.txt").write_text("a file")
    monkeypatch.setattr(heads, "fit_head", lambda *a, **k: pytest.fail("fit-head ran before checking -o"))
    rc, err = cli(capsys, "fit-head", "-m", small, "-f", genome, visible / "regions.bed", "--bigwigs",
                  tmp_path / "x.bw", "-o", tmp_path / "missing" / "new.safetensors")
    assert rc == 1 and one_line(err, "missing", "does not exist")
    rc, err = cli(capsys, "fit-head", "-m", small, "-f", genome, visible / "regions.bed", "--bigwigs",
                  tmp_path / "x.bw", "-o", small)
    assert rc == 1 and one_line(err, "also an input")
    for command, extra in (("predict-bed", [visible / "regions.bed"]), ("sat", [visible / "regions.bed"]),
                           ("predict-genome", []), ("sad", [visible / "variants_sadsafe.vcf"])):
        rc, err = cli(capsys, command, "-m", small, "-f", genome, *extra, "-o", tmp_path / "file.txt", "-q")
        assert rc == 1 and one_line(err, "file.txt: exists and is not a folder"), command
    rc, err = cli(capsys, "embed", "-m", small, "-f", genome, visible / "regions.bed", "-o", tmp_path, "-q")
    assert rc == 1 and one_line(err, "a folder; the output file must be a file name")
    rc, err = cli(capsys, "test", "-m", small, "-f", genome, visible / "regions.bed", "-t", visible / "targets.txt",
                  "-o", tmp_path / "file.txt" / "acc.tsv")
    assert rc == 1 and one_line(err, "is not a folder")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_overwrite_is_worded_for_each_side(small, genome, visible, tmp_path, capsys):
    from basenji2_fast.workflows.genome_tiling import predict_genome

    assert cli(capsys, "predict-genome", "-m", small, "-f", genome, "-o", tmp_path, "--tracks", "0",
               "--chroms", "chrX", "-q")[0] == 0
    rc, err = cli(capsys, "predict-genome", "-m", small, "-f", genome, "-o", tmp_path, "--tracks", "1",
                  "--chroms", "chrX", "-q")
    line = one_line(err, "--overwrite")
    assert rc == 1 and "=True" not in line
    with pytest.raises(ValueError, match="overwrite=True") as e:
        predict_genome(load(small), genome, tmp_path, tracks=[1], chroms=["chrX"], progress=False)
    assert "--overwrite" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# Partial outputs: predict-genome's bigWigs are committed together with its manifest
# ----------------------------------------------------------------------------------------------
def test_a_killed_assembly_leaves_no_finished_looking_folder(small, genome, visible, tmp_path, capsys, monkeypatch):
    import basenji2_fast.workflows.genome_tiling as gt

    out = tmp_path / "o"
    real = gt._write_tracks
    calls = []

    def killed(out_dir, partial, sizes, todo, records, tiling, jobs):
        real(out_dir, partial, sizes, todo, records, tiling, jobs[:1])  # one bigWig written, then killed
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(gt, "_write_tracks", killed)
    assert main(["predict-genome", "-m", str(small), "-f", str(genome), "-o", str(out), "--tracks", "0,1,2",
                 "--chroms", "chrX", "-q"]) == 130  # Ctrl-C: one line, status 130
    assert calls and not list(out.glob("*.bw")) and not (out / "manifest.json").exists()
    monkeypatch.setattr(gt, "_write_tracks", real)
    # the readers refuse the unfinished folder
    rc, err = cli(capsys, "plot", "--bigwigs", out, "--region", "chrX:1-10000", "-o", tmp_path / "p.png")
    assert rc == 1 and one_line(err, "an unfinished predict-genome job", "rerun") and not (tmp_path / "p.png").exists()
    (out / "1_t1.bw").write_bytes((out / ".partial" / "staged" / "0_t0.bw").read_bytes())  # a stray final name
    targets = tmp_path / "targets.txt"
    targets.write_text("index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
                       f"0\tt1\t{out / '1_t1.bw'}\t384\t1\tsum\tstray\n")
    rc, err = cli(capsys, "test", "-m", small, "-f", genome, visible / "regions_interior.bed", "-t", targets,
                  "--tracks", "0", "-o", tmp_path / "acc.tsv", "-q")
    assert rc == 1 and one_line(err, "an unfinished predict-genome job") and not (tmp_path / "acc.tsv").exists()
    # rerun: finishes, and the readers accept it
    assert cli(capsys, "predict-genome", "-m", small, "-f", genome, "-o", out, "--tracks", "0,1,2",
               "--chroms", "chrX", "-q")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["0_t0.bw", "1_t1.bw", "2_t2.bw", "manifest.json"]
    assert cli(capsys, "plot", "--bigwigs", out, "--region", "chrX:1-10000", "-o", tmp_path / "p.png")[0] == 0


def test_an_unrelated_manifest_is_not_a_job(small, genome, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"name": "my project"}\n')
    for extra in ([], ["--overwrite"]):
        rc, err = cli(capsys, "predict-genome", "-m", small, "-f", genome, "-o", tmp_path, "--tracks", "0", "-q",
                      *extra)
        assert rc == 1 and one_line(err, "manifest.json: not a predict-genome manifest")
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]
    assert (tmp_path / "manifest.json").read_text() == '{"name": "my project"}\n'
