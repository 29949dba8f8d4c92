"""fit_head: a head drawn at random is recovered from bigWigs of its own predictions (exact and
Poisson-sampled), through targets files and bigWig lists, saved and reloaded; bad input."""
import argparse

import numpy as np
import pytest

import basenji2_fast as b2
from basenji2_fast import dna
from basenji2_fast.coverage import open_coverage
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.workflows.heads import _poisson_terms, add_fit_head_subcommand, fit_head
from basenji2_fast.windows import window
from conftest import fixture_path
from synthetic_coverage import chrom_sizes, tiling_regions, write_bigwig, write_targets

pytest.importorskip("scipy")


def fresh_model():
    """Its own tf-small model: adding heads must not leak into the session's ``model``."""
    return b2.load(fixture_path("tf-small", "model.h5"), threads=2)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    add_fit_head_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def synth(tmp_path_factory, visible):
    """Regions tiling the fixture genome, their embeddings, a random true head (3 tracks) and
    bigWigs of its predictions: exact ones (sum, mean and scale=2 pooling) and Poisson counts."""
    model = fresh_model()
    tmp = tmp_path_factory.mktemp("heads")
    fasta = visible / "genome.fa"
    sizes = chrom_sizes(fasta)
    regions = tiling_regions(model, sizes)
    fa = open_fasta(fasta)
    codes = np.stack([dna.encode(fetch(fa, r[0], *window(r, model.seq_length))) for r in regions])
    emb = model.embed(codes).astype(np.float64)  # [regions, bins, C]
    rng = np.random.default_rng(7)
    C, T = emb.shape[2], 3
    w = rng.normal(size=(C, T))
    z = emb.reshape(-1, C) @ w
    # logits of mean m and spread s per track: rates vary over the bins far more than the
    # Poisson noise of the counts (mostly linear for track 0, 2; softplus's bend for track 1)
    m, sd = np.array([10.0, 3.0, 20.0]), np.array([5.0, 3.0, 8.0])
    w *= sd / z.std(axis=0)
    b = m - (z * sd / z.std(axis=0)).mean(axis=0)
    truth = np.logaddexp(0.0, emb @ w + b).astype(np.float32)  # [regions, bins, T]
    counts = rng.poisson(truth).astype(np.float32)
    bs = model.bin_size
    rows = []
    for t in range(T):
        # track 0 summed per base, 1 as means, 2 as means of half values with scale 2
        stat, div, scale = [("sum", bs, 1), ("mean", 1, 1), ("mean", 2, 2)][t]
        write_bigwig(tmp / f"exact{t}.bw", sizes, model, regions, truth[:, :, t], div)
        write_bigwig(tmp / f"counts{t}.bw", sizes, model, regions, counts[:, :, t], bs)
        rows.append((f"T{t}", f"exact{t}.bw", 1e9, scale, stat, f"CHIP:synthetic {t}"))
    write_targets(tmp / "targets.txt", rows)  # relative bigWig paths: resolved beside the file
    held = np.arange(len(regions)) % 4 == 2
    return dict(model=model, tmp=tmp, fasta=fasta, regions=regions, codes=codes, w=w, b=b, truth=truth,
                held=held, sizes=sizes)


def _held_out_r(model, s, head):
    pred = model.predict(s["codes"][s["held"]], head=head)
    truth = s["truth"][s["held"]]
    return np.array([np.corrcoef(pred[..., t].ravel(), truth[..., t].ravel())[0, 1] for t in range(truth.shape[2])])


def test_coverage_reads_what_was_written(synth):
    """The shared reader gives back the per-bin truth: sum of per-base values, mean, mean x scale."""
    s, model = synth, synth["model"]
    with open_coverage(s["tmp"] / "targets.txt") as cov:
        for i in (0, 5, len(s["regions"]) - 1):
            np.testing.assert_allclose(cov.read_window(s["regions"][i], model), s["truth"][i], rtol=1e-5)


def test_poisson_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3, size=(50, 2))
    z[0, 0] = -40.0  # the underflow branch
    y = rng.poisson(2.0, size=z.shape).astype(float)
    _, g = _poisson_terms(z, y)
    h = 1e-6
    for i, j in [(0, 0), (3, 1), (7, 0)]:
        zp, zm = z.copy(), z.copy()
        zp[i, j] += h
        zm[i, j] -= h
        fd = (_poisson_terms(zp, y)[0] - _poisson_terms(zm, y)[0]) / (2 * h)
        assert abs(fd - g[i, j]) < 1e-5 * max(1.0, abs(g[i, j]))


