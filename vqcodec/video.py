"""Video I/O through PyAV: streamed 8-bit YUV 4:2:0 planes in, any container out.

We work in the source's own YUV 4:2:0 planes (converting other pixel formats once, YUV to
YUV), never through RGB, so no colour conversion caps the quality.  Odd sizes are kept:
chroma planes are ceil(W/2) x ceil(H/2), as in yuv420p.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .errors import InputError, VqvError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Frame:
    """One picture as three uint8 planes: y (H, W), u and v (ceil(H/2), ceil(W/2))."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int  # as the container states it; 0 when unknown


def centre_crop(frame: Frame, height: int, width: int) -> Frame:
    """The centre of a frame, at most height x width, cut on even luma lines and columns."""
    if frame.height <= height and frame.width <= width:
        return frame
    h, w = min(height, frame.height), min(width, frame.width)
    i, j = (frame.height - h) // 4 * 2, (frame.width - w) // 4 * 2
    return Frame(frame.y[i:i + h, j:j + w], frame.u[i // 2:(i + h + 1) // 2, j // 2:(j + w + 1) // 2],
                 frame.v[i // 2:(i + h + 1) // 2, j // 2:(j + w + 1) // 2])


def _plane(plane) -> np.ndarray:
    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width].copy()


def frame_from_av(frame: av.VideoFrame) -> Frame:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    return Frame(*(_plane(p) for p in frame.planes[:3]))


def frame_to_av(frame: Frame) -> av.VideoFrame:
    out = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for plane, data in zip(out.planes, (frame.y, frame.u, frame.v)):
        buf = np.zeros((plane.height, plane.line_size), np.uint8)
        buf[:, : plane.width] = data
        plane.update(buf)
    return out


def _open_input(path: Path):
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a video PyAV can open ({exc.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    container = _open_input(Path(path))
    try:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        return VideoInfo(s.codec_context.width, s.codec_context.height, Fraction(rate), s.frames or 0)
    finally:
        container.close()


def read_frames(path: Path, limit: int | None = None, start: int = 0) -> Iterator[Frame]:
    """Decode the first video stream frame by frame (streamed: memory does not grow)."""
    container = _open_input(Path(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for i, f in enumerate(container.decode(stream)):
                if i < start:
                    continue
                yield frame_from_av(f)
                n += 1
                if limit is not None and n >= limit:
                    return
        except av.FFmpegError as exc:
            if n == 0:
                raise InputError(f"{path}: cannot decode video ({exc.__class__.__name__})") from None
            # a damaged tail: keep the frames decoded so far, as players do
    finally:
        container.close()


def read_window(path: Path, start: int, count: int) -> list[Frame]:
    """About `count` consecutive frames from near frame `start`, for training samples.

    Seeks to the keyframe before `start` (by timestamp, assuming a constant frame rate) and
    decodes forward, so a window deep inside a long clip costs one GOP, not the whole prefix.
    Frame numbering may be off by a few frames on variable-rate streams; training does not
    care.  Falls back to decoding from the start when the stream cannot seek."""
    container = _open_input(Path(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        first = stream.start_time or 0
        skip = start
        if start > 0 and rate and stream.time_base:
            target = first + int(start / float(rate) / float(stream.time_base))
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
                skip = None
            except av.FFmpegError:
                container.seek(0, stream=stream)
        out: list[Frame] = []
        try:
            for i, f in enumerate(container.decode(stream)):
                if skip is None:  # after a seek: drop the frames before the target time
                    if f.pts is not None and f.pts < target:
                        continue
                elif i < skip:
                    continue
                out.append(frame_from_av(f))
                if len(out) >= count:
                    break
        except av.FFmpegError:
            if not out:
                raise InputError(f"{path}: cannot decode video") from None
        return out
    finally:
        container.close()


def count_frames(path: Path) -> int:
    """Frames in the first video stream: the container's count, else the demuxed packets."""
    info = probe(path)
    if info.frames:
        return info.frames
    container = _open_input(Path(path))
    try:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)
    finally:
        container.close()


def output_kind(path: Path) -> str:
    """'dir' (PNG frames), 'image' (one still), or the container extension."""
    ext = Path(path).suffix.lower()
    if ext in (".y4m", ".mkv", ".mp4", ".mov", ".avi"):
        return ext
    if ext == ".png":
        return "image"
    if ext == "":
        return "dir"
    raise VqvError(f"{path}: unknown output type '{ext}' (use .y4m, .mkv, .avi, .mp4, .mov, .png or a folder)")


class VideoWriter:
    """Writes Frames to a container chosen by the *final* path's extension.

    .y4m: raw yuv420p; .mkv/.avi: FFV1 (lossless); .mp4/.mov: x264 lossless (qp 0).
    Every container gives back exactly the planes we decoded.
    """

    CODECS = {
        ".y4m": ("yuv4mpegpipe", "rawvideo", {}),
        ".mkv": ("matroska", "ffv1", {}),
        ".avi": ("avi", "ffv1", {}),
        ".mp4": ("mp4", "libx264", {"qp": "0", "preset": "veryfast"}),
        ".mov": ("mov", "libx264", {"qp": "0", "preset": "veryfast"}),
    }

    def __init__(self, tmp_path: Path, final_path: Path, width: int, height: int, fps: Fraction):
        ext = Path(final_path).suffix.lower()
        fmt, codec, options = self.CODECS[ext]
        if codec == "libx264" and (width % 2 or height % 2):
            raise VqvError(f"{final_path}: {ext} (x264) needs an even width and height, this video is "
                           f"{width}x{height}; write .mkv or .y4m instead (both exact at any size)")
        self.container = av.open(str(tmp_path), "w", format=fmt)
        self.stream = self.container.add_stream(codec, rate=fps, options=options)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.n = 0

    def write(self, frame: Frame) -> None:
        f = frame_to_av(frame)
        f.pts = self.n
        self.n += 1
        for packet in self.stream.encode(f):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class PngWriter:
    """Writes each frame as a numbered PNG (RGB, converted once with the BT.601 matrix)."""

    def __init__(self, folder: Path, single: bool = False):
        self.folder, self.single, self.n = Path(folder), single, 0
        if not single:
            self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame) -> None:
        rgb = frame_to_av(frame).reformat(format="rgb24")
        target = self.folder if self.single else self.folder / f"{self.n + 1:06d}.png"
        container = av.open(str(target), "w", format="image2")
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "rgb24"
        for packet in stream.encode(rgb):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        self.n += 1

    def close(self) -> None:
        pass


def frames_text(n: int) -> str:
    """'1 frame', '12 frames': the summaries' wording."""
    return f"{n} frame" if n == 1 else f"{n} frames"
