"""Forward error correction (fec.py): parity windows, repair, the header's copy, and the CLI."""
import json
import random

import numpy as np
import pytest

from conftest import resize_frames
from vqcodec import bitstream as bs
from vqcodec import fec
from vqcodec.cli import main
from vqcodec.decoder import decode_file, frames_from_bytes
from vqcodec.encoder import encode_frames


@pytest.fixture(scope="module")
def files(tmp_path_factory, carphone_frames, model):
    """The same 12 frames at 320x240 quality 8 (about 140 KB: three parity windows at 5 %), with
    and without --fec 5."""
    d = tmp_path_factory.mktemp("fec")
    frames = resize_frames(carphone_frames, 320, 240)
    out = {}
    for pct in (0, 5):
        encode_frames(frames, 25, d / f"fec{pct}.vqv", quality=8, model=model, device="cpu", segment_frames=4,
                      fec_pct=pct)
        out[pct] = (d / f"fec{pct}.vqv").read_bytes()
    return out


def pictures(data, model, conceal=False):
    return [f.y.tobytes() + f.u.tobytes() + f.v.tobytes() for f in frames_from_bytes(data, model, conceal=conceal, concealed=[])]


def test_parity_bytes_follow_the_percentage():
    assert [fec.parity_bytes(p) for p in (0, 2, 5, 10, 50)] == [0, 5, 12, 23, 85]
    with pytest.raises(ValueError):
        fec.parity_bytes(51)


def test_fec_costs_its_percentage_and_decodes_to_the_same_pictures(files, model):
    plain, protected = files[0], files[5]
    assert len(protected) <= 1.055 * len(plain)  # parity, a stream per group, the header's copy
    parities = bs.find_parity(protected)
    assert len(parities) >= 2 and bs.unpack_header(protected[:bs.HEADER_SIZE]).fec == 12
    assert pictures(protected, model) == pictures(plain, model)
    assert fec.repair(protected) == (protected, [])  # intact: nothing to do, nothing copied


def test_a_segment_beyond_repair_keeps_its_groups_before_the_damage(files, model):
    protected = files[5]
    header = bs.unpack_header(protected[:bs.HEADER_SIZE])
    whole = pictures(protected, model)
    segment = bs.HEADER_SIZE  # the first segment: 4 frames, two groups
    length = int.from_bytes(protected[segment + 16:segment + 20], "little")
    bad = bytearray(protected)
    at = segment + bs.SEGMENT_HEADER_SIZE + length * 3 // 4  # inside its second group's stream
    bad[at:at + 3000] = bytes(3000)  # more than the window's parity corrects
    fixed, report = fec.repair(bytes(bad))
    assert length > 8000 and not report[0].repaired and report[0].segments == [0]
    concealed = []
    got = [f.y.tobytes() + f.u.tobytes() + f.v.tobytes()
           for f in frames_from_bytes(bytes(bad), model, conceal=True, concealed=concealed)]
    assert len(got) == header.frames
    assert got[:2] == whole[:2] and got[2:4] == [whole[1]] * 2  # group 0 kept, group 1 from its last frame
    assert concealed[0].index == 0 and concealed[0].frames == 2 and "frames 0-1 kept" in concealed[0].reason


def test_small_files_keep_fec_within_its_budget(tmp_path, carphone, model):
    from vqcodec.encoder import encode_file
    for quality in (1, 4, 8):  # 2, 6 and 29 KB
        plain = encode_file(carphone, tmp_path / "a.vqv", model=model, quality=quality, overwrite=True).bytes
        protected = encode_file(carphone, tmp_path / "b.vqv", model=model, quality=quality, fec_pct=5,
                                overwrite=True).bytes
        assert protected <= 1.055 * plain, quality
    data = (tmp_path / "b.vqv").read_bytes()  # quality 8: a window's parity cut to fit, and the header's copy
    header = bs.unpack_header(data[:bs.HEADER_SIZE])
    assert header.header_copy and 2 <= bs.find_parity(data)[0].nsym < header.fec


def test_random_errors_and_a_1k_burst_are_corrected_to_the_same_pictures(files, model):
    protected = files[5]
    rng = random.Random(0)
    for trial in range(3):
        bad = bytearray(protected)
        for _ in range(int(len(bad) * 1e-3)):  # a byte error rate of 10^-3
            bad[rng.randrange(len(bad))] ^= rng.randrange(1, 256)
        fixed, report = fec.repair(bytes(bad), rewrite=True)
        assert fixed == protected and report and all(w.repaired for w in report)
    first = bs.find_parity(protected)[0]
    bad = bytearray(protected)
    at = first.start + first.length // 2
    bad[at:at + 1024] = bytes(rng.randrange(256) for _ in range(1024))  # a burst inside a whole window
    header = bs.unpack_header(protected[:bs.HEADER_SIZE])
    assert any(isinstance(s, bs.Damaged) for s in bs.read_segments(bytes(bad), header))  # damage that shows
    assert pictures(bytes(bad), model) == pictures(protected, model)  # corrected before decoding
    fixed, report = fec.repair(bytes(bad))
    assert "corrected" in report[0].text() and report[0].segments


