import torch

from vqcodec.model import ModelConfig, VQVAE, from_tubes, to_tubes


def planes(b=2, t=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, h, w, generator=g), torch.rand(b, t, h // 2, w // 2, generator=g),
            torch.rand(b, t, h // 2, w // 2, generator=g))


def test_tubes_are_a_lossless_rearrangement():
    y, u, v = planes()
    x = to_tubes(y, u, v, 4)
    assert x.shape == (2, 2 * 24, 4, 6)
    y2, u2, v2 = from_tubes(x, 2, 4)
    assert torch.allclose(y, y2) and torch.allclose(u, u2) and torch.allclose(v, v2)


def test_untrained_model_is_identity_before_quantisation():
    net = VQVAE(ModelConfig(stages=2, codes=16))
    y, u, v = planes()
    z = net.analysis(y, u, v)
    y2, u2, v2 = net.synthesis(z)
    assert torch.allclose(y, y2, atol=1e-6) and torch.allclose(v, v2, atol=1e-6)


def test_decode_indices_matches_training_forward_in_eval(model):
    net = model.net
    y, u, v = planes(1, net.config.frames, 32, 32, seed=3)
    out = net(y, u, v, stages=3)
    idx = net.encode(y, u, v, 3)
    assert idx.shape == (1, 3, 8, 8)
    dec = net.decode(idx)
    assert torch.allclose(dec[0], out["y"].clamp(0, 1), atol=1e-5)
    assert torch.allclose(dec[2], out["v"].clamp(0, 1), atol=1e-5)


def test_invert_steps_bring_the_synthesis_back_to_real_planes(model, carphone_frames):
    from vqcodec.codec import pad_planes
    net = model.net
    y, u, v = pad_planes(carphone_frames[:4], net.config.patch, net.config.frames)
    x = to_tubes(y, u, v, net.config.patch)
    with torch.no_grad():
        assert torch.equal(net.invert(y, u, v, 0), net.analysis(y, u, v))
        err = [float(((net.decoder(net.invert(y, u, v, k)) - x) ** 2).mean()) for k in range(3)]
    # the analysis alone is ~43 dB from carphone; each step cuts the round trip's error several-fold
    assert err[1] < err[0] / 3 and err[2] < err[1]
