"""The encoder: frames -> analysis -> decisions (motion search, modes, coefficients, output filter)
-> entropy coding -> CRC-checked segments in a .vqv file, streamed segment by segment.

Every choice is made against the decoder's own reconstruction (reconstruct.py, the same exact
integers a decoder computes), so what the encoder predicts from is what every decoder has.  The
float network (model.py) only analyses the source here.  Memory is bounded by one segment
(``segment_frames`` frames) whatever the video's length; outputs go to a temporary name in the
target folder and are renamed only when complete.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import bitstream as bs
from . import fec, filterfit, motion, search
from .entropy import (COEF_MAX, FLAG_BLOCK, HISTORY_EDGES, INTER, INTRA, MODE_FIRST, MV_MAX, MV_Y_CONTEXTS, NEAR_INTER,
                      NEAR_SKIP,
                      NEVER, NNZ_BUCKET, SKIP, EntropyCoder, Symbols, first_index_keys, first_refs, fresh_mode_contexts,
                      coarse_vectors, group_quality, index_rows, mv_neighbours, mv_pass_b, near_contexts, FRESH_PASSES, NEAR_PASSES)
from .errors import InputError, VqvError
from .exact import LATENT_UNIT
from .files import open_output, resolve_device
from .runtime import Threads
from .model import to_tubes
from .modelfile import CodecModel, load_model
from .quantizer import ResidualVQ, scalar_quantise, tube_basis
from .reconstruct import QUALITY_LEVELS, Reconstruction, stages_for_quality, step_for_quality
from .video import Frame, VideoSource, centre_crop, frames_text, read_frames

DEFAULT_QUALITY = 4
DEFAULT_SEGMENT_FRAMES = 32
DEFAULT_BATCH = 4  # temporal groups through the network at once

Progress = Callable[[int], None]  # called with the number of frames just finished


# -- frames <-> tensors ------------------------------------------------------------------------
def pad_planes(frames: list[Frame], patch: int, t: int):
    """Frames -> float tensors y (G,T,Hp,Wp), u, v (G,T,Hp/2,Wp/2) in [0,1], edge-padded."""
    while len(frames) % t:
        frames = frames + [frames[-1]]
    H, W = frames[0].height, frames[0].width
    Hp, Wp = math.ceil(H / patch) * patch, math.ceil(W / patch) * patch

    def stack(planes, h, w):
        a = np.stack(planes)
        a = np.pad(a, ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2])), mode="edge")
        return torch.from_numpy(a).float().div_(255.0).reshape(-1, t, h, w)

    return (stack([f.y for f in frames], Hp, Wp), stack([f.u for f in frames], Hp // 2, Wp // 2),
            stack([f.v for f in frames], Hp // 2, Wp // 2))


# -- segments ------------------------------------------------------------------------------------
# Mode decisions (encoder only; the decoder just reads them).  In a later group, each token takes
# the mode with the least distortion + lambda * bits (entropy.py describes the modes):
#   SKIP   keeps the prediction (distortion |z - z_pred|^2, almost no bits),
#   INTER  codes the change z - z_pred as scalar coefficients,
#   INTRA  codes z afresh: VQ stages, then coefficients of what they leave,
# with lambda = LAMBDA * step^2 per bit.  High-rate theory gives 2 ln 2 / 12 = 0.115 (a uniform
# quantiser's distortion s^2/12 per coefficient, -6 dB per bit); most coefficients here are at low
# rate, where the curve is flatter, and 0.06 measured best (0.15: +10 % bits at equal PSNR, 0.02:
# +3 %).  Distortion is the squared error of the latent,
# which the near-identity decoder carries to the pixels.  Every choice is made against the previous
# group's *reconstructed* latent, as the decoder has it.  Then, pass by pass in the near layout
# (entropy.near_passes), a token outside near pass 0 in a block that does not skip may instead take a near mode
# (NEAR_SKIP, NEAR_INTER: predicted from its two neighbours) where that costs less.
LAMBDA = 0.06
# Coefficients round down below (k + 1/2 + DEADZONE) x step: fewer, cheaper non-zeros (1/3 against
# 1/6 saves ~3 % at equal PSNR).
DEADZONE = 1 / 3
# Then each coefficient that rounds to a non-zero level takes that level, the one below or zero,
# whichever costs least (error / step)^2 + RDOQ_LAMBDA x its bits in the coefficient tables
# (rate-distortion optimised quantisation: -2.66 % against the dead zone alone; 0.06, the modes'
# lambda, gave -2.94 % but moved every quality up 15-24 % in rate at q5-q8; docs/CHANGELOG.md).
RDOQ_LAMBDA = 0.12
# A token whose source moved less than STILL x its own quantisation error since the previous group
# is kept (SKIP) whatever coding it would buy, and a block of such tokens keeps no vector: temporal
# noise below the quality's own noise is not worth coding, and a static scene costs next to
# nothing after its first group (each later group one static flag).
STILL = 0.25
# A block moves only when its motion-compensated prediction is at least this much closer to the
# source than its still one, by squared error over every plane and frame of the group (the search
# itself compares luma SADs, which noise can fool).  Judged in pixels since format 12 (the decoder
# gives the prediction back; in the analysis' latent: +0.11 %, and one more analysis per group).
MC_GAIN = 0.8
# The motion search weighs a vector's bits against the sum of absolute luma differences (0..255
# scale) it saves: MV_LAMBDA x 255 x step per bit, i.e. about the square root of the modes'
# lambda in pixel units, as for the SAD-based searches of classic encoders.
MV_LAMBDA = 0.25
# A later group where more than this share of the tokens choose INTRA (a scene cut) is coded as
# a segment's first group instead (fresh): spatial prediction only, every context afresh, no vectors.
REFRESH = 0.5
# Above REFRESH_TRY (and up to REFRESH) the group is also decided as a fresh one and coded so where
# that costs less distortion + lambda x bits: at coarse steps a scene cut's new content is cheaper
# coded inter from a bad prediction than as a later group's intra tokens, so the intra share alone
# missed cuts (bikes' at q2: 29 % of the tokens intra, its group costing more than at q3).  Ordinary
# groups measured up to 19 % (carphone q7), where the trial never won.
REFRESH_TRY = 0.2
# An intra token's VQ indices by rate and distortion (encoder only): of the combinations a tree
# search keeps (RD_VQ[k] codewords nearest to what stage k's predecessors leave: the greedy one
# and its runners-up), the one of least distortion + lambda x (its index bits + its coefficients'
# bits); tried where the greedy indices' intra cost times RD_VQ_TRY is below every other mode's.
RD_VQ = (4, 2)
RD_VQ_TRY = 0.8
RD_VQ_CHUNK = 4096  # tokens at a time (8 combinations of 48 values each)
BITS_PER_INDEX = 5.0  # rate of an index before a model has tables (while they are fitted)
# The analysis network is not the synthesis' inverse: synthesis(analysis(x)) is only 43.1 dB from
# x on carphone (50.0 on bigbuckbunny, 58.1 on bikes), a ceiling every moving block paid again in
# each group and every quality paid at its top.  So the latent a moving block is predicted from
# takes PREDICTION_STEPS fixed-point corrections towards the motion-compensated picture (part of
# the format: the decoder makes the same; one more pass of the synthesis network per group with
# motion), and from quality TARGET_FROM up the source's latent the encoder codes takes one step
# towards the source (the encoder only; one more pass per group).  Below it the coarser steps
# quantise the correction away and it measured no gain (bigbuckbunny q2-q5 +0.3 to +0.8 % bits);
# a full inversion brings back detail the tables price dearly (4 steps gain less than 2).
TARGET_FROM = 6


def target_steps(quality: int) -> int:
    """Fixed-point steps from the analysis' latent towards the source, for a segment at `quality`."""
    return 1 if quality >= TARGET_FROM else 0


