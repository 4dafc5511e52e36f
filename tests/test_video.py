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


def test_centre_crop_cuts_on_even_lines_and_keeps_small_frames(carphone_frames):
    from vqcodec.video import centre_crop
    f = carphone_frames[0]
    c = centre_crop(f, 64, 100)
    assert (c.height, c.width) == (64, 100) and c.u.shape == (32, 50)
    i, j = (144 - 64) // 4 * 2, (176 - 100) // 4 * 2
    assert np.array_equal(c.y, f.y[i:i + 64, j:j + 100]) and np.array_equal(c.u, f.u[i // 2:i // 2 + 32, j // 2:j // 2 + 50])
    assert centre_crop(f, 200, 200) is f


def test_read_window_seeks_to_the_same_frames_as_decoding_from_the_start(carphone, tmp_path):
    from vqcodec.video import count_frames, read_window
    ref = list(read_frames(carphone, start=5, limit=4))
    got = read_window(carphone, 5, 4)
    assert len(got) == 4 and all(np.array_equal(a.y, b.y) for a, b in zip(ref, got))
    assert count_frames(carphone) == 12
    assert len(read_window(carphone, 10, 8)) == 2  # the clip ends first
