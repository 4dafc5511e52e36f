import math

import numpy as np

from vqcodec.metrics import PSNR_CAP, frame_quality, psnr, sequence_quality
from vqcodec.video import Frame


def frame(val_y=100, val_c=128, h=8, w=8):
    return Frame(np.full((h, w), val_y, np.uint8), np.full((h // 2, w // 2), val_c, np.uint8),
                 np.full((h // 2, w // 2), val_c, np.uint8))


def test_identical_frames_give_the_cap():
    assert psnr(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)) == PSNR_CAP


def test_hand_computed_mse():
    a = np.zeros((2, 2), np.uint8)
    b = np.array([[2, 0], [0, 0]], np.uint8)  # MSE = 4 / 4 = 1
    assert math.isclose(psnr(a, b), 10 * math.log10(255 ** 2), rel_tol=1e-12)


def test_psnr_yuv_weights_six_one_one():
    q = frame_quality(frame(100, 128), frame(101, 130))  # MSE_Y = 1, MSE_U = MSE_V = 4
    py, pc = 10 * math.log10(255 ** 2), 10 * math.log10(255 ** 2 / 4)
    assert math.isclose(q.psnr_yuv, (6 * py + 2 * pc) / 8, rel_tol=1e-12)


def test_sequence_is_the_mean_of_frames():
    ref = [frame(100), frame(100)]
    test = [frame(101), frame(102)]
    q = sequence_quality(ref, test)
    assert math.isclose(q.psnr_y, (psnr(ref[0].y, test[0].y) + psnr(ref[1].y, test[1].y)) / 2)
