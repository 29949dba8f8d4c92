"""basenji targets files and --tracks selectors (basenji2_fast.targets)."""
import numpy as np
import pytest

from basenji2_fast.targets import read_targets, select_tracks

HEADER = "index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription"


def _write(tmp_path, text, name="t.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _row(i, ident, desc, extra=""):
    return f"{i}\t0\t{ident}\t/x/{ident}.w5\t32\t2\tmean\t{desc}{extra}\n"


# The published files -------------------------------------------------------------------

def test_human_targets_assay_counts(shared):
    t = read_targets(shared("basenji2", "targets_human.txt"))
    assert len(t) == 5313 and t.strand_pair is None
    np.testing.assert_array_equal(t.index, np.arange(5313))
    assert t.identifier[0] == "ENCFF833POA" and t.sum_stat[-1] == "sum" and t.clip[-1] == 384
    counts = {a: len(select_tracks(t, f"^{a}:", 5313)) for a in ("DNASE", "ATAC", "CHIP", "CAGE")}
    assert counts == {"DNASE": 674, "ATAC": 10, "CHIP": 3991, "CAGE": 638}
    everything = select_tracks(t, None, 5313)
    assert everything.columns == list(range(5313)) and everything.is_all(5313)
    k562 = select_tracks(t, "CAGE:.*K562", 5313)
    assert len(k562) == 2 and all(lab.startswith("CAGE:") and "K562" in lab for lab in k562.labels)
    assert k562.columns == sorted(k562.columns)  # regex matches come in file order


def test_human_targets_by_identifier_and_row(shared):
    t = read_targets(shared("basenji2", "targets_human.txt"))
    sel = select_tracks(t, "CNhs14245,ENCFF833POA", 5313)  # in the order given
    assert sel.columns == [5312, 0] and sel.identifiers == ["CNhs14245", "ENCFF833POA"]
    assert sel.labels[0] == "CAGE:lung adenocarcinoma, papillary cell line:NCI-H441"
    assert select_tracks(t, "4675, 4676", 5313).columns == [4675, 4676]
    assert select_tracks(t, [7, 3], 5313).columns == [7, 3]


def test_mouse_targets_use_row_position_not_index(shared):
    t = read_targets(shared("basenji2", "targets_mouse.txt"))
    assert len(t) == 1643 and t.index[0] == 5313 and t.index[-1] == 6955
    sel = select_tracks(t, None, 1643)
    assert sel.columns == list(range(1643))  # index runs 5313..6955: not head columns
    assert select_tracks(t, "^CAGE:", 1643).columns[0] >= 0
    # with the human head (5313 outputs) the file would be a subset naming columns by
    # index: 5313 is not a column, so this is an error, not a silent mis-selection
    with pytest.raises(ValueError, match=r"targets_mouse.txt: line 2: index 5313 is not a column"):
        select_tracks(t, None, 5313)
    with pytest.raises(ValueError, match="1643 targets but the head has 12 outputs"):
        select_tracks(t, None, 12)


def test_fixture_targets(fixture_file):
    visible = fixture_file("basenji-cli", "visible")
    full = read_targets(visible / "targets.txt")
    assert full.genome is None and len(full) == 12
    assert select_tracks(full, None, 12).columns == list(range(12))
    assert select_tracks(full, "^CAGE:", 12).columns == [3, 7, 11]
    sub = read_targets(visible / "targets_sub.txt")
    sel = select_tracks(sub, None, 12)  # fewer rows than outputs: basenji's tf.gather on index
    assert sel.columns == [1, 2, 7, 8, 10] and sel.identifiers[0] == "ATAC2692"
    assert select_tracks(sub, "0,1", 12).columns == [1, 2]  # integers are rows of the file
    assert select_tracks(sub, "CNhs4308", 12).columns == [7]
    assert select_tracks(sub, "CHIP:", 12).columns == [2, 10]


# No targets file ------------------------------------------------------------------------

def test_no_targets_file_is_the_head():
    sel = select_tracks(None, None, 4)
    assert sel.columns == [0, 1, 2, 3] and sel.identifiers == ["t0", "t1", "t2", "t3"]
    assert sel.labels == sel.identifiers and sel.strand_pair is None
    assert select_tracks(None, "3,1", 4).columns == [3, 1]
    assert select_tracks(None, "t2", 4).columns == [2]
    with pytest.raises(ValueError, match=r"^track 4 out of range: the head has 4 tracks \(0\.\.3\)$"):
        select_tracks(None, "4", 4)


# Selectors that fail ---------------------------------------------------------------------

def test_selector_errors_say_what_was_tried(fixture_file):
    t = read_targets(fixture_file("basenji-cli", "visible", "targets.txt"))
    with pytest.raises(ValueError) as e:
        select_tracks(t, "K562", 12)
    msg = str(e.value)
    assert "'K562'" in msg and "integers" in msg and "identifiers" in msg and "regular expression" in msg
    with pytest.raises(ValueError, match="not a valid regular expression"):
        select_tracks(t, "CAGE:(", 12)
    with pytest.raises(ValueError, match=r"track 12 out of range: .*targets\.txt has 12 rows \(0\.\.11\)$"):
        select_tracks(t, "0,12", 12)
    with pytest.raises(ValueError, match="selected twice"):
        select_tracks(t, "CNhs8870,CNhs8870", 12)


# Layout variants and malformed files -------------------------------------------------------

@pytest.mark.parametrize("header", [
    HEADER,                                   # named index column
    "\t" + HEADER.split("\t", 1)[1],          # pandas to_csv: unnamed leading column
    HEADER.split("\t", 1)[1],                 # header one field short (index column unnamed, absent)
])
def test_index_column_named_unnamed_or_absent_from_header(tmp_path, header):
    text = header + "\n" + _row(4, "A1", "DNASE:a") + _row(9, "B2", "CAGE:b")
    t = read_targets(_write(tmp_path, text))
    assert list(t.index) == [4, 9] and t.identifier == ["A1", "B2"] and t.description == ["DNASE:a", "CAGE:b"]
    assert select_tracks(t, None, 12).columns == [4, 9]


def test_file_without_index_column(tmp_path):
    text = "identifier\tdescription\r\nA1\tDNASE:a\r\n\r\nB2\tCAGE:b\r\n"  # CRLF and a blank line
    t = read_targets(_write(tmp_path, text))
    assert list(t.index) == [0, 1] and t.description == ["DNASE:a", "CAGE:b"] and t.file == ["", ""]


@pytest.mark.parametrize("text, match", [
    ("", "empty targets file"),
    ("index\tname\tdescription\n0\ta\tb\n", r"line 1: no 'identifier' column"),
    (HEADER + "\n" + _row(0, "A", "x") + "1\t0\tB\tf\t32\n", r"line 3: 5 tab-separated fields, expected 8"),
    (HEADER + "\n" + _row("one", "A", "x"), r"line 2: column 'index': 'one' is not a number"),
    (HEADER + "\n" + _row(0, "A", "x").replace("\t32\t", "\tbig\t"), r"line 2: column 'clip'"),
    (HEADER + "\n" + _row(3, "A", "x") + _row(3, "B", "y"), r"line 3: index 3 repeats line 2"),
    (HEADER + "\tstrand_pair\n" + _row(0, "A", "x", "\t-"), r"line 2: column 'strand_pair'"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, match):
    path = _write(tmp_path, text, "bad_targets.txt")
    with pytest.raises(ValueError, match=match) as e:
        read_targets(path)
    assert "bad_targets.txt" in str(e.value)


# Strand pairs --------------------------------------------------------------------------------

def test_strand_pairs_map_into_the_selection(tmp_path):
    # rows: 0/1 a +/- pair, 2 unstranded, 3/4 a pair; strand_pair holds index values
    # (10..14), as the newer basenji files do
    text = HEADER + "\tclip_soft\tstrand_pair\n" + "".join(
        _row(10 + i, f"id{i}", f"CAGE:s{i}", f"\t16\t{10 + p}") for i, p in enumerate([1, 0, 2, 4, 3]))
    t = read_targets(_write(tmp_path, text))
    assert list(t.strand_pair) == [11, 10, 12, 14, 13] and list(t.clip_soft) == [16.0] * 5
    assert list(t.pair_rows()) == [1, 0, 2, 4, 3]
    assert select_tracks(t, None, 5).strand_pair == [1, 0, 2, 4, 3]
    # reordered selection: positions within the selection
    assert select_tracks(t, "4,2,3,1,0", 5).strand_pair == [2, 1, 0, 4, 3]
    # a partner left out of the selection: the track pairs with itself
    assert select_tracks(t, "0,2,3", 5).strand_pair == [0, 1, 2]
    # and in a subset file (fewer rows than outputs) the head columns come from index
    sel = select_tracks(t, "id3,id4", 20)
    assert sel.columns == [13, 14] and sel.strand_pair == [1, 0]
