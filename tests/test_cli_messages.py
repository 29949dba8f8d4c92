"""The command line's own words for a bad input: a bad option value exits 2 at parse time with
one line naming the option (before any output folder exists); a bad input file, one line naming
the file and its role; no Python wording (``name=value``, ``False``) or raw OS error. Driven in
process (``basenji2_fast.cli.main``) on the demo model."""
from __future__ import annotations

from pathlib import Path

import pytest

from basenji2_fast.cli import main
from conftest import cli, one_line

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "weights" / "demo"
MODEL, FASTA, BED = DEMO / "demo_random_weights.safetensors", DEMO / "demo.fa", DEMO / "demo.bed"




def predict_bed(tmp_path, *more):
    return ("predict-bed", "-m", MODEL, "-f", FASTA, BED, "-o", tmp_path / "out", "-q", *more)


@pytest.mark.parametrize("command", ["predict-bed", "predict-genome", "sad", "sat", "saliency"])
@pytest.mark.parametrize("shard", ["3/3", "0/0", "a/b", "1", "-1/2"])
def test_bad_shard_exits_2_before_any_output(tmp_path, capsys, command, shard):
    inputs = {"predict-bed": [BED], "predict-genome": [], "sad": [tmp_path / "x.vcf"], "sat": [BED],
              "saliency": [BED]}[command]
    rc, err = cli(capsys, command, "-m", MODEL, "-f", FASTA, *inputs, "-o", tmp_path / "out", "-q",
                  f"--shard={shard}")
    one_line(err, f"basenji2-fast {command}: error: argument --shard:", repr(shard), "I/N")
    assert rc == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["", " ", ",", "a,b"])
def test_empty_shifts_exit_2(tmp_path, capsys, value):
    rc, err = cli(capsys, *predict_bed(tmp_path, f"--shifts={value}"))
    one_line(err, "basenji2-fast predict-bed: error: argument --shifts: expected comma-separated integers")
    assert rc == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["predict-bed", "sat", "test"])
@pytest.mark.parametrize("value, words", [("", "argument --tracks: empty (leave --tracks out"),
                                          (" ", "argument --tracks: empty"),
                                          ("human=", "argument --tracks: human= is empty")])
def test_empty_track_selector_exits_2(tmp_path, capsys, command, value, words):
    if command == "test" and value.endswith("="):
        words = "argument --tracks: human=: this command takes one head"  # test evaluates one head
    out = ["-o", tmp_path / "out"]
    rc, err = cli(capsys, command, "-m", MODEL, "-f", FASTA, BED, *out, f"--tracks={value}")
    line = one_line(err, f"basenji2-fast {command}: error: {words}")
    assert rc == 2 and "None" not in line and "tracks=" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["gpu", "cuda:x", ""])
def test_bad_device_exits_2(tmp_path, capsys, value):
    rc, err = cli(capsys, *predict_bed(tmp_path, f"--device={value}"))
    line = one_line(err, "basenji2-fast predict-bed: error: argument --device: expected cpu, cuda, cuda:N or auto")
    assert rc == 2 and "device=" not in line
    assert not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_names_the_option(tmp_path, capsys, monkeypatch):
    from basenji2_fast import cuda_backend

    monkeypatch.setattr(cuda_backend, "usable", lambda: (False, "no usable CUDA device (no driver); use device='cpu'"))
    rc, err = cli(capsys, *predict_bed(tmp_path, "--device", "cuda"))
    line = one_line(err, "basenji2-fast predict-bed: error: --device cuda: no usable CUDA device", "use --device cpu")
    assert rc == 1 and "device=" not in line


@pytest.mark.parametrize("option, words", [(["--precision", "fp32"], "--precision fp32 with --device cuda"),
                                           (["--algorithm", "fast"], "--algorithm fast with --device cuda")])
def test_cuda_only_combinations_name_the_options(tmp_path, capsys, monkeypatch, option, words):
    from basenji2_fast import cuda_backend

    monkeypatch.setattr(cuda_backend, "usable", lambda: (True, ""))
    rc, err = cli(capsys, *predict_bed(tmp_path, "--device", "cuda", *option))
    line = one_line(err, f"basenji2-fast predict-bed: error: {words}")
    assert rc == 1 and "device=" not in line and "'fast'" not in line


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "-0"])
def test_width_messages_agree(tmp_path, capsys, value):
    rc, err = cli(capsys, "plot", "-m", MODEL, "-f", FASTA, "--region", "chrDemo1:100-200", "-o", tmp_path / "p.png",
                  f"--width={value}")
    one_line(err, f"basenji2-fast plot: error: argument --width: must be a finite number > 0, got {value}")
    assert rc == 2 and not (tmp_path / "p.png").exists()


TARGETS_SUB = ROOT.parent / "shared" / "fixtures" / "basenji-cli" / "visible" / "targets_sub.txt"


