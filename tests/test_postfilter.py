import numpy as np
import pytest
import torch

from vqcodec import postfilter
from vqcodec.filterfit import Fit
from vqcodec.postfilter import ACTIVITY_EDGES, PLANES, SCALE, BIAS_SCALE, WEIGHT_MAX, apply, classify, filter_frames


def _at(p: np.ndarray):
    H, W = p.shape
    return lambda y, x: int(p[min(max(y, 0), H - 1), min(max(x, 0), W - 1)])


def reference_classes(p: np.ndarray, plane: int) -> np.ndarray:
    """The module docstring's classes, pixel by pixel in Python integers (one frame)."""
    shape, at = PLANES[plane], _at(p)
    H, W = p.shape

    def lap(y, x):  # the Laplacians of the plane with its edges repeated: |, -, \\, /
        c = 2 * at(y, x)
        return (abs(c - at(y - 1, x) - at(y + 1, x)), abs(c - at(y, x - 1) - at(y, x + 1)),
                abs(c - at(y - 1, x - 1) - at(y + 1, x + 1)), abs(c - at(y - 1, x + 1) - at(y + 1, x - 1)))

    out = np.empty(p.shape, dtype=np.int64)
    for y in range(H):
        for x in range(W):
            v = h = d0 = d1 = 0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    # a pixel of the 2-pixel border takes its Laplacians from the repeated plane there
                    a, b, c, d = lap(min(max(y + dy, -1), H), min(max(x + dx, -1), W))
                    v, h, d0, d1 = v + a, h + b, d0 + c, d1 + d
            act = sum(v + h >= e for e in ACTIVITY_EDGES)
            if max(v, h) * min(d0, d1) >= max(d0, d1) * min(v, h):
                direction = (1 if v > h else 2) if max(v, h) > 2 * min(v, h) else 0
            else:
                direction = (3 if d0 > d1 else 4) if max(d0, d1) > 2 * min(d0, d1) else 0
            out[y, x] = act if shape.directions == 1 else shape.directions * act + direction
    return out


