import pytest
import torch

from vqcodec.quantizer import ResidualVQ


def data(n=4000, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(1.0, 0.1, d)


def test_decode_of_encode_equals_forward_in_eval():
    q = ResidualVQ(8, 4, 32)
    x = data()
    q.kmeans_init(x)
    q.eval()
    zq, idx, _ = q(x, 3)
    assert torch.equal(idx, q.encode(x, 3))
    assert torch.allclose(q.decode(idx), zq, atol=1e-6)


def test_each_stage_reduces_error():
    q = ResidualVQ(8, 5, 32)
    x = data()
    q.kmeans_init(x)
    errs = [float(((q.decode(q.encode(x, s)) - x) ** 2).mean()) for s in range(1, 6)]
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 0.25 * float((x ** 2).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ema_moves_codebook_towards_data_and_restarts_dead_codes(seed):
    torch.manual_seed(seed)
    q = ResidualVQ(4, 1, 16, decay=0.5)
    q.train()
    x = torch.randn(2000, 4) + 5.0  # far from the initial codebook near 0
    before = q.codebooks.clone()
    for _ in range(20):
        q(x, 1)
    assert float((q.codebooks - 5.0).abs().mean()) < float((before - 5.0).abs().mean())
    used = torch.bincount(q.encode(x, 1)[0], minlength=16)
    assert int((used > 0).sum()) >= 8  # without restarts all data maps to 1-2 codes


def test_quantizer_dropout_masks_depth_per_vector():
    q = ResidualVQ(8, 4, 32)
    x = data(100)
    q.kmeans_init(data())
    q.eval()
    depth = torch.tensor([1] * 50 + [4] * 50)
    zq, idx, _ = q(x, depth)
    assert torch.allclose(zq[:50], q.decode(idx[:1, :50]), atol=1e-6)
    assert torch.allclose(zq[50:], q.decode(idx[:, 50:]), atol=1e-6)
