"""``import basenji2_fast`` stays light: file-format and plotting libraries load only when a
function that needs them runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import fixture_path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("h5py", "pyfaidx", "tqdm", "matplotlib", "torch", "pyBigWig", "scipy", "dask", "distributed")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout; it prints one JSON object."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_library():
    got = _run("import json, sys, basenji2_fast\n"
               f"print(json.dumps({{'file': basenji2_fast.__file__, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert Path(got["file"]).resolve().parent == ROOT / "basenji2_fast"
    assert got["loaded"] == []


def test_lazy_names_resolve_and_load_their_libraries():
    got = _run("import json, sys, basenji2_fast as b2\n"
               "before = 'h5py' in sys.modules\n"
               "f = b2.predict_regions\n"
               "from basenji2_fast import saturation_mutagenesis, score_variants, write_sad, predict_genome\n"
               "print(json.dumps({'before': before, 'after': 'h5py' in sys.modules, 'name': f.__module__,"
               " 'dir': all(n in dir(b2) for n in b2.__all__),"
               " 'all': [n for n in b2.__all__ if not hasattr(b2, n)]}))")
    assert got == {"before": False, "after": True, "name": "basenji2_fast.workflows.regions", "dir": True, "all": []}


def test_load_safetensors_without_h5py(tmp_path):
    from basenji2_fast import convert

    st = tmp_path / "tf_small.safetensors"
    convert(fixture_path("tf-small", "model.h5"), st)
    inputs = np.load(fixture_path("tf-small", "inputs.npy"))[:1]
    np.save(tmp_path / "x.npy", inputs)
    got = _run("import json, sys, numpy as np, basenji2_fast as b2\n"
               f"m = b2.load({str(st)!r}, threads=1)\n"
               f"y = m.predict(np.load({str(tmp_path / 'x.npy')!r}))\n"
               f"np.save({str(tmp_path / 'y.npy')!r}, y)\n"
               f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert got["loaded"] == []
    expected = np.load(fixture_path("tf-small", "outputs.npy"))[:1]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-4)


# The module paths before the package had layers (issue 14): still importable, with a warning.
OLD_PATHS = {
    "regions": ["predict_bed", "predict_regions", "add_predict_bed_subcommand", "Region", "read_bed", "window",
                "output_window", "resolve_tracks", "parse_interval", "iter_windows", "prepare_regions", "site_bins"],
    "genome_tiling": ["predict_genome", "Tiling", "add_predict_genome_subcommand", "weights_sha256"],
    "variants": ["write_sad", "score_variants", "compute_stats", "PERCENTILES"],
    "ism": ["sat_bed", "saturation_mutagenesis", "mutation_range"],
    "embed": ["embed_bed", "embed_regions", "pooled_bins"],
    "heads": ["fit_head", "HeadFit"],
    "evaluate": ["evaluate", "TrackStats"],
    "orthologs": ["compare_orthologs", "read_pairs", "write_orthologs"],
    "distributed": ["merge_shards", "gather_shards", "Runner", "add_distributed_options", "parse_shard"],
    "multihead": ["plan_heads", "head_names", "MULTI_HEADS"],
}


def test_old_module_paths_warn_and_give_the_same_objects():
    import importlib
    import warnings

    import basenji2_fast

    for old, names in OLD_PATHS.items():
        sys.modules.pop(f"basenji2_fast.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"basenji2_fast.{old}")
        assert [w.category for w in caught] == [DeprecationWarning], old
        assert "moved to basenji2_fast." in str(caught[0].message)
        for name in names:
            new = next(getattr(importlib.import_module(t), name) for t in module.__moved_to__
                       if hasattr(importlib.import_module(t), name))
            assert getattr(module, name) is new, (old, name)
        assert getattr(basenji2_fast, old) is module


def test_renamed_names_warn():
    import warnings

    from basenji2_fast import plots
    from basenji2_fast.model import TrackRequest

    sys.modules.pop("basenji2_fast.multihead", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import basenji2_fast.multihead as mh
        assert mh.HeadRequest is TrackRequest
        cols, labels, notes = plots.resolve_tracks(None, "0,2", 4)
    assert [w.category for w in caught] == [DeprecationWarning] * 3
    assert (cols, labels, notes) == ([0, 2], ["track 0", "track 2"], ["", ""])