def _targets_argv(command, tmp_path):
    out = tmp_path / "out"
    return {"predict-bed": ["-m", MODEL, "-f", FASTA, BED, "-o", out],
            "predict-genome": ["-m", MODEL, "-f", FASTA, "-o", out],
            "test": ["-m", MODEL, "-f", FASTA, BED, "-o", out],
            "fit-head": ["-m", MODEL, "-f", FASTA, BED, "-o", tmp_path / "out.safetensors"],
            "plot": ["-m", MODEL, "-f", FASTA, "--region", "chrDemo1:100-200", "-o", tmp_path / "out.png"]}[command]


@pytest.mark.parametrize("command", ["predict-bed", "predict-genome", "test", "fit-head", "plot"])
@pytest.mark.parametrize("kind", ["missing", "folder", "per-head"])
def test_a_targets_file_that_is_not_there(tmp_path, capsys, command, kind):
    if kind == "per-head" and command == "fit-head":
        pytest.skip("fit-head's -t is one file")
    path = {"missing": tmp_path / "nonexist.txt", "folder": tmp_path,
            "per-head": f"human={tmp_path / 'nonexist.txt'}"}[kind]
    words = {"missing": f"{path}: targets file not found", "folder": f"{path}: a folder, not a targets file",
             "per-head": f"{path}: " + ("this command takes one head" if command in ("test", "plot")
                                        else "targets file not found")}[kind]
    rc, err = cli(capsys, command, *_targets_argv(command, tmp_path), "-t", path)
    line = one_line(err, f"basenji2-fast {command}: error: argument -t/--targets: {words}")
    assert rc == 2 and "Errno" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_merge_reads_relative_targets_from_the_shards_folder(tmp_path, capsys, monkeypatch):
    """-t is checked while parsing: merge parses the shards' command line where they ran."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "t.txt").write_bytes(TARGETS_SUB.read_bytes())
    monkeypatch.chdir(work)
    argv = ["predict-bed", "-m", str(MODEL), "-f", str(FASTA), str(BED), "-t", "t.txt", "-q"]
    for i in range(2):
        assert main(argv + ["-o", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]) == 0
    monkeypatch.chdir(tmp_path)
    rc, err = cli(capsys, "merge", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "merged")
    assert rc == 0, err
    assert (tmp_path / "merged" / "predict.h5").exists()


VISIBLE = ROOT.parent / "shared" / "fixtures" / "basenji-cli" / "visible"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("out", ["/proc/nope", "/proc/nope/deeper"])
def test_an_output_folder_that_cannot_be_made(capsys, out):
    rc, err = cli(capsys, "sad", "-m", MODEL, "-f", VISIBLE / "genome.fa", VISIBLE / "variants.vcf", "-o", out, "-q")
    line = one_line(err, f"basenji2-fast sad: error: {out}: cannot")
    assert rc == 1 and "Errno" not in line


def test_check_output_leaves_nothing(tmp_path):
    from basenji2_fast._io import check_output

    check_output(tmp_path / "a" / "b", folder=True)
    check_output(tmp_path / "f.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["info"], ["info", "-m", str(MODEL)], ["--help"]])
def test_a_closed_stdout_is_not_an_error(argv):
    """``basenji2-fast info | true``: the reader is gone before the output; no message."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)  # every write to w fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "basenji2_fast.cli", *argv], stdout=w, stderr=subprocess.PIPE,
                           cwd=ROOT, timeout=120)
    finally:
        os.close(w)
    assert p.stderr.decode() == "" and p.returncode in (0, 141), (p.returncode, p.stderr.decode())


@pytest.mark.parametrize("argv, command", [(["predict-bed", "BED", "-o", "x", "-m", "m", "-f", "g", "--bogus"],
                                            "basenji2-fast predict-bed"),
                                           (["info", "--bogus", "x"], "basenji2-fast info")])
def test_unknown_options_are_reported_by_the_subcommand(capsys, argv, command):
    rc, err = cli(capsys, *argv)
    one_line(err, f"{command}: error: unrecognized arguments: ", f"(see {command} --help)")
    assert rc == 2


def test_fit_head_over_an_existing_head_names_the_options(tmp_path, capsys):
    pytest.importorskip("scipy")
    bw = tmp_path / "a.bw"
    bw.write_bytes(b"")  # never read: the name is refused first
    rc, err = cli(capsys, "fit-head", "-m", MODEL, "-f", FASTA, BED, "--bigwigs", bw, "-o", tmp_path / "o.safetensors",
                  "--name", "human", "-q")
    line = one_line(err, "basenji2-fast fit-head: error: this model already has a head 'human'; "
                         "choose another --name, or pass --replace to replace it")
    assert rc == 1 and "False" not in line and "replace=True" not in line
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("name", ["human", "h{0}"])
def test_fit_head_over_an_existing_head_in_python(name):
    pytest.importorskip("scipy")
    from basenji2_fast import load
    from basenji2_fast.workflows.heads import fit_head

    model = load(MODEL, threads=1)
    if name not in model.head_names:  # a name with braces is no template field of the message
        model.head_names.append(name)
    with pytest.raises(ValueError, match=r"choose another name, or pass replace=True to replace it") as e:
        fit_head(model, FASTA, [("chrDemo1", 30000, 30500)], ["x.bw"], name=name)
    assert repr(name) in str(e.value) and f"{name!r}; choose another --name, or pass --replace" in e.value.cli


