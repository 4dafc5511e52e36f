#!/usr/bin/env python3
"""Reproduce the shipped default model with `vqcodec train`, from public data, resumably.

    python scripts/train_default.py --minutes 40      # run again to continue where it stopped
    python scripts/train_default.py --tables-only     # refit the entropy tables from the last checkpoint

Data (assembled under runs/default-data, never committed):
  - the sample clips in ../shared/clips, from frame 64 on (the benchmark measures their first
    frames), written losslessly (FFV1);
  - the clips in ../shared/clips/more, except the held-out scenes below (links).
The run starts from --init (default: the previous default model), grows the residual VQ to
--stages, trains until --steps in all, and stops early after --minutes with a checkpoint that
the next invocation resumes.  On a GPU it uses CUDA automatically.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vqcodec.cli import main as vqcodec  # noqa: E402
from vqcodec.video import VideoWriter, probe, read_frames  # noqa: E402

HELD_OUT = {"iacv_salitona.mp4", "dalgu_walking.mp4"}  # never trained on: unseen-scene checks
BENCH_FRAMES = 64  # the sample clips' first frames are kept for measuring


def assemble(clips: Path, data: Path) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    for p in sorted(clips.glob("*.mp4")):
        target = data / f"{p.stem}_from{BENCH_FRAMES}.mkv"
        if not target.exists():
            info = probe(p)
            tmp = target.with_suffix(".part.mkv")
            w = VideoWriter(tmp, target, info.width, info.height, info.fps)
            for f in read_frames(p, start=BENCH_FRAMES):
                w.write(f)
            w.close()
            tmp.rename(target)
    for p in sorted((clips / "more").glob("*.mp4")):
        if p.name not in HELD_OUT and not (data / p.name).exists():
            (data / p.name).symlink_to(p.resolve())
    return data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "clips")
    ap.add_argument("--work", type=Path, default=ROOT / "runs")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "default.pt")
    ap.add_argument("--init", type=Path, default=None, help="model to start from (default: --out as it is now)")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--stages", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--tables-only", action="store_true", help="only refit the entropy tables of --out")
    args, extra = ap.parse_known_args()
    data = assemble(args.clips, args.work / "default-data")
    val = args.work / "default-val"
    val.mkdir(exist_ok=True)
    for name in HELD_OUT:
        if not (val / name).exists():
            (val / name).symlink_to((args.clips / "more" / name).resolve())
    if args.tables_only:  # from the last checkpoint, or (none here) from the model as it is
        ckpt = args.work / "default.ckpt"
        return refit(ckpt if ckpt.exists() else args.out, args.out, data, val)
    ckpt = args.work / "default.ckpt"
    cmd = ["train", str(data), "-o", str(args.work / "default.pt"), "--checkpoint", str(ckpt), "-y",
           "--steps", str(args.steps), "--val", str(val)]
    if args.minutes:
        cmd += ["--minutes", str(args.minutes)]
    if ckpt.exists():
        cmd += ["--resume", str(ckpt)]
    else:
        init = args.init or args.out
        shutil.copy(init, args.work / "init.pt")  # the starting point, kept beside the run
        cmd += ["--init", str(args.work / "init.pt"), "--stages", str(args.stages)]
    code = vqcodec(cmd + extra)
    if code == 0 and (args.work / "default.pt").exists() and not _stopped_early(ckpt, args.steps):
        shutil.copy(args.work / "default.pt", args.out)
        print(f"installed {args.out}")
    return code


def refit(ckpt: Path, out: Path, data: Path, val: Path) -> int:
    """Fit the entropy tables of a checkpoint's (or a model file's) network anew and write the model
    (after a change to the context model, or to finish a run whose own fitting was interrupted); the held-out
    validation is measured again, as `vqcodec train` measures it now."""
    import time

    import torch
    from vqcodec.codec import fit_model_tables
    from vqcodec.modelfile import load_model, save_model
    from vqcodec.train import TrainOptions, find_clips, load_validation, validate

    t0 = time.time()
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    cm = load_model(ckpt, need_tables=False)
    facts = {**raw.get("meta", {}), **raw}  # a checkpoint's own, or a model file's meta
    frames = (facts.get("train") or {}).get("table_frames", TrainOptions.table_frames)
    tables = fit_model_tables(cm.net, [Path(s.path) for s in find_clips(data)], frames=frames)
    meta = {**cm.meta, "steps": facts.get("step", facts.get("steps")), "train": facts.get("train"),
            "wall_s": round(facts.get("wall_s", 0)),
            "tables_s": round(time.time() - t0),
            "validation": {f"depth {k}": v for k, v in validate(
                cm.net, load_validation(val, cm.config.patch, cm.config.frames)).items()}}
    fp = save_model(out, cm.net, tables, meta)
    print(f"wrote {out}: model {fp.hex()}, tables fitted in {time.time() - t0:.0f} s")
    return 0


def _stopped_early(ckpt: Path, steps: int) -> bool:
    import torch
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"]) < steps


if __name__ == "__main__":
    sys.exit(main())
