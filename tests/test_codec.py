from fractions import Fraction

import numpy as np
import pytest
import torch

from vqcodec import bitstream as bs
from vqcodec.codec import decode_file, encode_file, inspect, stages_for_quality
from vqcodec.errors import FormatError, ModelMismatch, VqvError
from vqcodec.metrics import sequence_quality
from vqcodec.modelfile import load_model, save_model
from vqcodec.video import probe, read_frames


@pytest.mark.parametrize("size, n, fps", [((176, 144), 12, Fraction(30000, 1001)), ((171, 139), 5, Fraction(25)),
                                           ((630, 340), 3, Fraction(24))])
def test_round_trip_keeps_count_size_and_rate(tmp_path, make_clip, model, size, n, fps):
    src = make_clip(*size, n, fps=fps)
    rep = encode_file(src, tmp_path / "a.vqv", model=model, segment_frames=4)
    assert (rep.frames, rep.width, rep.height) == (n, *size)
    assert rep.bytes == (tmp_path / "a.vqv").stat().st_size
    out = tmp_path / "b.mkv"
    decode_file(tmp_path / "a.vqv", out, model=model)
    info = probe(out)
    assert (info.width, info.height, info.fps) == (*size, fps)
    ref, back = list(read_frames(src)), list(read_frames(out))
    assert len(back) == n
    assert sequence_quality(ref, back).psnr_yuv > 25.0


def test_default_quality_reaches_30_db_and_quality_orders_psnr_and_size(tmp_path, carphone, model):
    ref = list(read_frames(carphone))
    results = []
    for q in (1, 4, 8):
        rep = encode_file(carphone, tmp_path / f"{q}.vqv", quality=q, model=model)
        decode_file(tmp_path / f"{q}.vqv", tmp_path / f"{q}.y4m", model=model)
        results.append((rep.bytes, sequence_quality(ref, read_frames(tmp_path / f"{q}.y4m")).psnr_yuv))
    (b1, p1), (b4, p4), (b8, p8) = results
    assert b1 < b4 < b8
    assert p1 < p4 < p8
    assert p4 >= 30.0


def test_quality_levels_map_to_increasing_depth():
    depths = [stages_for_quality(q, 10) for q in range(1, 9)]
    assert depths == sorted(set(depths)) and depths[-1] == 10
    with pytest.raises(VqvError):
        stages_for_quality(9, 10)


def test_bytes_do_not_depend_on_threads_or_batch(tmp_path, make_clip, model):
    src = make_clip(200, 120, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encode_file(src, tmp_path / "a.vqv", model=model, batch=1)
        torch.set_num_threads(2)
        encode_file(src, tmp_path / "b.vqv", model=model, batch=4)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "a.vqv").read_bytes() == (tmp_path / "b.vqv").read_bytes()


def test_existing_output_is_not_overwritten_without_yes(tmp_path, carphone, model):
    out = tmp_path / "a.vqv"
    out.write_bytes(b"precious")
    with pytest.raises(VqvError, match="already exists"):
        encode_file(carphone, out, model=model)
    assert out.read_bytes() == b"precious"
    encode_file(carphone, out, model=model, overwrite=True)
    assert out.read_bytes()[:4] == bs.MAGIC


def test_failed_encode_leaves_nothing_behind(tmp_path, model):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VqvError):
        encode_file(bad, tmp_path / "a.vqv", model=model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def _segment_offsets(data: bytes, count: int):
    pos, out = bs.HEADER_SIZE, []
    for _ in range(count):
        out.append(pos)
        pos += bs.SEGMENT_HEADER_SIZE + int.from_bytes(data[pos + 16:pos + 20], "little")
    return out


def test_damaged_segment_is_named_or_concealed(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model, segment_frames=4)
    decode_file(vqv, tmp_path / "clean.y4m", model=model)
    data = bytearray(vqv.read_bytes())
    off = _segment_offsets(bytes(data), 3)
    data[off[1] + bs.SEGMENT_HEADER_SIZE + 3] ^= 0xFF
    bad = tmp_path / "bad.vqv"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"segment 1 \(frames 4-7\)"):
        decode_file(bad, tmp_path / "x.y4m", model=model)
    assert not (tmp_path / "x.y4m").exists()
    assert [d["index"] for d in inspect(bad)["damaged"]] == [1]
    rep = decode_file(bad, tmp_path / "c.y4m", model=model, conceal=True)
    assert [d.index for d in rep.concealed] == [1]
    clean, conc = list(read_frames(tmp_path / "clean.y4m")), list(read_frames(tmp_path / "c.y4m"))
    assert len(conc) == 12
    for i in list(range(4)) + list(range(8, 12)):  # intact segments decode bit-exactly as before
        assert np.array_equal(clean[i].y, conc[i].y) and np.array_equal(clean[i].u, conc[i].u)
    assert all(np.array_equal(conc[i].y, clean[3].y) for i in range(4, 8))  # filled from the nearest


def test_wrong_model_is_named(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    other = load_model()
    with torch.no_grad():
        other.net.decoder[0].proj.bias.add_(0.01)
    save_model(tmp_path / "other.pt", other.net, other.tables)
    with pytest.raises(ModelMismatch, match=model.fingerprint.hex()):
        decode_file(vqv, tmp_path / "a.y4m", model=tmp_path / "other.pt")


def test_info_reports_header_and_segments(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, quality=3, model=model, segment_frames=8)
    d = inspect(vqv)
    for key in ("width", "height", "frames", "fps", "quality", "version", "model", "segments", "bytes"):
        assert key in d
    assert (d["width"], d["height"], d["frames"], d["quality"], d["segments"]) == (176, 144, 12, 3, 2)
    assert d["model"] == model.fingerprint.hex() and d["bytes"] == vqv.stat().st_size
    assert [s["frames"] for s in d["segment_table"]] == [8, 4]


def test_folder_output_never_replaces_a_folder_of_other_files(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(VqvError, match="other than numbered PNG"):
        decode_file(vqv, mine, model=model, overwrite=True)
    assert (mine / "thesis.txt").read_text() == "years of work"
    frames = tmp_path / "frames"
    decode_file(vqv, frames, model=model)
    assert len(list(frames.glob("*.png"))) == 12
    decode_file(vqv, frames, model=model, overwrite=True)  # our own PNG folder may be replaced
    assert sorted(p.name for p in frames.iterdir())[0] == "000001.png"


def test_png_output_needs_a_single_frame(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    with pytest.raises(VqvError, match="one picture"):
        decode_file(vqv, tmp_path / "a.png", model=model)
    assert not (tmp_path / "a.png").exists()


def test_damage_is_found_inside_a_memory_mapped_file(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model, segment_frames=4)
    data = bytearray(vqv.read_bytes())
    data[bs.HEADER_SIZE + 2] ^= 0xFF  # first segment's marker: reader must resync to segment 1
    vqv.write_bytes(bytes(data))
    info = inspect(vqv)
    assert [d["index"] for d in info["damaged"]] == [0]
    assert [s["index"] for s in info["segment_table"]] == [1, 2]
