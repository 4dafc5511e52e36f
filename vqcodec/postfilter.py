"""The output filter: a Wiener filter per segment and plane, fitted by the encoder, applied by the decoder.

The decoded pictures carry errors with a structure a linear filter can take out (the synthesis
network blurs or rings a little, differently on every clip and quality). After deciding a
segment, the encoder fits, by least squares against the source, one small filter per *class*
of pixels and plane, and sends the integers; the decoder applies them to its output frames. The
filter is not in the loop: later groups are still predicted from the unfiltered pictures, so
it changes no other symbol, and a segment with every filter off decodes as before.

A filter is point-symmetric over a diamond (radius 3 for luma: 12 pairs of taps; radius 2 for
chroma: 6 pairs) and acts on the pairs' second differences, so a filter of zeros changes
nothing and rounding its weights costs little:

    out = clamp(p + floor((sum_k w_k (a_k + b_k - 2 p) + 32 bias + 64) / 128), 0, 255)

with p the pixel, a_k and b_k the two pixels of pair k (picture edges repeated), w_k and bias
integers in -127..127 (w in 1/128, bias in 1/4 of a level).  Every product and sum is an integer
below 2**24, so float32 computes it exactly and every device gives the same pictures.

Classes (the pixel's own neighbourhood, on the decoded plane): activity a = the 3 x 3 sum of
|2p - above - below| + |2p - left - right| (on the plane with its edges repeated 2 pixels out),
bucketed by ACTIVITY_EDGES into 0..6; luma also a direction (`classify`): none, vertical,
horizontal or one of the two diagonals, from the 3 x 3 sums of the Laplacians along each:
class 5 a + direction (35 classes); chroma class a (7; directions there measured +0.4 %).  The
encoder keeps a class's filter only where the squared error it removes outweighs lambda times
its bits (`Fit.solve`); a class left off codes one flag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

ACTIVITY_EDGES = (2, 6, 14, 30, 60, 120)
ACTIVITIES = len(ACTIVITY_EDGES) + 1
WEIGHT_MAX = 127          # weights and biases are integers in -WEIGHT_MAX..WEIGHT_MAX
SCALE = 128               # weights in 1/SCALE
BIAS_SCALE = 4            # biases in 1/BIAS_SCALE of a level


def _diamond(r: int) -> tuple[tuple[int, int], ...]:
    """Half of a diamond of radius r: the offsets (dy, dx) after (0, 0) in raster order."""
    return tuple((dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1)
                 if abs(dy) + abs(dx) <= r and (dy, dx) > (0, 0))


@dataclass(frozen=True)
class PlaneShape:
    radius: int
    directions: int  # DIRECTIONS (luma) or 1 (chroma)

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        return _diamond(self.radius)

    @property
    def classes(self) -> int:
        return ACTIVITIES * self.directions

    @property
    def width(self) -> int:
        """Integers per class: the pairs' weights, then the bias."""
        return len(self.pairs) + 1


DIRECTIONS = 5           # luma: none, vertical, horizontal and the two diagonals
PLANES = (PlaneShape(3, DIRECTIONS), PlaneShape(2, 1), PlaneShape(2, 1))  # Y, U, V


def off(plane: int) -> np.ndarray:
    """A plane's filter that changes nothing: (classes, width) zeros."""
    s = PLANES[plane]
    return np.zeros((s.classes, s.width), dtype=np.int64)


def _pad(p: torch.Tensor, r: int) -> torch.Tensor:
    return F.pad(p[:, None], (r, r, r, r), mode="replicate")[:, 0]


def classify(p: torch.Tensor, shape: PlaneShape) -> torch.Tensor:
    """Planes (T, H, W) of 8-bit values -> each pixel's class (T, H, W) int16 (`_classes` of the
    plane with its edges repeated 2 pixels out)."""
    return _classes(_pad(p.float(), 2).to(torch.int16), shape)


