from fractions import Fraction

import numpy as np
import pytest
import torch

from vqcodec import bitstream as bs
from vqcodec.codec import decode_file, encode_file, inspect, stages_for_quality
from vqcodec.errors import FormatError, ModelMismatch, VqvError
from vqcodec.metrics import sequence_quality
from vqcodec.modelfile import load_model, save_model
from vqcodec.video import probe, read_frames


@pytest.mark.parametrize("size, n, fps", [((176, 144), 12, Fraction(30000, 1001)), ((171, 139), 5, Fraction(25)),
                                           ((630, 340), 3, Fraction(24))])
def test_round_trip_keeps_count_size_and_rate(tmp_path, make_clip, model, size, n, fps):
    src = make_clip(*size, n, fps=fps)
    rep = encode_file(src, tmp_path / "a.vqv", model=model, segment_frames=4)
    assert (rep.frames, rep.width, rep.height) == (n, *size)
    assert rep.bytes == (tmp_path / "a.vqv").stat().st_size
    out = tmp_path / "b.mkv"
    decode_file(tmp_path / "a.vqv", out, model=model)
    info = probe(out)
    assert (info.width, info.height, info.fps) == (*size, fps)
    ref, back = list(read_frames(src)), list(read_frames(out))
    assert len(back) == n
    assert sequence_quality(ref, back).psnr_yuv > 25.0


def test_default_quality_reaches_30_db_and_quality_orders_psnr_and_size(tmp_path, carphone, model):
    ref = list(read_frames(carphone))
    results = []
    for q in (1, 4, 8):
        rep = encode_file(carphone, tmp_path / f"{q}.vqv", quality=q, model=model)
        decode_file(tmp_path / f"{q}.vqv", tmp_path / f"{q}.y4m", model=model)
        results.append((rep.bytes, sequence_quality(ref, read_frames(tmp_path / f"{q}.y4m")).psnr_yuv))
    (b1, p1), (b4, p4), (b8, p8) = results
    assert b1 < b4 < b8
    assert p1 < p4 < p8
    assert p4 >= 30.0


def test_quality_levels_refine_steadily():
    from vqcodec.codec import step_for_quality
    depths = [stages_for_quality(q, 10) for q in range(1, 9)]
    steps = [step_for_quality(q) for q in range(1, 9)]
    assert depths == sorted(depths) and 1 <= depths[0] and stages_for_quality(8, 1) == 1
    assert all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(VqvError):
        stages_for_quality(9, 10)


def test_bytes_do_not_depend_on_threads_or_batch(tmp_path, make_clip, model):
    src = make_clip(200, 120, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encode_file(src, tmp_path / "a.vqv", model=model, batch=1)
        torch.set_num_threads(2)
        encode_file(src, tmp_path / "b.vqv", model=model, batch=4)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "a.vqv").read_bytes() == (tmp_path / "b.vqv").read_bytes()


def test_existing_output_is_not_overwritten_without_yes(tmp_path, carphone, model):
    out = tmp_path / "a.vqv"
    out.write_bytes(b"precious")
    with pytest.raises(VqvError, match="already exists"):
        encode_file(carphone, out, model=model)
    assert out.read_bytes() == b"precious"
    encode_file(carphone, out, model=model, overwrite=True)
    assert out.read_bytes()[:4] == bs.MAGIC


