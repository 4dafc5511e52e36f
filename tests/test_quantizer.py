import pytest
import torch

from vqcodec.model import from_tubes, to_tubes
from vqcodec.quantizer import NEAREST_CHUNK, ResidualVQ, scalar_quantise, tube_basis


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


def test_the_nearest_codeword_is_found_for_every_row_in_every_chunk():
    # more rows than two chunks and a part, as a 720p group's 57,600 tokens are
    x, book = data(2 * NEAREST_CHUNK + 777, 8, seed=3), data(64, 8, seed=4)
    got = ResidualVQ.nearest(x, book)
    assert got.shape == (len(x),)
    assert torch.equal(got, torch.cdist(x.double(), book.double()).argmin(1))


def test_each_stage_reduces_error():
    q = ResidualVQ(8, 5, 32)
    x = data()
    q.kmeans_init(x)
    errs = [float(((q.decode(q.encode(x, s)) - x) ** 2).mean()) for s in range(1, 6)]
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 0.25 * float((x ** 2).mean())


def test_the_tree_searchs_combinations_start_with_the_greedy_one_and_keep_each_stages_nearest():
    q = ResidualVQ(8, 2, 32)
    x = data(300, 8, seed=5)
    q.kmeans_init(x)
    books = q.codebooks.detach()
    idx, sums = ResidualVQ.candidates(x, books, (4, 3))
    assert idx.shape == (2, 300, 12) and sums.shape == (300, 12, 8)
    assert torch.equal(idx[:, :, 0], q.encode(x, 2))  # the greedy combination first
    assert torch.allclose(sums, books[0][idx[0]] + books[1][idx[1]], atol=1e-5)
    for i in range(0, 300, 37):
        first = torch.cdist(x[i:i + 1].double(), books[0].double())[0].argsort()[:4]
        assert torch.equal(idx[0, i].reshape(4, 3)[:, 0], first)  # stage 1: the 4 nearest, in order
        for a in range(4):  # stage 2: the 3 nearest to what each of those leaves
            left = x[i] - books[0][first[a]]
            assert set(idx[1, i].reshape(4, 3)[a].tolist()) == set(
                torch.cdist(left[None].double(), books[1].double())[0].argsort()[:3].tolist())


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


# -- the scalar coefficient layer ------------------------------------------------------------------
def test_tube_basis_is_orthonormal_and_starts_with_the_dc_of_each_plane():
    B = tube_basis(4, 2)
    assert B.shape == (48, 48)
    assert torch.allclose(B @ B.t(), torch.eye(48), atol=1e-5)
    # a flat grey group has only its three DCs (Y, U, V of temporal frequency 0) non-zero
    y = torch.full((1, 2, 8, 8), 0.7)
    u = torch.full((1, 2, 4, 4), 0.3)
    v = torch.full((1, 2, 4, 4), 0.6)
    tokens = to_tubes(y, u, v, 4).permute(0, 2, 3, 1).reshape(-1, 48)
    c = tokens @ B.t()
    assert c[:, 3:].abs().max() < 1e-5 and c[:, :3].abs().min() > 0.05


def test_tube_basis_orders_coefficients_from_coarse_to_fine():
    """A smooth picture (a gentle ramp, still over time) puts its energy in the first positions."""
    B = tube_basis(4, 2)
    ramp = torch.linspace(0.2, 0.8, 16)
    y = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(1, 2, 16, 16)
    u = torch.full((1, 2, 8, 8), 0.5)
    tokens = to_tubes(y, u, u, 4).permute(0, 2, 3, 1).reshape(-1, 48)
    energy = ((tokens - tokens.mean(0)) @ B.t()).pow(2).sum(0)
    assert energy[:12].sum() > 0.99 * energy.sum()


def test_tube_coefficients_reconstruct_the_planes():
    g = torch.Generator().manual_seed(1)
    y, u, v = torch.rand(1, 2, 8, 12, generator=g), torch.rand(1, 2, 4, 6, generator=g), torch.rand(1, 2, 4, 6, generator=g)
    B = tube_basis(4, 2)
    x = to_tubes(y, u, v, 4)
    flat = x.permute(0, 2, 3, 1).reshape(-1, 48)
    back = (flat @ B.t() @ B).reshape(1, 2, 3, 48).permute(0, 3, 1, 2)
    for a, b in zip(from_tubes(back, 2, 4), (y, u, v)):
        assert torch.allclose(a, b, atol=1e-5)


def test_scalar_quantise_rounds_with_a_dead_zone_and_clips():
    c = torch.tensor([0.0, 0.8, 0.84, -0.84, 1.9, -30.0])
    q = scalar_quantise(c, 1.0, 24, deadzone=1 / 3)
    assert q.tolist() == [0, 0, 1, -1, 2, -24]  # 0.8 < 1/2 + 1/3: zero; 0.84 above it: one
    assert scalar_quantise(torch.tensor([0.6]), 1.0, 24, deadzone=0.0).tolist() == [1]
    assert q.dtype == torch.int64
