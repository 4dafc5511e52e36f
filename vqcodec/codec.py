"""The codec: video I/O + network + entropy coder + bitstream, streamed segment by segment.

encode_file / decode_file / inspect are the library calls behind the CLI.  Memory is bounded
by one segment (``segment_frames`` frames) whatever the video's length; outputs go to a
temporary name in the target folder and are renamed only when complete.
"""
from __future__ import annotations

import math
import mmap
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import bitstream as bs
from .entropy import EntropyCoder
from .errors import FormatError, InputError, ModelMismatch, VqvError
from .modelfile import CodecModel, load_model
from .video import Frame, PngWriter, VideoWriter, output_kind, probe, read_frames

QUALITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # fraction of the VQ depth per quality
DEFAULT_QUALITY = 4
DEFAULT_SEGMENT_FRAMES = 32
DEFAULT_BATCH = 4  # temporal groups through the network at once

Progress = Callable[[int], None]  # called with the number of frames just finished


def stages_for_quality(quality: int, max_stages: int) -> int:
    if not 1 <= quality <= len(QUALITY_LEVELS):
        raise VqvError(f"--quality must be an integer from 1 to {len(QUALITY_LEVELS)}, got {quality}")
    return max(1, round(QUALITY_LEVELS[quality - 1] * max_stages))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VqvError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise VqvError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


# -- temporary outputs ------------------------------------------------------------------------
PNG_NAME = re.compile(r"\d{6}\.png")


def check_output(path: Path, overwrite: bool, folder: bool = False) -> None:
    """Refuse early what could not be written, or would destroy something not ours."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise VqvError(f"{path}: already exists (use -y to overwrite)")
        if path.is_dir() and not folder:
            raise VqvError(f"{path}: is a folder; give a file name")
        if folder and not path.is_dir():
            raise VqvError(f"{path}: is a file; give a folder name for PNG frames")
        if folder and any(not PNG_NAME.fullmatch(p.name) for p in path.iterdir()):
            raise VqvError(f"{path}: folder holds files other than numbered PNG frames; not replacing it")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise VqvError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise VqvError(f"{parent}: output folder is not writable")


@contextmanager
def atomic_output(path: Path, overwrite: bool, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else remove it."""
    path = Path(path)
    check_output(path, overwrite, folder)
    tmp = path.with_name(f".{path.name}.part{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if folder and path.is_dir():  # only numbered PNGs, checked above
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):  # writing failed: name the output
            raise VqvError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
        raise


