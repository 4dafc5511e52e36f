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


def test_the_rate_comes_from_the_timestamps_in_any_order():
    from vqcodec.video import rate_from_timestamps
    ms = lambda values: [Fraction(v, 1000) for v in values]
    # Matroska's millisecond stamps of 29.97 fps, and decode-order stamps (an AVI with B-frames)
    tick = Fraction(1, 1000)
    ntsc = ms([round(i * 1001 / 30) for i in range(31)])  # one second of 29.97 fps, in milliseconds
    assert rate_from_timestamps(ntsc, Fraction(25), tick) == (Fraction(30000, 1001), None)
    assert rate_from_timestamps(ms([0, 42, 83]), Fraction(24), tick) == (Fraction(24), None)  # few frames: 1 tick off
    assert rate_from_timestamps(ms([0, 67, 133, 200]), Fraction(15), tick) == (Fraction(15), None)  # the header fits
    order = [Fraction(t, 50) for t in (2, 6, 8, 10, 12, 4, 14, 16, 18, 20)]  # ticks of a 50 fps base
    assert rate_from_timestamps(order, Fraction(50))[0] == 25
    # one or repeated stamps: the container's rate
    assert rate_from_timestamps([Fraction(0)], Fraction(50)) == (Fraction(50), None)
    assert rate_from_timestamps(ms([0, 40, 40, 80]), Fraction(50))[0] == 50
    # a variable rate: made constant over the same duration, with a warning
    rate, warning = rate_from_timestamps(ms([0, 40, 80, 200, 240]), Fraction(25))
    assert rate == Fraction(4, Fraction(240, 1000)) and "variable frame rate" in warning


def test_a_source_whose_header_lies_is_read_at_its_true_rate(tmp_path, carphone_frames):
    from conftest import write_held_avi
    from vqcodec.video import VideoSource
    path = write_held_avi(tmp_path / "held.avi", carphone_frames[:10])
    assert probe(path).fps == 50 and probe(path).frames == 19  # what the header says
    with VideoSource(path) as source:
        assert len(list(source.frames())) == 10
        assert source.timing() == (Fraction(25), None)


def test_seek_and_frames_pick_a_part_and_the_input_is_opened_once(tmp_path, carphone_frames):
    from vqcodec.video import VideoSource
    path = write_clip(tmp_path / "a.mkv", carphone_frames, Fraction(25))
    with VideoSource(path, seek=0.2, limit=3) as source:  # 0.2 s at 25 fps: from frame 5
        got = list(source.frames())
        assert source.expected_frames == 3
    assert len(got) == 3 and all(np.array_equal(a.y, b.y) for a, b in zip(got, carphone_frames[5:8]))
    with pytest.raises(InputError, match="--seek"):
        VideoSource(path, seek=-1)


def test_colour_tags_are_read_from_the_source_and_written_to_every_container(tmp_path, carphone_frames):
    import av
    from vqcodec.video import VideoSource
    tags = (1, 1, 1, 1)  # limited range, BT.709
    for ext in (".mkv", ".y4m", ".mp4"):
        path = tmp_path / f"a{ext}"
        w = VideoWriter(path, path, 176, 144, Fraction(25), colour=tags)
        for f in carphone_frames[:2]:
            w.write(f)
        w.close()
        with VideoSource(path) as source:
            list(source.frames())
            assert source.colour[0] == 1, ext  # y4m carries the range only (XCOLORRANGE)
            if ext != ".y4m":
                assert source.colour == tags, ext
    assert b"XCOLORRANGE=LIMITED" in (tmp_path / "a.y4m").read_bytes()[:100]
