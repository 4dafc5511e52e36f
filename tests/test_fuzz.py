"""Damaged and hostile .vqv bytes never crash the decoder: a clean error or a full decode."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import resize_frames, write_clip
from vqcodec import bitstream as bs
from vqcodec.codec import decode_bytes, encode_file
from vqcodec.errors import VqvError
from vqcodec.fuzz import EXTREMES, apply, reseal


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, carphone_frames, model):
    d = tmp_path_factory.mktemp("fuzz")
    src = write_clip(d / "t.mkv", resize_frames(carphone_frames[:6], 48, 32))
    encode_file(src, d / "t.vqv", model=model, segment_frames=2)
    return (d / "t.vqv").read_bytes()


pos = st.integers(0, 10_000)
op = st.one_of(
    st.tuples(st.just("flip"), pos, st.integers(1, 255)),
    st.tuples(st.just("truncate"), pos),
    st.tuples(st.just("delete"), pos, st.integers(1, 64)),
    st.tuples(st.just("splice"), pos, pos, st.integers(1, 200)),
    st.tuples(st.just("set32"), pos, st.one_of(st.sampled_from(EXTREMES), st.integers(0, 2**32 - 1))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=4), fix_crc=st.booleans())
def test_mutated_files_fail_cleanly_or_decode_every_frame(tiny, model, ops, fix_crc):
    data = apply(tiny, ops)
    if fix_crc:
        data = reseal(data)
    try:
        frames, _ = decode_bytes(data, model, conceal=True)
    except VqvError:
        return
    header = bs.unpack_header(data[:bs.HEADER_SIZE])
    assert frames == header.frames  # concealment keeps the frame count


def test_clean_tiny_file_decodes(tiny, model):
    assert decode_bytes(tiny, model) == (6, [])


def test_reseal_reaches_the_payload(tiny, model):
    # a payload byte changed and resealed passes every CRC: only the decoder's own checks remain
    data = bytearray(tiny)
    data[bs.HEADER_SIZE + bs.SEGMENT_HEADER_SIZE] ^= 0x55
    frames, concealed = decode_bytes(reseal(bytes(data)), model)
    assert frames == 6