def test_a_burst_across_a_window_and_its_parity_head_is_corrected(files):
    # (the parity is then found by its second head; a first cut took that head for the first)
    protected = files[5]
    p = bs.find_parity(protected)[0]
    end = p.start + p.length
    bad = bytearray(protected)
    bad[end - 600:end + 400] = bytes(1000)  # the window's tail, the first head, the parity's start
    fixed, report = fec.repair(bytes(bad))
    assert fixed[:end] == protected[:end] and report[0].repaired


def test_repair_makes_a_damaged_parity_chunk_whole_again(tmp_path, files, capsys):
    # the windows are intact, so nothing needs correcting, but the file written back is the original
    bad = bytearray(files[5])
    for p in bs.find_parity(files[5]):
        bad[p.at + 40] ^= 0x5A
    (tmp_path / "bad.vqv").write_bytes(bytes(bad))
    code, out, err = run(capsys, "repair", tmp_path / "bad.vqv", "-o", tmp_path / "fixed.vqv")
    assert code == 0 and (tmp_path / "fixed.vqv").read_bytes() == files[5]


def test_a_damaged_header_is_restored_from_its_copy(files, model):
    bad = bytearray(files[5])
    bad[24:32] = b"\xff" * 8  # width and height
    assert pictures(bytes(bad), model) == pictures(files[5], model)
    bad = bytearray(files[0])
    bad[24:32] = b"\xff" * 8
    with pytest.raises(Exception, match="header is damaged"):
        pictures(bytes(bad), model)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_corrects_reports_repairs_and_refuses(tmp_path, files, capsys):
    rng = random.Random(1)
    bad = bytearray(files[5])
    for _ in range(20):
        bad[rng.randrange(bs.HEADER_SIZE, len(bad))] ^= 0x5A
    (tmp_path / "bad.vqv").write_bytes(bytes(bad))
    code, out, err = run(capsys, "decode", tmp_path / "bad.vqv", "-o", tmp_path / "a.y4m")
    assert code == 0 and "warning: corrected" in err and "concealed" not in out
    code, out, err = run(capsys, "info", tmp_path / "bad.vqv", "--json")
    d = json.loads(out)
    assert d["fec"]["parity_bytes_per_codeword"] == 12 and d["repairs"] and not d["damaged"]
    code, out, err = run(capsys, "repair", tmp_path / "bad.vqv", "-o", tmp_path / "fixed.vqv")
    assert code == 0 and out.startswith("repaired") and (tmp_path / "fixed.vqv").read_bytes() == files[5]
    # more damage than the parity covers: nothing written, one line
    bad[bs.HEADER_SIZE + 100:bs.HEADER_SIZE + 9100] = bytes(9000)
    (tmp_path / "worse.vqv").write_bytes(bytes(bad))
    code, out, err = run(capsys, "repair", tmp_path / "worse.vqv", "-o", tmp_path / "w.vqv")
    assert code == 1 and "cannot repair" in err and not (tmp_path / "w.vqv").exists()
    (tmp_path / "plain.vqv").write_bytes(files[0])
    code, out, err = run(capsys, "repair", tmp_path / "plain.vqv", "-o", tmp_path / "p.vqv")
    assert code == 1 and "without --fec" in err
    code, out, err = run(capsys, "encode", tmp_path / "plain.vqv", "-o", tmp_path / "x.vqv", "--fec", "60")
    assert code == 1 and "--fec must be" in err


def test_concealment_delivers_every_frame_even_when_every_segment_is_damaged(tmp_path, files, capsys):
    bad = bytearray(files[0])
    header = bs.unpack_header(files[0][:bs.HEADER_SIZE])
    pos = bs.HEADER_SIZE
    while (pos := bad.find(bs.SEGMENT_MAGIC, pos)) >= 0:  # every segment's CRC broken
        bad[pos + 20] ^= 0xFF
        pos += 1
    (tmp_path / "all.vqv").write_bytes(bytes(bad))
    code, out, err = run(capsys, "decode", tmp_path / "all.vqv", "-o", tmp_path / "all.y4m", "--conceal")
    assert code == 0, err
    assert f"decoded {header.frames} frames" in out and "every segment damaged: mid-grey" in out


def test_a_streamed_file_with_fec_is_corrected_header_and_all(tmp_path, carphone_frames, model):
    from conftest import write_clip
    from test_cli import vq
    src = write_clip(tmp_path / "src.y4m", carphone_frames[:8])
    enc = vq("encode", "-", "-o", "-", "--fec", "10", "--segment", "4", input_bytes=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    data = enc.stdout
    assert bs.unpack_header(data[:bs.HEADER_SIZE]).streamed and bs.header_copy(data).frames == 8
    bad = bytearray(data)
    bad[30] ^= 0xFF  # the header
    for i in range(bs.HEADER_SIZE + 50, len(bad) - 200, 997):
        bad[i] ^= 0x33
    dec = vq("decode", "-", "-o", "-", input_bytes=bytes(bad))
    assert dec.returncode == 0, dec.stderr
    assert b"restored the damaged header" in dec.stderr and b"warning: corrected" in dec.stderr
    assert dec.stdout == vq("decode", "-", "-o", "-", input_bytes=data).stdout
