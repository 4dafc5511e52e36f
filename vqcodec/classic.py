"""The classic codecs the bench measures against (x264, x265, SVT-AV1, VP9), through PyAV.

Each encode runs in a fresh process of its own (`python -m vqcodec.classic`, importing only
PyAV and NumPy): libx264 gives a different stream for the same frames and options depending on
the state of the process it runs in (measured: carphone_12 at CRF 28 came out 3486, 3511, 3514
or 3545 bytes in a test process that had run PyTorch, first encodes differing, later ones
settling; always 3486 in a fresh process; with one thread too, so it is not frame threading).
A fresh process per encode makes every figure reproduce.  The worker reads the frames from a
y4m file and writes the coded stream into a Matroska file; the caller decodes it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import VqvError
from .video import frame_to_av, read_frames

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only


@dataclass
class Classic:
    """A classic encoder through PyAV; `settings` are CRF values (small = better picture)."""

    name: str
    encoder: str
    settings: tuple[int, ...]
    options: dict

    def encode(self, y4m: Path, fps: Fraction, setting: int, out: Path) -> tuple[int, float]:
        """(payload bytes, encode seconds) of the frames in `y4m`, coded into `out`, in a fresh process."""
        job = json.dumps({"codec": self.name, "y4m": str(y4m), "fps": [fps.numerator, fps.denominator],
                          "crf": setting, "out": str(out)})
        done = subprocess.run([sys.executable, "-m", "vqcodec.classic", job], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise VqvError(f"{self.name} CRF {setting}: the encoder failed ({last})")
        result = json.loads(done.stdout)
        return result["bytes"], result["seconds"]


CLASSICS = {
    # x264 on one thread: its frame threads make yet another stream each time (timing-dependent)
    "x264": Classic("x264", "libx264", (18, 23, 28, 33, 38), {"preset": "medium", "threads": "1"}),
    "x265": Classic("x265", "libx265", (18, 23, 28, 33, 38), {"preset": "medium", "x265-params": "log-level=error"}),
    "svtav1": Classic("svtav1", "libsvtav1", (25, 32, 39, 46, 53), {"preset": "8"}),
    "vp9": Classic("vp9", "libvpx-vp9", (20, 28, 36, 44, 52), {"b": "0", "deadline": "good", "cpu-used": "4",
                                                                "row-mt": "1"}),
}


def _encode_here(codec: str, y4m: str, fps: Fraction, crf: int, out: str) -> tuple[int, float]:
    c = CLASSICS[codec]
    frames = list(read_frames(Path(y4m)))
    t0 = time.perf_counter()
    container = av.open(out, "w")
    stream = container.add_stream(c.encoder, rate=fps, options={**c.options, "crf": str(crf)})
    stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    nbytes = 0
    for i, f in enumerate(frames):
        af = frame_to_av(f)
        af.pts = i
        for p in stream.encode(af):
            nbytes += p.size
            container.mux(p)
    for p in stream.encode():
        nbytes += p.size
        container.mux(p)
    container.close()
    return nbytes, time.perf_counter() - t0


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    n, seconds = _encode_here(job["codec"], job["y4m"], Fraction(*job["fps"]), job["crf"], job["out"])
    print(json.dumps({"bytes": n, "seconds": seconds}))
