"""Forward error correction: Reed-Solomon parity over interleaved windows of a .vqv's bytes.

With `--fec PCT` the encoder follows each window of chunks (segments and audio packets, about
42 KB) with a parity chunk (bitstream.py): the window's bytes are dealt into D codewords of
RS(255) over GF(2^8), byte j into codeword j mod D, each given `nsym` parity bytes, about PCT %
of the data.  A codeword corrects up to nsym / 2 wrong bytes wherever they are, so random
errors need no packet checksums eating the parity; the interleaving spreads a burst of B bytes
to ceil(B / D) per codeword: with 172 codewords a 1 KiB burst is 6 bytes per codeword, what
5 % (12 parity bytes) corrects.  A window whose CRC checks out is not decoded at all.

Reed-Solomon coding is reedsolo's (a well-kept pure-Python codec: 0.8 MB/s encoding on the
2-core machine, far above vqcodec's output rate, and no compiler needed to install it).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass, field

import reedsolo

from . import bitstream as bs

WINDOW_CODEWORDS = 172  # a window holds about this many codewords' data: a 1 KiB burst, 6 bytes each
MAX_PCT = 50


def parity_bytes(pct: int) -> int:
    """Parity bytes per codeword for about `pct` % of the data (0: none): 2 % → 5, 5 % → 12, 10 % → 23."""
    if not 0 <= pct <= MAX_PCT:
        raise ValueError(f"--fec must be from 0 to {MAX_PCT} (% of parity), got {pct}")
    return 0 if pct == 0 else max(2, int(255 * pct / (100 + pct)))


GROUP_OVERHEAD = 10  # bytes a group's own stream adds (its length and CRC, a flush): about 10.5 measured


def window_parity(nsym: int, length: int, pct: int, overhead: int) -> int:
    """Parity bytes per codeword for a window of `length` bytes, of which `overhead` FEC added
    (group streams; in a file of one window, the header's copy too): the file's nominal `nsym`,
    cut so that the window grows by at most pct + 0.5 % of what it would be without FEC; 0 (no
    parity chunk) when not even 2 fit."""
    allowed = (pct + 0.5) / 100 * (length - overhead) - overhead
    for n in range(nsym, 1, -1):
        if bs.parity_size(length, n) <= allowed:
            return n
    return 0


def window_target(nsym: int) -> int:
    """Bytes after which the encoder closes a window and writes its parity."""
    return WINDOW_CODEWORDS * (255 - nsym)


@functools.lru_cache(maxsize=None)
def _codec(nsym: int) -> reedsolo.RSCodec:
    return reedsolo.RSCodec(nsym, nsize=255)


def protect(window: bytes, start: int, nsym: int) -> bs.Parity:
    """The parity chunk for `window`, which begins at file offset `start`."""
    d = bs.codewords(len(window), nsym)
    rs = _codec(nsym)
    parity = bytearray(d * nsym)
    for i in range(d):
        ecc = rs.encode(window[i::d])[-nsym:]
        parity[i::d] = ecc  # parity byte r of codeword i at r * d + i
    return bs.Parity(start, len(window), nsym, zlib.crc32(window), bytes(parity))


@dataclass
class Window:
    """What repair found for one window: its place, the segments in it, and what became of it."""

    start: int
    length: int
    corrected: int  # bytes corrected
    repaired: bool  # intact now (or was)
    segments: list[int] = field(default_factory=list)
    header_restored: bool = False

    def text(self) -> str:
        if self.header_restored:
            return "restored the damaged header from its copy at the end"
        where = (f"segment {self.segments[0]}" if len(self.segments) == 1 else
                 f"segments {self.segments[0]}-{self.segments[-1]}" if self.segments else
                 f"bytes {self.start}-{self.start + self.length - 1}")
        if self.repaired:
            return f"corrected {self.corrected} bytes in {where}"
        return f"could not correct {where} (more damage than its parity covers)"


def repair(data, rewrite: bool = False):
    """The file with every window its parity can correct corrected (the header from its copy when
    damaged), and a report of the windows that needed it.  An intact file, or one without FEC,
    comes back as it was (not copied), with an empty report.  `rewrite` (for writing the file
    back) also makes every parity chunk and the header's copy whole again."""
    view = memoryview(data)
    parities = bs.find_parity(data)
    header_ok = True
    try:
        bs.unpack_header(bytes(view[:bs.HEADER_SIZE]))
    except bs.BitstreamError:
        header_ok = False
    damaged = [p for p in parities if p.start >= bs.HEADER_SIZE and p.start + p.length <= len(view)
               and zlib.crc32(view[p.start:p.start + p.length]) != p.crc]
    if header_ok and not damaged and not rewrite:
        return data, []
    out = bytearray(data)
    report: list[Window] = []
    for p in damaged:
        end = p.start + p.length
        window, corrected = _correct(bytes(out[p.start:end]), p)
        ok = window is not None and zlib.crc32(window) == p.crc
        if ok:
            out[p.start:end] = window
        report.append(Window(p.start, p.length, corrected if ok else 0, ok))
    try:
        header = bs.unpack_header(bytes(out[:bs.HEADER_SIZE]))
    except bs.BitstreamError:
        header = bs.header_copy(out)  # its counts are final: the restored header is not a streamed one
        if header is not None:
            out[:bs.HEADER_SIZE] = header.pack()
            report.insert(0, Window(0, bs.HEADER_SIZE, 0, True, header_restored=True))
    _name_segments(out, report, bs.complete_streamed(out, header).segments if header else 0)
    if rewrite and header is not None and header.fec:
        _reprotect(out, parities, header)
    return bytes(out), report


def _reprotect(out: bytearray, parities: list[bs.Parity], header: bs.Header) -> None:
    """Parity chunks recomputed from their (now whole) windows, and the header's copy rewritten,
    where they differ from what the file holds."""
    for p in parities:
        window = bytes(out[p.start:p.start + p.length])
        if zlib.crc32(window) != p.crc or p.at < 0:
            continue  # a window left damaged keeps its parity as it was
        chunk = protect(window, p.start, p.nsym).pack()
        out[p.at:p.at + len(chunk)] = chunk
    head = bs.unpack_header(bytes(out[:bs.HEADER_SIZE]))
    copy = bs.header_copy(out)
    final = copy if copy is not None else bs.complete_streamed(out, head)
    end = len(out)
    if head.streamed:  # the trailer too
        out[end - bs.TRAILER_SIZE:end] = final.pack_trailer()
        end -= bs.TRAILER_SIZE
    if head.header_copy and end - bs.HEADER_SIZE > bs.HEADER_SIZE:
        out[end - bs.HEADER_SIZE:end] = dataclasses.replace(final, streamed=False).pack()


def _correct(window: bytes, p: bs.Parity) -> tuple[bytes | None, int]:
    """The window with each codeword decoded, and the bytes changed; None when a codeword holds
    more errors than its parity corrects."""
    d, rs = p.codewords, _codec(p.nsym)
    fixed = bytearray(window)
    corrected = 0
    for i in range(d):
        codeword = bytearray(window[i::d]) + bytearray(p.parity[i::d])
        try:
            message = rs.decode(codeword)[0]
        except reedsolo.ReedSolomonError:
            return None, 0
        fixed[i::d] = message
        corrected += sum(1 for a, b in zip(message, window[i::d]) if a != b)
    return bytes(fixed), corrected


def _name_segments(data: bytearray, report: list[Window], segments: int) -> None:
    """Which segments each reported window holds (by the segment markers inside it)."""
    for w in report:
        if w.header_restored:
            continue
        pos = w.start
        while True:
            pos = data.find(bs.SEGMENT_MAGIC, pos, w.start + w.length)
            if pos < 0:
                break
            if pos + 8 <= len(data):
                w.segments.append(int.from_bytes(data[pos + 4:pos + 8], "little"))
            pos += 1
        w.segments = sorted(set(s for s in w.segments if s < segments))
