#!/usr/bin/env python3
"""Feed N random mutations of real .vqv files to the decoder in-process.

    python scripts/fuzz_decoder.py --cases 10000 [--seed 0]

Four real files: carphone (12 frames, 3 segments), a 48x32 clip (6 frames, 3 segments), a
streamed 64x48 file with an AAC track (8 frames, 2 segments, audio packets between them) and
carphone with --fec 10 (parity chunks, the header's copy; decoding repairs first).

Each case applies 1-4 random operations (vqcodec/fuzz.py) to a real file, half of them resealed
(CRCs recomputed, so the entropy decoder and the size checks see hostile data), and decodes it
with concealment.  Outcomes: a clean VqvError, or a full decode with every frame.  Anything else
is a crash; a case over --timeout seconds is a hang; peak RSS is reported for allocations.
"""
from __future__ import annotations

import argparse
import collections
import random
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from vqcodec import bitstream as bs  # noqa: E402
from vqcodec import fec  # noqa: E402
from vqcodec.codec import decode_bytes, encode_file  # noqa: E402
from vqcodec.errors import VqvError  # noqa: E402
from vqcodec.fuzz import apply, random_ops, reseal  # noqa: E402
from vqcodec.modelfile import load_model  # noqa: E402
from vqcodec.video import read_frames  # noqa: E402
from conftest import CARPHONE, resize_frames, write_clip, write_clip_with_audio  # noqa: E402


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=10)
    args = ap.parse_args()
    model = load_model()
    frames = list(read_frames(CARPHONE))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encode_file(CARPHONE, tmp / "a.vqv", model=model, segment_frames=4, quality=4)
        write_clip(tmp / "t.mkv", resize_frames(frames[:6], 48, 32))
        encode_file(tmp / "t.mkv", tmp / "b.vqv", model=model, segment_frames=2, quality=8)
        # a streamed file (as written to a pipe: header without counts, a trailer) with an AAC track
        write_clip_with_audio(tmp / "s.mkv", resize_frames(frames[:8], 64, 48))
        encode_file(tmp / "s.mkv", tmp / "c.vqv", model=model, segment_frames=4, quality=2)
        c = (tmp / "c.vqv").read_bytes()
        h = bs.unpack_header(c[:bs.HEADER_SIZE])
        h.streamed = True
        encode_file(CARPHONE, tmp / "d.vqv", model=model, segment_frames=4, quality=3, fec_pct=10)
        files = [(tmp / "a.vqv").read_bytes(), (tmp / "b.vqv").read_bytes(),
                 h.pack() + c[bs.HEADER_SIZE:] + h.pack_trailer(), (tmp / "d.vqv").read_bytes()]
    rng = random.Random(args.seed)
    outcomes = collections.Counter()
    crashes = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    slowest = 0.0
    signal.signal(signal.SIGALRM, _alarm)
    t_all = time.time()
    for i in range(args.cases):
        base = files[i % len(files)]
        ops = random_ops(rng, len(base), rng.randint(1, 4))
        sealed = rng.random() < 0.5
        data = apply(base, ops)
        if sealed:
            data = reseal(data)
        t0 = time.time()
        signal.alarm(args.timeout)
        try:
            n, concealed = decode_bytes(data, model, conceal=True)
            fixed = fec.repair(data)[0]  # what the decoder read (corrected where the file has FEC)
            header = bs.complete_streamed(fixed, bs.unpack_header(fixed[:bs.HEADER_SIZE]))
            streams, start = bs.read_audio_streams(fixed, header)  # the audio parser too
            sum(len(p.data) for p in bs.read_audio_packets(fixed, start))
            if n != header.frames:
                crashes.append((i, ops, sealed, f"wrong frame count {n} != {header.frames}"))
            outcomes["decoded, concealed" if concealed else "decoded intact"] += 1
        except VqvError:
            outcomes["clean error"] += 1
        except Hang:
            crashes.append((i, ops, sealed, "hang"))
            outcomes["hang"] += 1
        except Exception as exc:  # a crash: the thing we look for
            crashes.append((i, ops, sealed, f"{exc.__class__.__name__}: {exc}"))
            outcomes["crash"] += 1
        finally:
            signal.alarm(0)
        slowest = max(slowest, time.time() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.cases} mutated files in {time.time() - t_all:.0f} s: " +
          ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"crashes or wrong results: {len(crashes)}; slowest case {slowest:.2f} s; "
          f"peak RSS {rss0 / 1024:.0f} MB before, {rss1 / 1024:.0f} MB after")
    for c in crashes[:20]:
        print("  case", c)
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
