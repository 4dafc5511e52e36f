from fractions import Fraction

import numpy as np
import pytest

from conftest import resize_frames, write_clip
from vqcodec.errors import InputError, VqvError
from vqcodec.video import VideoWriter, probe, read_frames


@pytest.mark.parametrize("ext, size", [(".y4m", (171, 139)), (".mkv", (171, 139)), (".mp4", (170, 138))])
def test_containers_give_back_exact_planes(tmp_path, carphone_frames, ext, size):
    # odd sizes: chroma is ceil(W/2) x ceil(H/2); x264 (.mp4) only takes even sizes
    frames = resize_frames(carphone_frames[:4], *size)
    path = write_clip(tmp_path / f"a{ext}", frames, Fraction(25))
    back = list(read_frames(path))
    assert len(back) == 4
    assert back[0].u.shape == ((size[1] + 1) // 2, (size[0] + 1) // 2)
    for a, b in zip(frames, back):
        assert np.array_equal(a.y, b.y) and np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (*size, Fraction(25))


def test_mp4_refuses_odd_sizes_with_a_clear_message(tmp_path):
    with pytest.raises(VqvError, match="even width and height"):
        VideoWriter(tmp_path / "a.mp4", tmp_path / "a.mp4", 171, 139, Fraction(25))


def test_other_pixel_formats_are_converted(tmp_path):
    import av
    path = tmp_path / "rgb.mkv"
    c = av.open(str(path), "w")
    s = c.add_stream("ffv1", rate=10)
    s.width, s.height, s.pix_fmt = 32, 16, "bgr0"
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :, 1] = 200
    for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    f = next(read_frames(path))
    assert f.y.shape == (16, 32) and f.u.shape == (8, 16) and f.y.mean() > 100


def test_not_a_video_is_one_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(InputError, match="not a video"):
        list(read_frames(p))
