"""Distortion as codec papers report it: PSNR on 8-bit YUV 4:2:0 planes.

PSNR-YUV = (6 * PSNR-Y + PSNR-U + PSNR-V) / 8, computed per frame and averaged over the
sequence.  Identical planes give PSNR_CAP (instead of infinity) so averages stay finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .video import Frame

PSNR_CAP = 100.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / mse))


@dataclass
class Quality:
    psnr_y: float
    psnr_u: float
    psnr_v: float

    @property
    def psnr_yuv(self) -> float:
        return (6 * self.psnr_y + self.psnr_u + self.psnr_v) / 8


def frame_quality(a: Frame, b: Frame) -> Quality:
    if a.y.shape != b.y.shape or a.u.shape != b.u.shape:
        raise ValueError("frames differ in size")
    return Quality(psnr(a.y, b.y), psnr(a.u, b.u), psnr(a.v, b.v))


def sequence_quality(ref: Iterable[Frame], test: Iterable[Frame]) -> Quality:
    """Per-frame PSNRs averaged; the sequences must have the same length."""
    qs = []
    ref_list, test_list = list(ref), list(test)
    if len(ref_list) != len(test_list):
        raise ValueError(f"sequences differ in length: {len(ref_list)} vs {len(test_list)}")
    for a, b in zip(ref_list, test_list):
        qs.append(frame_quality(a, b))
    n = max(1, len(qs))
    return Quality(sum(q.psnr_y for q in qs) / n, sum(q.psnr_u for q in qs) / n, sum(q.psnr_v for q in qs) / n)


# -- MS-SSIM (Wang et al. 2003): the benchmark's metric, and the training's optional term ----------
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The 11x11 Gaussian window as two 1-D passes (separable: same result, 11x fewer operations)."""
    return F.conv2d(F.conv2d(x, g[None, None, :, None]), g[None, None, None, :])


def ms_ssim_tensor(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM of planes (N, 1, H, W), differentiable, averaged over N; scales that no longer fit
    the 11x11 window are dropped and the weights renormalised (small pictures)."""
    w = _gauss(dtype=x.dtype, device=x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    weights = [wt for i, wt in enumerate(MS_SSIM_WEIGHTS) if min(x.shape[-2:]) // (2 ** i) >= 11] or [1.0]
    total = sum(weights)
    out = torch.ones((), dtype=x.dtype, device=x.device)
    for i, wt in enumerate(weights):
        mx, my = _blur(x, w), _blur(y, w)
        sxx = _blur(x * x, w) - mx * mx
        syy = _blur(y * y, w) - my * my
        sxy = _blur(x * y, w) - mx * my
        value = ((2 * sxy + c2) / (sxx + syy + c2)).mean()
        if i == len(weights) - 1:
            value = value * ((2 * mx * my + c1) / (mx * mx + my * my + c1)).mean()
        else:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        out = out * value.clamp(min=1e-12) ** (wt / total)
    return out
