from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vqcodec.modelfile import load_model
from vqcodec.video import Frame, VideoWriter, read_frames

DATA = Path(__file__).parent / "data"
CARPHONE = DATA / "carphone_12.mkv"
FPS = Fraction(30000, 1001)


@pytest.fixture(scope="session")
def carphone() -> Path:
    return CARPHONE


@pytest.fixture(scope="session")
def carphone_frames() -> list[Frame]:
    return list(read_frames(CARPHONE))


@pytest.fixture(scope="session")
def model():
    return load_model()


def resize_frames(frames: list[Frame], width: int, height: int) -> list[Frame]:
    """Tile real frames to cover width x height, then crop: real texture at any size."""
    out = []
    cw, ch = (width + 1) // 2, (height + 1) // 2
    for f in frames:
        ry, rx = -(-height // f.height), -(-width // f.width)
        y = np.tile(f.y, (ry, rx))[:height, :width]
        u = np.tile(f.u, (ry, rx))[:ch, :cw]
        v = np.tile(f.v, (ry, rx))[:ch, :cw]
        out.append(Frame(y.copy(), u.copy(), v.copy()))
    return out


def write_clip(path: Path, frames: list[Frame], fps: Fraction = FPS) -> Path:
    w = VideoWriter(path, path, frames[0].width, frames[0].height, fps)
    for f in frames:
        w.write(f)
    w.close()
    return path


@pytest.fixture
def make_clip(tmp_path, carphone_frames):
    def make(width: int, height: int, n: int, name: str | None = None, fps: Fraction = FPS) -> Path:
        frames = resize_frames((carphone_frames * (n // len(carphone_frames) + 1))[:n], width, height)
        return write_clip(tmp_path / (name or f"clip_{width}x{height}_{n}.mkv"), frames, fps)
    return make
