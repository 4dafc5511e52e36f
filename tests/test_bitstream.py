import struct
from fractions import Fraction

import pytest

from vqcodec import bitstream as bs


def header(**kw):
    d = dict(fingerprint=bytes(range(16)), width=630, height=340, fps=Fraction(30000, 1001), frames=20,
             quality=4, stages=4, group_frames=2, segment_frames=8, patch=4, segments=3)
    d.update(kw)
    return bs.Header(**d)


def stream(h=None):
    h = h or header()
    segs = [bs.Segment(i, i * 8, min(8, 20 - i * 8), bytes(range(i, i + 4 * (i + 2)))) for i in range(3)]
    return h, h.pack() + b"".join(s.pack() for s in segs), segs


def test_header_round_trip_and_size():
    h = header()
    data = h.pack()
    assert len(data) == bs.HEADER_SIZE and data[:4] == bs.MAGIC
    assert bs.unpack_header(data) == h


def test_header_is_little_endian_at_documented_offsets():
    data = header().pack()
    assert struct.unpack_from("<I", data, 24)[0] == 630 and struct.unpack_from("<I", data, 28)[0] == 340
    assert struct.unpack_from("<II", data, 32) == (30000, 1001)
    assert data[45] == 4


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"RIFF" + d[4:], "bad magic"),
    (lambda d: d[:40], "truncated"),
    (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:], "CRC"),
    (lambda d: d[:4] + struct.pack("<H", 99) + d[6:], "newer"),
])
def test_bad_headers_are_rejected_with_a_reason(mutate, message):
    with pytest.raises(bs.BitstreamError, match=message):
        bs.unpack_header(mutate(header().pack()))


def test_segments_read_back_intact():
    h, data, segs = stream()
    assert list(bs.read_segments(data, h)) == segs


def test_a_flipped_payload_bit_damages_only_its_segment():
    h, data, segs = stream()
    pos = bs.HEADER_SIZE + len(segs[0].pack()) + bs.SEGMENT_HEADER_SIZE + 1
    bad = bytearray(data)
    bad[pos] ^= 0x10
    out = list(bs.read_segments(bytes(bad), h))
    assert out[0] == segs[0] and out[2] == segs[2]
    assert isinstance(out[1], bs.Damaged) and out[1].reason == "CRC mismatch"
    assert (out[1].first_frame, out[1].frames) == (8, 8)


def test_truncation_marks_the_missing_segments():
    h, data, segs = stream()
    out = list(bs.read_segments(data[:-5], h))
    assert out[:2] == segs[:2] and isinstance(out[2], bs.Damaged) and out[2].frames == 4


def test_payload_must_be_whole_words():
    with pytest.raises(bs.BitstreamError):
        bs.Segment(0, 0, 1, b"abc").pack()


def test_a_file_of_another_format_names_the_release_that_decodes_it():
    import vqcodec
    as_version = lambda v: (lambda d: d[:4] + struct.pack("<H", v) + d[6:])(header().pack())
    assert bs.RELEASES[bs.VERSION] == vqcodec.__version__  # this release reads and writes this format
    with pytest.raises(bs.BitstreamError, match=r"vqcodec 0\.13\.0 decodes it \(pip install vqcodec==0\.13\.0"):
        bs.unpack_header(as_version(13))
    with pytest.raises(bs.BitstreamError, match="never released"):
        bs.unpack_header(as_version(5))
    with pytest.raises(bs.BitstreamError, match="upgrade vqcodec"):
        bs.unpack_header(as_version(bs.VERSION + 1))


def test_colour_tags_sit_at_their_offsets_and_read_back():
    h = header(colour=(1, 1, 1, 1))  # limited range, BT.709 matrix, primaries and transfer
    data = h.pack()
    assert data[60:64] == bytes([1, 1, 1, 1])
    back = bs.unpack_header(data)
    assert back.colour == (1, 1, 1, 1) and back.to_dict()["colour"] == {
        "range": "tv", "matrix": "bt709", "primaries": "bt709", "transfer": "bt709"}


def streamed(h):
    """What an encoder writing to a pipe sends: a header with no counts, the segments, a trailer."""
    h.streamed = True
    _, data, segs = stream(h)
    return data + h.pack_trailer(), segs


def test_a_streamed_file_takes_its_counts_and_rate_from_the_trailer():
    data, segs = streamed(header(fps=Fraction(25)))
    assert struct.unpack_from("<I", data, 40)[0] == 0 and struct.unpack_from("<I", data, 52)[0] == 0
    first = bs.unpack_header(data[:bs.HEADER_SIZE])
    assert first.streamed and first.frames == 0
    # the trailer may say another rate than the header: the one the frames' timestamps showed
    h = bs.complete_streamed(data[:-bs.TRAILER_SIZE] + header(fps=Fraction(24)).pack_trailer(), first)
    assert (h.frames, h.segments, h.fps) == (20, 3, Fraction(24))
    assert list(bs.read_segments(data, bs.complete_streamed(data, first))) == segs


def test_a_cut_stream_is_read_to_its_last_whole_segment():
    data, segs = streamed(header())
    first = bs.unpack_header(data[:bs.HEADER_SIZE])
    cut = data[:bs.HEADER_SIZE + len(segs[0].pack()) + len(segs[1].pack()) + 7]  # inside segment 2
    h = bs.complete_streamed(cut, first)
    assert (h.frames, h.segments, h.fps) == (16, 2, first.fps)
    assert list(bs.read_segments(cut, h)) == segs[:2]
    # without its trailer but whole, the last (short) segment ends it
    h = bs.complete_streamed(data[:-bs.TRAILER_SIZE], first)
    assert (h.frames, h.segments) == (20, 3)
    # a damaged trailer is not believed
    bad = bytearray(data)
    bad[-10] ^= 1
    assert bs.complete_streamed(bytes(bad), first).frames == 20
