"""Motion compensation for later temporal groups: block vectors, their search and the prediction.

A group after the first may predict each block of BLOCK x BLOCK tokens from the previous group's
*last decoded frame*, displaced by a motion vector v per block: frame t of the group is predicted
from that frame displaced by (t + 1) * v (constant velocity), every plane alike (chroma by half
of it).  Vectors are in quarter luma pixels, -RANGE..RANGE per axis; positions between pixels are
interpolated bilinearly in exact integer arithmetic (8-bit samples times weights of at most
2**6), so every device predicts the same values; picture edges are repeated.  The blocks' edges
overlap (`overlapped`): the pixels within a quarter block of an edge mix in, by a ramp of exact
integer weights, what the neighbour across it would predict there with its own vector, so the
seams between blocks that move differently do not reach the latent as false detail.  A vector is carried
as one symbol per block: (dy + RANGE) * SIDE + (dx + RANGE); ZERO is the still vector, which
keeps the previous group's latent instead (a still block's tokens keep their own history).

The search is the encoder's (sum of absolute differences on luma over the group's frames, each
against its own prediction (each block's own, without the overlap), plus lambda times the vector's bits under the caller's rate model;
coarse to fine: every whole-pixel vector at quarter resolution on the first frame, then from
the best of that, no motion and the caller's guess: +-2 and +-1 whole pixels, +-1/2 and +-1/4
pixel at full resolution, read from the reference's 16 precomputed quarter-pixel phases; then,
twice, each block tries the vectors its four neighbours ended with, then +-1/2 and +-1/4 pixel
around its best again; the still vector is kept unless a moving one beats it by 3 %); the
decoder only applies the vectors it reads.  Nothing here touches the entropy coder: the rate
model is a function passed in.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

BLOCK = 4                 # tokens per block side
SUB = 4                   # vector units per luma pixel (quarter pixels)
RANGE = 32 * SUB          # -32..32 luma pixels per axis
SIDE = 2 * RANGE + 1
VECTORS = SIDE * SIDE
ZERO = RANGE * SIDE + RANGE
STILL_BIAS = 0.97         # a moving vector must beat the still one by 3 % of its difference
NEIGHBOUR_ROUNDS = 2      # rounds of trying the neighbours' vectors after the refinement

# (dy, dx) per block, and the field (vy, vx) the search holds now (None in its coarse stage) -> bits
# per block: a vector's code length may depend on the other blocks' (those it is predicted from)
Rate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def vector(symbol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols -> (dy, dx) in quarter luma pixels."""
    return symbol // SIDE - RANGE, symbol % SIDE - RANGE


