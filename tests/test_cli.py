"""The command line: the demo job, convert, predict against basenji_predict_bed.py's output."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from basenji2_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "weights" / "demo"


def test_demo_job_runs_and_writes_predictions(tmp_path):
    """The README's main job: predict-genome on the demo, then a plot of its bigWigs."""
    import pyBigWig

    out = tmp_path / "demo_out"
    rc = main(["predict-genome", "-m", str(DEMO / "demo_random_weights.safetensors"), "-f", str(DEMO / "demo.fa"),
               "-o", str(out), "-q"])
    assert rc == 0
    bigwigs = sorted(out.glob("*.bw"))
    assert len(bigwigs) == 12 and (out / "manifest.json").exists()
    with pyBigWig.open(str(bigwigs[0])) as bw:
        assert bw.chroms() == {"chrDemo1": 60_000, "chrDemo2": 30_500}
        values = np.array(bw.values("chrDemo2", 0, 30_500))
        assert np.all(np.isfinite(values)) and np.all(values > 0)  # softplus head, every bin written
    rc = main(["plot", "--bigwigs", str(out), "--region", "chrDemo1:24,001-36,000", "--tracks", "0,3,7",
               "-o", str(out / "plot.png")])
    assert rc == 0 and (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_bed_demo_writes_predict_h5(tmp_path):
    rc = main(["predict-bed", "-m", str(DEMO / "demo_random_weights.safetensors"), "-f", str(DEMO / "demo.fa"),
               str(DEMO / "demo.bed"), "-o", str(tmp_path), "-q"])
    assert rc == 0
    with h5py.File(tmp_path / "predict.h5") as h5:
        assert h5["preds"].shape == (4, 96, 12) and h5["preds"].dtype == np.float16
        assert np.all(np.isfinite(h5["preds"][:])) and np.all(h5["preds"][:] > 0)  # softplus head
        assert list(h5["chrom"][:]) == [b"chrDemo1"] * 3 + [b"chrDemo2"]
    assert [p.name for p in tmp_path.iterdir()] == ["predict.h5"]  # no temporary left behind


def test_predict_matches_basenji_predict_bed(fixture_file, tmp_path):
    """basenji_predict_bed.py on N-free windows (its random N replacement never fires)."""
    visible = fixture_file("basenji-cli", "visible")
    rc = main(["predict", "-m", str(fixture_file("tf-small", "model.h5")), "-f", str(visible / "genome.fa"),
               str(visible / "regions_interior.bed"), "-o", str(tmp_path), "-q"])
    assert rc == 0
    with h5py.File(tmp_path / "predict.h5") as ours, \
            h5py.File(visible / "out" / "predict_bigwig_interior" / "predict.h5") as theirs:
        for key in ("chrom", "start", "end"):
            np.testing.assert_array_equal(ours[key][:], theirs[key][:])
            assert ours[key].dtype == theirs[key].dtype
        a, b = ours["preds"][:].astype(np.float64), theirs["preds"][:].astype(np.float64)
        assert ours["preds"].dtype == theirs["preds"].dtype and a.shape == b.shape
        # float16 storage: one unit in the last place of values up to ~3
        assert np.max(np.abs(a - b)) <= 2e-3


def test_convert_cli_two_heads(fixture_file, tmp_path, capsys):
    out = tmp_path / "small.safetensors"
    rc = main(["convert", str(fixture_file("tf-small", "model.h5")), str(fixture_file("tf-small", "model_mouse.h5")),
               "-o", str(out)])
    assert rc == 0 and out.exists()
    assert "human (12 tracks), mouse (7 tracks)" in capsys.readouterr().out
    assert stat.S_IMODE(os.stat(out).st_mode) & 0o044  # readable by others, like any output file


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not a model")
    rc = main(["predict", "-m", str(bad), "-f", str(DEMO / "demo.fa"), str(DEMO / "demo.bed"), "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "bad.h5" in err and len(err.splitlines()) == 1
    bed = tmp_path / "r.bed"
    bed.write_text("chrDemo1\t10\t20\nchrDemo1\tten\t20\n")
    rc = main(["predict", "-m", str(DEMO / "demo_random_weights.safetensors"), "-f", str(DEMO / "demo.fa"),
               str(bed), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "r.bed: line 2" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "predict.h5").exists()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "basenji2_fast.cli", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert '"engine": true' in out


def test_help_of_every_command_prints(capsys):
    """`--help` of the program and of each subcommand prints its usage (argparse formats help
    strings with %, so a bare "%" in one crashed the top-level help)."""
    import argparse

    import pytest

    from basenji2_fast.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for argv in [["--help"]] + [[name, "--help"] for name in sub.choices]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith("usage: basenji2-fast"), argv


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    import basenji2_fast.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "basenji2-fast info: interrupted\n"
