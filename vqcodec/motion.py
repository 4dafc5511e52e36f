"""Motion compensation for later temporal groups: block vectors, their search and the prediction.

A group after the first may predict each block of BLOCK x BLOCK tokens from the previous group's
*decoded* frames, displaced by a motion vector: frame t of the group from frame t of the previous
group, every plane shifted by the same vector (chroma by half of it), picture edges repeated.
Vectors are whole multiples of STEP luma pixels in -RANGE..RANGE steps per axis, carried as one
symbol per block: (dy / STEP + RANGE) * SIDE + (dx / STEP + RANGE); ZERO is the still vector.

The search is the encoder's (sum of absolute differences on luma at half resolution, a small bias
to the still vector); the decoder only applies the vectors it reads.  Nothing here touches the
entropy coder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 4                 # tokens per block side
STEP = 2                  # luma pixels per vector unit (chroma moves by whole pixels)
RANGE = 4                 # vector units per axis each way: -8..8 luma pixels
SIDE = 2 * RANGE + 1
VECTORS = SIDE * SIDE
ZERO = RANGE * SIDE + RANGE
STILL_BIAS = 0.97         # a moving vector must beat the still one by 3 % of its difference


def vector(symbol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols -> (dy, dx) in luma pixels."""
    return (symbol // SIDE - RANGE) * STEP, (symbol % SIDE - RANGE) * STEP


def grid_shape(h_tokens: int, w_tokens: int) -> tuple[int, int]:
    return -(-h_tokens // BLOCK), -(-w_tokens // BLOCK)


def search(src: torch.Tensor, ref: torch.Tensor, patch: int) -> torch.Tensor:
    """Best vector symbol per block: src, ref luma (T, H, W) in [0, 1] (H, W multiples of patch)
    -> (Hb, Wb) long.  Exhaustive over the VECTORS candidates, on the groups' first frames at
    half resolution (one vector serves the whole group)."""
    half = BLOCK * patch // 2  # block side at half resolution
    s = F.avg_pool2d(src[:1][None], 2)[0, 0]
    r = F.avg_pool2d(ref[:1][None], 2)[0, 0]
    h, w = s.shape
    hb, wb = -(-h // half), -(-w // half)
    s = F.pad(s[None, None], (0, wb * half - w, 0, hb * half - h), mode="replicate")[0, 0]
    pad = RANGE * STEP // 2
    rp = F.pad(r[None, None], (pad, pad + wb * half - w, pad, pad + hb * half - h), mode="replicate")[0, 0]
    H, W = s.shape
    offsets = [((k // SIDE - RANGE) * STEP // 2 + pad, (k % SIDE - RANGE) * STEP // 2 + pad) for k in range(VECTORS)]
    shifted = torch.stack([rp[dy:dy + H, dx:dx + W] for dy, dx in offsets])
    costs = F.avg_pool2d(shifted.sub_(s).abs_()[:, None], half)[:, 0]
    costs[ZERO] *= STILL_BIAS
    return costs.argmin(0)


def predict(planes: tuple[torch.Tensor, ...], symbols: torch.Tensor, patch: int) -> tuple[torch.Tensor, ...]:
    """The previous group's planes (T, H, W), (T, H/2, W/2) x 2 moved block by block by the
    vectors (Hb, Wb) -> predicted planes of the same shapes."""
    dy, dx = vector(symbols)
    out = []
    for c, p in enumerate(planes):
        s = 1 if c == 0 else 2
        T, H, W = p.shape
        side = BLOCK * patch // s
        by = dy.repeat_interleave(side, 0).repeat_interleave(side, 1)[:H, :W] // s
        bx = dx.repeat_interleave(side, 0).repeat_interleave(side, 1)[:H, :W] // s
        rows = (torch.arange(H, device=p.device)[:, None] + by).clamp(0, H - 1)
        cols = (torch.arange(W, device=p.device)[None, :] + bx).clamp(0, W - 1)
        out.append(p[:, rows, cols])
    return tuple(out)


def token_mask(symbols: torch.Tensor, h_tokens: int, w_tokens: int) -> torch.Tensor:
    """Tokens (h*w,) whose block moves (vector other than ZERO)."""
    moving = (symbols != ZERO).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    return moving[:h_tokens, :w_tokens].reshape(-1)


def block_sums(values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Per-token values (h*w,) summed over each block -> (Hb, Wb)."""
    h, w = shape
    hb, wb = grid_shape(h, w)
    v = F.pad(values.reshape(1, 1, h, w), (0, wb * BLOCK - w, 0, hb * BLOCK - h))
    return F.avg_pool2d(v, BLOCK)[0, 0] * (BLOCK * BLOCK)
