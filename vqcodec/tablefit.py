"""Fitting the context model's tables: symbols counted in exactly the contexts the coder uses
(entropy.py), then quantised to integer tables.  Training and table refits only; neither the
encoder's coding nor the decoder imports it."""
from __future__ import annotations

import numpy as np
import torch

from .entropy import (COEF_CONTEXTS, COEF_MAX, COEF_SYMBOLS, FLAG_CONTEXTS, KINDS, MODE_CONTEXTS, MODES, MV_CONTEXTS,
                      MV_SYMBOLS, COEF_OWN, NEAR_LEVELS, Symbols, _walk, coef_contexts, coef_keys, group_quality, index_rows,
                      quantise_rows)


def new_counts(stages: int, codes: int, qualities: int, positions: int):
    return (np.zeros((stages, index_rows(codes), codes), dtype=np.int64), np.zeros((MODE_CONTEXTS, MODES), dtype=np.int64),
            np.zeros((MV_CONTEXTS, MV_SYMBOLS), dtype=np.int64),
            np.zeros((qualities, positions, KINDS, COEF_CONTEXTS, COEF_SYMBOLS), dtype=np.int64),
            np.zeros((FLAG_CONTEXTS, 2), dtype=np.int64))


def count_symbols(sym: Symbols, codes: int, counts=None, qualities: int | None = None):
    """Accumulate (index counts (D', 2K+1, K), mode counts (MODE_CONTEXTS, 3), vector counts
    (MV_CONTEXTS, MV_SYMBOLS), coefficient counts (qualities, P, KINDS, COEF_CONTEXTS, COEF_SYMBOLS),
    static-flag counts (FLAG_CONTEXTS, 2))
    over one segment, in exactly the contexts the coder uses; D' >= the segment's depth when
    `counts` is given, `qualities` when it is not."""
    G, D, h, w = sym.indices.shape
    if counts is None:
        counts = new_counts(D, codes, qualities or sym.quality, sym.coefs.shape[-1])
    ci, cm, cv, cc, cs = counts
    rows = index_rows(codes)
    per_quality = cc[0].size // COEF_SYMBOLS
    for gi, (keys, _, side, g, kinds, hist, coefs) in enumerate(_walk(sym, codes)):
        for kind, k, s in side:
            if kind == "grid":  # a fixed table of the format's, not fitted
                continue
            c = {"mode": cm, "mv": cv, "flag": cs}[kind]
            c += np.bincount(k * c.shape[1] + s, minlength=c.size).reshape(c.shape)
        coded = keys >= 0
        ci[:D] += np.bincount(keys[coded] * codes + g[coded], minlength=D * rows * codes).reshape(D, rows, codes)
        sel = kinds >= 0
        if sel.any():
            c = coefs[sel].astype(np.int64)
            k = coef_keys(kinds[sel], coef_contexts(coefs, kinds, hist)) * COEF_SYMBOLS + c + COEF_MAX
            cc[group_quality(sym.quality, gi == 0) - 1] += np.bincount(
                k.reshape(-1), minlength=per_quality * COEF_SYMBOLS).reshape(cc.shape[1:])
    return ci, cm, cv, cc, cs


def _shrunk(c: np.ndarray, marg: np.ndarray, prior: float) -> np.ndarray:
    """Rows of counts -> probabilities, each shrunk toward `marg` (a row of probabilities)."""
    return (c + prior * marg) / (c.sum(-1, keepdims=True) + prior)


def fit_tables(counts, prior: float = 16.0) -> tuple[torch.Tensor, ...]:
    """(index, mode, vector, coefficient, static-flag counts) -> int32 (tables, mode_tables,
    mv_tables, coef_tables, flag_tables): each index row shrunk toward its stage's marginal, each
    coefficient row toward its token context's row (over the neighbour contexts), and that toward
    its position's (over all contexts), the other rows toward uniform."""
    ci, cm, cv, cc, cs = counts
    norm = lambda m: m / m.sum(-1, keepdims=True)
    marg = norm(ci.sum(1, keepdims=True).astype(np.float64) + 1.0)
    cmarg = norm(cc.sum(3, keepdims=True).astype(np.float64) + 0.05)
    # coefficient rows in two levels: a token's own contexts (summed over the neighbours') toward
    # the position's marginal, then each neighbour context toward its own context's row
    c6 = cc.reshape(*cc.shape[:3], COEF_OWN, NEAR_LEVELS, COEF_SYMBOLS)
    own = _shrunk(c6.sum(4).astype(np.float64), cmarg, prior)[:, :, :, :, None, :]
    coef = _shrunk(c6, own, prior).reshape(cc.shape)
    rows = lambda c: torch.from_numpy(quantise_rows((c + 0.5) / (c.sum(-1, keepdims=True) + 0.5 * c.shape[-1]))
                                      .astype(np.int32))
    as_table = lambda p: torch.from_numpy(quantise_rows(p).astype(np.int32))
    return as_table(_shrunk(ci, marg, prior)), rows(cm), rows(cv), as_table(coef), rows(cs)
