import dataclasses

import numpy as np
import pytest

from vqcodec.entropy import (MV_B, FLAG_BLOCK, COEF_CONTEXTS, COEF_MAX, COEF_SYMBOLS, INTER, INTRA, KINDS, MODE_CONTEXTS, MODES, MV_SYMBOLS,
                             MV_CONTEXTS, PRECISION, SKIP, FLAG_CONTEXTS, EntropyCoder, Symbols, coef_contexts,
                             block_contexts, first_index_keys, first_neighbours, first_passes, first_refs,
                             fresh_mode_contexts, fresh_modes, MODE_SPATIAL, MODE_NEAR, MODE_COARSE, FRESH_PASSES,
                             near_neighbours, near_passes, NEAR_INTER, NEAR_SKIP,
                             coef_kinds, main_modes, near_contexts, near_places, skipped_blocks, history, mode_contexts_a, mode_contexts_b,
                             parity, quantise_rows, mv_neighbours, mv_pass_b, mv_symbols, group_quality)
from vqcodec import postfilter
from vqcodec.motion import RANGE, SIDE, VECTORS, ZERO, grid_shape

K = 64
P = 12          # coefficients per token in these tests
QUALITIES = 3
from vqcodec.tablefit import count_symbols, fit_tables, new_counts


def coefficients(rng, shape, spread):
    """Laplacian-like integers that thin out toward the high positions, as a transform's do."""
    scale = spread / (1 + np.arange(P))
    c = np.round(rng.laplace(0, 1, (*shape, P)) * scale)
    return np.clip(c, -COEF_MAX, COEF_MAX).astype(np.int8)


