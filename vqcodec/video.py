"""Video I/O through PyAV: streamed 8-bit YUV 4:2:0 planes in, any container out.

We work in the source's own YUV 4:2:0 planes (converting other pixel formats once, YUV to
YUV), never through RGB, so no colour conversion caps the quality.  Odd sizes are kept:
chroma planes are ceil(W/2) x ceil(H/2), as in yuv420p.
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

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
    if frame.format.name not in ("yuv420p", "yuvj420p"):  # yuvj420p: the same planes, full range (tagged)
        frame = frame.reformat(format="yuv420p")
    return Frame(*(_plane(p) for p in frame.planes[:3]))


UNKNOWN_COLOUR = (0, 2, 2, 2)  # range unknown; matrix, primaries, transfer unspecified (H.273 code 2)


def colour_of(frame: av.VideoFrame) -> tuple[int, int, int, int]:
    """(range, matrix, primaries, transfer) as FFmpeg codes them; yuvj420p is full range."""
    values = (frame.color_range, frame.colorspace, frame.color_primaries, frame.color_trc)
    crange, matrix, primaries, transfer = (v if isinstance(v, int) and 0 <= v < 256 else d
                                           for v, d in zip(values, UNKNOWN_COLOUR))
    if frame.format.name == "yuvj420p":
        crange = 2
    return (crange if crange <= 2 else 0, matrix, primaries, transfer)


# frame rates that timestamps in a coarse time base (1/1000 in Matroska) only approximate
COMMON_RATES = [Fraction(n, d) for n, d in ((24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (48, 1),
                                            (50, 1), (60000, 1001), (60, 1), (100, 1), (120000, 1001), (120, 1))]


def rate_from_timestamps(stamps: list[Fraction], fallback: Fraction,
                         resolution: Fraction = Fraction(0)) -> tuple[Fraction, str | None]:
    """The constant rate that keeps a clip's duration, from its frames' presentation times (in any
    order: some demuxers give decode-order stamps), and a warning when the intervals vary.

    Stamps are rounded to their time base (`resolution`, seconds: 1/1000 in Matroska), so the
    span of n frames is known to within one tick: the container's rate (`fallback`) is kept when
    it fits that span, else the common rate that fits it best, else the measured rate.  With fewer
    than two distinct stamps, or repeated ones, the container's rate."""
    times = sorted(set(stamps))
    if len(times) < 2 or len(times) != len(stamps):
        return fallback, None
    span, intervals = times[-1] - times[0], len(times) - 1
    slack = max(resolution, span / 1000)  # one tick, or 0.1 % of the span
    fits = [r for r in [fallback, *COMMON_RATES] if abs(span - intervals / r) <= slack]
    rate = (fallback if fallback in fits else min(fits, key=lambda r: abs(span - intervals / r)) if fits
            else (intervals / span).limit_denominator(1001))
    gaps = [b - a for a, b in zip(times, times[1:])]
    warning = None
    if max(gaps) > min(gaps) * Fraction(3, 2) and max(gaps) - min(gaps) > 2 * resolution:
        warning = (f"variable frame rate (frame intervals {float(min(gaps)) * 1000:.1f}-{float(max(gaps)) * 1000:.1f} ms): "
                   f"coded at a constant {float(rate):.3f} fps, which keeps the duration")
    return rate, warning


def frame_to_av(frame: Frame) -> av.VideoFrame:
    out = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for plane, data in zip(out.planes, (frame.y, frame.u, frame.v)):
        buf = np.zeros((plane.height, plane.line_size), np.uint8)
        buf[:, : plane.width] = data
        plane.update(buf)
    return out


TEXT_FORMATS = {"tty", "srt", "ass", "webvtt", "subviewer", "microdvd", "jacosub", "mpl2", "pjs", "realtext",
                "sami", "stl", "subviewer1", "vplayer", "aqtitle", "lrc", "scc", "mcc"}
TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}


def is_stdio(path) -> bool:
    """'-' names standard input or output, as in ffmpeg and x264."""
    return str(path) == "-"


