"""The networks of the decoding loop in exact integer arithmetic: the same pictures on every device.

Everything the decoder computes from the symbols it reads, and feeds back into the prediction of
later groups, is an integer computed exactly, so a file decodes to the same pictures whatever the
CPU, its kernels, the thread count or a GPU (Balle et al., "Integer networks for data compression
with latent-variable models", ICLR 2019).  Training stays in floating point; `convert` turns a
trained network into integers when a model file is written, and the model file stores them
(modelfile.py): no float of the trained weights is rounded again when decoding.

Units (chosen so that every rescaling is a power of two):
  latent   1 / LATENT_UNIT = 1 / 4080 = 1 / (255 x 16) of the float network's latent, so a tube
           of 8-bit pixels p is exactly 16 p - 2040;
  hidden   4 / LATENT_UNIT = 1 / 1020 (the GELU's input and output);
  weights  2**-e1 (3x3 convolution) and 2**-e2 (1x1 projection), per block (`convert`).
A residual block x -> x + W2 gelu(W1 * x + b1) + b2 (W1 3x3 with edges repeated, W2 1x1) is
  h = clamp(floor((W1 * clamp(x, +-CONV_LIMIT) + B1) / 2**(e1 + 2) + 1/2), +-GELU_RANGE)
  g = GELU[h]                                   (a table of integers stored in the model file)
  x = clamp(x + floor((W2 g + B2) / 2**(e2 - 2) + 1/2), +-LATENT_LIMIT)
with B1, B2 the biases in the accumulators' units.  The sums are computed as float32 matrix
products of integers whose every product and partial sum stays below 2**24, so BLAS, oneDNN or a
GPU may add them in any order and get the same value: each product's input is split into a high
and a low part (x = 2**7 hi + lo, g = 2**6 hi + lo, both parts small), each part's product is
exact, and `_combine` joins them with the rounding above in exact float32 steps.  `check_bounds`
proves the bounds for a model's integers whatever the input.  Latents between the networks are
integers below 2**24, held in float32.

Because the arithmetic is exact, a network evaluated on a part of the grid gives exactly the
values of the whole grid there: the decoder computes only the tokens it needs (`need` masks).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import from_tubes, to_tubes

LATENT_UNIT = 4080            # latent units per unit of the float network's latent (255 x 16)
PIXEL_UNIT = 16               # latent units per 8-bit pixel level
PIXEL_ZERO = 2040             # the latent of a pixel p is PIXEL_UNIT p - PIXEL_ZERO (127.5 x 16)
HIDDEN_UNIT = LATENT_UNIT // 4  # hidden units per unit (1020)
WEIGHT_BITS = 13              # weights in units of 2**-13 (fewer where a filter is too large: `convert`)
CONV_LIMIT = 1 << 13          # a 3x3 convolution's input is clamped to +-2 float units ...
CONV_SPLIT = 7                # ... and split as 2**7 hi + lo, |hi| <= 64, |lo| <= 64
GELU_RANGE = 8 * HIDDEN_UNIT  # hidden values are clamped to +-8; the GELU table covers them
PROJ_SPLIT = 6                # a 1x1 projection's input as 2**6 hi + lo, |hi| <= 128, |lo| <= 32
LATENT_LIMIT = 1 << 16        # latents are clamped to +-16 float units
BASIS_BITS = 14               # the tube basis in units of 2**-14
STEP_UNIT = 16                # a coefficient step in units of 1 / (LATENT_UNIT x 16)
EXACT = float(1 << 24)        # float32 holds every integer below this exactly
SPARSE = 0.35                 # below this share of the grid, a layer gathers only the tokens needed
                              # (measured: at 0.3 about 0.8 x the whole grid's time, at 0.5 1.4 x)


def gelu_table() -> torch.Tensor:
    """GELU on the hidden grid -GELU_RANGE .. GELU_RANGE, rounded to hidden units (int32).  Computed
    once, when a model file is written, and stored in it: decoders read it, never recompute it."""
    h = torch.arange(-GELU_RANGE, GELU_RANGE + 1, dtype=torch.float64) / HIDDEN_UNIT
    return torch.round(F.gelu(h) * HIDDEN_UNIT).to(torch.int32)


def int_basis(basis: torch.Tensor) -> torch.Tensor:
    """The orthonormal tube basis (D, D) in units of 2**-BASIS_BITS (int32), stored in the model file."""
    return torch.round(basis.double() * 2 ** BASIS_BITS).to(torch.int32)


def step_units(step: float) -> int:
    """A coefficient step (float latent units) in units of 1 / (LATENT_UNIT x STEP_UNIT): an integer."""
    return int(round(step * LATENT_UNIT * STEP_UNIT))


def _bits(l1: float, limit: float, bias: float, split: int, shift: int) -> int:
    """The most weight bits e (at most WEIGHT_BITS) that keep a split product exact (`check_bounds`):
    l1 the largest sum of |weights| of an output (float), limit the input's bound, bias the
    largest |bias| in input units, shift the rescaling's exponent less e."""
    for e in range(WEIGHT_BITS, 0, -1):
        part = (l1 * 2 ** e + 1) * (limit / 2 ** split + 1)  # |hi| and |lo| are at most limit / 2**split
        if e + shift > split and part + bias * 2 ** e + 1 + 2 ** (e + shift) < EXACT:
            return e
    raise ValueError("a network's weights are too large for exact arithmetic")


