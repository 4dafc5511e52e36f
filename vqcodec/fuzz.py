"""Mutations of .vqv bytes for robustness checks (the hypothesis test and scripts/fuzz_decoder.py).

An operation is a tuple: ("flip", pos, mask), ("truncate", pos), ("delete", pos, n),
("splice", pos, src, n) (insert n bytes copied from src), ("set32", pos, value).  Positions
wrap around the data's length.  ``reseal`` recomputes the header's and every reachable
segment's CRC afterwards, so that mutations reach the layers behind the CRC checks.
"""
from __future__ import annotations

import struct
import zlib

from . import bitstream as bs

EXTREMES = (0, 1, 2, 3, 4, 255, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 4096, 24)


def apply(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        n = max(1, len(b))
        kind = op[0]
        if kind == "flip" and b:
            b[op[1] % n] ^= (op[2] & 0xFF) or 1
        elif kind == "truncate":
            del b[op[1] % n:]
        elif kind == "delete":
            del b[op[1] % n: op[1] % n + op[2]]
        elif kind == "splice" and b:
            chunk = bytes(b[op[2] % n: op[2] % n + op[3]])
            b[op[1] % n: op[1] % n] = chunk
        elif kind == "set32" and len(b) >= 4:
            pos = op[1] % (len(b) - 3)
            b[pos:pos + 4] = struct.pack("<I", op[2] & 0xFFFFFFFF)
    return bytes(b)


def reseal(data: bytes) -> bytes:
    """Recompute the header CRC and the CRC of each chunk (audio description, audio packet,
    parity chunk head, segment) reachable by walking the lengths."""
    b = bytearray(data)
    if len(b) < bs.HEADER_SIZE:
        return bytes(b)
    crc_at = bs.HEADER_SIZE - 4
    b[crc_at:bs.HEADER_SIZE] = struct.pack("<I", zlib.crc32(bytes(b[:crc_at])))
    pos = bs.HEADER_SIZE
    while pos + 9 <= len(b):
        magic = bytes(b[pos:pos + 4])
        if magic == bs.AUDIO_STREAM_MAGIC:  # head 9 bytes, body, CRC over both
            end = pos + 9 + struct.unpack_from("<I", b, pos + 4)[0] + 4
            if end > len(b):
                break
            b[end - 4:end] = struct.pack("<I", zlib.crc32(bytes(b[pos + 9:end - 4]), zlib.crc32(bytes(b[pos:pos + 9]))))
        elif magic == bs.AUDIO_PACKET_MAGIC and pos + bs.AUDIO_PACKET_HEADER_SIZE <= len(b):
            head = bs.AUDIO_PACKET_HEADER_SIZE - 4
            end = pos + bs.AUDIO_PACKET_HEADER_SIZE + struct.unpack_from("<I", b, pos + 20)[0]
            if end > len(b):
                break
            crc = zlib.crc32(bytes(b[pos + head + 4:end]), zlib.crc32(bytes(b[pos:pos + head])))
            b[pos + head:pos + head + 4] = struct.pack("<I", crc)
        elif magic == bs.PARITY_MAGIC and pos + bs.PARITY_HEAD_SIZE <= len(b):
            head = bs.PARITY_HEAD_SIZE - 4
            length, nsym = struct.unpack_from("<I", b, pos + 8)[0], b[pos + 12]
            if not 0 < nsym < 255:
                break
            end = pos + bs.parity_size(length, nsym)
            if end > len(b):
                break
            crc = struct.pack("<I", zlib.crc32(bytes(b[pos:pos + head])))
            b[pos + head:pos + head + 4] = crc
            b[end - bs.PARITY_HEAD_SIZE:end] = b[pos:pos + bs.PARITY_HEAD_SIZE]
        elif pos + bs.SEGMENT_HEADER_SIZE <= len(b):
            end = pos + bs.SEGMENT_HEADER_SIZE + struct.unpack_from("<I", b, pos + 16)[0]
            if end > len(b):
                break
            crc = zlib.crc32(bytes(b[pos + 24:end]), zlib.crc32(bytes(b[pos:pos + 20])))
            b[pos + 20:pos + 24] = struct.pack("<I", crc)
        else:
            break
        pos = end
    return bytes(b)


def random_ops(rng, size: int, count: int):
    """`count` random operations for data of about `size` bytes (rng: random.Random)."""
    ops = []
    for _ in range(count):
        kind = rng.choice(("flip", "flip", "truncate", "delete", "splice", "set32", "set32"))
        pos = rng.randrange(max(1, size))
        if kind == "flip":
            ops.append((kind, pos, rng.randrange(1, 256)))
        elif kind == "truncate":
            ops.append((kind, pos))
        elif kind == "delete":
            ops.append((kind, pos, rng.randrange(1, 64)))
        elif kind == "splice":
            ops.append((kind, pos, rng.randrange(max(1, size)), rng.randrange(1, 256)))
        else:
            ops.append((kind, pos, rng.choice(EXTREMES) if rng.random() < 0.7 else rng.randrange(1 << 32)))
    return ops
