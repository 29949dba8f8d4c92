"""Single-base substitutions recomputed only inside their receptive-field cone equal full
forward passes of the mutated sequences, bit for bit, at every position class."""
import numpy as np
import pytest

import basenji2_fast as b2
from basenji2_fast.model import _engine

from test_engine import random_codes, small_model

ISAS = _engine.compiled_isas().split(",")


def mutate(codes, pos, alt):
    mut = np.repeat(codes[None], len(pos), 0)
    mut[np.arange(len(pos)), pos] = alt
    return mut


@pytest.fixture(scope="module")
def tf_small(request):
    from conftest import fixture_path

    return b2.load(fixture_path("tf-small", "model.h5"), threads=2)


@pytest.mark.parametrize("kwargs", [{}, {"n_encoding": "uniform"}, {"rc": True, "shifts": (0, 1, -1)},
                                    {"tracks": [11, 0, 3]}])
def test_substitutions_equal_full_passes_tf_small(tf_small, kwargs):
    m = tf_small
    L = m.seq_length
    rng = np.random.default_rng(len(kwargs))
    codes = random_codes(rng, 1, L)[0]
    # window edges, the stem's reach, the centre, the crop boundary (2,048 bp each side), N runs
    pos = np.array([0, 1, 7, 100, L // 2 - 1, L // 2, 2047, 2048, L - 2049, L - 2048, L - 2, L - 1])
    alt = ((codes[pos] % 4 + 1 + rng.integers(0, 3, pos.size)) % 4).astype(np.uint8)
    alt[3] = 4  # a substitution to N
    ref, alts = m.predict_substitutions(codes, pos, alt, **kwargs)
    np.testing.assert_array_equal(ref, m.predict(codes[None], **kwargs)[0])
    np.testing.assert_array_equal(alts, m.predict(mutate(codes, pos, alt), **kwargs))


@pytest.mark.parametrize("isa", ISAS)
def test_substitutions_equal_full_passes_every_isa(isa):
    rng = np.random.default_rng(5)
    spec = small_model(rng, L=2048)
    m = b2.Model(spec, threads=2, isa=isa)
    codes = random_codes(rng, 1, spec.seq_length)[0]
    pos = rng.choice(spec.seq_length, 24, replace=False)
    alt = rng.integers(0, 4, 24).astype(np.uint8)
    ref, alts = m.predict_substitutions(codes, pos, alt, head="mouse")
    np.testing.assert_array_equal(alts, m.predict(mutate(codes, pos, alt), head="mouse"))
    np.testing.assert_array_equal(ref, m.predict(codes[None], head="mouse")[0])


def test_substitution_arguments_are_checked(tf_small):
    codes = np.zeros(tf_small.seq_length, np.uint8)
    with pytest.raises(ValueError, match="positions"):
        tf_small.predict_substitutions(codes, [tf_small.seq_length], [1])
    with pytest.raises(ValueError, match="2 positions but 1"):
        tf_small.predict_substitutions(codes, [1, 2], [1])
    ref, alts = tf_small.predict_substitutions(codes, [5, 6], "GT")
    assert alts.shape == (2, tf_small.n_bins, 12) and ref.shape == (tf_small.n_bins, 12)


def test_scorer_in_chunks_equals_one_call(tf_small):
    rng = np.random.default_rng(9)
    codes = random_codes(rng, 1, tf_small.seq_length)[0]
    pos = rng.choice(tf_small.seq_length, 10, replace=False)
    alt = rng.integers(0, 4, 10).astype(np.uint8)
    kw = dict(rc=True, shifts=(0, 1), tracks=[1, 2])
    ref, alts = tf_small.predict_substitutions(codes, pos, alt, **kw)
    scorer = tf_small.substitution_scorer(codes, **kw)
    np.testing.assert_array_equal(scorer.ref, ref)
    chunks = np.concatenate([scorer.alts(pos[i:i + 3], alt[i:i + 3]) for i in range(0, 10, 3)])
    np.testing.assert_array_equal(chunks, alts)
