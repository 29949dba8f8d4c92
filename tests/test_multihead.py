"""Both species in one pass: the merged tf-small model (human + mouse heads on one trunk)
against TensorFlow's outputs, one trunk pass for both heads, and ``--head both`` in
predict-genome, predict-bed, sad and sat (each head's output equals its single-head run)."""
import json
import warnings

import h5py
import numpy as np
import pyBigWig
import pytest

import basenji2_fast as b2
from basenji2_fast.cli import build_parser, main
from basenji2_fast.windows import plan_heads

from conftest import fixture_path

TOL = 1e-4
HUMAN_T, MOUSE_T = 12, 7  # tf-small head sizes
HEADER = "index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"


@pytest.fixture(scope="module")
def merged_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "both.safetensors"
    b2.convert(fixture_path("tf-small", "model.h5"), out, mouse=fixture_path("tf-small", "model_mouse.h5"))
    return out


@pytest.fixture(scope="module")
def merged(merged_path):
    return b2.load(merged_path, threads=2)


@pytest.fixture(scope="module")
def mouse_targets(tmp_path_factory):
    """A 7-row targets file for the mouse head (strand pairs 0<->1)."""
    path = tmp_path_factory.mktemp("targets") / "targets_mouse.txt"
    pair = {0: 1, 1: 0}
    rows = "".join(f"{i}\tm{i}\t/x\t32\t2\tsum\t{'CAGE' if i < 2 else 'DNASE'}:mouse {i}\t{pair.get(i, i)}\n"
                   for i in range(MOUSE_T))
    path.write_text(HEADER.replace("\n", "\tstrand_pair\n") + rows)
    return path


class _CountingEngine:
    """Wraps the compiled engine: records each call that runs the trunk (predict, trunk)."""

    def __init__(self, engine):
        self._engine, self.calls = engine, []

    def predict(self, codes, requests, n_uniform, *outs):
        self.calls.append(("predict", codes.shape[0], [h for h, _ in requests]))
        return self._engine.predict(codes, requests, n_uniform, *outs)

    def trunk(self, codes, n_uniform):
        self.calls.append(("trunk", codes.shape[0], []))
        return self._engine.trunk(codes, n_uniform)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_both_heads_match_tensorflow_with_one_trunk_pass(merged_path):
    model = b2.load(merged_path, threads=2)
    x = np.load(fixture_path("tf-small", "inputs.npy"))  # [4, 16384, 4]
    counter = _CountingEngine(model._engine)
    model._engine = counter
    both = model.predict(x, head="both", batch_size=len(x))
    assert set(both) == {"human", "mouse"}
    assert np.abs(both["human"] - np.load(fixture_path("tf-small", "outputs.npy"))).max() <= TOL
    assert np.abs(both["mouse"] - np.load(fixture_path("tf-small", "outputs_mouse.npy"))).max() <= TOL
    # One engine call for the batch, asking for both heads: the engine runs the trunk once per
    # sequence of a call and then each requested head on that trunk output.
    assert counter.calls == [("predict", len(x), [model._head_index["human"], model._head_index["mouse"]])]
    # A head at a time costs a trunk pass each: what "both" saves.
    counter.calls.clear()
    human = model.predict(x, head="human", batch_size=len(x))
    mouse = model.predict(x, head="mouse", batch_size=len(x))
    assert len(counter.calls) == 2
    np.testing.assert_array_equal(human, both["human"])
    np.testing.assert_array_equal(mouse, both["mouse"])


# Head plans ---------------------------------------------------------------------------------

