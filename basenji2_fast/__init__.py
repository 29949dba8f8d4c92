"""basenji2-fast: the Basenji2 genomics model on hand-written fused kernels.

    import basenji2_fast as b2
    model = b2.load("model_human.h5")            # or .pth, or a converted .safetensors
    preds = model.predict("ACGT..." * ...)         # float32 [B, bins, tracks]

The file readers and converters are pure Python; compute needs the compiled extension.
Importing the package loads NumPy and the engine only: the workflow modules (and the
file-format libraries they use: h5py, pyfaidx, pyBigWig, tqdm, matplotlib) load
the first time one of their names is used.
"""
from importlib import import_module as _import_module

from .version import __version__
from .formats import FormatError, load_spec
from .convert import convert
from .model import Model, load, build_info
from .targets import read_targets, select_tracks
from . import _moved

_moved.install()  # the module paths of earlier versions (basenji2_fast.regions, ...) still import

# Public names whose modules import file-format libraries: resolved on first use.
_LAZY = {
    "predict_regions": ".workflows.regions",
    "predict_genome": ".workflows.genome_tiling",
    "score_variants": ".workflows.variants",
    "write_sad": ".workflows.variants",
    "saturation_mutagenesis": ".workflows.ism",
    "saliency_bed": ".workflows.saliency",
    "embed_bed": ".workflows.embed",
    "embed_regions": ".workflows.embed",
    "fit_head": ".workflows.heads",
    "evaluate": ".workflows.evaluate",
    "merge_shards": ".cli",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "FormatError", "Model", "build_info", "convert", "embed_bed", "embed_regions", "evaluate",
           "fit_head", "load", "load_spec", "merge_shards", "predict_genome", "predict_regions", "read_targets",
           "saliency_bed", "saturation_mutagenesis", "score_variants", "select_tracks", "write_sad"]
