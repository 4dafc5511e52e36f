import shutil

import pytest
import torch

from vqcodec.cli import main
from vqcodec.codec import decode_file, encode_file
from vqcodec.errors import VqvError
from vqcodec.metrics import sequence_quality
from vqcodec.model import ModelConfig
from vqcodec.modelfile import load_model
from vqcodec.train import CropStream, TrainOptions, find_clips, train_model
from vqcodec.video import read_frames

from conftest import resize_frames, write_clip

SMALL = ModelConfig(stages=3, codes=32, hidden=16)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, carphone_frames):
    """Two small real clips in nested folders, and a file that is not a video."""
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    shutil.copy(__import__("conftest").CARPHONE, root / "carphone.mkv")
    write_clip(root / "sub" / "wide.mkv", resize_frames(carphone_frames[::-1], 96, 48))
    (root / "README.txt").write_text("not a video")
    return root


def options(**kw):
    base = dict(steps=20, batch=4, crop=(32, 32), log_every=5, checkpoint_every=10, table_frames=8)
    base.update(kw)
    return TrainOptions(**base)


def test_find_clips_is_recursive_and_skips_other_files(clips):
    found = find_clips(clips)
    assert [p.path.split("/")[-1] for p in found] == ["carphone.mkv", "wide.mkv"]
    assert found[0].frames == 12 and (found[1].width, found[1].height) == (96, 48)


def test_the_data_stream_is_a_function_of_the_step(clips):
    sources = find_clips(clips)
    a = CropStream(sources, batch=3, crop=(32, 32), frames=4, seed=1)
    b = CropStream(sources, batch=3, crop=(32, 32), frames=4, seed=1, start=13)
    it = iter(a)
    batches = [next(it) for _ in range(14)]
    resumed = next(iter(b))
    assert all(torch.equal(x, y) for x, y in zip(batches[13], resumed))
    assert batches[0][0].shape == (3, 4, 32, 32) and batches[0][1].shape == (3, 4, 16, 16)
    loader = torch.utils.data.DataLoader(a, batch_size=None, num_workers=2)
    parallel = [x for _, x in zip(range(6), loader)]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(batches, parallel))
    other = CropStream(sources, batch=3, crop=(32, 32), frames=4, seed=2)
    assert not torch.equal(next(iter(other))[0], batches[0][0])


