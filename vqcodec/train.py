"""Training: a folder of clips -> a complete codec model (network + integer entropy tables).

Data.  Every video PyAV opens under the folder (recursively) is a source.  Nothing holds the
corpus in memory: each data worker keeps a few *windows* of consecutive decoded frames and cuts
random crops of ``frames`` frames from them.  The stream is a pure function of
(seed, rank, step): window k is drawn by an RNG seeded with (seed, rank, k), and the batch of
step s takes its crops, with an RNG seeded with (seed, rank, s), from windows
s // REFRESH - WINDOWS + 1 .. s // REFRESH.  Resuming at step s therefore gives exactly the
batches an uninterrupted run would have seen, whatever the number of data workers.

Optimisation.  Loss = PSNR-YUV-weighted MSE (6:1:1 over Y, U, V) + beta * commitment
(+ an optional MS-SSIM term, off by default).  Codebooks follow the encoder by exponential
moving averages with dead-code restarts (quantizer.py); every temporal group of a batch gets a
random VQ depth (quantizer dropout), so one model serves every quality.  On CUDA the network
runs in bf16 autocast (the VQ search stays float32; --compile compiles its conv stacks); under
``torchrun`` the same command trains with DistributedDataParallel, codebook statistics
all-reduced across ranks.

Checkpoints hold everything needed to resume exactly (weights, optimiser, step, RNG states,
the training options) and are written atomically.  When the steps are done the entropy tables
are fitted on the training clips and the finished model is written (modelfile.py).
"""
from __future__ import annotations

import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from .errors import InputError, VqvError
from .metrics import ms_ssim_tensor
from .model import ModelConfig, VQVAE
from .modelfile import load_model, save_model
from .video import Frame, centre_crop, count_frames, probe, read_frames, read_window

WINDOWS = 4         # decoded windows each data worker keeps
WINDOW_FRAMES = 16  # consecutive frames per window
REFRESH = 8         # steps between two new windows
VAL_FRAMES = 8      # frames per validation clip
VAL_SIDE = 256      # validation frames are centre crops of at most this size


# -- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    path: str
    frames: int
    width: int
    height: int

    @property
    def weight(self) -> float:  # pixels, with long clips capped so one clip cannot dominate
        return self.width * self.height * min(self.frames, 256)


