"""The decoder: .vqv bytes -> entropy decoding -> reconstruction -> output filter -> frames.

It reads what the encoder wrote and nothing of how it was chosen: it imports none of the
encoder's search, decisions, rate estimates or table fitting (encoder.py, search.py,
filterfit.py, tablefit.py), only the shared decoding loop (reconstruct.py), the entropy coder's
tables (entropy.py), the motion prediction (motion.py) and the output filter (postfilter.py).
Every value it computes is an exact integer: a file decodes to the same pictures on every
device (docs/FORMAT.md, tests/conformance/).
"""
from __future__ import annotations

import contextlib
import math
import mmap
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import bitstream as bs
from . import fec, motion, postfilter
from .entropy import EntropyCoder, GroupLost, first_passes
from .errors import FormatError, ModelMismatch, VqvError
from .files import atomic_output, open_output, resolve_device, stdout_binary
from .runtime import Threads
from .modelfile import CodecModel, load_model
from .reconstruct import QUALITY_LEVELS, Reconstruction, stages_for_quality, to_frames
from .video import Frame, PngWriter, VideoWriter, audio_name, frames_text, output_kind

DEFAULT_BATCH = 4  # kept for the API (decode_file's batch): the decoder works group by group
Progress = Callable[[int], None]  # called with the number of frames just finished


class SegmentDecoder(Reconstruction):
    """Decodes one segment's payload to frames, with one model."""

    def __init__(self, model: CodecModel, device: str, batch: int = DEFAULT_BATCH):
        super().__init__(model, device)
        self.coder = EntropyCoder(*model.tables)

    def decode(self, payload: bytes, header: bs.Header, count: int, quality: int, stages: int,
               salvage: bool = False) -> list[Frame]:
        """Payload -> `count` frames.  Every number is checked before it sizes an allocation.
        `salvage` (a damaged segment of a file with FEC, whose payload is a stream per group):
        the frames of the groups before the first damaged one, perhaps none."""
        p = self.cfg.patch
        h, w = math.ceil(header.height / p), math.ceil(header.width / p)
        groups = math.ceil(count / self.cfg.frames)
        if not 1 <= quality <= min(len(QUALITY_LEVELS), self.coder.qualities) \
                or stages != stages_for_quality(quality, self.cfg.stages) or stages > self.coder.stages:
            raise FormatError(f"segment quality {quality} with {stages} VQ stages is not a valid operating point")
        first = int((first_passes(h, w) == 0).sum())  # a fresh group's intra tokens; each other one codes a mode
        if first * (stages + self.cfg.dim) + h * w - first + groups - 1 > self.coder.max_symbols(len(payload)):
            raise FormatError("payload is too short for the symbols the header announces")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        frames: list[Frame] = []
        try:
            filt, decoded = self.coder.decode_segment(words, groups, (stages, h, w), motion.grid_shape(h, w), quality,
                                                      per_group=header.fec > 0)
            for _, planes in self.reconstruct(decoded, quality):
                frames += postfilter.filter_frames(to_frames(*(p[None] for p in planes), header.width, header.height,
                                                             min(count - len(frames), self.cfg.frames)), filt)
        except GroupLost:
            if salvage:
                return frames
            raise FormatError("a group's stream is damaged") from None
        except (ValueError, RuntimeError, AssertionError) as exc:
            if salvage:
                return frames
            raise FormatError(f"cannot entropy-decode payload ({exc})") from None
        return frames


def _read_vqv(path: Path | str, rewrite: bool = False):
    """(bytes or an mmap, the header with its counts): a file, or '-': standard input, read whole."""
    if str(path) == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise VqvError("-: standard input is a terminal; pipe a .vqv into it (cat a.vqv | vqcodec decode - -o …)")
        data = sys.stdin.buffer.read()
        if not data:
            raise FormatError("stdin: empty input, not a .vqv")
        return _opened(data, "stdin", rewrite)
    path = Path(path)
    if not path.exists():
        raise VqvError(f"{path}: no such file")
    if path.is_dir():
        raise VqvError(f"{path}: is a folder, not a .vqv file")
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device: read it through
            data = f.read()
            if not data:
                raise FormatError(f"{path}: empty input, not a .vqv")
            return _opened(data, path, rewrite)
        if st.st_size == 0:
            raise FormatError(f"{path}: empty file, not a .vqv")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return _opened(data, path, rewrite)


