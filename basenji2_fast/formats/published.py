"""The published Basenji2 (Kelley 2020): its architecture, as basenji's params JSON, and
where its weight files are published (for ``basenji2-fast fetch``).

A basenji2-pytorch state dict carries no sequence length, crop or dilation rates; when a
``.pth`` comes without params and its shapes match these exactly, these fill the gaps.
Copied from basenji's ``manuscripts/cross2020/params_human.json`` and
``params_mouse.json`` (identical but for the head).
"""

from dataclasses import dataclass
from typing import Optional

BASENJI2_PARAMS = {
    "model": {
        "seq_length": 131072,
        "target_length": 1024,
        "activation": "gelu",
        "norm_type": "batch",
        "bn_momentum": 0.9,
        "trunk": [
            {"name": "conv_block", "filters": 288, "kernel_size": 15, "pool_size": 2},
            {"name": "conv_tower", "filters_init": 339, "filters_mult": 1.1776,
             "kernel_size": 5, "pool_size": 2, "repeat": 6},
            {"name": "dilated_residual", "filters": 384, "rate_mult": 1.5, "repeat": 11,
             "dropout": 0.3, "round": True},
            {"name": "Cropping1D", "cropping": 64},
            {"name": "conv_block", "filters": 1536, "dropout": 0.05},
        ],
        "head_human": {"name": "final", "units": 5313, "activation": "softplus"},
        "head_mouse": {"name": "final", "units": 1643, "activation": "softplus"},
    }
}

HUMAN_TRACKS = 5313
MOUSE_TRACKS = 1643


@dataclass(frozen=True)
class PublishedFile:
    """One published weight file: where it is, what it holds, how it is checked.

    ``md5``: the published checksum, or None where none is published (the Keras files);
    those are checked by loading them (architecture and every shape, see
    :func:`basenji2_fast.fetch.architecture_problem`).
    """

    key: str
    filename: str
    url: str
    head: str
    tracks: int
    md5: Optional[str] = None


# The files users get: the cross2020 manuscript's Keras models (listed by basenji's
# manuscripts/cross2020/get_models.sh; no checksum published) and basenji2-pytorch's state
# dict on Zenodo (record 14969593; the md5 basenji2-pytorch pins).
PUBLISHED_FILES = {
    "human": PublishedFile("human", "model_human.h5", "https://storage.googleapis.com/basenji_barnyard2/model_human.h5",
                           "human", HUMAN_TRACKS),
    "mouse": PublishedFile("mouse", "model_mouse.h5", "https://storage.googleapis.com/basenji_barnyard2/model_mouse.h5",
                           "mouse", MOUSE_TRACKS),
    "pth": PublishedFile("pth", "basenji2.pth", "https://zenodo.org/records/14969593/files/basenji2.pth",
                         "human", HUMAN_TRACKS, md5="1f46acc933e05515faf4d7eec0e27d42"),
}

# Model names that `load` accepts in place of a path: the files each is made of (one file,
# or the human and mouse files merged into one trunk with two heads).
PUBLISHED_MODELS = {
    "basenji2": ("human",),
    "basenji2-human": ("human",),
    "basenji2-mouse": ("mouse",),
    "basenji2-both": ("human", "mouse"),
    "basenji2-pth": ("pth",),
}
