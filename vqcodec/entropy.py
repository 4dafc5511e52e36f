"""Context model and entropy coder: integer probability tables + constriction's range coder.

A segment is a sequence of temporal groups; each group is a grid of h x w tokens.  The first
group is *fresh*: it is coded from nothing before it, in FRESH_PASSES passes over its tokens
(i, j), coarse to fine (first_passes): pass 0 the tokens with i and j multiples of 8, all INTRA;
then, for r = 4, 2, 1, a pass of the tokens between two known ones r to their left and right,
then one of the tokens between two known ones r above and below.  A token after pass 0 has a
*mode* (below) and its prediction is the mean of the latents of those two neighbours
(first_neighbours).  Every later group starts with a *static* flag: 1 when the
whole group is unchanged (every token SKIP, every block still), and then nothing else is coded for
it; 0 otherwise, and then a *refresh* flag: 1 when the group is fresh, coded exactly as a
segment's first group, every context afresh (a scene cut); 0 otherwise, and then each block of
BLOCK x BLOCK tokens has a motion vector and a *skip flag* (1: every token of the block is
SKIP), and each token of a block that does not skip has a *mode*:
  INTRA (0): coded afresh: its D residual-VQ indices, then the scalar coefficients of what
             those stages leave (quantizer.tube_basis, quantizer.scalar_quantise);
  SKIP  (1): nothing more: the token keeps its prediction;
  INTER (2): the scalar coefficients of the change from its prediction.
In a later group, the prediction is the previous group's latent of the token where its block
stands still, and the latent of the motion-compensated previous frames where it moves: each
later group carries a motion vector per block of tokens (motion.py); in a segment at quality
COARSE_VECTORS or below, a *grid* flag first says whether they come one per block (0) or one per
cell of 2 x 2 blocks (1, the *coarse grid*: every block of a cell takes the cell's vector; the
vectors are then coded exactly as below, on the grid of cells).  A later group's INTRA token
outside near pass 0 (the tokens with i and j even; near_passes) then has a *near mode*, for what
the previous group does not predict (new content, uncovered background): 0 it stays INTRA;
1 NEAR_SKIP, its latent is the mean of its two neighbours' (as in a fresh group's finest level:
left and right in near pass 1, above and below in near pass 2, tokens of near pass 0, earlier
passes or not INTRA, all decoded before it); 2 NEAR_INTER,
that mean plus the coded change (coefficients as INTER).  Which vectors and modes the tokens take is the
encoder's choice (codec.py); the decoder only reads them.

Contexts (all discrete, all from data the decoder already has):
  - the static flag: 0 when the previous group was static, 1 when it was not, 2 when it is the
    segment's first or a refresh ("the segment's first" below includes a refresh); the refresh
    flag: FLAG_REFRESH; the grid flag: one context of its own, a fixed table (GRID_WEIGHTS);
  - vectors, in two checkerboard passes over the blocks (A: (i + j) even, then B): each is coded
    as its two components' differences from its prediction, vertical components first.  Pass A
    is predicted by the same block's vector in the previous group (still in the segment's second
    group), context 0 when that block stood still, 1 when it moved, 2 when the previous group is
    the segment's first (it has no vectors); pass B by the median of its pass-A neighbours' and
    that temporal prediction (mv_neighbours), context MV_B + 3 * (distinct neighbour vectors,
    1 / 2 / 3+, less one) + (none / some / all of the neighbours still); then each pass's
    horizontal components, context MV_Y_CONTEXTS + 2 * (the vertical context) + (vertical
    difference non-zero);
  - block skip flags: FLAG_BLOCK + 11 * (the block's vector moves) + the number of blocks that
    did not skip in the 3x3 neighbourhood of the previous group's (0..9; 10 when the previous
    group is the segment's first);
  - modes of the tokens of blocks that do not skip, in two checkerboard passes so that both
    stay one call per table:
      pass A (tokens with (i + j) even): the number of tokens that changed (mode other than
      SKIP) in the 3x3 neighbourhood of the previous group's mode map (0..9), or 10 when the
      previous group is the segment's first (it has no modes);
      pass B (the other tokens): 11 + 3 * (changed 4-neighbours in the current group, all from
      pass A, 0..4) + (the co-located previous mode: 0 skip, 1 changed, 2 none: first group).
  - modes in a fresh group: the finest level's left-right pass MODE_SPATIAL, its above-below
    pass MODE_SPATIAL + 1 + how many of its two neighbours are not intra (0..2); each coarser
    level's likewise from MODE_COARSE + 4 x (levels above the finest, less one);
  - near modes in a later group: MODE_NEAR + 3 * (near pass - 1) + how many of its two
    neighbours did not code INTRA as their mode (0..2);
  - VQ indices in later groups: (stage, the index at the same stage and place in the last group
    that coded that token intra);
  - VQ indices of the intra tokens of a fresh group, pass by pass: pass 0 context (stage, K =
    "no neighbour"); later passes (stage, K + 1 + the index at the same stage of its first
    neighbour: the left one in a left-right pass, the one above in an above-below pass), where
    a neighbour that is not intra stands for its own first neighbour's index (first_refs);  that index also keys the
    token's indices in the later groups until it codes intra;
  - coefficients: (the group's quality (group_quality), position in coding order, kind: 0 intra /
    1 inter, context 4 * h + n) with h the token's history: how many non-zero coefficients it had
    the last time it was coded in this segment (0, 1-2, 3-7, 8 or more; 0 too when it was SKIP in
    a fresh group; 4 = never: in a fresh group), and n the number of non-zero coefficients at its
    earlier positions now (0, 1, 2-3, 4 or more); times NEAR_LEVELS, plus its neighbours' part
    (near_a, near_b): coefficients are coded position by position, at each position the tokens of
    pass A ((i + j) even) before those of pass B, so a pass-A token is keyed by its four
    neighbours' non-zeros at earlier positions, a pass-B token by how many of its neighbours (all
    pass A) are non-zero at this very position.
A static region is skipped wholesale in contexts that predict "skip" with near certainty: it
costs a small fraction of a bit per token; a token's high frequencies, once its low ones are
zero, cost little more.

Tables are integer frequencies; every entry >= 1, every row sums to 2**PRECISION:
  ``tables`` int32 (D, 2K + 1, K) for indices (rows: K temporal contexts, "none", K spatial),
  ``mode_tables`` int32 (MODE_CONTEXTS, 3) for modes,
  ``mv_tables`` int32 (MV_CONTEXTS, MV_SYMBOLS) for vector components, ``coef_tables`` int32
  (qualities, P, KINDS, COEF_CONTEXTS, COEF_SYMBOLS) for coefficients (symbol = value + COEF_MAX),
  ``flag_tables`` int32 (FLAG_CONTEXTS, 2) for the static flags (rows 0..2), the refresh flag
  (row FLAG_REFRESH) and the block skip flags (rows FLAG_BLOCK..).
They are fitted after training (tablefit.fit_tables) and stored in the model file, so the encoder
and the decoder use the same integers on every device: the row ``freq / 2**16`` is exact in
float64, and constriction quantises it deterministically.

A segment's stream opens with its output filter (postfilter.py): one flag per class, then the
integers of the classes that are on, two calls with fixed tables (FILTER_*_WEIGHTS, part of the
format, not fitted, not adapted).

Coding order inside a fresh group: its modes pass by pass, each pass's grouped by context, its
indices pass by pass (grouped by key = stage * (2K + 1) + context, ascending), then its
coefficients as below.  Inside a later group: its static flag, then (when 0) its refresh flag
(when 1, the rest is a fresh group's), then (when 0) its grid flag (only at quality
COARSE_VECTORS or below), then pass A's vertical vector components grouped
by context (ascending), its horizontal ones likewise, pass B's vertical and horizontal ones
likewise, the block skip flags likewise, pass-A
modes likewise, pass-B modes likewise, near modes likewise, the indices grouped by key = stage * (2K + 1) + context
(ascending), then the coefficients position by position (each position's pass-A tokens' grouped
by kind, then context, then its pass-B tokens' likewise), raster order inside every group of symbols.  Each group of symbols sharing a table is
one constriction call, never a Python loop per symbol.  All groups of a segment share one
range-coder stream.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import constriction

from . import postfilter
from .motion import BLOCK, RANGE, SIDE, ZERO, cell_shape, cells, spread

# A segment codes its first group at its own quality and every group after it (a refresh too) at
# the next quality down (format 11): the step 1.5x coarser and that quality's coefficient tables.
# Every later group is predicted, directly or not, from the first, so bits spent there go further
# (as the QP offsets of the P frames after an I frame do in classic codecs); a refresh coded at the
# segment's quality measured worse (BENCHMARKS.md).
LATER_QUALITY_DROP = 1


def group_quality(quality: int, first: bool) -> int:
    """The quality whose step and coefficient tables a group of a segment at `quality` codes with
    (`first`: the segment's first group)."""
    return quality if first else max(quality - LATER_QUALITY_DROP, 1)


# A later group of a segment coded at quality COARSE_VECTORS or below carries a grid flag and may
# send its vectors on the coarse grid (motion.CELL: one per 2 x 2 blocks): at coarse steps the
# vectors are a third of a panning clip's bits.
COARSE_VECTORS = 3


def coarse_vectors(quality: int) -> bool:
    """Whether the later groups of a segment at `quality` carry a grid flag (their vectors may
    then come on the coarse grid)."""
    return quality <= COARSE_VECTORS


PRECISION = 16
INTRA, SKIP, INTER = 0, 1, 2
MODES = 3
MODE_FIRST = 10        # pass-A context when the previous group has no modes
MODE_B = 11            # first pass-B context
FRESH_LEVELS = 3                     # a fresh group's levels of spatial prediction, coarse to fine
FRESH_PASSES = 2 * FRESH_LEVELS + 1  # its passes over its tokens (first_passes)
NEAR_MODE_LEVELS = 1                 # the levels of a later group's near modes (near_passes)
NEAR_PASSES = 2 * NEAR_MODE_LEVELS + 1
MODE_SPATIAL = 26      # a fresh group's finest across pass; its down pass: MODE_SPATIAL + 1 + changed neighbours
MODE_NEAR = 30         # a later group's near modes: MODE_NEAR + (0 in near pass 1, 3 in near pass 2) + neighbours not INTRA
MODE_COARSE = MODE_NEAR + 6  # a fresh group's coarser levels' modes, 4 contexts per level (fresh_mode_contexts)
MODE_CONTEXTS = MODE_COARSE + 4 * (FRESH_LEVELS - 1)
# a later group's INTRA token outside near pass 0 may instead be predicted from its two neighbours, as in a
# fresh group: NEAR_SKIP keeps their mean, NEAR_INTER codes its change from it (Symbols.modes values;
# coded as INTRA, then a near mode 0 intra / 1 near skip / 2 near inter)
NEAR_SKIP, NEAR_INTER = 3, 4
MV_B = 3               # vertical components of pass A: the co-located previous vector still / moved / none;
MV_Y_CONTEXTS = MV_B + 9  # of pass B: its neighbours' distinct vectors (1 / 2 / 3+) x how many stand still (none / some / all)
MV_CONTEXTS = 3 * MV_Y_CONTEXTS  # then the horizontal ones, 2 per vertical context
MV_MAX = 2 * RANGE     # a component differs from its prediction by at most this much
MV_SYMBOLS = 2 * MV_MAX + 1
FLAG_REFRESH = 3       # the refresh flag's context (0..2: the static flag's)
FLAG_BLOCK = 4         # first block-flag context
FLAG_CONTEXTS = FLAG_BLOCK + 22
COEF_MAX = 24          # coefficients are integers in [-COEF_MAX, COEF_MAX]
COEF_SYMBOLS = 2 * COEF_MAX + 1
KINDS = 2              # coefficients of an intra token (0) or of an inter change (1)
NNZ_BUCKET = np.array([0, 1, 2, 2, 3])  # non-zeros so far (capped at 4) -> context
HISTORY_EDGES = (1, 3, 8)                # a token's last non-zero count -> history 0..3
NEVER = len(HISTORY_EDGES) + 1         # history of a token not coded yet in the segment: 4
COEF_OWN = 4 * (NEVER + 1)             # contexts from the token itself: history x non-zeros so far
NEAR_LEVELS = 6                        # and from its neighbours (near_a, near_b)
AROUND_BUCKET = np.array([0, 1, 1, 2])  # the neighbours' non-zeros at earlier positions (capped at 3) -> 0..2
COEF_CONTEXTS = COEF_OWN * NEAR_LEVELS
# Adaptation inside a segment: a row's distribution for a group mixes the table's row, weighted as
# ADAPT_PRIOR symbols, with the counts of the symbols coded in that context in the segment's
# earlier groups; a row whose count passes ADAPT_LIMIT has its counts halved (rounding up), so
# recent groups weigh more.  Integers throughout: every device forms the same rows.
ADAPT_PRIOR = 128
ADAPT_LIMIT = 1024


def _fixed_row(weights: np.ndarray) -> np.ndarray:
    """Integer weights -> a row of integers >= 1 summing to 2**PRECISION (as adapted_rows rounds)."""
    return adapted_rows(weights[None].astype(np.int64), np.zeros((1, len(weights)), dtype=np.int64))[0]


# The output filter's integers (postfilter.py), in fixed tables of the format (not fitted): a class's
# flag (on / off), one bit each; its weights and bias v in -WEIGHT_MAX..WEIGHT_MAX (symbol
# v + WEIGHT_MAX), about an Exp-Golomb code of order 3: 2 j + 4 bits, plus a sign bit for v != 0,
# where j = floor(log2(|v| / 8 + 1)).
_v = np.abs(np.arange(-postfilter.WEIGHT_MAX, postfilter.WEIGHT_MAX + 1))
_j = np.floor(np.log2(_v // 8 + 1)).astype(np.int64)
FILTER_TABLE_WEIGHTS = np.where(_v == 0, 1 << 12, 1 << (11 - 2 * _j))
FILTER_FLAG_WEIGHTS = np.array([1, 1])
# A later group's grid flag (coarse_vectors), one context, fixed (adapted within a segment as
# every context is): 0 its vectors on the block grid, 1 on the coarse grid.
GRID_WEIGHTS = np.array([1, 1])


@dataclass
class Symbols:
    """What the encoder chose for one segment, at one quality (1-based):
    indices (G, D, h, w): each intra token's VQ indices (the other tokens' are ignored);
    modes (G, h, w): each token's mode;  vectors (G, Hb, Wb): each block's (fresh groups' ignored);
    coefs (G, h, w, P): each intra or inter token's coefficients (SKIP tokens' are ignored);
    fresh (G,): True for the groups coded as a segment's first (the first, and refreshes; None:
    the first only), whose pass-1 tokens are INTRA whatever `modes` says and whose vectors are ignored;
    filter: the output filter's integers, per plane (classes, width) (postfilter.py; None: off);
    grids (G,): True for the later groups whose vectors are coded on the coarse grid (uniform over
    each cell of 2 x 2 blocks; only where coarse_vectors(quality); None: none)."""
    indices: np.ndarray
    modes: np.ndarray
    vectors: np.ndarray
    coefs: np.ndarray
    quality: int
    fresh: np.ndarray | None = None
    filter: tuple | None = None
    grids: np.ndarray | None = None

    def __post_init__(self):
        if self.fresh is None:
            self.fresh = np.arange(len(self.indices)) == 0
        self.fresh = np.asarray(self.fresh, dtype=bool)
        if self.grids is None:
            self.grids = np.zeros(len(self.indices), dtype=bool)
        self.grids = np.asarray(self.grids, dtype=bool)
        if len(self.fresh) and not self.fresh[0]:
            raise ValueError("a segment's first group is always fresh")

    def groups(self, a: int, b: int) -> "Symbols":
        """Groups a..b-1 as a segment of their own (group a becomes its first, so, from a > 0, its
        coefficients are read at the segment's quality rather than the one below: group_quality)."""
        fresh = self.fresh[a:b].copy()
        fresh[:1] = True
        return Symbols(self.indices[a:b], self.modes[a:b], self.vectors[a:b], self.coefs[a:b], self.quality, fresh,
                       grids=self.grids[a:b])


def history(coefs: np.ndarray) -> np.ndarray:
    """(.., P) coefficients of coded tokens -> their history bucket for later groups."""
    return np.searchsorted(HISTORY_EDGES, (coefs != 0).sum(-1), side="right")


def coef_context(hist: np.ndarray, before: np.ndarray, near: np.ndarray | int = 0) -> np.ndarray:
    """A coefficient's context from its token's history, the non-zeros at its earlier positions
    and its neighbours' (near_a, near_b)."""
    return (4 * hist + NNZ_BUCKET[np.minimum(before, 4)]) * NEAR_LEVELS + near


# The neighbours' part of a coefficient's context.  Coefficients are coded position by position,
# at each position the tokens of pass A ((i + j) even) before those of pass B, so a token knows its
# four neighbours' coefficients at its earlier positions and, in pass B, its neighbours' (all of
# pass A) at this one.
def near_a(around_before: np.ndarray) -> np.ndarray:
    """Pass A: 0, 1 or 2 as its neighbours have no, 1-2 or 3 or more non-zeros at earlier positions."""
    return AROUND_BUCKET[np.minimum(around_before, 3)]


def near_b(around_here: np.ndarray) -> np.ndarray:
    """Pass B: 3 + how many of its neighbours are non-zero at this position (0, 1, 2 or more)."""
    return 3 + np.minimum(around_here, 2)


def coef_contexts(coefs: np.ndarray, kinds: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """A group's coefficients (h, w, P), kinds (h, w) (< 0: the token codes none) and histories
    (h, w) -> the contexts (N, P) of the N coding tokens' coefficients (raster order), as the
    decoder forms them."""
    h, w = kinds.shape
    sel = kinds >= 0
    odd = parity(h, w)
    nz = (coefs != 0) & sel[..., None]
    before = np.cumsum(nz, -1, dtype=np.int16) - nz
    near = np.where(odd[sel][:, None], near_b(_neighbours4(nz & ~odd[..., None])[sel]),
                    near_a(_neighbours4(before)[sel]))
    return coef_context(hist[sel][:, None], before[sel], near)


def coef_keys(kinds: np.ndarray, contexts: np.ndarray, position: np.ndarray | int | None = None) -> np.ndarray:
    """(N,) kinds, (N, P) contexts -> (N, P) keys inside a quality: position-major; or, with a
    `position`, (N,) kinds and contexts at that position -> (N,) keys."""
    if position is None:
        position, kinds = np.arange(contexts.shape[1])[None, :], kinds[:, None]
    return (position * KINDS + kinds) * COEF_CONTEXTS + contexts


def _neighbours3(m: np.ndarray) -> np.ndarray:
    """Number of set cells in each cell's 3x3 neighbourhood (itself included), zero-padded."""
    p = np.pad(m.astype(np.int8), 1)
    h, w = m.shape
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3))


def _neighbours4(m: np.ndarray) -> np.ndarray:
    """Sum of each cell's four neighbours (zero outside) over the first two axes of m (h, w, ...)."""
    p = np.pad(m.astype(np.int16 if m.dtype == bool else m.dtype), [(1, 1), (1, 1)] + [(0, 0)] * (m.ndim - 2))
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _frozen(a: np.ndarray) -> np.ndarray:
    """a, read-only: the layouts below are cached per picture size and shared by every caller."""
    a.flags.writeable = False
    return a


@lru_cache(maxsize=16)
def parity(h: int, w: int) -> np.ndarray:
    """True where a token belongs to pass B ((i + j) odd)."""
    return _frozen((np.add.outer(np.arange(h), np.arange(w)) & 1).astype(bool))


def mode_contexts_a(prev_moved: np.ndarray | None, h: int, w: int) -> np.ndarray:
    """prev_moved: the previous group's changed (not SKIP) map, or None after the first group."""
    if prev_moved is None:
        return np.full((h, w), MODE_FIRST, dtype=np.int64)
    return _neighbours3(prev_moved).astype(np.int64)


def mode_contexts_b(moved_a: np.ndarray, prev_moved: np.ndarray | None) -> np.ndarray:
    """moved_a: the current changed (not SKIP) map with the pass-B places still False."""
    prev = np.full(moved_a.shape, 2, dtype=np.int64) if prev_moved is None else prev_moved.astype(np.int64)
    return MODE_B + 3 * _neighbours4(moved_a).astype(np.int64) + prev


def skipped_blocks(modes: np.ndarray) -> np.ndarray:
    """(h, w) token modes -> (Hb, Wb) True where every token of the block skips."""
    h, w = modes.shape
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    m = np.pad(modes != SKIP, ((0, hb * BLOCK - h), (0, wb * BLOCK - w)))
    return ~m.reshape(hb, BLOCK, wb, BLOCK).any((1, 3))


def block_tokens(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    """(Hb, Wb) per-block values -> (h, w) per token."""
    return blocks.repeat(BLOCK, 0).repeat(BLOCK, 1)[:h, :w]


def block_contexts(prev_changed: np.ndarray | None, mv: np.ndarray) -> np.ndarray:
    """Each block's skip-flag context: FLAG_BLOCK + 11 x (its vector moves) + the number of
    blocks that did not skip in the previous group's 3x3 neighbourhood (0..9), or 10 when the
    previous group is the segment's first."""
    n = np.full(mv.shape, 10, dtype=np.int64) if prev_changed is None else _neighbours3(prev_changed).astype(np.int64)
    return FLAG_BLOCK + 11 * (mv != ZERO).astype(np.int64) + n


def index_rows(codes: int) -> int:
    """Context rows per stage of the index tables: K temporal, "none", K spatial."""
    return 2 * codes + 1


@lru_cache(maxsize=16)
def _pass_grid(h: int, w: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(pass, reach) (h, w) of each token of a `levels`-level layout: pass 0 the tokens (i, j) with
    i and j multiples of 2**levels; then level by level, coarse to fine, with r = 2**(levels - 1)
    .. 1: the tokens with i a multiple of 2r and j an odd multiple of r (their left and right
    neighbours r tokens away known), then those with i an odd multiple of r and j a multiple of r
    (above and below); reach: that r (0 in pass 0)."""
    i, j = np.arange(h)[:, None], np.arange(w)[None, :]
    passes = np.zeros((h, w), dtype=np.int64)
    reach = np.zeros((h, w), dtype=np.int64)
    for n in range(levels):
        r = 1 << (levels - 1 - n)
        across = (i % (2 * r) == 0) & (j % (2 * r) == r)
        down = (i % (2 * r) == r) & (j % r == 0)
        passes = np.where(across, 1 + 2 * n, np.where(down, 2 + 2 * n, passes))
        reach = np.where(across | down, r, reach)
    return _frozen(passes), _frozen(reach)


def first_passes(h: int, w: int) -> np.ndarray:
    """(h, w) pass (0 .. FRESH_PASSES - 1) of each token of a fresh group, coarse to fine: pass 0
    the tokens (i, j) with i and j multiples of 2**FRESH_LEVELS; then, level by level, a pass of
    tokens predicted from their left and right neighbours r tokens away, then one from the
    tokens r above and below (r = 2**(FRESH_LEVELS - 1) .. 2, 1; _pass_grid).  With three
    levels: 0 (8i, 8j); 1 (8i, 8j + 4); 2 (8i + 4, 4j); 3 (4i, 4j + 2); 4 (4i + 2, 2j);
    5 (2i, 2j + 1); 6 (2i + 1, j)."""
    return _pass_grid(h, w, FRESH_LEVELS)[0]


def near_passes(h: int, w: int) -> np.ndarray:
    """(h, w) pass (0 .. NEAR_PASSES - 1) of each token of a later group for its near mode
    (near_places): the layout of first_passes with NEAR_MODE_LEVELS levels (one: the (even, even)
    tokens, which code no near mode, then the rest of the even rows, then the odd rows)."""
    return _pass_grid(h, w, NEAR_MODE_LEVELS)[0]


@lru_cache(maxsize=16)
def _pass_neighbours(h: int, w: int, levels: int) -> np.ndarray:
    """(2, h, w) raster positions of the two neighbours each token of a `levels`-level layout
    (_pass_grid) is predicted from, both of earlier passes: in pass 0 itself (no prediction); in
    an odd pass the tokens `reach` to its left and right, in an even one `reach` above and below.
    Where the second lies outside the picture, the first stands for it."""
    p, reach = _pass_grid(h, w, levels)
    across, down = p % 2 == 1, (p % 2 == 0) & (p > 0)
    i, j = np.arange(h)[:, None], np.arange(w)[None, :]
    right = np.where(j + reach < w, j + reach, j - reach)
    below = np.where(i + reach < h, i + reach, i - reach)
    a = np.select([across, down], [i * w + j - reach, (i - reach) * w + j], i * w + j)
    b = np.select([across, down], [i * w + right, below * w + j], i * w + j)
    return _frozen(np.stack([a, b]))


def first_neighbours(h: int, w: int) -> np.ndarray:
    """(2, h, w) the two neighbours a fresh group's token is predicted from (_pass_neighbours)."""
    return _pass_neighbours(h, w, FRESH_LEVELS)


def near_neighbours(h: int, w: int) -> np.ndarray:
    """(2, h, w) the two neighbours a later group's near token is predicted from (near_passes):
    left and right in near pass 1, above and below in near pass 2."""
    return _pass_neighbours(h, w, NEAR_MODE_LEVELS)


def fresh_modes(modes: np.ndarray) -> np.ndarray:
    """A fresh group's (h, w) modes as coded: pass-0 tokens INTRA."""
    return np.where(first_passes(*modes.shape) == 0, INTRA, modes).astype(np.int64)


def fresh_mode_contexts(modes: np.ndarray) -> np.ndarray:
    """(h, w) mode contexts of a fresh group's tokens (pass 0, which codes no mode: MODE_SPATIAL):
    the finest level's left-right pass MODE_SPATIAL, its above-below pass MODE_SPATIAL + 1 + how
    many of its two neighbours did not code intra (0..2); each coarser level likewise from
    MODE_COARSE + 4 x (levels from the finest, less one)."""
    h, w = modes.shape
    changed = (fresh_modes(modes) != INTRA).reshape(-1)
    a, b = first_neighbours(h, w)
    p = first_passes(h, w)
    above = FRESH_LEVELS - 1 - (p - 1) // 2  # levels above the finest
    base = np.where(above == 0, MODE_SPATIAL, MODE_COARSE + 4 * (above - 1))
    return np.where(p == 0, MODE_SPATIAL, base + (p % 2 == 0) * (1 + changed[a] + changed[b]))


def first_refs(g: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """(D, h, w) the index each token of a fresh group stands for: its own where it codes intra,
    else its first neighbour's (itself pass 0, or standing for one).  Reads only the indices of
    intra tokens, and each pass's only from the passes before it."""
    D, h, w = g.shape
    m, passes = fresh_modes(modes).reshape(-1), first_passes(h, w).reshape(-1)
    a = first_neighbours(h, w)[0].reshape(-1)
    ref = g.reshape(D, -1).copy()
    for p in range(1, FRESH_PASSES):
        sel = np.flatnonzero((passes == p) & (m != INTRA))
        ref[:, sel] = ref[:, a[sel]]
    return ref.reshape(D, h, w)


def first_index_keys(g: np.ndarray, modes: np.ndarray, codes: int, upto: int = FRESH_PASSES - 1) -> np.ndarray:
    """Keys of a fresh group's index slots (D, h, w) from its indices g and modes (only the
    indices of passes before each slot's are read): pass 0 context "none"; later passes the
    first neighbour's index (first_refs).  Slots of tokens that are not intra, or of passes
    after `upto`, get -1."""
    D, h, w = g.shape
    passes = first_passes(h, w)
    a = first_neighbours(h, w)[0]
    ref = first_refs(g, modes).reshape(D, -1)[:, a]
    rows = np.where(passes == 0, codes, codes + 1 + ref)
    keys = np.arange(D, dtype=np.int64)[:, None, None] * index_rows(codes) + rows
    return np.where(((passes <= upto) & (fresh_modes(modes) == INTRA))[None], keys, -1)


def main_modes(modes: np.ndarray) -> np.ndarray:
    """A later group's (h, w) modes as its mode passes code them: NEAR_SKIP and NEAR_INTER as INTRA."""
    return np.where(modes >= NEAR_SKIP, INTRA, modes).astype(np.int64)


def near_places(modes: np.ndarray) -> np.ndarray:
    """(h, w) True where a later group's token codes a near mode: INTRA (as coded) outside near pass 0."""
    return (main_modes(modes) == INTRA) & (near_passes(*modes.shape) > 0)


def near_contexts(modes: np.ndarray) -> np.ndarray:
    """(h, w) near-mode contexts of a later group (from its modes as coded): MODE_NEAR + (0 in a
    left-right near pass, 3 in an above-below one) + how many of the token's two neighbours
    (near_neighbours) are not INTRA."""
    h, w = modes.shape
    other = (main_modes(modes) != INTRA).reshape(-1)
    a, b = near_neighbours(h, w)
    return MODE_NEAR + 3 * (near_passes(h, w) % 2 == 0) + other[a] + other[b]


NEAR_SYMBOL = np.array([0, 0, 0, 1, 2])  # a later group's mode -> its near-mode symbol
NEAR_MODE = np.array([INTRA, NEAR_SKIP, NEAR_INTER])


def index_keys(ref: np.ndarray, modes: np.ndarray, shape: tuple[int, int, int], codes: int) -> np.ndarray:
    """Key (stage * (2K + 1) + context) of every index slot (D, h, w) of a later group; slots of
    tokens that code no indices (SKIP and INTER) get -1.
    ref: each token's indices from the last group that coded it intra."""
    D = shape[0]
    base = np.arange(D, dtype=np.int64)[:, None, None] * index_rows(codes)
    return np.where((modes == INTRA)[None], base + ref[:D], -1)


def coef_kinds(modes: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) kind of each token's coefficients: 0 intra, 1 inter (INTER, NEAR_INTER), -1 none
    (SKIP, NEAR_SKIP)."""
    if modes is None:
        return np.zeros(shape, dtype=np.int64)
    return np.select([modes == INTRA, (modes == INTER) | (modes == NEAR_INTER)], [0, 1], -1).astype(np.int64)


def mv_contexts(prev_mv: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Each block's vertical-component context: 0 when the block of the previous group stood
    still, 1 when it moved, 2 when there is no previous vector (the segment's first group)."""
    if prev_mv is None:
        return np.full(shape, 2, dtype=np.int64)
    return (prev_mv != ZERO).astype(np.int64)


def mv_prediction(prev_mv: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each block's predicted vector (dy, dx): the same block's in the previous group (the still
    vector where there is none)."""
    if prev_mv is None:
        return np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    return prev_mv // SIDE - RANGE, prev_mv % SIDE - RANGE


def mv_x_contexts(ctx_y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Horizontal-component contexts: after the vertical ones, 2 per vertical context (whether the
    vertical component differed from its prediction)."""
    return MV_Y_CONTEXTS + 2 * ctx_y + (dy != 0)


def mv_pass_b(shape: tuple[int, int]) -> np.ndarray:
    """(Hb, Wb) True for the blocks of pass B ((i + j) odd), whose vectors are coded after those
    of pass A and predicted from them."""
    i, j = np.indices(shape)
    return (i + j) % 2 == 1


def mv_neighbours(mv: np.ndarray, py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass B's prediction from the vectors `mv` (Hb, Wb) of pass A (only those are read) and the
    temporal prediction (py, px): per block, each component's median of its (up to four) pass-A
    neighbours' and its temporal prediction's (the lower middle value's and the upper's mean,
    rounded down, when they are an even number), and its vertical-component context MV_B +
    3 x (distinct neighbour vectors, 1 / 2 / 3+, less one) + (none / some / all of them still).
    Only the pass-B blocks' values mean anything."""
    Hb, Wb = mv.shape
    big = np.iinfo(np.int64).max // 4
    pad = np.pad(mv.astype(np.int64), 1, constant_values=-1)
    near = np.stack([pad[1:-1, :-2], pad[1:-1, 2:], pad[:-2, 1:-1], pad[2:, 1:-1]])  # left, right, above, below
    valid = near >= 0
    n = valid.sum(0) + 1
    pred = []
    for comp, temporal in ((near // SIDE - RANGE, py), (near % SIDE - RANGE, px)):
        v = np.sort(np.concatenate([np.where(valid, comp, big), temporal[None]]), axis=0)
        lo = np.take_along_axis(v, ((n - 1) // 2)[None], 0)[0]
        hi = np.take_along_axis(v, (n // 2)[None], 0)[0]
        pred.append((lo + hi) // 2)
    distinct = valid[0].astype(np.int64)
    for k in range(1, 4):
        seen = np.zeros((Hb, Wb), dtype=bool)
        for j in range(k):
            seen |= valid[j] & (near[j] == near[k])
        distinct += valid[k] & ~seen
    still = (valid & (near == ZERO)).sum(0)
    zeros = np.where(still == 0, 0, np.where(still == n - 1, 2, 1))
    return pred[0], pred[1], MV_B + 3 * (np.clip(distinct, 1, 3) - 1) + zeros


def mv_symbols(mv: np.ndarray, prev_mv: np.ndarray | None) -> list[tuple]:
    """A group's vectors (Hb, Wb) -> the four ("mv", contexts, symbols) runs that code them: each
    component's difference from its prediction, pass A's vertical then horizontal components
    (predicted by the same block's previous vector), then pass B's (predicted by the median of
    their pass-A neighbours' and that, `mv_neighbours`)."""
    py, px = mv_prediction(prev_mv, mv.shape)
    ny, nx, kb = mv_neighbours(mv, py, px)
    b = mv_pass_b(mv.shape)
    a = ~b
    vy, vx = mv // SIDE - RANGE, mv % SIDE - RANGE
    ka = mv_contexts(prev_mv, mv.shape)[a]
    out = []
    for k, dy, dx in ((ka, (vy - py)[a], (vx - px)[a]), (kb[b], (vy - ny)[b], (vx - nx)[b])):
        out += [("mv", k, dy + MV_MAX), ("mv", mv_x_contexts(k, dy), dx + MV_MAX)]
    return out


def _walk(sym: Symbols, codes: int):
    """The encoder's view of a segment, group by group: (index keys (D, h, w), index passes
    (h, w), [(kind, keys, symbols)] of the vectors and modes (empty in the first group), indices,
    coefficient kinds (h, w), coefficient histories (h, w), coefficients (h, w, P))."""
    G, D, h, w = sym.indices.shape
    odd = parity(h, w)
    later = np.zeros((h, w), dtype=np.int64)  # a later group's indices: one pass
    ref = prev_moved = prev_mv = prev_changed = None
    prev_static = 2
    hist = np.full((h, w), NEVER, dtype=np.int64)
    for i, g in enumerate(sym.indices):
        flags = []
        m = sym.modes[i].astype(np.int64)
        if i:
            mv = sym.vectors[i].astype(np.int64)
            refresh = bool(sym.fresh[i])
            static = bool((m == SKIP).all() and (mv == ZERO).all()) and not refresh
            flags.append(("flag", np.array([prev_static]), np.array([int(static)])))
            prev_static = 0 if static else 1
            if static:
                yield np.full(g.shape, -1), later, flags, g, np.full((h, w), -1), hist, sym.coefs[i]
                prev_moved, prev_mv, prev_changed = m != SKIP, mv, np.zeros(mv.shape, dtype=bool)
                continue
            flags.append(("flag", np.array([FLAG_REFRESH]), np.array([int(refresh)])))
            if refresh:  # coded as a segment's first group, every context afresh
                ref = prev_moved = prev_mv = prev_changed = None
                hist = np.full((h, w), NEVER, dtype=np.int64)
                prev_static = 2
        if ref is None:
            m = fresh_modes(m)
            passes, ctx = first_passes(h, w), fresh_mode_contexts(m)
            side = [*flags, *(("mode", ctx[passes == p], m[passes == p]) for p in range(1, FRESH_PASSES))]
            kinds = coef_kinds(m, (h, w))
            yield first_index_keys(g, m, codes), passes, side, g, kinds, hist, sym.coefs[i]
            hist = np.where(kinds >= 0, history(sym.coefs[i]), 0)
            ref = first_refs(g, m)
            continue
        skip = skipped_blocks(m)
        coded = ~block_tokens(skip, h, w)
        moved_a = (m != SKIP) & ~odd
        mm, near = main_modes(m), near_places(m)
        if coarse_vectors(sym.quality):
            flags.append(("grid", np.zeros(1, dtype=np.int64), np.array([int(sym.grids[i])])))
        elif sym.grids[i]:
            raise ValueError(f"a segment above quality {COARSE_VECTORS} has no coarse grid")
        if sym.grids[i]:
            if not np.array_equal(spread(cells(mv), mv.shape), mv):
                raise ValueError("a coarse-grid group's vectors differ inside a cell")
            vectors = mv_symbols(cells(mv), None if prev_mv is None else cells(prev_mv))
        else:
            vectors = mv_symbols(mv, prev_mv)
        side = [*flags, *vectors,
                ("flag", block_contexts(prev_changed, mv).reshape(-1), skip.reshape(-1).astype(np.int64)),
                ("mode", mode_contexts_a(prev_moved, h, w)[~odd & coded], mm[~odd & coded]),
                ("mode", mode_contexts_b(moved_a, prev_moved)[odd & coded], mm[odd & coded]),
                ("mode", near_contexts(m)[near], NEAR_SYMBOL[m[near]])]
        kinds = coef_kinds(m, (h, w))
        yield index_keys(ref, m, g.shape, codes), later, side, g, kinds, hist, sym.coefs[i]
        hist = np.where(kinds >= 0, history(sym.coefs[i]), hist)
        intra = m == INTRA
        ref[:, intra] = g[:, intra]
        prev_moved, prev_mv, prev_changed = m != SKIP, mv, ~skip


def _runs(keys: np.ndarray):
    """Stable order of `keys` and its runs: (order, run keys, starts, ends)."""
    if keys.size and int(keys.max()) < 1 << 16:
        keys = keys.astype(np.uint16)  # numpy radix-sorts 16-bit keys: 3x faster than int64
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    cut = np.flatnonzero(sk[1:] != sk[:-1]) + 1
    starts = np.concatenate(([0], cut)).astype(np.int64)
    ends = np.concatenate((cut, [len(sk)])).astype(np.int64)
    return order, sk[starts].astype(np.int64) if len(sk) else sk.astype(np.int64), starts, ends


def adapted_rows(table_rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Integer rows (n, K) of a table (each summing to 2**PRECISION) and the symbol counts (n, K) of
    their contexts so far -> the rows to code with: ADAPT_PRIOR x table + 2**PRECISION x counts,
    quantised to integers >= 1 summing to 2**PRECISION (the remainder on the first largest entry).
    Exact integer arithmetic: every device gives the same rows."""
    total = 1 << PRECISION
    f = ADAPT_PRIOR * table_rows + (counts << PRECISION)
    q = 1 + f * (total - f.shape[1]) // f.sum(1, keepdims=True)
    top = np.argmax(f, 1)
    q[np.arange(len(q)), top] += total - q.sum(1)
    return q


class _Adaptive:
    """One segment's adapted contexts: the counts of the symbols coded in each context in the
    segment's earlier groups.  The encoder, the decoder and the estimate each keep one and call it
    alike: `record` every run coded, `commit` at the end of every group, `reset` right after a
    refresh flag of 1 (a new scene's contexts start afresh from the tables)."""

    def __init__(self, coder: "EntropyCoder"):
        self.coder = coder
        self.reset()

    def reset(self) -> None:
        self.counts: dict[str, np.ndarray] = {}
        self.pending: list[tuple[str, np.ndarray, np.ndarray]] = []

    def rows(self, kind: str, keys: np.ndarray, models: bool = True) -> tuple[np.ndarray, list | None]:
        """Distinct `keys` -> the integer rows (n, K) to code their symbols with in this group, and
        (with `models`) a constriction model of each."""
        rows = self.coder.table(kind)[keys]
        counts = self.counts.get(kind)
        seen = np.zeros(len(keys), dtype=bool)
        if counts is not None:
            c = counts[keys]
            seen = c.any(1)
            if seen.any():
                rows[seen] = adapted_rows(rows[seen], c[seen])
        if not models:
            return rows, None
        probs = rows[seen].astype(np.float64) / float(1 << PRECISION)  # the adapted rows' models
        fresh = iter([constriction.stream.model.Categorical(p, perfect=False) for p in probs])
        return rows, [next(fresh) if s else self.coder._model(kind, k) for k, s in zip(keys.tolist(), seen.tolist())]

    def record(self, kind: str, keys: np.ndarray, symbols: np.ndarray) -> None:
        if len(keys):
            self.pending.append((kind, keys, symbols))

    def commit(self) -> None:
        """The end of a group: its symbols join the counts."""
        runs: dict[str, list] = {}
        for kind, keys, symbols in self.pending:  # one count per kind: a group may code a kind in many calls
            runs.setdefault(kind, []).append((keys, symbols))
        for kind, parts in runs.items():
            counts = self.counts.get(kind)
            if counts is None:
                counts = self.counts[kind] = np.zeros(self.coder.table(kind).shape, dtype=np.int64)
            K = counts.shape[1]
            keys = np.concatenate([k for k, _ in parts]).astype(np.int64)
            symbols = np.concatenate([s for _, s in parts]).astype(np.int64)
            # counting sorts nothing: bincount over the rows from the first key to the last
            lo, end = int(keys.min()), int(keys.max()) + 1
            counts[lo:end] += np.bincount((keys - lo) * K + symbols, minlength=(end - lo) * K).reshape(end - lo, K)
            rows = lo + np.flatnonzero(np.bincount(keys - lo, minlength=end - lo))
            full = rows[counts[rows].sum(1) > ADAPT_LIMIT]
            counts[full] = (counts[full] + 1) >> 1
        self.pending = []


class GroupLost(Exception):
    """A group's stream is damaged or missing: the groups before it decoded whole."""


class _GroupWriter:
    """A segment coded as one range-coder stream per group (the output filter's integers go with
    the first): per group, its length in words (u32), the CRC-32 of its words (u32), its words.
    What a resynchronisation point costs: those 8 bytes and a flushed stream per group."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols, model) -> None:
        self.enc.encode(symbols, model)

    def cut(self) -> None:
        self.parts.append(np.asarray(self.enc.get_compressed(), dtype=np.uint32))
        self.enc = constriction.stream.queue.RangeEncoder()

    def payload_words(self) -> np.ndarray:
        out = []
        for w in self.parts:
            out += [np.array([len(w), zlib.crc32(w.astype("<u4").tobytes())], dtype=np.uint32), w]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)


class _GroupReader:
    """Reads _GroupWriter's layout: the groups' streams in turn, up to the first that fails its CRC."""

    def __init__(self, words: np.ndarray):
        self.parts: list[np.ndarray] = []
        pos = 0
        while pos + 2 <= len(words):
            n, crc = int(words[pos]), int(words[pos + 1])
            part = words[pos + 2:pos + 2 + n]
            if len(part) < n or zlib.crc32(part.astype("<u4").tobytes()) != crc:
                break
            self.parts.append(part)
            pos += 2 + n
        self.i = -1
        self.advance()

    def advance(self) -> None:
        self.i += 1
        if self.i >= len(self.parts):
            raise GroupLost(self.i)
        self.dec = constriction.stream.queue.RangeDecoder(self.parts[self.i])

    def decode(self, model, n: int):
        return self.dec.decode(model, n)


def intact_groups(words: np.ndarray) -> int:
    """How many of a per-group payload's streams (_GroupWriter) are intact before the first
    damaged one: the groups a damaged segment's salvage decodes."""
    try:
        return len(_GroupReader(np.asarray(words, dtype=np.uint32)).parts)
    except GroupLost:
        return 0


class EntropyCoder:
    def __init__(self, tables, mode_tables, mv_tables, coef_tables, flag_tables):
        as_np = lambda t: (t.cpu().numpy() if torch.is_tensor(t) else np.asarray(t)).astype(np.int64)
        self.tables, self.mode_tables, self.mv_tables, self.coef_tables, self.flag_tables = (
            as_np(tables), as_np(mode_tables), as_np(mv_tables), as_np(coef_tables), as_np(flag_tables))
        self.stages, rows, self.codes = self.tables.shape
        if rows != index_rows(self.codes):
            raise ValueError(f"index tables have {rows} context rows, not {index_rows(self.codes)}")
        self.qualities, self.positions = self.coef_tables.shape[:2]
        self._rows = self.tables.reshape(-1, self.codes)
        self._coef_rows = self.coef_tables.reshape(-1, COEF_SYMBOLS)
        self._per_quality = self.positions * KINDS * COEF_CONTEXTS
        self._tables = {"mode": self.mode_tables, "mv": self.mv_tables, "index": self._rows, "coef": self._coef_rows,
                        "flag": self.flag_tables, "grid": _fixed_row(GRID_WEIGHTS)[None]}
        self._models: dict[tuple[str, int], object] = {}
        bits = lambda t: -np.log2(t / float(1 << PRECISION))  # ideal code lengths
        self.bits, self.mode_bits, self.mv_bits, self.flag_bits = (
            bits(self.tables), bits(self.mode_tables), bits(self.mv_tables), bits(self.flag_tables))
        # for the encoder's decisions, made before the neighbours' coefficients are known: each of
        # a token's own contexts as the mean of its neighbour contexts' distributions
        own = self.coef_tables.reshape(*self.coef_tables.shape[:3], COEF_OWN, NEAR_LEVELS, COEF_SYMBOLS)
        self.coef_own_bits = bits(own.mean(4))
        # the cheapest possible symbol (adapted rows can give one symbol all but K - 1 of 2**16):
        # bounds how many symbols a payload of n bytes can hold
        self.min_bits = float(-np.log2(1 - 1 / (1 << PRECISION)))
        rows = [_fixed_row(FILTER_FLAG_WEIGHTS), _fixed_row(FILTER_TABLE_WEIGHTS)]
        self._filter_flag_bits, self._filter_bits = (bits(r) for r in rows)
        self._filter_models = [constriction.stream.model.Categorical(r.astype(np.float64) / float(1 << PRECISION),
                                                                     perfect=False) for r in rows]

    def max_symbols(self, payload_bytes: int) -> int:
        return int(8 * (payload_bytes + 8) / max(self.min_bits, 1e-6)) + 64

    def table(self, kind: str) -> np.ndarray:
        """The table (rows by key) of a kind of symbol."""
        return self._tables[kind]

    def _model(self, kind: str, key: int):
        m = self._models.get((kind, key))
        if m is None:
            m = constriction.stream.model.Categorical(self.table(kind)[key].astype(np.float64) / float(1 << PRECISION),
                                                      perfect=False)
            self._models[(kind, key)] = m
        return m

    def _code_runs(self, enc, state: _Adaptive, kind: str, keys: np.ndarray, symbols: np.ndarray) -> float:
        """Code (or with enc None, only measure) one kind's symbols, one call per key -> their ideal
        code length in bits under the rows used."""
        if not len(keys):
            return 0.0
        order, run_keys, starts, ends = _runs(keys)
        sym = symbols[order].astype(np.int32)
        rows, models = state.rows(kind, run_keys, enc is not None)
        if enc is not None:
            for m, a, b in zip(models, starts.tolist(), ends.tolist()):
                enc.encode(sym[a:b], m)
        run = np.repeat(np.arange(len(run_keys)), ends - starts)
        state.record(kind, keys, symbols)
        return float(-np.log2(rows[run, sym] / float(1 << PRECISION)).sum())

    def _decode_runs(self, dec, state: _Adaptive, kind: str, keys: np.ndarray) -> np.ndarray:
        order, run_keys, starts, ends = _runs(keys)
        flat = np.empty(len(keys), dtype=np.int64)
        for m, a, b in zip(state.rows(kind, run_keys)[1], starts.tolist(), ends.tolist()):
            flat[a:b] = dec.decode(m, b - a)
        out = np.empty_like(flat)
        out[order] = flat
        state.record(kind, keys, out)
        return out

    def _decode_vectors(self, dec, state: _Adaptive, prev_mv: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
        """mv_symbols' inverse: a group's vectors (Hb, Wb); a vector outside the range is an error."""
        py, px = mv_prediction(prev_mv, shape)
        b = mv_pass_b(shape)
        mv = np.full(shape, ZERO, dtype=np.int64)

        def one_pass(sel, k, qy, qx):  # one pass's components: differences from (qy, qx) in contexts k
            dy = self._decode_runs(dec, state, "mv", k[sel]) - MV_MAX
            dx = self._decode_runs(dec, state, "mv", mv_x_contexts(k[sel], dy)) - MV_MAX
            vy, vx = qy[sel] + dy, qx[sel] + dx
            if np.abs(vy).max(initial=0) > RANGE or np.abs(vx).max(initial=0) > RANGE:
                raise ValueError("a motion vector is out of range")
            mv[sel] = (vy + RANGE) * SIDE + vx + RANGE

        one_pass(~b, mv_contexts(prev_mv, shape), py, px)
        qy, qx, kb = mv_neighbours(mv, py, px)  # pass B, from pass A's vectors
        one_pass(b, kb, qy, qx)
        return mv

    def _decode_coefs(self, dec, state: _Adaptive, offset: int, kinds: np.ndarray, hist: np.ndarray,
                      odd: np.ndarray) -> np.ndarray:
        """_code_coefs' inverse: a group's coefficients (h * w, P) (zero where a token codes none),
        from its kinds and histories (h * w,) and pass-B map (h, w)."""
        h, w = odd.shape
        P = self.positions
        coefs = np.zeros((h * w, P), dtype=np.int64)
        a = np.flatnonzero((kinds >= 0) & ~odd.reshape(-1))
        b = np.flatnonzero((kinds >= 0) & odd.reshape(-1))
        if not len(a) + len(b):
            return coefs
        # each coding token's four neighbours as flat places, h * w (always zero) outside the grid
        def around(tokens):
            i, j = tokens // w, tokens % w
            n = [np.where(ok, (i + di) * w + j + dj, h * w) for di, dj, ok in
                 ((-1, 0, i > 0), (1, 0, i < h - 1), (0, -1, j > 0), (0, 1, j < w - 1))]
            return np.stack(n, 1)
        around_a, around_b = around(a), around(b)
        ca, cb = np.zeros((P, len(a)), dtype=np.int64), np.zeros((P, len(b)), dtype=np.int64)
        before = np.zeros(h * w + 1, dtype=np.int64)  # each token's non-zeros at earlier positions
        here = np.zeros(h * w + 1, dtype=np.int64)    # pass A's non-zeros at this position
        ka, kb, ha, hb = kinds[a], kinds[b], hist[a], hist[b]
        for r in range(P):  # a position's contexts need the earlier positions, pass B's pass A's here
            if len(a):
                ca[r] = self._decode_runs(dec, state, "coef", offset + coef_keys(
                    ka, coef_context(ha, before[a], near_a(before[around_a].sum(1))), r)) - COEF_MAX
                here[a] = ca[r] != 0
            if len(b):
                cb[r] = self._decode_runs(dec, state, "coef", offset + coef_keys(
                    kb, coef_context(hb, before[b], near_b(here[around_b].sum(1))), r)) - COEF_MAX
                before[b] += cb[r] != 0
            before[a] += here[a]
        coefs[a], coefs[b] = ca.T, cb.T
        return coefs

    def _check_quality(self, quality: int) -> int:
        if not 1 <= quality <= self.qualities:
            raise ValueError(f"quality {quality} has no coefficient tables")
        return (quality - 1) * self._per_quality

    # -- segments ----------------------------------------------------------------------------
    def encode(self, sym: Symbols) -> np.ndarray:
        """A segment's symbols -> compressed words (uint32).  Contexts start afresh: a segment
        depends on nothing else."""
        return self.encode_measured(sym)[0]

    def encode_measured(self, sym: Symbols, per_group: bool = False) -> tuple[np.ndarray, float]:
        """(compressed words, their ideal code length in bits under the rows they were coded with).
        `per_group`: one range-coder stream per group, each with its length and CRC (_GroupWriter),
        so that a damaged segment keeps its groups before the damage."""
        enc = _GroupWriter() if per_group else constriction.stream.queue.RangeEncoder()
        bits = self._code_segment(enc, sym)
        return (enc.payload_words() if per_group else enc.get_compressed()), bits

    def estimate_bits(self, sym: Symbols) -> float:
        """Ideal code length (-log2 p) of a segment as encode codes it (adapted rows included),
        to compare with real bytes, without coding it."""
        return self._code_segment(None, sym)

    def _code_segment(self, enc, sym: Symbols) -> float:
        self._check_quality(sym.quality)
        state = _Adaptive(self)
        bits = self._code_filter(enc, sym.filter)
        for gi, (keys, passes, side, g, kinds, hist, coefs) in enumerate(_walk(sym, self.codes)):
            offset = self._check_quality(group_quality(sym.quality, gi == 0))
            for kind, k, s in side:
                bits += self._code_runs(enc, state, kind, k, s)
                if kind == "flag" and k[0] == FLAG_REFRESH and s[0]:
                    state.reset()  # a new scene: its contexts start afresh
            for p in range(int(passes.max()) + 1):
                coded = (keys >= 0) & (passes == p)[None]
                bits += self._code_runs(enc, state, "index", keys[coded], g[coded])
            bits += self._code_coefs(enc, state, offset, kinds, hist, coefs)
            state.commit()
            if isinstance(enc, _GroupWriter):
                enc.cut()
        return bits

    def filter_bits(self, weights: np.ndarray) -> float:
        """The code length of one class's filter integers (filterfit.Fit.solve's `bits`), its flag included."""
        return float(self._filter_bits[np.asarray(weights, dtype=np.int64) + postfilter.WEIGHT_MAX].sum()
                     + self._filter_flag_bits[1])

    def _code_filter(self, enc, filt: tuple | None) -> float:
        """The output filter, before the segment's groups: every class's flag (Y's classes, then U's,
        then V's) in one call, then the integers of the classes that are on, in order, in one call."""
        filt = filt if filt is not None else tuple(postfilter.off(p) for p in range(len(postfilter.PLANES)))
        flags = np.concatenate([w.any(1) for w in filt]).astype(np.int32)
        values = np.concatenate([w[w.any(1)].reshape(-1) for w in filt]).astype(np.int32) + postfilter.WEIGHT_MAX
        if values.min(initial=0) < 0 or values.max(initial=0) > 2 * postfilter.WEIGHT_MAX:
            raise ValueError("a filter weight is out of range")
        if enc is not None:
            enc.encode(flags, self._filter_models[0])
            if len(values):
                enc.encode(values, self._filter_models[1])
        return float(self._filter_flag_bits[flags].sum() + self._filter_bits[values].sum())

    def _decode_filter(self, dec) -> tuple:
        """_code_filter's inverse: each plane's filter (classes, width)."""
        shapes = postfilter.PLANES
        flags = dec.decode(self._filter_models[0], sum(s.classes for s in shapes)).astype(bool)
        on = np.split(flags, np.cumsum([s.classes for s in shapes])[:-1])
        sizes = [int(o.sum()) * s.width for o, s in zip(on, shapes)]
        values = dec.decode(self._filter_models[1], sum(sizes)).astype(np.int64) - postfilter.WEIGHT_MAX
        out = []
        for o, s, v in zip(on, shapes, np.split(values, np.cumsum(sizes)[:-1])):
            w = np.zeros((s.classes, s.width), dtype=np.int64)
            w[o] = v.reshape(-1, s.width)
            out.append(w)
        return tuple(out)

    def _code_coefs(self, enc, state: _Adaptive, offset: int, kinds: np.ndarray, hist: np.ndarray,
                    coefs: np.ndarray) -> float:
        """A group's coefficients, position by position, at each the tokens of pass A then those of
        pass B (their contexts need pass A's values here): 2 P calls."""
        sel = kinds >= 0
        bits = 0.0
        if not sel.any():
            return bits
        ctx = coef_contexts(coefs, kinds, hist)
        odd = parity(*kinds.shape)[sel]
        k, c = kinds[sel], coefs[sel].astype(np.int64)
        parts = [(k[s], ctx[s], c[s]) for s in (~odd, odd)]
        for r in range(coefs.shape[-1]):
            for k, cx, c in parts:
                bits += self._code_runs(enc, state, "coef", offset + coef_keys(k, cx[:, r], r), c[:, r] + COEF_MAX)
        return bits

    def decode_segment(self, words: np.ndarray, n_groups: int, shape: tuple[int, int, int],
                       mv_shape: tuple[int, int], quality: int, per_group: bool = False, grids: list | None = None):
        """A segment's words -> (its output filter (per plane (classes, width)), an iterator of its
        groups (decode_groups)).  `per_group`: the words are per-group streams (_GroupWriter); the
        iterator raises GroupLost at the first group whose stream fails its CRC.  `grids`: a list
        the iterator appends each group's grid flag to (True: its vectors came on the coarse grid)."""
        self._check_quality(quality)
        dec = (_GroupReader(np.asarray(words, dtype=np.uint32)) if per_group
               else constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32)))
        return self._decode_filter(dec), self._groups(dec, quality, n_groups, shape, mv_shape, grids)

    def decode_groups(self, words: np.ndarray, n_groups: int, shape: tuple[int, int, int],
                      mv_shape: tuple[int, int], quality: int):
        """Yield (indices (D, h, w), modes (h, w), vectors (Hb, Wb), coefficients (h, w, P), fresh)
        group by group, vectors None in fresh groups (the first, and refreshes); memory is bounded
        by one group whatever n_groups is."""
        return self.decode_segment(words, n_groups, shape, mv_shape, quality)[1]

    def _groups(self, dec, quality: int, n_groups: int, shape: tuple[int, int, int], mv_shape: tuple[int, int],
                grids: list | None = None):
        D, h, w = shape
        P = self.positions
        odd = parity(h, w)
        ref = prev_moved = prev_changed = modes = mv = None
        prev_static = 2
        hist = np.full(h * w, NEVER, dtype=np.int64)
        state = _Adaptive(self)
        for gi in range(n_groups):
            if gi and isinstance(dec, _GroupReader):
                dec.advance()
            if ref is not None and self._decode_runs(dec, state, "flag", np.array([prev_static]))[0]:
                prev_static = 0
                modes = np.full((h, w), SKIP, dtype=np.int64)
                mv = np.full(mv_shape, ZERO, dtype=np.int64)
                prev_moved, prev_changed = np.zeros((h, w), dtype=bool), np.zeros(mv_shape, dtype=bool)
                state.commit()
                yield np.zeros(shape, dtype=np.int64), modes, mv, np.zeros((h, w, P), dtype=np.int64), False
                continue
            if ref is not None:
                prev_static = 1
                if self._decode_runs(dec, state, "flag", np.array([FLAG_REFRESH]))[0]:  # a first group again
                    state.reset()  # a new scene: its contexts start afresh
                    ref = prev_moved = prev_changed = mv = None
                    hist[:] = NEVER
                    prev_static = 2
            fresh = ref is None
            if fresh:  # modes pass by pass; pass 0 is intra
                passes = first_passes(h, w)
                modes = np.full((h, w), INTRA, dtype=np.int64)
                for p in range(1, FRESH_PASSES):
                    modes[passes == p] = self._decode_runs(dec, state, "mode", fresh_mode_contexts(modes)[passes == p])
            else:
                coarse = coarse_vectors(quality) and bool(self._decode_runs(dec, state, "grid", np.zeros(1, dtype=np.int64))[0])
                if grids is not None:
                    grids.append(coarse)
                if coarse:
                    mv = spread(self._decode_vectors(dec, state, None if mv is None else cells(mv),
                                                     cell_shape(*mv_shape)), mv_shape)
                else:
                    mv = self._decode_vectors(dec, state, mv, mv_shape)
                skip = self._decode_runs(dec, state, "flag", block_contexts(prev_changed, mv).reshape(-1)
                                         ).reshape(mv_shape).astype(bool)
                coded = ~block_tokens(skip, h, w)
                modes = np.full((h, w), SKIP, dtype=np.int64)
                a, b = ~odd & coded, odd & coded
                modes[a] = self._decode_runs(dec, state, "mode", mode_contexts_a(prev_moved, h, w)[a])
                moved_a = (modes != SKIP) & ~odd
                modes[b] = self._decode_runs(dec, state, "mode", mode_contexts_b(moved_a, prev_moved)[b])
                near = near_places(modes)
                modes[near] = NEAR_MODE[self._decode_runs(dec, state, "mode", near_contexts(modes)[near])]
                if (~skip & skipped_blocks(modes)).any():
                    raise ValueError("a block flagged as changed has no changed token")
            g = np.zeros(shape, dtype=np.int64)
            if fresh:  # pass by pass: each pass's contexts are indices of the passes before
                for p in range(FRESH_PASSES):
                    keys = first_index_keys(g, modes, self.codes, p)
                    coded = (keys >= 0) & (passes == p)[None]
                    g[coded] = self._decode_runs(dec, state, "index", keys[coded])
            else:
                keys = index_keys(ref, modes, shape, self.codes)
                coded = keys >= 0
                g[coded] = self._decode_runs(dec, state, "index", keys[coded])
            kinds = coef_kinds(modes, (h, w)).reshape(-1)
            sel = kinds >= 0
            offset = self._check_quality(group_quality(quality, gi == 0))
            coefs = self._decode_coefs(dec, state, offset, kinds, hist, odd)
            c = coefs[sel]
            if fresh:
                hist[:] = 0  # SKIP tokens of a fresh group: no coefficients
                ref = first_refs(g, modes)
            else:
                intra = modes == INTRA
                ref[:, intra] = g[:, intra]
                prev_moved, prev_changed = modes != SKIP, ~skip
            hist[sel] = history(c)
            state.commit()
            yield g, modes, mv, coefs.reshape(h, w, P), fresh


def quantise_rows(p: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Float rows (.., K) summing to 1 -> int rows, each entry >= 1, summing to 2**precision."""
    K = p.shape[-1]
    total = 1 << precision
    f = np.floor(p * (total - K)).astype(np.int64) + 1
    short = total - f.sum(-1)
    top = np.argmax(p, -1)
    np.put_along_axis(f, top[..., None], np.take_along_axis(f, top[..., None], -1) + short[..., None], -1)
    return f
