"""orthologs: sums over the bins covering each interval against direct Model.predict of the
same windows, track matching (map file, identical descriptions), cross-species mode, the
files and the bad-input errors. The merged tf-small model; the fixture genome is the human
FASTA and a mutated copy of it the mouse one."""
import math
import re

import numpy as np
import pytest

import basenji2_fast as b2
from basenji2_fast.cli import main
from basenji2_fast.workflows.orthologs import compare_orthologs, read_pairs, read_track_map, side_paths, write_orthologs
from basenji2_fast.targets import read_targets

from conftest import fixture_path

HEADER = "index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
# mouse targets (7 rows = the mouse head): descriptions equal to some of the fixture human
# targets (case and spaces aside), one of them twice
MOUSE_ROWS = ["CAGE:synthetic sample 3 (visible)", "DNASE:synthetic sample 0 (visible)", "DNASE:other",
              "atac:synthetic  sample 1 (VISIBLE)", "CAGE:synthetic sample 3 (visible)", "X", "Y"]
PAIRS = ("# orthologous pairs\n"
         "human\tmouse\tname\n"
         "chr1:99613-100514\tchr1:99,613-100,514\tsame\n"
         "chr2\t81942\t82639\tchr2\t81900\t82600\tbedpe\n"
         "chrX:16311-17311\tchr1:154347-155347\n"
         "chr1:200000-200128\tchr2:1000-1300\tnear_start\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("orth")
    b2.convert(fixture_path("tf-small", "model.h5"), d / "both.safetensors",
               mouse=fixture_path("tf-small", "model_mouse.h5"))
    # the 'mouse' genome: the fixture genome with ~5% of its bases changed
    rng = np.random.default_rng(3)
    fa = b2.genome.open_fasta(fixture_path("basenji-cli", "visible", "genome.fa"))
    with open(d / "mouse.fa", "w") as fh:
        for name in fa.keys():
            seq = np.frombuffer(str(fa[name][:]).upper().encode(), np.uint8).copy()
            hit = rng.random(len(seq)) < 0.05
            seq[hit] = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, hit.sum())]
            fh.write(f">{name}\n")
            s = seq.tobytes().decode()
            for i in range(0, len(s), 60):
                fh.write(s[i:i + 60] + "\n")
    (d / "targets_mouse.txt").write_text(HEADER + "".join(f"{i}\tM{i}\t/x\t32\t2\tsum\t{t}\n"
                                                           for i, t in enumerate(MOUSE_ROWS)))
    (d / "pairs.tsv").write_text(PAIRS)
    return {"model": d / "both.safetensors", "human": fixture_path("basenji-cli", "visible", "genome.fa"),
            "mouse": d / "mouse.fa", "targets_human": fixture_path("basenji-cli", "visible", "targets.txt"),
            "targets_mouse": d / "targets_mouse.txt", "pairs": d / "pairs.tsv"}


@pytest.fixture(scope="module")
def model(files):
    return b2.load(files["model"], threads=2)


def _direct(model, fasta, iv, head, center_bins=None):
    """float64 [tracks]: the window centred on iv predicted directly, summed over the output
    bins that overlap iv (or the center_bins central ones)."""
    chrom, s, e = iv
    pred = model.predict_interval(fasta, f"{chrom}:{s}-{e}", head=head).astype(np.float64)
    if center_bins:
        b0 = (model.n_bins - center_bins) // 2
        return pred[b0:b0 + center_bins].sum(0)
    first = (s + e) // 2 - model.seq_length // 2 + model.spec.crop_bins * model.bin_size
    starts = first + model.bin_size * np.arange(model.n_bins)
    keep = (starts < e) & (starts + model.bin_size > s)
    return pred[keep].sum(0)


def test_read_pairs(files):
    pairs = read_pairs(files["pairs"])
    assert [p.name for p in pairs] == ["same", "bedpe", "chrX:16311-17311", "near_start"]
    assert pairs[1].human == ("chr2", 81942, 82639) and pairs[1].mouse == ("chr2", 81900, 82600)
    assert pairs[0].mouse == ("chr1", 99613, 100514) and [p.line for p in pairs] == [3, 4, 5, 6]


