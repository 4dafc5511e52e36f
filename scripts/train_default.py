#!/usr/bin/env python3
"""Train the default vqcodec model from public data (resumable, time-boxed).

    python scripts/train_default.py --minutes 30 --out runs/default.ckpt [--resume]
    python scripts/finalize_model.py runs/default.ckpt -o models/default.pt

Data: the sample clips in ../shared/clips (only frames *after* the first 64, which the
benchmark measures) and the clips in ../shared/clips/more, except the held-out scenes below.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vqcodec.model import ModelConfig, VQVAE  # noqa: E402
from vqcodec.modelfile import save_model  # noqa: E402
from vqcodec.train import CropSampler, fit, load_clip  # noqa: E402
from vqcodec.video import probe  # noqa: E402

HELD_OUT = {"iacv_salitona.mp4", "dalgu_walking.mp4"}  # never trained on: unseen-scene checks
BENCH_FRAMES = 64  # the sample clips' first frames are kept for measuring


def corpus(root: Path, budget_px: float = 30e6, max_frames: int = 120):
    items = []
    for p in sorted(root.glob("*.mp4")):
        items.append((p, BENCH_FRAMES))
    for p in sorted((root / "more").glob("*.mp4")):
        if p.name not in HELD_OUT:
            items.append((p, 0))
    clips = []
    for p, start in items:
        info = probe(p)
        n = int(max(8, min(max_frames, budget_px // (info.width * info.height))))
        clips.append(load_clip(p, n, start=start))
        print(f"  {p.name}: {n} frames from {start}, {info.width}x{info.height}", flush=True)
    return clips, [str(p.name) for p, _ in items]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "clips")
    ap.add_argument("--out", type=Path, default=Path("runs/default.ckpt"))
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    print("loading clips", flush=True)
    clips, names = corpus(args.clips)
    net = VQVAE(ModelConfig())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = 0
    if args.resume and args.out.exists():
        ck = torch.load(args.out, map_location="cpu", weights_only=True)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start = ck["step"]
        print(f"resumed at step {start}")
    sampler = CropSampler(clips, net.config.frames, args.crop, seed=start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def meta(step):
        return {"data": names, "held_out": sorted(HELD_OUT), "steps": step, "batch": args.batch,
                "crop": args.crop, "device": args.device, "hardware": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "wall_s": round(time.time() - t0)}

    def checkpoint(step):
        save_model(args.out, net, None, meta(step), extra={"step": step, "optimizer": opt.state_dict()})

    def log(r):
        print(json.dumps(r), flush=True)

    done = fit(net, sampler, steps=args.steps, batch=args.batch, minutes=args.minutes, device=args.device,
               log=log, checkpoint=checkpoint, start_step=start, optimizer=opt)
    net.cpu()
    checkpoint(done)
    print(f"saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