def test_a_short_cpu_run_gives_a_model_that_codes(tmp_path, clips, carphone, capsys):
    out = tmp_path / "m.pt"
    code = main(["train", str(clips), "-o", str(out), "--steps", "30", "--batch", "4", "--crop", "32x32",
                 "--stages", "3", "--hidden", "16", "--val", str(clips), "--val-every", "10", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("trained 30 steps") and "validation depth 1" in captured.out
    assert "validation at step 10" in captured.err and "perplexity" in captured.err
    model = load_model(out)
    assert model.config.stages == 3 and model.config.hidden == 16 and model.meta["steps"] == 30
    assert model.tables is not None and model.tables[0].shape[0] == 2  # the VQ stages the codec codes
    encode_file(carphone, tmp_path / "a.vqv", model=model, quality=8)
    decode_file(tmp_path / "a.vqv", tmp_path / "a.y4m", model=out)
    assert sequence_quality(read_frames(carphone), read_frames(tmp_path / "a.y4m")).psnr_yuv > 24.0

    code = main(["info", "--model", str(out), "--json"])
    d = __import__("json").loads(capsys.readouterr().out)
    assert code == 0 and d["model"] == model.fingerprint.hex() and d["architecture"]["stages"] == 3
    assert d["steps"] == 30 and d["train"]["crop"] == [32, 32]


def test_an_interrupted_run_resumes_exactly(tmp_path, clips):
    torch.manual_seed(123)  # the run seeds itself: outside state must not matter
    whole = train_model(clips, tmp_path / "a.pt", options=options(), config=SMALL, device="cpu")
    assert whole.finished and whole.step == 20

    def crash(record):
        if record["step"] == 15:  # after the checkpoint at step 10
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_model(clips, tmp_path / "b.pt", options=options(), config=SMALL, device="cpu", log=crash)
    assert not (tmp_path / "b.pt").exists() and torch.load(tmp_path / "b.ckpt", weights_only=True)["step"] == 10
    torch.manual_seed(7)
    resumed = train_model(clips, tmp_path / "b.pt", options=options(), resume=tmp_path / "b.ckpt", device="cpu")
    assert resumed.finished and resumed.step == 20
    a, b = load_model(tmp_path / "a.pt"), load_model(tmp_path / "b.pt")
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.fingerprint == b.fingerprint


def test_a_time_limit_stops_at_a_checkpoint(tmp_path, clips):
    r = train_model(clips, tmp_path / "m.pt", options=options(minutes=0.0), config=SMALL, device="cpu")
    assert not r.finished and r.step == 0 and "--resume" in r.summary()
    assert (tmp_path / "m.ckpt").exists() and not (tmp_path / "m.pt").exists()


def test_growing_the_quantizer_keeps_the_old_stages(tmp_path, clips):
    train_model(clips, tmp_path / "a.pt", options=options(steps=5), config=SMALL, device="cpu")
    grown = train_model(clips, tmp_path / "b.pt", options=options(steps=1, lr=0.0),
                        config=ModelConfig(stages=5, codes=32, hidden=16), init=tmp_path / "a.pt", device="cpu")
    a, b = load_model(tmp_path / "a.pt").net.quantizer, load_model(grown.model).net.quantizer
    assert b.codebooks.shape[0] == 5
    # lr 0: the convs stay; EMA moves the codebooks a little in one step, k-means seeded stages 3-4
    assert torch.allclose(a.codebooks, b.codebooks[:3], atol=0.05)
    assert b.codebooks[3:].abs().sum() > 0
    with pytest.raises(VqvError, match="cannot start"):
        train_model(clips, tmp_path / "c.pt", options=options(steps=1), config=ModelConfig(stages=3, codes=64),
                    init=tmp_path / "a.pt", device="cpu")


@pytest.mark.parametrize("args, message", [
    (["train", "{empty}", "-o", "{out}"], "no video"),
    (["train", "{missing}", "-o", "{out}"], "not a folder"),
    (["train", "{clips}", "-o", "{out}", "--crop", "big"], "--crop must"),
    (["train", "{clips}", "-o", "{out}", "--crop", "30x30"], "multiples of 8"),
    (["train", "{clips}", "-o", "{out}", "--frames", "3"], "multiple of the model's group"),
    (["train", "{clips}", "-o", "{out}", "--resume", "{clips}/README.txt"], "not a vqcodec checkpoint"),
    (["info"], "one of them"),
])
def test_bad_training_input_is_one_line(tmp_path, clips, capsys, args, message):
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", "missing": tmp_path / "nope", "clips": clips, "out": tmp_path / "m.pt"}
    code = main([a.format(**names) for a in args] + (["--steps", "2"] if args[0] == "train" else []))
    err = capsys.readouterr().err
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_torchrun_trains_the_same_command_on_two_processes(tmp_path, clips):
    import os
    import subprocess
    import sys
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "vqcodec", "train", str(clips), "-o", str(tmp_path / "m.pt"), "--steps", "6", "--batch", "2",
           "--crop", "32x32", "--stages", "3", "--hidden", "16", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "trained 6 steps" in p.stdout and "rank 1: 6 steps done" in p.stdout
    model = load_model(tmp_path / "m.pt")
    assert model.meta["world"] == 2 and model.config.stages == 3


def test_the_optional_ms_ssim_term_changes_the_loss_not_the_pipeline(tmp_path, clips):
    logs_mse, logs_ssim = [], []
    train_model(clips, tmp_path / "a.pt", options=options(steps=5, log_every=5), config=SMALL, device="cpu",
                log=logs_mse.append)
    train_model(clips, tmp_path / "b.pt", options=options(steps=5, log_every=5, ms_ssim=0.5), config=SMALL,
                device="cpu", log=logs_ssim.append)
    mse = [r for r in logs_mse if "loss" in r][-1]
    ssim = [r for r in logs_ssim if "loss" in r][-1]
    assert ssim["loss"] > mse["loss"]  # 0.5 * (1 - MS-SSIM) is added to the same reconstruction loss
    assert load_model(tmp_path / "b.pt").meta["train"]["ms_ssim"] == 0.5
