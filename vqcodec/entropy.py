"""Context model and entropy coder: integer probability tables + constriction's range coder.

Context: the index of the same VQ stage at the same position in the previous temporal group
of the segment (``codes`` contexts), or "no previous group" (context ``codes``) for a
segment's first group.  Static regions repeat their indices, and a good table gives a repeat
most of the probability, so they cost few bits.

Tables are int32 frequencies (stages, codes + 1, codes); every entry >= 1, every row sums to
2**PRECISION.  They are fitted once after training (``fit_tables``) and stored in the model
file, so the encoder and the decoder use the same integers on every device.  Coding never
uses floats computed by the network: the row ``freq / 2**16`` is exact in float64, and
constriction quantises it deterministically.

Symbols are grouped by (stage, context) and each group is coded with one call, never a Python
loop per symbol.  Order inside a temporal group: contexts ascending (stage-major), positions
in raster order.  Groups follow each other in one range-coder stream per segment.
"""
from __future__ import annotations

import numpy as np
import torch
import constriction

PRECISION = 16


def contexts(prev: np.ndarray | None, shape: tuple[int, ...], codes: int) -> np.ndarray:
    """Context ids for a group with indices of ``shape`` (S, h, w), given the previous group's."""
    if prev is None:
        return np.full(shape, codes, dtype=np.int64)
    return prev.astype(np.int64)


class EntropyCoder:
    def __init__(self, tables: torch.Tensor | np.ndarray):
        t = tables.cpu().numpy() if torch.is_tensor(tables) else np.asarray(tables)
        self.tables = t.astype(np.int64)
        self.stages, self.contexts, self.codes = self.tables.shape
        self._models: dict[int, object] = {}
        self._bits = -np.log2(self.tables / float(1 << PRECISION))  # ideal code lengths
        # the cheapest possible symbol: bounds how many symbols a payload of n bytes can hold
        self.min_bits = float(self._bits.min())

    def max_symbols(self, payload_bytes: int) -> int:
        return int(8 * (payload_bytes + 8) / max(self.min_bits, 1e-6)) + 64

    def _model(self, key: int):
        m = self._models.get(key)
        if m is None:
            s, c = divmod(key, self.contexts)
            p = self.tables[s, c].astype(np.float64) / float(1 << PRECISION)
            m = constriction.stream.model.Categorical(p, perfect=False)
            self._models[key] = m
        return m

    def _plan(self, prev: np.ndarray | None, shape):
        """Coding order for one group: (order, keys, starts, ends) over the flattened (S*h*w)."""
        S = shape[0]
        ctx = contexts(prev, shape, self.codes)
        keys = (np.arange(S, dtype=np.int64)[:, None, None] * self.contexts + ctx).reshape(-1)
        if S * self.contexts <= 1 << 16:
            keys = keys.astype(np.uint16)  # numpy radix-sorts 16-bit keys: 3x faster than int64
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        cut = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [len(sk)]))
        return order, sk[starts].astype(np.int64), starts, ends

    def encode(self, groups: np.ndarray) -> np.ndarray:
        """groups (G, S, h, w) int -> compressed words (uint32).  Context resets at the start."""
        enc = constriction.stream.queue.RangeEncoder()
        prev = None
        for g in groups:
            order, keys, starts, ends = self._plan(prev, g.shape)
            sym = g.reshape(-1)[order].astype(np.int32)
            for k, a, b in zip(keys.tolist(), starts.tolist(), ends.tolist()):
                enc.encode(sym[a:b], self._model(k))
            prev = g
        return enc.get_compressed()

    def decode(self, words: np.ndarray, n_groups: int, shape: tuple[int, int, int]) -> np.ndarray:
        """Inverse of encode: words -> (G, S, h, w) int64 indices."""
        return np.stack(list(self.decode_groups(words, n_groups, shape)))

    def decode_groups(self, words: np.ndarray, n_groups: int, shape: tuple[int, int, int]):
        """Yield the groups one by one (memory bounded by one group, whatever n_groups is)."""
        dec = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
        prev = None
        for _ in range(n_groups):
            order, keys, starts, ends = self._plan(prev, shape)
            flat = np.empty(order.shape[0], dtype=np.int64)
            for k, a, b in zip(keys.tolist(), starts.tolist(), ends.tolist()):
                flat[a:b] = dec.decode(self._model(k), b - a)
            g = np.empty_like(flat)
            g[order] = flat
            prev = g.reshape(shape)
            yield prev

    def estimate_bits(self, groups: np.ndarray) -> float:
        """Ideal code length (-log2 p) of groups under the tables, for comparison with real bytes."""
        total, prev = 0.0, None
        S = groups.shape[1]
        for g in groups:
            ctx = contexts(prev, g.shape, self.codes)
            total += float(self._bits[np.arange(S)[:, None, None], ctx, g].sum())
            prev = g
        return total


# -- fitting ----------------------------------------------------------------------------------
def count_transitions(groups: np.ndarray, codes: int, counts: np.ndarray | None = None) -> np.ndarray:
    """Accumulate (stages, codes+1, codes) counts of (context, symbol) over consecutive groups."""
    G, S = groups.shape[:2]
    if counts is None:
        counts = np.zeros((S, codes + 1, codes), dtype=np.int64)
    prev = None
    for g in groups:
        ctx = contexts(prev, g.shape, codes)
        key = (np.arange(S)[:, None, None] * (codes + 1) + ctx) * codes + g
        counts += np.bincount(key.reshape(-1), minlength=S * (codes + 1) * codes).reshape(counts.shape)
        prev = g
    return counts


def quantise_rows(p: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Float rows (.., K) summing to 1 -> int rows, each entry >= 1, summing to 2**precision."""
    K = p.shape[-1]
    total = 1 << precision
    f = np.floor(p * (total - K)).astype(np.int64) + 1
    short = total - f.sum(-1)
    top = np.argmax(p, -1)
    np.put_along_axis(f, top[..., None], np.take_along_axis(f, top[..., None], -1) + short[..., None], -1)
    return f


def fit_tables(counts: np.ndarray, prior: float = 16.0) -> torch.Tensor:
    """Counts (S, C, K) -> int32 tables: each context row shrunk toward its stage's marginal."""
    marg = counts.sum(1, keepdims=True).astype(np.float64) + 1.0
    marg /= marg.sum(-1, keepdims=True)
    n = counts.sum(-1, keepdims=True)
    p = (counts + prior * marg) / (n + prior)
    return torch.from_numpy(quantise_rows(p).astype(np.int32))