def moving(seed=0, groups=6, stages=2, h=12, w=16, changed_rows=3, inter_rows=2, quality=2):
    """A scene whose top rows change (intra), the next rows drift (inter, their blocks moving),
    the rest stands still."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, K, (groups, stages, h, w))
    modes = np.full((groups, h, w), SKIP, dtype=np.uint8)
    modes[:, :changed_rows] = INTRA
    modes[:, changed_rows:changed_rows + inter_rows] = INTER
    modes[0] = INTRA
    mvs = np.full((groups, *grid_shape(h, w)), ZERO)
    if inter_rows:
        mvs[1:, 0] = rng.integers(0, VECTORS, (groups - 1, mvs.shape[2]))
    coefs = coefficients(rng, (groups, h, w), 3.0)
    coefs[1:][modes[1:] == INTER] //= 3
    return Symbols(g, modes, mvs, coefs, quality)


@pytest.fixture(scope="module")
def coder():
    counts = new_counts(2, K, QUALITIES, P)
    for s in range(10):
        counts = count_symbols(moving(s, changed_rows=0 if s < 3 else 3, inter_rows=0 if s < 3 else 2,
                                      quality=1 + s % QUALITIES), K, counts)
    return EntropyCoder(*fit_tables(counts))


def decoded(coder, words, sym):
    G, D, h, w = sym.indices.shape
    return list(coder.decode_groups(words, G, (D, h, w), grid_shape(h, w), sym.quality))


def check_round_trip(coder, sym):
    """What the decoder gives back is every symbol a token codes, and only those."""
    words = coder.encode(sym)
    assert words.dtype == np.uint32
    out = decoded(coder, words, sym)
    for i, (g, m, v, c, fresh) in enumerate(out):
        assert fresh == sym.fresh[i]
        if fresh:  # pass-1 tokens are intra; there are no vectors
            assert v is None and np.array_equal(m, fresh_modes(sym.modes[i]))
            assert (m[first_passes(*m.shape) == 0] == INTRA).all()
        else:
            assert np.array_equal(m, sym.modes[i]) and np.array_equal(v, sym.vectors[i])
        intra, coded = m == INTRA, coef_kinds(m, m.shape) >= 0
        assert np.array_equal(g[:, intra], sym.indices[i][:, intra])
        assert np.array_equal(c[coded], sym.coefs[i][coded]) and not c[~coded].any()


def test_tables_are_integer_rows_of_fixed_total(coder):
    for t in (coder.tables, coder.mode_tables, coder.mv_tables, coder.coef_tables, coder.flag_tables):
        assert (t.sum(-1) == 1 << PRECISION).all() and t.min() >= 1
    assert coder.tables.shape == (2, 2 * K + 1, K) and coder.mode_tables.shape == (MODE_CONTEXTS, MODES)
    assert coder.mv_tables.shape == (MV_CONTEXTS, MV_SYMBOLS)
    assert coder.coef_tables.shape == (QUALITIES, P, KINDS, COEF_CONTEXTS, COEF_SYMBOLS)
    assert coder.flag_tables.shape == (FLAG_CONTEXTS, 2)


def test_coefficient_contexts_count_the_earlier_non_zeros_the_history_and_the_neighbours():
    # one row of three tokens: pass A, pass B, pass A (not coding: its values must not count)
    c = np.array([[[0, 3, 0, -1, 2, 5, 0, 1], [4, 0, -2, 0, 0, 0, 0, 0], [7] * 8]])
    ctx = coef_contexts(c, np.array([[0, 1, -1]]), np.array([[0, 4, 0]]))
    # pass A: own (4 h + non-zeros so far, bucketed) x 6 + its neighbours' non-zeros at earlier
    # positions (0, 1-2, 3+ -> 0, 1, 2): here the pass-B token's 0, 1, 1, 2, ...
    assert ctx.shape == (2, 8)  # the coding tokens' only
    assert ctx[0].tolist() == [0, 1, 7, 7, 13, 13, 19, 19]
    # pass B: own x 6 + 3 + how many pass-A neighbours are non-zero at this very position
    assert ctx[1].tolist() == [99, 106, 105, 112, 112, 112, 111, 112]
    assert history(np.array([[0] * 8, [1] + [0] * 7, [1, 1, 1] + [0] * 5, [1] * 8])).tolist() == [0, 1, 2, 3]


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
def test_round_trip_gives_every_coded_symbol(coder, seed):
    check_round_trip(coder, moving(seed))


def test_unseen_random_symbols_round_trip(coder):
    rng = np.random.default_rng(7)
    sym = Symbols(rng.integers(0, K, (4, 2, 5, 7)), rng.integers(0, MODES, (4, 5, 7)).astype(np.uint8),
                  rng.integers(0, VECTORS, (4, *grid_shape(5, 7))),
                  rng.integers(-COEF_MAX, COEF_MAX + 1, (4, 5, 7, P)).astype(np.int8), 3)
    check_round_trip(coder, sym)


def test_fewer_stages_than_the_tables_round_trip(coder):
    check_round_trip(coder, moving(5, stages=1, quality=1))


def test_a_quality_without_tables_is_refused(coder):
    with pytest.raises(ValueError, match="quality"):
        coder.encode(moving(6, quality=QUALITIES + 1))


def test_real_bits_match_the_estimate(coder):
    sym = moving(200)
    real = coder.encode(sym).nbytes * 8
    est = coder.estimate_bits(sym)
    assert est <= real <= est * 1.02 + 64


def test_the_tables_learn_that_high_positions_are_mostly_zero(coder):
    zero = COEF_MAX
    p_zero = coder.coef_tables[1, :, 0, 0, zero] / float(1 << PRECISION)
    assert p_zero[-1] > 0.7 > p_zero[0]


def test_a_static_scene_costs_almost_nothing_after_its_first_group(coder):
    sym = moving(300, changed_rows=0, inter_rows=0)
    cut = lambda n: sym.groups(0, n)
    first = coder.estimate_bits(cut(1))
    later = coder.estimate_bits(sym) - first
    assert later / (sym.indices.shape[0] - 1) < 0.002 * first  # one static flag per group
    assert len(coder.encode(sym)) <= len(coder.encode(cut(1))) + 1


def test_static_groups_between_changing_ones_round_trip(coder):
    sym = moving(400)
    for g in (2, 3, 5):  # whole groups unchanged: one flag each
        sym.modes[g] = SKIP
        sym.vectors[g] = ZERO
    check_round_trip(coder, sym)


def test_a_fresh_groups_passes_go_from_a_coarse_grid_to_every_token():
    p = first_passes(9, 10)
    assert p.tolist()[0] == [0, 5, 3, 5, 1, 5, 3, 5, 0, 5]      # every 8th token, then distances 4, 2, 1 across
    assert p.tolist()[4] == [2, 5, 3, 5, 2, 5, 3, 5, 2, 5]      # between rows 0 and 8: distance 4 down
    assert p.tolist()[2] == [4, 5, 4, 5, 4, 5, 4, 5, 4, 5]      # distance 2 down
    assert (p[1::2] == 6).all() and p.max() == FRESH_PASSES - 1
    # the later groups' near modes keep their own three passes
    assert near_passes(3, 4).tolist() == [[0, 1, 0, 1], [2, 2, 2, 2], [0, 1, 0, 1]]


def test_first_group_indices_are_keyed_by_the_neighbour_decoded_before_them():
    h, w = 9, 10
    g = np.arange(2 * h * w).reshape(2, h, w) % K
    rows = 2 * K + 1
    intra = np.full((h, w), INTRA)
    keys = first_index_keys(g, intra, K)
    assert keys[0, 0, 0] == K and keys[1, 8, 8] == rows + K                 # pass 0: no neighbour
    assert keys[0, 0, 4] == K + 1 + g[0, 0, 0]                               # distance 4 across: its left one
    assert keys[1, 4, 4] == rows + K + 1 + g[1, 0, 4]                        # distance 4 down: the one above
    assert keys[0, 2, 6] == K + 1 + g[0, 0, 6]                               # distance 2 down
    assert keys[0, 0, 1] == K + 1 + g[0, 0, 0]                               # distance 1 across
    assert keys[1, 1, 3] == rows + K + 1 + g[1, 0, 3]                        # distance 1 down
    assert (first_index_keys(g, intra, K, upto=0)[:, first_passes(h, w) > 0] == -1).all()
    # a token predicted from its neighbours codes no indices, and stands for its first neighbour's
    m = intra.copy()
    m[0, 4] = SKIP   # pass 1: stands for (0, 0)
    m[0, 6] = INTER  # pass 3: stands for (0, 4), which stands for (0, 0)
    ref = first_refs(g, m)
    assert np.array_equal(ref[:, 0, 4], g[:, 0, 0]) and np.array_equal(ref[:, 0, 6], g[:, 0, 0])
    keys = first_index_keys(g, m, K)
    assert (keys[:, 0, 4] == -1).all() and (keys[:, 0, 6] == -1).all()
    assert first_index_keys(g, m, K)[0, 0, 7] == K + 1 + g[0, 0, 0]       # its left neighbour stands for (0, 0)


def test_fresh_groups_predict_from_the_two_neighbours_decoded_before():
    h, w = 9, 10
    a, b = first_neighbours(h, w)
    at = lambda i, j: (divmod(int(a[i, j]), w), divmod(int(b[i, j]), w))
    assert at(0, 0) == ((0, 0), (0, 0))           # pass 0: none
    assert at(0, 4) == ((0, 0), (0, 8))           # distance 4 across: left and right
    assert at(4, 4) == ((0, 4), (8, 4))           # distance 4 down: above and below
    assert at(8, 6) == ((8, 4), (8, 8))           # distance 2 across
    assert at(2, 8) == ((0, 8), (4, 8))           # distance 2 down
    assert at(2, 9) == ((2, 8), (2, 8))           # distance 1 across, the right one outside: the left twice
    assert at(8, 9) == ((8, 8), (8, 8))
    assert at(5, 3) == ((4, 3), (6, 3))           # distance 1 down
    assert first_neighbours(3, 3)[:, 0, 2].tolist() == [0, 0]  # distance 2 across, the right one outside
    passes = first_passes(h, w)
    assert (passes.reshape(-1)[a] < passes).sum() == (passes > 0).sum()
    assert (passes.reshape(-1)[b] < passes).sum() == (passes > 0).sum()
    na, nb = near_neighbours(3, 4)
    assert na[0, 1] == 0 and nb[0, 1] == 2 and na[1, 3] == 3 and nb[1, 3] == 11  # near modes: distance 1
    m = np.full((h, w), INTRA)
    m[0, 4] = SKIP
    m[0, 0] = SKIP  # pass 0: always intra, whatever the symbols say
    ctx = fresh_mode_contexts(m)
    assert ctx[0, 1] == MODE_SPATIAL and ctx[1, 0] == MODE_SPATIAL + 1 and ctx[1, 4] == MODE_SPATIAL + 2
    assert ctx[0, 2] == MODE_COARSE and ctx[2, 4] == MODE_COARSE + 2                # distance 2: (0, 4) skipped
    assert ctx[0, 4] == MODE_COARSE + 4 and ctx[4, 0] == MODE_COARSE + 5           # distance 4
    assert fresh_modes(m)[0, 0] == INTRA and ctx.max() < MODE_CONTEXTS


def smooth_pictures(seed, n=6, h=16, w=20):
    """First groups of flat regions: each 4 x 5 patch of tokens shares its indices."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, K, (n, 1, 2, 4, 4)).repeat(4, 3).repeat(5, 4)
    coefs = np.zeros((n, 1, h, w, P), dtype=np.int8)
    modes = np.full((1, h, w), INTRA, dtype=np.uint8)
    return [Symbols(g[i], modes, np.full((1, *grid_shape(h, w)), ZERO), coefs[i], 1) for i in range(n)]


