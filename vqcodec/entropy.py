"""Context model and entropy coder: integer probability tables + constriction's range coder.

A segment is a sequence of temporal groups; each group is a grid of h x w tokens.  The first
group codes every token *intra*: its S residual-VQ indices.  In every later group each token
has a *mode*:
  INTRA  (0): S indices, coded afresh;
  SKIP   (1): nothing more: the token keeps the previous group's latent;
  REFINE (2): the indices of the last R = refine_stages(S) stages, coding the change from the
              previous group's latent with the small codebooks of the last stages.
Each later group also carries a motion vector per block of tokens (motion.py): SKIP and REFINE
start from the previous latent of a token whose block stands still, and from the latent of the
motion-compensated previous frames where it moves.  Which vectors and modes the tokens take is the
encoder's choice (codec.py); the decoder only reads them.

Contexts (all discrete, all from data the decoder already has):
  - vectors: 0 when the same block of the previous group stood still, 1 when it moved, 2 when
    the previous group is the segment's first (it has no vectors);
  - modes, in two checkerboard passes so that both stay one call per table:
      pass A (tokens with (i + j) even): the number of tokens that changed (mode other than
      SKIP) in the 3x3 neighbourhood of the previous group's mode map (0..9), or 10 when the
      previous group is the segment's first (it has no modes);
      pass B (the other tokens): 11 + 3 * (changed 4-neighbours in the current group, all from
      pass A, 0..4) + (the co-located previous mode: 0 skip, 1 changed, 2 none: first group).
  - intra indices: (stage, the index at the same stage and place in the last group that coded
    that token intra), or (stage, K = "no previous group") in the segment's first group;
  - refine indices: (stage, K + 1).
A static region is skipped wholesale in contexts that predict "skip" with near certainty: it
costs a small fraction of a bit per token.

Tables are integer frequencies; every entry >= 1, every row sums to 2**PRECISION:
  ``tables`` int32 (S, K + 2, K) for indices, ``mode_tables`` int32 (MODE_CONTEXTS, 3) for modes,
  ``mv_tables`` int32 (MV_CONTEXTS, motion.VECTORS) for vectors.
They are fitted after training (``fit_tables``) and stored in the model file, so the encoder
and the decoder use the same integers on every device: the row ``freq / 2**16`` is exact in
float64, and constriction quantises it deterministically.

Coding order inside a group: vectors grouped by context (ascending), pass-A modes grouped by
context, pass-B modes likewise, then the indices grouped by key = stage * (K + 2) + context (ascending), raster
order inside every group of symbols.  Each group of symbols sharing a table is one constriction
call, never a Python loop per symbol.  All groups of a segment share one range-coder stream.
"""
from __future__ import annotations

import numpy as np
import torch
import constriction

from .motion import VECTORS, ZERO

PRECISION = 16
INTRA, SKIP, REFINE = 0, 1, 2
MODES = 3
MODE_FIRST = 10        # pass-A context when the previous group has no modes
MODE_B = 11            # first pass-B context
MODE_CONTEXTS = 26
MV_CONTEXTS = 3


def refine_stages(stages: int) -> int:
    """Stages a REFINE token codes (the last ones): a third of the depth, at least one."""
    return max(1, -(-stages // 3))


def _neighbours3(m: np.ndarray) -> np.ndarray:
    """Number of set cells in each cell's 3x3 neighbourhood (itself included), zero-padded."""
    p = np.pad(m.astype(np.int8), 1)
    h, w = m.shape
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3))


