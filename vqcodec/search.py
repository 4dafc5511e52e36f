"""The encoder's motion search (the decoder never imports it: it applies the vectors it reads, motion.py).

The search: (sum of absolute differences on luma over the group's frames, each
against its own prediction (each block's own, without the overlap), plus lambda times the vector's bits under the caller's rate model;
coarse to fine: every whole-pixel vector at quarter resolution on the first frame, then from
the best of that, no motion and the caller's guess: +-2 and +-1 whole pixels, +-1/2 and +-1/4
pixel at full resolution, read from the reference's 16 precomputed quarter-pixel phases; then,
twice, each block tries the vectors its four neighbours ended with and the one the rate model
predicts for it (the cheapest to code), then +-1/2 and +-1/4 pixel
around its best again; the still vector is kept unless a moving one beats it by 3 %); the
decoder only applies the vectors it reads.  Nothing here touches the entropy coder: the rate
model is a function passed in.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .motion import BLOCK, RANGE, SUB, TAP_SUM, ZERO, _from_neighbour, symbol, taps_table, vector

STILL_BIAS = 0.97         # a moving vector must beat the still one by 3 % of its difference
NEIGHBOUR_ROUNDS = 2      # rounds of trying the neighbours' vectors after the refinement

# (dy, dx) per block, and the field (vy, vx) the search holds now (None in its coarse stage) -> bits
# per block: a vector's code length may depend on the other blocks' (those it is predicted from)
Rate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]
# the field (vy, vx) -> each block's predicted vector (py, px) in it, what the rate model measures
# its code length from (the cheapest vector to code)
Predicted = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _phases(r: torch.Tensor, pad: int) -> torch.Tensor:
    """Plane r (H, W) of 8-bit values -> (SUB*SUB, H + 2 pad + 1, W + 2 pad + 1) every quarter-pixel
    phase of it, as `motion.shift` interpolates, edges repeated: the plane filtered across by each
    phase's taps, then down (integers below 2**24: the same exact values in any order), divided by
    TAP_SUM**2 and clamped, so the values are bit for bit `shift`'s."""
    taps = taps_table(SUB)
    n = len(taps[0])
    a, b = pad + n // 2 - 1, pad + n // 2 + 1
    rp = F.pad(r[None, None], (a, b, a, b), mode="replicate")[0, 0]
    H, W = rp.shape[0] - n + 1, rp.shape[1] - n + 1
    terms = [[(k, t) for k, t in enumerate(phase) if t] for phase in taps]  # each phase's non-zero taps
    across = []
    for nonzero in terms:  # (H + n - 1, W) each
        (k, t), rest = nonzero[0], nonzero[1:]
        h = rp[:, k:k + W] * t
        for k, t in rest:
            h.add_(rp[:, k:k + W], alpha=t)
        across.append(h)
    out = torch.empty(SUB, SUB, H, W, dtype=rp.dtype, device=rp.device)
    for fy, nonzero in enumerate(terms):
        (k, t), rest = nonzero[0], nonzero[1:]
        for fx, h in enumerate(across):
            o = torch.mul(h[k:k + H], t, out=out[fy, fx])
            for k2, t2 in rest:
                o.add_(h[k2:k2 + H], alpha=t2)
    return out.div_(TAP_SUM * TAP_SUM).clamp_(0, 255).reshape(SUB * SUB, H, W)


def search(src: torch.Tensor, ref: torch.Tensor, patch: int, rate: Rate | None = None, lam: float = 0.0,
           guess: torch.Tensor | None = None, active: torch.Tensor | None = None,
           predicted: Predicted | None = None) -> torch.Tensor:
    """Best vector symbol per block: src luma (T, H, W) of the group, ref luma (T, H, W) of the
    previous group's decoded frames, in [0, 1] (H, W multiples of patch) -> (Hb, Wb) long.
    A vector's cost is the sum over the group's frames t of the absolute differences between
    frame t and the previous group's last frame displaced by (t + 1) * v (the block's own
    prediction, its edges not overlapped), plus `lam` times its bits under `rate` (the caller's
    model of the vector's code length, given the field as the search held it when the candidate's
    round began: where pictures match about as well anywhere, the cheapest vector wins).  `guess` (Hb, Wb): vector
    symbols tried as a second start for the refinement (the caller's prediction).  `active` (Hb, Wb):
    the blocks to search; the others take the still vector without one (and stand still in the
    field the others' rates and neighbour candidates see).  `predicted`: the rate model's predicted
    vectors, tried in each neighbour round."""
    if not lam:
        rate = predicted = None
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
        if predicted is not None:  # and the vector the coder predicts for it in that field
            ty, tx = predicted(fy, fx)
            keep(cost(ty, tx) + bits(ty, tx), ty, tx)
    refine((SUB // 2, SUB // 4))  # 4. the half and quarter pixels around what the blocks now hold
    return torch.where(still <= best, ZERO, symbol(vy, vx))
