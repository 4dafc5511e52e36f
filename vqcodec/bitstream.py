"""The .vqv container: bytes only (no torch, no av).  All integers little-endian.

File header, 72 bytes:
  off size field
    0   4  magic b"VQVC"
    4   2  format version (u16), currently 17
    6   2  header size in bytes (u16) = 72
    8  16  model fingerprint (first 16 bytes of SHA-256 of the model, see modelfile.py)
   24   4  width (u32)            28  4  height (u32)
   32   4  fps numerator (u32)    36  4  fps denominator (u32)
   40   4  frame count (u32); 0: a streamed file, whose counts and rate are in its trailer
   44   1  pixel format (u8): 0 = yuv420p, 8 bit
   45   1  quality 1..8 (u8), or 0: rate-controlled (see 56)
   46   1  VQ stages: the most any segment codes (u8)
   47   1  frames per temporal group T (u8)
   48   2  frames per segment (u16, a multiple of T)
   50   1  patch (latent stride in luma pixels, u8)
   51   1  reserved, 0
   52   4  segment count (u32); 0 when streamed
   56   4  target bit rate in kbit/s (u32) when quality is 0, else 0
   60   1  colour range (u8, FFmpeg's AVColorRange: 0 unknown, 1 limited "tv", 2 full "pc")
   61   1  matrix coefficients (u8, ITU-T H.273 code; 2 = unspecified)
   62   1  colour primaries (u8, H.273)
   63   1  transfer characteristics (u8, H.273)
   64   1  audio streams A (u8, at most 16)
   65   1  FEC parity bytes per Reed-Solomon codeword (u8, 0: no FEC, else 2..128; fec.py)
   66   1  flags (u8): bit 0, the file ends with a copy of this header; other bits 0
   67   1  reserved, 0
   68   4  CRC-32 of bytes 0..67

Audio stream description, A times right after the header (their codec parameters, copied):
    0   4  magic b"VQAS"
    4   4  length L of the description (u32, at most 64 KiB)
    8   1  audio stream number (u8, from 0)
    9   L  the stream's codec parameters as FFmpeg's NUT container holds them: a NUT file with
           this one stream and a one-byte placeholder packet (a well-kept library's own
           serialisation of every codec parameter, extradata and channel layout included)
  9+L   4  CRC-32 of bytes 0..8+L

Audio packet, between segments, in presentation order (stream copy of the source's packets;
before each segment come the packets that start before the segment ends):
    0   4  magic b"VQAP"
    4   1  audio stream number (u8)    5  3  reserved, 0
    8   8  presentation time (i64) in the stream's time base, from the first video frame
   16   4  duration (u32), same base
   20   4  length L of the data (u32, at most 16 MiB)
   24   4  CRC-32 of bytes 0..23 and the data
   28   L  the packet as the source's demuxer gave it
A damaged audio packet is dropped (the reader finds the next chunk by its marker); it never
costs a video segment.

Parity chunk, in a file with FEC (header byte 65 > 0), after each window of chunks it protects:
    0   4  magic b"VQFE"
    4   4  the window's first byte (u32, a file offset: past the header)
    8   4  the window's length L (u32)
   12   1  parity bytes per codeword n (u8, at most the header's: less in a small window)
   13   3  reserved, 0
   16   4  CRC-32 of the window's L bytes (intact windows need no decoding)
   20   4  CRC-32 of bytes 0..19
   24 D*n  parity: D = ceil(L / (255 - n)) codewords, byte j of the window in codeword j mod D;
           parity byte r of codeword i at 24 + r*D + i (interleaved, so a burst spreads)
 24+D*n 24  bytes 0..23 again (a second copy of the head)
A file with FEC ends with a copy of the final header (72 bytes, flag bit 0), before the trailer if
streamed, unless the file is too small for it within its parity budget; its segments' payloads are a range-coder stream per group, each as (u32 length in words,
u32 CRC-32 of the words, the words): a segment beyond repair keeps its groups before the damage.

Trailer, only in a streamed file (frame count 0: written to a pipe, so the header could not be
rewritten at the end), 24 bytes after the last segment:
    0   4  magic b"VQTR"
    4   4  frame count (u32)      8  4  segment count (u32)
   12   4  fps numerator (u32)   16  4  fps denominator (u32)
   20   4  CRC-32 of bytes 0..19
A streamed file whose trailer is missing (the stream was cut) is read up to its last intact
segment, at the header's rate.

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
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Iterator

from . import __version__

MAGIC = b"VQVC"
SEGMENT_MAGIC = b"VQSG"
TRAILER_MAGIC = b"VQTR"
AUDIO_STREAM_MAGIC = b"VQAS"
AUDIO_PACKET_MAGIC = b"VQAP"
PARITY_MAGIC = b"VQFE"
MAX_AUDIO_STREAMS = 16
MAX_AUDIO_DESCRIPTION = 1 << 16
MAX_AUDIO_PACKET = 1 << 24
FEC_PARITY_RANGE = {0, *range(2, 129)}
VERSION = 17
# format version -> the vqcodec release that decodes it (git tag v<release>); formats 1-12 were
# development versions, never released
RELEASES = {13: "0.13.0", 14: "0.14.0", 15: "0.15.1", 16: "0.16.1", 17: "0.17.1"}  # the newest release that reads each format
HEADER_SIZE = 72
SEGMENT_HEADER_SIZE = 24
TRAILER_SIZE = 24
PIX_FMTS = {0: "yuv420p"}
MAX_DIM = 1 << 15
MAX_PIXELS = 7680 * 4320  # 8K UHD: bounds what a decoder allocates per frame
MAX_FRAMES = 1 << 24
MAX_SEGMENT_FRAMES = 4096
MAX_PAYLOAD = 1 << 30

_HEADER = struct.Struct("<4sHH16sIIIIIBBBBHBBIIBBBBBBBB")
_SEGMENT = struct.Struct("<4sIIHBBI")
_TRAILER = struct.Struct("<4sIIII")
_AUDIO_STREAM = struct.Struct("<4sIB")
_AUDIO_PACKET = struct.Struct("<4sB3sqII")
assert _HEADER.size == HEADER_SIZE - 4 and _SEGMENT.size == SEGMENT_HEADER_SIZE - 4
assert _TRAILER.size == TRAILER_SIZE - 4


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
    colour: tuple[int, int, int, int] = (0, 2, 2, 2)  # range, matrix, primaries, transfer (unknown)
    streamed: bool = False  # written to a pipe: the header's counts are 0, the trailer has them
    audio_streams: int = 0
    fec: int = 0  # Reed-Solomon parity bytes per codeword (0: no FEC)
    header_copy: bool = False  # the file ends with a copy of this header (FEC)

    def pack(self) -> bytes:
        frames, segments = (0, 0) if self.streamed else (self.frames, self.segments)
        body = _HEADER.pack(MAGIC, self.version, HEADER_SIZE, self.fingerprint, self.width, self.height,
                            self.fps.numerator, self.fps.denominator, frames, self.pix_fmt,
                            self.quality, self.stages, self.group_frames, self.segment_frames,
                            self.patch, 0, segments, self.bitrate, *self.colour, self.audio_streams, self.fec,
                            int(self.header_copy), 0)
        return body + struct.pack("<I", zlib.crc32(body))

    def pack_trailer(self) -> bytes:
        body = _TRAILER.pack(TRAILER_MAGIC, self.frames, self.segments, self.fps.numerator, self.fps.denominator)
        return body + struct.pack("<I", zlib.crc32(body))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fingerprint"] = self.fingerprint.hex()
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        d["pix_fmt"] = PIX_FMTS.get(self.pix_fmt, str(self.pix_fmt))
        d["colour"] = colour_names(self.colour)
        return d


# FFmpeg's names for the colour codes (its AVColorRange, and H.273's matrix, primaries, transfer)
_RANGES = {0: "unknown", 1: "tv", 2: "pc"}
_MATRICES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
_PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
              9: "bt2020", 12: "smpte432"}
_TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
              13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}


def colour_names(colour: tuple[int, int, int, int]) -> dict:
    """{"range": "tv", "matrix": "bt709", ...}: FFmpeg's spelling, or the bare code."""
    return {key: names.get(code, str(code)) for key, names, code in
            zip(("range", "matrix", "primaries", "transfer"), (_RANGES, _MATRICES, _PRIMARIES, _TRANSFERS), colour)}


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
    (_, version, size, fp, w, h, fn, fd, frames, pix, q, stages, t, seg, patch, _r1, nseg, rate,
     crange, matrix, primaries, transfer, audio, fec, flags, _r2) = _HEADER.unpack_from(data)
    if zlib.crc32(data[: HEADER_SIZE - 4]) != struct.unpack_from("<I", data, HEADER_SIZE - 4)[0]:
        raise BitstreamError("header is damaged (CRC mismatch)")
    if size != HEADER_SIZE or pix not in PIX_FMTS:
        raise BitstreamError("unsupported header layout or pixel format")
    if not (0 < w <= MAX_DIM and 0 < h <= MAX_DIM and w * h <= MAX_PIXELS and fn > 0 and fd > 0 and t > 0
            and patch > 0 and stages > 0 and 0 < seg <= MAX_SEGMENT_FRAMES and seg % t == 0 and 0 <= q <= 8 and (q > 0) == (rate == 0)
            and frames <= MAX_FRAMES and crange <= 2 and audio <= MAX_AUDIO_STREAMS and fec in FEC_PARITY_RANGE and flags <= 1):
        raise BitstreamError("header has out-of-range fields")
    if nseg != -(-frames // seg):
        raise BitstreamError("header segment count does not match its frame count")
    return Header(fp, w, h, Fraction(fn, fd), frames, q, stages, t, seg, patch, nseg, pix, version, rate,
                  (crange, matrix, primaries, transfer), streamed=(frames == 0), audio_streams=audio, fec=fec,
                  header_copy=bool(flags & 1))


def complete_streamed(data: bytes | memoryview, header: Header) -> Header:
    """A streamed file's header with its counts and rate: from the trailer, or, when the stream was
    cut before it, from the intact segments (at the header's rate).  Other headers: as given."""
    if not header.streamed:
        return header
    view = memoryview(data)
    if len(view) >= HEADER_SIZE + TRAILER_SIZE:
        tail = view[len(view) - TRAILER_SIZE:]
        magic, frames, nseg, fn, fd = _TRAILER.unpack_from(tail)
        if (magic == TRAILER_MAGIC and zlib.crc32(tail[:TRAILER_SIZE - 4]) == struct.unpack_from("<I", tail, TRAILER_SIZE - 4)[0]
                and 0 < frames <= MAX_FRAMES and nseg == -(-frames // header.segment_frames) and fn > 0 and fd > 0):
            return replace(header, frames=frames, segments=nseg, fps=Fraction(fn, fd))
    # no trailer: walk the segments while they are whole (the last may be short)
    pos, frames, index = read_audio_streams(view, header)[1], 0, 0
    while pos + SEGMENT_HEADER_SIZE <= len(view):
        pos = _find_segment(view, pos, index, header.segment_frames)
        if pos is None:
            break
        _, idx, first, count, _, _, length = _SEGMENT.unpack_from(view, pos)
        frames, index = first + count, idx + 1
        pos += SEGMENT_HEADER_SIZE + length
        if count < header.segment_frames:
            break
    return replace(header, frames=frames, segments=index)


def _find_segment(view: memoryview, pos: int, index: int, segment_frames: int) -> int | None:
    """The position of the first intact segment at or after `pos` numbered `index` or later."""
    raw = view.obj if hasattr(view.obj, "find") else bytes(view)
    while True:
        pos = raw.find(SEGMENT_MAGIC, pos)
        if pos < 0 or pos + SEGMENT_HEADER_SIZE > len(view):
            return None
        _, idx, first, count, _, _, length = _SEGMENT.unpack_from(view, pos)
        end = pos + SEGMENT_HEADER_SIZE + length
        if (idx >= index and first == idx * segment_frames and 0 < count <= segment_frames and length % 4 == 0
                and end <= len(view) and zlib.crc32(view[pos + SEGMENT_HEADER_SIZE:end], zlib.crc32(
                    view[pos:pos + SEGMENT_HEADER_SIZE - 4])) == struct.unpack_from("<I", view, end - length - 4)[0]):
            return pos
        pos += 1


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
class AudioStream:
    number: int
    description: bytes  # codec parameters as a one-stream NUT file (video.py writes and reads it)

    def pack(self) -> bytes:
        if len(self.description) > MAX_AUDIO_DESCRIPTION:
            raise BitstreamError("audio description above 64 KiB")
        head = _AUDIO_STREAM.pack(AUDIO_STREAM_MAGIC, len(self.description), self.number)
        return head + self.description + struct.pack("<I", zlib.crc32(self.description, zlib.crc32(head)))


@dataclass
class AudioPacket:
    stream: int
    pts: int  # in the stream's time base, 0 = the first video frame
    duration: int
    data: bytes

    def pack(self) -> bytes:
        if len(self.data) > MAX_AUDIO_PACKET:
            raise BitstreamError("audio packet above 16 MiB")
        head = _AUDIO_PACKET.pack(AUDIO_PACKET_MAGIC, self.stream, bytes(3), self.pts, self.duration, len(self.data))
        return head + struct.pack("<I", zlib.crc32(self.data, zlib.crc32(head))) + self.data


AUDIO_PACKET_HEADER_SIZE = _AUDIO_PACKET.size + 4


def _audio_packet_at(view: memoryview, pos: int) -> tuple[AudioPacket, int] | None:
    """(packet, next position) when an intact audio packet starts at pos."""
    if pos + AUDIO_PACKET_HEADER_SIZE > len(view) or view[pos:pos + 4] != AUDIO_PACKET_MAGIC:
        return None
    _, stream, _, pts, duration, length = _AUDIO_PACKET.unpack_from(view, pos)
    end = pos + AUDIO_PACKET_HEADER_SIZE + length
    if length > MAX_AUDIO_PACKET or end > len(view):
        return None
    crc = zlib.crc32(view[pos + AUDIO_PACKET_HEADER_SIZE:end], zlib.crc32(view[pos:pos + _AUDIO_PACKET.size]))
    if crc != struct.unpack_from("<I", view, pos + _AUDIO_PACKET.size)[0]:
        return None
    return AudioPacket(stream, pts, duration, bytes(view[pos + AUDIO_PACKET_HEADER_SIZE:end])), end


def read_audio_streams(data: bytes | memoryview, header: Header) -> tuple[list[AudioStream], int]:
    """The intact audio descriptions after the header, and where the segments begin.  A damaged
    description loses its stream (its packets are then ignored), never the video."""
    view, pos, out = memoryview(data), HEADER_SIZE, []
    for _ in range(header.audio_streams):
        if pos + _AUDIO_STREAM.size + 4 > len(view) or view[pos:pos + 4] != AUDIO_STREAM_MAGIC:
            break
        _, length, number = _AUDIO_STREAM.unpack_from(view, pos)
        end = pos + _AUDIO_STREAM.size + length + 4
        if length > MAX_AUDIO_DESCRIPTION or end > len(view):
            break
        body = view[pos + _AUDIO_STREAM.size:end - 4]
        if zlib.crc32(body, zlib.crc32(view[pos:pos + _AUDIO_STREAM.size])) == struct.unpack_from("<I", view, end - 4)[0]:
            out.append(AudioStream(number, bytes(body)))
        pos = end
    return out, pos


def read_audio_packets(data: bytes | memoryview, start: int = HEADER_SIZE) -> Iterator[AudioPacket]:
    """Every intact audio packet from `start` on, in file order, found by its marker and CRC."""
    view = memoryview(data)
    raw = view.obj if hasattr(view.obj, "find") else bytes(view)
    pos = start
    while True:
        pos = raw.find(AUDIO_PACKET_MAGIC, pos)
        if pos < 0:
            return
        got = _audio_packet_at(view, pos)
        if got is None:
            pos += 1
            continue
        packet, pos = got
        yield packet


_PARITY = struct.Struct("<4sIIB3sI")
PARITY_HEAD_SIZE = _PARITY.size + 4


@dataclass
class Parity:
    """A window's Reed-Solomon parity (fec.py computes and uses it)."""

    start: int  # the window's first byte in the file
    length: int
    nsym: int
    crc: int  # of the window's bytes
    parity: bytes  # D * nsym bytes, interleaved (see the table above)
    at: int = -1  # where the chunk was found in a file

    @property
    def codewords(self) -> int:
        return codewords(self.length, self.nsym)

    def pack(self) -> bytes:
        body = _PARITY.pack(PARITY_MAGIC, self.start, self.length, self.nsym, bytes(3), self.crc)
        head = body + struct.pack("<I", zlib.crc32(body))
        return head + self.parity + head


def _parity_head_at(view: memoryview, pos: int) -> tuple[int, int, int, int] | None:
    """(start, length, nsym, crc) when an intact parity head is at pos."""
    if pos + PARITY_HEAD_SIZE > len(view) or view[pos:pos + 4] != PARITY_MAGIC:
        return None
    if zlib.crc32(view[pos:pos + _PARITY.size]) != struct.unpack_from("<I", view, pos + _PARITY.size)[0]:
        return None
    _, start, length, nsym, _, crc = _PARITY.unpack_from(view, pos)
    if nsym not in FEC_PARITY_RANGE or nsym == 0 or length == 0 or length > MAX_PAYLOAD:
        return None
    return start, length, nsym, crc


def codewords(length: int, nsym: int) -> int:
    """Reed-Solomon RS(255) codewords of a window of `length` bytes with `nsym` parity bytes each."""
    return -(-length // (255 - nsym))


def parity_size(length: int, nsym: int) -> int:
    """Bytes of a window's parity chunk: its head twice and the parity."""
    return 2 * PARITY_HEAD_SIZE + codewords(length, nsym) * nsym


def find_parity(data: bytes | memoryview) -> list[Parity]:
    """Every parity chunk whose head (either copy) is intact, by window, in file order.  A chunk
    starts where its window ends; a head is believed only at one of its chunk's two places."""
    view = memoryview(data)
    raw = view.obj if hasattr(view.obj, "find") else bytes(view)
    found: dict[tuple[int, int], Parity] = {}
    pos = 0
    while True:
        pos = raw.find(PARITY_MAGIC, pos)
        if pos < 0:
            break
        head = _parity_head_at(view, pos)
        if head is not None:
            start, length, nsym, crc = head
            size = parity_size(length, nsym)
            first = start + length  # a parity chunk follows its window, whichever head was found
            body = first + PARITY_HEAD_SIZE
            if (start, length) not in found and first + size <= len(view) and pos in (first, first + size - PARITY_HEAD_SIZE):
                found[(start, length)] = Parity(start, length, nsym, crc,
                                                bytes(view[body:body + size - 2 * PARITY_HEAD_SIZE]), first)
        pos += 1
    return sorted(found.values(), key=lambda p: p.start)


def skip_parity(view: memoryview, pos: int) -> int:
    """The position after a parity chunk at pos (pos itself when there is none)."""
    head = _parity_head_at(view, pos)
    return pos if head is None else pos + parity_size(head[1], head[2])


def header_copy(data: bytes | memoryview) -> Header | None:
    """The copy of the header a file with FEC ends with (before a streamed file's trailer), when
    intact: what a reader uses when the header at the start is damaged."""
    view = memoryview(data)
    for end in (len(view), len(view) - TRAILER_SIZE):
        start = end - HEADER_SIZE
        if start > HEADER_SIZE and view[start:start + 4] == MAGIC:
            try:
                return unpack_header(bytes(view[start:end]))
            except BitstreamError:
                continue
    return None


@dataclass
class Damaged:
    """A segment slot whose bytes failed their checks; frames are inferred from the header."""

    index: int
    first_frame: int
    frames: int
    reason: str
    payload: bytes | None = None  # when only the CRC failed: what a salvage may still read
    quality: int = 0
    stages: int = 0


def expected_frames(header: Header, index: int) -> tuple[int, int]:
    first = index * header.segment_frames
    return first, max(0, min(header.segment_frames, header.frames - first))


def read_segments(data: bytes | memoryview, header: Header) -> Iterator[Segment | Damaged]:
    """Yield every segment slot in order: intact Segments, or Damaged for bad ones.

    After damage the reader resynchronises on the next segment magic whose CRC checks out.
    """
    view = memoryview(data)
    pos, n = read_audio_streams(view, header)[1], len(view)
    index = 0
    while index < header.segments:
        while True:  # audio and parity between segments
            if (audio := _audio_packet_at(view, pos)) is not None:
                pos = audio[1]
            elif (after := skip_parity(view, pos)) != pos:
                pos = after
            else:
                break
        seg = _parse_at(view, pos, header, index)
        if isinstance(seg, tuple):
            segment, pos = seg
            yield segment
            index += 1
            continue
        # damaged: find the next intact segment with a higher index
        reason = seg
        salvage = _salvage_at(view, pos, header, index) if reason == "CRC mismatch" else None
        nxt = _resync(view, pos + 1, header, index)
        if nxt is None:
            for i in range(index, header.segments):
                first, count = expected_frames(header, i)
                yield Damaged(i, first, count, reason if i == index else "missing (file truncated or damaged)",
                              *(salvage if i == index and salvage else ()))
            return
        found_pos, found_index = nxt
        for i in range(index, found_index):
            first, count = expected_frames(header, i)
            yield Damaged(i, first, count, reason if i == index else "missing",
                          *(salvage if i == index and salvage else ()))
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


def _salvage_at(view: memoryview, pos: int, header: Header, index: int) -> tuple[bytes, int, int] | None:
    """(payload, quality, stages) of a segment at pos whose CRC failed but whose other fields are
    as expected: a file with FEC codes a stream per group, each with its own CRC (entropy.py), so
    the groups before the damage can still be read."""
    if not header.fec or pos + SEGMENT_HEADER_SIZE > len(view):
        return None
    magic, idx, first, frames, quality, stages, length = _SEGMENT.unpack_from(view, pos)
    exp_first, exp_frames = expected_frames(header, index)
    end = pos + SEGMENT_HEADER_SIZE + length
    if (magic != SEGMENT_MAGIC or idx != index or first != exp_first or frames != exp_frames or length % 4
            or end > len(view) or not (1 <= quality <= 8 and 1 <= stages <= header.stages)):
        return None
    return bytes(view[pos + SEGMENT_HEADER_SIZE:end]), quality, stages


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