def _neighbours4(m: np.ndarray) -> np.ndarray:
    p = np.pad(m.astype(np.int8), 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def parity(h: int, w: int) -> np.ndarray:
    """True where a token belongs to pass B ((i + j) odd)."""
    return (np.add.outer(np.arange(h), np.arange(w)) & 1).astype(bool)


def mode_contexts_a(prev_moved: np.ndarray | None, h: int, w: int) -> np.ndarray:
    """prev_moved: the previous group's changed (not SKIP) map, or None after the first group."""
    if prev_moved is None:
        return np.full((h, w), MODE_FIRST, dtype=np.int64)
    return _neighbours3(prev_moved).astype(np.int64)


def mode_contexts_b(moved_a: np.ndarray, prev_moved: np.ndarray | None) -> np.ndarray:
    """moved_a: the current changed (not SKIP) map with the pass-B places still False."""
    prev = np.full(moved_a.shape, 2, dtype=np.int64) if prev_moved is None else prev_moved.astype(np.int64)
    return MODE_B + 3 * _neighbours4(moved_a).astype(np.int64) + prev


def index_keys(ref: np.ndarray | None, modes: np.ndarray | None, shape: tuple[int, int, int],
               codes: int) -> np.ndarray:
    """Key (stage * (K + 2) + context) of every index slot (S, h, w) of a group; slots a token
    does not code (all of a SKIP token, the first S - R of a REFINE token) get -1.
    ref: each token's indices from the last group that coded it intra; None in the first group."""
    S = shape[0]
    base = np.arange(S, dtype=np.int64)[:, None, None] * (codes + 2)
    if ref is None:
        return np.broadcast_to(base + codes, shape)
    keys = np.where((modes == INTRA)[None], base + ref[:S], -1)
    refined = (modes == REFINE)[None] & (np.arange(S)[:, None, None] >= S - refine_stages(S))
    return np.where(refined, base + codes + 1, keys)


def mv_contexts(prev_mv: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if prev_mv is None:
        return np.full(shape, 2, dtype=np.int64)
    return (prev_mv != ZERO).astype(np.int64)


def _walk(groups: np.ndarray, modes: np.ndarray, mvs: np.ndarray, codes: int):
    """The encoder's view of a segment, group by group: (index keys (S, h, w), [(kind, keys,
    symbols)] of the vectors and modes (empty in the first group), indices)."""
    G, S, h, w = groups.shape
    odd = parity(h, w)
    ref = prev_moved = prev_mv = None
    for i, g in enumerate(groups):
        if ref is None:
            yield index_keys(None, None, g.shape, codes), [], g
            ref = g.copy()
            continue
        m = modes[i].astype(np.int64)
        mv = mvs[i].astype(np.int64)
        moved_a = (m != SKIP) & ~odd
        side = [("mv", mv_contexts(prev_mv, mv.shape).reshape(-1), mv.reshape(-1)),
                ("mode", mode_contexts_a(prev_moved, h, w)[~odd], m[~odd]),
                ("mode", mode_contexts_b(moved_a, prev_moved)[odd], m[odd])]
        yield index_keys(ref, m, g.shape, codes), side, g
        intra = m == INTRA
        ref[:, intra] = g[:, intra]
        prev_moved, prev_mv = m != SKIP, mv


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


class EntropyCoder:
    def __init__(self, tables, mode_tables, mv_tables):
        as_np = lambda t: (t.cpu().numpy() if torch.is_tensor(t) else np.asarray(t)).astype(np.int64)
        self.tables, self.mode_tables, self.mv_tables = as_np(tables), as_np(mode_tables), as_np(mv_tables)
        self.stages, _, self.codes = self.tables.shape
        self._rows = self.tables.reshape(-1, self.codes)
        self._models: dict[tuple[str, int], object] = {}
        self.bits = -np.log2(self.tables / float(1 << PRECISION))  # ideal code lengths
        self.mode_bits = -np.log2(self.mode_tables / float(1 << PRECISION))
        self.mv_bits = -np.log2(self.mv_tables / float(1 << PRECISION))
        # the cheapest possible symbol: bounds how many symbols a payload of n bytes can hold
        self.min_bits = float(min(self.bits.min(), self.mode_bits.min(), self.mv_bits.min()))

    def max_symbols(self, payload_bytes: int) -> int:
        return int(8 * (payload_bytes + 8) / max(self.min_bits, 1e-6)) + 64

    def _model(self, kind: str, key: int):
        m = self._models.get((kind, key))
        if m is None:
            row = {"mode": self.mode_tables, "mv": self.mv_tables, "index": self._rows}[kind][key]
            m = constriction.stream.model.Categorical(row.astype(np.float64) / float(1 << PRECISION), perfect=False)
            self._models[(kind, key)] = m
        return m

    def _code_runs(self, enc, kind: str, keys: np.ndarray, symbols: np.ndarray) -> None:
        order, run_keys, starts, ends = _runs(keys)
        sym = symbols[order].astype(np.int32)
        for k, a, b in zip(run_keys.tolist(), starts.tolist(), ends.tolist()):
            enc.encode(sym[a:b], self._model(kind, k))

    def _decode_runs(self, dec, kind: str, keys: np.ndarray) -> np.ndarray:
        order, run_keys, starts, ends = _runs(keys)
        flat = np.empty(len(keys), dtype=np.int64)
        for k, a, b in zip(run_keys.tolist(), starts.tolist(), ends.tolist()):
            flat[a:b] = dec.decode(self._model(kind, k), b - a)
        out = np.empty_like(flat)
        out[order] = flat
        return out

    # -- segments ----------------------------------------------------------------------------
    def encode(self, groups: np.ndarray, modes: np.ndarray, mvs: np.ndarray) -> np.ndarray:
        """groups (G, S, h, w) int: each token's indices (intra: all S; refine: the last R; the
        other slots are ignored), modes (G, h, w) and vectors (G, Hb, Wb) (the first group's
        ignored) -> compressed words (uint32).  Contexts start afresh: a segment depends on
        nothing else."""
        enc = constriction.stream.queue.RangeEncoder()
        for keys, side, g in _walk(groups, modes, mvs, self.codes):
            for kind, k, sym in side:
                self._code_runs(enc, kind, k, sym)
            coded = keys >= 0
            self._code_runs(enc, "index", keys[coded], g[coded])
        return enc.get_compressed()

    def decode_groups(self, words: np.ndarray, n_groups: int, shape: tuple[int, int, int],
                      mv_shape: tuple[int, int]):
        """Yield (indices (S, h, w), modes (h, w), vectors (Hb, Wb)) group by group, modes and
        vectors None in the first group; memory is bounded by one group whatever n_groups is."""
        dec = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
        S, h, w = shape
        odd = parity(h, w)
        ref = prev_moved = modes = mv = None
        for _ in range(n_groups):
            if ref is not None:
                mv = self._decode_runs(dec, "mv", mv_contexts(mv, mv_shape).reshape(-1)).reshape(mv_shape)
                modes = np.zeros((h, w), dtype=np.int64)
                modes[~odd] = self._decode_runs(dec, "mode", mode_contexts_a(prev_moved, h, w)[~odd])
                moved_a = (modes != SKIP) & ~odd
                modes[odd] = self._decode_runs(dec, "mode", mode_contexts_b(moved_a, prev_moved)[odd])
            keys = index_keys(ref, modes, shape, self.codes)
            coded = keys >= 0
            g = np.zeros(shape, dtype=np.int64)
            g[coded] = self._decode_runs(dec, "index", keys[coded])
            if ref is None:
                ref = g.copy()
            else:
                intra = modes == INTRA
                ref[:, intra] = g[:, intra]
                prev_moved = modes != SKIP
            yield g, modes, mv

    def estimate_bits(self, groups: np.ndarray, modes: np.ndarray, mvs: np.ndarray) -> float:
        """Ideal code length (-log2 p) of a segment under the tables, to compare with real bytes."""
        ci, cm, cv = count_symbols(groups, modes, mvs, self.codes)
        S = groups.shape[1]
        return float((ci[:S] * self.bits[:S]).sum() + (cm * self.mode_bits).sum() + (cv * self.mv_bits).sum())


# -- statistics and fitting ---------------------------------------------------------------------
def new_counts(stages: int, codes: int):
    return (np.zeros((stages, codes + 2, codes), dtype=np.int64), np.zeros((MODE_CONTEXTS, MODES), dtype=np.int64),
            np.zeros((MV_CONTEXTS, VECTORS), dtype=np.int64))


def count_symbols(groups: np.ndarray, modes: np.ndarray, mvs: np.ndarray, codes: int, counts=None):
    """Accumulate (index counts (S', K+2, K), mode counts (MODE_CONTEXTS, 3), vector counts
    (MV_CONTEXTS, VECTORS)) over one segment, in exactly the contexts the coder uses; S' >= the
    segment's stages when `counts` is given."""
    G, S, h, w = groups.shape
    if counts is None:
        counts = new_counts(S, codes)
    ci, cm, cv = counts
    rows = codes + 2
    for keys, side, g in _walk(groups, modes, mvs, codes):
        for kind, k, sym in side:
            c = cm if kind == "mode" else cv
            c += np.bincount(k * c.shape[1] + sym, minlength=c.size).reshape(c.shape)
        coded = keys >= 0
        ci[:S] += np.bincount(keys[coded] * codes + g[coded], minlength=S * rows * codes).reshape(S, rows, codes)
    return ci, cm, cv


def quantise_rows(p: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Float rows (.., K) summing to 1 -> int rows, each entry >= 1, summing to 2**precision."""
    K = p.shape[-1]
    total = 1 << precision
    f = np.floor(p * (total - K)).astype(np.int64) + 1
    short = total - f.sum(-1)
    top = np.argmax(p, -1)
    np.put_along_axis(f, top[..., None], np.take_along_axis(f, top[..., None], -1) + short[..., None], -1)
    return f


def fit_tables(counts, prior: float = 16.0) -> tuple[torch.Tensor, ...]:
    """(index, mode, vector counts) -> int32 (tables, mode_tables, mv_tables): each index row
    shrunk toward its stage's marginal, mode and vector rows toward uniform."""
    ci, cm, cv = counts
    marg = ci.sum(1, keepdims=True).astype(np.float64) + 1.0
    marg /= marg.sum(-1, keepdims=True)
    n = ci.sum(-1, keepdims=True)
    p = (ci + prior * marg) / (n + prior)
    rows = lambda c: torch.from_numpy(quantise_rows((c + 0.5) / (c.sum(-1, keepdims=True) + 0.5 * c.shape[-1]))
                                      .astype(np.int32))
    return torch.from_numpy(quantise_rows(p).astype(np.int32)), rows(cm), rows(cv)