def test_failed_encode_leaves_nothing_behind(tmp_path, model):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VqvError):
        encode_file(bad, tmp_path / "a.vqv", model=model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def _segment_offsets(data: bytes, count: int):
    pos, out = bs.HEADER_SIZE, []
    for _ in range(count):
        out.append(pos)
        pos += bs.SEGMENT_HEADER_SIZE + int.from_bytes(data[pos + 16:pos + 20], "little")
    return out


def test_damaged_segment_is_named_or_concealed(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model, segment_frames=4)
    decode_file(vqv, tmp_path / "clean.y4m", model=model)
    data = bytearray(vqv.read_bytes())
    off = _segment_offsets(bytes(data), 3)
    data[off[1] + bs.SEGMENT_HEADER_SIZE + 3] ^= 0xFF
    bad = tmp_path / "bad.vqv"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"segment 1 \(frames 4-7\)"):
        decode_file(bad, tmp_path / "x.y4m", model=model)
    assert not (tmp_path / "x.y4m").exists()
    assert [d["index"] for d in inspect(bad)["damaged"]] == [1]
    rep = decode_file(bad, tmp_path / "c.y4m", model=model, conceal=True)
    assert [d.index for d in rep.concealed] == [1]
    clean, conc = list(read_frames(tmp_path / "clean.y4m")), list(read_frames(tmp_path / "c.y4m"))
    assert len(conc) == 12
    for i in list(range(4)) + list(range(8, 12)):  # intact segments decode bit-exactly as before
        assert np.array_equal(clean[i].y, conc[i].y) and np.array_equal(clean[i].u, conc[i].u)
    assert all(np.array_equal(conc[i].y, clean[3].y) for i in range(4, 8))  # filled from the nearest


