"""Framework peers for tests and benchmarks (needs the optional torch + basenji2-pytorch)."""
from __future__ import annotations

import copy


def random_basenji2_pytorch(seed: int = 0):
    """Full-size basenji2-pytorch ``Basenji2``, eval mode, every parameter and BatchNorm
    statistic random (so a loader that mishandles BN folding shows up).

    Scales keep activations O(1) through all 28 conv layers and put the softplus outputs
    around 0..20, the real model's range: He-like gain 2 for the convs, 0.5 for the second
    conv of each residual block (so the residual stream grows slowly).
    """
    import torch  # noqa: PLC0415  (optional dependency)
    from basenji2_pytorch import Basenji2, basenji2_params  # noqa: PLC0415

    torch.manual_seed(seed)
    model = Basenji2(copy.deepcopy(basenji2_params["model"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Conv1d):
                fan_in = mod.in_channels * mod.kernel_size[0]
                gain = 0.5 if ".module.1." in name else 2.0
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (gain / fan_in) ** 0.5)
            elif isinstance(mod, torch.nn.BatchNorm1d):
                n = mod.num_features
                mod.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=g))
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=g))
            elif isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.0 / mod.in_features) ** 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.5)
    return model.eval()


def use_sigmoid_gelu(model):
    """Swap every ``torch.nn.GELU`` of a basenji2-pytorch model (the exact erf GELU) for the
    published model's ``x * sigmoid(1.702 x)``, in place; returns the model."""
    import torch  # noqa: PLC0415  (optional dependency)

    class SigmoidGELU(torch.nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GELU):
                setattr(parent, name, SigmoidGELU())
    return model