def find_clips(folder: Path) -> list[Source]:
    """Every file under `folder` (recursively) that PyAV opens as a video, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of clips")
    out = []
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        try:
            info = probe(p)
            n = count_frames(p)
        except VqvError:
            continue  # not a video: READMEs, licences, ...
        if n > 0 and info.width >= 2 and info.height >= 2:
            out.append(Source(str(p), n, info.width, info.height))
    if not out:
        raise InputError(f"{folder}: no video PyAV can open in this folder")
    return out


def _even(f: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = f.height // 2 * 2, f.width // 2 * 2
    return f.y[:h, :w], f.u[: h // 2, : w // 2], f.v[: h // 2, : w // 2]


class CropStream(IterableDataset):
    """Batches (y, u, v) of shape (batch, frames, H, W) / (.., H/2, W/2) in [0, 1], one per step."""

    def __init__(self, sources: list[Source], *, batch: int, crop: tuple[int, int], frames: int,
                 seed: int = 0, rank: int = 0, start: int = 0):
        self.sources, self.batch, self.crop, self.frames = sources, batch, crop, frames
        self.seed, self.rank, self.start = seed, rank, start
        w = np.array([s.weight for s in sources], dtype=np.float64)
        self.p = w / w.sum()

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, *key])

    def window(self, k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = self._rng(1, k)
        src = self.sources[rng.choice(len(self.sources), p=self.p)]
        start = int(rng.integers(0, max(1, src.frames - WINDOW_FRAMES) + 1))
        frames = read_window(Path(src.path), start, max(WINDOW_FRAMES, self.frames))
        if not frames:
            frames = list(read_frames(Path(src.path), limit=max(WINDOW_FRAMES, self.frames)))
        frames += [frames[-1]] * (self.frames - len(frames))  # stills and short clips: hold the last
        return [_even(f) for f in frames]

    def make_batch(self, step: int, cache: dict) -> tuple[torch.Tensor, ...]:
        newest = step // REFRESH
        keys = range(max(0, newest - WINDOWS + 1), newest + 1)
        for k in keys:
            if k not in cache:
                cache[k] = self.window(k)
        for k in [k for k in cache if k < keys[0]]:
            del cache[k]
        rng = self._rng(2, step)
        H, W = self.crop
        ys, us, vs = [], [], []
        for _ in range(self.batch):
            win = cache[keys[int(rng.integers(len(keys)))]]
            t0 = int(rng.integers(0, len(win) - self.frames + 1))
            clip = win[t0:t0 + self.frames]
            h, w = clip[0][0].shape
            i0 = int(rng.integers(0, max(0, h - H) // 2 + 1)) * 2
            j0 = int(rng.integers(0, max(0, w - W) // 2 + 1)) * 2
            flip = bool(rng.integers(2))
            planes = []
            for c, (ch, cw) in enumerate(((H, W), (H // 2, W // 2), (H // 2, W // 2))):
                s = 1 if c == 0 else 2
                a = np.stack([f[c][i0 // s:i0 // s + ch, j0 // s:j0 // s + cw] for f in clip])
                if a.shape[1] < ch or a.shape[2] < cw:  # a clip smaller than the crop: tile it
                    a = np.tile(a, (1, -(-ch // a.shape[1]), -(-cw // a.shape[2])))[:, :ch, :cw]
                planes.append(a[:, :, ::-1] if flip else a)
            ys.append(planes[0]); us.append(planes[1]); vs.append(planes[2])
        f = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).float().div_(255.0)
        return f(ys), f(us), f(vs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        cache: dict = {}
        step = self.start + worker
        while True:
            yield self.make_batch(step, cache)
            step += workers


# -- options, checkpoints -------------------------------------------------------------------------
@dataclass
class TrainOptions:
    steps: int = 20000
    batch: int = 16                    # clips per step (per GPU under torchrun)
    crop: tuple[int, int] = (128, 128)  # luma crop, H x W
    frames: int = 2                    # frames per sample: a multiple of the model's group
    lr: float = 1e-3
    warmup: int = 100
    beta: float = 0.25                 # commitment weight
    ms_ssim: float = 0.0               # weight of (1 - MS-SSIM) on luma; 0 keeps the loss pure MSE
    seed: int = 0
    workers: int = -1                  # data processes; -1: none on CPU, up to 8 on CUDA
    checkpoint_every: int = 500
    val_every: int = 500
    log_every: int = 10
    minutes: float | None = None       # stop (after a checkpoint) once this much time has passed
    table_frames: int = 32             # frames per clip used to fit the entropy tables
    # torch.compile the conv stacks.  Off by default: PyTorch 2.13's compiler fails on the backward
    # of the replicate-padded convs in channels-last (seen on the CPU; the CUDA path is untested)
    compile: bool = False


@dataclass
class TrainResult:
    step: int
    finished: bool
    checkpoint: Path
    model: Path | None = None
    fingerprint: str = ""
    validation: dict = field(default_factory=dict)
    seconds: float = 0.0
    rank: int = 0

    def summary(self) -> str:
        if self.rank:
            return f"rank {self.rank}: {self.step} steps done"
        if not self.finished:
            return (f"stopped at step {self.step} (time limit); checkpoint {self.checkpoint}: "
                    f"continue with --resume {self.checkpoint}")
        s = f"trained {self.step} steps in {self.seconds / 60:.1f} min; wrote {self.model} (model {self.fingerprint})"
        if self.validation:
            s += "; validation " + ", ".join(f"depth {d}: {v['psnr_yuv']:.2f} dB ~{v['bpp']:.3f} bpp"
                                             for d, v in self.validation.items())
        return s


def _rng_state(device: str) -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)


def _options_dict(opts: TrainOptions) -> dict:
    d = asdict(opts)
    d["crop"] = list(opts.crop)
    return d


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise VqvError(f"{path}: no such checkpoint")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VqvError(f"{path}: not a vqcodec checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ck, dict) or "optimizer" not in ck or "step" not in ck:
        raise VqvError(f"{path}: not a vqcodec training checkpoint")
    return ck


def parse_training(*, crop: str, stages: int | None = None, hidden: int | None = None, init: Path | None = None,
                   **options) -> tuple[TrainOptions, ModelConfig]:
    """Command-line values -> (options, architecture); the architecture defaults to --init's."""
    try:
        h, w = (int(x) for x in crop.lower().split("x"))
    except ValueError:
        raise VqvError(f"--crop must look like 128x128, got {crop!r}") from None
    base = load_model(init, need_tables=False).config if init is not None else ModelConfig()
    changes = {k: v for k, v in (("stages", stages), ("hidden", hidden)) if v is not None}
    if any(v < 1 for v in changes.values()) or options["steps"] < 1 or options["batch"] < 1:
        raise VqvError("--steps, --batch, --stages and --hidden must be positive")
    return TrainOptions(crop=(h, w), **options), replace(base, **changes)