def _open_input(path: Path):
    if is_stdio(path):
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("-: standard input is a terminal; pipe a video into it (… | vqcodec encode - -o out.vqv)")
        target, path = sys.stdin.buffer, "stdin"
    else:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not a video")
        target = str(path)
    try:
        container = av.open(target)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        hint = " (from a pipe, send a streamable container: y4m, mkv, nut or mpegts)" if path == "stdin" else ""
        raise InputError(f"{path}: not a video PyAV can open ({exc.__class__.__name__}){hint}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    codec = container.streams.video[0].codec_context.name
    if container.format.name in TEXT_FORMATS or codec in TEXT_CODECS:
        container.close()  # FFmpeg renders text as pictures (its tty demuxer); a user meant no video
        raise InputError(f"{path}: is text, not a video (FFmpeg's {container.format.name} demuxer would draw it)")
    return container


def probe(path: Path) -> VideoInfo:
    container = _open_input(Path(path))
    try:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        return VideoInfo(s.codec_context.width, s.codec_context.height, Fraction(rate), s.frames or 0)
    finally:
        container.close()


def describe_audio(stream) -> bytes:
    """An audio stream's codec parameters (codec, rate, layout, extradata, …) as FFmpeg's NUT
    container writes them: a one-stream NUT file with a one-byte placeholder packet (a header
    alone is not a readable file).  About 230 bytes for AAC."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="nut") as out:
        copy = out.add_stream_from_template(stream)
        packet = av.Packet(b"\0")
        packet.pts = packet.dts = 0
        packet.time_base, packet.stream = stream.time_base, copy
        out.mux(packet)
    return buf.getvalue()


def audio_template(description: bytes):
    """(container, stream) described by describe_audio's bytes: the template an output copies."""
    container = av.open(io.BytesIO(description), format="nut")
    if not container.streams.audio:
        container.close()
        raise ValueError("no audio stream in the description")
    return container, container.streams.audio[0]


def audio_name(description: bytes) -> str:
    """'aac 48000 Hz stereo': what info prints about an audio stream."""
    try:
        container, stream = audio_template(description)
    except (av.FFmpegError, ValueError):
        return "unreadable description"
    with container:
        cc = stream.codec_context
        return f"{cc.name} {cc.sample_rate} Hz {cc.layout.name if cc.layout else ''}".strip()


class VideoSource:
    """One input, opened once: a file, or '-' for standard input.  Frames stream out in
    presentation order; their timestamps give the true rate (`timing`) once they have been read.

    `seek` (seconds) starts there, `limit` stops after that many frames, `threads` sets the
    decoder's threads (0: FFmpeg's choice).  The audio streams' packets are gathered as they are
    demuxed (stream copy; `audio=False` drops them) and handed out by `take_audio`."""

    def __init__(self, path, *, seek: float = 0.0, limit: int | None = None, threads: int = 0,
                 audio: bool = True):
        self.name = "stdin" if is_stdio(path) else str(path)
        if seek < 0 or (limit is not None and limit < 1):
            raise InputError("--seek must be 0 or more seconds and --frames at least 1")
        self.container = _open_input(path if is_stdio(path) else Path(path))
        self.stream = stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.header_rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        self.seek, self.limit = seek, limit
        self.stamps: list[Fraction] = []
        self.colour = UNKNOWN_COLOUR
        self.count = 0
        self.notes: list[str] = []
        self.first_time: Fraction | None = None  # the first video frame's time: audio's zero
        self.audio, self.audio_descriptions, self._audio_base = [], [], []
        for a in (self.container.streams.audio if audio else []):
            try:
                description = describe_audio(a)
                container, template = audio_template(description)
                with container:  # PyAV 18 refuses a closed container's streams' fields
                    time_base = template.time_base
            except (av.FFmpegError, ValueError) as exc:
                self.notes.append(f"audio stream {a.index} ({a.codec_context.name}) cannot be copied "
                                  f"({exc.__class__.__name__}); left out")
                continue
            self.audio.append(a)
            self.audio_descriptions.append(description)
            self._audio_base.append(time_base)
        self._audio_number = {a.index: k for k, a in enumerate(self.audio)}
        self._pending: list[tuple[Fraction, int, Fraction, bytes]] = []  # (time, stream number, duration, data)

    @property
    def expected_frames(self) -> int | None:
        """About how many frames will come out (for a progress bar), None when unknown."""
        s = self.stream
        seconds = (float(s.duration * s.time_base) if s.duration and s.time_base else
                   self.container.duration / 1e6 if self.container.duration else 0.0)
        n = round((seconds - self.seek) * float(self.header_rate)) if seconds else (s.frames or 0)
        if s.frames and not self.seek:
            n = min(n, s.frames) if n > 0 else s.frames
        if self.limit:
            n = min(n, self.limit) if n > 0 else self.limit
        return n if n > 0 else None

    def frames(self) -> Iterator[Frame]:
        stream, tb = self.stream, self.stream.time_base
        start = Fraction(self.seek).limit_denominator(1_000_000)
        if start and self.name != "stdin" and tb:
            try:
                self.container.seek(int(start / tb) + (stream.start_time or 0), stream=stream, backward=True)
            except av.FFmpegError:
                pass  # cannot seek: decode from the start and drop frames below
        first = Fraction(stream.start_time or 0) * tb if tb else Fraction(0)
        skip = round(start * self.header_rate)  # when frames carry no time
        half = 1 / (2 * self.header_rate)
        try:
            for n, f in enumerate(self._decoded()):
                t = Fraction(f.pts) * f.time_base - first if f.pts is not None and f.time_base else None
                if (t < start - half) if t is not None else n < skip:
                    continue
                if self.count == 0:
                    self.colour = colour_of(f)
                    self.first_time = t + first if t is not None else Fraction(n) / self.header_rate + first
                if t is not None:
                    self.stamps.append(t)
                yield frame_from_av(f)
                self.count += 1
                if self.limit is not None and self.count >= self.limit:
                    return
        except av.FFmpegError as exc:
            if self.count == 0:
                raise InputError(f"{self.name}: cannot decode video ({exc.__class__.__name__})") from None
            # a damaged tail: keep the frames decoded so far, as players do

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """The video stream's frames; the audio packets met on the way are kept for take_audio."""
        for packet in self.container.demux(self.stream, *self.audio):
            if packet.stream.index == self.stream.index:
                yield from packet.decode()
            elif packet.size and (packet.pts is not None or packet.dts is not None):
                tb = packet.time_base
                when = Fraction(packet.pts if packet.pts is not None else packet.dts) * tb
                self._pending.append((when, self._audio_number[packet.stream.index],
                                      Fraction(packet.duration or 0) * tb, bytes(packet)))

    def take_audio(self, until: Fraction | None) -> list[tuple[int, int, int, bytes]]:
        """The audio packets gathered so far that start before `until` seconds of video (None: all),
        as (stream number, time from the first video frame, duration, data), times in the stream's
        time base (that of its description); packets that end before the first frame (after
        --seek) are dropped."""
        if self.first_time is None or not self._pending:
            return []
        self._pending.sort(key=lambda p: p[0])
        out, keep = [], []
        for when, number, duration, data in self._pending:
            t = when - self.first_time
            if until is not None and t >= until:
                keep.append((when, number, duration, data))
            elif t + duration > 0 or (duration == 0 and t >= 0):
                base = self._audio_base[number]
                out.append((number, round(t / base), round(duration / base), data))
        self._pending = keep
        return out

    def timing(self) -> tuple[Fraction, str | None]:
        """The frames' rate and a warning when it varied; the header's guess before any frames."""
        if len(self.stamps) != self.count:
            return self.header_rate, None
        return rate_from_timestamps(self.stamps, self.header_rate, Fraction(self.stream.time_base or 0))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


STREAM_FORMATS = (".y4m", ".mkv", ".avi")  # containers written without seeking back (to a pipe)


def output_kind(path: Path, fmt: str | None = None) -> str:
    """'dir' (PNG frames), 'image' (one still), or the container extension; `fmt` (y4m, mkv, …)
    overrides the extension, and standard output ('-') is y4m unless `fmt` names another."""
    if fmt is not None:
        ext = "." + fmt.lower().lstrip(".")
        if ext not in VideoWriter.CODECS:
            raise VqvError(f"--format {fmt}: unknown container (use y4m, mkv, avi, mp4 or mov)")
    else:
        ext = ".y4m" if is_stdio(path) else Path(path).suffix.lower()
    if is_stdio(path) and ext not in STREAM_FORMATS:
        raise VqvError(f"-o -: standard output cannot seek back, which {ext} needs; use --format y4m, mkv or avi")
    if ext in VideoWriter.CODECS:
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

    def __init__(self, target: Path | BinaryIO, final_path: Path, width: int, height: int, fps: Fraction,
                 colour: tuple[int, int, int, int] = UNKNOWN_COLOUR, ext: str | None = None):
        ext = ext or Path(final_path).suffix.lower()
        fmt, codec, options = self.CODECS[ext]
        if codec == "libx264" and (width % 2 or height % 2):
            raise VqvError(f"{final_path}: {ext} (x264) needs an even width and height, this video is "
                           f"{width}x{height}; write .mkv or .y4m instead (both exact at any size)")
        self.container = av.open(target if hasattr(target, "write") else str(target), "w", format=fmt)
        self.stream = self.container.add_stream(codec, rate=fps, options=options)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        cc = self.stream.codec_context  # the source's colour tags (y4m: XCOLORRANGE; containers: their own)
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = colour
        self.colour = colour
        self.n = 0
        self.audio: list = []  # per described stream: (output stream, its template, a transcoder or None)
        self.notes: list[str] = []

    def add_audio(self, descriptions: list[bytes]) -> None:
        """Carry these audio streams (describe_audio's bytes): copied when the container takes
        their codec, else re-encoded to AAC; y4m holds no audio (a note says so)."""
        if not descriptions:
            return
        if self.container.format.name == "yuv4mpegpipe":
            self.notes.append(f"left out {len(descriptions)} audio stream(s): .y4m holds video only")
            return
        for description in descriptions:
            container, template = audio_template(description)
            if template.codec_context.name in self.container.supported_codecs:
                self.audio.append((self.container.add_stream_from_template(template), template, None, container))
            else:
                out = self.container.add_stream("aac", rate=template.codec_context.sample_rate)
                out.layout = template.codec_context.layout
                self.audio.append((out, template, template.codec_context, container))
                self.notes.append(f"re-encoded {template.codec_context.name} audio to AAC "
                                  f"({self.container.format.name} cannot hold {template.codec_context.name})")

    def write_audio(self, number: int, pts: int, duration: int, data: bytes) -> None:
        """One packet of audio stream `number`, its time from the first frame in its own base."""
        if number >= len(self.audio):
            return
        out, template, decoder, _ = self.audio[number]
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.duration, packet.time_base = duration, template.time_base
        if decoder is None:
            packet.stream = out
            self.container.mux(packet)
            return
        try:
            frames = decoder.decode(packet)
        except av.FFmpegError:
            return  # a packet its decoder refuses: a moment of silence, as a player would give
        self._encode_audio(out, frames)

    def _encode_audio(self, out, frames) -> None:
        """Decoded audio frames re-encoded by `out` (AAC), timed by the encoder from their samples."""
        for frame in frames:
            frame.pts = None
            for p in out.encode(frame):
                self.container.mux(p)

    def write(self, frame: Frame) -> None:
        f = frame_to_av(frame)
        f.color_range, f.colorspace, f.color_primaries, f.color_trc = self.colour
        f.pts = self.n
        self.n += 1
        for packet in self.stream.encode(f):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        for out, _, decoder, source in self.audio:
            if decoder is not None:
                self._encode_audio(out, decoder.decode(None))
                for p in out.encode(None):
                    self.container.mux(p)
            source.close()
        self.container.close()


class PngWriter:
    """Writes each frame as a numbered PNG (RGB, converted once with the BT.601 matrix)."""

    def __init__(self, folder: Path, single: bool = False):
        self.folder, self.single, self.n = Path(folder), single, 0
        self.audio: list = []  # PNG pictures carry no audio (VideoWriter's interface)
        self.notes: list[str] = []
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

    def add_audio(self, descriptions: list[bytes]) -> None:
        if descriptions:
            self.notes.append(f"left out {len(descriptions)} audio stream(s): PNG pictures hold no audio")

    def close(self) -> None:
        pass


def frames_text(n: int) -> str:
    """'1 frame', '12 frames': the summaries' wording."""
    return f"{n} frame" if n == 1 else f"{n} frames"