def symbol(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """(dy, dx) in quarter luma pixels, clamped to the range -> symbols."""
    return (dy.clamp(-RANGE, RANGE) + RANGE) * SIDE + dx.clamp(-RANGE, RANGE) + RANGE


def grid_shape(h_tokens: int, w_tokens: int) -> tuple[int, int]:
    return -(-h_tokens // BLOCK), -(-w_tokens // BLOCK)


def _bilinear(a, b, c, d, fy, fx, n: int) -> torch.Tensor:
    """The value at (fy / n, fx / n) between pixels a (top left), b (top right), c (bottom left)
    and d (bottom right): ((n - fy)((n - fx) a + fx b) + fy((n - fx) c + fx d)) / n**2, integer
    weights, every step exact (so computed in place, in any order, it is the same), one exact
    division by n * n."""
    gx = n - fx
    top = (a * gx).addcmul_(b, fx)
    return top.mul_(n - fy).addcmul_((c * gx).addcmul_(d, fx), fy).div_(n * n)


def shift(p: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, denom: int) -> torch.Tensor:
    """Plane p (H, W) of integers 0..255 (as float) sampled at (row + dy/denom, col + dx/denom)
    per pixel (dy, dx integer tensors (H, W)), bilinear, positions clamped to the plane (edges
    repeated).  Exact: every product and sum is an integer below 2**24."""
    H, W = p.shape
    iy, ix = torch.div(dy, denom, rounding_mode="floor"), torch.div(dx, denom, rounding_mode="floor")
    fy, fx = (dy - iy * denom).to(p.dtype), (dx - ix * denom).to(p.dtype)
    m = int(max(iy.abs().max(), ix.abs().max())) + 1 if iy.numel() else 1
    wp = W + 2 * m  # a margin of repeated edges stands for clamping
    flat = F.pad(p[None, None], (m, m, m, m), mode="replicate").reshape(-1)
    at = (torch.arange(H, device=p.device)[:, None] + iy + m) * wp + torch.arange(W, device=p.device)[None, :] + ix + m
    return _bilinear(flat.take(at), flat.take(at + 1), flat.take(at + wp), flat.take(at + wp + 1), fy, fx, denom)


def _reach(dy: torch.Tensor, dx: torch.Tensor, denom: int) -> int:
    """Whole pixels of margin that displacements (dy, dx) / denom read past a plane's edges."""
    return max(int(d.abs().max()) // denom for d in (dy, dx)) + 2 if dy.numel() else 1


def _rects(flat: torch.Tensor, m: int, height: int, top: torch.Tensor, left: torch.Tensor, dy: torch.Tensor,
           dx: torch.Tensor, size: tuple[int, int], denom: int) -> torch.Tensor:
    """Rectangles of size (bh, bw) of a plane `height` rows high, padded by repeating its edges
    (`flat`: m rows above and below, m columns on the left, at least m + bw on the right), whose
    top-left pixels are (top, left) (N,), each displaced by its (dy, dx) / denom (N,) (at most
    m - 1 whole pixels) -> (N, bh, bw): `shift`'s values bit for bit.  Each rectangle row is read
    as one run of bw + 1 samples (and the run below it) instead of four gathers per pixel; rows
    past the picture's bottom repeat its last row, columns past its right edge are the caller's to
    crop."""
    bh, bw = size
    iy, ix = torch.div(dy, denom, rounding_mode="floor"), torch.div(dx, denom, rounding_mode="floor")
    fy, fx = ((d - i * denom).to(flat.dtype)[:, None, None] for d, i in ((dy, iy), (dx, ix)))
    wp = flat.shape[1]
    runs = torch.as_strided(flat, (flat.numel() - bw, bw + 1), (1, 1))
    rows = (top[:, None] + torch.arange(bh, device=flat.device)[None, :]).clamp_(max=height - 1)
    start = (rows + iy[:, None] + m) * wp + (left + ix + m)[:, None]
    above = runs.index_select(0, start.reshape(-1)).reshape(-1, bh, bw + 1)
    below = runs.index_select(0, (start + wp).reshape(-1)).reshape(-1, bh, bw + 1)
    return _bilinear(above[..., :-1], above[..., 1:], below[..., :-1], below[..., 1:], fy, fx, denom)


def _padded(p: torch.Tensor, m: int, side: int) -> torch.Tensor:
    """Plane p with m repeated edge rows and columns, 2 * side more columns on the right (the
    runs of blocks cut by the right edge, and their last quarter, stay inside their own row)."""
    return F.pad(p[None, None], (m, m + 2 * side, m, m), mode="replicate")[0, 0]


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
    Exact: every value is a multiple of 1 / denom**2 and every product and sum stays below 2**24,
    so every device computes the same values.  `only` (raster block indices): those blocks alone,
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
    # multiple of 2**-8 (luma) or 2**-9 (chroma) below 256 in magnitude, exact in float32
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
    multiples of 1/256 for luma, 1/1024 for chroma): frame t is the last
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


def _phases(r: torch.Tensor, pad: int) -> torch.Tensor:
    """Plane r (H, W) of 8-bit values -> (SUB*SUB, H + 2 pad + 1, W + 2 pad + 1) every quarter-pixel
    phase of it, bilinear as in `shift`, edges repeated.  Computed separably, horizontal weights
    first, in `_bilinear`'s order of operations: the same exact integers, then one exact division
    by a power of two, so the values are bit for bit `_bilinear`'s."""
    rp = F.pad(r[None, None], (pad, pad + 2, pad, pad + 2), mode="replicate")[0, 0]
    left, right = rp[:, :-1], rp[:, 1:]
    across = [(SUB - fx) * left + fx * right for fx in range(SUB)]  # (H + 2 pad + 2, W + 2 pad + 1) each
    out = torch.empty(SUB, SUB, rp.shape[0] - 1, rp.shape[1] - 1, dtype=rp.dtype, device=rp.device)
    for fy in range(SUB):
        for fx, h in enumerate(across):
            torch.add((SUB - fy) * h[:-1], h[1:], alpha=fy, out=out[fy, fx])
    return out.div_(SUB * SUB).reshape(SUB * SUB, *out.shape[2:])


def _from_neighbour(v: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Each block's value (Hb, Wb) from the block dy rows and dx columns away (its own at the edge)."""
    at = lambda n, d: (torch.arange(n, device=v.device) + d).clamp_(0, n - 1)
    return v[at(v.shape[0], dy)[:, None], at(v.shape[1], dx)[None, :]]


def search(src: torch.Tensor, ref: torch.Tensor, patch: int, rate: Rate | None = None, lam: float = 0.0,
           guess: torch.Tensor | None = None, active: torch.Tensor | None = None) -> torch.Tensor:
    """Best vector symbol per block: src luma (T, H, W) of the group, ref luma (T, H, W) of the
    previous group's decoded frames, in [0, 1] (H, W multiples of patch) -> (Hb, Wb) long.
    A vector's cost is the sum over the group's frames t of the absolute differences between
    frame t and the previous group's last frame displaced by (t + 1) * v (the block's own
    prediction, its edges not overlapped), plus `lam` times its bits under `rate` (the caller's
    model of the vector's code length, given the field as the search held it when the candidate's
    round began: where pictures match about as well anywhere, the cheapest vector wins).  `guess` (Hb, Wb): vector
    symbols tried as a second start for the refinement (the caller's prediction).  `active` (Hb, Wb):
    the blocks to search; the others take the still vector without one (and stand still in the
    field the others' rates and neighbour candidates see)."""
    if not lam:
        rate = None
    side = BLOCK * patch
    H, W = src.shape[1:]
    hb, wb = -(-H // side), -(-W // side)
    pad = (0, wb * side - W, 0, hb * side - H)
    s = F.pad(src[None], pad, mode="replicate")[0] * 255.0  # (T, Hp, Wp)
    T = s.shape[0]
    r = ref[-1].mul(255.0).round_()
    # 1. whole pixels at quarter resolution, exhaustive over +-RANGE
    s4 = F.avg_pool2d(s[None, :1], 4)[0, 0]  # the first frame, one frame from the reference
    r4 = F.avg_pool2d(F.pad(r[None, None], pad, mode="replicate"), 4)[0, 0]
    k = RANGE // SUB // 4
    rp = F.pad(r4[None, None], (k, k, k, k), mode="replicate")[0, 0]
    h4, w4 = s4.shape
    n = 2 * k + 1
    # a row of candidates at a time: the n displacements across as a strided view of the padded
    # reference, their differences summed over each block by one pooling (sums of multiples of
    # 1/16 below 2**12: exact, the same values as summing block by block)
    costs = torch.cat([F.avg_pool2d((rp.as_strided((n, h4, w4), (1, rp.shape[1], 1), oy * rp.shape[1]) - s4)
                                    .abs_()[None], side // 4, divisor_override=1)[0] for oy in range(n)])
    costs[(n * n) // 2] *= STILL_BIAS
    o = torch.arange(-k, k + 1, device=src.device) * 4 * SUB
    if rate is not None:  # one frame at 1/16 of the pixels: 1/(16 T) of the full-resolution cost
        oy, ox = o.repeat_interleave(n)[:, None, None], o.repeat(n)[:, None, None]
        costs += lam / (16 * T) * rate(oy.expand(-1, hb, wb), ox.expand(-1, hb, wb), None, None)
    best = costs.argmin(0)
    vy, vx = o[best // n], o[best % n]  # quarter pixels
    if active is not None:
        vy, vx = vy * active, vx * active
    # 2. refine at full resolution: whole pixels +-2 by 2 then +-1, then half and quarter pixels
    # the reference is padded as far as any candidate can reach: the starts, then at most
    # 2 + 1 + 1/2 + 1/4 pixels of refinement, a neighbour's vector (as far), 1/2 + 1/4 pixel more
    # (a tighter margin: smaller phases, faster gathers)
    starts = [vy, vx] + (list(vector(guess)) if guess is not None else [])
    reach = min(RANGE, int(max(int(a.abs().max()) for a in starts)) + 5 * SUB - 2) if vy.numel() else RANGE
    margin = T * -(-reach // SUB) + 4
    ph = _phases(r, margin).reshape(-1)
    Hq, Wq = H + 2 * margin + 1, W + 2 * margin + 1
    at = lambda n: torch.arange(n, device=src.device)
    rows = (at(hb)[:, None, None, None] * side + at(side)[None, :, None, None]).clamp_(max=H - 1)
    # block-major (hb, wb, side, side): each block's pixels are read together, so a varied vector
    # field costs little more than a uniform one (raster order interleaves every block's rows)
    row_at = ((rows[:, :, :, 0] + margin) * Wq + margin).permute(0, 2, 1) \
        + at(wb)[None, :, None] * side  # where each row of a still block begins: (hb, wb, side)
    # every run of `side` samples of the phases, as rows of a view (no copy): a block row is one
    # index, and index_select copies whole rows, several times faster than gathering each sample
    runs = torch.as_strided(ph, (ph.numel() - side + 1, side), (1, 1))
    inside = W - (wb - 1) * side  # columns of the last block column inside the picture
    sb = s.reshape(T, hb, side, wb, side).permute(0, 1, 3, 2, 4).contiguous()

    times = at(T)[:, None] + 1
    nb = hb * wb
    sel = None if active is None or bool(active.all()) else torch.nonzero(active.reshape(-1))[:, 0]
    # each searched block's row starts, source pixels and whether it is in the last column (cut by
    # the picture's right edge where inside < side)
    block_rows, sb, edge = row_at.reshape(nb, side), sb.reshape(T, nb, side, side), at(nb) % wb == wb - 1
    if sel is not None:
        block_rows, sb, edge = block_rows[sel], sb[:, sel], edge[sel]
    edge = torch.nonzero(edge)[:, 0]

    def cost(ty, tx):  # every frame of the group in one gather: frame t displaced by (t + 1) (ty, tx)
        ty, tx = ty.reshape(-1), tx.reshape(-1)
        if sel is not None:  # the active blocks only; the others' cost is 0 (they never change)
            ty, tx = ty[sel], tx[sel]
        dy, dx = times * ty, times * tx  # (T, blocks)
        iy, ix = torch.div(dy, SUB, rounding_mode="floor"), torch.div(dx, SUB, rounding_mode="floor")
        phase = (dy - iy * SUB) * SUB + (dx - ix * SUB)
        off = (phase * (Hq * Wq) + iy * Wq + ix)[..., None]
        got = runs.index_select(0, (block_rows + off).reshape(-1)).reshape(T, -1, side, side)
        if inside < side:  # past the picture's right edge the edge column repeats, as in the source
            got[:, edge, :, inside:] = got[:, edge, :, inside - 1:inside]
        # a block's sum over up to 16 frames is of multiples of 1/16 below 2**24: exact in any order
        total = got.sub_(sb).abs_().sum((0, 2, 3))
        if sel is None:
            return total.reshape(hb, wb)
        return total.new_zeros(nb).index_copy_(0, sel, total).reshape(hb, wb)

    # each candidate's bits given the field as it stood when its round of candidates began (the
    # same field objects for the whole round, so the caller may work out what depends on it once)
    field = [vy, vx]
    bits = (lambda ty, tx: lam * rate(ty, tx, *field)) if rate is not None else (lambda ty, tx: 0)
    zero = torch.zeros_like(vy)
    c0, r0 = cost(zero, zero), bits(zero, zero)
    still = c0 * STILL_BIAS + r0
    best = cost(vy, vx) + bits(vy, vx)

    def keep(c, ty, tx):  # each block keeps the cheaper of its best so far and (ty, tx)
        nonlocal best, vy, vx
        better = c < best
        best, vy, vx = torch.where(better, c, best), torch.where(better, ty, vy), torch.where(better, tx, vx)

    # other starts: no motion (the coarse stage, on one frame and at a quarter of the resolution,
    # can be fooled by a far match), and the caller's guess
    if active is not None:  # a block left out keeps the still vector: nothing is cheaper than its best
        best = best.masked_fill(~active, -float("inf"))
    keep(c0 + r0, zero, zero)
    if guess is not None:
        gy, gx = vector(guess)
        keep(cost(gy, gx) + bits(gy, gx), gy, gx)

    def refine(steps):  # each block tries its 8 neighbours at each step around its best so far
        for step in steps:
            cy, cx = field[:] = vy, vx
            for oy in (-1, 0, 1):
                for ox in (-1, 0, 1):
                    if oy == 0 and ox == 0:
                        continue
                    ty, tx = (cy + oy * step).clamp(-RANGE, RANGE), (cx + ox * step).clamp(-RANGE, RANGE)
                    keep(cost(ty, tx) + bits(ty, tx), ty, tx)

    refine((2 * SUB, SUB, SUB // 2, SUB // 4))
    # 3. neighbours' vectors: each block tries those its four neighbours ended with, twice over
    # (a vector found in one block spreads two blocks): a block whose own search was fooled by
    # flat or repeating content takes its neighbours' motion where that predicts as well, a
    # smoother field the network's encoder (which sees across blocks) predicts better from
    for _ in range(NEIGHBOUR_ROUNDS):
        fy, fx = field[:] = vy, vx
        for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):  # left, right, above, below
            ty, tx = _from_neighbour(fy, dy, dx), _from_neighbour(fx, dy, dx)
            keep(cost(ty, tx) + bits(ty, tx), ty, tx)
    refine((SUB // 2, SUB // 4))  # 4. the half and quarter pixels around what the blocks now hold
    return torch.where(still <= best, ZERO, symbol(vy, vx))


def block_mask(blocks: torch.Tensor, h_tokens: int, w_tokens: int) -> torch.Tensor:
    """Per-block flags (Hb, Wb) -> per-token flags (h*w,)."""
    return blocks.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:h_tokens, :w_tokens].reshape(-1)


def token_mask(symbols: torch.Tensor, h_tokens: int, w_tokens: int) -> torch.Tensor:
    """Tokens (h*w,) whose block moves (vector other than ZERO)."""
    return block_mask(symbols != ZERO, h_tokens, w_tokens)


def block_sums(values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Per-token values (h*w,) summed over each block -> (Hb, Wb)."""
    h, w = shape
    hb, wb = grid_shape(h, w)
    v = F.pad(values.reshape(1, 1, h, w), (0, wb * BLOCK - w, 0, hb * BLOCK - h))
    return F.avg_pool2d(v, BLOCK)[0, 0] * (BLOCK * BLOCK)