def test_wrong_model_is_named(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    other = load_model()
    with torch.no_grad():
        other.net.decoder[0].proj.bias.add_(0.01)
    save_model(tmp_path / "other.pt", other.net, other.tables)
    with pytest.raises(ModelMismatch, match=model.fingerprint.hex()):
        decode_file(vqv, tmp_path / "a.y4m", model=tmp_path / "other.pt")


def test_info_reports_header_and_segments(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, quality=3, model=model, segment_frames=8)
    d = inspect(vqv)
    for key in ("width", "height", "frames", "fps", "quality", "version", "model", "segments", "bytes"):
        assert key in d
    assert (d["width"], d["height"], d["frames"], d["quality"], d["segments"]) == (176, 144, 12, 3, 2)
    assert d["model"] == model.fingerprint.hex() and d["bytes"] == vqv.stat().st_size
    assert [s["frames"] for s in d["segment_table"]] == [8, 4]


def test_folder_output_never_replaces_a_folder_of_other_files(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(VqvError, match="other than numbered PNG"):
        decode_file(vqv, mine, model=model, overwrite=True)
    assert (mine / "thesis.txt").read_text() == "years of work"
    frames = tmp_path / "frames"
    decode_file(vqv, frames, model=model)
    assert len(list(frames.glob("*.png"))) == 12
    decode_file(vqv, frames, model=model, overwrite=True)  # our own PNG folder may be replaced
    assert sorted(p.name for p in frames.iterdir())[0] == "000001.png"


def test_png_output_needs_a_single_frame(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model)
    with pytest.raises(VqvError, match="one picture"):
        decode_file(vqv, tmp_path / "a.png", model=model)
    assert not (tmp_path / "a.png").exists()


def test_damage_is_found_inside_a_memory_mapped_file(tmp_path, carphone, model):
    vqv = tmp_path / "a.vqv"
    encode_file(carphone, vqv, model=model, segment_frames=4)
    data = bytearray(vqv.read_bytes())
    data[bs.HEADER_SIZE + 2] ^= 0xFF  # first segment's marker: reader must resync to segment 1
    vqv.write_bytes(bytes(data))
    info = inspect(vqv)
    assert [d["index"] for d in info["damaged"]] == [0]
    assert [s["index"] for s in info["segment_table"]] == [1, 2]


# -- temporal coding, rate control, stills (issue 6) ------------------------------------------------
def test_the_decoder_rebuilds_exactly_what_the_encoder_predicted_from(make_clip, model):
    from vqcodec import motion
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import fresh_modes
    frames = list(read_frames(make_clip(96, 64, 8)))
    # a camera pan: every frame the picture moves 4 pixels left
    frames = [type(f)(np.roll(f.y, -4 * i, 1), np.roll(f.u, -2 * i, 1), np.roll(f.v, -2 * i, 1))
              for i, f in enumerate([frames[0]] * 8)]
    coder = SegmentCoder(model, "cpu")
    latents = []
    sym = coder.decide(coder.analyse(frames), 5, coder.grid(frames), latents)
    assert (sym.vectors[1:] != motion.ZERO).any()  # the pan is found
    assert (sym.modes[1:] != 0).mean() > 0.5   # and most tokens are predicted from it, not coded afresh
    words = coder.coder.encode(sym)
    G = sym.indices.shape[0]
    decoded = list(coder.coder.decode_groups(words, G, sym.indices.shape[1:], sym.vectors.shape[1:], 5))
    ours = list(coder.reconstruct(((sym.indices[g], fresh_modes(sym.modes[g]) if sym.fresh[g] else sym.modes[g],
                                    sym.vectors[g], sym.coefs[g], sym.fresh[g]) for g in range(G)), 5))
    theirs = list(coder.reconstruct(decoded, 5))
    assert all(torch.equal(a[0], b[0]) and all(torch.equal(p, q) for p, q in zip(a[1], b[1]))
               for a, b in zip(ours, theirs))
    assert len(latents) == len(theirs) and all(torch.equal(z, b[0]) for z, b in zip(latents, theirs))
    back = [f for _, planes in theirs for f in
            __import__("vqcodec.codec", fromlist=["to_frames"]).to_frames(*(p[None] for p in planes), 96, 64, 2)]
    assert sequence_quality(frames, back).psnr_yuv > 28.0



def test_a_moving_blocks_prediction_decodes_to_the_predicted_picture(carphone_frames, model):
    from vqcodec import motion
    from vqcodec.codec import SegmentCoder
    from vqcodec.exact import planes_to_tokens
    coder = SegmentCoder(model, "cpu")
    shape = coder.grid(carphone_frames)
    z0, planes0 = next(coder.analyse(carphone_frames[:2]))
    mv = torch.full(motion.grid_shape(*shape), motion.symbol(torch.tensor(3), torch.tensor(-5)), dtype=torch.long)
    pred = motion.predict(planes0, mv, coder.cfg.patch)
    x = planes_to_tokens(pred, coder.cfg.patch)
    # every block moves, so every token takes its latent from the predicted picture
    analysed = coder.exact.invert(x, shape, 0)
    predicted = coder.base(z0, planes0, mv, shape)
    # the format's prediction: the exact analysis of the picture and one correction step
    assert torch.equal(predicted, coder.exact.invert(x, shape, 1))
    err = [sum(float(((a - b) ** 2).mean()) for a, b in zip(coder.planes(z, shape), pred))
           for z in (analysed, predicted)]
    assert err[1] < err[0] / 3


def test_top_qualities_code_the_latent_the_synthesis_turns_back_into_the_source(carphone_frames, model):
    from vqcodec.codec import SegmentCoder, TARGET_FROM, target_steps, to_frames
    coder = SegmentCoder(model, "cpu")
    frames = carphone_frames[:8]
    shape = coder.grid(frames)
    groups = coder.analysed(frames)
    assert groups(TARGET_FROM - 1) is groups(1) and groups(8) is groups(TARGET_FROM) is not groups(1)
    assert [target_steps(q) for q in (1, TARGET_FROM - 1, TARGET_FROM, 8)] == [0, 0, 1, 1]
    psnr = []
    for steps in (0, 1):
        latents = []
        coder.decide(coder.analyse(frames, steps), 8, shape, latents)
        back = [f for z in latents for f in to_frames(*(p[None] for p in coder.planes(z, shape)), 176, 144, 2)]
        psnr.append(sequence_quality(frames, back).psnr_yuv)
    assert psnr[1] > psnr[0] + 0.3, psnr


def test_a_scene_cut_is_coded_afresh_and_decodes_exactly(carphone_frames, model):
    from vqcodec import motion
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import INTRA
    flip = lambda f: type(f)(f.y[::-1, ::-1].copy(), f.u[::-1, ::-1].copy(), f.v[::-1, ::-1].copy())
    frames = carphone_frames[:6] + [flip(f) for f in carphone_frames[6:12]]  # a cut after frame 5
    coder = SegmentCoder(model, "cpu")
    latents = []
    sym = coder.decide(coder.analyse(frames), 4, coder.grid(frames), latents)
    assert sym.fresh.tolist() == [True, False, False, True, False, False]  # group 3 starts the new scene
    assert (sym.vectors[3] == motion.ZERO).all()
    assert (sym.modes[1:3] != INTRA).mean() > 0.5 and (sym.modes[4:] != INTRA).mean() > 0.5
    G = len(sym.indices)
    decoded = coder.coder.decode_groups(coder.coder.encode(sym), G, sym.indices.shape[1:], sym.vectors.shape[1:], 4)
    theirs = list(coder.reconstruct(decoded, 4))
    assert all(torch.equal(z, b[0]) for z, b in zip(latents, theirs))

REFRESH_SHARE = 0.75


def test_a_cut_that_a_coarse_step_would_code_inter_is_coded_afresh_where_that_costs_less(carphone_frames, model,
                                                                                       monkeypatch):
    # at q2 the picture turned upside down is coded inter from a bad prediction in much of it: with
    # the share of intra tokens that alone makes a group fresh raised to REFRESH_SHARE (0.16.0's
    # greedy indices left the cut under half intra, 0.17.1's cheaper intra tokens over it), the
    # share alone does not see the cut; the encoder also decides such a group as a fresh one and
    # takes the cheaper coding
    from vqcodec import encoder
    monkeypatch.setattr(encoder, "REFRESH", REFRESH_SHARE)
    from vqcodec.codec import SegmentCoder
    from vqcodec.reconstruct import to_frames
    flip = lambda f: type(f)(f.y[::-1].copy(), f.u[::-1].copy(), f.v[::-1].copy())
    frames = carphone_frames[:6] + [flip(f) for f in carphone_frames[6:12]]
    coder = SegmentCoder(model, "cpu")
    shape = coder.grid(frames)
    out = {}
    for try_from in (1.0, encoder.REFRESH_TRY):  # 1.0: the intra share alone decides
        monkeypatch.setattr(encoder, "REFRESH_TRY", try_from)
        latents = []
        sym = coder.decide(coder.analyse(frames), 2, shape, latents)
        back = [f for z in latents for f in to_frames(*(p[None] for p in coder.planes(z, shape)), 176, 144, 2)]
        out[try_from] = sym.fresh.tolist(), coder.coder.estimate_bits(sym), sequence_quality(frames, back).psnr_yuv
    (old_fresh, old_bits, old_psnr), (fresh, bits, psnr) = out[1.0], out[encoder.REFRESH_TRY]
    assert old_fresh == [True] + [False] * 5  # the share alone misses it
    assert fresh == [True, False, False, True, False, False]
    assert bits < 0.9 * old_bits and psnr > old_psnr - 0.1, (bits, old_bits, psnr, old_psnr)


def test_a_static_scene_costs_almost_nothing_after_its_first_group(tmp_path, carphone_frames, model):
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import SKIP
    coder = SegmentCoder(model, "cpu")
    frames = [carphone_frames[0]] * 16
    for q in (1, 4, 8):
        s = coder.symbols(frames, q)
        bits = [coder.coder.estimate_bits(s.groups(0, g)) for g in range(1, len(s.indices) + 1)]
        first, later = bits[0], list(np.diff(bits))
        assert (s.modes[1:] == SKIP).mean() > 0.9  # the rest may still improve the picture, cheaply
        assert max(later) < 0.05 * first, (q, first, later)  # the target of issue 6
        assert max(later) < 16, (q, later)  # in fact one static flag per group: a few bits


def test_bitrate_mode_meets_its_target_and_records_each_segment(tmp_path, make_clip, model):
    src = make_clip(176, 144, 48)
    low = encode_file(src, tmp_path / "lo.vqv", model=model, quality=2, segment_frames=8)
    high = encode_file(src, tmp_path / "hi.vqv", model=model, quality=7, segment_frames=8)
    target = (low.kbps + high.kbps) / 2
    rep = encode_file(src, tmp_path / "a.vqv", model=model, bitrate=target, segment_frames=8)
    assert abs(rep.kbps - target) <= 0.1 * target, (rep.kbps, target, rep.segment_qualities)
    assert len(set(rep.segment_qualities)) > 1
    info = inspect(tmp_path / "a.vqv")
    assert info["quality"] == 0 and info["target_kbps"] == round(target)
    data = (tmp_path / "a.vqv").read_bytes()
    segments = [s for s in bs.read_segments(data, bs.unpack_header(data[:bs.HEADER_SIZE]))]
    assert [s.quality for s in segments] == rep.segment_qualities
    assert all(s.stages == stages_for_quality(s.quality, model.config.stages) for s in segments)
    decode_file(tmp_path / "a.vqv", tmp_path / "a.y4m", model=model)
    assert len(list(read_frames(tmp_path / "a.y4m"))) == 48
    with pytest.raises(VqvError, match="--bitrate"):
        encode_file(src, tmp_path / "b.vqv", model=model, bitrate=0)


def test_a_segment_takes_the_quality_nearest_its_budget_over_or_under(carphone_frames, model):
    from vqcodec.codec import SegmentCoder
    coder = SegmentCoder(model, "cpu")
    frames = carphone_frames[:8]
    bits = {q: coder.coder.estimate_bits(coder.symbols(frames, q)) for q in (1, 3, 4, 8)}
    assert bits[1] < bits[3] < bits[4] < bits[8]
    for share, want in ((0.2, 3), (0.8, 4)):  # between q3 and q4: whichever is nearer, from either start
        budget = bits[3] + share * (bits[4] - bits[3])
        for start in (1, 4, 8):
            quality, payload, estimate = coder.encode_for_budget(frames, budget, start)
            assert quality == want, (share, start, quality)
            assert estimate == pytest.approx(bits[want], rel=1e-9)
            assert abs(8 * len(payload) - estimate) < 0.02 * estimate + 64
    assert coder.encode_for_budget(frames, bits[1] / 3, 4)[0] == 1  # nothing fits: the smallest
    assert coder.encode_for_budget(frames, bits[8] * 3, 4)[0] == 8  # everything fits: the best


def test_a_still_image_is_a_one_frame_video(tmp_path, carphone_frames, model):
    from vqcodec.video import PngWriter
    still = tmp_path / "photo.png"
    w = PngWriter(still, single=True)
    w.write(carphone_frames[3])
    w.close()
    rep = encode_file(still, tmp_path / "photo.vqv", model=model, quality=8)
    assert rep.frames == 1 and (rep.width, rep.height) == (176, 144)
    decode_file(tmp_path / "photo.vqv", tmp_path / "back.png", model=model)
    ref, back = list(read_frames(still)), list(read_frames(tmp_path / "back.png"))
    assert len(back) == 1 and sequence_quality(ref, back).psnr_yuv > 30.0


def test_a_segment_whose_depth_does_not_match_its_quality_is_refused(tmp_path, carphone, model):
    from vqcodec.decoder import SegmentDecoder
    from vqcodec.errors import FormatError
    encode_file(carphone, tmp_path / "a.vqv", model=model, quality=4, segment_frames=8)
    data = (tmp_path / "a.vqv").read_bytes()
    header = bs.unpack_header(data[:bs.HEADER_SIZE])
    seg = next(iter(bs.read_segments(data, header)))
    coder = SegmentDecoder(model, "cpu")
    assert len(coder.decode(seg.payload, header, seg.frames, seg.quality, seg.stages)) == 8
    assert stages_for_quality(1, model.config.stages) != seg.stages
    with pytest.raises(FormatError, match="operating point"):
        coder.decode(seg.payload, header, seg.frames, 1, seg.stages)


def test_a_first_group_predicts_tokens_from_their_neighbours_and_decodes_exactly(carphone_frames, model):
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import INTRA, first_passes
    coder = SegmentCoder(model, "cpu")
    frames = carphone_frames[:4]
    latents = []
    sym = coder.decide(coder.analyse(frames), 2, coder.grid(frames), latents)
    first = sym.modes[0]
    assert (first[first_passes(*first.shape) == 0] == INTRA).all()
    assert (first != INTRA).mean() > 0.2  # a real picture: many tokens are their neighbours' mean, or near it
    decoded = coder.coder.decode_groups(coder.coder.encode(sym), len(sym.indices), sym.indices.shape[1:],
                                        sym.vectors.shape[1:], 2)
    theirs = list(coder.reconstruct(decoded, 2))
    assert all(torch.equal(z, b[0]) for z, b in zip(latents, theirs))


def test_later_intra_tokens_predict_from_their_neighbours_and_decode_exactly(carphone_frames, model):
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import INTRA, NEAR_INTER, NEAR_SKIP, near_passes
    # new content enters a third of the picture from frame 4 on (too little for a refresh)
    def enter(f):
        y, u, v = f.y.copy(), f.u.copy(), f.v.copy()
        w = f.width // 3 // 4 * 4
        y[:, :w], u[:, :w // 2], v[:, :w // 2] = f.y[::-1, -w:], f.u[::-1, -w // 2:], f.v[::-1, -w // 2:]
        return type(f)(y, u, v)
    frames = carphone_frames[:4] + [enter(f) for f in carphone_frames[4:8]]
    coder = SegmentCoder(model, "cpu")
    latents = []
    sym = coder.decide(coder.analyse(frames), 3, coder.grid(frames), latents)
    assert not sym.fresh[2]
    later = sym.modes[2]
    near = (later == NEAR_SKIP) | (later == NEAR_INTER)
    assert near.sum() > 0.1 * ((later == INTRA) | near).sum()  # much of the new content is its neighbours' mean
    assert not (near & (near_passes(*later.shape) == 0)).any()
    decoded = coder.coder.decode_groups(coder.coder.encode(sym), len(sym.indices), sym.indices.shape[1:],
                                        sym.vectors.shape[1:], 3)
    theirs = list(coder.reconstruct(decoded, 3))
    assert all(torch.equal(z, b[0]) for z, b in zip(latents, theirs))


def test_the_searchs_vector_rate_is_the_coders_own_code_length(model):
    # pass A is charged against the previous vector, pass B against its neighbours' median in the
    # field the search holds: a uniform moving field costs pass B only "no difference"
    from vqcodec import motion
    from vqcodec.codec import SegmentCoder
    from vqcodec.entropy import MV_B, MV_MAX, MV_Y_CONTEXTS, mv_pass_b
    coder = SegmentCoder(model, "cpu")
    shape = (3, 4)
    prev = torch.full(shape, motion.ZERO)
    rate, predicted = coder._mv_rate(prev, shape)
    bits = torch.from_numpy(coder.coder.mv_bits).float()
    dy, dx = torch.full(shape, 12), torch.full(shape, -20)
    a = bits[0, 12 + MV_MAX] + bits[MV_Y_CONTEXTS + 1, -20 + MV_MAX]  # from still: both differ
    b = bits[MV_B, MV_MAX] + bits[MV_Y_CONTEXTS + 2 * MV_B, MV_MAX]  # one distinct moving neighbour, no difference
    got = rate(dy, dx, dy, dx)
    pass_b = torch.from_numpy(mv_pass_b(shape))
    assert torch.allclose(got[~pass_b], a.expand(6)) and torch.allclose(got[pass_b], b.expand(6))
    assert torch.allclose(rate(dy, dx, None, None), a.expand(shape))  # no field: every block as pass A
    py, px = predicted(dy, dx)  # what the rate is measured from: pass A the previous (still), pass B the field's
    assert torch.equal(py, torch.where(pass_b, dy, 0)) and torch.equal(px, torch.where(pass_b, dx, 0))


def test_the_decoder_applies_the_segments_output_filter_and_it_brings_the_frames_closer(tmp_path, carphone_frames, model):
    from vqcodec.codec import SegmentCoder, encode_frames, frames_from_bytes, to_frames
    from vqcodec.postfilter import filter_frames
    frames = carphone_frames[:8]
    coder = SegmentCoder(model, "cpu")
    latents = []
    sym = coder.decide(coder.analyse(frames), 3, coder.grid(frames), latents, size=(176, 144))
    assert sym.filter is not None and sym.filter[0].any()
    plain = [f for z in latents for f in to_frames(*(p[None] for p in coder.planes(z, coder.grid(frames))), 176, 144, 2)]
    filtered = [f for i in range(0, 8, 2) for f in filter_frames(plain[i:i + 2], sym.filter)]
    encode_frames(iter(frames), Fraction(30), tmp_path / "a.vqv", quality=3, model=model, device="cpu")
    back = list(frames_from_bytes((tmp_path / "a.vqv").read_bytes(), model, conceal=False, concealed=[]))
    assert all(np.array_equal(a.y, b.y) and np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)
               for a, b in zip(back, filtered))
    assert sequence_quality(frames, filtered).psnr_yuv > sequence_quality(frames, plain).psnr_yuv + 0.1


def test_coefficients_take_the_level_of_least_error_plus_bits(model):
    # the rate-distortion quantiser against a direct search: each value's level among round-to-
    # nearest, the one below and zero, by (error / step)^2 + RDOQ_LAMBDA x its bits in the
    # coefficient tables, the context bucket counted from the dead-zone levels before it
    from vqcodec.encoder import COEF_MAX, DEADZONE, RDOQ_LAMBDA, SegmentCoder
    from vqcodec.entropy import NEVER, NNZ_BUCKET
    from vqcodec.quantizer import scalar_quantise
    coder = SegmentCoder(model, "cpu")
    g = torch.Generator().manual_seed(3)
    ustep, quality, kind = 400.0, 4, 1
    c = torch.randn(40, 48, generator=g) * torch.linspace(900, 60, 48) * (torch.rand(40, 1, generator=g) < 0.7)
    hist = torch.randint(0, NEVER + 1, (40,), generator=g)
    got = coder._quantise(c, ustep, kind, quality, hist)
    table = coder._coef_bits[quality - 1, kind]
    dead = scalar_quantise(c, ustep, COEF_MAX, DEADZONE)
    for i in range(40):
        for r in range(48):
            a = float(c[i, r].abs()) / ustep
            near = min(int(np.floor(a + 0.5)), COEF_MAX)
            if near == 0:
                assert got[i, r] == 0
                continue
            bucket = NNZ_BUCKET[min(int((dead[i, :r] != 0).sum()), 4)]
            sign = -1 if c[i, r] < 0 else 1
            cost = lambda lv: (a - lv) ** 2 + RDOQ_LAMBDA * float(table[r, 4 * int(hist[i]) + bucket, COEF_MAX + sign * lv])
            best = min((near, max(near - 1, 0), 0), key=cost)
            assert abs(int(got[i, r])) in (near, near - 1, 0) and cost(abs(int(got[i, r]))) == pytest.approx(cost(best))
            assert int(got[i, r]) * sign >= 0
    assert (got != dead).any() and (got.abs() <= torch.floor(c.abs() / ustep + 0.5)).all()


def test_intra_indices_are_the_combination_of_least_distortion_plus_bits(carphone_frames, model):
    # each token's indices among the tree search's combinations: the least distortion + lambda x
    # (index bits + coefficient bits), never dearer than the greedy indices, often cheaper
    from vqcodec.encoder import LAMBDA, LATENT_UNIT, RD_VQ, SegmentCoder
    from vqcodec.entropy import NEVER
    from vqcodec.quantizer import ResidualVQ
    from vqcodec.reconstruct import step_for_quality
    coder = SegmentCoder(model, "cpu")
    z = next(coder.analyse(carphone_frames[:2]))[0]
    quality, n = 4, len(z)
    step = step_for_quality(quality)
    lam = LAMBDA * (step * LATENT_UNIT) ** 2
    rows = torch.randint(0, coder.coder.codes + 1, (2, n), generator=torch.Generator().manual_seed(1))
    hist = torch.full((n,), NEVER)

    def cost(idx):  # one combination's intra cost per token
        vq = coder.exact.vq(idx)
        c = coder._quantise((z - vq) @ coder.basis.t(), step * LATENT_UNIT, 0, quality, hist)
        d = ((z - coder.rebuild(vq, None, None, c, step)) ** 2).sum(1)
        return d + lam * (coder._index_rate(idx, rows) + coder._coef_rate(c, 0, quality, hist))

    greedy = coder.net.quantizer.encode(z, 2, coder.exact.codebooks)
    idx, z_vq, coefs = greedy.clone(), coder.exact.vq(greedy), torch.zeros(n, z.shape[1], dtype=torch.long)
    got = coder._choose_indices(z, idx, z_vq, coefs, torch.arange(n), rows, quality, hist)
    assert torch.allclose(got, cost(idx), rtol=1e-4)
    assert torch.equal(z_vq, coder.exact.vq(idx))
    cand = ResidualVQ.candidates(z, coder.exact.codebooks, RD_VQ)[0]
    every = torch.stack([cost(cand[:, :, k]) for k in range(cand.shape[2])])
    assert torch.allclose(got, every.min(0).values, rtol=1e-4)
    assert (got <= cost(greedy) * (1 + 1e-5)).all()
    assert (got < 0.98 * cost(greedy)).float().mean() > 0.3  # 59 % on these frames


def test_a_pan_at_a_coarse_step_sends_one_vector_per_cell_where_that_costs_less(carphone_frames, model, monkeypatch):
    # a pan moves every block alike: at quality 2 one vector per 2 x 2 blocks predicts as well for
    # a quarter of the vectors, so the encoder takes the coarse grid, and the decoder follows it
    from vqcodec import entropy
    from vqcodec.codec import SegmentCoder
    from vqcodec.reconstruct import to_frames
    pan = lambda f, k: type(f)(np.roll(f.y, -4 * k, 1), np.roll(f.u, -2 * k, 1), np.roll(f.v, -2 * k, 1))
    frames = [pan(carphone_frames[0], k) for k in range(8)]
    coder = SegmentCoder(model, "cpu")
    shape = coder.grid(frames)
    out = {}
    for allowed in (0, entropy.COARSE_VECTORS):
        monkeypatch.setattr(entropy, "COARSE_VECTORS", allowed)
        latents = []
        sym = coder.decide(coder.analyse(frames), 2, shape, latents)
        back = [f for z in latents for f in to_frames(*(p[None] for p in coder.planes(z, shape)), 176, 144, 2)]
        out[allowed] = sym, coder.coder.estimate_bits(sym), sequence_quality(frames, back).psnr_yuv, latents
    (fine, fine_bits, fine_psnr, _), (sym, bits, psnr, latents) = out[0], out[entropy.COARSE_VECTORS]
    assert not fine.grids.any() and sym.grids[1:].all()
    assert bits < 0.99 * fine_bits and psnr > fine_psnr - 0.1, (bits, fine_bits, psnr, fine_psnr)
    G = len(sym.indices)
    decoded = coder.coder.decode_groups(coder.coder.encode(sym), G, sym.indices.shape[1:], sym.vectors.shape[1:], 2)
    assert all(torch.equal(z, b[0]) for z, b in zip(latents, coder.reconstruct(decoded, 2)))
