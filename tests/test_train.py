import torch

from vqcodec.codec import decode_file, encode_file
from vqcodec.metrics import sequence_quality
from vqcodec.model import ModelConfig, VQVAE
from vqcodec.modelfile import load_model, save_model
from vqcodec.train import CropSampler, fit, fit_entropy_tables, load_clip, yuv_mse
from vqcodec.video import read_frames


def test_a_short_run_trains_and_gives_a_working_codec_model(tmp_path, carphone):
    torch.manual_seed(0)
    clip = load_clip(carphone, 12)
    sampler = CropSampler([clip], frames=2, size=32, seed=0)
    net = VQVAE(ModelConfig(stages=3, codes=32, hidden=16))
    y, u, v = sampler.batch(8)
    logs = []
    assert fit(net, sampler, steps=25, batch=4, log=logs.append) == 25
    assert logs and logs[0]["step"] == 0
    with torch.no_grad():
        after = float(yuv_mse(net(y, u, v, stages=3), y, u, v))
    assert after < 0.004  # PSNR above 24 dB on the training crops with 3 x 5 bits

    tables = fit_entropy_tables(net, [clip], segment_frames=4)
    assert tables.shape == (3, 33, 32) and int(tables.min()) >= 1
    save_model(tmp_path / "m.pt", net, tables, {"steps": 25})
    model = load_model(tmp_path / "m.pt")
    encode_file(carphone, tmp_path / "a.vqv", model=model, quality=8)
    decode_file(tmp_path / "a.vqv", tmp_path / "a.y4m", model=tmp_path / "m.pt")
    assert sequence_quality(read_frames(carphone), read_frames(tmp_path / "a.y4m")).psnr_yuv > 24.0
