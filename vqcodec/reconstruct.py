"""The decoding loop that the encoder and the decoder share: symbols -> latents -> pictures.

Given a segment's decoded symbols (indices, modes, vectors, coefficients), `Reconstruction` rebuilds
each temporal group's latent tokens and its decoded planes, group after group: a fresh group pass
by pass from spatial predictions, a later group from its motion-compensated prediction (exact.py's
analysis of the predicted picture) and the near modes.  Every value here is an exact integer
(latents in exact.LATENT_UNIT units, pictures in 8-bit levels), so the encoder, which decides
against this reconstruction, and a decoder on any device hold the same pictures bit for bit.
The encoder (encoder.py) and the decoder (decoder.py) both build on it; it imports neither.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import torch

from . import motion
from .entropy import (FRESH_PASSES, INTRA, NEAR_INTER, NEAR_PASSES, NEAR_SKIP, SKIP, first_neighbours, first_passes,
                      group_quality, near_neighbours, near_passes)
from .errors import VqvError
from .exact import LATENT_LIMIT, ExactNet, dilate, mean2, planes_to_tokens, rebuild_change, step_units, tokens_to_planes
from .modelfile import CodecModel
from .video import Frame

# quality -> (residual-VQ stages, step of the scalar coefficients): each step is 1.5x the next.  Two
# stages beat one and three above the lowest quality (measured over 34 pairs on the sample clips,
# BENCHMARKS.md); the coefficients carry everything finer.
QUALITY_LEVELS = ((1, 0.5), (2, 0.33), (2, 0.22), (2, 0.15), (2, 0.1), (2, 0.066), (2, 0.044), (2, 0.03))


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= len(QUALITY_LEVELS):
        raise VqvError(f"--quality must be an integer from 1 to {len(QUALITY_LEVELS)}, got {quality}")


def stages_for_quality(quality: int, max_stages: int) -> int:
    _check_quality(quality)
    return min(QUALITY_LEVELS[quality - 1][0], max_stages)


def step_for_quality(quality: int) -> float:
    _check_quality(quality)
    return QUALITY_LEVELS[quality - 1][1]


# A moving block's latent is the exact analysis of its motion-compensated picture plus
# PREDICTION_STEPS fixed-point corrections towards that picture (part of the format since format
# 12: the synthesis then gives that picture back far more closely than the analysis alone does).
PREDICTION_STEPS = 1


def to_frames(y, u, v, width: int, height: int, count: int) -> list[Frame]:
    """Decoded planes (G,T,..) of 8-bit values -> `count` cropped uint8 Frames."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    q = lambda p: p.to(torch.uint8).reshape(-1, *p.shape[2:]).cpu().numpy()
    Y, U, V = q(y), q(u), q(v)
    return [Frame(Y[i, :height, :width], U[i, :ch, :cw], V[i, :ch, :cw]) for i in range(count)]


