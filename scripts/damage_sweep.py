#!/usr/bin/env python3
"""Damage sweep: what comes back out of a damaged .vqv, with and without --fec, beside PAR2.

    python scripts/damage_sweep.py [--clip clips/bikes.mp4] [--frames 128] [--trials 50]
                                   [--par2 /path/to/par2] [--json sweep.json]

A real clip (default: bikes, 128 frames, quality 4, segments of 32: four segments) is encoded
with --fec 0, 2, 5 and 10.  Each trial damages one file: random byte errors at a rate of 1e-5,
1e-4 or 1e-3 of its bytes (each byte hit with that probability, replaced by another value), or one
burst of 1 KiB or 16 KiB of random bytes at a random place.  The file is then repaired as
`vqcodec decode` does (fec.repair) and its segments read (bitstream.read_segments); the
outcome is:
- bit-exact: every segment intact after repair (their CRCs pass), so the pictures are exactly
  the undamaged file's (decoding is deterministic);
- otherwise the frames `decode --conceal` would conceal, and the PSNR-YUV against the source of
  what it would output (the intact decode with the damaged segments' frames replaced as the
  decoder's concealment does, after it keeps what a damaged segment's intact group streams
  give, in a file with FEC); a destroyed header is "no output".
The first non-exact trial of each case is also decoded for real and must match.

The anchor: PAR2 (par2cmdline, `par2 create -r<PCT> -s1024 -n1`: 1 KiB blocks, one recovery
file; its default of 2,000 blocks costs ten times this clip's size) on the --fec 0 file,
under the same damage applied to the .vqv and its .par2 files as one stream of bytes (what a
transfer would hit), then `par2 repair`: its bit-exact share, its size overhead and its time.
par2cmdline is not a Python package: build it from source (docs/MEASUREMENTS.md says how).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vqcodec import bitstream as bs  # noqa: E402
from vqcodec import fec  # noqa: E402
from vqcodec.decoder import frames_from_bytes  # noqa: E402
from vqcodec.entropy import intact_groups  # noqa: E402
from vqcodec.encoder import encode_file  # noqa: E402
from vqcodec.modelfile import load_model  # noqa: E402
from vqcodec.video import read_frames  # noqa: E402

KINDS = {"1e-5": ("rate", 1e-5), "1e-4": ("rate", 1e-4), "1e-3": ("rate", 1e-3),
         "burst 1 KiB": ("burst", 1024), "burst 16 KiB": ("burst", 16384)}
LEVELS = (0, 2, 5, 10)
PAR2_BLOCK = 1024  # bytes per PAR2 block: its defaults (2,000 blocks) cost ten times the file here


def damage(data: bytes, kind: tuple[str, float], rng: random.Random) -> bytes:
    out = bytearray(data)
    if kind[0] == "rate":
        n = np.random.default_rng(rng.randrange(1 << 30)).binomial(len(out), kind[1])
        for pos in rng.sample(range(len(out)), n):
            out[pos] ^= rng.randrange(1, 256)
    else:
        size = int(kind[1])
        start = rng.randrange(max(1, len(out) - size))
        out[start:start + size] = bytes(rng.randrange(256) for _ in range(min(size, len(out) - start)))
    return bytes(out)


class Outcome:
    """What concealment would give for a set of damaged segments (the decoder's rule)."""

    def __init__(self, source, decoded, segment_frames: int):
        self.source, self.decoded, self.segment_frames = source, decoded, segment_frames
        self.mse: dict[tuple[int, int], tuple[float, float, float]] = {}

    def _psnr_yuv(self, i: int, j: int) -> float:
        if (i, j) not in self.mse:
            a, b = self.source[i], self.decoded[j]
            self.mse[(i, j)] = tuple(float(np.mean((p.astype(np.float64) - q.astype(np.float64)) ** 2))
                                     for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))
        ps = [100.0 if m == 0 else min(100.0, 10 * math.log10(255 ** 2 / m)) for m in self.mse[(i, j)]]
        return (6 * ps[0] + ps[1] + ps[2]) / 8

    def shown(self, damaged: dict[int, int]) -> list[int | None]:
        """Which decoded frame the output shows at each position (None: mid-grey); `damaged`:
        segment index -> the frames its salvage keeps (the groups before the damage)."""
        n = len(self.decoded)
        shown: list[int | None] = []
        last = None
        pending = 0
        for first in range(0, n, self.segment_frames):
            count = min(self.segment_frames, n - first)
            kept = damaged.get(first // self.segment_frames, count)
            if 0 < kept < count:
                part = list(range(first, first + kept)) + [first + kept - 1] * (count - kept)
                shown += [first] * pending + part
                pending = 0
                last = part[-1]
            elif kept == 0:
                if last is None:
                    pending += count
                else:
                    shown += [last] * count
            else:
                shown += [first] * pending + list(range(first, first + count))
                pending = 0
                last = first + count - 1
        return shown + [None] * pending

    def psnr(self, damaged: dict[int, int]) -> float:
        vals = []
        for i, j in enumerate(self.shown(damaged)):
            if j is None:
                a = self.source[i]
                mse = [float(np.mean((p.astype(np.float64) - 128.0) ** 2)) for p in (a.y, a.u, a.v)]
                ps = [10 * math.log10(255 ** 2 / max(m, 1e-9)) for m in mse]
                vals.append((6 * ps[0] + ps[1] + ps[2]) / 8)
            else:
                vals.append(self._psnr_yuv(i, j))
        return float(np.mean(vals))


def kept_frames(segment: bs.Damaged, header: bs.Header) -> int:
    """The frames the decoder salvages from a damaged segment: its groups up to the first whose
    stream fails its CRC (files with FEC code a stream per group), else none."""
    if segment.payload is None or not header.fec:
        return 0
    parts = intact_groups(np.frombuffer(segment.payload, dtype="<u4"))
    return min(segment.frames, parts * header.group_frames)


def judge(data: bytes, original: bytes) -> tuple[bool, dict[int, int] | None]:
    """(bit-exact, damaged segment index -> frames salvaged, or None when the header is lost),
    after repair."""
    fixed, _ = fec.repair(data)
    try:
        header = bs.complete_streamed(fixed, bs.unpack_header(bytes(fixed[:bs.HEADER_SIZE])))
    except bs.BitstreamError:
        return False, None
    want = bs.unpack_header(original[:bs.HEADER_SIZE])
    if (header.frames, header.width, header.height, header.segments) != (want.frames, want.width, want.height,
                                                                        want.segments):
        return False, None
    damaged = {s.index: kept_frames(s, header) for s in bs.read_segments(fixed, header) if isinstance(s, bs.Damaged)}
    return not damaged, damaged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=ROOT / "clips" / "bikes.mp4")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--par2", type=Path, default=None, help="par2cmdline's binary, for the anchor")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model = load_model()
    source = list(read_frames(args.clip, limit=args.frames))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {}
        for pct in LEVELS:
            path = tmp / f"fec{pct}.vqv"
            encode_file(args.clip, path, quality=args.quality, model=model, frames=args.frames, fec_pct=pct,
                        device="cpu", segment_frames=32)
            files[pct] = path.read_bytes()
        decoded = list(frames_from_bytes(files[0], model, conceal=False, concealed=[]))
        header = bs.unpack_header(files[0][:bs.HEADER_SIZE])
        outcome = Outcome(source, decoded, header.segment_frames)
        intact_psnr = outcome.psnr({})
        print(f"{args.clip.name}: {header.frames} frames {header.width}x{header.height}, {header.segments} segments, "
              f"q{args.quality}; sizes " + ", ".join(f"--fec {p}: {len(files[p])} B" for p in LEVELS)
              + f"; intact PSNR-YUV {intact_psnr:.2f} dB")
        cases = [(f"--fec {p}", p, None) for p in LEVELS]
        if args.par2:
            cases += [(f"PAR2 -r{p}", p, "par2") for p in LEVELS if p]
        for name, pct, anchor in cases:
            extra = {}
            if anchor:
                work = tmp / f"par2_{pct}"
                work.mkdir()
                (work / "a.vqv").write_bytes(files[0])
                subprocess.run([str(args.par2), "create", "-q", "-q", f"-r{pct}", f"-s{PAR2_BLOCK}", "-n1", "a.vqv"],
                               cwd=work, check=True)
                extra = {p.name: p.read_bytes() for p in sorted(work.glob("*.par2"))}
                size = len(files[0]) + sum(len(v) for v in extra.values())
            else:
                size = len(files[pct])
            for kind_name, kind in KINDS.items():
                rng = random.Random(f"{args.seed} {kind_name} {name}")
                exact = no_output = 0
                concealed, psnrs, seconds, checked, salvaged = [], [], [], False, 0
                for _ in range(args.trials):
                    if anchor:
                        stream = damage(files[0] + b"".join(extra.values()), kind, rng)
                        (work / "a.vqv").write_bytes(stream[:len(files[0])])
                        pos = len(files[0])
                        for fname, content in extra.items():
                            (work / fname).write_bytes(stream[pos:pos + len(content)])
                            pos += len(content)
                        t0 = time.perf_counter()
                        subprocess.run([str(args.par2), "repair", "-q", "-q", "a.vqv.par2"], cwd=work,
                                       capture_output=True)
                        seconds.append(time.perf_counter() - t0)
                        data = (work / "a.vqv").read_bytes()
                        for leftover in work.glob("a.vqv.*[0-9]"):
                            leftover.unlink()  # par2's backup of the damaged file
                        ok, damaged = judge(data, files[0])
                    else:
                        data = damage(files[pct], kind, rng)
                        t0 = time.perf_counter()
                        ok, damaged = judge(data, files[pct])
                        seconds.append(time.perf_counter() - t0)
                    if damaged:
                        salvaged += sum(damaged.values())
                    if ok:
                        exact += 1
                        concealed.append(0.0)
                        psnrs.append(intact_psnr)
                        continue
                    if damaged is None:
                        no_output += 1
                        concealed.append(1.0)
                        continue
                    shown = outcome.shown(damaged)
                    concealed.append(sum(1 for i, j in enumerate(shown) if j != i) / len(shown))
                    psnrs.append(outcome.psnr(damaged))
                    if not checked:  # the emulation against a real decode, once per case
                        real = list(frames_from_bytes(fec.repair(data)[0], model, conceal=True, concealed=[]))
                        want = [decoded[j] if j is not None else None for j in shown]
                        assert len(real) == len(want) and all(
                            w is None or (np.array_equal(r.y, w.y) and np.array_equal(r.u, w.u)) for r, w in zip(real, want)), \
                            f"{name} {kind_name}: the emulated concealment differs from the decoder's"
                        checked = True
                row = {"case": name, "damage": kind_name, "bytes": size,
                       "overhead_pct": round(100 * (size / len(files[0]) - 1), 2),
                       "bit_exact_pct": round(100 * exact / args.trials, 1),
                       "frames_concealed_pct": round(100 * float(np.mean(concealed)), 2),
                       "no_output": no_output,
                       "psnr_yuv": round(float(np.mean(psnrs)), 2) if psnrs else None,
                       "frames_salvaged": salvaged,
                       "repair_ms": round(1000 * float(np.mean(seconds)), 1)}
                rows.append(row)
                print(f"{name:>10} {kind_name:>13}: +{row['overhead_pct']:5.2f} %  exact {row['bit_exact_pct']:5.1f} %  "
                      f"concealed {row['frames_concealed_pct']:6.2f} %  no output {no_output:2d}  "
                      f"PSNR {row['psnr_yuv']}  repair {row['repair_ms']} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"clip": str(args.clip.name), "frames": args.frames, "quality": args.quality,
                                         "trials": args.trials, "intact_psnr_yuv": round(intact_psnr, 2),
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