def test_recovers_exact_head_and_saves_it(synth, tmp_path):
    s, model = synth, synth["model"]
    train = [r for r, h in zip(s["regions"], s["held"]) if not h]
    fit = fit_head(model, s["fasta"], train, s["tmp"] / "targets.txt", l2=1e-9, name="synth", replace=True)
    assert fit.weight.shape == (model.spec.trunk_channels, 3) and fit.bias.shape == (3,)
    assert fit.n_bins == len(train) * model.n_bins and fit.tracks == ["T0", "T1", "T2"]
    assert np.all(fit.train_pearson > 0.999)
    r = _held_out_r(model, s, "synth")
    assert np.all(r > 0.999), r
    # the fitted predictions are the true rates, not merely correlated with them
    pred = model.predict(s["codes"][s["held"]], head="synth")
    truth = s["truth"][s["held"]]
    assert np.max(np.abs(pred - truth) / (truth + 1.0)) < 0.05
    # saved in the engine's format with the new head; reloaded, it predicts the same
    model.save(tmp_path / "with_head.safetensors")
    again = b2.load(tmp_path / "with_head.safetensors")
    assert again.head_names == ["human", "synth"]
    np.testing.assert_array_equal(again.predict(s["codes"][:3], head="synth"), model.predict(s["codes"][:3], head="synth"))
    np.testing.assert_array_equal(again.predict(s["codes"][:2]), model.predict(s["codes"][:2]))
    assert again.spec.metadata["source"][-1]["format"] == "fit_head"


def test_recovers_head_from_poisson_counts(synth):
    s = synth
    model = fresh_model()
    train = [r for r, h in zip(s["regions"], s["held"]) if not h]
    bws = [s["tmp"] / f"counts{t}.bw" for t in range(3)]
    fit = fit_head(model, s["fasta"], train, bws, l2=1e-6, name="counts", cache_mb=0.01, chunk_mb=0.05)
    assert fit.tracks == ["counts0", "counts1", "counts2"]
    r = _held_out_r(model, s, "counts")
    assert np.all(r >= 0.99), r


def test_memmap_cache_gives_the_same_fit(synth):
    """Cache on disk and chunks smaller than a region: the same head as the in-memory cache, bit
    for bit (every sum runs region by region whatever the chunking; before, the chunk size moved
    the rounding and L-BFGS carried it to a bias 1.2e-4 apart on an AVX-512 CPU)."""
    s = synth
    train = [r for r, h in zip(s["regions"], s["held"]) if not h][:12]
    bws = [s["tmp"] / "counts0.bw"]
    a = fit_head(fresh_model(), s["fasta"], train, bws, attach=False)
    b = fit_head(fresh_model(), s["fasta"], train, bws, attach=False, cache_mb=0.001, chunk_mb=0.01)
    np.testing.assert_array_equal(b.bias, a.bias)
    np.testing.assert_array_equal(b.weight, a.weight)
    assert b.n_iter == a.n_iter and b.loss == a.loss