def test_plan_heads(merged, mouse_targets):
    assert plan_heads(merged) == (False, [(None, None, None)])
    multi, reqs = plan_heads(merged, "both", tracks="0,1")
    assert multi and [r.head for r in reqs] == ["human", "mouse"] and [r.tracks for r in reqs] == ["0,1", "0,1"]
    # a plain targets file goes to the head whose output count it fits; a plain selector to
    # every head without its own
    multi, reqs = plan_heads(merged, "both", tracks={"human": "3", None: "m1"}, targets=str(mouse_targets))
    assert [(r.head, r.tracks) for r in reqs] == [("human", "3"), ("mouse", "m1")]
    assert reqs[0].targets is None and reqs[1].targets.path == str(mouse_targets)
    # HEAD= values choose the heads when --head is absent
    assert [r.head for r in plan_heads(merged, None, tracks={"mouse": "1"})[1]] == ["mouse"]
    assert plan_heads(merged, None, tracks={"mouse": "1", "human": "2"})[0]
    assert [r.head for r in plan_heads(merged, "mouse,human")[1]] == ["mouse", "human"]
    with pytest.raises(ValueError, match="no head 'rat'"):
        plan_heads(merged, "rat")
    with pytest.raises(ValueError, match="which is not predicted"):
        plan_heads(merged, "human", tracks={"mouse": "1"})
    with pytest.raises(ValueError, match="name its head"):
        plan_heads(merged, "both", targets=fixture_path("basenji-cli", "visible", "targets_sub.txt"))
    with pytest.raises(ValueError, match="named twice"):
        plan_heads(merged, "human,human")
    with pytest.raises(ValueError, match="one head"):
        plan_heads(b2.load(fixture_path("tf-small", "model.h5")), "both")


