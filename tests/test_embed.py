"""embed: trunk embeddings of BED regions against Model.embed of the same windows, pooling,
coordinates, ensembles and bad input."""
import argparse

import h5py
import numpy as np
import pytest

from basenji2_fast import dna
from basenji2_fast.workflows.embed import add_embed_subcommand, embed_bed, embed_regions, pooled_bins
from basenji2_fast.genome import fetch, open_fasta
from basenji2_fast.genome import read_bed
from basenji2_fast.windows import window
from conftest import fixture_path


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    add_embed_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _windows(model, visible, bed="regions.bed"):
    """uint8 codes [regions, L] of each region's window, fetched here independently."""
    fa = open_fasta(visible / "genome.fa")
    return np.stack([dna.encode(fetch(fa, r.chrom, *window(r, model.seq_length)))
                     for r in read_bed(visible / bed)])


def test_pooled_bins():
    assert pooled_bins(896, "center") == (447, 449)  # the 256 bp centred on the region's midpoint
    assert pooled_bins(96, "center") == (47, 49)
    assert pooled_bins(5, "center") == (2, 3)
    assert pooled_bins(96, "mean") == (0, 96) == pooled_bins(96, "none")
    with pytest.raises(ValueError, match="pool 'max'"):
        pooled_bins(96, "max")


def test_embed_file_equals_model_embed(model, visible, tmp_path):
    """Every region (N padding at chromosome ends included), all bins, to the bit; coordinates
    of the output window; attributes."""
    out = tmp_path / "emb.h5"
    embed_bed(model, visible / "genome.fa", visible / "regions.bed", out, pool="none", batch_size=3,
              progress=False)
    expect = model.embed(_windows(model, visible), batch_size=1)
    regions = read_bed(visible / "regions.bed")
    with h5py.File(out) as h5:
        emb = h5["embeddings"][:]
        assert emb.dtype == np.float32 and emb.shape == (len(regions), model.n_bins, model.spec.trunk_channels)
        np.testing.assert_array_equal(emb, expect)
        assert [c.decode() for c in h5["chrom"][:]] == [r.chrom for r in regions]
        assert [n.decode() for n in h5["name"][:]] == [r.name for r in regions]
        crop = model.spec.crop_bins * model.bin_size
        np.testing.assert_array_equal(h5["start"][:], [window(r, model.seq_length)[0] + crop for r in regions])
        np.testing.assert_array_equal(h5["end"][:] - h5["start"][:], model.n_bins * model.bin_size)
        assert h5.attrs["pool"] == "none" and h5.attrs["model"] == "model.h5"
        assert h5.attrs["n_bins"] == model.n_bins and h5.attrs["bin_size"] == model.bin_size
        assert list(h5.attrs["bins"]) == [0, model.n_bins]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("pool", ["mean", "center"])
def test_pooling(model, visible, tmp_path, pool):
    full = embed_regions(model, visible / "genome.fa", visible / "regions.bed", pool="none")
    pooled = embed_regions(model, visible / "genome.fa", visible / "regions.bed", pool=pool, batch_size=2)
    nb = model.n_bins
    want = full.mean(axis=1) if pool == "mean" else full[:, nb // 2 - 1:nb // 2 + 1].mean(axis=1)
    assert pooled.shape == (full.shape[0], full.shape[2])
    np.testing.assert_allclose(pooled, want, rtol=1e-6, atol=1e-6)
    out = embed_bed(model, visible / "genome.fa", visible / "regions.bed", tmp_path / "e.h5", pool=pool,
                    progress=False)
    regions = read_bed(visible / "regions.bed")
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["embeddings"][:], pooled)
        start, end = h5["start"][:], h5["end"][:]
    mids = np.array([(r.start + r.end) // 2 for r in regions])
    if pool == "center":  # two bins, the region's midpoint at the boundary between them
        np.testing.assert_array_equal(end - start, 2 * model.bin_size)
        np.testing.assert_array_equal(start + model.bin_size, mids)
    else:
        np.testing.assert_array_equal(end - start, nb * model.bin_size)
        np.testing.assert_array_equal((start + end) // 2, mids)


def test_ensemble_is_mean_of_passes(model, visible):
    codes = _windows(model, visible, "regions_interior.bed")
    got = embed_regions(model, visible / "genome.fa", visible / "regions_interior.bed", pool="none", rc=True,
                        shifts=(0, 1))
    shifted = np.full_like(codes, 5)  # basenji's shift: a 0.25 column in front, the last base dropped
    shifted[:, 1:] = codes[:, :-1]
    passes = [model.embed(codes), model.embed(shifted), model.embed(dna.revcomp(codes))[:, ::-1],
              model.embed(dna.revcomp(shifted))[:, ::-1]]
    np.testing.assert_allclose(got, np.mean(passes, axis=0), rtol=1e-5, atol=1e-6)


def test_cli_and_float16(visible, tmp_path):
    out = tmp_path / "sub" / "emb.h5"
    rc = run_cli(["embed", "-m", str(fixture_path("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
                  str(visible / "regions_interior.bed"), "-o", str(out), "--pool", "center", "--dtype", "float16",
                  "--rc", "--shifts", "-1,0", "-q", "--threads", "1"])
    assert rc == 0
    with h5py.File(out) as h5:
        assert h5["embeddings"].dtype == np.float16 and h5["embeddings"].shape[0] == 4
        assert h5.attrs["pool"] == "center" and bool(h5.attrs["rc"]) and list(h5.attrs["shifts"]) == [-1, 0]


def test_bad_input(visible, tmp_path, capsys):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t100\t200\nchr1\t300\tx\n")
    out = tmp_path / "emb.h5"
    model_path = str(fixture_path("tf-small", "model.h5"))
    assert run_cli(["embed", "-m", model_path, "-f", str(visible / "genome.fa"), str(bed), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("basenji2-fast embed: error:") and "line 2" in err and "\n" not in err
    bed.write_text("chr1\t100\t200\nchrZ\t300\t400\n")
    assert run_cli(["embed", "-m", model_path, "-f", str(visible / "genome.fa"), str(bed), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "line 2" in err and "chrZ" in err
    bed.write_text("# nothing\n")
    assert run_cli(["embed", "-m", model_path, "-f", str(visible / "genome.fa"), str(bed), "-o", str(out)]) == 1
    assert "no regions" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_bad_api_arguments(model, visible, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        embed_bed(model, visible / "genome.fa", visible / "regions.bed", tmp_path / "e.h5", dtype="int8")
    with pytest.raises(ValueError, match="batch_size=0"):
        embed_regions(model, visible / "genome.fa", visible / "regions.bed", batch_size=0)
    assert not (tmp_path / "e.h5").exists()