@pytest.mark.parametrize("precision", ["bf16", "bf16-fast"])
def test_saliency_precision_names_the_option(tmp_path, capsys, precision):
    rc, err = cli(capsys, "saliency", "-m", MODEL, "-f", FASTA, BED, "-o", tmp_path / "out", "-q",
                  "--precision", precision)
    line = one_line(err, f"basenji2-fast saliency: error: --precision {precision}: gradients are computed in "
                         "fp32; use --precision fp32")
    assert rc == 1 and "precision=" not in line
    assert not (tmp_path / "out").exists()


def test_saliency_on_a_gpu_names_the_option(tmp_path, capsys, monkeypatch):
    import basenji2_fast.workflows.saliency as saliency

    class OnGpu:
        device, precision = "cuda:0", "bf16"

    monkeypatch.setattr(saliency, "load_model", lambda args: OnGpu())
    rc, err = cli(capsys, "saliency", "-m", MODEL, "-f", FASTA, BED, "-o", tmp_path / "out", "-q", "--device", "auto")
    line = one_line(err, "basenji2-fast saliency: error: --device auto: gradients run on the CPU engine; "
                         "use --device cpu")
    assert rc == 1 and "device=" not in line
    assert not (tmp_path / "out").exists()


def _as_a_terminal_shows(text: str) -> list:
    """The lines a terminal shows for ``text``: a carriage return goes back to the line's start,
    what follows overwrites (a progress bar redraws itself, and clears itself with spaces)."""
    shown = []
    for line in text.split("\n"):
        cells: list = []
        for part in line.split("\r"):
            cells[:len(part)] = part
        shown.append("".join(cells).rstrip())
    return shown


@pytest.mark.parametrize("mode", ["missing", "cut", "bad md5"])
def test_a_failed_fetch_is_one_line_even_with_the_progress_bar(tmp_path, capfd, monkeypatch, mode):
    """Without -q: no "Downloading data from ..." line (pooch's log) and no bar left drawn."""
    pytest.importorskip("pooch")
    import http.server
    import threading

    from basenji2_fast import fetch

    body = b"x" * 200_000

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if mode == "missing":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if mode == "bad md5" else body[:len(body) // 10])
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(fetch.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
        capfd.readouterr()
        rc = main(["fetch", "pth", "--cache", str(tmp_path / "cache")])
        err = capfd.readouterr().err
    finally:
        httpd.shutdown()
        httpd.server_close()
    lines = [line for line in _as_a_terminal_shows(err) if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("basenji2-fast fetch: error: "), err
    assert "Downloading" not in err
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []


def test_an_unchecked_os_error_is_not_pythons_wording(tmp_path, capsys):
    """An OS error no check caught still gives the path and the reason, not Python's wording."""
    import errno
    import os

    from basenji2_fast._io import one_line_errors

    def work():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "nonexist.txt"))

    assert one_line_errors("predict-bed", work) == 1
    line = one_line(capsys.readouterr().err.splitlines(),
                    f"basenji2-fast predict-bed: error: {tmp_path / 'nonexist.txt'}: no such file or directory")
    assert "Errno" not in line


def test_one_head_commands_offer_and_take_one_head(tmp_path, capsys):
    """plot and test draw or evaluate one head: their help offers no HEAD= forms or 'both', and
    those forms are refused while parsing (exit 2), naming the option."""
    from basenji2_fast.cli import main

    targets = tmp_path / "targets.txt"
    targets.write_text("index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n")
    for cmd in ("plot", "test"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "HEAD=" not in help_text and "'both'" not in help_text, cmd
    base = ["plot", "-m", "x.safetensors", "--region", "chr1:1-100", "-o", str(tmp_path / "p.png")]
    for extra, words in ((["--head", "both"], "argument --head: 'both': this command takes one head"),
                         (["--tracks", "human=0"], "argument --tracks: human=0: this command takes one head"),
                         (["-t", f"human={targets}"], "this command takes one head")):
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_chrom_sizes_file_is_named(tmp_path, capsys):
    from basenji2_fast.cli import main

    with pytest.raises(SystemExit) as e:
        main(["predict-bed", "-m", "m", "-f", "f", "b.bed", "-o", str(tmp_path / "o"), "-b", "0", "-g",
              str(tmp_path / "none.txt")])
    assert e.value.code == 2 and "none.txt: chrom sizes file not found" in capsys.readouterr().err
