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
