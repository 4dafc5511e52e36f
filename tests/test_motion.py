import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqcodec import motion
from vqcodec.entropy import MV_Y_CONTEXTS
from vqcodec.motion import BLOCK, RANGE, SUB, ZERO, predict, shift, symbol, vector
from vqcodec import search as search_module
from vqcodec.search import search


def _picture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth 8-bit picture with detail at several scales (integers 0..255 as float)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, h // 8, w // 8, generator=g)
    big = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    fine = F.avg_pool2d(torch.rand(1, 1, h, w, generator=g), 3, 1, 1)[0, 0]
    return (big * 200 + fine * 55).clamp(0, 255).round()


def _per_pixel(v: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """Per-block values (Hb, Wb) -> per-pixel (h, w), blocks of side x side pixels."""
    return v.repeat_interleave(side, 0).repeat_interleave(side, 1)[:h, :w]


def test_symbols_and_vectors_are_inverse_and_zero_is_still():
    dy, dx = torch.arange(-RANGE, RANGE + 1), torch.arange(RANGE, -RANGE - 1, -1)
    s = symbol(dy, dx)
    assert torch.equal(torch.stack(vector(s)), torch.stack([dy, dx]))
    assert symbol(torch.tensor(0), torch.tensor(0)) == ZERO
    assert symbol(torch.tensor(RANGE + 9), torch.tensor(-RANGE - 9)) == symbol(torch.tensor(RANGE), torch.tensor(-RANGE))


def test_whole_pixel_shifts_copy_and_sub_pixels_take_the_interpolation_filters_exactly():
    p = _picture(32, 48)
    z = torch.zeros(32, 48, dtype=torch.long)
    # whole pixels: a copy from (row + 3, col - 2), edges repeated
    out = shift(p, z + 3 * SUB, z - 2 * SUB, SUB)
    rows = (torch.arange(32) + 3).clamp(max=31)[:, None]
    cols = (torch.arange(48) - 2).clamp(min=0)[None, :]
    assert torch.equal(out, p[rows, cols])
    # half a pixel to the right: the 8-tap half-pixel filter across (-1, 4, -11, 40, 40, -11, 4,
    # -1) / 64, exactly (no rounding anywhere), clamped to 0..255
    half = shift(p, z, z + SUB // 2, SUB)
    taps = (-1, 4, -11, 40, 40, -11, 4, -1)
    want = sum(t * p[:, k:k + 41] for k, t in enumerate(taps)) / 64  # columns 3..43, all taps inside
    assert torch.equal(half[:, 3:44], want.clamp(0, 255))
    # a quarter pixel down and three quarters to the right: rows filtered, then columns
    q = shift(p, z + 1, z + 3, SUB)
    t1, t3 = motion.LUMA_TAPS[1], motion.LUMA_TAPS[3]
    across = sum(t * p[:, k:k + 41] for k, t in enumerate(t3))  # (32, 41), columns 3..43
    down = sum(t * across[k:k + 25] for k, t in enumerate(t1)) / 4096  # rows 3..27
    assert torch.equal(q[3:28, 3:44], down.clamp(0, 255))
    # chroma planes take eighths of their own pixels: its own 4-tap filter
    c = shift(p, z, z + 4, 2 * SUB)
    assert torch.equal(c[:, 1:46], (sum(t * p[:, k:k + 45] for k, t in enumerate((-4, 36, 36, -4))) / 64).clamp(0, 255))
    # a flat picture stays flat at every phase (each phase's taps sum to 64)
    flat = torch.full((16, 16), 77.0)
    for dy, dx in ((1, 2), (3, 3), (2, 1)):
        assert torch.equal(shift(flat, z[:16, :16] + dy, z[:16, :16] + dx, SUB), flat)
        assert torch.equal(shift(flat, z[:16, :16] + 2 * dy + 1, z[:16, :16] + dx, 2 * SUB), flat)


def test_the_searchs_phases_are_the_predictors_values_at_every_quarter_pixel():
    # the search reads its candidates from precomputed phases; the decoder predicts with `shift`:
    # a vector must cost what it predicts, bit for bit
    p, pad = _picture(24, 40, seed=3), 5
    ph = search_module._phases(p, pad)
    assert ph.shape == (SUB * SUB, 24 + 2 * pad + 1, 40 + 2 * pad + 1)
    z = torch.zeros(24, 40, dtype=torch.long)
    for fy in range(SUB):
        for fx in range(SUB):
            for oy, ox in ((0, 0), (-pad, 2), (3, -pad)):  # whole-pixel offsets reach into the margin
                want = shift(p, z + oy * SUB + fy, z + ox * SUB + fx, SUB)
                got = ph[fy * SUB + fx, pad + oy:pad + oy + 24, pad + ox:pad + ox + 40]
                assert torch.equal(got, want), (fy, fx, oy, ox)


@pytest.mark.parametrize("h, w", [(64, 96), (44, 60), (8, 12)])
def test_block_by_block_prediction_is_shift_bit_for_bit(h, w):
    # `predict` reads block rows as runs; `shift` (per pixel) is the definition it must match,
    # blocks cut by the picture's edges and vectors reaching past them included
    g = torch.Generator().manual_seed(h)
    p = _picture(h, w, seed=w)
    for denom, side in ((SUB, 16), (2 * SUB, 8)):  # luma, and chroma's eighths of its own pixels
        hb, wb = -(-h // side), -(-w // side)
        for reach in (3, 4 * SUB * 40):
            dy, dx = (torch.randint(-reach, reach + 1, (hb, wb), generator=g) for _ in range(2))
            want = shift(p, _per_pixel(dy, side, h, w), _per_pixel(dx, side, h, w), denom)
            assert torch.equal(motion.shift_blocks(p, dy, dx, side, denom), want), (denom, reach)


def test_predict_moves_each_frame_by_its_distance_from_the_reference():
    patch, side = 4, BLOCK * 4
    y = torch.stack([_picture(64, 64, 1)] * 2)
    c = torch.stack([_picture(32, 32, 2)] * 2)
    mv = torch.full((64 // side, 64 // side), ZERO)
    mv[1, 2] = symbol(torch.tensor(SUB), torch.tensor(-2 * SUB))  # 1 pixel down, 2 left, per frame
    py, pu, _ = predict((y, c, c), mv, patch)
    last = y[-1]
    r = side // 4  # the block's edges overlap its still neighbours' predictions: compare inside
    for t in range(2):
        d = t + 1
        block = py[t, side + r:2 * side - r, 2 * side + r:3 * side - r]
        want = last[side + d + r:2 * side + d - r, 2 * side - 2 * d + r:3 * side - 2 * d - r]
        assert torch.allclose(block, want, atol=1e-6)
    assert not torch.allclose(py[0, side:2 * side, 2 * side:3 * side],
                              last[side + 1:2 * side + 1, 2 * side - 2:3 * side - 2], atol=1e-6)
    # still blocks away from it: the last frame itself
    assert torch.equal(py[:, :side - r], y[-1:, :side - r].expand(2, -1, -1))
    cs, cr = side // 2, side // 8  # chroma moves half as far: 1 px down, 2 left at t = 1
    cb = pu[1, cs + cr:2 * cs - cr, 2 * cs + cr:3 * cs - cr]
    assert torch.allclose(cb, c[-1, cs + 1 + cr:2 * cs + 1 - cr, 2 * cs - 2 + cr:3 * cs - 2 - cr], atol=1e-6)


@pytest.mark.parametrize("h, w", [(64, 96), (44, 60), (8, 12)])
def test_overlapped_prediction_is_the_per_pixel_mix_of_the_neighbours_shifts(h, w):
    # the definition: a pixel k pixels inside its block's edge (k < side // 4) takes
    # w[k] / total of the prediction the neighbour across that edge would give it (`shift` with the
    # neighbour's displacement), the rest of its own; computed here pixel by pixel, in float64
    g = torch.Generator().manual_seed(h + w)
    p = _picture(h, w, seed=h)
    for denom, side in ((SUB, 16), (2 * SUB, 8)):
        total, wts = motion.overlap_weights(side)
        assert total == 4 * (side // 4) and wts.tolist() == list(range(side // 2 - 1, 0, -2))
        hb, wb = -(-h // side), -(-w // side)
        dy, dx = (torch.randint(-40, 41, (hb, wb), generator=g) for _ in range(2))
        dy[0, 0], dx[0, 0] = dy[0, -1], dx[0, -1]  # some neighbours alike
        rows, cols = torch.arange(h) // side, torch.arange(w) // side
        at = lambda v, oy, ox: v[(rows + oy).clamp(0, hb - 1)[:, None], (cols + ox).clamp(0, wb - 1)[None, :]]
        own = shift(p, at(dy, 0, 0), at(dx, 0, 0), denom).double()
        ramp = torch.zeros(side, dtype=torch.float64)
        ramp[:len(wts)] = wts.double() / total
        ky, kx = torch.arange(h) % side, torch.arange(w) % side
        want = own.clone()
        for (oy, ox), wgt in (((0, -1), ramp[kx][None, :]), ((0, 1), ramp[side - 1 - kx][None, :]),
                              ((-1, 0), ramp[ky][:, None]), ((1, 0), ramp[side - 1 - ky][:, None])):
            theirs = shift(p, at(dy, oy, ox), at(dx, oy, ox), denom).double()
            want += wgt * (theirs - own)
        got = motion.overlapped(p, dy, dx, side, denom)
        assert torch.equal(got.double(), want), (denom, float((got.double() - want).abs().max()))
        same = motion.overlapped(p, dy * 0 + 5, dx * 0 - 3, side, denom)  # one motion: no seams to hide
        assert torch.equal(same, motion.shift_blocks(p, dy * 0 + 5, dx * 0 - 3, side, denom))



@pytest.mark.parametrize("h, w", [(72, 88), (44, 60)])
def test_a_mostly_still_prediction_is_the_whole_overlapped_computation(h, w):
    # blocks that stand still among still neighbours are not computed but copied from the last
    # frame: the values must be those of computing every block
    patch, g = 4, torch.Generator().manual_seed(h + w)
    planes = tuple(torch.stack([_picture(h // s, w // s, seed=s + t) for t in range(2)])
                   for s in (1, 2, 2))
    hb, wb = motion.grid_shape(h // patch, w // patch)
    mv = torch.full((hb, wb), ZERO)
    mv[0, 1], mv[hb - 1, wb - 1] = torch.randint(0, motion.VECTORS, (2,), generator=g)
    got = predict(planes, mv, patch)
    dy, dx = vector(mv)
    for c, p in enumerate(planes):
        s = 1 if c == 0 else 2
        last = p[-1]
        for t in range(2):
            whole = motion.overlapped(last, (t + 1) * dy, (t + 1) * dx, BLOCK * patch // s, SUB * s)
            assert torch.equal(got[c][t], whole), (c, t)
    assert torch.equal(predict(planes, torch.full((hb, wb), ZERO), patch)[0], planes[0][-1:].expand(2, -1, -1))

@pytest.mark.parametrize("h, w", [(72, 88), (64, 64)])
def test_updating_a_prediction_recomputes_only_what_changed_and_equals_the_whole(h, w):
    # the encoder drops some blocks' vectors and predicts again: only the blocks touched (those
    # changed and their four neighbours) are computed, and the result is the whole prediction's
    patch, g = 4, torch.Generator().manual_seed(h * w)
    planes = tuple(torch.stack([_picture(h // s, w // s, seed=s + t) for t in range(2)])
                   for s in (1, 2, 2))
    hb, wb = motion.grid_shape(h // patch, w // patch)
    first = torch.randint(0, motion.VECTORS, (hb, wb), generator=g)
    kept = torch.where(torch.rand(hb, wb, generator=g) < 0.3, motion.ZERO, first)
    kept[0, 0] = motion.ZERO if first[0, 0] != motion.ZERO else 0  # at least one change
    old = predict(planes, first, patch)
    new = predict(planes, kept, patch, update=(old, first))
    for a, b in zip(new, predict(planes, kept, patch)):
        assert torch.equal(a, b)
    touched = motion._touched(kept, first).tolist()
    changed = torch.nonzero((kept != first).reshape(-1)).reshape(-1).tolist()
    assert set(changed) <= set(touched) and 0 in touched and 1 in touched and wb in touched
    far = [i for i in range(hb * wb) if i not in touched]
    assert far and not any(kept.reshape(-1)[i] != first.reshape(-1)[i] for i in far)
    # a block not touched keeps the old prediction's pixels
    i = far[0]
    side = motion.BLOCK * patch
    y0, x0 = i // wb * side, i % wb * side
    assert torch.equal(new[0][:, y0:y0 + side, x0:x0 + side], old[0][:, y0:y0 + side, x0:x0 + side])


def test_the_search_finds_a_sub_pixel_pan_and_keeps_a_still_picture_still():
    patch = 4
    big = _picture(160, 192, 3)
    # the camera pans 1.75 pixels right and 0.5 down per frame: sample the scene off the grid
    z = torch.zeros(160, 192, dtype=torch.long)
    frames = [shift(big, z + 2 * k, z + 7 * k, SUB) / 255.0 for k in range(4)]
    ref = torch.stack(frames[:2]).mul(255).round().div(255)
    src = torch.stack(frames[2:])
    mv = search(src, ref, patch)
    dy, dx = vector(mv)
    inner = (slice(1, -1), slice(1, -1))  # blocks whose match lies inside the picture
    exact = ((dy[inner] == 2) & (dx[inner] == 7)).float().mean()
    assert exact >= 0.95, (dy, dx)  # a smooth block may find a match as good elsewhere
    same = ref[:1].expand(2, -1, -1)
    assert (search(same, same, patch) == ZERO).all()


@pytest.mark.parametrize("h, w", [(160, 192), (150, 182)])
def test_blocks_cut_by_the_pictures_edge_find_their_motion_too(h, w):
    # the content moves right (so every block's match but the first column's lies inside the
    # picture), in a picture whose last row and column of blocks are cut short by its edges
    big = _picture(h, w, 3)
    z = torch.zeros(h, w, dtype=torch.long)
    frames = [shift(big, z + 2 * k, z - 7 * k, SUB) / 255.0 for k in range(4)]
    ref = torch.stack(frames[:2]).mul(255).round().div(255)
    dy, dx = vector(search(torch.stack(frames[2:]), ref, 4))
    inner = (slice(1, -1), slice(1, None))
    exact = ((dy[inner] == 2) & (dx[inner] == -7)).float()
    assert exact.mean() >= 0.95 and exact[:, -1].mean() >= 0.85, (dy, dx)



@pytest.mark.parametrize("h, w", [(160, 192), (150, 182)])
def test_blocks_left_out_of_the_search_stand_still_and_the_rest_find_their_motion(h, w):
    # the whole picture moves; a checkerboard of blocks (the cut last column among them) is searched
    big = _picture(h, w, 3)
    z = torch.zeros(h, w, dtype=torch.long)
    frames = [shift(big, z + 2 * k, z - 7 * k, SUB) / 255.0 for k in range(4)]
    ref, src = torch.stack(frames[:2]).mul(255).round().div(255), torch.stack(frames[2:])
    hb, wb = -(-h // 16), -(-w // 16)
    active = (torch.arange(hb)[:, None] + torch.arange(wb)[None, :]) % 2 == 0
    every = search(src, ref, 4)
    mv = search(src, ref, 4, active=active)
    assert (mv[~active] == ZERO).all() and (every[~active] != ZERO).all()
    dy, dx = vector(mv)
    inner = torch.zeros(hb, wb, dtype=torch.bool)
    inner[1:-1, 1:] = True
    found = ((dy == 2) & (dx == -7))[active & inner].float()
    assert found.mean() >= 0.95, (dy, dx)
    assert torch.equal(search(src, ref, 4, active=torch.ones(hb, wb, dtype=torch.bool)), every)

def test_blocks_take_their_neighbours_vectors_where_those_cost_less(monkeypatch):
    # a pan over a periodic pattern: every period offset matches about as well, so each block's
    # own search settles on its own; its neighbours' vectors are tried after it and kept where
    # they cost less (SAD of the group's frames against their prediction + lambda x bits)
    h, w = 96, 160
    g = torch.Generator().manual_seed(0)
    x, y = torch.arange(w)[None, :].float(), torch.arange(h)[:, None].float()
    big = (128 + 60 * torch.sin(x * 2 * np.pi / 6) + 30 * torch.sin(y * 2 * np.pi / 10)
           + torch.rand(h, w, generator=g) * 20).clamp(0, 255).round()
    z = torch.zeros(h, w, dtype=torch.long)
    frames = [shift(big, z + 5 * k, z + 11 * k, SUB) / 255.0 for k in range(4)]
    ref, src = torch.stack(frames[:2]).mul(255).round().div(255), torch.stack(frames[2:])
    rate, lam = (lambda dy, dx, fy=None, fx=None: (dy.abs() + dx.abs()).float() * 0.05 + 1), 2.0

    def objective(mv):  # per block, each block's own prediction (`shift`), as the search weighs it
        dy, dx = vector(mv)
        last = ref[-1].mul(255)
        pred = torch.stack([motion.shift_blocks(last, t * dy, t * dx, 16, SUB) for t in (1, 2)]) / 255
        sad = (pred - src).abs().mul(255).sum(0).reshape(h // 16, 16, w // 16, 16).sum((1, 3))
        return torch.where(mv == ZERO, sad * search_module.STILL_BIAS, sad) + lam * rate(*vector(mv))

    with_neighbours = objective(search(src, ref, 4, rate, lam))
    monkeypatch.setattr(search_module, "NEIGHBOUR_ROUNDS", 0)
    alone = objective(search(src, ref, 4, rate, lam))
    assert (with_neighbours <= alone + 1e-3).all()  # a block only ever takes a cheaper vector
    assert (with_neighbours < alone - 1).float().mean() > 0.5
    assert with_neighbours.sum() < 0.6 * alone.sum()


def test_blocks_try_the_vector_the_coder_predicts_for_them():
    # a flat picture: every vector predicts it alike, so bits alone decide; the rate model's
    # predicted vector (10, -9 pixels: beyond any refinement's reach) costs nothing, any other 8 bits
    h, w = 64, 96
    flat = torch.full((2, h, w), 0.5)
    target = (torch.tensor(10 * SUB), torch.tensor(-9 * SUB))

    def rate(dy, dx, fy=None, fx=None):
        return torch.where((dy == target[0]) & (dx == target[1]), 0.0, 8.0)

    predicted = lambda fy, fx: (torch.full_like(fy, 10 * SUB), torch.full_like(fx, -9 * SUB))
    found = search(flat, flat, 4, rate, 1.0, predicted=predicted)
    assert (found == symbol(*target)).all()
    blind = search(flat, flat, 4, rate, 1.0)
    assert not (blind == symbol(*target)).any()


def test_vectors_out_of_the_decoders_range_are_refused():
    from vqcodec.entropy import EntropyCoder, _Adaptive
    from vqcodec.tablefit import fit_tables, new_counts
    counts = list(new_counts(1, 4, 1, 48))
    coder = EntropyCoder(*fit_tables(counts))
    import constriction
    enc = constriction.stream.queue.RangeEncoder()
    shape = (1, 1)
    # a difference of +RANGE + 1 from a still prediction
    enc.encode(np.array([2 * RANGE + RANGE + 1], dtype=np.int32), coder._model("mv", 2))
    enc.encode(np.array([2 * RANGE], dtype=np.int32), coder._model("mv", MV_Y_CONTEXTS + 2 * 2 + 1))
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    try:
        coder._decode_vectors(dec, _Adaptive(coder), None, shape)
    except ValueError as exc:
        assert "out of range" in str(exc)
    else:
        raise AssertionError("an out-of-range vector was accepted")


def test_block_sums_and_token_masks_follow_the_blocks():
    h, w = 6, 9
    hb, wb = motion.grid_shape(h, w)
    assert (hb, wb) == (2, 3)
    mv = torch.full((hb, wb), ZERO)
    mv[1, 2] = symbol(torch.tensor(1), torch.tensor(0))
    mask = motion.token_mask(mv, h, w).reshape(h, w)
    assert mask[BLOCK:, 2 * BLOCK:].all() and mask.sum() == (h - BLOCK) * (w - 2 * BLOCK)
    sums = motion.block_sums(torch.ones(h * w), (h, w))
    assert sums.tolist() == [[16, 16, 4], [8, 8, 2]]


def test_a_coarse_grid_spreads_each_cells_vector_over_its_blocks():
    from vqcodec.motion import cell_shape, cells, spread
    assert cell_shape(5, 7) == (3, 4) and cell_shape(4, 6) == (2, 3)
    coarse = torch.arange(12).reshape(3, 4)
    field = spread(coarse, (5, 7))
    assert field.shape == (5, 7)
    assert field[0, :4].tolist() == [0, 0, 1, 1] and field[4, 6] == 11 and field[3, 2] == 5
    assert torch.equal(cells(field), coarse)
    assert (spread(coarse.numpy(), (5, 7)) == field.numpy()).all()  # numpy alike
