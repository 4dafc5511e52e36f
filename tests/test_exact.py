"""The exact networks: integer arithmetic that every device computes alike (vqcodec/exact.py)."""
from __future__ import annotations

import math

import pytest
import torch

from vqcodec import exact
from vqcodec.codec import pad_planes
from vqcodec.exact import (CONV_LIMIT, CONV_SPLIT, GELU_RANGE, LATENT_LIMIT, ExactNet, _combine, _split, dilate,
                           planes_to_tokens, tokens_to_planes)


@pytest.fixture(scope="module")
def net(model):
    return ExactNet(model.exact_tensors())


def _tokens(frames, patch=4):
    y, u, v = pad_planes(frames, patch, 2)
    planes = tuple(p[0].mul(255).round() for p in (y, u, v))
    return planes, planes_to_tokens(planes, patch), (y.shape[2] // patch, y.shape[3] // patch)


def test_split_and_combine_equal_the_rounding_in_64_bit_integers():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-CONV_LIMIT, CONV_LIMIT + 1, (100_000,), generator=g)
    hi, lo = _split(x.float(), CONV_SPLIT)
    assert torch.equal(hi.long() * 2 ** CONV_SPLIT + lo.long(), x)
    assert hi.abs().max() <= CONV_LIMIT >> CONV_SPLIT and lo.abs().max() <= 2 ** (CONV_SPLIT - 1)
    # accumulators as the products give them: below 2**23 each, their combination up to 2**30
    a = torch.randint(-(1 << 23), 1 << 23, (100_000,), generator=g)
    b = torch.randint(-(1 << 23), 1 << 23, (100_000,), generator=g)
    for bits, shift in ((7, 15), (6, 11)):
        want = torch.div(a * 2 ** bits + b + 2 ** (shift - 1), 2 ** shift, rounding_mode="floor")
        assert torch.equal(_combine(a.float(), (b + 2 ** (shift - 1)).float(), bits, shift).long(), want)  # the half in the bias


def test_the_exact_networks_are_the_float_networks_to_within_a_level(model, net, carphone_frames):
    planes, x, shape = _tokens(carphone_frames[:2])
    with torch.no_grad():
        y, u, v = (p[0].clamp(0, 1).mul(255).round() for p in model.net.synthesis(
            model.net.analysis(*(p[None] / 255 for p in planes))))
    ours = net.synthesis(net.invert(x, shape, 0), shape)
    theirs = planes_to_tokens((y, u, v), 4)
    assert (ours - theirs).abs().max() <= 1
    assert (ours != theirs).float().mean() < 0.1  # about 6 % of the pixels, by one level
    # the round trip is as good as the float network's
    psnr = lambda a: 10 * math.log10(255 ** 2 / float(((a - x) ** 2).mean()))
    assert psnr(ours) > psnr(theirs) - 0.05
    assert torch.equal(planes_to_tokens(tokens_to_planes(ours, shape, 2, 4), 4), ours)


@pytest.mark.parametrize("share", [0.02, 0.3])
def test_a_part_of_the_grid_computes_the_whole_grids_values_there(net, carphone_frames, share):
    _, x, shape = _tokens(carphone_frames[:2])
    need = torch.rand(len(x), generator=torch.Generator().manual_seed(1)) < share
    need[0] = need[-1] = True  # the corners: edges repeated
    for steps in (0, 1):
        assert torch.equal(net.invert(x, shape, steps)[need], net.invert(x, shape, steps, need=need)[need])
    z = net.invert(x, shape, 1)
    assert torch.equal(net.synthesis(z, shape)[need], net.synthesis(z, shape, need)[need])


def test_the_convolution_and_the_matrix_products_agree(net, carphone_frames, monkeypatch):
    # the CPU uses oneDNN's convolution, a GPU matrix products: the same integers either way
    _, x, shape = _tokens(carphone_frames[:2])
    z = net.invert(x, shape, 1)
    blk = net.decoder[0]
    conv = net._block(blk, z, shape, None)
    monkeypatch.setattr(net, "convolve", False)
    assert torch.equal(conv, net._block(blk, z, shape, None))
    assert torch.equal(conv, net._block(blk, z, shape, torch.arange(len(z))))  # gathered, one product


def test_hostile_latents_stay_exact_and_bounded(net):
    # latents far outside anything a model makes (a damaged or hostile file): clamped, integers
    shape = (6, 10)
    g = torch.Generator().manual_seed(2)
    z = torch.randint(-LATENT_LIMIT, LATENT_LIMIT + 1, (60, 48), generator=g).float()
    z[::7] = LATENT_LIMIT
    out = net.synthesis(z, shape)
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    back = net.invert(out, shape, 1)
    assert torch.equal(back, back.round()) and back.abs().max() <= LATENT_LIMIT


def test_the_bounds_are_checked_when_a_model_loads(model):
    tensors = dict(model.exact_tensors())
    tensors["decoder.0.w1"] = tensors["decoder.0.w1"] * 64  # a filter too large for float32 products
    with pytest.raises(ValueError):
        ExactNet(tensors)
    tensors = dict(model.exact_tensors())
    tensors["gelu"] = tensors["gelu"][:-1]
    with pytest.raises(ValueError):
        ExactNet(tensors)
    assert len(model.exact_tensors()["gelu"]) == 2 * GELU_RANGE + 1


def test_dilate_grows_a_mask_by_whole_tokens():
    m = torch.zeros(5 * 7, dtype=torch.bool)
    m[2 * 7 + 3] = True
    assert int(dilate(m, (5, 7)).sum()) == 9 and int(dilate(m, (5, 7), 2).sum()) == 25
    assert torch.equal(dilate(m, (5, 7), 0), m)


def test_conversion_is_deterministic_and_in_the_model_file(model, tmp_path):
    from vqcodec.modelfile import load_model, save_model
    path = tmp_path / "m.pt"
    fp = save_model(path, model.net, model.tables)
    again = load_model(path)
    assert again.fingerprint == fp
    for name, t in exact.convert(model.net).items():
        assert torch.equal(again.exact[name], t), name
