#!/usr/bin/env python3
"""Measure the codec end to end, as a user runs it: whole-process encode and decode through the
CLI on real clips, PSNR-YUV on 4:2:0 against the source frames, bpp of the whole .vqv file,
peak memory (the child's max RSS), and entropy-coder throughput.

    python scripts/benchmark.py [CLIP ...] [--qualities 1-8] [--json out.json] [--threads 2]
    python scripts/benchmark.py --memory ../shared/clips/more/drift_rain-static.mp4

Prints a Markdown table (the one in BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vqcodec.metrics import sequence_quality  # noqa: E402
from vqcodec.video import probe, read_frames  # noqa: E402

CLIPS = ROOT.parent / "shared" / "clips"
DEFAULT = [CLIPS / "carphone_pristine.mp4", CLIPS / "bikes.mp4", CLIPS / "bigbuckbunny.mp4",
           CLIPS / "more" / "iacv_salitona.mp4", CLIPS / "more" / "dalgu_walking.mp4"]


_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, its peak RSS in MB).

    The command runs under a tiny wrapper: a child forked straight from this (large) process
    would report this process's high-water mark as its own."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return wall, int(p.stderr.strip().splitlines()[-1]) / 1024


def vqcodec(*args) -> list[str]:
    return [sys.executable, "-m", "vqcodec", *map(str, args)]


def parse_range(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def entropy_throughput(vqv: Path) -> dict:
    """Symbols/s of the range coder alone, on the real symbols (vectors, modes, indices,
    coefficients) of one file."""
    from vqcodec import bitstream as bs
    from vqcodec import motion
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import Symbols
    from vqcodec.tablefit import count_symbols
    from vqcodec.modelfile import load_model
    import math

    data = vqv.read_bytes()
    header = bs.unpack_header(data[:bs.HEADER_SIZE])
    coder = SegmentCoder(load_model(), "cpu").coder
    h, w = math.ceil(header.height / header.patch), math.ceil(header.width / header.patch)
    segs = [s for s in bs.read_segments(data, header)]
    t0 = time.perf_counter()
    decoded = [list(coder.decode_groups(np.frombuffer(s.payload, "<u4"), math.ceil(s.frames / header.group_frames),
                                        (s.stages, h, w), motion.grid_shape(h, w), s.quality)) for s in segs]
    t_dec = time.perf_counter() - t0
    arrays = []
    for s, groups in zip(segs, decoded):
        idx, modes, vectors, coefs, fresh = zip(*groups)
        mvs = [np.full(motion.grid_shape(h, w), motion.ZERO) if v is None else v for v in vectors]
        arrays.append(Symbols(np.stack(idx), np.stack(modes), np.stack(mvs), np.stack(coefs), s.quality,
                              np.array(fresh)))
    t0 = time.perf_counter()
    for a in arrays:
        coder.encode(a)
    t_enc = time.perf_counter() - t0
    n = sum(int(sum(c.sum() for c in count_symbols(a, coder.codes, qualities=coder.qualities))) for a in arrays)
    return {"symbols": n, "encode_msym_s": n / t_enc / 1e6, "decode_msym_s": n / t_dec / 1e6}


def x264_points(clip: Path, ref: list, crfs=(18, 23, 28, 33)) -> list[dict]:
    """x264 (preset medium, vqcodec.bench's codec class) on the same decoded frames, same PSNR
    function; bpp from the coded payload."""
    from vqcodec.bench import CLASSICS

    info = probe(clip)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for crf in crfs:
            nbytes, dec, _, _ = CLASSICS["x264"].run(ref, info.fps, crf, Path(tmp))
            rows.append({"clip": clip.name, "crf": crf, "bpp": 8 * nbytes / (info.width * info.height * len(ref)),
                         "psnr_yuv": sequence_quality(ref, dec).psnr_yuv})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--qualities", default="1-8")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--memory", type=Path, help="only measure peak memory encoding this (long) clip")
    ap.add_argument("--x264", action="store_true", help="also measure x264 medium reference points")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.memory:
            info = probe(args.memory)
            wall, rss = timed(vqcodec("encode", args.memory, "-o", tmp / "m.vqv", "-y"))
            n = sum(1 for _ in read_frames(args.memory))
            print(f"memory: {args.memory.name} {info.width}x{info.height} {n} frames: peak RSS {rss:.0f} MB, "
                  f"encode {n / wall:.2f} fps ({wall:.1f} s)")
            return
        clips = args.clips or [c for c in DEFAULT if c.exists()]
        refs = []
        for clip in clips:
            ref = list(read_frames(clip))
            info = probe(clip)
            if args.x264:
                refs += x264_points(clip, ref)
            for q in parse_range(args.qualities):
                vqv, out = tmp / "a.vqv", tmp / "a.y4m"
                t_enc, rss_enc = timed(vqcodec("encode", clip, "-o", vqv, "-q", q, "-y"))
                t_dec, rss_dec = timed(vqcodec("decode", vqv, "-o", out, "-y"))
                dec = list(read_frames(out))
                assert len(dec) == len(ref), f"{clip.name}: {len(dec)} frames back of {len(ref)}"
                qual = sequence_quality(ref, dec)
                size = vqv.stat().st_size
                row = {"clip": clip.name, "size": f"{info.width}x{info.height}", "frames": len(ref), "quality": q,
                       "bytes": size, "bpp": 8 * size / (info.width * info.height * len(ref)),
                       "kbps": 8 * size / (len(ref) / float(info.fps)) / 1000,
                       "psnr_y": qual.psnr_y, "psnr_yuv": qual.psnr_yuv,
                       "encode_fps": len(ref) / t_enc, "decode_fps": len(ref) / t_dec,
                       "peak_rss_mb": max(rss_enc, rss_dec)}
                if q == 4 and info.width >= 1280:
                    row.update(entropy_throughput(vqv))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print("| clip | size | frames | q | bpp | kbit/s | PSNR-Y | PSNR-YUV | enc fps | dec fps | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['quality']} | {r['bpp']:.4f} | {r['kbps']:.0f} | "
              f"{r['psnr_y']:.2f} | {r['psnr_yuv']:.2f} | {r['encode_fps']:.2f} | {r['decode_fps']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")
    for r in rows:
        if "symbols" in r:
            print(f"\nentropy coder on {r['clip']} q{r['quality']}: {r['symbols']} symbols, "
                  f"encode {r['encode_msym_s']:.1f} M symbols/s, decode {r['decode_msym_s']:.1f} M symbols/s")
    if refs:
        print("\n| clip | x264 medium CRF | bpp (payload) | PSNR-YUV |\n|---|---|---|---|")
        for r in refs:
            print(f"| {r['clip']} | {r['crf']} | {r['bpp']:.4f} | {r['psnr_yuv']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"vqcodec": rows, "x264": refs}, indent=1))


if __name__ == "__main__":
    main()
