"""basenji2-fast: the Basenji2 genomics model on hand-written fused kernels.

    import basenji2_fast as b2
    model = b2.load("model_human.h5")            # or .pth, or a converted .safetensors
    preds = model.predict("ACGT..." * ...)         # float32 [B, bins, tracks]

The file readers and converters are pure Python; compute needs the compiled extension.
"""
from .version import __version__
from .formats import FormatError, load_spec
from .convert import convert
from .model import Model, load, build_info
from .regions import predict_regions
from .targets import read_targets, select_tracks
from .genome_tiling import predict_genome
from .variants import score_variants, write_sad
from .ism import saturation_mutagenesis
from .distributed import merge_shards

__all__ = ["__version__", "FormatError", "Model", "build_info", "convert", "load", "load_spec", "merge_shards",
           "predict_genome", "predict_regions", "read_targets", "saturation_mutagenesis", "score_variants",
           "select_tracks", "write_sad"]
