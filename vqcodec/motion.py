"""Motion compensation for later temporal groups: block vectors and the prediction from them.

A group after the first may predict each block of BLOCK x BLOCK tokens from the previous group's
*last decoded frame*, displaced by a motion vector v per block: frame t of the group is predicted
from that frame displaced by (t + 1) * v (constant velocity), every plane alike (chroma by half
of it).  Vectors are in quarter luma pixels, -RANGE..RANGE per axis; positions between pixels are
interpolated by 8-tap (luma) and 4-tap (chroma) filters in exact integer arithmetic (`shift`), so
every device predicts the same values; picture edges are repeated.  The blocks' edges
overlap (`overlapped`): the pixels within a quarter block of an edge mix in, by a ramp of exact
integer weights, what the neighbour across it would predict there with its own vector, so the
seams between blocks that move differently do not reach the latent as false detail.  A vector is carried
as one symbol per block: (dy + RANGE) * SIDE + (dx + RANGE); ZERO is the still vector, which
keeps the previous group's latent instead (a still block's tokens keep their own history).

The encoder's search for the vectors is in search.py; the decoder only applies the vectors it
reads (`predict`), and imports nothing of the search.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

BLOCK = 4                 # tokens per block side
SUB = 4                   # vector units per luma pixel (quarter pixels)
RANGE = 32 * SUB          # -32..32 luma pixels per axis
SIDE = 2 * RANGE + 1
VECTORS = SIDE * SIDE
ZERO = RANGE * SIDE + RANGE

def vector(symbol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols -> (dy, dx) in quarter luma pixels."""
    return symbol // SIDE - RANGE, symbol % SIDE - RANGE


