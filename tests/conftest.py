from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vqcodec.modelfile import load_model
from vqcodec.video import Frame, VideoWriter, frame_to_av, read_frames

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


def write_held_avi(path: Path, frames: list[Frame], ticks: int = 2, rate: int = 50) -> Path:
    """An AVI whose header claims `rate` fps while each frame is held for `ticks` of it (the muxer
    fills the gaps with empty chunks): 25 fps pictures under a 50 fps header, as cameras write.
    The header's rate and frame count both lie; the frames' timestamps tell the truth."""
    import av
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=rate, options={"qscale": "2"})
    stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, rate)
    for i, f in enumerate(frames):
        av_frame = frame_to_av(f)
        av_frame.pts, av_frame.time_base = ticks * i, Fraction(1, rate)
        for packet in stream.encode(av_frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_clip_with_audio(path: Path, frames: list[Frame], fps: Fraction = Fraction(25), codec: str = "aac",
                          rate: int = 48000) -> Path:
    """A clip with a tone as its audio track (AAC by default), as long as its video."""
    import av
    container = av.open(str(path), "w")
    video = container.add_stream("libx264" if path.suffix == ".mp4" else "ffv1", rate=fps)
    video.width, video.height, video.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    audio = container.add_stream(codec, rate=rate)
    audio.layout = "stereo"
    audio.codec_context.open()  # (to learn its frame size: AAC 1024, Opus 960)
    for i, f in enumerate(frames):
        av_frame = frame_to_av(f)
        av_frame.pts = i
        for packet in video.encode(av_frame):
            container.mux(packet)
    samples, size = int(len(frames) / fps * rate), audio.codec_context.frame_size or 1024
    fmt = audio.codec_context.format.name if audio.codec_context.format else "fltp"
    for start in range(0, samples, size):
        n = min(size, samples - start)
        t = np.arange(start, start + n) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        chunk.sample_rate, chunk.pts = rate, start
        if fmt != "fltp":
            chunk = av.AudioResampler(format=fmt, layout="stereo", rate=rate).resample(chunk)[0]
        for packet in audio.encode(chunk):
            container.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode():
            container.mux(packet)
    container.close()
    return path


def stream_durations(path: Path) -> dict[str, float]:
    """{"video": when its last frame starts, "audio": when its sound ends}, in seconds."""
    import av
    out = {}
    with av.open(str(path)) as c:
        for stream in (c.streams.video[:1] + c.streams.audio[:1]):
            end = 0.0
            for frame in c.decode(stream):
                length = frame.samples / frame.sample_rate if stream.type == "audio" else 0.0
                end = max(end, frame.time + length)
            out[stream.type] = end
            c.seek(0)
    return out
