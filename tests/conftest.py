"""Shared test helpers.  Fixture files are read in place from ``../shared`` (never copied
into the project); a missing one skips the test locally and fails it in CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def shared_path(*parts: str) -> Path:
    """Path of a file under ``../shared``; skip (or, with $CI set, fail) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"fixture {path} is missing"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def import_peer():
    """(torch, basenji2_pytorch) for the peer checks; skip (or, with $CI set, fail) without them."""
    try:
        import basenji2_pytorch
        import torch
    except ImportError as exc:
        msg = f"the basenji2-pytorch peer checks need torch and basenji2_pytorch ({exc})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return torch, basenji2_pytorch


def fixture_path(*parts: str) -> Path:
    """``shared_path("fixtures", ...)``."""
    return shared_path("fixtures", *parts)


@pytest.fixture
def shared():
    """``shared("basenji2", "params_human.json")`` -> path, or skip/fail when absent."""
    return shared_path


@pytest.fixture
def fixture_file():
    """``fixture_file("tf-small", "model.h5")`` -> path, or skip/fail when absent."""
    return fixture_path


@pytest.fixture(scope="session")
def visible():
    """The basenji CLI fixture folder (genome, VCFs, BEDs, targets, basenji's own outputs)."""
    return fixture_path("basenji-cli", "visible")


@pytest.fixture(scope="session")
def model():
    """The tf-small model (Basenji2's block structure, shrunk), loaded once per test session."""
    from basenji2_fast import load

    return load(fixture_path("tf-small", "model.h5"), threads=2)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, saying why, where no CUDA device can run the engine."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    from basenji2_fast import cuda_backend

    ok, why = cuda_backend.usable()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {why}")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def cli(capsys, *argv) -> tuple:
    """(exit status, stderr lines) of ``basenji2-fast ARGV`` run in this process."""
    from basenji2_fast.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: a bad option
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


def one_line(err, *needles) -> str:
    """The one line of ``err`` (stderr lines), which holds every needle."""
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


@pytest.fixture(scope="session")
def converted_small(tmp_path_factory) -> Path:
    """tf-small converted as a new user would (basenji2-fast convert), once per session."""
    from basenji2_fast.cli import main

    out = tmp_path_factory.mktemp("model") / "small.safetensors"
    assert main(["convert", str(fixture_path("tf-small", "model.h5")), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def genome(visible) -> Path:
    """The basenji CLI fixture's genome FASTA."""
    return visible / "genome.fa"


def recording_task(real, calls: list, die_at=None):
    """A runner task function (``fn(model, path, *args)``) that appends each task file's name to
    ``calls`` and runs ``real``, except that its ``die_at``-th call raises KeyboardInterrupt
    (a run killed there)."""
    def task(model, path, *args):
        calls.append(path.name)
        if die_at is not None and len(calls) == die_at:
            raise KeyboardInterrupt("killed")
        real(model, path, *args)
    return task