def test_cli(synth, tmp_path, capsys):
    s = synth
    bed = tmp_path / "train.bed"
    bed.write_text("".join(f"{c}\t{a}\t{e}\n" for (c, a, e), h in zip(s["regions"], s["held"]) if not h))
    out = tmp_path / "m.safetensors"
    rc = run_cli(["fit-head", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(s["fasta"]), str(bed),
                  "-t", str(s["tmp"] / "targets.txt"), "-o", str(out), "--name", "cli", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert '"head": "cli"' in capsys.readouterr().out
    m = b2.load(out)
    assert m.head_names == ["human", "cli"] and m.spec.heads["cli"].tracks == 3
    assert np.all(_held_out_r(m, s, "cli") > 0.999)


def test_bad_input(synth, tmp_path, capsys):
    s = synth
    model_path = str(fixture_path("tf-small", "model.h5"))
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t10000\t10001\n")
    out = tmp_path / "m.safetensors"

    def cli(*extra):
        rc = run_cli(["fit-head", "-m", model_path, "-f", str(s["fasta"]), str(bed), "-o", str(out), "-q"]
                     + list(extra))
        return rc, capsys.readouterr().err.strip()

    write_targets(tmp_path / "t.txt", [("A", "", 32, 1, "sum", "x")])
    rc, err = cli("-t", str(tmp_path / "t.txt"))
    assert rc == 1 and "line 2" in err and "no bigWig" in err and "\n" not in err
    write_targets(tmp_path / "t.txt", [("A", str(s["tmp"] / "exact0.bw"), 32, 1, "peak", "x")])
    rc, err = cli("-t", str(tmp_path / "t.txt"))
    assert rc == 1 and "line 2" in err and "sum_stat 'peak'" in err
    rc, err = cli("--bigwigs", str(tmp_path / "missing.bw"))
    assert rc == 1 and "missing.bw" in err and "not found" in err
    bed.write_text("chr1\t10000\tx\n")
    rc, err = cli("--bigwigs", str(s["tmp"] / "exact0.bw"))
    assert rc == 1 and "r.bed: line 1" in err
    assert not out.exists()
    # a chromosome the bigWig lacks; negative coverage; an existing head; a bad loss
    import pyBigWig

    bw = pyBigWig.open(str(tmp_path / "neg.bw"), "w")
    bw.addHeader([("chr1", 302420)])
    bw.addEntries(["chr1"], [0], ends=[302420], values=[-1.0])
    bw.close()
    model = fresh_model()
    with pytest.raises(ValueError, match="no chromosome 'chr2' in the bigWig"):
        fit_head(model, s["fasta"], [("chr1", 10000, 10001), ("chr2", 10000, 10001)], [tmp_path / "neg.bw"])
    with pytest.raises(ValueError, match="negative coverage"):
        fit_head(model, s["fasta"], [("chr1", 10000, 10001)], [tmp_path / "neg.bw"])
    with pytest.raises(ValueError, match="already has a head 'human'"):
        fit_head(model, s["fasta"], [("chr1", 10000, 10001)], [s["tmp"] / "exact0.bw"], name="human")
    with pytest.raises(ValueError, match="loss 'mse'"):
        fit_head(model, s["fasta"], [("chr1", 10000, 10001)], [s["tmp"] / "exact0.bw"], loss="mse")
    assert model.head_names == ["human"]


def test_add_head_checks():
    model = fresh_model()
    C = model.spec.trunk_channels
    with pytest.raises(ValueError, match=r"weight must be \[64, tracks\]"):
        model.add_head("x", np.zeros((C + 1, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="bias"):
        model.add_head("x", np.zeros((C, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        model.add_head("x", np.full((C, 2), np.nan), np.zeros(2))
    with pytest.raises(ValueError, match="activation"):
        model.add_head("x", np.zeros((C, 2)), np.zeros(2), activation="relu")
    for bad in ("both", "all", ""):
        with pytest.raises(ValueError, match="head name"):
            model.add_head(bad, np.zeros((C, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="already has a head 'human'"):
        model.add_head("human", np.zeros((C, 2)), np.zeros(2))
    assert model.head_names == ["human"]
    # a linear head is the plain affine map of the embeddings; replace swaps it
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(C, 2)).astype(np.float32), np.array([0.5, -1.0], np.float32)
    model.add_head("lin", w, b, activation="linear")
    x = np.load(fixture_path("tf-small", "inputs.npy"))[:1]
    np.testing.assert_allclose(model.predict(x, head="lin"), model.embed(x) @ w + b, rtol=1e-4, atol=1e-4)
    model.add_head("lin", 2 * w, b, activation="linear", replace=True)
    np.testing.assert_allclose(model.predict(x, head="lin"), model.embed(x) @ (2 * w) + b, rtol=1e-4, atol=1e-4)
    assert model.head_names == ["human", "lin"]


def test_scipy_missing_is_a_clear_error(monkeypatch, synth):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # import scipy.optimize now raises ImportError
    with pytest.raises(ImportError, match=r"basenji2-fast\[fit\]"):
        fit_head(fresh_model(), synth["fasta"], synth["regions"][:2], [synth["tmp"] / "exact0.bw"])


def test_commands_are_registered(tmp_path, monkeypatch):
    from basenji2_fast.cli import build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("identifier\n")  # a targets file is checked while parsing
    parser = build_parser()
    for argv in (["embed", "-m", "m", "-f", "g.fa", "r.bed", "-o", "e.h5"],
                 ["fit-head", "-m", "m", "-f", "g.fa", "r.bed", "--bigwigs", "a.bw", "-o", "n.safetensors"],
                 ["test", "-m", "m", "-f", "g.fa", "r.bed", "--targets", "t.txt", "-o", "acc.tsv"]):
        assert parser.parse_args(argv).func.__name__ == {"embed": "run_embed", "fit-head": "run_fit_head",
                                                         "test": "run_test"}[argv[0]]