# -- losses and measures --------------------------------------------------------------------------
def yuv_mse(out: dict, y, u, v) -> torch.Tensor:
    return (6 * ((out["y"].float() - y) ** 2).mean() + ((out["u"].float() - u) ** 2).mean()
            + ((out["v"].float() - v) ** 2).mean()) / 8


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def load_validation(folder: Path, patch: int, group: int) -> list[tuple[torch.Tensor, ...]]:
    """The first VAL_FRAMES frames of each clip under `folder`, centre-cropped to a multiple of
    the patch, as planes (groups, group, H, W) and (.., H/2, W/2)."""
    out = []
    for src in find_clips(folder):
        frames = list(read_frames(Path(src.path), limit=VAL_FRAMES))
        frames = frames[: len(frames) // group * group] or frames[:1] * group
        h = min(VAL_SIDE, frames[0].height // patch * patch)
        w = min(VAL_SIDE, frames[0].width // patch * patch)
        if h < patch or w < patch:
            continue
        crops = [centre_crop(f, h, w) for f in frames]
        planes = (np.stack([getattr(f, c) for f in crops]) for c in "yuv")
        out.append(tuple(torch.from_numpy(p).float().div_(255).reshape(-1, group, *p.shape[1:]) for p in planes))
    return out


@torch.no_grad()
def validate(net: VQVAE, val: list[tuple[torch.Tensor, ...]], depths=None, device: str = "cpu") -> dict:
    """PSNR-YUV of the held-out frames through the network at some VQ depths (default: 1, 2 (the
    codec's) and all), and a rate estimate: the sum over stages of the entropy of each stage's
    index histogram (no context), in bits per pixel."""
    net.eval()
    cfg = net.config
    result = {}
    for depth in depths or sorted({1, min(2, cfg.stages), cfg.stages}):
        psnrs, hist, tokens, pixels = [], torch.zeros(depth, cfg.codes, dtype=torch.float64), 0, 0
        for y, u, v in val:
            y, u, v = y.to(device), u.to(device), v.to(device)
            idx = net.encode(y, u, v, depth)
            y_hat, u_hat, v_hat = net.decode(idx)
            mse = [((a.mul(255).round() - b.mul(255).round()) ** 2).mean().item() / 255 ** 2
                   for a, b in ((y_hat, y), (u_hat, u), (v_hat, v))]
            psnrs.append((6 * psnr(mse[0]) + psnr(mse[1]) + psnr(mse[2])) / 8)
            for k in range(depth):
                hist[k] += torch.bincount(idx[:, k].reshape(-1).cpu(), minlength=cfg.codes).double()
            tokens += idx[:, 0].numel()
            pixels += y.numel()
        p = (hist + 1e-9) / hist.sum(1, keepdim=True)
        bits = float(-(p * p.log2()).sum()) * tokens
        result[depth] = {"psnr_yuv": round(sum(psnrs) / len(psnrs), 3), "bpp": round(bits / pixels, 4)}
    return result


def dead_codes(net: VQVAE) -> int:
    q = net.quantizer
    total = q.ema_count.sum(1, keepdim=True)
    return int((q.ema_count < 0.02 * total / q.codes).sum())


# -- the loop --------------------------------------------------------------------------------------
def _distributed_setup(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) from torchrun's environment; (0, 1, device) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world, device


def init_network(config: ModelConfig, init: Path | None) -> tuple[VQVAE, int]:
    """A fresh network, or one started from a model file's weights, and the first VQ stage that
    still needs its codebook seeded.  Growing the residual VQ (more stages than the file has)
    keeps the file's stages and seeds the new ones from k-means of the residual the old leave."""
    net = VQVAE(config)
    if init is None:
        return net, 0
    old = load_model(init, need_tables=False).net
    if replace(old.config, stages=config.stages) != config:
        raise VqvError(f"{init}: architecture {old.config} cannot start a model of {config}")
    state = net.state_dict()
    for name, t in old.state_dict().items():
        if name.startswith("quantizer.") and t.dim() > 0:
            state[name][: t.shape[0]] = t[: config.stages]
        else:
            state[name] = t
    net.load_state_dict(state)
    return net, min(old.config.stages, config.stages)


def train_model(clips_dir: Path, out: Path, *, options: TrainOptions = TrainOptions(),
                config: ModelConfig = ModelConfig(), init: Path | None = None, resume: Path | None = None,
                checkpoint: Path | None = None, val_dir: Path | None = None, device: str = "auto",
                overwrite: bool = False, log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on every clip under `clips_dir`; write checkpoints, then the finished model to `out`."""
    from .encoder import fit_model_tables
    from .files import check_output, resolve_device

    t_start = time.time()
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt")
    if resume is None:
        check_output(out, overwrite)
    device = resolve_device(device)
    opts, start, ck = options, 0, None
    if resume is not None:
        ck = load_checkpoint(resume)
        saved = dict(ck["train"])
        saved["crop"] = tuple(saved["crop"])
        # the data stream and the loss come from the checkpoint; length and schedule of this run from the caller
        keep = {k: getattr(options, k) for k in ("steps", "minutes", "workers", "checkpoint_every",
                                                 "val_every", "log_every", "table_frames", "compile")}
        opts = replace(TrainOptions(**saved), **keep)
        config = ModelConfig(**ck["config"])
        start = int(ck["step"])
    group = config.frames
    if opts.frames % group:
        raise VqvError(f"--frames must be a multiple of the model's group of {group} frames, got {opts.frames}")
    if any(c % (2 * config.patch) or c <= 0 for c in opts.crop):
        raise VqvError(f"--crop sizes must be positive multiples of {2 * config.patch}, got {opts.crop[0]}x{opts.crop[1]}")
    rank, world, device = _distributed_setup(device)
    cuda = device.startswith("cuda")
    sources = find_clips(clips_dir)
    val = load_validation(val_dir, config.patch, group) if val_dir is not None else []

    torch.manual_seed(opts.seed + rank)
    random.seed(opts.seed + rank)
    S = config.stages
    net, seed_from = init_network(config, init if ck is None else None)
    if ck is not None:
        net.load_state_dict(ck["state_dict"])
    net.to(device)
    stream = CropStream(sources, batch=opts.batch, crop=opts.crop, frames=opts.frames, seed=opts.seed,
                        rank=rank, start=start)
    workers = opts.workers if opts.workers >= 0 else (min(8, max(1, (os.cpu_count() or 2) - 1)) if cuda else 0)
    loader = iter(DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=cuda,
                             prefetch_factor=4 if workers else None, persistent_workers=bool(workers)))

    def to_groups(t: torch.Tensor) -> torch.Tensor:  # (B, F, H, W) -> (B*F/g, g, H, W)
        return t.to(device, non_blocking=True).reshape(-1, group, *t.shape[2:])

    q = net.quantizer
    if ck is None and seed_from < S:
        with torch.no_grad():  # codebooks from k-means of real latents (only the new stages when grown)
            seed_batch = CropStream(sources, batch=max(64, 4 * opts.batch), crop=opts.crop, frames=group,
                                    seed=opts.seed + 7919, rank=rank).make_batch(0, {})
            z = net.analysis(*(to_groups(t) for t in seed_batch))
            q.kmeans_init(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), first=seed_from)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=opts.lr)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"], device)
    if opts.compile:
        net.encoder.compile()
        net.decoder.compile()
    model = net
    if world > 1:
        q.sync_group = dist.new_group()
        for buf in q.buffers():  # every rank starts from rank 0's codebooks (DDP syncs parameters only)
            dist.broadcast(buf, 0, group=q.sync_group)
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[torch.cuda.current_device()] if cuda else None, broadcast_buffers=False)
    lead = rank == 0
    history = list(ck.get("history", [])) if ck is not None else []
    meta = {"data": [str(Path(s.path).relative_to(clips_dir)) for s in sources], "device": torch.cuda.get_device_name(device) if cuda else
            (platform.processor() or platform.machine()), "world": world, "threads": torch.get_num_threads()}
    wall = float(ck.get("wall_s", 0.0)) if ck is not None else 0.0
    run_start = time.time()

    def save_checkpoint(step: int) -> None:
        if lead:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_model(checkpoint, net, None, {**meta, "steps": step},
                       extra={"step": step, "optimizer": opt.state_dict(), "rng": _rng_state(device),
                              "train": _options_dict(opts), "history": history,
                              "wall_s": wall + time.time() - run_start})

    step = start
    last_t, last_step = time.time(), start
    validation: dict = {}
    finished = True
    for step in range(start, opts.steps):
        if opts.minutes is not None and time.time() - run_start > opts.minutes * 60:
            finished = False
            break
        lr = opts.lr * min(1.0, (step + 1) / max(1, opts.warmup)) * 0.5 * (1 + math.cos(math.pi * step / opts.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        y, u, v = (to_groups(t) for t in next(loader))
        depth = torch.randint(1, S + 1, (y.shape[0],), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            res = model(y, u, v, stages=depth)
        rec = yuv_mse(res, y, u, v)
        loss = rec + opts.beta * res["commit"]
        if opts.ms_ssim:
            n = y.shape[0] * group
            loss = loss + opts.ms_ssim * (1 - ms_ssim_tensor(res["y"].float().reshape(n, 1, *y.shape[2:]),
                                                             y.reshape(n, 1, *y.shape[2:])))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if lead and (done % opts.log_every == 0 or done == opts.steps):
            now = time.time()
            rate = (done - last_step) / max(now - last_t, 1e-9)
            last_t, last_step = now, done
            record = {"step": done, "steps": opts.steps, "loss": round(loss.item(), 6),
                      "psnr": round(psnr(rec.item()), 3), "perplexity": round(float(q.usage(res["indices"][:1])[0]), 1),
                      "dead": dead_codes(net), "steps_s": round(rate, 3),
                      "clips_s": round(rate * opts.batch * world, 2), "lr": lr}
            if val and (done % opts.val_every == 0 or done == opts.steps):
                validation = validate(net, val, device=device)
                record["val"] = validation
                net.train()
            history.append(record)
            if log:
                log(record)
        if done % opts.checkpoint_every == 0 and done < opts.steps:
            save_checkpoint(done)
    else:
        step = opts.steps
    if not finished or step > start or ck is not None:
        save_checkpoint(step)
    result = TrainResult(step, finished, checkpoint, validation=validation, rank=rank)
    if finished and lead:
        net.eval()
        if val and not validation:
            validation = validate(net, val, device=device)
        if log:
            log({"phase": "tables", "clips": len(sources)})
        tables = fit_model_tables(net, [Path(s.path) for s in sources], frames=opts.table_frames, device=device)
        meta.update({"steps": step, "train": _options_dict(opts), "wall_s": round(wall + time.time() - run_start),
                     "validation": {f"depth {k}": v for k, v in validation.items()}})
        fp = save_model(out, net.cpu(), tables, meta)
        result = replace(result, model=out, fingerprint=fp.hex(), validation=validation)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    result.seconds = time.time() - t_start
    return result

