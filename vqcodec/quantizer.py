"""Residual vector quantizer with EMA codebooks, dead-code restarts and quantizer dropout.

Training: ``forward(z, stages)`` returns the straight-through quantised latent, the
indices and the commitment loss.  Coding: ``encode(z, stages)`` gives indices and
``decode(indices)`` rebuilds the latent from them; in eval mode ``decode(encode(z))``
equals the quantised latent of ``forward`` exactly (a test checks it).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


NEAREST_CHUNK = 4096  # rows per distance matrix in a CPU search


class ResidualVQ(nn.Module):
    """``stages`` codebooks of ``codes`` vectors of size ``dim``; stage k codes the residual of stages < k."""

    def __init__(self, dim: int, stages: int, codes: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.dim, self.stages, self.codes = dim, stages, codes
        self.decay, self.eps = decay, eps
        self.register_buffer("codebooks", torch.randn(stages, codes, dim) * 0.01)
        self.register_buffer("ema_count", torch.ones(stages, codes))
        self.register_buffer("ema_sum", self.codebooks.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        # Distributed training: a process group of its own (DistributedDataParallel's collectives
        # run on the default one) over which every rank shares its codebook statistics.
        self.sync_group = None

    # -- search -----------------------------------------------------------------------
    @staticmethod
    def nearest(x: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword for each row of x (N, D); ties go to the lower index."""
        # |x|^2 is the same for every code; one fused matmul (addmm) keeps this compute-bound.  On
        # a CPU, rows go in chunks whose distances stay in the cache for the argmin (a 720p group's
        # 57,600 x 256 at once: 48 -> 27 ms; each row's distances are computed alike either way)
        norms, bt = (book * book).sum(1), book.t()
        if x.device.type != "cpu" or len(x) <= NEAREST_CHUNK:
            return torch.addmm(norms, x, bt, alpha=-2.0).argmin(1)
        out = torch.empty(len(x), dtype=torch.long)
        dist = x.new_empty(NEAREST_CHUNK, len(book))  # one buffer: a fresh one per chunk costs its gain
        for i in range(0, len(x), NEAREST_CHUNK):
            part = x[i:i + NEAREST_CHUNK]
            torch.argmin(torch.addmm(norms, part, bt, alpha=-2.0, out=dist[:len(part)]), 1, out=out[i:i + len(part)])
        return out

    @torch.no_grad()
    def encode(self, z: torch.Tensor, stages: int | None = None, books: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, D) -> indices (stages, N) as int64, greedy stage by stage (against `books`, the
        codebooks in another unit, such as the exact ones, when given)."""
        stages = self.stages if stages is None else stages
        books = self.codebooks if books is None else books
        residual = z.float().clone()
        out = torch.empty(stages, z.shape[0], dtype=torch.long, device=z.device)
        for k in range(stages):
            idx = self.nearest(residual, books[k])
            out[k] = idx
            residual -= books[k][idx]
        return out

    @staticmethod
    @torch.no_grad()
    def candidates(z: torch.Tensor, books: torch.Tensor, per_stage: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A tree search's combinations of codewords for each row of z (N, D): at stage k, for each
        combination so far, the per_stage[k] codewords of books[k] nearest to what it leaves.
        -> indices (S, N, M) and the sums of their codewords (N, M, D), S = len(per_stage),
        M = the product of per_stage; the greedy combination (encode's) first."""
        n, d = z.shape
        idx = torch.zeros(0, n, 1, dtype=torch.long, device=z.device)
        sums = torch.zeros(n, 1, d, device=z.device)
        for k, r in enumerate(per_stage):
            book = books[k]
            m = sums.shape[1]
            # |residual|^2 is the same for every codeword: ranking by |c|^2 - 2 residual . c
            top = torch.addmm((book * book).sum(1), (z[:, None] - sums).reshape(n * m, d), book.t(),
                              alpha=-2.0).topk(r, dim=1, largest=False).indices.reshape(n, m, r)
            idx = torch.cat([idx[:, :, :, None].expand(k, n, m, r), top[None]]).reshape(k + 1, n, m * r)
            sums = (sums[:, :, None] + book[top]).reshape(n, m * r, d)
        return idx, sums

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (S, N) of the first S stages -> the sum of their codewords (N, D)."""
        z = self.codebooks[0][indices[0]]
        for k in range(1, indices.shape[0]):
            z = z + self.codebooks[k][indices[k]]
        return z

    # -- training ---------------------------------------------------------------------
    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int = 10, first: int = 0) -> None:
        """Seed stages `first`.. by k-means on the residual each will see (earlier stages kept)."""
        residual = z.float().clone()
        for k in range(first):
            residual -= self.codebooks[k][self.nearest(residual, self.codebooks[k])]
        for k in range(first, self.stages):
            book = residual[torch.randperm(len(residual), device=z.device)[: self.codes]].clone()
            for _ in range(iters):
                idx = self.nearest(residual, book)
                sums = torch.zeros_like(book).index_add_(0, idx, residual)
                count = torch.bincount(idx, minlength=self.codes).float()
                empty = count == 0
                refill = residual[torch.randint(len(residual), (self.codes,), device=z.device)]
                book = torch.where(empty[:, None], refill, sums / count.clamp(min=1)[:, None])
            self.codebooks[k] = book
            self.ema_sum[k] = book
            self.ema_count[k] = 1.0
            residual -= book[self.nearest(residual, book)]
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor, stages: torch.Tensor | int | None = None):
        """z (N, D); stages: int, or a (N,) tensor of per-vector depths (quantizer dropout).

        Returns (z_q straight-through, indices (S, N), commitment loss)."""
        with torch.autocast(z.device.type, enabled=False):  # the search stays in float32 under bf16
            return self._forward(z, stages)

    def _forward(self, z: torch.Tensor, stages):
        n = z.shape[0]
        if stages is None:
            stages = self.stages
        depth = stages if torch.is_tensor(stages) else torch.full((n,), int(stages), device=z.device)
        # training: every vector trains every codebook (the same updates on every rank); depth masks the output
        max_depth = self.stages if self.training else int(depth.max())
        residual = z.detach().float()
        zq = torch.zeros_like(residual)
        indices = torch.zeros(max_depth, n, dtype=torch.long, device=z.device)
        for k in range(max_depth):
            idx = self.nearest(residual, self.codebooks[k])
            indices[k] = idx
            code = self.codebooks[k][idx]
            active = (depth > k).float()[:, None]
            if self.training:
                self._ema_update(k, residual, idx)
            residual = residual - code  # every vector trains every codebook; only depth masks output
            zq = zq + code * active
        commit = ((z.float() - zq) ** 2).mean()
        z_st = z + (zq - z).detach()
        return z_st, indices, commit

    @torch.no_grad()
    def _ema_update(self, k: int, x: torch.Tensor, idx: torch.Tensor) -> None:
        onehot_count = torch.bincount(idx, minlength=self.codes).float()
        sums = torch.zeros(self.codes, self.dim, device=x.device).index_add_(0, idx, x)
        if self.sync_group is not None:  # every rank sees the statistics of the whole global batch
            dist.all_reduce(onehot_count, group=self.sync_group)
            dist.all_reduce(sums, group=self.sync_group)
        self.ema_count[k].mul_(self.decay).add_(onehot_count, alpha=1 - self.decay)
        self.ema_sum[k].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count[k].sum()
        count = (self.ema_count[k] + self.eps) / (total + self.codes * self.eps) * total
        self.codebooks[k] = self.ema_sum[k] / count[:, None]
        # dead-code restart: codes used less than 1/50 of a fair share are reseeded from the batch
        dead = self.ema_count[k] < 0.02 * total / self.codes
        n_dead = int(dead.sum())
        if n_dead:
            pick = x[torch.randint(len(x), (n_dead,), device=x.device)]
            if self.sync_group is not None:  # the same restarts on every rank: rank 0's picks
                dist.broadcast(pick, 0, group=self.sync_group)
            self.codebooks[k][dead] = pick
            self.ema_sum[k][dead] = pick
            self.ema_count[k][dead] = total / self.codes

    @torch.no_grad()
    def usage(self, indices: torch.Tensor) -> torch.Tensor:
        """Perplexity of each stage's code distribution in a batch of indices (S, N)."""
        out = []
        for row in indices:
            p = torch.bincount(row, minlength=self.codes).float()
            p = p / p.sum()
            out.append(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
        return torch.stack(out)


# -- scalar residual layer ----------------------------------------------------------------------
# Beyond its first stages, residual VQ buys little: each further stage costs ~8 bits per token
# (its codes are used nearly uniformly) for ~0.5 dB.  The codec therefore codes what the first
# stages leave, and the change a later group makes to its prediction, as scalar-quantised
# coefficients of an orthonormal transform of the token: the DCT of each plane's block in each
# frame, and a DCT across the group's frames.  Low-energy coefficients quantise to zero and cost
# a fraction of a bit under an entropy model, which a codeword never does.
def _dct(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(torch.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2 ** 0.5
    return m


def tube_basis(patch: int, frames: int) -> torch.Tensor:
    """Orthonormal (D, D) basis of a token's latent (the to_tubes layout: per frame, p*p luma then
    two (p/2)^2 chroma values), rows in coding order: temporal frequency, then spatial frequency
    (in luma cycles), then plane.  coefficients = latent @ basis.T; latent = coefficients @ basis."""
    c = patch // 2
    planes = [(patch, 1), (c, 2), (c, 2)]  # (block side, luma pixels per sample)
    rows, keys = [], []
    width = patch * patch + 2 * c * c
    for tf in range(frames):
        offset = 0
        for plane, (n, scale) in enumerate(planes):
            d = _dct(n)
            for i in range(n):
                for j in range(n):
                    spatial = torch.zeros(width, dtype=torch.float64)
                    spatial[offset:offset + n * n] = torch.outer(d[i], d[j]).reshape(-1)
                    rows.append(torch.kron(_dct(frames)[tf], spatial))
                    keys.append((tf, (i + j) * scale, plane, i, j))
            offset += n * n
    order = sorted(range(len(rows)), key=keys.__getitem__)
    return torch.stack([rows[k] for k in order]).float()


def scalar_quantise(c: torch.Tensor, step: float, limit: int, deadzone: float = 1 / 3) -> torch.Tensor:
    """Coefficients -> integers in [-limit, limit]: round to the nearest multiple of `step`, with
    magnitudes rounded down below (k + 1/2 + deadzone) * step (fewer, cheaper non-zeros)."""
    q = torch.floor(c.abs() / step + (0.5 - deadzone)).clamp_(max=limit)
    return (q * torch.sign(c)).to(torch.int64)
