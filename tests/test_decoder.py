"""The decoder: exact pictures on every machine, the conformance streams, a module of its own."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CARPHONE, resize_frames
from vqcodec import bitstream as bs
from vqcodec.decoder import SegmentDecoder, frames_from_bytes
from vqcodec.video import read_frames

CONFORMANCE = Path(__file__).parent / "conformance"
ROOT = Path(__file__).parent.parent


def _md5(frames) -> str:
    h = hashlib.md5()
    for f in frames:
        for p in (f.y, f.u, f.v):
            h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


def _manifest() -> dict:
    return json.loads((CONFORMANCE / "MD5SUMS.json").read_text())


# -- conformance ------------------------------------------------------------------------------------
def test_every_conformance_stream_decodes_to_its_md5(model):
    m = _manifest()
    assert m["format"] == bs.VERSION, "the conformance streams are another format's: scripts/conformance.py"
    assert m["model"] == model.fingerprint.hex()
    for name, entry in m["streams"].items():
        frames = list(frames_from_bytes((CONFORMANCE / f"{name}.vqv").read_bytes(), model, conceal=False, concealed=[]))
        assert len(frames) == entry["frames"], name
        assert _md5(frames) == entry["md5"], name


def test_the_conformance_streams_use_every_mode_of_the_format(model):
    from vqcodec.entropy import INTER, INTRA, NEAR_INTER, NEAR_SKIP, SKIP, fresh_modes
    from vqcodec.motion import ZERO
    dec = SegmentDecoder(model, "cpu")
    modes, seen = set(), set()
    for name in _manifest()["streams"]:
        data = (CONFORMANCE / f"{name}.vqv").read_bytes()
        header = bs.complete_streamed(data, bs.unpack_header(data[:bs.HEADER_SIZE]))
        segments = list(bs.read_segments(data, header))
        if header.streamed:
            seen.add("streamed")
        if header.fec:
            seen.add("fec")
        if len(segments) > 1:
            seen.add("several segments")
        if header.quality == 0:
            seen.add("rate control")
        if header.width % 2 or header.height % 2:
            seen.add("odd size")
        if header.frames == 1:
            seen.add("still")
        h, w = -(-header.height // 4), -(-header.width // 4)
        for seg in segments:
            seen.add(f"quality {seg.quality}")
            words = np.frombuffer(seg.payload, dtype="<u4").astype(np.uint32)
            groups = -(-seg.frames // 2)
            grids = []
            filt, decoded = dec.coder.decode_segment(words, groups, (seg.stages, h, w), (-(-h // 4), -(-w // 4)),
                                                     seg.quality, per_group=header.fec > 0, grids=grids)
            if any(np.any(f) for f in filt):
                seen.add("output filter")
            for gi, (g, m, mv, coefs, fresh) in enumerate(decoded):
                later = gi > 0
                if fresh and later:
                    seen.add("refresh")
                if later and not fresh:
                    modes.update(np.unique(m).tolist())
                    if (mv != ZERO).any():
                        seen.add("motion")
                    if (m == SKIP).all() and (mv == ZERO).all():
                        seen.add("static group")
                if fresh:
                    modes.update(np.unique(fresh_modes(m)).tolist())
            if any(grids):
                seen.add("coarse grid")
    assert {INTRA, SKIP, INTER, NEAR_SKIP, NEAR_INTER} <= modes
    assert {"several segments", "rate control", "odd size", "still", "output filter", "refresh", "motion",
            "static group", "quality 8", "streamed", "fec", "coarse grid"} <= seen, seen


def test_the_conformance_script_refuses_while_the_format_has_not_moved(tmp_path):
    import shutil
    copy = tmp_path / "conformance"  # (a copy: were the format to have moved, the script would rewrite it)
    shutil.copytree(ROOT / "tests" / "conformance", copy)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "conformance.py"), "--dir", str(copy)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "format" in out.stderr


# -- exact on every machine ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_segments(tmp_path_factory, model):
    """A 320x240 clip of 24 real frames (carphone, tiled) in three segments at quality 4: long
    enough that the float decoder drifted (different pictures under other CPU kernels)."""
    from vqcodec.encoder import encode_frames
    frames = list(read_frames(CARPHONE))
    frames = resize_frames(frames + frames[::-1], 320, 240)
    path = tmp_path_factory.mktemp("exact") / "clip.vqv"
    encode_frames(frames, 25, path, quality=4, model=model, device="cpu", segment_frames=8)
    return path


SETTINGS = [{}, {"OMP_NUM_THREADS": "1"}, {"ATEN_CPU_CAPABILITY": "default"}, {"ONEDNN_MAX_CPU_ISA": "SSE41"},
            {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
            {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}]


def test_the_pictures_are_the_same_under_every_cpu_kernel_and_thread_count(two_segments, tmp_path, model):
    want = _md5(frames_from_bytes(two_segments.read_bytes(), model, conceal=False, concealed=[]))
    code = ("import hashlib, sys; import numpy as np; from pathlib import Path; "
            "from vqcodec.decoder import frames_from_bytes; from vqcodec.modelfile import load_model; "
            "h = hashlib.md5(); "
            "[h.update(np.ascontiguousarray(p).tobytes()) for f in frames_from_bytes(Path(sys.argv[1]).read_bytes(), "
            "load_model(), conceal=False, concealed=[]) for p in (f.y, f.u, f.v)]; print(h.hexdigest())")
    got = {}
    for env in SETTINGS:
        out = subprocess.run([sys.executable, "-c", code, str(two_segments)], capture_output=True, text=True,
                             env={**os.environ, **env}, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        got[json.dumps(env)] = out.stdout.strip()
    assert set(got.values()) == {want}, got


def test_the_batch_size_and_thread_count_in_process_change_nothing(two_segments, tmp_path, model):
    import torch
    from vqcodec.decoder import decode_file
    want = _md5(frames_from_bytes(two_segments.read_bytes(), model, conceal=False, concealed=[]))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        decode_file(two_segments, tmp_path / "one.y4m", model=model, device="cpu", batch=1)
    finally:
        torch.set_num_threads(threads)
    assert _md5(read_frames(tmp_path / "one.y4m")) == want


def test_the_encoders_reconstruction_is_the_decoders_output(model):
    # the pictures the encoder decided against (before the output filter, and after it) are the
    # decoded ones, bit for bit
    from vqcodec import postfilter
    from vqcodec.encoder import SegmentCoder, target_steps
    from vqcodec.reconstruct import to_frames
    frames = list(read_frames(CARPHONE))[:8]
    coder = SegmentCoder(model, "cpu")
    for quality in (2, 7):
        latents = []
        sym = coder.decide(coder.analyse(frames, target_steps(quality)), quality, coder.grid(frames), latents,
                           size=(176, 144))
        ours = [f for z in latents for f in postfilter.filter_frames(
            to_frames(*(p[None] for p in coder.planes(z, coder.grid(frames))), 176, 144, 2), sym.filter)]
        payload, _ = coder.pack(sym)
        header = bs.Header(model.fingerprint, 176, 144, 25, 8, quality, sym.indices.shape[1], 2, 8, 4, 1)
        theirs = SegmentDecoder(model, "cpu").decode(payload, header, 8, quality, sym.indices.shape[1])
        assert _md5(ours) == _md5(theirs)


# -- a module of its own ---------------------------------------------------------------------------
def test_the_decoder_imports_nothing_of_the_encoders():
    code = ("import sys, vqcodec.decoder; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('vqcodec'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    loaded = set(out.stdout.split())
    assert "vqcodec.decoder" in loaded and "vqcodec.reconstruct" in loaded
    assert not loaded & {"vqcodec.encoder", "vqcodec.search", "vqcodec.filterfit", "vqcodec.tablefit",
                         "vqcodec.codec", "vqcodec.train", "vqcodec.bench"}, loaded


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_decodes_every_conformance_stream_to_the_same_md5(model):
    from vqcodec.modelfile import load_model
    on_gpu = load_model(device="cuda")
    for name, entry in _manifest()["streams"].items():
        frames = frames_from_bytes((CONFORMANCE / f"{name}.vqv").read_bytes(), on_gpu, device="cuda", conceal=False,
                                   concealed=[])
        assert _md5(frames) == entry["md5"], name