def reference(p: np.ndarray, weights: np.ndarray, plane: int) -> np.ndarray:
    """The module docstring's filter, pixel by pixel in Python integers (one frame)."""
    shape, at = PLANES[plane], _at(p)
    classes = reference_classes(p, plane)
    out = np.empty_like(p)
    for y in range(p.shape[0]):
        for x in range(p.shape[1]):
            w = weights[classes[y, x]]
            s = sum(int(wk) * (at(y + dy, x + dx) + at(y - dy, x - dx) - 2 * at(y, x))
                    for wk, (dy, dx) in zip(w[:-1], shape.pairs))
            s += SCALE // BIAS_SCALE * int(w[-1]) + SCALE // 2
            out[y, x] = min(255, max(0, at(y, x) + s // SCALE))
    return out


def test_classes_are_the_formula_where_the_laplacians_are_largest():
    """0 / 255 pictures give the largest sums (9 x 510 each; classify holds them in 16 bits)."""
    rng = np.random.default_rng(1)
    checker = np.indices((8, 9)).sum(0) % 2 * 255
    for p in (checker, rng.integers(0, 2, (10, 12)) * 255, rng.integers(0, 256, (7, 13))):
        for plane in (0, 1):
            got = classify(torch.from_numpy(p).float()[None], PLANES[plane])[0].numpy()
            assert np.array_equal(got, reference_classes(p, plane))
    assert classify(torch.from_numpy(checker).float()[None], PLANES[0]).max() // PLANES[0].directions \
        == len(ACTIVITY_EDGES)


def test_the_filter_is_exactly_the_formula_at_every_pixel_edges_and_extremes_included():
    rng = np.random.default_rng(0)
    for plane in (0, 1):
        shape = PLANES[plane]
        p = rng.integers(0, 256, (9, 11))
        p[:3, :4] = 255  # flat, saturated corner: low classes, clamping
        p[5:, 6:] = np.arange(4 * 5).reshape(4, 5) * 8 % 256  # ramps: the directions
        w = rng.integers(-WEIGHT_MAX, WEIGHT_MAX + 1, (shape.classes, shape.width))
        w[0] = WEIGHT_MAX
        got = apply(torch.from_numpy(p).float()[None], w, plane)[0].numpy()
        assert np.array_equal(got, reference(p, w, plane))


def test_classes_cover_activity_and_direction():
    flat = torch.full((1, 8, 8), 100.0)
    assert classify(flat, PLANES[0]).unique().tolist() == [0]
    stripes = torch.zeros(1, 8, 8)
    stripes[:, ::2] = 200.0  # horizontal stripes: steep vertically, flat across
    n = PLANES[0].directions
    cls = classify(stripes, PLANES[0])[0, 2:-2, 2:-2]
    assert (cls % n == 1).all() and (cls // n == len(ACTIVITY_EDGES)).all()
    assert (classify(stripes.transpose(1, 2), PLANES[0])[0, 2:-2, 2:-2] % n == 2).all()
    # stripes two pixels wide along either diagonal: flat along them, steep across
    along = lambda outer: torch.from_numpy((outer(np.arange(10), np.arange(10)) // 2 % 2 * 200.0)[None]).float()
    assert (classify(along(np.add.outer), PLANES[0])[0, 2:-2, 2:-2] % n).unique().tolist() == [3]
    assert (classify(along(np.subtract.outer), PLANES[0])[0, 2:-2, 2:-2] % n).unique().tolist() == [4]
    assert classify(stripes, PLANES[1]).max() == len(ACTIVITY_EDGES)  # chroma: activity only


def test_a_filter_of_zeros_changes_nothing():
    p = torch.randint(0, 256, (2, 7, 5)).float()
    assert torch.equal(apply(p, postfilter.off(0), 0), p)
    frames = [object()]
    assert filter_frames(frames, None) is frames


def blurred(carphone_frames):
    """A real picture and a softened, offset copy of it (what a coarse decoder gives)."""
    src = torch.from_numpy(np.stack([f.y for f in carphone_frames[:2]])).float()
    dec = torch.nn.functional.avg_pool2d(src[:, None], 3, 1, 1, count_include_pad=False)[:, 0].round() + 2
    return src, dec.clamp(0, 255)


def test_the_fitted_filter_brings_a_degraded_picture_closer_and_costs_nothing_when_not_worth_it(carphone_frames):
    src, dec = blurred(carphone_frames)
    fit = Fit()
    fit.add(src, dec, 0)
    bits = lambda q: 5.0 * len(q)
    filt = fit.solve(1e-6, bits)
    assert filt[0].any() and not filt[1].any() and not filt[2].any()  # chroma saw no pixels
    err = lambda a: float(((a - src) ** 2).mean())
    assert err(apply(dec, filt[0], 0)) < 0.8 * err(dec)
    assert not any(w.any() for w in fit.solve(1e3, bits))  # too dear at that lambda: every class off
    assert all(np.abs(w).max() <= WEIGHT_MAX for w in filt)


def test_the_fit_on_padded_planes_sees_only_the_picture(carphone_frames):
    src, dec = blurred(carphone_frames)
    fit, cropped = Fit(), Fit()
    pad = lambda p: torch.nn.functional.pad(p[:, None], (0, 4, 0, 4), mode="replicate")[:, 0]
    chroma = torch.zeros(2, 74, 90)
    # the source in [0, 1] (as analysed), the decoded planes in 8-bit values (as the decoder has them)
    fit.add_group((pad(src) / 255.0, chroma, chroma), (pad(dec), chroma, chroma), 176, 144)
    cropped.add(src, dec, 0)
    fit._accumulate(), cropped._accumulate()
    assert np.allclose(fit.gram[0], cropped.gram[0]) and np.allclose(fit.cross[0], cropped.cross[0])


def test_the_fit_classifies_and_filters_each_sampled_pixel_as_the_decoder_does(carphone_frames):
    from vqcodec.postfilter import _pad, _pairs
    src, dec = blurred(carphone_frames)
    for plane in (0, 1):
        shape = PLANES[plane]
        for step in (1, 3):
            fit = Fit()
            fit.add(src, dec, plane, step)
            fit._accumulate()
            # the same statistics from the whole planes, classified and paired as `apply` does
            sub = (slice(None), slice(None, None, step), slice(None, None, step))
            cls = classify(dec, shape)[sub].reshape(-1)
            x = torch.stack([*((pair - 2 * dec)[sub].reshape(-1) for pair in _pairs(_pad(dec, shape.radius), shape)),
                             torch.ones(len(cls))], -1).double()
            y = (src - dec)[sub].reshape(-1).double()
            for c in range(shape.classes):
                m = cls == c
                assert np.allclose(fit.gram[plane][c], (x[m].t() @ x[m]).numpy())
                assert np.allclose(fit.cross[plane][c], (x[m].t() @ y[m]).numpy())
