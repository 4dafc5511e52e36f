"""Training: random spatiotemporal crops from clips -> VQ-VAE with EMA residual VQ.

The loop is a library function so that scripts/ and the CLI share it.  Loss is the
PSNR-YUV-weighted MSE (6:1:1 over the Y, U, V planes) plus a commitment term; each clip
of a batch gets a random VQ depth (quantizer dropout), so one model serves every quality.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .model import VQVAE
from .video import read_frames


@dataclass
class Clip:
    y: np.ndarray  # (N, H, W) uint8, H and W even
    u: np.ndarray
    v: np.ndarray


def load_clip(path: Path, frames: int, start: int = 0) -> Clip:
    fs = list(read_frames(path, limit=frames, start=start))
    h, w = fs[0].height // 2 * 2, fs[0].width // 2 * 2
    return Clip(np.stack([f.y[:h, :w] for f in fs]), np.stack([f.u[: h // 2, : w // 2] for f in fs]),
                np.stack([f.v[: h // 2, : w // 2] for f in fs]))


class CropSampler:
    """Random crops of `frames` consecutive frames, `size` x `size` luma, with flips."""

    def __init__(self, clips: list[Clip], frames: int, size: int, seed: int = 0):
        self.clips, self.t, self.size = clips, frames, size
        self.rng = random.Random(seed)
        weights = [c.y.shape[0] * c.y.shape[1] * c.y.shape[2] for c in clips]
        self.weights = [w / sum(weights) for w in weights]

    def batch(self, n: int):
        ys, us, vs = [], [], []
        for c in self.rng.choices(self.clips, self.weights, k=n):
            N, H, W = c.y.shape
            s = min(self.size, H // 4 * 4, W // 4 * 4)
            t0 = self.rng.randrange(N - self.t + 1)
            i0 = self.rng.randrange((H - s) // 2 + 1) * 2
            j0 = self.rng.randrange((W - s) // 2 + 1) * 2
            y = c.y[t0:t0 + self.t, i0:i0 + s, j0:j0 + s]
            u = c.u[t0:t0 + self.t, i0 // 2:(i0 + s) // 2, j0 // 2:(j0 + s) // 2]
            v = c.v[t0:t0 + self.t, i0 // 2:(i0 + s) // 2, j0 // 2:(j0 + s) // 2]
            if self.rng.random() < 0.5:
                y, u, v = y[:, :, ::-1], u[:, :, ::-1], v[:, :, ::-1]
            if s < self.size:  # small clip: tile up to the batch size
                reps = math.ceil(self.size / s)
                y = np.tile(y, (1, reps, reps))[:, : self.size, : self.size]
                u = np.tile(u, (1, reps, reps))[:, : self.size // 2, : self.size // 2]
                v = np.tile(v, (1, reps, reps))[:, : self.size // 2, : self.size // 2]
            ys.append(y.copy()); us.append(u.copy()); vs.append(v.copy())
        f = lambda a: torch.from_numpy(np.stack(a)).float().div_(255.0)
        return f(ys), f(us), f(vs)


def yuv_mse(out: dict, y, u, v) -> torch.Tensor:
    return (6 * ((out["y"] - y) ** 2).mean() + ((out["u"] - u) ** 2).mean() + ((out["v"] - v) ** 2).mean()) / 8


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def fit(model: VQVAE, sampler: CropSampler, *, steps: int, batch: int, lr: float = 1e-3,
        minutes: float | None = None, beta: float = 0.25, device: str = "cpu",
        log: Callable[[dict], None] | None = None, checkpoint: Callable[[int], None] | None = None,
        start_step: int = 0, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Train until `steps` (or `minutes` of wall time); returns the step reached."""
    model.to(device).train()
    if not bool(model.quantizer.initialised):
        with torch.no_grad():
            y, u, v = (t.to(device) for t in sampler.batch(max(64, batch * 4)))
            z = model.analysis(y, u, v)
            model.quantizer.kmeans_init(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer or torch.optim.Adam(params, lr=lr)
    t_start = time.time()
    S = model.config.stages
    done = start_step
    for step in range(start_step, steps):
        frac = step / max(1, steps)
        if minutes is not None:
            frac = max(frac, (time.time() - t_start) / (minutes * 60))
            if frac >= 1:
                break
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        y, u, v = (t.to(device) for t in sampler.batch(batch))
        depth = torch.randint(1, S + 1, (batch,), device=device)
        out = model(y, u, v, stages=depth)
        rec = yuv_mse(out, y, u, v)
        loss = rec + beta * out["commit"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and step % 50 == 0:
            log({"step": step, "loss": loss.item(), "psnr": psnr(rec.item()),
                 "perplexity": [round(float(p), 1) for p in model.quantizer.usage(out["indices"])[:3]],
                 "elapsed": time.time() - t_start})
        done = step + 1
        if checkpoint is not None and done % 500 == 0:
            checkpoint(done)
    model.eval()
    return done


@torch.no_grad()
def fit_entropy_tables(net: VQVAE, clips: list[Clip], segment_frames: int = 32, batch: int = 4,
                       device: str = "cpu") -> torch.Tensor:
    """Freeze the context model: count (context, index) pairs over the clips, segment by segment
    exactly as the codec codes them (context reset at each segment), then quantise to integers."""
    from .entropy import count_transitions, fit_tables

    net.to(device).eval()
    cfg = net.config
    counts = None
    for c in clips:
        H, W = c.y.shape[1] // cfg.patch * cfg.patch, c.y.shape[2] // cfg.patch * cfg.patch
        n = c.y.shape[0] // cfg.frames * cfg.frames
        for s0 in range(0, n, segment_frames):
            s1 = min(n, s0 + segment_frames)
            f = lambda a, h, w: torch.from_numpy(a[s0:s1, :h, :w].copy()).float().div_(255).reshape(-1, cfg.frames, h, w)
            y, u, v = f(c.y, H, W), f(c.u, H // 2, W // 2), f(c.v, H // 2, W // 2)
            idx = torch.cat([net.encode(y[i:i + batch].to(device), u[i:i + batch].to(device),
                                        v[i:i + batch].to(device), cfg.stages).cpu()
                             for i in range(0, y.shape[0], batch)]).numpy()
            counts = count_transitions(idx, cfg.codes, counts)
    return fit_tables(counts)