def test_first_group_indices_cost_less_where_neighbours_agree():
    counts = new_counts(2, K, 1, P)
    for sym in smooth_pictures(0, n=30):
        counts = count_symbols(sym, K, counts)
    smooth_coder = EntropyCoder(*fit_tables(counts))
    sym = smooth_pictures(1, n=1)[0]
    rng = np.random.default_rng(2)
    shuffled = Symbols(rng.permuted(sym.indices.reshape(2, -1), axis=1).reshape(sym.indices.shape), sym.modes,
                       sym.vectors, sym.coefs, 1)  # the same indices, their neighbours unrelated
    assert smooth_coder.estimate_bits(sym) < 0.5 * smooth_coder.estimate_bits(shuffled)
    check_round_trip(smooth_coder, sym)
    check_round_trip(smooth_coder, shuffled)


def _vec(dy, dx):
    return (dy + RANGE) * SIDE + dx + RANGE


def test_pass_b_vectors_are_predicted_by_the_median_of_their_pass_a_neighbours_and_the_previous_one():
    mv = np.full((3, 3), ZERO)
    mv[0, 0], mv[0, 2], mv[2, 0], mv[2, 2], mv[1, 1] = _vec(4, -8), _vec(6, 2), _vec(4, -8), _vec(-1, 0), _vec(5, 1)
    assert mv_pass_b((3, 3)).tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    py, px = np.full((3, 3), 100), np.full((3, 3), -3)
    ny, nx, k = mv_neighbours(mv, py, px)
    # (0, 1): left (4, -8), right (6, 2), below (5, 1) and the previous (100, -3): four values,
    # the middle two's mean rounded down: (5 + 6) // 2, (-3 + 1) // 2
    assert (ny[0, 1], nx[0, 1]) == (5, -1)
    # (1, 0): above (4, -8), below (4, -8), right (5, 1), previous: 4 (of 4, 4, 5, 100) and -8 // 1 ...
    assert (ny[1, 0], nx[1, 0]) == (4, (-8 + -3) // 2)
    # (2, 1): left (4, -8), right (-1, 0), above (5, 1), previous (100, -3): y (4 + 5) // 2, x (-3 + 0) // 2
    assert (ny[2, 1], nx[2, 1]) == (4, -2)
    # contexts: distinct neighbour vectors (1 / 2 / 3+) and how many stand still (none / some / all)
    assert k[0, 1] == MV_B + 3 * 2 + 0 and k[1, 0] == MV_B + 3 * 1 + 0
    mv[1, 1] = mv[0, 0] = mv[2, 2] = ZERO
    _, _, k = mv_neighbours(mv, py, px)
    assert k[1, 2] == MV_B + 3 * 1 + 1      # (0, 2) moves, (1, 1) and (2, 2) stand still
    mv[0, 2] = ZERO
    ny, nx, k = mv_neighbours(mv, py, px)
    assert k[1, 2] == MV_B + 0 + 2 and (ny[1, 2], nx[1, 2]) == (0, 0)  # all still: the median is still too
    # pass B's vectors are not read: changing them changes nothing
    other = mv.copy()
    other[mv_pass_b((3, 3))] = _vec(9, 9)
    b = mv_pass_b((3, 3))
    assert all(np.array_equal(x[b], y[b]) for x, y in zip(mv_neighbours(other, py, px), (ny, nx, k)))


def test_a_smooth_vector_field_costs_less_than_one_that_only_repeats_the_previous_field(coder):
    # four runs: pass A's components, then pass B's, each with its own contexts
    rng = np.random.default_rng(3)
    field = np.full((6, 8), _vec(12, -20))
    runs = mv_symbols(field, None)
    assert len(runs) == 4 and sum(len(r[1]) for r in runs) == 2 * field.size
    assert (runs[2][2] == runs[2][2][0]).all() and runs[2][2][0] == 2 * RANGE  # pass B: no difference left
    # and any field, the extremes included, decodes back
    groups, h, w = 4, 12, 16
    sym = moving(5, groups=groups, h=h, w=w)
    sym.vectors[1:] = rng.integers(0, VECTORS, sym.vectors[1:].shape)
    sym.vectors[2, 0, 0], sym.vectors[2, 0, 1] = _vec(RANGE, -RANGE), _vec(-RANGE, RANGE)
    check_round_trip(coder, sym)


def test_a_block_skips_when_all_its_tokens_do_and_its_flag_knows_its_neighbourhood():
    m = np.full((8, 9), SKIP, dtype=np.uint8)
    m[5, 6] = INTER
    skip = skipped_blocks(m)  # 4 x 4 tokens a block: 2 x 3 blocks, the last column partial
    assert skip.tolist() == [[True, True, True], [True, False, True]]
    mv = np.full(skip.shape, ZERO)
    mv[0, 0] = ZERO + 1
    assert block_contexts(None, mv).tolist() == [[FLAG_BLOCK + 21] + [FLAG_BLOCK + 10] * 2, [FLAG_BLOCK + 10] * 3]
    assert block_contexts(~skip, mv).tolist() == [[FLAG_BLOCK + 12, FLAG_BLOCK + 1, FLAG_BLOCK + 1],
                                                  [FLAG_BLOCK + 1] * 3]



def test_a_fresh_later_group_is_coded_as_a_first_group(coder):
    sym = moving(600, groups=5)
    sym.fresh[3] = True  # a scene cut
    check_round_trip(coder, sym)
    # a refresh codes at the quality of the groups around it (the quality below the segment's):
    # as a segment's first group at that quality
    cut = lambda a, b: dataclasses.replace(sym.groups(a, b), quality=group_quality(sym.quality, False))
    whole = lambda a, b: sym.groups(a, b) if a == 0 else cut(a, b)
    refresh = coder.estimate_bits(whole(0, 4)) - coder.estimate_bits(whole(0, 3))
    filter_off = sum(s.classes for s in postfilter.PLANES)  # a segment opens with its filter's flags, 1 bit each
    assert abs(refresh - (coder.estimate_bits(cut(3, 4)) - filter_off)) < 8  # the same bits, and two flags
    # the groups after it are predicted from it as after a segment's first group
    assert abs((coder.estimate_bits(sym) - coder.estimate_bits(whole(0, 4))) - (coder.estimate_bits(cut(3, 5))
                                                                             - coder.estimate_bits(cut(3, 4)))) < 8


def test_later_groups_code_their_coefficients_at_the_next_quality_down(coder):
    assert [group_quality(q, True) for q in (1, 2, 8)] == [1, 2, 8]
    assert [group_quality(q, False) for q in (1, 2, 8)] == [1, 1, 7]
    sym = moving(650, groups=5, quality=3)
    sym.fresh[3] = True  # a refresh too codes at the quality below: only the segment's first group does not
    counts = count_symbols(sym, K, qualities=QUALITIES)[3].reshape(QUALITIES, -1)
    coded = [int((coef_kinds(fresh_modes(m) if f else m, m.shape) >= 0).sum()) * P for m, f in zip(sym.modes, sym.fresh)]
    assert counts.sum(1).tolist() == [0, sum(coded[1:]), coded[0]]
    check_round_trip(coder, sym)
    # the coder reads a later group's coefficients from the tables of the quality below: with quality
    # 3's tables replaced by quality 2's, the first group costs something else, groups 1 and 2 the same
    other = EntropyCoder(coder.tables, coder.mode_tables, coder.mv_tables, coder.coef_tables[[0, 1, 1]],
                         coder.flag_tables)
    first, three = sym.groups(0, 1), sym.groups(0, 3)
    assert other.estimate_bits(first) != coder.estimate_bits(first)
    assert other.estimate_bits(three) - other.estimate_bits(first) == pytest.approx(
        coder.estimate_bits(three) - coder.estimate_bits(first))


def test_a_later_group_all_intra_is_not_a_refresh_unless_marked(coder):
    sym = moving(700, groups=4)
    sym.modes[2] = INTRA
    sym.vectors[2] = ZERO
    check_round_trip(coder, sym)
    with pytest.raises(ValueError, match="first group"):
        Symbols(sym.indices, sym.modes, sym.vectors, sym.coefs, sym.quality, np.zeros(4, bool))


def with_near_modes(sym: Symbols, seed: int) -> Symbols:
    """`sym` with some later INTRA tokens outside pass 1 made NEAR_SKIP or NEAR_INTER."""
    rng = np.random.default_rng(seed)
    for i in range(1, len(sym.modes)):
        m = sym.modes[i]
        pick = near_places(m) & (rng.random(m.shape) < 0.6)
        m[pick] = rng.choice([NEAR_SKIP, NEAR_INTER], int(pick.sum()))
    return sym


def test_later_near_modes_round_trip_and_code_only_what_they_use(coder):
    sym = with_near_modes(moving(800, groups=5, changed_rows=6), 1)
    assert (sym.modes[1:] == NEAR_SKIP).any() and (sym.modes[1:] == NEAR_INTER).any()
    check_round_trip(coder, sym)
    # a NEAR_SKIP token codes no coefficient and no index: changing them changes nothing
    other = Symbols(sym.indices.copy(), sym.modes, sym.vectors, sym.coefs.copy(), sym.quality)
    near = other.modes == NEAR_SKIP
    near[0] = False
    other.coefs[near] = 1
    other.indices[:, :][np.broadcast_to(near[:, None], other.indices.shape)] = 0
    assert np.array_equal(coder.encode(other), coder.encode(sym))


def test_near_contexts_read_only_the_modes_decoded_before_them():
    m = np.full((4, 6), SKIP, dtype=np.int64)
    m[0, :3] = INTRA
    m[1, 1] = INTRA
    assert near_places(m).tolist()[0] == [False, True, False, False, False, False]  # pass 1 codes no near mode
    assert near_places(m)[1, 1]
    ctx = near_contexts(m)
    assert ctx[0, 1] == MODE_NEAR + 0  # pass 2: left and right both INTRA
    assert ctx[1, 1] == MODE_NEAR + 3 + 1  # pass 3: above INTRA, below SKIP
    m2 = m.copy()
    m2[0, 1] = NEAR_INTER  # a near mode is coded after every main mode: contexts see it as INTRA
    assert np.array_equal(near_contexts(m2), ctx) and np.array_equal(main_modes(m2), m)
    assert ctx.max() < MODE_CONTEXTS


def test_adapted_rows_stay_integer_rows_of_fixed_total_and_follow_the_counts():
    from vqcodec.entropy import ADAPT_PRIOR, adapted_rows
    table = quantise_rows(np.full((3, 5), 0.2))
    counts = np.array([[0, 0, 0, 0, 0], [40, 0, 0, 0, 0], [0, 0, 0, 0, 10 ** 9]])
    rows = adapted_rows(table, counts)
    assert rows.dtype == np.int64 and (rows.sum(1) == 1 << PRECISION).all() and (rows >= 1).all()
    assert np.array_equal(rows[0], table[0])  # no counts: the table's row
    assert rows[1, 0] > rows[1, 1] and rows[1, 1] == rows[1, 4]
    p = rows[1, 0] / (1 << PRECISION)  # the table's row weighs ADAPT_PRIOR symbols
    assert abs(p - (ADAPT_PRIOR * 0.2 + 40) / (ADAPT_PRIOR + 40)) < 1e-3
    assert rows[2, 4] == (1 << PRECISION) - 4  # however certain, the others keep one unit each


def test_a_segment_learns_statistics_its_tables_did_not_expect(coder):
    """Every later group the same unusual one: the later ones cost less and less (to half and
    below), and the bytes follow the adapted estimate."""
    sym = moving(900, groups=8, changed_rows=4, inter_rows=0)
    sym.coefs[1:] = np.where(sym.coefs[1:] != 0, 5, 0)  # values the tables make expensive
    sym.indices[1:] = sym.indices[1]
    later = [coder.estimate_bits(sym.groups(0, g + 1)) - coder.estimate_bits(sym.groups(0, g)) for g in range(1, 8)]
    assert later[1] < 0.7 * later[0] and max(later[3:]) < 0.5 * later[0]
    words = coder.encode(sym)
    assert abs(32 * len(words) - coder.estimate_bits(sym)) < 64
    check_round_trip(coder, sym)


def test_the_output_filter_round_trips_before_the_groups_and_its_bits_are_counted(coder):
    rng = np.random.default_rng(5)
    sym = moving(7)
    filt = []
    for plane, shape in enumerate(postfilter.PLANES):
        w = rng.integers(-postfilter.WEIGHT_MAX, postfilter.WEIGHT_MAX + 1, (shape.classes, shape.width))
        w[rng.random(shape.classes) < 0.4] = 0  # classes left off
        w[0, 0], w[0, 1] = postfilter.WEIGHT_MAX, -postfilter.WEIGHT_MAX
        filt.append(w)
    filt[2][:] = 0  # a plane left off
    with_filter = Symbols(sym.indices, sym.modes, sym.vectors, sym.coefs, sym.quality, filter=tuple(filt))
    words, bits = coder.encode_measured(with_filter)
    G, D, h, w = sym.indices.shape
    got, groups = coder.decode_segment(words, G, (D, h, w), grid_shape(h, w), sym.quality)
    assert all(np.array_equal(a, b) for a, b in zip(got, filt))
    plain = decoded(coder, coder.encode(sym), sym)
    assert all(all(np.array_equal(x, y) for x, y in zip(a, b) if x is not None) for a, b in zip(list(groups), plain))
    # its bits: one flag per class (a segment without a filter codes them all off), and each integer
    # of a class that is on under the fixed table
    extra = bits - coder.estimate_bits(sym)
    on = sum(int(w.any(1).sum()) for w in filt)
    expected = sum(coder.filter_bits(row) - 1.0 for w in filt for row in w[w.any(1)])
    assert abs(extra - expected) < 1e-6 * bits and abs(coder.estimate_bits(with_filter) - bits) < 1e-6 * bits
    assert 8 * 4 * len(words) >= bits  # the words hold it
    too_big = [w.copy() for w in filt]
    too_big[1][1, 0] = postfilter.WEIGHT_MAX + 1
    with pytest.raises(ValueError):
        coder.encode(Symbols(sym.indices, sym.modes, sym.vectors, sym.coefs, sym.quality, filter=tuple(too_big)))


def coarse_field(rng, grid):
    """A vector field uniform over every cell of 2 x 2 blocks (the coarse grid), odd sizes included."""
    from vqcodec.motion import cell_shape, spread
    return spread(rng.integers(0, VECTORS, cell_shape(*grid)), grid)


def test_groups_on_the_coarse_grid_round_trip_and_code_a_quarter_of_the_vectors(coder):
    from vqcodec.entropy import COARSE_VECTORS, coarse_vectors
    from vqcodec.motion import cells
    rng = np.random.default_rng(11)
    groups, h, w = 5, 20, 28  # 5 x 7 blocks: the last row and column of cells hold one block across
    sym = moving(7, groups=groups, h=h, w=w, quality=COARSE_VECTORS)
    assert coarse_vectors(sym.quality) and not coarse_vectors(COARSE_VECTORS + 1)
    grid = grid_shape(h, w)
    sym.grids = np.array([False, True, False, True, True])
    for i in (1, 3, 4):
        sym.vectors[i] = coarse_field(rng, grid)
    sym.vectors[2] = rng.integers(0, VECTORS, grid)
    check_round_trip(coder, sym)
    grids = []
    G, D = sym.indices.shape[:2]
    list(coder.decode_segment(coder.encode(sym), G, (D, h, w), grid, sym.quality, grids=grids)[1])
    assert grids == [True, False, True, True]
    # a coarse group codes one vector per cell: fewer bits than the same field per block
    fine = dataclasses.replace(sym, grids=np.zeros(groups, dtype=bool))
    assert coder.estimate_bits(sym) < coder.estimate_bits(fine)
    assert cells(sym.vectors[1]).shape == (3, 4)


def test_a_coarse_group_whose_cells_are_not_uniform_is_refused_and_high_qualities_carry_no_grid_flag(coder, monkeypatch):
    from vqcodec.entropy import COARSE_VECTORS
    rng = np.random.default_rng(12)
    sym = moving(8, groups=3, quality=COARSE_VECTORS)
    sym.grids = np.array([False, True, False])
    sym.vectors[1] = rng.integers(0, VECTORS, sym.vectors[1].shape)
    sym.vectors[1, 0, 0], sym.vectors[1, 0, 1] = _vec(1, 1), _vec(2, 2)
    with pytest.raises(ValueError, match="cell"):
        coder.encode(sym)
    # above COARSE_VECTORS there is no grid flag, so no coarse grid either (lowered here: these
    # tables stop at quality 3)
    from vqcodec import entropy
    monkeypatch.setattr(entropy, "COARSE_VECTORS", sym.quality - 1)
    sym.vectors[1] = coarse_field(rng, sym.vectors[1].shape)
    with pytest.raises(ValueError, match="no coarse grid"):
        coder.encode(sym)
    check_round_trip(coder, dataclasses.replace(sym, grids=np.zeros(3, dtype=bool)))
