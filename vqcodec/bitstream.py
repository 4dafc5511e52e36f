"""The .vqv container: bytes only (no torch, no av).  All integers little-endian.

File header, 64 bytes:
  off size field
    0   4  magic b"VQVC"
    4   2  format version (u16), currently 14
    6   2  header size in bytes (u16) = 64
    8  16  model fingerprint (first 16 bytes of SHA-256 of the model, see modelfile.py)
   24   4  width (u32)            28  4  height (u32)
   32   4  fps numerator (u32)    36  4  fps denominator (u32)
   40   4  frame count (u32)
   44   1  pixel format (u8): 0 = yuv420p, 8 bit
   45   1  quality 1..8 (u8), or 0: rate-controlled (see 56)
   46   1  VQ stages: the most any segment codes (u8)
   47   1  frames per temporal group T (u8)
   48   2  frames per segment (u16, a multiple of T)
   50   1  patch (latent stride in luma pixels, u8)
   51   1  reserved, 0
   52   4  segment count (u32)
   56   4  target bit rate in kbit/s (u32) when quality is 0, else 0
   60   4  CRC-32 of bytes 0..59

Segment, repeated ``segment count`` times, each decodable on its own:
    0   4  magic b"VQSG"
    4   4  segment index (u32, from 0)
    8   4  first frame (u32)
   12   2  frames in this segment (u16)
   14   1  quality of this segment 1..8 (u8)
   15   1  VQ stages coded in this segment (u8), 1..header stages
   16   4  payload length in bytes (u32, a multiple of 4)
   20   4  CRC-32 of bytes 0..19 and the payload
   24   …  payload: the segment's range-coder words (u32 each)

A reader treats every number as untrusted: lengths are checked against the bytes present,
sizes against MAX_PIXELS (8K UHD), MAX_SEGMENT_FRAMES (4096) and MAX_FRAMES (2**24), and a
damaged segment is reported (with its index and frames) instead of being parsed.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Iterator

from . import __version__

MAGIC = b"VQVC"
SEGMENT_MAGIC = b"VQSG"
VERSION = 14
# format version -> the vqcodec release that decodes it (git tag v<release>); formats 1-12 were
# development versions, never released
RELEASES = {13: "0.13.0", 14: "0.14.0"}
HEADER_SIZE = 64
SEGMENT_HEADER_SIZE = 24
PIX_FMTS = {0: "yuv420p"}
MAX_DIM = 1 << 15
MAX_PIXELS = 7680 * 4320  # 8K UHD: bounds what a decoder allocates per frame
MAX_FRAMES = 1 << 24
MAX_SEGMENT_FRAMES = 4096
MAX_PAYLOAD = 1 << 30

_HEADER = struct.Struct("<4sHH16sIIIIIBBBBHBBII")
_SEGMENT = struct.Struct("<4sIIHBBI")
assert _HEADER.size == HEADER_SIZE - 4 and _SEGMENT.size == SEGMENT_HEADER_SIZE - 4


class BitstreamError(ValueError):
    """Malformed bytes; the message says what and where."""


@dataclass
class Header:
    fingerprint: bytes
    width: int
    height: int
    fps: Fraction
    frames: int
    quality: int
    stages: int
    group_frames: int
    segment_frames: int
    patch: int
    segments: int
    pix_fmt: int = 0
    version: int = VERSION
    bitrate: int = 0  # target kbit/s of a rate-controlled file (quality 0)

    def pack(self) -> bytes:
        body = _HEADER.pack(MAGIC, self.version, HEADER_SIZE, self.fingerprint, self.width, self.height,
                            self.fps.numerator, self.fps.denominator, self.frames, self.pix_fmt,
                            self.quality, self.stages, self.group_frames, self.segment_frames,
                            self.patch, 0, self.segments, self.bitrate)
        return body + struct.pack("<I", zlib.crc32(body))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fingerprint"] = self.fingerprint.hex()
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        d["pix_fmt"] = PIX_FMTS.get(self.pix_fmt, str(self.pix_fmt))
        return d


def unpack_header(data: bytes) -> Header:
    if len(data) < 8 or data[:4] != MAGIC:
        raise BitstreamError("not a .vqv file (bad magic)")
    version = struct.unpack_from("<H", data, 4)[0]
    if version > VERSION:
        raise BitstreamError(f"format version {version} is newer than this vqcodec reads (vqcodec {__version__} "
                             f"reads format {VERSION}): upgrade vqcodec")
    if len(data) < HEADER_SIZE:
        raise BitstreamError("truncated header")
    if version < VERSION:
        if version in RELEASES:
            release = RELEASES[version]
            raise BitstreamError(f"format version {version} was written by an earlier vqcodec; vqcodec {release} "
                                 f"decodes it (pip install vqcodec=={release}, or git tag v{release}); "
                                 f"this one ({__version__}) reads format {VERSION}")
        raise BitstreamError(f"format version {version} was written by an earlier vqcodec, never released; "
                             f"this one ({__version__}) reads format {VERSION} (re-encode the source)")
    (_, version, size, fp, w, h, fn, fd, frames, pix, q, stages, t, seg, patch, _r1, nseg, rate) = \
        _HEADER.unpack_from(data)
    if zlib.crc32(data[: HEADER_SIZE - 4]) != struct.unpack_from("<I", data, HEADER_SIZE - 4)[0]:
        raise BitstreamError("header is damaged (CRC mismatch)")
    if size != HEADER_SIZE or pix not in PIX_FMTS:
        raise BitstreamError("unsupported header layout or pixel format")
    if not (0 < w <= MAX_DIM and 0 < h <= MAX_DIM and w * h <= MAX_PIXELS and fn > 0 and fd > 0 and t > 0
            and patch > 0 and stages > 0 and 0 < seg <= MAX_SEGMENT_FRAMES and seg % t == 0 and 0 <= q <= 8 and (q > 0) == (rate == 0)
            and frames <= MAX_FRAMES):
        raise BitstreamError("header has out-of-range fields")
    if nseg != -(-frames // seg):
        raise BitstreamError("header segment count does not match its frame count")
    return Header(fp, w, h, Fraction(fn, fd), frames, q, stages, t, seg, patch, nseg, pix, version, rate)


@dataclass
class Segment:
    index: int
    first_frame: int
    frames: int
    payload: bytes
    quality: int = 1
    stages: int = 1

    def pack(self) -> bytes:
        if len(self.payload) % 4 or len(self.payload) > MAX_PAYLOAD:
            raise BitstreamError("payload length must be a multiple of 4 and below 1 GiB")
        head = _SEGMENT.pack(SEGMENT_MAGIC, self.index, self.first_frame, self.frames, self.quality, self.stages,
                             len(self.payload))
        return head + struct.pack("<I", zlib.crc32(self.payload, zlib.crc32(head))) + self.payload


@dataclass
class Damaged:
    """A segment slot whose bytes failed their checks; frames are inferred from the header."""

    index: int
    first_frame: int
    frames: int
    reason: str


def expected_frames(header: Header, index: int) -> tuple[int, int]:
    first = index * header.segment_frames
    return first, max(0, min(header.segment_frames, header.frames - first))


def read_segments(data: bytes | memoryview, header: Header) -> Iterator[Segment | Damaged]:
    """Yield every segment slot in order: intact Segments, or Damaged for bad ones.

    After damage the reader resynchronises on the next segment magic whose CRC checks out.
    """
    view = memoryview(data)
    pos, n = HEADER_SIZE, len(view)
    index = 0
    while index < header.segments:
        seg = _parse_at(view, pos, header, index)
        if isinstance(seg, tuple):
            segment, pos = seg
            yield segment
            index += 1
            continue
        # damaged: find the next intact segment with a higher index
        reason = seg
        nxt = _resync(view, pos + 1, header, index)
        if nxt is None:
            for i in range(index, header.segments):
                first, count = expected_frames(header, i)
                yield Damaged(i, first, count, reason if i == index else "missing (file truncated or damaged)")
            return
        found_pos, found_index = nxt
        for i in range(index, found_index):
            first, count = expected_frames(header, i)
            yield Damaged(i, first, count, reason if i == index else "missing")
        index, pos = found_index, found_pos
    if pos < n:
        return  # trailing bytes are ignored


def _parse_at(view: memoryview, pos: int, header: Header, index: int):
    """(Segment, next_pos) when the segment at pos is intact and is number `index`, else a reason."""
    n = len(view)
    if pos + SEGMENT_HEADER_SIZE > n:
        return "truncated (file ends early)"
    magic, idx, first, frames, quality, stages, length = _SEGMENT.unpack_from(view, pos)
    if magic != SEGMENT_MAGIC:
        return "bad segment marker"
    if length % 4 or length > MAX_PAYLOAD or pos + SEGMENT_HEADER_SIZE + length > n:
        return "bad length or truncated payload"
    end = pos + SEGMENT_HEADER_SIZE + length
    crc = zlib.crc32(view[pos + SEGMENT_HEADER_SIZE:end], zlib.crc32(view[pos:pos + SEGMENT_HEADER_SIZE - 4]))
    if crc != struct.unpack_from("<I", view, pos + SEGMENT_HEADER_SIZE - 4)[0]:
        return "CRC mismatch"
    exp_first, exp_frames = expected_frames(header, idx)
    if idx != index or first != exp_first or frames != exp_frames:
        return f"unexpected segment number {idx}"
    if not (1 <= quality <= 8 and 1 <= stages <= header.stages):
        return "segment quality or VQ stages out of range"
    return Segment(idx, first, frames, bytes(view[pos + SEGMENT_HEADER_SIZE:end]), quality, stages), end


def _resync(view: memoryview, start: int, header: Header, index: int):
    raw = view.obj if hasattr(view.obj, "find") else bytes(view)  # bytes, bytearray and mmap search in place
    pos = start
    while True:
        pos = raw.find(SEGMENT_MAGIC, pos)
        if pos < 0:
            return None
        idx = struct.unpack_from("<I", raw, pos + 4)[0] if pos + 8 <= len(raw) else -1
        if index <= idx < header.segments:
            seg = _parse_at(view, pos, header, idx)
            if isinstance(seg, tuple):
                return pos, idx
        pos += 1