def _opened(data, src, rewrite: bool = False):
    """(data, header, repairs): a file with FEC (or whose header is damaged: it may have a copy)
    is corrected first, as far as its parity allows (fec.py); `repairs` says what was done.
    `rewrite` (repair's) also makes its parity chunks and header copy whole again."""
    repairs: list[fec.Window] = []
    try:
        needs = bs.unpack_header(bytes(data[:bs.HEADER_SIZE])).fec > 0
    except bs.BitstreamError:
        needs = len(data) > bs.HEADER_SIZE
    try:
        if needs:
            fixed, repairs = fec.repair(data, rewrite)
            if fixed is not data:
                _release(data)
                data = fixed
        return data, _parse_header(data, src), repairs
    except BaseException:
        _release(data)
        raise


def _parse_header(data, src) -> bs.Header:
    """The header, completed from the trailer or the segments when the file was streamed."""
    try:
        header = bs.complete_streamed(data, bs.unpack_header(data[: bs.HEADER_SIZE]))
    except bs.BitstreamError as exc:
        raise FormatError(f"{src}: {exc}") from None
    if header.frames == 0:
        raise FormatError(f"{src}: a streamed .vqv with no intact segment; nothing to decode")
    return header


@dataclass
class DecodeReport:
    frames: int
    width: int
    height: int
    seconds: float
    concealed: list[bs.Damaged] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    audio_streams: int = 0  # carried into the output

    def summary(self) -> str:
        s = f"decoded {frames_text(self.frames)} {self.width}x{self.height}, {self.frames / max(self.seconds, 1e-9):.2f} fps"
        if self.audio_streams:
            s += f", with {self.audio_streams} audio stream(s)"
        if self.concealed:
            segs = ", ".join(f"{d.index} (frames {d.first_frame}-{d.first_frame + d.frames - 1}: {d.reason})"
                             for d in self.concealed)
            n = sum(d.frames for d in self.concealed)
            s += (f"; concealed {n} of {self.frames} frames ({100 * n / max(1, self.frames):.0f} %) in damaged segments {segs}"
                  + (" (every segment damaged: mid-grey frames)" if n >= self.frames else ""))
        return s


def _check_model(src, header: bs.Header, cm: CodecModel) -> None:
    if cm.fingerprint != header.fingerprint:
        raise ModelMismatch(f"{src}: written with model {header.fingerprint.hex()}, but the model at hand "
                            f"({cm.path or 'given'}) is {cm.fingerprint.hex()}; pass --model with that file")
    if header.group_frames != cm.config.frames or header.patch != cm.config.patch \
            or header.stages > cm.config.stages:
        raise FormatError(f"{src}: stream layout does not match its model")


