import json

import pytest

from vqcodec.cli import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_decode_info_through_the_cli(tmp_path, carphone, capsys):
    code, out, err = run(capsys, "encode", carphone, "-o", tmp_path / "a.vqv", "-q", "3")
    assert code == 0, err
    assert out.startswith("encoded 12 frames 176x144") and "kbit/s" in out and "bpp" in out and "fps" in out
    code, out, err = run(capsys, "decode", tmp_path / "a.vqv", "-o", tmp_path / "a.mp4")
    assert code == 0, err
    assert out.startswith("decoded 12 frames")
    code, out, _ = run(capsys, "info", tmp_path / "a.vqv", "--json")
    d = json.loads(out)
    assert d["frames"] == 12 and d["quality"] == 3 and d["segments"] == 1

    code, out, err = run(capsys, "encode", carphone, "-o", tmp_path / "b.vqv", "--bitrate", "300", "--segment", "4")
    assert code == 0, err
    assert "target 300 kbit/s" in out
    code, out, _ = run(capsys, "info", tmp_path / "b.vqv")
    assert "rate-controlled" in out and "target_kbps: 300" in out


@pytest.mark.parametrize("args, message", [
    (["encode", "{missing}", "-o", "{out}"], "no such file"),
    (["encode", "{text}", "-o", "{out}"], "not a video"),
    (["encode", "{clip}", "-o", "{out}", "-q", "9"], "--quality must be"),
    (["encode", "{clip}", "-o", "{out}", "--device", "tpu"], "--device"),
    (["encode", "{clip}", "-o", "{existing}"], "already exists"),
    (["encode", "{clip}", "-o", "{nofolder}"], "does not exist"),
    (["decode", "{text}", "-o", "{out2}"], "not a .vqv"),
    (["decode", "{empty}", "-o", "{out2}"], "empty"),
    (["info", "{missing}"], "no such file"),
    (["encode", "{clip}"], "Missing option"),
    (["encode", "{clip}", "-o", "{out}", "--segment", "0"], "--segment must be"),
    (["encode", "{clip}", "-o", "{out}", "-q", "3", "--bitrate", "100"], "not both"),
    (["encode", "{clip}", "-o", "{out}", "--bitrate", "-5"], "--bitrate must be"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, carphone, capsys, args, message):
    (tmp_path / "t.txt").write_text("not a video")
    (tmp_path / "empty.vqv").write_bytes(b"")
    (tmp_path / "exists.vqv").write_bytes(b"keep")
    names = {"missing": tmp_path / "nope.mp4", "text": tmp_path / "t.txt", "clip": carphone,
             "out": tmp_path / "o.vqv", "out2": tmp_path / "o.y4m", "existing": tmp_path / "exists.vqv",
             "nofolder": tmp_path / "no" / "o.vqv", "empty": tmp_path / "empty.vqv"}
    code, out, err = run(capsys, *[a.format(**names) for a in args])
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.vqv").exists() and not (tmp_path / "o.y4m").exists()
    assert (tmp_path / "exists.vqv").read_bytes() == b"keep"
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def _audio_only(path):
    import av
    import numpy as np
    c = av.open(str(path), "w")
    s = c.add_stream("pcm_s16le", rate=8000)
    f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    f.sample_rate, f.pts = 8000, 0
    for p in list(s.encode(f)) + list(s.encode()):
        c.mux(p)
    c.close()
    return path


@pytest.fixture(scope="module")
def good_vqv(tmp_path_factory, carphone):
    path = tmp_path_factory.mktemp("vqv") / "good.vqv"
    assert main(["encode", str(carphone), "-o", str(path), "--segment", "4"]) == 0
    return path


def _version(src, dst, version):
    from vqcodec.fuzz import reseal
    data = bytearray(src.read_bytes())
    data[4:6] = version.to_bytes(2, "little")
    dst.write_bytes(reseal(bytes(data)))


def _damage_segment_1(src, dst):
    from vqcodec import bitstream as bs
    data = bytearray(src.read_bytes())
    first = int.from_bytes(data[bs.HEADER_SIZE + 16:bs.HEADER_SIZE + 20], "little")
    data[bs.HEADER_SIZE + bs.SEGMENT_HEADER_SIZE + first + bs.SEGMENT_HEADER_SIZE + 2] ^= 0xFF
    dst.write_bytes(bytes(data))


def _other_model(dst):
    import torch
    from vqcodec.modelfile import load_model, save_model
    m = load_model()
    with torch.no_grad():
        m.net.decoder[0].proj.bias.add_(0.01)
    save_model(dst, m.net, m.tables)


CASES = {
    "no video stream": (["encode", "{audio}", "-o", "{out}"], "has no video stream"),
    "newer format": (["decode", "{newer}", "-o", "{y4m}"], "newer than this vqcodec"),
    "older format": (["decode", "{older}", "-o", "{y4m}"], "earlier vqcodec"),
    "truncated header": (["decode", "{trunc}", "-o", "{y4m}"], "truncated"),
    "truncated segment": (["decode", "{cut}", "-o", "{y4m}"], "is damaged"),
    "wrong model": (["decode", "{good}", "-o", "{y4m}", "--model", "{other}"], "written with model"),
    "unwritable folder": (["encode", "{clip}", "-o", "/proc/vqcodec-test.vqv"], "writ"),  # root: "cannot write", others: "not writable"
    "damaged segment": (["decode", "{damaged}", "-o", "{y4m}"], "segment 1 (frames 4-7) is damaged"),
    "not a model": (["encode", "{clip}", "-o", "{out}", "--model", "{audio}"], "not a vqcodec model"),
    "unknown output type": (["decode", "{good}", "-o", "{tmp}/x.docx"], "unknown output type"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_bad_case_is_one_line(tmp_path, carphone, good_vqv, capsys, name):
    args, message = CASES[name]
    names = {"audio": _audio_only(tmp_path / "a.mka"), "out": tmp_path / "o.vqv", "y4m": tmp_path / "o.y4m",
             "good": good_vqv, "clip": carphone, "newer": tmp_path / "n.vqv", "older": tmp_path / "o1.vqv", "trunc": tmp_path / "t.vqv",
             "cut": tmp_path / "c.vqv", "damaged": tmp_path / "d.vqv", "other": tmp_path / "other.pt",
             "tmp": tmp_path}
    from vqcodec.bitstream import VERSION
    _version(good_vqv, names["newer"], VERSION + 1)
    _version(good_vqv, names["older"], 1)
    names["trunc"].write_bytes(good_vqv.read_bytes()[:30])
    names["cut"].write_bytes(good_vqv.read_bytes()[:-50])
    _damage_segment_1(good_vqv, names["damaged"])
    if name == "wrong model":
        _other_model(names["other"])
    before = set(tmp_path.iterdir())
    code, out, err = run(capsys, *[a.format(**names) for a in args])
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written, nothing left half-done


def test_wrong_model_message_names_the_needed_model(tmp_path, good_vqv, capsys):
    from vqcodec.modelfile import load_model
    _other_model(tmp_path / "other.pt")
    code, _, err = run(capsys, "decode", good_vqv, "-o", tmp_path / "o.y4m", "--model", tmp_path / "other.pt")
    assert code == 1 and load_model().fingerprint.hex() in err


def test_conceal_through_the_cli_reports_and_writes_every_frame(tmp_path, good_vqv, capsys):
    _damage_segment_1(good_vqv, tmp_path / "d.vqv")
    code, out, err = run(capsys, "decode", tmp_path / "d.vqv", "-o", tmp_path / "o.y4m", "--conceal")
    assert code == 0, err
    assert "decoded 12 frames" in out and "concealed 4 frames" in out and "segments 1 (frames 4-7" in out
    code, out, _ = run(capsys, "info", tmp_path / "d.vqv")
    assert "damaged: segment 1 (frames 4-7)" in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(tmp_path, carphone, capsys):
    code, _, err = run(capsys, "encode", carphone, "-o", tmp_path / "o.vqv", "--device", "cuda")
    assert code == 1 and "no CUDA GPU" in err and not (tmp_path / "o.vqv").exists()


def test_full_disk_leaves_nothing(tmp_path, carphone, capsys, monkeypatch):
    import errno
    import vqcodec.encoder as encoder

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(encoder.os, "fsync", full)  # simulated: the disk fills at the end of writing
    (tmp_path / "o.vqv").write_bytes(b"old")
    code, _, err = run(capsys, "encode", carphone, "-o", tmp_path / "o.vqv", "-y")
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "o.vqv").read_bytes() == b"old"  # the existing file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.vqv"]


def test_ctrl_c_leaves_no_partial_output(tmp_path, carphone, capsys, monkeypatch):
    import vqcodec.encoder as encoder

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(encoder.SegmentCoder, "symbols", interrupt)  # simulated Ctrl-C mid-encode
    code, _, err = run(capsys, "encode", carphone, "-o", tmp_path / "o.vqv")
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_no_command_prints_the_help_and_no_empty_error(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "Usage" in out + err and "error" not in err


def test_short_help_and_version(capsys):
    code, out, _ = run(capsys, "-h")
    assert code == 0 and "encode" in out
    code, out, _ = run(capsys, "encode", "-h")
    assert code == 0 and "--quality" in out
    from vqcodec import __version__
    from vqcodec.bitstream import VERSION
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"vqcodec {__version__} (.vqv format {VERSION})"


def test_quality_zero_is_refused_not_taken_as_the_default(tmp_path, carphone, capsys):
    code, _, err = run(capsys, "encode", carphone, "-o", tmp_path / "o.vqv", "--quality", "0")
    assert code == 1 and "from 1 to 8, got 0" in err and not (tmp_path / "o.vqv").exists()


def test_encode_to_a_video_container_name_is_refused(tmp_path, carphone, capsys):
    code, _, err = run(capsys, "encode", carphone, "-o", tmp_path / "o.mkv")
    assert code == 1 and "writes a .vqv stream" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.mkv").exists()


def test_flags_show_no_value_placeholder_in_the_help(capsys):
    # (the help option's own line still shows typer's placeholder)
    for args, flags in ((["-h"], ("--debug", "--version")), (["decode", "-h"], ("--conceal", "--yes")),
                        (["info", "-h"], ("--json",))):
        code, out, _ = run(capsys, *args)
        lines = [line for line in out.splitlines() if any(f in line for f in flags)]
        assert code == 0 and len(lines) >= len(flags) and not any("<bool>" in line for line in lines), args
