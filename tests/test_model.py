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


def test_the_networks_floats_do_not_depend_on_threads_or_batch(model):
    # the codec synthesises from latent tokens (N, D) viewed as a grid; there a channels-first 1x1
    # convolution added in an order that depended on the thread count, and the encoder's choices,
    # and the decoder's pictures, must not
    net = model.net
    g = torch.Generator().manual_seed(5)
    h, w = 30, 50
    tokens = torch.randn(2, h * w, net.config.dim, generator=g) * 0.3
    x = planes(2, net.config.frames, 4 * h, 4 * w, seed=5)
    threads = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                out[n] = (net.synthesis(tokens[0].t().reshape(1, -1, h, w)), net.invert(*x, 1),
                          net.invert(*(p[1:] for p in x), 1))
    finally:
        torch.set_num_threads(threads)
    (syn1, z1, one1), (syn2, z2, one2) = out[1], out[2]
    assert all(torch.equal(a, b) for a, b in zip(syn1, syn2)) and torch.equal(z1, z2)
    assert torch.equal(one1[0], z1[1]) and torch.equal(one2[0], z2[1])  # a batch of one: the same floats