class Reconstruction:
    """One model's decoding loop on one device: the exact networks, the pass layouts and the last
    synthesis (reused where a later group leaves the latent unchanged)."""

    def __init__(self, model: CodecModel, device: str):
        self.model, self.device = model, device
        self.cfg = model.config
        self.exact = ExactNet(model.exact_tensors(), device)
        self._synth: tuple | None = None  # (shape, latent, its pixels): the last synthesis
        self._layout: tuple = (None,)  # (shape, (fresh passes, neighbours), (near passes, neighbours)) on the device

    def rebuild(self, z_vq: torch.Tensor, z_pred: torch.Tensor | None, modes: torch.Tensor,
                coefs: torch.Tensor, step: float) -> torch.Tensor:
        """Each token's latent from its mode: INTRA z_vq + coefficients, SKIP z_pred, INTER
        z_pred + coefficients.  The encoder and the decoder both call this, with the same
        tensors, so they hold bit-identical latents (exact integers, exact.rebuild_change; clamped
        to +-LATENT_LIMIT, which only a hostile stream reaches)."""
        change = self.change(coefs, step)
        if z_pred is None:
            return (z_vq + change).clamp_(-LATENT_LIMIT, LATENT_LIMIT)
        return torch.where((modes == INTRA)[:, None], z_vq + change,
                           torch.where((modes == SKIP)[:, None], z_pred, z_pred + change)).clamp_(-LATENT_LIMIT, LATENT_LIMIT)

    def change(self, coefs: torch.Tensor, step: float) -> torch.Tensor:
        """The latent change (N, D) that quantised coefficients (N, D) code at `step`, exact."""
        out = torch.zeros(coefs.shape, device=coefs.device)
        rows = torch.nonzero(coefs.any(1))[:, 0]
        if len(rows):
            out[rows] = rebuild_change(coefs[rows], self.exact.basis, step_units(step))
        return out

    def planes(self, z: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """A group's decoded planes (8-bit values) from its latent tokens (N, D), exactly as decode
        outputs them: what the next group is predicted from.  The synthesis is exact, so the tokens
        whose latent and neighbours' latents within its reach did not change since the last call keep
        that call's pixels (the same values computing them gives)."""
        need = None
        last = self._synth
        if last is not None and last[0] == shape:
            need = dilate((z != last[1]).any(1), shape, len(self.exact.decoder))
            if not bool(need.any()):
                return tokens_to_planes(last[2], shape, self.cfg.frames, self.cfg.patch)
        pixels = self.exact.synthesis(z, shape, need)
        if need is not None:
            pixels = torch.where(need[:, None], pixels, last[2])
        self._synth = (shape, z, pixels)
        return tokens_to_planes(pixels, shape, self.cfg.frames, self.cfg.patch)

    def base(self, z_prev: torch.Tensor, planes: tuple[torch.Tensor, ...] | None, mv: torch.Tensor,
             shape: tuple[int, int], pred: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Each token's prediction: its previous latent where its block stands still, the latent
        of the motion-compensated previous frames where it moves (`pred`: those frames, when the
        caller has them already), with the format's PREDICTION_STEPS fixed-point corrections
        towards them."""
        moving = motion.token_mask(mv, *shape)
        if not bool(moving.any()):
            return z_prev
        if pred is None:
            pred = motion.predict(planes, mv, self.cfg.patch)
        z_mc = self.exact.invert(planes_to_tokens(pred, self.cfg.patch), shape, PREDICTION_STEPS, need=moving)
        return torch.where(moving[:, None], z_mc, z_prev)

    def _pass_layout(self, shape: tuple[int, int], near: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """entropy.first_passes and first_neighbours on the device, flattened: (N,), (2, N); with
        `near`, a later group's near_passes and near_neighbours."""
        if self._layout[0] != shape:
            dev = lambda a, *s: torch.tensor(a.reshape(*s, -1), device=self.device)  # a copy: the layouts are read-only
            self._layout = (shape, (dev(first_passes(*shape)), dev(first_neighbours(*shape), 2)),
                            (dev(near_passes(*shape)), dev(near_neighbours(*shape), 2)))
        return self._layout[2 if near else 1]

    def fresh_pass(self, rec: torch.Tensor, z_vq: torch.Tensor, modes: torch.Tensor, coefs: torch.Tensor,
                   step: float, shape: tuple[int, int], p: int, pred: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh group's latent `rec` with its pass-p tokens (p = 1 .. FRESH_PASSES - 1) rebuilt
        from their spatial prediction (only those rows are computed; `pred`: theirs,
        spatial_prediction(rec, shape, at), when the caller has it).  The encoder and the decoder
        both call this, with the same tensors."""
        at = self._pass_tokens(shape, p)
        if pred is None:
            pred = self.spatial_prediction(rec, shape, at)
        rec = rec.clone()
        rec[at] = self.rebuild(z_vq[at], pred, modes[at], coefs[at], step)
        return rec

    def _pass_tokens(self, shape: tuple[int, int], p: int) -> torch.Tensor:
        """Positions (n,) of a fresh group's pass-p tokens."""
        passes, _ = self._pass_layout(shape)
        return torch.nonzero(passes == p)[:, 0]

    def near_pass(self, rec: torch.Tensor, modes: torch.Tensor, coefs: torch.Tensor, step: float,
                  shape: tuple[int, int], p: int) -> torch.Tensor:
        """A later group's latent `rec` with its pass-p NEAR_SKIP / NEAR_INTER tokens rebuilt from
        their two neighbours' mean (only those rows are computed).  The encoder and the decoder
        both call this, with the same tensors."""
        passes, _ = self._pass_layout(shape, near=True)
        at = torch.nonzero((passes == p) & (modes >= NEAR_SKIP))[:, 0]
        if not len(at):
            return rec
        pred = self.spatial_prediction(rec, shape, at, near=True)
        change = self.change(coefs[at], step)
        rec = rec.clone()
        rec[at] = torch.where((modes[at] == NEAR_INTER)[:, None], pred + change, pred).clamp_(-LATENT_LIMIT, LATENT_LIMIT)
        return rec

    def rebuild_later(self, z_vq: torch.Tensor, z_base: torch.Tensor, modes: torch.Tensor, coefs: torch.Tensor,
                      step: float, shape: tuple[int, int]) -> torch.Tensor:
        """A later group's latent from its modes: rebuild, then the near tokens pass by pass."""
        z = self.rebuild(z_vq, z_base, modes, coefs, step)
        for p in range(1, NEAR_PASSES):
            z = self.near_pass(z, modes, coefs, step, shape, p)
        return z

    def spatial_prediction(self, rec: torch.Tensor, shape: tuple[int, int],
                           at: torch.Tensor | None = None, near: bool = False) -> torch.Tensor:
        """Each token's prediction from its neighbours (a fresh group's; with `near`, a later
        group's near tokens'): the mean of its two neighbours' latents in `rec`
        (entropy.first_neighbours, near_neighbours: tokens of earlier passes); only the tokens
        `at` (positions) when given."""
        _, (a, b) = self._pass_layout(shape, near)
        if at is not None:
            a, b = a[at], b[at]
        return mean2(rec[a], rec[b])

    @torch.no_grad()
    def reconstruct(self, decoded: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, bool]],
                    quality: int) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """The decoder's side of decide: (indices, modes, vectors, coefficients, fresh) per group
        (entropy.EntropyCoder.decode_groups) of a segment at `quality` -> (latent tokens, decoded
        planes) per group."""
        z_prev = planes = None
        for gi, (g, modes, mv, coefs, fresh) in enumerate(decoded):
            S, h, w = g.shape
            idx = torch.from_numpy(g.reshape(S, -1)).to(self.device)
            c = torch.from_numpy(coefs.reshape(h * w, -1)).to(self.device)
            m = torch.from_numpy(modes.reshape(-1)).to(self.device)
            z_vq = self.exact.vq(idx)
            step = step_for_quality(group_quality(quality, gi == 0))
            if fresh:
                z = self.rebuild(z_vq, None, None, c, step)
                for p in range(1, FRESH_PASSES):
                    z = self.fresh_pass(z, z_vq, m, c, step, (h, w), p)
            else:
                z_base = self.base(z_prev, planes, torch.from_numpy(mv).to(self.device), (h, w))
                z = self.rebuild_later(z_vq, z_base, m, c, step, (h, w))
            planes = self.planes(z, (h, w))
            z_prev = z
            yield z, planes

    def grid(self, frames: list[Frame]) -> tuple[int, int]:
        p = self.cfg.patch
        return math.ceil(frames[0].height / p), math.ceil(frames[0].width / p)
