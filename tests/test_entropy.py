import numpy as np
import pytest

from vqcodec.entropy import PRECISION, EntropyCoder, count_transitions, fit_tables, quantise_rows

K = 64


def moving(seed=0, groups=6, stages=3, h=12, w=16, changed_rows=3):
    rng = np.random.default_rng(seed)
    g = np.empty((groups, stages, h, w), dtype=np.int64)
    g[0] = rng.integers(0, K, (stages, h, w))
    for i in range(1, groups):
        g[i] = g[i - 1]
        g[i, :, :changed_rows] = rng.integers(0, K, (stages, changed_rows, w))
    return g


@pytest.fixture(scope="module")
def coder():
    counts = sum(count_transitions(moving(s), K) for s in range(10))
    return EntropyCoder(fit_tables(counts))


def test_tables_are_integer_rows_of_fixed_total(coder):
    t = coder.tables
    assert t.shape == (3, K + 1, K)
    assert (t.sum(-1) == 1 << PRECISION).all() and t.min() >= 1


def test_quantise_rows_keeps_every_symbol_codable():
    p = np.zeros((2, 8))
    p[:, 0] = 1.0
    f = quantise_rows(p)
    assert (f >= 1).all() and (f.sum(-1) == 1 << PRECISION).all()


@pytest.mark.parametrize("seed", [100, 101])
def test_round_trip_is_exact(coder, seed):
    g = moving(seed)
    words = coder.encode(g)
    assert words.dtype == np.uint32
    assert np.array_equal(coder.decode(words, g.shape[0], g.shape[1:]), g)


def test_unseen_random_indices_round_trip(coder):
    g = np.random.default_rng(7).integers(0, K, (3, 3, 5, 7))
    assert np.array_equal(coder.decode(coder.encode(g), 3, (3, 5, 7)), g)


def test_real_bits_match_the_estimate(coder):
    g = moving(200)
    real = coder.encode(g).nbytes * 8
    est = coder.estimate_bits(g)
    assert est <= real <= est * 1.02 + 64


def test_repeated_groups_cost_far_less_than_the_first(coder):
    g = moving(300, changed_rows=0)
    first = coder.estimate_bits(g[:1])
    later = coder.estimate_bits(g) - first
    assert later / (g.shape[0] - 1) < 0.1 * first
