"""Peer check against an independent implementation: basenji2-pytorch (PyPI) at full size.

basenji2-pytorch builds the full Basenji2 (131,072 bp -> 896 bins x 5,313 tracks) from its
own params with the exact erf GELU.  We give it seeded random weights *and* random
BatchNorm affine parameters and running statistics (so the engine's BN folding is
exercised, not an identity), save the state dict as a .pth, load that into our engine
with ``b2.load(pth, gelu="erf")`` and compare both engines on one random sequence that
holds a few N positions (all-zero one-hot columns for torch, code N with
``n_encoding="zeros"`` for us).  Predictions and the trunk embedding must agree to 1e-3.

No shared fixture is used: the weights come from the seed, the architecture from the
PyPI package.  Skipped when torch / basenji2_pytorch are not installed, unless $CI is
set, where that is a failure.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import basenji2_fast as b2
from conftest import import_peer

SEQ_LENGTH = 131072
N_BINS = 896
TRACKS = 5313
TOLERANCE = 1e-3
SEED = 20201125


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


@pytest.mark.slow
def test_full_basenji2_matches_basenji2_pytorch(tmp_path):
    torch, basenji2_pytorch = import_peer()
    t_start = time.perf_counter()

    from basenji2_fast.peers import random_basenji2_pytorch

    model = random_basenji2_pytorch(SEED)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert n_bn == 1 + 6 + 2 * 11 + 1, n_bn  # stem, tower, dilated residual pairs, final conv
    pth = tmp_path / "basenji2_random.pth"
    torch.save(model.state_dict(), pth)

    rng = np.random.default_rng(SEED)
    codes = rng.integers(0, 4, size=(1, SEQ_LENGTH), dtype=np.uint8)
    n_pos = np.concatenate([[0, 1, SEQ_LENGTH // 2, SEQ_LENGTH - 1],
                            rng.choice(SEQ_LENGTH, size=12, replace=False)])
    codes[0, n_pos] = 4  # N
    onehot = np.zeros((1, SEQ_LENGTH, 4), np.float32)  # [B, L, 4]; N rows stay all zero
    acgt = codes[0] < 4
    onehot[0, np.flatnonzero(acgt), codes[0, acgt]] = 1.0
    assert onehot[0, n_pos].sum() == 0 and onehot.sum() == SEQ_LENGTH - len(np.unique(n_pos))

    # torch: [B, 4, L] in, trunk [B, 1536, bins], head [B, bins, tracks]
    x = torch.from_numpy(np.ascontiguousarray(onehot.transpose(0, 2, 1)))
    with torch.inference_mode():
        emb_t = model.model.trunk(x)
        pred_t = model.model.head(emb_t).numpy().astype(np.float64)
        emb_t = emb_t.numpy().transpose(0, 2, 1).astype(np.float64)
    del model

    ours = b2.load(pth, gelu="erf")
    info = ours.info()
    assert info["gelu"] == "erf" and info["n_bins"] == N_BINS and info["heads"] == {"human": TRACKS}
    pred_o = ours.predict(codes)                 # uint8 codes, N -> zeros (the default)
    pred_o2 = ours.predict(onehot)               # the float one-hot with all-zero N rows
    emb_o = ours.embed(codes)

    assert pred_t.shape == pred_o.shape == pred_o2.shape == (1, N_BINS, TRACKS)
    assert emb_t.shape == emb_o.shape == (1, N_BINS, 1536)
    assert np.isfinite(pred_o).all()
    d_pred = float(np.abs(pred_o - pred_t).max())
    d_pred2 = float(np.abs(pred_o2 - pred_t).max())
    d_emb = float(np.abs(emb_o - emb_t).max())
    print(f"\nbasenji2-pytorch {_version('basenji2-pytorch')} full size, erf GELU, random weights + BN stats, "
          f"{len(np.unique(n_pos))} N positions, isa={info['isa']}: "
          f"max |delta| predictions {d_pred:.3e} (codes), {d_pred2:.3e} (one-hot), embedding {d_emb:.3e}; "
          f"outputs in [{pred_t.min():.3f}, {pred_t.max():.3f}], {time.perf_counter() - t_start:.1f} s")
    # The random model must not be degenerate (outputs spread over tracks and bins).
    assert pred_t.std() > 0.1
    assert d_pred <= TOLERANCE
    assert d_pred2 <= TOLERANCE
    assert d_emb <= TOLERANCE
