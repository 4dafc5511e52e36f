#!/usr/bin/env python3
"""Two of issue 6's measurements, printed as the Markdown tables of BENCHMARKS.md:

  - a still scene (each clip's first frame repeated 32 times, one segment): the estimated bits
    of its first temporal group and of the later ones, at qualities 1, 4 and 8;
  - `--bitrate`: whole sample clips coded at a target rate, the rate they got and the quality
    each segment took.

    python scripts/static_rate.py [--bitrate-only]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vqcodec.codec import SegmentCoder, encode_file  # noqa: E402
from vqcodec.modelfile import load_model  # noqa: E402
from vqcodec.video import read_frames  # noqa: E402

CLIPS = ROOT.parent / "shared" / "clips"
TARGETS = (("carphone_pristine", 100), ("carphone_pristine", 150), ("carphone_pristine", 250), ("bikes", 600),
           ("bigbuckbunny", 4000))  # kbit/s


def main() -> int:
    model = load_model(None)
    coder = SegmentCoder(model, "cpu")
    if "--bitrate-only" not in sys.argv:
        still(coder)
    rate_control(model)
    return 0


def still(coder: SegmentCoder) -> None:
    print("| clip | q | first group (bits) | largest later group | share | mean later group |")
    print("|---|---|---|---|---|---|")
    for clip in ("bikes", "carphone_pristine"):
        frames = [next(iter(read_frames(CLIPS / f"{clip}.mp4")))] * 32
        for q in (1, 4, 8):
            s = coder.symbols(frames, q)
            bits = [coder.coder.estimate_bits(s.groups(0, g)) for g in range(1, len(s.indices) + 1)]
            later = np.diff(bits)
            print(f"| {clip}.mp4 | {q} | {bits[0]:.0f} | {later.max():.0f} | {100 * later.max() / bits[0]:.2f} % "
                  f"| {later.mean():.0f} |", flush=True)
    print()


def rate_control(model) -> None:
    print("| clip | frames | target kbit/s | measured kbit/s | error | segment qualities |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for clip, kbps in TARGETS:
            rep = encode_file(CLIPS / f"{clip}.mp4", Path(tmp) / "a.vqv", bitrate=kbps, model=model, overwrite=True)
            print(f"| {clip}.mp4 | {rep.frames} | {kbps} | {rep.kbps:.0f} | {100 * (rep.kbps - kbps) / kbps:+.1f} % "
                  f"| {', '.join(map(str, rep.segment_qualities))} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
