import json
import math
from fractions import Fraction

import numpy as np
import pytest

from conftest import write_clip
from vqcodec.bench import CLASSICS, bd_rate, ms_ssim, parse_qualities, run
from vqcodec.cli import main
from vqcodec.errors import VqvError
from vqcodec.modelfile import load_model
from vqcodec.video import read_frames

R = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
P = np.array([30.0, 33.0, 36.0, 39.0, 42.0])  # 3 dB per doubling of the rate


def test_bd_rate_of_identical_curves_is_zero():
    assert abs(bd_rate(R, P, R, P)) < 1e-9


def test_bd_rate_of_double_rate_is_plus_100():
    assert math.isclose(bd_rate(R, P, 2 * R, P), 100.0, rel_tol=1e-9)


def test_bd_rate_of_one_db_better_on_a_3db_per_doubling_curve():
    assert math.isclose(bd_rate(R, P, R, P + 1.0), (2 ** (-1 / 3) - 1) * 100, rel_tol=1e-6)


def test_bd_rate_with_few_points_and_without_overlap():
    assert math.isclose(bd_rate(R[:3], P[:3], 2 * R[:3], P[:3]), 100.0, rel_tol=1e-9)
    assert bd_rate(R, P, R, P + 50) is None


def test_ms_ssim_is_one_for_identical_and_falls_with_noise():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:144, 0:176]
    img = (128 + 60 * np.sin(x / 9) * np.cos(y / 13)).astype(np.uint8)
    assert ms_ssim(img, img) == pytest.approx(1.0)
    noisy = [np.clip(img + rng.normal(0, s, img.shape), 0, 255).astype(np.uint8) for s in (2, 8, 20)]
    scores = [ms_ssim(img, n) for n in noisy]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


def test_quality_lists():
    assert parse_qualities("1-3,8") == [1, 2, 3, 8]
    with pytest.raises(VqvError):
        parse_qualities("0-9")


def _independent_psnr_yuv(ref, dec):
    """A second, plain implementation: per-frame PSNR of each plane, (6Y+U+V)/8, averaged."""
    vals = []
    for a, b in zip(ref, dec):
        ps = [10 * np.log10(255.0 ** 2 / np.mean((pa.astype(float) - pb.astype(float)) ** 2))
              for pa, pb in ((a.y, b.y), (a.u, b.u), (a.v, b.v))]
        vals.append((6 * ps[0] + ps[1] + ps[2]) / 8)
    return float(np.mean(vals))


def test_x264_figures_agree_with_an_independent_measurement(tmp_path, carphone, model):
    ref = list(read_frames(carphone))
    y4m = write_clip(tmp_path / "ref.y4m", ref)
    nbytes, _ = CLASSICS["x264"].encode(y4m, Fraction(30000, 1001), 28, tmp_path / "x264.mkv")
    stored = list(read_frames(tmp_path / "x264.mkv"))  # decode the written file again, separately
    points, bd = run([carphone], qualities=[2, 8], codecs=["x264"], frames=None, model=model, device="cpu")
    x = [p for p in points if p.codec == "x264" and p.setting == 28][0]
    assert x.psnr_yuv == pytest.approx(_independent_psnr_yuv(ref, stored), abs=1e-9)
    assert x.bpp == pytest.approx(8 * nbytes / (176 * 144 * 12))
    assert (tmp_path / "x264.mkv").stat().st_size > nbytes  # payload only: container bytes not charged
    assert [p.setting for p in points if p.codec == "vqcodec"] == [2, 8]
    assert bd["x264"]["average"] is not None


def test_each_classic_encode_gives_the_same_stream_every_time(tmp_path, carphone_frames, model):
    # in one process libx264 gave 3486 to 3545 bytes for these frames (classic.py); one process per encode
    import torch
    torch.ones(64, 64) @ torch.ones(64, 64)  # PyTorch has run here, as in the bench
    y4m = write_clip(tmp_path / "ref.y4m", carphone_frames)
    for codec in ("x264", "x265"):
        runs = {CLASSICS[codec].encode(y4m, Fraction(30000, 1001), 28, tmp_path / f"{codec}{i}.mkv")[0] for i in range(3)}
        assert len(runs) == 1, (codec, runs)


def test_bench_command_writes_json_and_csv(tmp_path, carphone, capsys):
    code = main(["bench", str(carphone), "--qualities", "4", "--codecs", "x264", "--frames", "4",
                 "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "BD-rate of vqcodec against x264" in out
    d = json.loads((tmp_path / "r.json").read_text())
    keys = {"input", "codec", "setting", "bpp", "kbps", "psnr_y", "psnr_yuv", "ms_ssim", "encode_fps", "decode_fps"}
    assert keys <= set(d["results"][0]) and set(d["bd_rate"]) == {"x264"}
    assert {r["codec"] for r in d["results"]} == {"vqcodec", "x264"}
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("input,codec,setting")


def test_bench_rejects_unknown_codecs(tmp_path, carphone, capsys):
    code = main(["bench", str(carphone), "--codecs", "mpeg1", "--qualities", "4"])
    assert code == 1 and "unknown mpeg1" in capsys.readouterr().err


def test_bench_measures_another_model_as_an_anchor(tmp_path, carphone, capsys, model):
    import torch
    from vqcodec.modelfile import save_model
    with torch.no_grad():  # a worse model: its decoder adds a bias
        m = load_model()
        m.net.decoder[0].proj.bias.add_(0.003)
    save_model(tmp_path / "older.pt", m.net, m.tables)
    code = main(["bench", str(carphone), "--qualities", "2-5", "--codecs", "x264", "--frames", "4",
                 "--compare-model", str(tmp_path / "older.pt"), "--json", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads((tmp_path / "r.json").read_text())
    assert set(d["bd_rate"]) == {"x264", "model:older"}
    assert d["bd_rate"]["model:older"]["average"] < 0  # the shipped model needs fewer bits
    assert "BD-rate of vqcodec against model:older" in out