def test_per_head_options_parse(tmp_path, monkeypatch):
    weird = tmp_path / "a=b.txt"  # an existing file whose name has '=' is a plain path
    weird.write_text(HEADER)
    monkeypatch.chdir(tmp_path)
    for name in ("tm.txt", "x", "y"):  # targets files are checked while parsing
        (tmp_path / name).write_text(HEADER)
    args = build_parser().parse_args(["predict-bed", "-m", "m", "-f", "g", "r.bed", "-o", "o", "--head", "both",
                                      "-t", "mouse=tm.txt", "-t", str(weird), "--tracks", "human=0,3",
                                      "--tracks", "CAGE:.*"])
    assert args.targets == str(weird) and args.targets_by_head == {"mouse": "tm.txt"}
    assert args.tracks == "CAGE:.*" and args.tracks_by_head == {"human": "0,3"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sat", "-m", "m", "-f", "g", "r.bed", "-o", "o", "-t", "x", "-t", "y"])


# predict-bed ---------------------------------------------------------------------------------

def _h5(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}


def test_predict_bed_both_equals_single_head_runs(merged_path, mouse_targets, tmp_path, capsys):
    vis = fixture_path("basenji-cli", "visible")
    base = ["predict-bed", "-m", str(merged_path), "-f", str(vis / "genome.fa"), str(vis / "regions.bed"), "-q",
            "-b", "0,1", "--rc", "--target-names"]
    assert main(base + ["-o", str(tmp_path / "both"), "--head", "both", "-t", f"mouse={mouse_targets}",
                        "--tracks", "mouse=m1,m5,m0", "--tracks", "human=0,3,11"]) == 0
    assert main(base + ["-o", str(tmp_path / "human"), "--head", "human", "--tracks", "0,3,11"]) == 0
    assert main(base + ["-o", str(tmp_path / "mouse"), "-t", str(mouse_targets), "--tracks", "m1,m5,m0"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'both' / 'human' / 'predict.h5'}, {tmp_path / 'both' / 'mouse' / 'predict.h5'}" in out
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["human", "mouse"]
    for head in ("human", "mouse"):
        both, single = _h5(tmp_path / "both" / head / "predict.h5"), _h5(tmp_path / head / "predict.h5")
        assert sorted(both) == sorted(single)
        for k in single:
            np.testing.assert_array_equal(both[k], single[k], err_msg=f"{head}/{k}")
        bws = sorted(p.name for p in (tmp_path / head / "bigwig").iterdir())
        assert bws and sorted(p.name for p in (tmp_path / "both" / head / "bigwig").iterdir()) == bws
        for name in bws:
            assert ((tmp_path / "both" / head / "bigwig" / name).read_bytes()
                    == (tmp_path / head / "bigwig" / name).read_bytes())
    assert _h5(tmp_path / "both" / "mouse" / "predict.h5")["target_ids"].tolist() == [b"m1", b"m5", b"m0"]


def test_predict_regions_api_both(merged):
    vis = fixture_path("basenji-cli", "visible")
    both = b2.predict_regions(merged, vis / "genome.fa", vis / "regions_interior.bed", head="both", site_length=256,
                              site_sum=True, tracks={"mouse": [6, 2]})
    assert both["human"].shape == (4, HUMAN_T) and both["mouse"].shape == (4, 2)
    np.testing.assert_array_equal(both["mouse"], b2.predict_regions(merged, vis / "genome.fa",
                                                                    vis / "regions_interior.bed", head="mouse",
                                                                    site_length=256, site_sum=True, tracks=[6, 2]))


def test_predict_bed_bad_per_head_option_is_one_line(merged_path, tmp_path, capsys):
    vis = fixture_path("basenji-cli", "visible")
    rc = main(["predict-bed", "-m", str(merged_path), "-f", str(vis / "genome.fa"), str(vis / "regions.bed"), "-q",
               "-o", str(tmp_path / "o"), "--head", "human", "--tracks", "mouse=1"])
    err = capsys.readouterr().err
    assert rc == 1 and "not predicted" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# predict-genome ------------------------------------------------------------------------------

def _bw_values(path):
    with pyBigWig.open(str(path)) as bw:
        return {c: bw.intervals(c) for c in bw.chroms()}


def test_predict_genome_both(merged_path, tmp_path, capsys, monkeypatch):
    from basenji2_fast.workflows import genome_tiling as gt

    vis = fixture_path("basenji-cli", "visible")
    base = ["predict-genome", "-m", str(merged_path), "-f", str(vis / "genome.fa"), "--chroms", "chr2,chrX", "-q",
            "--rc", "--batch-size", "3"]
    # killed after the first chromosome, then resumed
    calls = {"n": 0}
    real = gt._run_chromosome

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gt, "_run_chromosome", dies_on_second)
    both = base + ["-o", str(tmp_path / "both"), "--head", "both", "--tracks", "human=2,0", "--tracks", "mouse=6"]
    assert main(both) == 130  # interrupted
    monkeypatch.undo()
    assert main(both) == 0
    assert "wrote 3 bigWigs (human/, mouse/)" in capsys.readouterr().out
    assert main(base + ["-o", str(tmp_path / "human"), "--tracks", "2,0"]) == 0
    assert main(base + ["-o", str(tmp_path / "mouse"), "--head", "mouse", "--tracks", "6"]) == 0
    man = json.loads((tmp_path / "both" / "manifest.json").read_text())
    assert man["options"]["head"] == ["human", "mouse"]
    assert man["heads"]["mouse"] == {"dir": "mouse", "columns": [6], "identifiers": ["t6"], "files": ["mouse/6_t6.bw"]}
    assert man["tracks"]["files"] == ["human/2_t2.bw", "human/0_t0.bw", "mouse/6_t6.bw"]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["human", "manifest.json", "mouse"]
    for head in ("human", "mouse"):
        files = sorted(p.name for p in (tmp_path / head).glob("*.bw"))
        assert sorted(p.name for p in (tmp_path / "both" / head).iterdir()) == files
        for f in files:
            assert _bw_values(tmp_path / "both" / head / f) == _bw_values(tmp_path / head / f)
    # rerun: nothing to do; the head choice is part of the job: a single-head job is refused
    assert main(both) == 0 and "nothing to do" in capsys.readouterr().out
    assert main(base + ["-o", str(tmp_path / "both"), "--tracks", "2,0"]) == 1
    assert "other options" in capsys.readouterr().err
    # plotting: the job as a whole is refused (the heads' columns repeat); one head's folder
    # draws that head's tracks with the manifest's names
    from basenji2_fast.plots.tracks import read_bigwig_region
    with pytest.raises(ValueError, match=r"the bigWigs of 2 heads \(human, mouse\); draw one head's: --bigwigs"):
        read_bigwig_region(tmp_path / "both", "chrX:1000-5000", tracks="0")
    got = read_bigwig_region(tmp_path / "both" / "mouse", "chrX:1000-5000")
    assert got.columns == [6] and got.meta["files"] == [str(tmp_path / "both" / "mouse" / "6_t6.bw")]
    human = read_bigwig_region(tmp_path / "both" / "human", "chrX:1000-5000", tracks="0")
    np.testing.assert_array_equal(human.values, read_bigwig_region(tmp_path / "human", "chrX:1000-5000",
                                                                   tracks="0").values)


# sad -----------------------------------------------------------------------------------------

def test_sad_both_equals_single_head_runs(merged_path, mouse_targets, tmp_path, capsys):
    vis = fixture_path("basenji-cli", "visible")
    base = ["sad", "-m", str(merged_path), "-f", str(vis / "genome.fa"), str(vis / "variants.vcf"), "-q",
            "--stats", "SAD,REF", "--rc", "--batch-size", "16"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(base + ["-o", str(tmp_path / "both"), "--head", "both", "-t", str(mouse_targets),
                            "--tracks", "human=1,4"]) == 0
        assert main(base + ["-o", str(tmp_path / "human"), "--tracks", "1,4"]) == 0
        assert main(base + ["-o", str(tmp_path / "mouse"), "-t", str(mouse_targets)]) == 0
        for head in ("human", "mouse"):
            both, single = _h5(tmp_path / "both" / head / "sad.h5"), _h5(tmp_path / head / "sad.h5")
            assert sorted(both) == sorted(single)
            for k in single:
                np.testing.assert_array_equal(both[k], single[k], err_msg=f"{head}/{k}")
            assert ((tmp_path / "both" / head / "skipped.tsv").read_bytes()
                    == (tmp_path / head / "skipped.tsv").read_bytes())
        assert _h5(tmp_path / "both" / "mouse" / "sad.h5")["SAD"].shape[1] == MOUSE_T
        capsys.readouterr()
        assert main(base + ["-o", str(tmp_path / "both"), "--head", "both", "-t", str(mouse_targets),
                            "--tracks", "human=1,4"]) == 0
    assert capsys.readouterr().out.count("nothing to do") == 2
    # the API: {head: path}
    res = b2.write_sad(b2.load(merged_path), vis / "genome.fa", vis / "variants.vcf", tmp_path / "both",
                                head="both", targets={"mouse": mouse_targets}, tracks={"human": "1,4"},
                                stats=("SAD", "REF"), rc=True, batch_size=16, progress=False)
    assert res == {"human": tmp_path / "both" / "human" / "sad.h5", "mouse": tmp_path / "both" / "mouse" / "sad.h5"}


# sat -----------------------------------------------------------------------------------------

def test_sat_both_equals_single_head_runs(merged_path, tmp_path):
    vis = fixture_path("basenji-cli", "visible")
    base = ["sat", "-m", str(merged_path), "-f", str(vis / "genome.fa"), str(vis / "sat.bed"), "-q", "-l", "6",
            "--stats", "sum,scd"]
    assert main(base + ["-o", str(tmp_path / "both"), "--head", "both", "--tracks", "mouse=3,0"]) == 0
    assert main(base + ["-o", str(tmp_path / "human")]) == 0
    assert main(base + ["-o", str(tmp_path / "mouse"), "--head", "mouse", "--tracks", "3,0"]) == 0
    for head in ("human", "mouse"):
        both, single = _h5(tmp_path / "both" / head / "scores.h5"), _h5(tmp_path / head / "scores.h5")
        assert sorted(both) == sorted(single)
        for k in single:
            np.testing.assert_array_equal(both[k], single[k], err_msg=f"{head}/{k}")
    assert _h5(tmp_path / "both" / "mouse" / "scores.h5")["sum"].shape[-1] == 2
