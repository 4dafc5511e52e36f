"""Distortion as codec papers report it: PSNR on 8-bit YUV 4:2:0 planes.

PSNR-YUV = (6 * PSNR-Y + PSNR-U + PSNR-V) / 8, computed per frame and averaged over the
sequence.  Identical planes give PSNR_CAP (instead of infinity) so averages stay finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

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