def _direct_minus(model, fasta, iv, head):
    """float64 [tracks]: the reverse complement of the window centred on iv predicted
    directly, its bins put back in genome order, summed over the bins that overlap iv."""
    chrom, s, e = iv
    L = model.seq_length
    start = (s + e) // 2 - L // 2
    fa = b2.genome.open_fasta(fasta) if not hasattr(fasta, "keys") else fasta
    assert start >= 0 and start + L <= len(fa[chrom])  # no N padding needed for these windows
    seq = str(fa[chrom][start:start + L]).upper()
    rc = seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))
    pred = model.predict(rc, head=head).astype(np.float64)[0][::-1]
    first = start + model.spec.crop_bins * model.bin_size
    starts = first + model.bin_size * np.arange(model.n_bins)
    return pred[(starts < e) & (starts + model.bin_size > s)].sum(0)


def test_strands_read(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("chr1:100-200:-\tchr1:300-400:+\ta\n"
                    "chr1:100-200:.\tchr1:5000:-\n"
                    "chr1\t100\t200\tchr2\t300\t400\tb\t.\t-\n"
                    "chr1\t100\t200\tchr2\t300\t400\tc\t0\t-\t+\n")
    pairs = read_pairs(path)
    assert [(p.human_strand, p.mouse_strand) for p in pairs] == [("-", "+"), ("+", "-"), ("+", "-"), ("-", "+")]
    assert pairs[0].human == ("chr1", 100, 200) and pairs[1].mouse == ("chr1", 5000, 5001)
    assert [p.name for p in pairs] == ["a", "chr1:100-200", "b", "c"]


def test_minus_strand_is_the_reverse_complement_in_genome_order(model, files, tmp_path):
    ivs = [(("chr1", 99613, 100514), ("chr1", 99613, 100514)), (("chr2", 81942, 82639), ("chr2", 81900, 82600)),
           (("chrX", 16311, 17311), ("chr1", 154347, 155347)), (("chr1", 200000, 200257), ("chr2", 81900, 82157))]
    plus = [(h, m) for h, m in ivs]
    mixed = [(h + ("-",), m + ("+",)) for h, m in ivs[:1]] + [(h + (".",), m + ("-",)) for h, m in ivs[1:2]] + \
        [(_s(h) + ":-", _s(m) + ":-") for h, m in ivs[2:]]
    # 257 bp: bins 47-49, not symmetric about the centre, so the flip back to genome order matters
    assert tuple(map(tuple, compare_orthologs(model, files["human"], files["mouse"], ivs[3:], track_map=[(0, 0)])
                     .human_bins)) == ((47, 50),)
    kw = dict(cross=True, track_map=[(0, 1), (3, 0)], batch_size=2)
    fwd = compare_orthologs(model, files["human"], files["mouse"], plus, **kw)
    res = compare_orthologs(model, files["human"], files["mouse"], mixed, **kw)
    assert [(p.human_strand, p.mouse_strand) for p in res.pairs] == [("-", "+"), ("+", "-"), ("-", "-"), ("-", "-")]
    # same bins as on the + strand: they still cover the interval
    assert (res.human_bins == fwd.human_bins).all() and (res.mouse_bins == fwd.mouse_bins).all()
    for i, p in enumerate(res.pairs):
        hc, mc = res.human_sel.columns, res.mouse_sel.columns  # [0, 3], [1, 0]
        for seq_iv, strand, fasta, own, other, cols, xcols, val, crossval, fval, fcross in (
                (p.human, p.human_strand, files["human"], "human", "mouse", hc, mc, res.human, res.human_on_mouse,
                 fwd.human, fwd.human_on_mouse),
                (p.mouse, p.mouse_strand, files["mouse"], "mouse", "human", mc, hc, res.mouse, res.mouse_on_human,
                 fwd.mouse, fwd.mouse_on_human)):
            if strand == "-":
                want = _direct_minus(model, fasta, seq_iv, own)[cols]
                want_x = _direct_minus(model, fasta, seq_iv, other)[xcols]
                np.testing.assert_allclose(val[i], want, rtol=1e-5)
                np.testing.assert_allclose(crossval[i], want_x, rtol=1e-5)
                assert not np.allclose(val[i], fval[i], rtol=1e-4)  # really a different prediction
            else:  # '+' and '.' are the forward strand
                np.testing.assert_array_equal(val[i], fval[i])
                np.testing.assert_array_equal(crossval[i], fcross[i])
    write_orthologs(res, tmp_path / "o.tsv")
    rows = [line.split("\t") for line in (tmp_path / "o.tsv").read_text().splitlines()[1:]]
    assert [r[1:3] for r in rows[::2]] == [["chr1:99613-100514:-", "chr1:99613-100514"],
                                           ["chr2:81942-82639", "chr2:81900-82600:-"],
                                           ["chrX:16311-17311:-", "chr1:154347-155347:-"],
                                           ["chr1:200000-200257:-", "chr2:81900-82157:-"]]


def _s(iv):
    return f"{iv[0]}:{iv[1]}-{iv[2]}"


def test_sums_equal_direct_predictions_with_cross(model, files):
    res = compare_orthologs(model, files["human"], files["mouse"], files["pairs"], cross=True,
                            human_targets=files["targets_human"], mouse_targets=files["targets_mouse"],
                            batch_size=3)
    assert res.human.shape == (4, 12) and res.mouse.shape == (4, 7)
    for i, p in enumerate(res.pairs):
        np.testing.assert_allclose(res.human[i], _direct(model, files["human"], p.human, "human"), rtol=1e-6)
        np.testing.assert_allclose(res.mouse[i], _direct(model, files["mouse"], p.mouse, "mouse"), rtol=1e-6)
        np.testing.assert_allclose(res.human_on_mouse[i], _direct(model, files["human"], p.human, "mouse"),
                                   rtol=1e-6)
        np.testing.assert_allclose(res.mouse_on_human[i], _direct(model, files["mouse"], p.mouse, "human"),
                                   rtol=1e-6)
    # the mutated genome really differs: the same interval predicts differently
    assert not np.allclose(res.human_on_mouse[0], res.mouse[0])
    # bins: 901 bp around the centre of the 96 x 128 bp output covers 8 bins; 128 bp aligned: 1 or 2
    assert tuple(res.human_bins[0]) == (44, 52)
    # matched by description: human rows 0 (DNASE 0), 1 (ATAC 1), 3 (CAGE 3, first mouse CAGE 3 only)
    assert [(res.human_sel.columns[h], res.mouse_sel.columns[m]) for h, m in res.matched] == [(0, 1), (1, 3), (3, 0)]
    lr = res.log2_ratio()
    np.testing.assert_allclose(lr[:, 0], np.log2((res.human[:, 0] + 1) / (res.mouse[:, 1] + 1)))
    summ = res.summary()
    assert summ[2]["pearson_r"] == pytest.approx(np.corrcoef(res.human[:, 3], res.mouse[:, 0])[0, 1])
    assert summ[0]["pearson_r_human_head"] == pytest.approx(np.corrcoef(res.human[:, 0],
                                                                        res.mouse_on_human[:, 0])[0, 1])


def test_center_bins_and_rc(model, files):
    res = compare_orthologs(model, files["human"], files["mouse"], files["pairs"], center_bins=4, rc=True,
                            human_targets=files["targets_human"], mouse_targets=files["targets_mouse"])
    assert (res.human_bins == [46, 50]).all() and (res.mouse_bins == [46, 50]).all()
    p = res.pairs[2]
    window = model.predict_interval(files["mouse"], f"{p.mouse[0]}:{p.mouse[1]}-{p.mouse[2]}", head="mouse", rc=True)
    np.testing.assert_allclose(res.mouse[2], window[46:50].astype(np.float64).sum(0), rtol=1e-6)


def test_track_map(model, files, tmp_path):
    ht, mt = read_targets(files["targets_human"]), read_targets(files["targets_mouse"])
    path = tmp_path / "map.tsv"
    path.write_text("human\tmouse\n# identifiers or rows\nCNhs0020\tM6\n2\t5\nCNhs0020\tM2\n")
    assert read_track_map(path, ht, mt, 12, 7) == [(11, 6), (2, 5), (11, 2)]
    res = compare_orthologs(model, files["human"], files["mouse"], files["pairs"], track_map=path,
                            human_targets=ht, mouse_targets=mt)
    # only the mapped tracks were computed, each once
    assert res.human_sel.columns == [11, 2] and res.mouse_sel.columns == [6, 5, 2]
    assert res.matched == [(0, 0), (1, 1), (0, 2)]
    np.testing.assert_allclose(res.mouse[:, 1], [_direct(model, files["mouse"], p.mouse, "mouse")[5]
                                                 for p in res.pairs], rtol=1e-6)
    # without targets files, entries are head columns
    res = compare_orthologs(model, files["human"], files["mouse"], files["pairs"],
                            track_map=[(4, 0)])
    assert res.human_sel.columns == [4] and res.mouse_sel.identifiers == ["t0"]
    # a mapped track outside the selection; a map line that names no single track
    with pytest.raises(ValueError, match="mouse track M6 .row 6. is not among the selected tracks"):
        compare_orthologs(model, files["human"], files["mouse"], files["pairs"], track_map=path,
                          human_targets=ht, mouse_targets=mt, mouse_tracks="M2,M5")
    path.write_text("CNhs0020\tM6\nCNhs0020\tnothing_like_this\n")
    with pytest.raises(ValueError, match=r"map.tsv:2: mouse track: .*matched nothing"):
        read_track_map(path, ht, mt, 12, 7)
    path.write_text("CNhs0020\tM6\tx\n")
    with pytest.raises(ValueError, match=r"map.tsv:1: expected 2 tab-separated columns"):
        read_track_map(path, ht, mt, 12, 7)


def test_matching_needs_targets_or_a_match(model, files):
    with pytest.raises(ValueError, match="needs both targets files"):
        compare_orthologs(model, files["human"], files["mouse"], files["pairs"], human_targets=files["targets_human"])
    with pytest.raises(ValueError, match="no selected human track"):
        compare_orthologs(model, files["human"], files["mouse"], files["pairs"], human_targets=files["targets_human"],
                          mouse_targets=files["targets_mouse"], human_tracks="^CHIP")
    with pytest.raises(ValueError, match="no head 'rat'"):
        compare_orthologs(model, files["human"], files["mouse"], files["pairs"], track_map=[(0, 0)], mouse_head="rat")


@pytest.mark.parametrize("line, message", [
    ("chr1:100-200\n", "pairs.tsv:2: expected 2-3 tab-separated columns"),
    ("chr1:100-200\tchr1:300-x\n", "pairs.tsv:2: mouse interval 'chr1:300-x'"),
    ("chr1:200-100\tchr1:300-400\n", "pairs.tsv:2: human interval 'chr1:200-100'"),
    ("chr1\t1\t2\tchr1\tx\t4\n", "pairs.tsv:2: start/end 'x', '4' are not integers"),
    ("chr1\t1\t2\tchr1\t5\t4\tn\n", r"pairs.tsv:2: bad interval chr1:5-4"),
    ("chr1:100-200\tchr9:300-400\n", "pairs.tsv:2: no sequence 'chr9' in the mouse FASTA"),
    ("chr1:10000-30000\tchr1:300-400\n", "pairs.tsv:2: human interval chr1:10000-30000 .20,000 bp. reaches past"),
    ("chr1:100-200:x\tchr1:300-400\n", r"pairs.tsv:2: human interval 'chr1:100-200:x': bad strand 'x' "
                                        r"\(expected \+, - or \.\)"),
    ("chr1:100-200\tchr1:300-400:plus\n", r"pairs.tsv:2: mouse interval 'chr1:300-400:plus': bad strand 'plus'"),
    ("chr1\t1\t2\tchr1\t3\t4\tn\t+\t?\n", r"pairs.tsv:2: mouse bad strand '\?'"),
    ("chr1\t1\t2\tchr1\t3\t4\tn\t0\t\t-\n", r"pairs.tsv:2: human bad strand ''"),
    ("chr1\t1\t2\tchr1\t3\t4\tn\t+\n", r"pairs.tsv:2: expected 2-3 tab-separated columns .* got 8"),
])
def test_bad_lines_are_one_line_errors_and_write_nothing(files, tmp_path, capsys, line, message):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("chr1:100-200\tchr1:100-200\tok\n" + line)
    rc = main(["orthologs", "-m", str(files["model"]), "--human-fasta", str(files["human"]), "--mouse-fasta",
               str(files["mouse"]), str(pairs), "-o", str(tmp_path / "out" / "o.tsv"), "--track-map",
               str(_map(tmp_path)), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def _map(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("0\t1\n")
    return path


def test_empty_pairs_file(files, tmp_path):
    (tmp_path / "p.tsv").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="p.tsv: no pairs"):
        read_pairs(tmp_path / "p.tsv")


def test_cli_files_and_plot(model, files, tmp_path, capsys):
    out = tmp_path / "res" / "out.tsv"
    rc = main(["orthologs", "-m", str(files["model"]), "--human-fasta", str(files["human"]), "--mouse-fasta",
               str(files["mouse"]), str(files["pairs"]), "-o", str(out), "--targets-human",
               str(files["targets_human"]), "--targets-mouse", str(files["targets_mouse"]), "--tracks-human", "0,1,3",
               "--cross", "--plot", str(tmp_path / "res" / "scatter.png"), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert "4 pairs, 3 matched track pairs" in capsys.readouterr().out
    tracks_path, summary_path = side_paths(out)
    assert tracks_path.name == "out.tracks.tsv" and summary_path.name == "out.summary.tsv"
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    head, rows = rows[0], rows[1:]
    assert head[-4:] == ["human_seq_mouse_head", "mouse_seq_human_head", "log2_ratio_human_head",
                         "log2_ratio_mouse_head"]
    assert len(rows) == 4 * 3
    col = {k: i for i, k in enumerate(head)}
    res = compare_orthologs(model, files["human"], files["mouse"], files["pairs"], cross=True,
                            human_targets=files["targets_human"], mouse_targets=files["targets_mouse"],
                            human_tracks="0,1,3")
    r0 = rows[3]  # pair 1 (bedpe), first matched track pair: human 0 vs mouse 1
    assert r0[col["name"]] == "bedpe" and r0[col["human_track"]] == "0" and r0[col["mouse_track"]] == "1"
    assert float(r0[col["human"]]) == pytest.approx(res.human[1, 0], rel=1e-5)
    assert float(r0[col["mouse"]]) == pytest.approx(res.mouse[1, 1], rel=1e-5)
    assert float(r0[col["log2_ratio"]]) == pytest.approx(math.log2((res.human[1, 0] + 1) / (res.mouse[1, 1] + 1)),
                                                         rel=1e-5)
    assert float(r0[col["log2_ratio_mouse_head"]]) == pytest.approx(
        math.log2((res.human_on_mouse[1, 1] + 1) / (res.mouse[1, 1] + 1)), rel=1e-5, abs=1e-6)
    # tracks file: 4 pairs x (3 human + 7 mouse tracks) x 2 (cross)
    assert len(tracks_path.read_text().splitlines()) == 1 + 4 * (3 + 7) * 2
    summary = [line.split("\t") for line in summary_path.read_text().splitlines()]
    assert summary[0][:2] == ["human_track", "mouse_track"] and len(summary) == 4
    h = [float(r[col["human"]]) for r in rows if r[col["human_track"]] == "3"]
    m = [float(r[col["mouse"]]) for r in rows if r[col["human_track"]] == "3"]
    assert float(summary[3][summary[0].index("pearson_r")]) == pytest.approx(np.corrcoef(h, m)[0, 1], abs=1e-5)
    png = (tmp_path / "res" / "scatter.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
