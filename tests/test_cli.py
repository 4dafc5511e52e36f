import json

import numpy as np

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
    assert "decoded 12 frames" in out and "concealed 4 of 12 frames (33 %)" in out and "segments 1 (frames 4-7" in out
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
    monkeypatch.setattr(encoder.SegmentCoder, "decide", interrupt)  # simulated Ctrl-C mid-encode
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


# -- the shell: pipes, FIFOs, true timing, part of a video (real processes, real pipes) ----------
def vq(*args, stdin=None, input_bytes=None):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "vqcodec", *map(str, args)], stdin=stdin, input=input_bytes,
                          capture_output=True, timeout=300)


def y4m_frames(data: bytes):
    import io
    return list(read_frames_from(io.BytesIO(data)))


def read_frames_from(f):
    import av
    from vqcodec.video import frame_from_av
    with av.open(f) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            yield frame_from_av(frame)


def test_encode_from_a_pipe_to_a_pipe_and_decode_from_a_pipe_to_a_pipe(tmp_path, carphone_frames):
    from conftest import write_clip
    src = write_clip(tmp_path / "src.y4m", carphone_frames[:6])
    # ffmpeg -i in -f yuv4mpegpipe - | vqcodec encode - -o - > out.vqv
    enc = vq("encode", "-", "-o", "-", "-q", "2", input_bytes=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout[:4] == b"VQVC" and b"encoded 6 frames" in enc.stderr  # the summary on stderr
    (tmp_path / "piped.vqv").write_bytes(enc.stdout)
    info = json.loads(vq("info", tmp_path / "piped.vqv", "--json").stdout)
    assert info["streamed"] and info["frames"] == 6 and info["fps"] == "30000/1001"
    # the same encode to a file: the same segments, a header with its counts, no trailer
    assert vq("encode", src, "-o", tmp_path / "file.vqv", "-q", "2").returncode == 0
    file_bytes = (tmp_path / "file.vqv").read_bytes()
    from vqcodec import bitstream as bs
    assert enc.stdout[bs.HEADER_SIZE:-bs.TRAILER_SIZE] == file_bytes[bs.HEADER_SIZE:]
    # cat piped.vqv | vqcodec decode - -o - | (a y4m reader), and to a file: the same pictures
    dec = vq("decode", "-", "-o", "-", input_bytes=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout.startswith(b"YUV4MPEG2") and b"decoded 6 frames" in dec.stderr
    assert vq("decode", tmp_path / "file.vqv", "-o", tmp_path / "file.y4m").returncode == 0
    piped, filed = y4m_frames(dec.stdout), list(read_frames_from(str(tmp_path / "file.y4m")))
    assert len(piped) == 6 and all(np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v) for a, b in zip(piped, filed))
    # --format mkv to a pipe; mp4 cannot be written there
    mkv = vq("decode", tmp_path / "file.vqv", "-o", "-", "--format", "mkv")
    assert mkv.returncode == 0 and len(y4m_frames(mkv.stdout)) == 6
    bad = vq("decode", tmp_path / "file.vqv", "-o", "-", "--format", "mp4")
    assert bad.returncode == 1 and b"cannot seek back" in bad.stderr and bad.stdout == b""


def test_a_cut_stream_decodes_its_whole_segments(tmp_path, carphone_frames):
    from conftest import write_clip
    src = write_clip(tmp_path / "src.y4m", carphone_frames[:8])
    enc = vq("encode", "-", "-o", "-", "--segment", "4", input_bytes=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    dec = vq("decode", "-", "-o", "-", input_bytes=enc.stdout[:-40])  # trailer and part of segment 1 lost
    assert dec.returncode == 0, dec.stderr
    assert len(y4m_frames(dec.stdout)) == 4


def test_a_fifo_is_written_never_replaced(tmp_path, carphone):
    import os
    import threading
    vqv = tmp_path / "a.vqv"
    assert vq("encode", carphone, "-o", vqv, "-q", "1").returncode == 0
    for target, args in ((tmp_path / "out.y4m", ("decode", vqv)), (tmp_path / "out.vqv", ("encode", carphone))):
        os.mkfifo(target)
        got = []
        reader = threading.Thread(target=lambda: got.append(open(target, "rb").read()))
        reader.start()
        run_ = vq(*args, "-o", target, "-y")
        reader.join(60)
        assert run_.returncode == 0, run_.stderr
        assert target.is_fifo() and got and len(got[0]) > 1000


def test_a_video_whose_header_lies_decodes_to_its_true_duration(tmp_path, carphone_frames):
    import av
    from conftest import write_held_avi
    src = write_held_avi(tmp_path / "held.avi", carphone_frames[:10])  # 10 frames at 25 fps, header: 50 fps
    enc = vq("encode", src, "-o", tmp_path / "a.vqv", "-q", "1")
    assert enc.returncode == 0, enc.stderr
    assert b"encoded 10 frames" in enc.stdout
    assert vq("decode", tmp_path / "a.vqv", "-o", tmp_path / "a.mkv").returncode == 0
    with av.open(str(tmp_path / "a.mkv")) as c:
        s = c.streams.video[0]
        times = [f.time for f in c.decode(s)]
    assert len(times) == 10 and abs((times[-1] + 1 / 25) - 10 / 25) < 1 / 25  # 0.4 s, as the source plays
    info = json.loads(vq("info", tmp_path / "a.vqv", "--json").stdout)
    assert info["fps"] == "25/1" and info["kbps"] == pytest.approx(8 * info["bytes"] / 0.4 / 1000, rel=1e-3)


def test_frames_and_seek_encode_part_of_a_video(tmp_path, carphone, capsys):
    code, out, err = run(capsys, "encode", carphone, "-o", tmp_path / "a.vqv", "--seek", "0.1", "--frames", "4")
    assert code == 0, err
    assert out.startswith("encoded 4 frames")
    code, out, err = run(capsys, "encode", carphone, "-o", tmp_path / "b.vqv", "--frames", "0")
    assert code == 1 and "--frames" in err


@pytest.mark.parametrize("src_ext", [".mp4", ".mkv"])
def test_audio_travels_in_the_vqv_and_comes_back_in_sync(tmp_path, carphone_frames, src_ext):
    from conftest import stream_durations, write_clip_with_audio
    src = write_clip_with_audio(tmp_path / f"src{src_ext}", carphone_frames[:12])  # 0.48 s at 25 fps
    enc = vq("encode", src, "-o", tmp_path / "a.vqv", "-q", "1")
    assert enc.returncode == 0, enc.stderr
    assert b"audio copied: 1 stream(s)" in enc.stdout
    info = json.loads(vq("info", tmp_path / "a.vqv", "--json").stdout)
    assert [a["codec"] for a in info["audio"]] == ["aac 48000 Hz stereo"] and info["audio"][0]["packets"] >= 20
    source = stream_durations(src)
    for out in ("a.mkv", "a.mp4"):
        dec = vq("decode", tmp_path / "a.vqv", "-o", tmp_path / out)
        assert dec.returncode == 0, dec.stderr
        assert b"with 1 audio stream(s)" in dec.stdout
        got = stream_durations(tmp_path / out)
        assert abs(got["video"] - source["video"]) <= 1 / 25 + 1e-6, out
        assert abs(got["audio"] - source["audio"]) <= 1 / 25, out
    # y4m holds no audio: said so; --no-audio drops it at the source
    dec = vq("decode", tmp_path / "a.vqv", "-o", tmp_path / "a.y4m")
    assert dec.returncode == 0 and b"warning: left out 1 audio stream(s)" in dec.stderr
    enc = vq("encode", src, "-o", tmp_path / "b.vqv", "-q", "1", "--no-audio")
    assert enc.returncode == 0 and b"audio" not in enc.stdout
    assert json.loads(vq("info", tmp_path / "b.vqv", "--json").stdout)["audio"] == []
    assert (tmp_path / "b.vqv").stat().st_size < (tmp_path / "a.vqv").stat().st_size


def test_audio_survives_a_pipe_and_a_damaged_audio_packet(tmp_path, carphone_frames):
    from conftest import stream_durations, write_clip_with_audio
    from vqcodec import bitstream as bs
    src = write_clip_with_audio(tmp_path / "src.mkv", carphone_frames[:8])
    enc = vq("encode", "-", "-o", "-", "-q", "1", "--segment", "4", input_bytes=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    data = bytearray(enc.stdout)
    first = data.find(bs.AUDIO_PACKET_MAGIC)
    data[first + bs.AUDIO_PACKET_HEADER_SIZE + 1] ^= 0xFF  # one audio packet's data
    (tmp_path / "a.vqv").write_bytes(bytes(data))
    dec = vq("decode", tmp_path / "a.vqv", "-o", tmp_path / "a.mkv")
    assert dec.returncode == 0, dec.stderr  # the video is whole; one packet of audio is lost
    got = stream_durations(tmp_path / "a.mkv")
    assert abs(got["video"] - 7 / 25) < 1e-6 and got["audio"] > 0.2  # (the last frame starts at 7/25 s)


def test_a_text_file_is_refused_though_ffmpeg_would_draw_it(tmp_path, capsys):
    from pathlib import Path
    notes = tmp_path / "notes.txt"
    notes.write_text(Path(__file__).with_name("conftest.py").read_text())  # FFmpeg's tty demuxer takes it
    code, _, err = run(capsys, "encode", notes, "-o", tmp_path / "n.vqv")
    assert code == 1 and "is text, not a video" in err and not (tmp_path / "n.vqv").exists()


def test_dev_stdin_works_as_a_path_for_both_commands(tmp_path, carphone_frames):
    from conftest import write_clip
    src = write_clip(tmp_path / "src.mkv", carphone_frames[:4])  # opened once: a pipe cannot be read twice
    enc = vq("encode", "/dev/stdin", "-o", tmp_path / "a.vqv", "-q", "1", input_bytes=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    dec = vq("decode", "/dev/stdin", "-o", tmp_path / "a.y4m", input_bytes=(tmp_path / "a.vqv").read_bytes())
    assert dec.returncode == 0, dec.stderr  # (it was "empty file": a pipe's size is 0)
    assert len(list(read_frames_from(str(tmp_path / "a.y4m")))) == 4


def test_audio_a_container_cannot_hold_is_re_encoded_to_aac(tmp_path, carphone_frames):
    import av
    from conftest import stream_durations, write_clip_with_audio
    src = write_clip_with_audio(tmp_path / "src.mkv", carphone_frames[:12], codec="libopus")
    assert vq("encode", src, "-o", tmp_path / "a.vqv", "-q", "1").returncode == 0
    dec = vq("decode", tmp_path / "a.vqv", "-o", tmp_path / "a.avi")  # AVI holds no Opus
    assert dec.returncode == 0, dec.stderr
    assert b"re-encoded opus audio to AAC" in dec.stderr
    with av.open(str(tmp_path / "a.avi")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    got, source = stream_durations(tmp_path / "a.avi"), stream_durations(src)
    # longer by AAC's encoder delay (1,024 samples) and its frames' padding, which AVI cannot trim
    assert 0 <= got["audio"] - source["audio"] <= 3 * 1024 / 48000
