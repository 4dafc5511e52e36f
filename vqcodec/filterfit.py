"""The encoder's fit of the output filter (postfilter.py): least squares against the source, per
segment, plane and class of pixels, then the integers worth their bits.  The decoder never imports
it: it applies the integers it reads (postfilter.apply)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .postfilter import BIAS_SCALE, PLANES, SCALE, WEIGHT_MAX, _classes, _pairs, off

FIT_SAMPLES = 1 << 15     # the encoder fits on about this many luma pixels of each group (chroma alike)
HELD = 1 << 24            # neighbourhood values held before they are classified (16 MB)
BLOCK = 1 << 16           # samples summed in float32 at once


def fit_step(width: int, height: int, frames: int) -> int:
    """The encoder fits on the pixels of every n-th row and column of every group (n >= 1): all of
    them in small pictures, fewer as pictures grow, about FIT_SAMPLES a group whatever the size."""
    return max(1, math.isqrt(frames * width * height // FIT_SAMPLES))


def _patches(p: torch.Tensor, step: int, r: int) -> torch.Tensor:
    """Planes (T, H, W) -> the (2r + 1) x (2r + 1) neighbourhoods of the pixels at every step-th row
    and column (edges repeated, as _pad does), samples last: (2r + 1, 2r + 1, N) (so that the
    classification's slices of them run along contiguous samples)."""
    T, H, W = p.shape
    d = torch.arange(-r, r + 1, device=p.device)
    ys = (torch.arange(0, H, step, device=p.device)[None, :] + d[:, None]).clamp_(0, H - 1)  # (2r + 1, h')
    xs = (torch.arange(0, W, step, device=p.device)[None, :] + d[:, None]).clamp_(0, W - 1)  # (2r + 1, w')
    at = ys[:, None, :, None] * W + xs[None, :, None, :]  # (2r + 1, 2r + 1, h', w')
    k = 2 * r + 1
    return p.reshape(T, -1)[:, at.reshape(-1)].reshape(T, k, k, -1).permute(1, 2, 0, 3).reshape(k, k, -1)


class Fit:
    """The encoder's least-squares statistics for one segment: per plane and class, X^T X and
    X^T y over its sampled pixels (X: the pair differences and 1, y: source - decoded).  Groups
    only hand in their samples' neighbourhoods; they are classified together (`solve`)."""

    def __init__(self):
        self.gram = [np.zeros((s.classes, s.width, s.width)) for s in PLANES]
        self.cross = [np.zeros((s.classes, s.width)) for s in PLANES]
        self.samples: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in PLANES]

    @torch.no_grad()
    def add(self, src: torch.Tensor, dec: torch.Tensor, plane: int, step: int = 1) -> None:
        """Source and decoded planes (T, H, W), 8-bit values: their pixels at every step-th row and
        column, each to be classified and filtered from its own neighbourhood as `apply` does."""
        r = max(2, PLANES[plane].radius)
        as_bytes = lambda p: p.to(torch.uint8)  # 8-bit values: a quarter of the memory until classified
        self.samples[plane].append((as_bytes(_patches(dec, step, r)), as_bytes(_patches(src, step, 0)[0, 0])))
        if sum(s.numel() for s, _ in self.samples[plane]) >= HELD:  # bounded memory: classify what is held
            self._accumulate(plane)

    def add_group(self, src: tuple[torch.Tensor, ...], dec: tuple[torch.Tensor, ...], width: int, height: int) -> None:
        """One temporal group: source planes (T, Hp, Wp), (T, Hp/2, Wp/2) x 2 in [0, 1] and decoded
        planes of 8-bit values (padded, the codec's), cropped to the picture (width x height) as the
        decoder outputs it."""
        step = fit_step(width, height, len(src[0]))
        for plane, (s, d) in enumerate(zip(src, dec)):
            h, w = (height, width) if plane == 0 else ((height + 1) // 2, (width + 1) // 2)
            self.add(s[:, :h, :w].mul(255.0).round_(), d[:, :h, :w], plane, step)

    @torch.no_grad()
    def _accumulate(self, *planes: int) -> None:
        """Classify the samples held (of `planes`, or of all) and add them to the statistics."""
        for plane in planes or range(len(PLANES)):
            shape = PLANES[plane]
            if not self.samples[plane]:
                continue
            near = torch.cat([n for n, _ in self.samples[plane]], 2).permute(2, 0, 1).float()  # (N, 2r + 1, 2r + 1)
            src = torch.cat([s for _, s in self.samples[plane]]).float()
            self.samples[plane] = []
            r, k = near.shape[1] // 2, shape.radius
            d = near[:, r, r]
            cls = _classes(near[:, r - 2:r + 3, r - 2:r + 3].to(torch.int16), shape).reshape(-1).long()
            x = torch.stack([*(pair.reshape(-1) - 2 * d for pair in _pairs(near[:, r - k:r + k + 1, r - k:r + k + 1],
                                                                          shape)), torch.ones_like(d)], -1)
            y = src - d
            order = torch.argsort(cls)
            counts = torch.bincount(cls, minlength=shape.classes).tolist()
            xs, ys = x[order], y[order]
            # float32 products of integers below 2**19, summed in blocks of a class's samples, then in float64
            ends = np.cumsum(counts)
            for c, (start, end) in enumerate(zip(ends - counts, ends)):
                for at in range(start, end, BLOCK):
                    xc, yc = xs[at:min(at + BLOCK, end)], ys[at:min(at + BLOCK, end)]
                    self.gram[plane][c] += (xc.t() @ xc).double().cpu().numpy()
                    self.cross[plane][c] += (xc.t() @ yc).double().cpu().numpy()

    def solve(self, lam: float, bits: Callable[[np.ndarray], float]) -> tuple[np.ndarray, ...]:
        """Each plane's filter (classes, width) of integers: per class the least-squares weights,
        rounded, kept where the squared error they remove (in units of 255**2, as the codec's
        decisions count distortion) exceeds lam times their bits (`bits`: the coder's code length
        of a class's integers); else zeros."""
        self._accumulate()
        out = []
        for plane, shape in enumerate(PLANES):
            wts = off(plane)
            for c in range(shape.classes):
                a, b = self.gram[plane][c], self.cross[plane][c]
                n = a[-1, -1]
                if n < 4 * shape.width:
                    continue
                try:
                    w = np.linalg.solve(a + (1e-3 + 1e-6 * np.trace(a)) * np.eye(shape.width), b)
                except np.linalg.LinAlgError:
                    continue
                q = np.clip(np.round(np.concatenate([w[:-1] * SCALE, w[-1:] * BIAS_SCALE])), -WEIGHT_MAX, WEIGHT_MAX)
                f = np.concatenate([q[:-1] / SCALE, q[-1:] / BIAS_SCALE])
                gain = 2 * f @ b - f @ a @ f  # the squared error removed (before the output's rounding)
                if gain / 255.0 ** 2 > lam * bits(q):
                    wts[c] = q.astype(np.int64)
            out.append(wts)
        return tuple(out)