# -- frames <-> tensors ------------------------------------------------------------------------
def pad_planes(frames: list[Frame], patch: int, t: int):
    """Frames -> float tensors y (G,T,Hp,Wp), u, v (G,T,Hp/2,Wp/2) in [0,1], edge-padded."""
    while len(frames) % t:
        frames = frames + [frames[-1]]
    H, W = frames[0].height, frames[0].width
    Hp, Wp = math.ceil(H / patch) * patch, math.ceil(W / patch) * patch

    def stack(planes, h, w):
        a = np.stack(planes)
        a = np.pad(a, ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2])), mode="edge")
        return torch.from_numpy(a).float().div_(255.0).reshape(-1, t, h, w)

    return (stack([f.y for f in frames], Hp, Wp), stack([f.u for f in frames], Hp // 2, Wp // 2),
            stack([f.v for f in frames], Hp // 2, Wp // 2))


def to_frames(y, u, v, width: int, height: int, count: int) -> list[Frame]:
    """Decoder planes (G,T,..) in [0,1] -> `count` cropped uint8 Frames."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    q = lambda p: p.mul(255.0).round_().to(torch.uint8).reshape(-1, *p.shape[2:]).cpu().numpy()
    Y, U, V = q(y), q(u), q(v)
    return [Frame(Y[i, :height, :width], U[i, :ch, :cw], V[i, :ch, :cw]) for i in range(count)]


# -- segments ------------------------------------------------------------------------------------
class SegmentCoder:
    """Codes one segment's frames to payload bytes and back, with one model."""

    def __init__(self, model: CodecModel, device: str, batch: int = DEFAULT_BATCH):
        self.model, self.device, self.batch = model, device, max(1, batch)
        self.net = model.net.to(device).eval()
        self.cfg = model.config
        self.coder = EntropyCoder(model.tables) if model.tables is not None else None

    def indices(self, frames: list[Frame], stages: int) -> np.ndarray:
        y, u, v = pad_planes(frames, self.cfg.patch, self.cfg.frames)
        out = []
        for i in range(0, y.shape[0], self.batch):
            sl = slice(i, i + self.batch)
            out.append(self.net.encode(y[sl].to(self.device), u[sl].to(self.device), v[sl].to(self.device), stages).cpu())
        return torch.cat(out).numpy()

    def encode(self, frames: list[Frame], stages: int) -> tuple[bytes, float]:
        """Frames -> (payload bytes, ideal code length in bits under the tables)."""
        idx = self.indices(frames, stages)
        return self.coder.encode(idx).astype("<u4").tobytes(), self.coder.estimate_bits(idx)

    def decode(self, payload: bytes, header: bs.Header, count: int) -> list[Frame]:
        """Payload -> `count` frames.  Every number is checked before it sizes an allocation."""
        p = self.cfg.patch
        h, w = math.ceil(header.height / p), math.ceil(header.width / p)
        groups = math.ceil(count / self.cfg.frames)
        if groups * header.stages * h * w > self.coder.max_symbols(len(payload)):
            raise FormatError("payload is too short for the symbols the header announces")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        frames: list[Frame] = []
        batch: list[np.ndarray] = []
        try:
            for g in self.coder.decode_groups(words, groups, (header.stages, h, w)):
                batch.append(g)
                if len(batch) == self.batch:
                    frames += self._synthesise(batch, header, count - len(frames))
                    batch = []
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise FormatError(f"cannot entropy-decode payload ({exc})") from None
        if batch:
            frames += self._synthesise(batch, header, count - len(frames))
        return frames

    def _synthesise(self, batch: list[np.ndarray], header: bs.Header, left: int) -> list[Frame]:
        idx = torch.from_numpy(np.stack(batch)).to(self.device)
        y, u, v = self.net.decode(idx)
        return to_frames(y, u, v, header.width, header.height, min(left, y.shape[0] * y.shape[1]))


def _chunks(frames: Iterable[Frame], n: int) -> Iterator[list[Frame]]:
    buf: list[Frame] = []
    for f in frames:
        buf.append(f)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


# -- public calls --------------------------------------------------------------------------------
def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


@dataclass
class EncodeReport:
    frames: int
    width: int
    height: int
    fps: float
    bytes: int
    seconds: float
    quality: int
    estimated_bits: float = 0.0

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / max(1, self.width * self.height * self.frames)

    @property
    def kbps(self) -> float:
        return 8 * self.bytes / max(1e-9, self.frames / self.fps) / 1000

    def summary(self) -> str:
        return (f"encoded {_frames(self.frames)} {self.width}x{self.height}, {self.bytes} bytes, "
                f"{self.kbps:.1f} kbit/s, {self.bpp:.4f} bpp, {self.frames / max(self.seconds, 1e-9):.2f} fps")


def encode_file(src: Path, dst: Path, *, quality: int = DEFAULT_QUALITY, model: Path | CodecModel | None = None,
                device: str = "auto", overwrite: bool = False, segment_frames: int = DEFAULT_SEGMENT_FRAMES,
                batch: int = DEFAULT_BATCH, progress: Progress | None = None) -> EncodeReport:
    """Encode any video PyAV opens into a .vqv file."""
    info = probe(Path(src))
    return encode_frames(read_frames(Path(src)), info.fps, dst, quality=quality, model=model, device=device,
                         overwrite=overwrite, segment_frames=segment_frames, batch=batch, progress=progress,
                         name=str(src))


def encode_frames(frames: Iterable[Frame], fps: Fraction, dst: Path, *, quality: int = DEFAULT_QUALITY,
                  model: Path | CodecModel | None = None, device: str = "auto", overwrite: bool = False,
                  segment_frames: int = DEFAULT_SEGMENT_FRAMES, batch: int = DEFAULT_BATCH,
                  progress: Progress | None = None, name: str = "input") -> EncodeReport:
    """Encode a stream of frames (all of one size) into a .vqv file, segment by segment."""
    t0 = time.time()
    device = resolve_device(device)
    cm = model if isinstance(model, CodecModel) else load_model(model, device)
    stages = stages_for_quality(quality, cm.config.stages)
    T = cm.config.frames
    if not T <= segment_frames <= bs.MAX_SEGMENT_FRAMES:
        raise VqvError(f"--segment must be from {T} to {bs.MAX_SEGMENT_FRAMES} frames, got {segment_frames}")
    segment_frames = segment_frames // T * T
    coder = SegmentCoder(cm, device, batch)
    total, est_bits = 0, 0.0
    with atomic_output(Path(dst), overwrite) as tmp, open(tmp, "wb") as out:
        out.write(bytes(bs.HEADER_SIZE))
        index = 0
        width = height = None
        for chunk in _chunks(frames, segment_frames):
            if width is None:
                width, height = chunk[0].width, chunk[0].height
            if any(f.width != width or f.height != height for f in chunk):
                raise InputError(f"{name}: frame size changes inside the video; not supported")
            payload, bits = coder.encode(chunk, stages)
            est_bits += bits
            out.write(bs.Segment(index, total, len(chunk), payload).pack())
            index += 1
            total += len(chunk)
            if progress:
                progress(len(chunk))
        if total == 0:
            raise InputError(f"{name}: no frames could be decoded")
        header = bs.Header(cm.fingerprint, width, height, Fraction(fps), total, quality, stages, T,
                           segment_frames, cm.config.patch, index)
        out.seek(0)
        out.write(header.pack())
        out.flush()
        os.fsync(out.fileno())
    size = Path(dst).stat().st_size
    return EncodeReport(total, width, height, float(fps), size, time.time() - t0, quality, est_bits)


def _read_vqv(path: Path):
    path = Path(path)
    if not path.exists():
        raise VqvError(f"{path}: no such file")
    if path.is_dir():
        raise VqvError(f"{path}: is a folder, not a .vqv file")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FormatError(f"{path}: empty file, not a .vqv")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        header = bs.unpack_header(data[: bs.HEADER_SIZE])
    except bs.BitstreamError as exc:
        data.close()
        raise FormatError(f"{path}: {exc}") from None
    return data, header


@dataclass
class DecodeReport:
    frames: int
    width: int
    height: int
    seconds: float
    concealed: list[bs.Damaged] = field(default_factory=list)

    def summary(self) -> str:
        s = f"decoded {_frames(self.frames)} {self.width}x{self.height}, {self.frames / max(self.seconds, 1e-9):.2f} fps"
        if self.concealed:
            segs = ", ".join(f"{d.index} (frames {d.first_frame}-{d.first_frame + d.frames - 1}: {d.reason})"
                             for d in self.concealed)
            s += f"; concealed {sum(d.frames for d in self.concealed)} frames in damaged segments {segs}"
        return s


def _check_model(src, header: bs.Header, cm: CodecModel) -> None:
    if cm.fingerprint != header.fingerprint:
        raise ModelMismatch(f"{src}: written with model {header.fingerprint.hex()}, but the model at hand "
                            f"({cm.path or 'given'}) is {cm.fingerprint.hex()}; pass --model with that file")
    if header.group_frames != cm.config.frames or header.patch != cm.config.patch \
            or header.stages > cm.config.stages:
        raise FormatError(f"{src}: stream layout does not match its model")


def decoded_frames(data, header: bs.Header, coder: SegmentCoder, *, conceal: bool, concealed: list,
                   src="input", progress: Progress | None = None) -> Iterator[Frame]:
    """Every frame of a parsed file, in order; damaged segments raise, or with `conceal` are
    filled from the nearest intact frame and appended to `concealed`."""
    pending = 0  # damaged frames before the first good one
    last: Frame | None = None
    for seg in bs.read_segments(data, header):
        frames: list[Frame] = []
        if isinstance(seg, bs.Segment):
            try:
                frames = coder.decode(seg.payload, header, seg.frames)
            except FormatError as exc:
                seg = bs.Damaged(seg.index, seg.first_frame, seg.frames, str(exc))
        if isinstance(seg, bs.Damaged):
            if not conceal:
                raise FormatError(f"{src}: segment {seg.index} (frames {seg.first_frame}-"
                                  f"{seg.first_frame + seg.frames - 1}) is damaged: {seg.reason}; "
                                  f"use --conceal to decode the rest")
            concealed.append(seg)
            if last is None:
                pending += seg.frames
            else:
                frames = [last] * seg.frames
        elif pending:
            frames = [frames[0]] * pending + frames
            pending = 0
        yield from frames
        if frames:
            last = frames[-1]
        if progress:
            progress(seg.frames)
    if pending:
        raise FormatError(f"{src}: every segment is damaged; nothing to decode")


def frames_from_bytes(data: bytes, model: CodecModel, *, device: str = "cpu", conceal: bool,
                      concealed: list) -> Iterator[Frame]:
    """Every frame of a whole .vqv held in memory; raises FormatError/ModelMismatch like decode_file."""
    try:
        header = bs.unpack_header(data[: bs.HEADER_SIZE])
    except bs.BitstreamError as exc:
        raise FormatError(str(exc)) from None
    _check_model("input", header, model)
    yield from decoded_frames(data, header, SegmentCoder(model, device), conceal=conceal, concealed=concealed)


def decode_bytes(data: bytes, model: CodecModel, conceal: bool = True) -> tuple[int, list[bs.Damaged]]:
    """Decode a .vqv held in memory, discarding the frames: (frames, concealed).  For fuzzing."""
    concealed: list[bs.Damaged] = []
    n = sum(1 for _ in frames_from_bytes(data, model, conceal=conceal, concealed=concealed))
    return n, concealed


def decode_file(src: Path, dst: Path, *, model: Path | CodecModel | None = None, device: str = "auto",
                overwrite: bool = False, conceal: bool = False, batch: int = DEFAULT_BATCH,
                progress: Progress | None = None) -> DecodeReport:
    t0 = time.time()
    device = resolve_device(device)
    kind = output_kind(Path(dst))
    data, header = _read_vqv(src)
    try:
        if kind == "image" and header.frames > 1:
            raise VqvError(f"{dst}: a .png holds one picture and this video has {header.frames} frames; "
                           "give a folder name (no extension) for numbered PNGs")
        cm = model if isinstance(model, CodecModel) else load_model(model, device)
        _check_model(src, header, cm)
        coder = SegmentCoder(cm, device, batch)
        concealed: list[bs.Damaged] = []
        written = 0
        with atomic_output(Path(dst), overwrite, folder=(kind == "dir")) as tmp:
            if kind in ("dir", "image"):
                writer = PngWriter(tmp, single=(kind == "image"))
            else:
                writer = VideoWriter(tmp, Path(dst), header.width, header.height, header.fps)
            try:
                for frame in decoded_frames(data, header, coder, conceal=conceal, concealed=concealed,
                                            src=src, progress=progress):
                    writer.write(frame)
                    written += 1
            except BaseException:
                try:
                    writer.close()
                except Exception:  # the first error is the one to report
                    pass
                raise
            writer.close()
        return DecodeReport(written, header.width, header.height, time.time() - t0, concealed)
    finally:
        data.close()


def inspect(src: Path) -> dict:
    """Header fields, segment table and damage report of a .vqv file."""
    data, header = _read_vqv(src)
    try:
        size = len(data)
        segments, damaged = [], []
        for seg in bs.read_segments(data, header):
            if isinstance(seg, bs.Segment):
                segments.append({"index": seg.index, "first_frame": seg.first_frame, "frames": seg.frames,
                                 "bytes": len(seg.payload) + bs.SEGMENT_HEADER_SIZE})
            else:
                damaged.append({"index": seg.index, "first_frame": seg.first_frame, "frames": seg.frames,
                                "reason": seg.reason})
    finally:
        data.close()
    d = header.to_dict()
    seconds = header.frames / float(header.fps)
    d.update({"model": d.pop("fingerprint"), "bytes": size,
              "kbps": round(8 * size / seconds / 1000, 3) if seconds else 0.0,
              "bpp": round(8 * size / (header.width * header.height * header.frames), 5) if header.frames else 0.0,
              "segment_table": segments, "damaged": damaged})
    return d


def fit_model_tables(net, paths: list[Path], *, frames: int = 64, segment_frames: int = DEFAULT_SEGMENT_FRAMES,
                     device: str = "cpu") -> torch.Tensor:
    """Freeze the context model: code the first `frames` frames of each clip segment by segment,
    exactly as encode does at full depth, count (context, index) pairs, and quantise them to
    integer tables."""
    from .entropy import count_transitions, fit_tables

    coder = SegmentCoder(CodecModel(net, None, b""), device)
    counts = None
    for path in paths:
        for chunk in _chunks(read_frames(Path(path), limit=frames), segment_frames):
            idx = coder.indices(chunk, net.config.stages)
            counts = count_transitions(idx, net.config.codes, counts)
    return fit_tables(counts)


def inspect_model(path: Path) -> dict:
    """What a model file holds: fingerprint, architecture, entropy tables, training facts."""
    cm = load_model(path, need_tables=False)
    meta = dict(cm.meta)
    d = {"model": cm.fingerprint.hex(), "path": str(cm.path), "architecture": cm.config.to_dict(),
         "parameters": sum(p.numel() for p in cm.net.parameters()),
         "tables": list(cm.tables.shape) if cm.tables is not None else "none (a training checkpoint)"}
    for key in ("steps", "wall_s", "device", "world", "validation", "train"):
        if key in meta:
            d[key] = meta[key]
    if "data" in meta:
        d["data"] = f"{len(meta['data'])} clips"
    return d


def inspect_header(src: Path) -> bs.Header:
    """Only the header of a .vqv file (cheap)."""
    data, header = _read_vqv(src)
    data.close()
    return header
