import numpy as np
import pytest

from vqcodec.entropy import (INTRA, MODE_CONTEXTS, MODES, MV_CONTEXTS, PRECISION, REFINE, SKIP, EntropyCoder,
                             count_symbols, fit_tables, mode_contexts_a, mode_contexts_b, new_counts, parity,
                             quantise_rows, refine_stages)
from vqcodec.motion import VECTORS, ZERO, grid_shape

K = 64


def moving(seed=0, groups=6, stages=3, h=12, w=16, changed_rows=3, refined_rows=2):
    """A scene whose top rows change (intra), the next rows drift (refine, their blocks moving),
    the rest stands still."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, K, (groups, stages, h, w))
    modes = np.full((groups, h, w), SKIP, dtype=np.uint8)
    modes[:, :changed_rows] = INTRA
    modes[:, changed_rows:changed_rows + refined_rows] = REFINE
    modes[0] = INTRA
    mvs = np.full((groups, *grid_shape(h, w)), ZERO)
    if refined_rows:
        mvs[1:, 0] = rng.integers(0, VECTORS, (groups - 1, mvs.shape[2]))
    return g, modes, mvs


@pytest.fixture(scope="module")
def coder():
    counts = new_counts(3, K)
    for s in range(10):
        counts = count_symbols(*moving(s, changed_rows=0 if s < 3 else 3, refined_rows=0 if s < 3 else 2), K, counts)
    return EntropyCoder(*fit_tables(counts))


def decoded(coder, words, g):
    return list(coder.decode_groups(words, g.shape[0], g.shape[1:], grid_shape(*g.shape[2:])))


def coded_slots(g, modes):
    """What the decoder must give back: every slot a token codes."""
    S = g.shape[1]
    keep = np.ones(g.shape, bool)
    for i in range(1, g.shape[0]):
        keep[i][:, modes[i] == SKIP] = False
        keep[i][: S - refine_stages(S), modes[i] == REFINE] = False
    return keep


def test_tables_are_integer_rows_of_fixed_total(coder):
    for t in (coder.tables, coder.mode_tables, coder.mv_tables):
        assert (t.sum(-1) == 1 << PRECISION).all() and t.min() >= 1
    assert coder.tables.shape == (3, K + 2, K) and coder.mode_tables.shape == (MODE_CONTEXTS, MODES)
    assert coder.mv_tables.shape == (MV_CONTEXTS, VECTORS)


def test_quantise_rows_keeps_every_symbol_codable():
    p = np.zeros((2, 8))
    p[:, 0] = 1.0
    f = quantise_rows(p)
    assert (f >= 1).all() and (f.sum(-1) == 1 << PRECISION).all()


def test_mode_contexts_use_only_decoded_modes():
    prev = np.zeros((4, 5), bool)
    prev[1, 1] = True
    a = mode_contexts_a(prev, 4, 5)
    assert a[0, 0] == 1 and a[2, 2] == 1 and a[3, 4] == 0 and mode_contexts_a(None, 4, 5).max() == 10
    cur = np.zeros((4, 5), bool)
    cur[1, 1] = True  # a pass-A place
    b = mode_contexts_b(cur, prev)
    assert parity(4, 5)[0, 1] and b[0, 1] == 11 + 3 * 1 + 0  # one moved neighbour, previous intra
    assert b[1, 1] == 11 + 3 * 0 + 1
    assert (b < MODE_CONTEXTS).all() and (mode_contexts_b(cur, None) < MODE_CONTEXTS).all()


@pytest.mark.parametrize("seed", [100, 101])
def test_round_trip_gives_every_coded_slot_mode_and_vector(coder, seed):
    g, modes, mvs = moving(seed)
    words = coder.encode(g, modes, mvs)
    assert words.dtype == np.uint32
    out = decoded(coder, words, g)
    assert out[0][1] is None and out[0][2] is None
    assert all(np.array_equal(m, modes[i]) and np.array_equal(v, mvs[i]) for i, (_, m, v) in enumerate(out) if i)
    got = np.stack([x for x, _, _ in out])
    keep = coded_slots(g, modes)
    assert np.array_equal(got[keep], g[keep])


def test_unseen_random_symbols_round_trip(coder):
    rng = np.random.default_rng(7)
    g = rng.integers(0, K, (4, 3, 5, 7))
    modes = rng.integers(0, MODES, (4, 5, 7)).astype(np.uint8)
    mvs = rng.integers(0, VECTORS, (4, *grid_shape(5, 7)))
    got = np.stack([x for x, _, _ in decoded(coder, coder.encode(g, modes, mvs), g)])
    keep = coded_slots(g, modes)
    assert np.array_equal(got[keep], g[keep])


def test_fewer_stages_than_the_tables_round_trip(coder):
    g, modes, mvs = moving(5, stages=2)
    got = np.stack([x for x, _, _ in decoded(coder, coder.encode(g, modes, mvs), g)])
    keep = coded_slots(g, modes)
    assert np.array_equal(got[keep], g[keep])


def test_real_bits_match_the_estimate(coder):
    g, modes, mvs = moving(200)
    real = coder.encode(g, modes, mvs).nbytes * 8
    est = coder.estimate_bits(g, modes, mvs)
    assert est <= real <= est * 1.02 + 64


def test_a_static_scene_costs_almost_nothing_after_its_first_group(coder):
    g, modes, mvs = moving(300, changed_rows=0, refined_rows=0)
    first = coder.estimate_bits(g[:1], modes[:1], mvs[:1])
    later = coder.estimate_bits(g, modes, mvs) - first
    assert later / (g.shape[0] - 1) < 0.02 * first