def convert(net) -> dict[str, torch.Tensor]:
    """A trained VQVAE -> its exact form: integer tensors (int32) by name, for the model file."""
    from .quantizer import tube_basis
    cfg = net.config
    out = {"gelu": gelu_table(), "basis": int_basis(tube_basis(cfg.patch, cfg.frames)),
           "codebooks": torch.round(net.quantizer.codebooks.detach().double() * LATENT_UNIT).to(torch.int32)}
    for part in ("encoder", "decoder"):
        for i, blk in enumerate(getattr(net, part)):
            w1 = blk.conv.weight.detach().double()              # (hidden, D, 3, 3)
            w2 = blk.proj.weight.detach().double()[:, :, 0, 0]  # (D, hidden)
            b1 = blk.conv.bias.detach().double() * LATENT_UNIT  # in latent units
            b2 = blk.proj.bias.detach().double() * HIDDEN_UNIT  # in hidden units
            e1 = _bits(float(w1.abs().sum((1, 2, 3)).max()), CONV_LIMIT, float(b1.abs().max()), CONV_SPLIT, 2)
            e2 = _bits(float(w2.abs().sum(1).max()), GELU_RANGE, float(b2.abs().max()), PROJ_SPLIT, -2)
            out[f"{part}.{i}.w1"] = torch.round(w1 * 2 ** e1).to(torch.int32)
            out[f"{part}.{i}.b1"] = torch.round(b1 * 2 ** e1).to(torch.int32)
            out[f"{part}.{i}.w2"] = torch.round(w2 * 2 ** e2).to(torch.int32)
            out[f"{part}.{i}.b2"] = torch.round(b2 * 2 ** e2).to(torch.int32)
            out[f"{part}.{i}.bits"] = torch.tensor([e1, e2], dtype=torch.int32)
    return out


@dataclass
class Block:
    w1: torch.Tensor  # (9, D, hidden) float32 integers, taps in raster order (dy, dx)
    b1: torch.Tensor  # (hidden,) with the rounding's half (2**(e1 + 1)) added
    w2: torch.Tensor  # (hidden, D)
    b2: torch.Tensor  # (D,) with the rounding's half (2**(e2 - 3)) added
    w1c: torch.Tensor  # (hidden, D, 3, 3) the same, as a convolution's weights (channels last)
    e1: int           # weight bits of the convolution
    e2: int           # and of the projection


