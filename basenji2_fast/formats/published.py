"""The published Basenji2 architecture (Kelley 2020), as basenji's params JSON.

A basenji2-pytorch state dict carries no sequence length, crop or dilation rates; when a
``.pth`` comes without params and its shapes match these exactly, these fill the gaps.
Copied from basenji's ``manuscripts/cross2020/params_human.json`` and
``params_mouse.json`` (identical but for the head).
"""

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