def decoded_frames(data, header: bs.Header, coder: SegmentDecoder, *, conceal: bool, concealed: list,
                   src="input", progress: Progress | None = None, threads: Threads | None = None) -> Iterator[Frame]:
    """Every frame of a parsed file, in order; damaged segments raise, or with `conceal` are
    filled from the nearest intact frame and appended to `concealed`."""
    pending = 0  # damaged frames before the first good one
    last: Frame | None = None
    for seg in bs.read_segments(data, header):
        frames: list[Frame] = []
        if threads:
            threads.update()
        if isinstance(seg, bs.Segment):
            try:
                frames = coder.decode(seg.payload, header, seg.frames, seg.quality, seg.stages)
            except FormatError as exc:
                seg = bs.Damaged(seg.index, seg.first_frame, seg.frames, str(exc))
        if isinstance(seg, bs.Damaged) and conceal and seg.payload is not None and header.fec:
            kept = coder.decode(seg.payload, header, seg.frames, seg.quality, seg.stages, salvage=True)
            if kept:  # the groups before the damage; the rest concealed from the last of them
                frames = kept + [kept[-1]] * (seg.frames - len(kept))
                concealed.append(bs.Damaged(seg.index, seg.first_frame + len(kept), seg.frames - len(kept),
                                            f"{seg.reason}; frames {seg.first_frame}-{seg.first_frame + len(kept) - 1}"
                                            " kept (the groups before the damage)"))
        if isinstance(seg, bs.Damaged) and not frames:
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
    if pending:  # every segment damaged: nothing is known of the pictures but their size
        grey = Frame(np.full((header.height, header.width), 128, np.uint8),
                     *(np.full(((header.height + 1) // 2, (header.width + 1) // 2), 128, np.uint8),) * 2)
        yield from [grey] * pending


def frames_from_bytes(data: bytes, model: CodecModel, *, device: str = "cpu", conceal: bool,
                      concealed: list) -> Iterator[Frame]:
    """Every frame of a whole .vqv held in memory; raises FormatError/ModelMismatch like decode_file."""
    data, header, repairs = _opened(data, "input")
    _check_model("input", header, model)
    yield from decoded_frames(data, header, SegmentDecoder(model, device), conceal=conceal, concealed=concealed)


def decode_bytes(data: bytes, model: CodecModel, conceal: bool = True) -> tuple[int, list[bs.Damaged]]:
    """Decode a .vqv held in memory, discarding the frames: (frames, concealed).  For fuzzing."""
    concealed: list[bs.Damaged] = []
    n = sum(1 for _ in frames_from_bytes(data, model, conceal=conceal, concealed=concealed))
    return n, concealed


def decode_file(src: Path | str, dst: Path | str, *, model: Path | CodecModel | None = None, device: str = "auto",
                overwrite: bool = False, conceal: bool = False, batch: int = DEFAULT_BATCH,
                progress: Progress | None = None, fmt: str | None = None, threads: int = 0,
                total: Callable[[int], None] | None = None) -> DecodeReport:
    """Decode a .vqv ('-': standard input) into the container `dst` names, or `fmt` names
    ('-': standard output, y4m unless `fmt` says mkv or avi).  `total` hears the frame count
    before decoding starts."""
    t0 = time.time()
    device = resolve_device(device)
    kind = output_kind(dst, fmt)
    data, header, repairs = _read_vqv(src)
    src = "stdin" if str(src) == "-" else src
    try:
        if kind == "image" and header.frames > 1:
            raise VqvError(f"{dst}: a .png holds one picture and this video has {header.frames} frames; "
                           "give a folder name (no extension) for numbered PNGs")
        cm = model if isinstance(model, CodecModel) else load_model(model, device)
        _check_model(src, header, cm)
        pool = Threads(threads)
        coder = SegmentDecoder(cm, device, batch)
        if total:
            total(header.frames)
        concealed: list[bs.Damaged] = []
        notes: list[str] = [w.text() for w in repairs]
        written = 0
        with contextlib.ExitStack() as stack:
            if str(dst) == "-":
                target = stdout_binary()
            else:
                target = stack.enter_context(atomic_output(Path(dst), overwrite, folder=(kind == "dir")))
            if kind in ("dir", "image"):
                writer = PngWriter(target, single=(kind == "image"))
            else:
                writer = VideoWriter(target, Path(str(dst)), header.width, header.height, header.fps, header.colour,
                                     ext=kind)
            streams, packets = _audio(data, header)
            writer.add_audio([a.description for a in streams])
            try:
                for frame in decoded_frames(data, header, coder, conceal=conceal, concealed=concealed,
                                            src=src, progress=progress, threads=pool):
                    if packets and writer.audio:
                        packets = _mux_audio(writer, packets, streams, Fraction(written + 1) / header.fps)
                    writer.write(frame)
                    written += 1
                _mux_audio(writer, packets, streams, None)
            except BaseException:
                try:
                    writer.close()
                except Exception:  # the first error is the one to report
                    pass
                raise
            writer.close()
            notes += writer.notes
        return DecodeReport(written, header.width, header.height, time.time() - t0, concealed, notes,
                            len(writer.audio))
    finally:
        _release(data)


def repair_file(src: Path | str, dst: Path | str, *, overwrite: bool = False) -> str:
    """Write `src` corrected by its parity to `dst` (as `par2 repair`); refuses, writing nothing,
    when damage remains that the parity cannot correct.  Returns what was done."""
    data, header, repairs = _read_vqv(src, rewrite=True)
    try:
        failed = [w for w in repairs if not w.repaired]
        damaged = [d for d in bs.read_segments(data, header) if isinstance(d, bs.Damaged)]
        if not header.fec and not repairs:
            raise VqvError(f"{src}: written without --fec: no parity to repair it with"
                           + (f" ({len(damaged)} damaged segments; decode --conceal plays the rest)" if damaged else ""))
        if failed or damaged:
            what = "; ".join([w.text() for w in failed] + [f"segment {d.index}: {d.reason}" for d in damaged
                                                           if not any(d.index in w.segments for w in failed)])
            raise FormatError(f"{src}: cannot repair all of it: {what}; nothing written (decode --conceal plays the rest)")
        with open_output(dst, overwrite) as (out, _):
            out.write(bytes(data))
        done = "; ".join(w.text() for w in repairs) or "nothing to repair: the file is intact"
        return f"repaired {src} -> {dst}: {done}"
    finally:
        _release(data)


def _audio(data, header: bs.Header) -> tuple[list[bs.AudioStream], list[bs.AudioPacket]]:
    """The file's intact audio descriptions and packets (in time order per stream)."""
    if not header.audio_streams:
        return [], []
    streams, start = bs.read_audio_streams(data, header)
    return streams, list(bs.read_audio_packets(data, start))


def _mux_audio(writer: VideoWriter | PngWriter, packets: list[bs.AudioPacket], streams: list[bs.AudioStream],
               until: Fraction | None) -> list[bs.AudioPacket]:
    """Hands the writer the packets that start before `until` seconds (None: all); the rest back."""
    numbers = {a.number: k for k, a in enumerate(streams)}
    rest = []
    for p in packets:
        k = numbers.get(p.stream)
        if k is None or k >= len(writer.audio):
            continue  # its description was damaged, or the output holds no audio
        if until is not None and p.pts * writer.audio[k][1].time_base >= until:
            rest.append(p)
        else:
            writer.write_audio(k, p.pts, p.duration, p.data)
    return rest


def inspect(src: Path) -> dict:
    """Header fields, segment table and damage report of a .vqv file (after what its FEC corrects)."""
    data, header, repairs = _read_vqv(src)
    try:
        size = len(data)
        segments, damaged = [], []
        for seg in bs.read_segments(data, header):
            if isinstance(seg, bs.Segment):
                segments.append({"index": seg.index, "first_frame": seg.first_frame, "frames": seg.frames,
                                 "quality": seg.quality, "stages": seg.stages,
                                 "bytes": len(seg.payload) + bs.SEGMENT_HEADER_SIZE})
            else:
                damaged.append({"index": seg.index, "first_frame": seg.first_frame, "frames": seg.frames,
                                "reason": seg.reason})
        streams, packets = _audio(data, header)
        audio = [{"number": a.number, "codec": audio_name(a.description),
                  "packets": sum(1 for p in packets if p.stream == a.number),
                  "bytes": sum(len(p.data) + bs.AUDIO_PACKET_HEADER_SIZE for p in packets if p.stream == a.number)}
                 for a in streams]
    finally:
        _release(data)
    d = header.to_dict()
    d["audio"] = audio
    d["fec"] = ({"parity_bytes_per_codeword": header.fec, "percent": round(100 * header.fec / (255 - header.fec), 1)}
                if header.fec else None)
    d["repairs"] = [w.text() for w in repairs]
    seconds = header.frames / float(header.fps)
    target = d.pop("bitrate")  # the --bitrate asked (0: a fixed quality), not the file's rate (kbps)
    d.update({"model": d.pop("fingerprint"), "target_kbps": target or None, "bytes": size,
              "kbps": round(8 * size / seconds / 1000, 3) if seconds else 0.0,
              "bpp": round(8 * size / (header.width * header.height * header.frames), 5) if header.frames else 0.0,
              "segment_table": segments, "damaged": damaged,
              "segment_qualities": [s["quality"] for s in segments]})
    return d


def inspect_header(src: Path) -> bs.Header:
    """Only the header of a .vqv file."""
    data, header, _ = _read_vqv(src)
    _release(data)
    return header


def _release(data) -> None:
    if isinstance(data, mmap.mmap):
        data.close()