class ExactNet:
    """The exact analysis and synthesis of one model (`convert`'s integers), on any device.

    Latents are (N, D) float32 tensors of integers (tokens of an h x w grid, raster order)."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: str = "cpu"):
        # a whole grid's 3x3 products as oneDNN's convolution on a CPU, unless it was told to trade
        # float32 for bf16 or TF32 (torch.backends.mkldnn.conv.fp32_precision); else matrix products
        conv_precision = getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", "none")
        self.convolve = device == "cpu" and conv_precision in ("none", "ieee")
        dev = lambda t: t.to(device=device, dtype=torch.float32).contiguous()
        if device != "cpu" or torch.get_float32_matmul_precision() != "highest":
            # no reduced-precision products (TF32, bf16): every float32 product must be exact
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

        def blocks(part):
            out, i = [], 0
            while f"{part}.{i}.w1" in tensors:
                w1, (e1, e2) = tensors[f"{part}.{i}.w1"], tensors[f"{part}.{i}.bits"].tolist()
                out.append(Block(dev(w1.permute(2, 3, 1, 0).reshape(9, w1.shape[1], w1.shape[0])),
                                 dev(tensors[f"{part}.{i}.b1"] + 2 ** (e1 + 1)), dev(tensors[f"{part}.{i}.w2"].t()),
                                 dev(tensors[f"{part}.{i}.b2"] + 2 ** (e2 - 3)),
                                 dev(w1).contiguous(memory_format=torch.channels_last), e1, e2))
                i += 1
            return out

        self.encoder, self.decoder = blocks("encoder"), blocks("decoder")
        self.gelu = tensors["gelu"].to(device=device, dtype=torch.float32)
        self.codebooks = tensors["codebooks"].to(device=device, dtype=torch.float32)
        self.basis = tensors["basis"].to(device=device, dtype=torch.float64)
        check_bounds(self.encoder + self.decoder, len(self.gelu))

    # -- layers ----------------------------------------------------------------------------------
    def _block(self, blk: Block, x: torch.Tensor, shape: tuple[int, int], at: torch.Tensor | None) -> torch.Tensor:
        """One residual block on latents x (N, D) (float32 integers) of an h x w grid -> its output
        at the tokens `at` (positions; all when None), (len(at), D).  x needs to be right only at
        `at` and their 3 x 3 neighbours (edges repeated)."""
        h, w = shape
        d = x.shape[1]
        if at is None:
            # the grid with its edges repeated, 2 rows more (one gather), so that each tap is a
            # contiguous row range: outputs on a grid w + 2 wide, the two extra columns dropped
            n, wp = h * (w + 2), w + 2
            index = _padded_index(h, w, x.device)
            if self.convolve:  # the padded grid alone
                index = index[:-2]
            both = x.new_empty(2, len(index), d)
            hi, lo = _split(x[index].clamp_(-CONV_LIMIT, CONV_LIMIT), CONV_SPLIT, both)
            if self.convolve:
                # oneDNN's direct convolution (multiply-adds only, never Winograd), both parts at once
                grids = both.reshape(2, h + 2, wp, d).permute(0, 3, 1, 2)
                acc = F.conv2d(grids, blk.w1c).permute(0, 2, 3, 1).reshape(2, h * w, -1)
                hid = _combine(acc[0], acc[1].add_(blk.b1), CONV_SPLIT, blk.e1 + 2)
            else:  # a GPU's library may pick Winograd or FFT convolutions: matrix products only
                acc = []
                for part, bias in ((hi, None), (lo, blk.b1)):
                    a = part[:n] @ blk.w1[0] if bias is None else torch.addmm(bias, part[:n], blk.w1[0])
                    for k in range(1, 9):
                        off = (k // 3) * wp + k % 3
                        a.addmm_(part[off:off + n], blk.w1[k])
                    acc.append(a)
                hid = _combine(acc[0], acc[1], CONV_SPLIT, blk.e1 + 2).reshape(h, wp, -1)[:, :w].reshape(h * w, -1)
            res = x
        else:
            r, c = at // w, at % w
            taps = torch.stack([((r + dy).clamp(0, h - 1) * w + (c + dx).clamp(0, w - 1))
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 1).reshape(-1)
            both = x.new_empty(2, len(taps), d)
            _split(x[taps].clamp_(-CONV_LIMIT, CONV_LIMIT), CONV_SPLIT, both)
            parts = both.reshape(2 * len(at), 9 * d) @ blk.w1.reshape(9 * d, -1)
            hid = _combine(parts[:len(at)], parts[len(at):].add_(blk.b1), CONV_SPLIT, blk.e1 + 2)
            res = x[at]
        at = hid.clamp_(-GELU_RANGE, GELU_RANGE).add_(GELU_RANGE).to(torch.int32)
        g = self.gelu.index_select(0, at.reshape(-1)).reshape(at.shape)
        ghi, glo = _split(g, PROJ_SPLIT)
        out = _combine(ghi @ blk.w2, torch.addmm(blk.b2, glo, blk.w2), PROJ_SPLIT, blk.e2 - 2)
        return out.add_(res).clamp_(-LATENT_LIMIT, LATENT_LIMIT)

    def _stack(self, blocks: list[Block], x: torch.Tensor, shape: tuple[int, int],
               need: torch.Tensor | None) -> torch.Tensor:
        """Blocks in turn on latents x (N, D) (float32 integers); with a token mask `need` (N,), only the
        outputs there are right (the others are x's): each block computes the tokens within
        (blocks after it) of `need`."""
        if need is not None and float(need.float().mean()) >= SPARSE:
            need = None
        if need is None:
            for blk in blocks:
                x = self._block(blk, x, shape, None)
            return x
        masks = [need]
        for _ in blocks[1:]:
            masks.append(dilate(masks[-1], shape))
        x = x.clone()
        for blk, m in zip(blocks, reversed(masks)):
            at = torch.nonzero(m)[:, 0]
            if len(at):
                x[at] = self._block(blk, x, shape, at)
        return x

    # -- the networks ----------------------------------------------------------------------------
    def synthesis(self, z: torch.Tensor, shape: tuple[int, int], need: torch.Tensor | None = None) -> torch.Tensor:
        """Latent tokens (N, D) -> the tubes' 8-bit pixels (N, D) float32 (0..255); only the tokens
        in `need` are right when given."""
        out = self._stack(self.decoder, z, shape, need)
        return out.add_(PIXEL_ZERO + PIXEL_UNIT // 2).mul_(1.0 / PIXEL_UNIT).floor_().clamp_(0, 255)

    def invert(self, x: torch.Tensor, shape: tuple[int, int], steps: int, need: torch.Tensor | None = None) -> torch.Tensor:
        """Tubes of pixels (N, D) (8-bit values, or a prediction's fractions of them) -> the latent
        whose synthesis gives them back more closely than the analysis' own: the analysis, then
        `steps` fixed-point corrections z += x - decoder(z).  Only the tokens in `need` are right
        when given (each stage computes what the next needs)."""
        t = tubes(x)
        reach = lambda k: None if need is None else dilate(need, shape, len(self.decoder) * k)
        z = self._stack(self.encoder, t, shape, reach(steps))
        for s in range(steps):  # each step's output is needed as far as the steps after it reach
            z = (z + (t - self._stack(self.decoder, z, shape, reach(steps - 1 - s)))).clamp_(-LATENT_LIMIT, LATENT_LIMIT)
        return z

    def vq(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (S, N) of the first S stages -> the sum of their codewords (N, D), exact integers."""
        z = self.codebooks[0][indices[0]]
        for k in range(1, indices.shape[0]):
            z = z + self.codebooks[k][indices[k]]
        return z


def tubes(x: torch.Tensor) -> torch.Tensor:
    """Tubes of pixel values (8-bit levels, or multiples of 1/65536 of one below 256) -> latent
    units, rounded: floor(16 p - 2040 + 1/2), exact in float32."""
    return x.float().mul(PIXEL_UNIT).sub_(PIXEL_ZERO).add_(0.5).floor_()


def dilate(mask: torch.Tensor, shape: tuple[int, int], rings: int = 1) -> torch.Tensor:
    """Token mask (N,) grown by `rings` tokens in every direction (8-connected)."""
    if rings <= 0:
        return mask
    m = mask.reshape(1, 1, *shape).float()
    return (F.max_pool2d(m, 2 * rings + 1, 1, rings) > 0).reshape(-1)


def _split(x: torch.Tensor, bits: int, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integers x -> (hi, lo) with x = 2**bits hi + lo, hi = x / 2**bits rounded half to even, exact
    (into out[0], out[1] when given)."""
    out = x.new_empty(2, *x.shape) if out is None else out
    hi = torch.mul(x, 2.0 ** -bits, out=out[0]).round_()
    return hi, torch.sub(x, hi, alpha=2 ** bits, out=out[1])


def _combine(hi: torch.Tensor, lo: torch.Tensor, bits: int, shift: int) -> torch.Tensor:
    """floor((2**bits hi + lo) / 2**shift + 1/2) for integers hi, lo below 2**24 (float32), in
    exact float32 steps although 2**bits hi + lo may not be: hi = 2**(shift - bits) q + r with
    0 <= r < 2**(shift - bits), so the value is q + floor((2**bits r + lo') / 2**shift) with
    lo' = lo + 2**(shift - 1) (the callers' biases carry the half: Block.b1, b2); every term below
    2**24 (`check_bounds`).  Overwrites hi and lo."""
    q = hi.mul(2.0 ** (bits - shift)).floor_()  # (torch.div's floor mode: twice the time)
    r = hi.sub_(q, alpha=2 ** (shift - bits))
    return lo.add_(r, alpha=2 ** bits).mul_(2.0 ** -shift).floor_().add_(q)


@functools.lru_cache(maxsize=8)
def _padded_index(h: int, w: int, device) -> torch.Tensor:
    """Token positions of an h x w grid with its edges repeated one token out, then two more (any)
    rows: ((h + 2) (w + 2) + 2,) (read-only)."""
    r = torch.arange(-1, h + 1).clamp(0, h - 1)
    c = torch.arange(-1, w + 1).clamp(0, w - 1)
    idx = (r[:, None] * w + c[None, :]).reshape(-1)
    return torch.cat([idx, idx[-2:]]).to(device)


def check_bounds(blocks: list[Block], table: int) -> None:
    """Every product and partial sum of the blocks' float32 products below 2**24 whatever the
    input (the inputs are clamped: latents to CONV_LIMIT, hidden values to GELU_RANGE), and the
    GELU table covering the hidden range."""
    if table != 2 * GELU_RANGE + 1:
        raise ValueError("the GELU table does not cover the hidden range")
    for b in blocks:
        if not (b.e1 + 2 > CONV_SPLIT and b.e2 - 2 > PROJ_SPLIT):
            raise ValueError("a block's weight bits are too few for its split products")
        for w, bias, limit, split, shift in ((b.w1.abs().sum((0, 1)), b.b1, CONV_LIMIT, CONV_SPLIT, b.e1 + 2),
                                             (b.w2.abs().sum(0), b.b2, GELU_RANGE, PROJ_SPLIT, b.e2 - 2)):
            part = float(w.max()) * (limit / 2 ** split + 1)
            if part + float(bias.abs().max()) + 2 ** shift >= EXACT:
                raise ValueError("a network's integers are too large for exact float32 arithmetic")


def planes_to_tokens(planes: tuple[torch.Tensor, ...], patch: int) -> torch.Tensor:
    """Planes y (T, H, W), u, v (T, H/2, W/2) -> their tubes as token rows (h * w, T * C) (model.to_tubes'
    layout, not centred), in the planes' own units."""
    x = to_tubes(*(p[None] for p in planes), patch, centre=0)[0]
    return x.reshape(x.shape[0], -1).t()


def tokens_to_planes(x: torch.Tensor, shape: tuple[int, int], frames: int, patch: int) -> tuple[torch.Tensor, ...]:
    """Inverse of planes_to_tokens: (h * w, T * C) -> y (T, H, W), u, v (T, H/2, W/2)."""
    return tuple(p[0] for p in from_tubes(x.t().reshape(1, -1, *shape), frames, patch, centre=0))


def rebuild_change(coefs: torch.Tensor, basis: torch.Tensor, step: int) -> torch.Tensor:
    """Quantised coefficients (N, D) integers, the integer basis (D, D) (2**-BASIS_BITS) and a step
    (step_units) -> the change they code in latent units (N, D) float32:
    floor(coefs @ basis x step / (2**BASIS_BITS x STEP_UNIT) + 1/2), exact in float64 (|coefs| <= 127:
    every sum below 2**42)."""
    return (coefs.double() @ basis).mul_(step / (2 ** BASIS_BITS * STEP_UNIT)).add_(0.5).floor_().float()


def mean2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean of two latents, rounded half up: floor((a + b + 1) / 2), exact in float32."""
    return (a + b + 1).mul_(0.5).floor_()