def _classes(q: torch.Tensor, shape: PlaneShape) -> torch.Tensor:
    """Planes of 8-bit values as int16 (N, h + 4, w + 4) -> the classes (N, h, w) int16 of their
    inner pixels.  The Laplacians of every pixel but the outermost ring: vertical
    |2p - above - below|, horizontal |2p - left - right| and, for luma, the two diagonals (top-left
    to bottom-right, top-right to bottom-left); each inner pixel's 3 x 3 sums of them v, h, d0, d1.
    Activity: v + h bucketed by ACTIVITY_EDGES.  Direction (luma): the pair (v, h) or (d0, d1)
    whose larger to smaller ratio is the greater ((v, h) on a tie), then 0 unless its larger is
    more than twice its smaller, else 1 / 2 (v / h the larger) or 3 / 4 (d0 / d1).  In integers
    (16-bit: a sum is at most 9 x 510 and v + h at most 9,180; the ratios' products 32-bit):
    every device classifies alike, in about half the time 32-bit planes take."""
    c2 = 2 * q[:, 1:-1, 1:-1]

    def lap(a, b):  # |2p - a - b| over the ring inside the border, then 3 x 3 sums
        g = (c2 - a - b).abs_()
        rows = g[:, :-2] + g[:, 1:-1] + g[:, 2:]
        return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]

    v = lap(q[:, :-2, 1:-1], q[:, 2:, 1:-1])
    h = lap(q[:, 1:-1, :-2], q[:, 1:-1, 2:])
    total = v + h
    act = torch.zeros_like(total)
    for edge in ACTIVITY_EDGES:  # the number of edges at or below v + h
        act += total >= edge
    if shape.directions == 1:
        return act
    d0 = lap(q[:, :-2, :-2], q[:, 2:, 2:])
    d1 = lap(q[:, :-2, 2:], q[:, 2:, :-2])
    hv_hi, hv_lo, d_hi, d_lo = torch.maximum(v, h), torch.minimum(v, h), torch.maximum(d0, d1), torch.minimum(d0, d1)
    straight = hv_hi.int() * d_lo.int() >= d_hi.int() * hv_lo.int()
    hv = (hv_hi > 2 * hv_lo) * (1 + (v <= h).to(act.dtype))  # 0 (no direction), 1 vertical, 2 horizontal
    diag = (d_hi > 2 * d_lo) * (3 + (d0 <= d1).to(act.dtype))  # 0, 3, 4
    return act * DIRECTIONS + torch.where(straight, hv, diag)


def _pairs(q: torch.Tensor, shape: PlaneShape) -> Iterator[torch.Tensor]:
    """Planes (N, h + 2r, w + 2r) (r the shape's radius) -> each pair's sums a + b (N, h, w) of
    their inner pixels, exact integers."""
    r = shape.radius
    h, w = q.shape[1] - 2 * r, q.shape[2] - 2 * r
    for dy, dx in shape.pairs:
        yield q[:, r + dy:r + dy + h, r + dx:r + dx + w] + q[:, r - dy:r - dy + h, r - dx:r - dx + w]


def apply(p: torch.Tensor, weights: np.ndarray, plane: int) -> torch.Tensor:
    """Planes (T, H, W) of 8-bit values (float32) filtered by one plane's filter (classes, width)
    (rows of zeros change nothing) -> the same shape, 8-bit values (float32)."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=p.device)
    if not bool(w.any()):
        return p
    shape = PLANES[plane]
    p = p.float()
    cls = classify(p, shape).to(torch.int32).reshape(-1)
    per = lambda v: v.index_select(0, cls).reshape(p.shape)  # each pixel's class's value (int32 index: 2x faster)
    # sum_k w_k (a_k + b_k - 2p) + 32 bias + 64 as sum_k w_k (a_k + b_k) - 2 p sum_k w_k + (32 bias + 64):
    # every term an integer below 2**20, so each partial sum is exact in float32 in any order
    total = per(w[:, -1] * (SCALE // BIAS_SCALE) + SCALE // 2)
    total.addcmul_(p, per(-2 * w[:, :-1].sum(1)))
    for k, pair in enumerate(_pairs(_pad(p, shape.radius), shape)):
        total.addcmul_(pair, per(w[:, k].contiguous()))
    return total.div_(SCALE).floor_().add_(p).clamp_(0, 255)


def filter_frames(frames: list, filt: tuple | None) -> list:
    """Decoded frames (video.Frame) of one group -> the output frames, each plane through its filter."""
    if filt is None or not any(w.any() for w in filt):
        return frames
    planes = []
    for plane, (name, w) in enumerate(zip(("y", "u", "v"), filt)):
        p = torch.from_numpy(np.stack([getattr(f, name) for f in frames])).float()
        planes.append(apply(p, w, plane).to(torch.uint8).numpy())
    return [type(f)(planes[0][i], planes[1][i], planes[2][i]) for i, f in enumerate(frames)]