def _neighbours3(m: torch.Tensor) -> torch.Tensor:
    """entropy._neighbours3 on the device: set cells in each cell's 3x3 neighbourhood of a 2-D mask."""
    k = torch.ones(1, 1, 3, 3, device=m.device)
    return torch.nn.functional.conv2d(m[None, None].float(), k, padding=1)[0, 0].round().long()


class SegmentCoder(Reconstruction):
    """Codes one segment's frames to payload bytes, with one model (the decoding loop it decides
    against is Reconstruction's)."""

    def __init__(self, model: CodecModel, device: str, batch: int = DEFAULT_BATCH):
        super().__init__(model, device)
        self.batch = max(1, batch)
        self.per_group = False  # a range-coder stream per group (files with FEC: bitstream.py)
        self.net = model.net.to(device).eval()  # the float network: the source's analysis only
        self.basis = tube_basis(self.cfg.patch, self.cfg.frames).to(device)
        self.coder = EntropyCoder(*model.tables) if model.tables is not None else None
        to_dev = lambda a: torch.from_numpy(a).float().to(device)
        self._bits = to_dev(self.coder.bits) if self.coder else None
        self._mode_bits = to_dev(self.coder.mode_bits) if self.coder else None
        # (quality, kind, position, context, symbol): one quality's and kind's rates are one contiguous table
        self._coef_bits = to_dev(self.coder.coef_own_bits).transpose(1, 2).contiguous() if self.coder else None
        self._mv_bits = to_dev(self.coder.mv_bits) if self.coder else None
        self._flag_bits = to_dev(self.coder.flag_bits) if self.coder else None
        self._bucket = torch.as_tensor(NNZ_BUCKET, device=device)  # entropy.py's contexts, on the device
        self._edges = torch.tensor(HISTORY_EDGES, device=device)
        self._zero_rates: dict[tuple[int, int], torch.Tensor] = {}  # (quality, kind) -> an all-zero token's bits per history

    def analyse(self, frames: list[Frame], steps: int = 0) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """Per temporal group, in order: its latent tokens (N, D) (the analysis', then `steps`
        fixed-point steps towards the source: target_steps) and its planes (T, H, W), (T, H/2, W/2) x 2."""
        y, u, v = pad_planes(frames, self.cfg.patch, self.cfg.frames)
        with torch.no_grad():
            for i in range(0, y.shape[0], self.batch):
                sl = slice(i, i + self.batch)
                planes = [p[sl].to(self.device) for p in (y, u, v)]
                z = self.net.invert(*planes, steps)
                b, d, h, w = z.shape
                tokens = z.permute(0, 2, 3, 1).reshape(b, h * w, d).float().mul_(LATENT_UNIT)  # latent units
                for j in range(b):
                    yield tokens[j], tuple(p[j] for p in planes)

    def analysed(self, frames: list[Frame]) -> Callable[[int], list]:
        """quality -> the frames' analysed groups for a segment at that quality (each depth of
        target_steps analysed once): for callers that decide one segment at several qualities."""
        done: dict[int, list] = {}

        def groups(quality: int) -> list:
            steps = target_steps(quality)
            if steps not in done:
                done[steps] = list(self.analyse(frames, steps))
            return done[steps]
        return groups

    # -- rates (bits per token) ------------------------------------------------------------------
    def _index_rate(self, idx: torch.Tensor, ctx: torch.Tensor | int) -> torch.Tensor:
        """Bits of VQ indices (D, N) in context rows ctx ((D, N) or one row id)."""
        if self._bits is None:
            return torch.full((idx.shape[1],), BITS_PER_INDEX * idx.shape[0], device=idx.device)
        stages = torch.arange(idx.shape[0], device=idx.device)[:, None]
        return self._bits[stages, ctx, idx].sum(0)

    def history(self, c: torch.Tensor) -> torch.Tensor:
        """entropy.history on the device: coded tokens' coefficients (N, P) -> history (N,)."""
        return torch.bucketize((c != 0).sum(1), self._edges, right=True)

    def _coef_rate(self, c: torch.Tensor, kind: int, quality: int, hist: torch.Tensor) -> torch.Tensor:
        """Bits of quantised coefficients (N, P) of one kind (0 intra, 1 inter), tokens of
        histories hist (N,)."""
        if self._coef_bits is None:  # a rough model of an adaptive coder, while tables are fitted
            a = c.abs().float()
            return torch.where(a == 0, 0.3, 2.5 + 2 * torch.log2(a.clamp(min=1))).sum(1)
        table = self._coef_bits[quality - 1, kind]  # (P, contexts, symbols)
        # most tokens' coefficients are all zero: their bits depend on the history alone, read
        # from a row per history worked out once (the same sum as working it out per token)
        zero = self._zero_rates.get((quality, kind))
        if zero is None:
            every = torch.arange(NEVER + 1, device=c.device)
            zero = self._zero_rates[quality, kind] = self._table_rate(table, c.new_zeros(len(every), c.shape[1]), every)
        rates = zero[hist]
        coded = torch.nonzero(c.any(1))[:, 0]
        if len(coded):
            rates[coded] = self._table_rate(table, c[coded], hist[coded])
        return rates

    def _quantise(self, c: torch.Tensor, ustep: float, kind: int, quality: int, hist: torch.Tensor | None) -> torch.Tensor:
        """Coefficients (N, P) in latent units -> quantised integers (N, P) of one kind for tokens of
        histories `hist` (None: none yet), rate-distortion optimised against the coefficient tables:
        each value that rounds to a non-zero level takes, of that level, the one below it and zero,
        the one of least (error / step)^2 + RDOQ_LAMBDA x its bits, its context's bucket counted from
        the dead-zone quantiser's non-zeros before it (so the levels are chosen all at once, not
        position by position)."""
        q0 = scalar_quantise(c, ustep, COEF_MAX, DEADZONE)
        if self._coef_bits is None:  # no tables yet (a model being fitted): the dead zone alone
            return q0
        a = c.abs().div_(ustep)
        flat = torch.nonzero(a.reshape(-1) >= 0.5)[:, 0]  # the values whose nearest level is not zero
        if not len(flat):
            return q0
        n, p = c.shape
        rows, pos = flat // p, flat % p
        table = self._coef_bits[quality - 1, kind]  # (P, contexts, symbols)
        contexts, width = table.shape[1:]
        nz = (q0 != 0).int()
        before = nz.cumsum(1, dtype=torch.int32).sub_(nz).clamp_(max=4).reshape(-1)[flat].long()
        h = NEVER if hist is None else hist[rows]
        at = self._bucket[before] * width + (4 * width) * h + pos * (contexts * width) + COEF_MAX
        mag = a.reshape(-1)[flat]
        near = torch.floor(mag + 0.5).clamp_(max=COEF_MAX)
        levels = torch.stack([near, near - 1, torch.zeros_like(near)])  # (3, k)
        sign = torch.where(c.reshape(-1)[flat] < 0, -1, 1)
        bits = table.take(at + sign * levels.long())
        cost = (mag - levels).square_().add_(bits, alpha=RDOQ_LAMBDA)
        out = torch.zeros(n * p, dtype=torch.int64, device=c.device)
        out[flat] = levels.gather(0, cost.argmin(0, keepdim=True))[0].long() * sign
        return out.reshape(n, p)

    def _table_rate(self, table: torch.Tensor, c: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """_coef_rate's sum over each token's positions from one quality's and kind's table."""
        contexts, width = table.shape[1:]
        nz = (c != 0).int()
        before = nz.cumsum(1, dtype=torch.int32).sub_(nz).clamp_(max=4)  # non-zeros before each position
        # the flat index of (position, 4 * history + bucket, COEF_MAX + value), summed in int64
        at = (self._bucket * width)[before.long()]
        at += (4 * width) * hist[:, None] + (torch.arange(c.shape[1], device=c.device) * contexts * width + COEF_MAX)
        return table.take(at.add_(c)).sum(1)

    # -- reconstruction --------------------------------------------------------------------------
    def _mv_rate(self, prev_mv: torch.Tensor | None,
                 shape: tuple[int, int]) -> tuple[search.Rate | None, search.Predicted | None]:
        """entropy.mv_symbols' code length on the device: (dy, dx) per block -> bits, given the
        previous group's vectors (None: the segment's second group) and the field the search holds
        (a pass-B block is predicted from its pass-A neighbours' there; without a field, as a pass-A
        block is); and each block's predicted vector in a field.  (None, None) before the model has
        tables."""
        if self._mv_bits is None:
            return None, None
        if prev_mv is None:
            py = px = torch.zeros(shape, dtype=torch.long, device=self.device)
            ky = torch.full(shape, 2, dtype=torch.long, device=self.device)
        else:
            (py, px), ky = motion.vector(prev_mv), (prev_mv != motion.ZERO).long()
        temporal = py.cpu().numpy(), px.cpu().numpy()
        pass_b = torch.from_numpy(mv_pass_b(shape)).to(self.device)

        table, width = self._mv_bits.reshape(-1), self._mv_bits.shape[1]  # rows (context) of symbols, flat

        def bits(dy, dx, qy, qx, k):
            ey, ex = (dy - qy).clamp_(-MV_MAX, MV_MAX), (dx - qx).clamp_(-MV_MAX, MV_MAX)
            # dy in row k, dx in row MV_Y_CONTEXTS + 2 k + (ey != 0) (entropy.mv_x_contexts)
            y_at = k * width + MV_MAX
            x_at = (ey != 0).long().mul_(width).add_((2 * width) * k + (MV_Y_CONTEXTS * width + MV_MAX))
            return table.take(y_at + ey).add_(table.take(x_at.add_(ex)))

        # the last field (its two tensors) and each block's prediction and context in it: pass B's
        # from the field, pass A's from the previous group
        seen: list = [None, None, None]

        def in_field(fy, fx):  # each block's prediction and context in the field (fy, fx)
            if seen[0] is not fy or seen[1] is not fx:  # a new round of the search: the field moved
                field = motion.symbol(fy, fx).cpu().numpy()
                seen[:] = fy, fx, [torch.where(pass_b, torch.from_numpy(t).to(self.device), a)
                                   for t, a in zip(mv_neighbours(field, *temporal), (py, px, ky))]
            return seen[2]

        def rate(dy, dx, fy=None, fx=None):
            return bits(dy, dx, py, px, ky) if fy is None else bits(dy, dx, *in_field(fy, fx))

        return rate, lambda fy, fx: tuple(in_field(fy, fx)[:2])

    def _search(self, planes: tuple[torch.Tensor, ...], recon: tuple[torch.Tensor, ...], active: torch.Tensor,
                prev_mv: torch.Tensor | None, step: float, coarse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One motion search on the block grid (`coarse`: on the cells of 2 x 2 blocks) -> the
        vectors (Hb, Wb) (a coarse field spread over its blocks) and the field's bits."""
        grid = active.shape
        if coarse:
            active, prev_mv = motion.cell_sums(active.float()) > 0, None if prev_mv is None else motion.cells(prev_mv)
        rate, predicted = self._mv_rate(prev_mv, active.shape)
        mv = search.search(planes[0], recon[0] / 255.0, self.cfg.patch * (motion.CELL if coarse else 1), rate,
                           MV_LAMBDA * 255.0 * step, prev_mv, active, predicted)
        bits = None
        if rate is not None:
            dy, dx = motion.vector(mv)
            bits = rate(dy, dx, dy, dx).sum()
        return (motion.spread(mv, grid) if coarse else mv), bits

    def _predict(self, z_prev: torch.Tensor, recon: tuple[torch.Tensor, ...], planes: tuple[torch.Tensor, ...],
                 shape: tuple[int, int], still: torch.Tensor, prev_mv: torch.Tensor | None,
                 step: float, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The encoder's motion: (vectors, prediction, whether the vectors are coded on the coarse
        grid) for the group of source `planes` from the previous group's latent z_prev and decoded
        planes `recon`; blocks whose tokens are all `still` stand still.  prev_mv: the previous
        group's vectors (their prediction), None in the segment's second group.  `cells`: given
        where the coarse grid is allowed (entropy.coarse_vectors), each token's cost as intra
        (distortion + lambda x bits): both grids are searched and the one whose prediction costs
        less is taken, each token's squared error counted up to its intra cost, plus lambda x the
        field's bits."""
        grid = motion.grid_shape(*shape)
        active = motion.block_sums((~still).float(), shape) > 0  # the others stand still whatever the search finds
        if not bool(active.any()):  # a still group (a static scene): nothing to search
            return torch.full(active.shape, motion.ZERO, dtype=torch.long, device=self.device), z_prev, False
        x = to_tubes(*(p[None] for p in planes), self.cfg.patch)
        token_err = lambda frames: ((to_tubes(*(p[None] / 255.0 for p in frames), self.cfg.patch) - x) ** 2).sum(1).reshape(-1)
        coarse, (mv, fine_bits) = False, self._search(planes, recon, active, prev_mv, step, False)
        pred = None
        if cells is not None and self._mv_bits is not None:
            lam = LAMBDA * (step * LATENT_UNIT) ** 2
            options = []
            for c in (False, True):
                field, bits = self._search(planes, recon, active, prev_mv, step, True) if c else (mv, fine_bits)
                p = motion.predict(recon, field, self.cfg.patch)
                cost = torch.minimum(token_err(p) * LATENT_UNIT ** 2, cells).sum() + lam * bits
                options.append((float(cost), field, p))
            coarse = options[1][0] < options[0][0]
            _, mv, pred = options[int(coarse)]
        if not bool((mv != motion.ZERO).any()):
            return mv, z_prev, coarse
        if pred is None:
            pred = motion.predict(recon, mv, self.cfg.patch)
        # keep a vector only where it predicts the group better than standing still, in the pixels
        # the decoder will have (the prediction's latent is corrected to give `pred` back); on the
        # coarse grid, a cell's vector where it does so over the cell
        err = lambda frames: motion.block_sums(token_err(frames), shape)
        gain = err(pred) < MC_GAIN * err(recon)
        if coarse:
            gain = motion.spread(motion.cell_sums(err(pred)) < MC_GAIN * motion.cell_sums(err(recon)), grid)
        kept = torch.where(gain & (mv != motion.ZERO), mv, motion.ZERO)
        if not torch.equal(kept, mv):  # the edges overlap and the network sees across blocks: predict again
            pred = motion.predict(recon, kept, self.cfg.patch, update=(pred, mv))
            mv = kept
        return mv, self.base(z_prev, recon, mv, shape, pred), coarse

    @torch.no_grad()
    def decide(self, groups: Iterable[tuple[torch.Tensor, tuple]], quality: int, shape: tuple[int, int],
               latents: list | None = None, size: tuple[int, int] | None = None) -> Symbols:
        """Indices, modes, vectors and coefficients, group after group, at one quality; each
        group's reconstructed latent (what the next is predicted from) is appended to `latents`.
        With the picture's `size` (width, height), also the output filter that brings the decoded
        pictures closest to the source (postfilter.py)."""
        stages = stages_for_quality(quality, self.cfg.stages)
        still = torch.full(motion.grid_shape(*shape), motion.ZERO, dtype=torch.long, device=self.device)
        out_idx, out_mode, out_mv, out_coef, out_fresh, out_grid = [], [], [], [], [], []
        z_prev = ref = moved = z_src = prev_mv = prev_changed = hist = recon = src = None
        fit = filterfit.Fit() if size is not None and self.coder is not None else None
        for z, planes in groups:
            if z_prev is not None:  # the previous group as decoded: the prediction's reference, the filter's input
                recon = self.planes(z_prev, shape)
                if fit is not None:
                    fit.add_group(src, recon, *size)
            src = planes
            idx = self.net.quantizer.encode(z, stages, self.exact.codebooks)  # the exact codebooks the decoder adds
            z_vq = self.exact.vq(idx)
            first = z_prev is None
            mv, fresh, trial, coarse = still, first, None, False
            # every group after the first (a refresh too) takes the step, the lambda and the
            # coefficient tables of the next quality down
            gq = group_quality(quality, first)
            step = step_for_quality(gq)
            ustep = step * LATENT_UNIT  # the step in latent units (distortions are in them)
            lam = LAMBDA * ustep * ustep
            c_intra = self._quantise((z - z_vq) @ self.basis.t(), ustep, 0, gq, None if first else hist)
            if not fresh:
                d_intra = ((z - self.rebuild(z_vq, None, None, c_intra, step)) ** 2).sum(1)
                still_tok = ((z - z_src) ** 2).sum(1) <= STILL * d_intra
                intra_cost = d_intra + lam * (self._index_rate(idx, ref) + self._coef_rate(c_intra, 0, gq, hist))
                mv, z_base, coarse = self._predict(z_prev, recon, planes, shape, still_tok, prev_mv, step,
                                                   intra_cost if coarse_vectors(quality) else None)
                c_inter = self._quantise((z - z_base) @ self.basis.t(), ustep, 1, gq, hist)
                z_inter = z_base + self.change(c_inter, step)
                d_skip = ((z - z_base) ** 2).sum(1)
                costs = torch.stack([
                    intra_cost,
                    d_skip,
                    ((z - z_inter) ** 2).sum(1) + lam * self._coef_rate(c_inter, 1, gq, hist)])
                if self.coder is not None:  # the tokens that may code intra: their indices by their cost
                    maybe = torch.nonzero((RD_VQ_TRY * costs[0] < costs[1:].min(0).values) & ~still_tok)[:, 0]
                    costs[0, maybe] = self._choose_indices(z, idx, z_vq, c_intra, maybe, ref[:, maybe], gq, hist[maybe])
                main_bits = torch.zeros_like(costs)
                if self._mode_bits is not None:  # the modes' own bits, in their pass-A contexts
                    main_bits = lam * self._mode_bits[self._mode_context(moved, shape)].t()
                    costs += main_bits
                best = costs.argmin(0)
                best[still_tok] = SKIP
                if self._flag_bits is not None:
                    self._skip_blocks(best, costs, d_skip, lam, prev_changed, mv, shape)
                share = float((best == INTRA).float().mean())
                fresh = share > REFRESH  # a new scene: code it afresh
                if not fresh and share > REFRESH_TRY:  # perhaps one: the cheaper of the two codings
                    trial = self._decide_fresh(z, idx, z_vq, c_intra, gq, shape)
                    fresh = bool(trial[4] < costs.gather(0, best[None]).sum())
            if fresh:  # a first group, or a refresh: spatial prediction only, every context afresh
                mv, prev_mv, moved, prev_changed = still, None, None, None
                if trial is None:
                    trial = self._decide_fresh(z, idx, z_vq, c_intra, gq, shape)
                mode, coefs, z_prev, ref, _, idx = trial
                hist = self.history(coefs)
            else:
                prev_mv = mv
                coefs = torch.where((best == INTRA)[:, None], c_intra,
                                    torch.where((best == INTER)[:, None], c_inter, 0))
                mode, coefs, z_prev = self._decide_near(z, z_base, z_vq, best, coefs, costs.gather(0, best[None])[0],
                                                         main_bits[INTRA], gq, shape, hist)
                intra = mode == INTRA
                ref[:, intra] = idx[:, intra]
                moved = mode != SKIP
                prev_changed = motion.block_sums(moved.float(), shape) > 0
                hist = torch.where(moved & (mode != NEAR_SKIP), self.history(coefs), hist)
            z_src = z
            if latents is not None:
                latents.append(z_prev)
            out_idx.append(idx.reshape(stages, *shape).cpu())
            out_mode.append(mode.to(torch.uint8).reshape(shape).cpu())
            out_mv.append(mv.cpu())
            out_coef.append(coefs.to(torch.int8).reshape(*shape, -1).cpu())
            out_fresh.append(fresh)
            out_grid.append(coarse and not fresh)
        filt = None
        if fit is not None and z_prev is not None:
            fit.add_group(src, self.planes(z_prev, shape), *size)
            filt = fit.solve(LAMBDA * step_for_quality(quality) ** 2, self.coder.filter_bits)
        return Symbols(torch.stack(out_idx).numpy(), torch.stack(out_mode).numpy(), torch.stack(out_mv).numpy(),
                       torch.stack(out_coef).numpy(), quality, np.array(out_fresh, dtype=bool), filt,
                       np.array(out_grid, dtype=bool))

    def _decide_near(self, z: torch.Tensor, z_base: torch.Tensor, z_vq: torch.Tensor, best: torch.Tensor,
                     coefs: torch.Tensor, chosen: torch.Tensor, main_bits: torch.Tensor, quality: int,
                     shape: tuple[int, int], hist: torch.Tensor):
        """A later group's tokens outside near pass 0, in blocks that do not skip, pass by pass: each keeps
        its mode `best` or takes NEAR_SKIP / NEAR_INTER (its two neighbours' mean, or it plus the
        coded change), whichever costs least distortion + lambda x bits (`chosen`: the cost of its
        mode, that mode's bits included; `main_bits`: those of INTRA, which a near mode is coded
        as, then its near mode).  -> (modes, coefficients, the latent as the decoder rebuilds it)."""
        step = step_for_quality(quality)
        passes, _ = self._pass_layout(shape, near=True)
        rec = self.rebuild(z_vq, z_base, best, coefs, step)
        open_ = motion.block_mask(motion.block_sums((best != SKIP).float(), shape) > 0, *shape)
        if not bool((open_ & (passes > 0)).any()):
            return best, coefs, rec
        ustep = step * LATENT_UNIT
        lam = LAMBDA * ustep * ustep
        ctx = torch.from_numpy(near_contexts(best.reshape(shape).cpu().numpy()).reshape(-1)).to(self.device)
        mode, coefs = best.clone(), coefs.clone()
        for p in range(1, NEAR_PASSES):
            at = torch.nonzero((passes == p) & open_)[:, 0]
            if not len(at):
                continue
            pred = self.spatial_prediction(rec, shape, at, near=True)
            src = z[at]
            c_near = self._quantise((src - pred) @ self.basis.t(), ustep, 1, quality, hist[at])
            z_near = pred + self.change(c_near, step)
            costs = torch.stack([chosen[at], ((src - pred) ** 2).sum(1) + main_bits[at],
                                 ((src - z_near) ** 2).sum(1) + main_bits[at]
                                 + lam * self._coef_rate(c_near, 1, quality, hist[at])])
            if self._mode_bits is not None:  # each choice's near-mode bits (staying INTER codes none)
                nb = lam * self._mode_bits[ctx[at]].t()
                nb[0] = torch.where(best[at] == INTRA, nb[0], 0.0)
                costs += nb
            choice = costs.argmin(0)
            mode[at] = torch.where(choice == 1, NEAR_SKIP, torch.where(choice == 2, NEAR_INTER, mode[at]))
            coefs[at] = torch.where((choice == 1)[:, None], 0, torch.where((choice == 2)[:, None], c_near, coefs[at]))
            rec = self.near_pass(rec, mode, coefs, step, shape, p)
        return mode, coefs, rec

    def _decide_fresh(self, z: torch.Tensor, idx: torch.Tensor, z_vq: torch.Tensor, c_intra: torch.Tensor,
                      quality: int, shape: tuple[int, int]):
        """A fresh group's choices: pass-0 tokens INTRA; each later pass's token, pass by pass, the
        mode of least distortion + lambda x bits against its spatial prediction (an intra token's
        indices chosen by _choose_indices, from the greedy `idx`, `z_vq`, `c_intra`, which stay
        unchanged).  -> (modes, coefficients, latent, each token's reference indices for the next
        group's index contexts, the group's distortion + lambda x bits as the choices estimate it,
        vectors and flags aside, the indices (D, N) it codes)."""
        step = step_for_quality(quality)
        ustep = step * LATENT_UNIT
        lam = LAMBDA * ustep * ustep  # x 0.25 .. 2 measured the same (BENCHMARKS.md)
        S, N = idx.shape
        idx, z_vq = idx.clone(), z_vq.clone()  # _choose_indices changes them in place (g shares idx's memory)
        g = idx.reshape(S, *shape).cpu().numpy()
        never = torch.full((N,), NEVER, dtype=torch.long, device=self.device)
        mode = torch.full((N,), INTRA, dtype=torch.long, device=self.device)
        coefs = c_intra.clone()
        rec = self.rebuild(z_vq, None, None, c_intra, step)
        r_intra = self._coef_rate(c_intra, 0, quality, never)
        d_intra = ((z - rec) ** 2).sum(1)
        first = self._pass_tokens(shape, 0)
        rows = 0 if self.coder is None else torch.from_numpy(
            first_index_keys(g, mode.reshape(shape).cpu().numpy(), self.coder.codes, 0).reshape(S, N)
            % index_rows(self.coder.codes)).to(self.device)[:, first]
        if self.coder is None:
            cost = (d_intra[first] + lam * (self._index_rate(idx[:, first], rows) + r_intra[first])).sum()
        else:  # every pass-0 token is intra: its indices by their cost
            cost = self._choose_indices(z, idx, z_vq, coefs, first, rows, quality, never[first]).sum()
            rec[first] = self.rebuild(z_vq[first], None, None, coefs[first], step)
        for p in range(1, FRESH_PASSES):  # each pass's tokens only (1/64 .. 1/2 of them)
            at = self._pass_tokens(shape, p)
            pred, src = self.spatial_prediction(rec, shape, at), z[at]
            c_inter = self._quantise((src - pred) @ self.basis.t(), ustep, 1, quality, None)
            z_inter = pred + self.change(c_inter, step)
            m = mode.reshape(shape).cpu().numpy()
            rows = 0 if self.coder is None else torch.from_numpy(  # the index contexts if intra
                first_index_keys(g, m, self.coder.codes, p).reshape(S, N) % index_rows(self.coder.codes)
            ).to(self.device)[:, at]
            costs = torch.stack([d_intra[at] + lam * (self._index_rate(idx[:, at], rows) + r_intra[at]),
                                 ((src - pred) ** 2).sum(1),
                                 ((src - z_inter) ** 2).sum(1) + lam * self._coef_rate(c_inter, 1, quality, never[at])])
            if self._mode_bits is not None:  # the modes' bits; the tokens that may code intra: their indices by their cost
                ctx = torch.from_numpy(fresh_mode_contexts(m).reshape(-1)).to(self.device)[at]
                mode_bits = lam * self._mode_bits[ctx].t()
                maybe = torch.nonzero(RD_VQ_TRY * (costs[0] + mode_bits[0])
                                      < (costs[1:] + mode_bits[1:]).min(0).values)[:, 0]
                costs[0, maybe] = self._choose_indices(z, idx, z_vq, coefs, at[maybe], rows[:, maybe], quality,
                                                       never[at[maybe]])
                costs += mode_bits
            choice = costs.argmin(0)
            cost += costs.gather(0, choice[None]).sum()
            mode[at] = choice
            coefs[at] = torch.where((choice == INTER)[:, None], c_inter,
                                    torch.where((choice == SKIP)[:, None], 0, coefs[at]))
            rec = self.fresh_pass(rec, z_vq, mode, coefs, step, shape, p, pred)
        ref = torch.from_numpy(first_refs(g, mode.reshape(shape).cpu().numpy()).reshape(S, N)).to(self.device)
        return mode, coefs, rec, ref, float(cost), idx

    def _choose_indices(self, z: torch.Tensor, idx: torch.Tensor, z_vq: torch.Tensor, coefs: torch.Tensor,
                        at: torch.Tensor, rows: torch.Tensor, quality: int, hist: torch.Tensor) -> torch.Tensor:
        """The intra coding of the tokens `at` (positions), their index contexts `rows` (D, n) and
        histories `hist` (n,): of quantizer.candidates' combinations (RD_VQ), the indices of least
        distortion + lambda x (index bits + coefficient bits), written in place into idx (D, N),
        z_vq and coefs (N, ...).  -> their intra costs (n,)."""
        step = step_for_quality(quality)
        ustep = step * LATENT_UNIT
        lam = LAMBDA * ustep * ustep
        S = idx.shape[0]
        out = []
        for i in range(0, len(at), RD_VQ_CHUNK):
            part, r, h = at[i:i + RD_VQ_CHUNK], rows[:, i:i + RD_VQ_CHUNK], hist[i:i + RD_VQ_CHUNK]
            src = z[part]
            n, d = src.shape
            cand, sums = ResidualVQ.candidates(src, self.exact.codebooks, RD_VQ[:S])
            m = cand.shape[2]
            every, vq = cand.reshape(S, -1), sums.reshape(-1, d)
            target = src[:, None].expand(n, m, d).reshape(-1, d)
            hh = h[:, None].expand(n, m).reshape(-1)
            c = self._quantise((target - vq) @ self.basis.t(), ustep, 0, quality, hh)
            cb = self._coef_rate(c, 0, quality, hh)
            dd = ((target - self.rebuild(vq, None, None, c, step)) ** 2).sum(1)
            j = dd + lam * (cb + self._index_rate(every, r[:, :, None].expand(S, n, m).reshape(S, -1)))
            best = j.reshape(n, m).argmin(1) + torch.arange(n, device=z.device) * m
            idx[:, part], z_vq[part], coefs[part] = every[:, best], vq[best], c[best]
            out.append(j[best])
        return torch.cat(out) if out else z.new_zeros(0)

    def _skip_blocks(self, best: torch.Tensor, costs: torch.Tensor, d_skip: torch.Tensor, lam: float,
                     prev_changed: torch.Tensor | None, mv: torch.Tensor, shape: tuple[int, int]) -> None:
        """Make whole blocks skip (in place, on the chosen modes `best`) where that costs less
        than the choices made token by token: a skipped block codes one flag and no modes."""
        n = torch.full(mv.shape, 10, dtype=torch.long, device=self.device) if prev_changed is None \
            else _neighbours3(prev_changed)
        ctx = FLAG_BLOCK + 11 * (mv != motion.ZERO).long() + n
        chosen = motion.block_sums(costs.gather(0, best[None])[0], shape) + lam * self._flag_bits[ctx, 0]
        skipped = motion.block_sums(d_skip, shape) + lam * self._flag_bits[ctx, 1]
        best[motion.block_mask(skipped < chosen, *shape)] = SKIP

    def _mode_context(self, moved: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """entropy.mode_contexts_a on the device: changed tokens in each 3x3 neighbourhood."""
        if moved is None:
            return torch.full((shape[0] * shape[1],), MODE_FIRST, dtype=torch.long, device=self.device)
        return _neighbours3(moved.reshape(shape)).reshape(-1)

    def symbols(self, frames: list[Frame], quality: int) -> Symbols:
        """Frames -> their symbols at one quality, streamed group by group."""
        return self.decide(self.analyse(frames, target_steps(quality)), quality, self.grid(frames),
                           size=(frames[0].width, frames[0].height))

    def pack(self, sym: Symbols) -> tuple[bytes, float]:
        """(payload bytes, ideal code length in bits under the tables)."""
        words, bits = self.coder.encode_measured(sym, per_group=self.per_group)
        return words.astype("<u4").tobytes(), bits

    def encode(self, frames: list[Frame], quality: int, progress: Progress | None = None) -> tuple[bytes, float]:
        """(payload, estimated bits) of one segment; `progress` hears of each group as it is decided."""
        groups = self.analyse(frames, target_steps(quality))
        if progress:
            groups = _counted(groups, progress, self.cfg.frames, len(frames))
        return self.pack(self.decide(groups, quality, self.grid(frames), size=(frames[0].width, frames[0].height)))

    def encode_for_budget(self, frames: list[Frame], budget_bits: float, start: int) -> tuple[int, bytes, float]:
        """The quality whose segment comes nearest `budget_bits`, over or under (quality 1 when
        even it is over, the best quality when even it is under), searched from quality `start`
        up or down: -> (quality, payload, estimated bits).  The caller carries the difference to
        the next segment, so the clip's rate stays within half a step of the ladder of its target
        instead of always falling short of it.  The analysis runs once (twice when the qualities
        tried straddle TARGET_FROM); the quantisation choices and the rate estimate are repeated
        per quality tried."""
        groups = self.analysed(frames)
        shape = self.grid(frames)
        tried: dict[int, tuple] = {}

        def bits(quality: int) -> float:
            if quality not in tried:
                chosen = self.decide(groups(quality), quality, shape, size=(frames[0].width, frames[0].height))
                tried[quality] = (chosen, self.coder.estimate_bits(chosen))
            return tried[quality][1]

        top = len(QUALITY_LEVELS)
        quality = start
        while quality < top and bits(quality) <= budget_bits:
            quality += 1
        while quality > 1 and bits(quality) > budget_bits:
            quality -= 1
        # quality: the best at or under the budget (1 when none is); the next one up is over it
        if quality < top and abs(bits(quality + 1) - budget_bits) < abs(bits(quality) - budget_bits):
            quality += 1
        payload, estimate = self.pack(tried[quality][0])
        return quality, payload, estimate


def _counted(groups: Iterator, progress: Progress, group: int, frames: int) -> Iterator:
    """The groups, telling `progress` of each group's frames once the next one is asked for (the
    group has then been decided)."""
    done = 0
    for g in groups:
        yield g
        n = min(group, frames - done)
        done += n
        progress(n)


def _chunks(frames: Iterable[Frame], n: int) -> Iterator[list[Frame]]:
    buf: list[Frame] = []
    for f in frames:
        buf.append(f)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


# -- public calls --------------------------------------------------------------------------------
@dataclass
class EncodeReport:
    frames: int
    width: int
    height: int
    fps: float
    bytes: int
    seconds: float
    quality: int
    estimated_bits: float = 0.0
    segment_qualities: list[int] = field(default_factory=list)
    target_kbps: float | None = None
    notes: list[str] = field(default_factory=list)  # warnings for the user (a variable frame rate)
    audio_streams: int = 0
    audio_bytes: int = 0  # of `bytes`, the audio's

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / max(1, self.width * self.height * self.frames)

    @property
    def kbps(self) -> float:
        return 8 * self.bytes / max(1e-9, self.frames / self.fps) / 1000

    def summary(self) -> str:
        return (f"encoded {frames_text(self.frames)} {self.width}x{self.height}, {self.bytes} bytes, "
                f"{self.kbps:.1f} kbit/s, {self.bpp:.4f} bpp, {self.frames / max(self.seconds, 1e-9):.2f} fps"
                + (f" (target {self.target_kbps:g} kbit/s, segment qualities {min(self.segment_qualities)}-"
                   f"{max(self.segment_qualities)})" if self.target_kbps else "")
                + (f"; audio copied: {self.audio_streams} stream(s), {self.audio_bytes} bytes" if self.audio_streams else ""))


def encode_file(src: Path | str, dst: Path | str, *, quality: int = DEFAULT_QUALITY, bitrate: float | None = None,
                model: Path | CodecModel | None = None, device: str = "auto", overwrite: bool = False,
                segment_frames: int = DEFAULT_SEGMENT_FRAMES, batch: int = DEFAULT_BATCH,
                progress: Progress | None = None, seek: float = 0.0, frames: int | None = None,
                threads: int = 0, total: Callable[[int | None], None] | None = None,
                audio: bool = True, fec_pct: int = 0) -> EncodeReport:
    """Encode any video PyAV opens ('-': standard input) into a .vqv file ('-': standard output).

    The input is opened once; `seek` (seconds) and `frames` pick a part of it; the rate stored is
    the one the frames' timestamps show (rate_from_timestamps), not the container's claim.
    `total` is told, before the first frame, about how many frames to expect (None: unknown).
    The source's audio streams travel as copies of their packets (`audio=False`: dropped)."""
    _parity_bytes(fec_pct)  # a bad --fec fails before the input is read
    with VideoSource(src, seek=seek, limit=frames, threads=threads, audio=audio) as source:
        if total:
            total(source.expected_frames)
        return encode_frames(source.frames(), source.header_rate, dst, quality=quality, bitrate=bitrate,
                             model=model, device=device, overwrite=overwrite, segment_frames=segment_frames,
                             batch=batch, progress=progress, name=source.name, source=source,
                             threads=Threads(threads), fec_pct=fec_pct)


def encode_frames(frames: Iterable[Frame], fps: Fraction, dst: Path | str, *, quality: int = DEFAULT_QUALITY,
                  bitrate: float | None = None, model: Path | CodecModel | None = None, device: str = "auto",
                  overwrite: bool = False, segment_frames: int = DEFAULT_SEGMENT_FRAMES, batch: int = DEFAULT_BATCH,
                  progress: Progress | None = None, name: str = "input", source: VideoSource | None = None,
                  threads: Threads | None = None, fec_pct: int = 0) -> EncodeReport:
    """Encode a stream of frames (all of one size) into a .vqv file, segment by segment.

    With `bitrate` (kbit/s) instead of a fixed quality, each segment gets the quality that comes
    nearest its share of the budget plus what earlier segments saved or overspent.  With a
    `source`, its colour tags and the rate its timestamps show go into the header (`fps` is the
    first guess, used for the rate control until then).  A file that cannot seek back (a pipe)
    gets a streamed header and a trailer (bitstream.py).  `fec_pct` > 0 adds about that much
    Reed-Solomon parity (fec.py) and a copy of the header at the end."""
    t0 = time.time()
    nsym = _parity_bytes(fec_pct)
    device = resolve_device(device)
    if bitrate is not None and not 1 <= bitrate <= 10_000_000:
        raise VqvError(f"--bitrate must be from 1 to 10000000 kbit/s, got {bitrate:g}")
    stages_for_quality(quality, 1)  # a bad --quality fails before the model loads
    cm = model if isinstance(model, CodecModel) else load_model(model, device)
    stages = (max(stages_for_quality(q, cm.config.stages) for q in range(1, len(QUALITY_LEVELS) + 1))
              if bitrate is not None else stages_for_quality(quality, cm.config.stages))
    T = cm.config.frames
    if not T <= segment_frames <= bs.MAX_SEGMENT_FRAMES:
        raise VqvError(f"--segment must be from {T} to {bs.MAX_SEGMENT_FRAMES} frames, got {segment_frames}")
    segment_frames = segment_frames // T * T
    coder = SegmentCoder(cm, device, batch)
    coder.per_group = nsym > 0  # with FEC, a stream per group: a damaged segment keeps its groups before the damage
    total, est_bits, carry, audio_total = 0, 0.0, 0.0, 0
    qualities: list[int] = []
    header: bs.Header | None = None
    with open_output(dst, overwrite) as (raw, seekable):
        out = _Chunks(raw, nsym, fec_pct)
        for chunk in _chunks(frames, segment_frames):
            if header is None:
                header = bs.Header(cm.fingerprint, chunk[0].width, chunk[0].height, Fraction(fps), 0,
                                   0 if bitrate is not None else quality, stages, T, segment_frames, cm.config.patch,
                                   0, bitrate=0 if bitrate is None else max(1, round(bitrate)),
                                   colour=source.colour if source else bs.Header.colour, streamed=not seekable,
                                   audio_streams=len(source.audio_descriptions) if source else 0, fec=nsym)
                out.header(header.pack())
                for number, description in enumerate(source.audio_descriptions if source else []):
                    out.write(bs.AudioStream(number, description).pack())
            if any(f.width != header.width or f.height != header.height for f in chunk):
                raise InputError(f"{name}: frame size changes inside the video; not supported")
            if threads:
                threads.update()
            if source is not None:  # the audio that starts before this segment ends goes first
                audio_total += _write_audio(out, source.take_audio((total + len(chunk)) / source.timing()[0]))
            if bitrate is None:
                seg_quality = quality
                payload, bits = coder.encode(chunk, quality, progress)
            else:
                share = bitrate * 1000 * len(chunk) / float(fps)
                budget = share + carry - 8 * (bs.SEGMENT_HEADER_SIZE + (bs.HEADER_SIZE if header.segments == 0 else 0))
                seg_quality, payload, bits = coder.encode_for_budget(chunk, budget,
                                                                     qualities[-1] if qualities else quality)
                carry = max(-share, min(share, budget - 8 * len(payload)))  # saved (+) or overspent (-)
                if progress:
                    progress(len(chunk))
            qualities.append(seg_quality)
            est_bits += bits
            out.write(bs.Segment(header.segments, total, len(chunk), payload, seg_quality,
                                 stages_for_quality(seg_quality, cm.config.stages)).pack(),
                      overhead=fec.GROUP_OVERHEAD * -(-len(chunk) // T) if nsym else 0)
            header.segments += 1
            total += len(chunk)
        if header is None:
            raise InputError(f"{name}: no frames could be decoded")
        notes = []
        if source is not None:
            header.fps, warning = source.timing()
            fps = header.fps
            notes += source.notes + ([warning] if warning else [])
            # the rest of the audio: all of it, or up to the video's end when --frames cut it short
            audio_total += _write_audio(out, source.take_audio(total / fps if source.limit else None))
        header.frames = total
        out.close_window()
        header.header_copy = out.copy_fits()
        if header.header_copy:  # the header's copy (with its final counts) ends the file, before a trailer
            out.write(replace(header, streamed=False).pack(), protect=False)
        if seekable:
            raw.seek(0)
            raw.write(header.pack())
            raw.seek(0, os.SEEK_END)
        else:
            out.write(header.pack_trailer(), protect=False)
        size = out.size
    return EncodeReport(total, header.width, header.height, float(fps), size, time.time() - t0, quality, est_bits,
                        qualities, bitrate, notes, header.audio_streams, audio_total)


def _parity_bytes(pct: int) -> int:
    """fec.parity_bytes for --fec PCT, a bad value as the user's error."""
    try:
        return fec.parity_bytes(pct)
    except ValueError as exc:
        raise VqvError(str(exc)) from None


def _write_audio(out: "_Chunks", packets: list[tuple[int, int, int, bytes]]) -> int:
    return sum(out.write(bs.AudioPacket(*p).pack()) for p in packets)


class _Chunks:
    """Writes the file's chunks, counting bytes; with FEC, follows each window of about
    fec.window_target bytes with its parity chunk, its parity cut where the window is small so
    that the file grows by at most pct + 0.5 % (fec.window_parity)."""

    def __init__(self, out, nsym: int, pct: int = 0):
        self.out, self.nsym, self.pct, self.size = out, nsym, pct, 0
        self.window, self.start = bytearray(), 0
        self.overhead = 0  # what FEC's group streams added to the open window
        self.added = 0  # what FEC added to the file so far

    def header(self, data: bytes) -> None:
        self.size += self.out.write(data)
        self.start = self.first_window = self.size

    def write(self, data: bytes, protect: bool = True, overhead: int = 0) -> int:
        """`overhead`: of these bytes, what FEC's group streams added."""
        self.size += self.out.write(data)
        if self.nsym and protect:
            self.window += data
            self.overhead += overhead
            self.added += overhead
            if len(self.window) >= fec.window_target(self.nsym):
                self.close_window(last=False)
        return len(data)

    def close_window(self, last: bool = True) -> None:
        if self.nsym and self.window:
            # a file of one window (a small one) keeps room for the header's copy in it
            alone = last and self.start == self.first_window
            n = fec.window_parity(self.nsym, len(self.window) + (bs.HEADER_SIZE if alone else 0), self.pct,
                                  self.overhead + (bs.HEADER_SIZE if alone else 0))
            if n:
                written = self.out.write(fec.protect(bytes(self.window), self.start, n).pack())
                self.size += written
                self.added += written
            self.window, self.overhead = bytearray(), 0
        self.start = self.size

    def copy_fits(self) -> bool:
        """Whether the header's copy keeps what FEC added within pct + 0.5 % of the file without it."""
        return bool(self.nsym) and self.added + bs.HEADER_SIZE <= (self.pct + 0.5) / 100 * (self.size - self.added)


FIT_SIDE = (368, 640)  # table fitting looks at centre crops of at most this size (statistics, not pictures)


def fit_model_tables(net, paths: list[Path], *, frames: int = 32, segment_frames: int = DEFAULT_SEGMENT_FRAMES,
                     device: str = "cpu", rounds: int = 2):
    """Freeze the context model of a trained network.  The first `frames` frames of each clip
    (centre crops) are coded segment by segment exactly as encode codes them, at every quality;
    the symbols are counted in their contexts and the counts quantised to integer tables.  The
    mode decisions weigh rates from the tables, so each further round refits on the decisions
    the previous round's tables lead to.  Returns the tables (index, mode, vector, coefficient,
    static flag)."""
    from .tablefit import count_symbols, fit_tables, new_counts

    clips = [[centre_crop(f, *FIT_SIDE) for f in read_frames(Path(p), limit=frames)] for p in paths]
    cm = CodecModel(net, None, b"")
    depth = max(stages_for_quality(q, net.config.stages) for q in range(1, len(QUALITY_LEVELS) + 1))
    tables = None
    for _ in range(rounds):
        coder = SegmentCoder(cm, device)
        counts = new_counts(depth, net.config.codes, len(QUALITY_LEVELS), net.config.dim)
        for clip in clips:
            for chunk in _chunks(clip, segment_frames):
                groups = coder.analysed(chunk)
                for quality in range(1, len(QUALITY_LEVELS) + 1):
                    counts = count_symbols(coder.decide(groups(quality), quality, coder.grid(chunk)),
                                           net.config.codes, counts)
        tables = fit_tables(counts)
        cm = CodecModel(net, tables, b"")
    return tables