def symbol(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """(dy, dx) in quarter luma pixels, clamped to the range -> symbols."""
    return (dy.clamp(-RANGE, RANGE) + RANGE) * SIDE + dx.clamp(-RANGE, RANGE) + RANGE


def grid_shape(h_tokens: int, w_tokens: int) -> tuple[int, int]:
    return -(-h_tokens // BLOCK), -(-w_tokens // BLOCK)


# At coarse steps a later group may carry one vector per 2 x 2 blocks (32 x 32 luma pixels with
# patch 4), its *coarse grid*: the blocks of a cell share it (entropy.coarse_vectors says where).
CELL = 2


def cell_shape(hb: int, wb: int) -> tuple[int, int]:
    """The coarse grid of a (Hb, Wb) block grid."""
    return -(-hb // CELL), -(-wb // CELL)


def cells(field):
    """A block field (Hb, Wb) whose cells are uniform -> its coarse grid (each cell's top-left block)."""
    return field[::CELL, ::CELL]


def spread(coarse, shape: tuple[int, int]):
    """A coarse grid -> the block field (Hb, Wb) = `shape` it stands for (numpy or torch)."""
    if isinstance(coarse, torch.Tensor):
        return coarse.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)[:shape[0], :shape[1]]
    return coarse.repeat(CELL, 0).repeat(CELL, 1)[:shape[0], :shape[1]]


# Sub-pixel positions are interpolated by separable filters of integer taps summing to 2**6 (the
# DCT-based interpolation filters of HEVC: 8 taps for each quarter-pixel phase of luma, 4 for each
# eighth-pixel phase of chroma), rows first, then columns; the result is divided by 2**12 and
# clamped to 0..255.  Every sum is of integers below 2**24 whatever its order, so every device
# computes the same values.  Bilinear interpolation (formats up to 15) blurred every moving block.
LUMA_TAPS = ((0, 0, 0, 64, 0, 0, 0, 0), (-1, 4, -10, 58, 17, -5, 1, 0),
             (-1, 4, -11, 40, 40, -11, 4, -1), (0, 1, -5, 17, 58, -10, 4, -1))
CHROMA_TAPS = ((0, 64, 0, 0), (-2, 58, 10, -2), (-4, 54, 16, -2), (-6, 46, 28, -4),
               (-4, 36, 36, -4), (-4, 28, 46, -6), (-2, 16, 54, -4), (-2, 10, 58, -2))
TAP_SUM = 64


def taps_table(denom: int) -> tuple[tuple[int, ...], ...]:
    """The interpolation taps, a row per phase, for positions in 1/denom pixels (4: luma, 8:
    chroma); tap k of phase f weighs the sample k - (taps / 2 - 1) pixels from the whole position."""
    table = {SUB: LUMA_TAPS, 2 * SUB: CHROMA_TAPS}.get(denom)
    if table is None:
        raise ValueError(f"no interpolation filter for 1/{denom} pixels")
    return table


@functools.lru_cache(maxsize=None)
def filter_taps(denom: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """taps_table(denom) as a (denom, taps) tensor, made once per device (read only)."""
    return torch.tensor(taps_table(denom), device=device, dtype=dtype)


def _interpolate(block: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Samples (N, bh + taps - 1, bw + taps - 1) around N rectangles, each rectangle's taps wy, wx
    (N, taps) -> (N, bh, bw): rows filtered, then columns, divided by TAP_SUM**2 and clamped to
    0..255.  Every partial sum is an integer below 2**24: exact in float32 in any order."""
    taps = wy.shape[1]
    bh, bw = block.shape[1] - taps + 1, block.shape[2] - taps + 1
    across = block[:, :, :bw] * wx[:, None, None, 0]
    for k in range(1, taps):
        across.addcmul_(block[:, :, k:k + bw], wx[:, None, None, k])
    out = across[:, :bh] * wy[:, None, None, 0]
    for k in range(1, taps):
        out.addcmul_(across[:, k:k + bh], wy[:, None, None, k])
    return out.div_(TAP_SUM * TAP_SUM).clamp_(0, 255)


def shift(p: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, denom: int) -> torch.Tensor:
    """Plane p (H, W) of integers 0..255 (as float) sampled at (row + dy/denom, col + dx/denom)
    per pixel (dy, dx integer tensors (H, W)), by the interpolation filter (filter_taps),
    positions clamped to the plane (edges repeated).  The definition, pixel by pixel (tests
    hold the fast paths to it)."""
    H, W = p.shape
    taps = filter_taps(denom, p.device, p.dtype)
    n = taps.shape[1]
    iy, ix = torch.div(dy, denom, rounding_mode="floor"), torch.div(dx, denom, rounding_mode="floor")
    fy, fx = dy - iy * denom, dx - ix * denom
    m = int(max(iy.abs().max(), ix.abs().max())) + n if iy.numel() else n
    wp = W + 2 * m  # a margin of repeated edges stands for clamping
    flat = F.pad(p[None, None], (m, m, m, m), mode="replicate").reshape(-1)
    at = (torch.arange(H, device=p.device)[:, None] + iy + m) * wp + torch.arange(W, device=p.device)[None, :] + ix + m
    k = torch.arange(n, device=p.device) - (n // 2 - 1)
    samples = flat.take(at.reshape(-1, 1, 1) + k[:, None] * wp + k[None, :])  # (H W, n rows, n columns): 1 x 1 rectangles
    return _interpolate(samples, taps[fy.reshape(-1)], taps[fx.reshape(-1)]).reshape(H, W)


def _reach(dy: torch.Tensor, dx: torch.Tensor, denom: int) -> int:
    """Whole pixels of margin that displacements (dy, dx) / denom read past a plane's edges (the
    filter's reach included)."""
    n = len(taps_table(denom)[0])
    return max(int(d.abs().max()) // denom for d in (dy, dx)) + n if dy.numel() else n


def _rects(flat: torch.Tensor, m: int, height: int, top: torch.Tensor, left: torch.Tensor, dy: torch.Tensor,
           dx: torch.Tensor, size: tuple[int, int], denom: int) -> torch.Tensor:
    """Rectangles of size (bh, bw) of a plane `height` rows high, padded by repeating its edges
    (`flat`: m rows above, m + bh below, m columns on the left, at least m + bw on the right), whose
    top-left pixels are (top, left) (N,), each displaced by its (dy, dx) / denom (N,) (at most
    m - taps whole pixels) -> (N, bh, bw): `shift`'s values bit for bit.  The samples of each
    rectangle are read as bh + taps - 1 runs of bw + taps - 1; rows past the picture's bottom take
    its last row's values, columns past its right edge are the caller's to crop."""
    bh, bw = size
    taps = filter_taps(denom, flat.device, flat.dtype)
    n = taps.shape[1]
    iy, ix = torch.div(dy, denom, rounding_mode="floor"), torch.div(dx, denom, rounding_mode="floor")
    wp = flat.shape[1]
    runs = torch.as_strided(flat, (flat.numel() - bw - n + 2, bw + n - 1), (1, 1))
    start_row = top.clamp(max=height - 1)  # a rectangle wholly below the picture repeats its last row
    rows = start_row[:, None] + torch.arange(bh + n - 1, device=flat.device)[None, :]
    start = (rows + (iy + m - (n // 2 - 1))[:, None]) * wp + (left + ix + m - (n // 2 - 1))[:, None]
    block = runs.index_select(0, start.reshape(-1)).reshape(-1, bh + n - 1, bw + n - 1)
    out = _interpolate(block, taps[dy - iy * denom], taps[dx - ix * denom])
    cut = top + bh > height  # a block cut by the bottom edge: its rows below repeat the last row's values
    if bool(cut.any()):
        inside = (torch.arange(bh, device=flat.device)[None, :] + top[cut, None]).clamp_(max=height - 1) - start_row[cut, None]
        out[cut] = out[cut].gather(1, inside[:, :, None].expand(-1, -1, bw))
    return out


def _padded(p: torch.Tensor, m: int, side: int) -> torch.Tensor:
    """Plane p with m repeated edge rows and columns, 2 * side more columns on the right (the
    runs of blocks cut by the right edge, and their last quarter, stay inside their own row) and
    side more rows below (the rows of blocks cut by the bottom edge)."""
    return F.pad(p[None, None], (m, m + 2 * side, m, m + side), mode="replicate")[0, 0]


def _corners(hb: int, wb: int, side: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left pixels (Hb * Wb,) of the blocks, raster order."""
    at = torch.arange(hb * wb, device=device)
    return at // wb * side, at % wb * side


def _unblock(blocks: torch.Tensor, hb: int, wb: int, h: int, w: int) -> torch.Tensor:
    """Blocks (Hb * Wb, side, side), raster order -> the plane (h, w) they tile (cropped)."""
    side = blocks.shape[-1]
    return blocks.reshape(hb, wb, side, side).permute(0, 2, 1, 3).reshape(hb * side, wb * side)[:h, :w]


def shift_blocks(p: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, side: int, denom: int) -> torch.Tensor:
    """`shift` for displacements constant over blocks of side x side pixels (dy, dx (Hb, Wb)),
    bit for bit, block by block (`_rects`)."""
    hb, wb = dy.shape
    top, left = _corners(hb, wb, side, p.device)
    m = _reach(dy, dx, denom)
    out = _rects(_padded(p, m, side), m, p.shape[0], top, left, dy.reshape(-1), dx.reshape(-1), (side, side), denom)
    return _unblock(out, hb, wb, *p.shape)


def overlap_weights(side: int) -> tuple[int, torch.Tensor]:
    """The overlapped prediction's weights across a block of `side` pixels: (total, w) with w[k]
    (k = 0 .. side // 4 - 1) the weight, out of `total`, of the neighbour's prediction on the
    pixel k pixels in from the edge they share: a ramp from just under half at the edge to
    nothing a quarter of the block in (7, 5, 3, 1 of 16 for 16 pixels; 3, 1 of 8 for 8)."""
    r = max(1, side // 4)
    return 4 * r, torch.arange(2 * r - 1, 0, -2)


def overlapped(p: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, side: int, denom: int,
               only: torch.Tensor | None = None) -> torch.Tensor:
    """Overlapped block motion compensation of plane p (H, W), displacements (dy, dx) (Hb, Wb) per
    block of side x side pixels: a pixel within side // 4 of its block's edge mixes the block's own
    prediction (`shift_blocks`) with the prediction its neighbour across that edge would give it,
    ((total - sum w) * own + sum w * neighbour's) / total (overlap_weights; a block at the
    picture's edge has no neighbour there, a neighbour with the same displacement changes nothing).
    Exact: every value is a multiple of 2**-12 / total in 0..255 and every product and sum is
    representable in float32, so every device computes the same values.  `only` (raster block indices): those blocks alone,
    (len(only), side, side), uncropped (`_place` puts them into a plane)."""
    hb, wb = dy.shape
    top, left = _corners(hb, wb, side, p.device)
    vy, vx = dy.reshape(-1), dx.reshape(-1)
    at = torch.arange(hb * wb, device=p.device) if only is None else only
    m = _reach(dy, dx, denom)  # a neighbour's displacement is one of these too
    flat = _padded(p, m, side)
    own = _rects(flat, m, p.shape[0], top[at], left[at], vy[at], vx[at], (side, side), denom)
    total, w = overlap_weights(side)
    r, w = len(w), w.to(device=p.device, dtype=p.dtype) / total  # w / total: a power of two, exact
    head, tail, every = slice(0, r), slice(side - r, side), slice(0, side)
    # own + sum (w / total) (theirs - own), the same value as the formula above: every term is a
    # multiple of 2**-16 (luma) or 2**-15 (chroma) below 256 in magnitude (24 bits at most) and
    # every partial sum a mix of values in 0..255, exact in float32
    out = own.clone()
    # the neighbour (block offset), the pixels it overlaps (rows, columns) and its weights on them
    for (oy, ox), rows, cols, ramp in (((0, -1), every, head, w[None, :]), ((0, 1), every, tail, w.flip(0)[None, :]),
                                       ((-1, 0), head, every, w[:, None]), ((1, 0), tail, every, w.flip(0)[:, None])):
        ny, nx = _from_neighbour(dy, oy, ox).reshape(-1)[at], _from_neighbour(dx, oy, ox).reshape(-1)[at]
        sel = torch.nonzero((ny != vy[at]) | (nx != vx[at])).reshape(-1)
        if len(sel):
            size = (rows.stop - rows.start, cols.stop - cols.start)
            theirs = _rects(flat, m, p.shape[0], top[at[sel]] + rows.start, left[at[sel]] + cols.start, ny[sel],
                            nx[sel], size, denom)
            out[sel, rows, cols] += ramp * (theirs - own[sel, rows, cols])
    return _unblock(out, hb, wb, *p.shape) if only is None else out


def _place(plane: torch.Tensor, blocks: torch.Tensor, at: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A copy of plane (H, W) with the blocks (N, side, side) at raster indices `at` of the block
    grid (Hb, Wb) put in (cropped at the picture's edges)."""
    (H, W), (hb, wb), side = plane.shape, grid, blocks.shape[-1]
    whole = plane.new_zeros(hb * side, wb * side)
    whole[:H, :W] = plane
    whole.view(hb, side, wb, side).permute(0, 2, 1, 3)[at // wb, at % wb] = blocks
    return whole[:H, :W]


def _touched(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Raster indices of the blocks whose own vector or a 4-neighbour's differs between the
    vector fields `new` and `old` (Hb, Wb): those whose overlapped prediction changes."""
    d = F.pad((new != old).float()[None, None], (1, 1, 1, 1))[0, 0]
    near = d[1:-1, 1:-1] + d[:-2, 1:-1] + d[2:, 1:-1] + d[1:-1, :-2] + d[1:-1, 2:]
    return torch.nonzero(near.reshape(-1) > 0).reshape(-1)


def predict(planes: tuple[torch.Tensor, ...], symbols: torch.Tensor, patch: int,
            update: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """The previous group's decoded planes (T, H, W), (T, H/2, W/2) x 2 (8-bit values, 0..255)
    and the vectors (Hb, Wb) -> the predicted planes of the same shapes, in pixel levels (exact
    multiples of 1/65536 for luma, 1/32768 for chroma): frame t is the last
    frame displaced by (t + 1) * v, each block's edges overlapped with its neighbours'
    predictions (`overlapped`).  update = (prediction, its vectors): the prediction from the same
    planes with other vectors; only the blocks the change touches are computed again (the
    same values as computing it all).  Without one, the blocks that stand still among still
    neighbours take the last frame as it is (what computing them gives)."""
    dy, dx = vector(symbols)
    if update is None:  # a block that stands still among still neighbours predicts the last frame itself
        update = tuple(p[-1:].expand_as(p) for p in planes), torch.full_like(symbols, ZERO)
    only = _touched(symbols, update[1])
    if len(only) == symbols.numel():
        only = None
    out = []
    for c, p in enumerate(planes):
        s = 1 if c == 0 else 2
        last = p[-1]
        side = BLOCK * patch // s
        frames = [overlapped(last, (t + 1) * dy, (t + 1) * dx, side, SUB * s, only) for t in range(p.shape[0])]
        if only is None:
            out.append(torch.stack(frames))
        else:  # every block's values are those of the whole computation
            out.append(torch.stack([_place(update[0][c][t], f, only, dy.shape) for t, f in enumerate(frames)]))
    return tuple(out)


def _from_neighbour(v: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Each block's value (Hb, Wb) from the block dy rows and dx columns away (its own at the edge)."""
    at = lambda n, d: (torch.arange(n, device=v.device) + d).clamp_(0, n - 1)
    return v[at(v.shape[0], dy)[:, None], at(v.shape[1], dx)[None, :]]


def block_mask(blocks: torch.Tensor, h_tokens: int, w_tokens: int) -> torch.Tensor:
    """Per-block flags (Hb, Wb) -> per-token flags (h*w,)."""
    return blocks.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:h_tokens, :w_tokens].reshape(-1)


def token_mask(symbols: torch.Tensor, h_tokens: int, w_tokens: int) -> torch.Tensor:
    """Tokens (h*w,) whose block moves (vector other than ZERO)."""
    return block_mask(symbols != ZERO, h_tokens, w_tokens)


def _tile_sums(values: torch.Tensor, k: int) -> torch.Tensor:
    """A 2-D grid of values summed over each k x k tile (the last ones cut by the edge) -> (ceil(H / k), ceil(W / k))."""
    h, w = values.shape
    v = F.pad(values[None, None], (0, -(-w // k) * k - w, 0, -(-h // k) * k - h))
    return F.avg_pool2d(v, k)[0, 0] * (k * k)


def block_sums(values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Per-token values (h*w,) summed over each block -> (Hb, Wb)."""
    return _tile_sums(values.reshape(shape), BLOCK)


def cell_sums(blocks: torch.Tensor) -> torch.Tensor:
    """Per-block values (Hb, Wb) summed over each cell of the coarse grid -> cell_shape(Hb, Wb)."""
    return _tile_sums(blocks, CELL)
