#!/usr/bin/env python3
"""Write the conformance streams: small .vqv files that together use every mode of the current
format, and the MD5 of the pictures each decodes to (tests/conformance/).

    python scripts/conformance.py            # refuses while the committed set is this format's
    python scripts/conformance.py --force    # rewrite them anyway (a new shipped model)

A decoder conforms when it decodes every stream to exactly these MD5s (tests/test_decoder.py
checks it).  The pictures are exactly specified (docs/FORMAT.md), so the streams are only
rewritten when the format moves (a new .vqv format version) or the shipped model does: the
script refuses otherwise, so that a change which alters decoded pictures cannot pass by
regenerating the expectations.  The sources are made here from tests/data/carphone_12.mkv.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vqcodec import bitstream as bs  # noqa: E402
from vqcodec.encoder import encode_frames  # noqa: E402
from vqcodec.modelfile import load_model  # noqa: E402
from vqcodec.video import Frame, read_frames  # noqa: E402

OUT = ROOT / "tests" / "conformance"
SOURCE = ROOT / "tests" / "data" / "carphone_12.mkv"
FPS = Fraction(30000, 1001)


def _crop(f: Frame, top: int, left: int, h: int, w: int) -> Frame:
    return Frame(f.y[top:top + h, left:left + w].copy(), f.u[top // 2:(top + h + 1) // 2, left // 2:(left + w + 1) // 2].copy(),
                 f.v[top // 2:(top + h + 1) // 2, left // 2:(left + w + 1) // 2].copy())


def _pan(f: Frame, k: int) -> Frame:
    """The picture moved k pixels left (luma; chroma half), wrapping."""
    return Frame(np.roll(f.y, -2 * k, 1), np.roll(f.u, -k, 1), np.roll(f.v, -k, 1))


def _other_scene(f: Frame) -> Frame:
    """A different picture from the same frame: upside down, mirrored and inverted."""
    return Frame(255 - f.y[::-1, ::-1].copy(), 255 - f.u[::-1, ::-1].copy(), f.v[::-1, ::-1].copy())


def streams(frames: list[Frame]) -> dict[str, dict]:
    """name -> (frames, encode options, what it exercises)."""
    first = frames[0]
    return {
        "pan_q5": dict(frames=[_pan(first, k) for k in range(8)] + frames[:8], options=dict(quality=5, segment_frames=16),
                       covers="a fresh group, later groups with motion (a pan), every token mode, the output filter"),
        "pan_q2": dict(frames=[_pan(first, 3 * k) for k in range(8)], options=dict(quality=2, segment_frames=8),
                       covers="a pan at a coarse step: vectors on the coarse grid (one per 2 x 2 blocks)"),
        "cut_static_q3": dict(frames=frames[:4] + [_other_scene(f) for f in frames[4:8]] + [frames[8]] * 6,
                              options=dict(quality=3, segment_frames=16),
                              covers="a scene cut coded afresh (refresh), then static groups"),
        "odd_bitrate": dict(frames=[_crop(f, 11, 23, 57, 99) for f in frames[:12]], options=dict(bitrate=150.0, segment_frames=6),
                            covers="an odd size (99x57), --bitrate (quality 0 in the header, a quality per segment), "
                                   "two segments"),
        "talk_q8_two_segments": dict(frames=frames[:10], options=dict(quality=8, segment_frames=6),
                                     covers="the top quality (target step), two segments, a last segment of 4 frames"),
        "still_q2": dict(frames=[_crop(first, 0, 0, 144, 176)], options=dict(quality=2),
                         covers="a still (one frame, its group padded)"),
        "streamed_q4": dict(frames=frames[:12], options=dict(quality=4, segment_frames=8), streamed=True,
                            covers="a streamed file (written to a pipe: counts 0 in the header, a trailer), two segments"),
        "fec_q6": dict(frames=frames[:12], options=dict(quality=6, segment_frames=4, fec_pct=10),
                       covers="--fec 10: parity chunks between segments and the header's copy at the end"),
    }


def as_streamed(data: bytes) -> bytes:
    """What the encoder writes to a pipe for the same frames: the header without its counts, the
    same segments, and the trailer (tests/test_cli.py checks that the encoder does exactly this)."""
    header = bs.unpack_header(data[:bs.HEADER_SIZE])
    header.streamed = True
    return header.pack() + data[bs.HEADER_SIZE:] + header.pack_trailer()


def pictures_md5(frames) -> tuple[str, int]:
    """MD5 of a decoded picture sequence: every frame's Y, U and V planes in order, 8-bit."""
    h, n = hashlib.md5(), 0
    for f in frames:
        for p in (f.y, f.u, f.v):
            h.update(np.ascontiguousarray(p, dtype=np.uint8).tobytes())
        n += 1
    return h.hexdigest(), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rewrite even though the format has not moved")
    ap.add_argument("--dir", type=Path, default=OUT, help=f"where the set lives (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args()
    out = args.dir
    manifest = out / "MD5SUMS.json"
    model = load_model()
    if manifest.exists() and not args.force:
        old = json.loads(manifest.read_text())
        if old.get("format") == bs.VERSION:
            print(f"conformance: the committed streams are format {bs.VERSION}'s; the decoded pictures of a format "
                  "do not change. Move the format version (or pass --force for a new shipped model)", file=sys.stderr)
            return 1
    from vqcodec.decoder import decode_bytes, frames_from_bytes  # noqa: F401  (decode as a user would)

    out.mkdir(parents=True, exist_ok=True)
    frames = list(read_frames(SOURCE))
    entries = {}
    for name, s in streams(frames).items():
        path = out / f"{name}.vqv"
        report = encode_frames(s["frames"], FPS, path, model=model, device="cpu", overwrite=True, **s["options"])
        if s.get("streamed"):
            path.write_bytes(as_streamed(path.read_bytes()))
        md5, n = pictures_md5(frames_from_bytes(path.read_bytes(), model, conceal=False, concealed=[]))
        entries[name] = {"md5": md5, "frames": n, "bytes": path.stat().st_size, "covers": s["covers"]}
        print(f"{name}: {report.summary()}; pictures {md5}")
    manifest.write_text(json.dumps({"format": bs.VERSION, "model": model.fingerprint.hex(), "streams": entries},
                                   indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
