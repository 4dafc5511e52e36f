"""Rate-distortion and speed, vqcodec beside the classic codecs, all measured the same way.

Every codec gets the same decoded frames (8-bit YUV 4:2:0) and is measured by one function:
PSNR-Y and PSNR-YUV (metrics.py), MS-SSIM on luma, bpp and kbit/s, and encode/decode frames/s.
Rate: vqcodec's whole .vqv file; the classic codecs' coded payload (sum of packet sizes), so no
container overhead is charged to them.  BD-rate is Bjøntegaard's: cubic fits of log-rate over
PSNR-YUV, integrated over the PSNR range both curves cover.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .decoder import frames_from_bytes
from .encoder import encode_frames
from .errors import VqvError
from .metrics import ms_ssim_tensor, sequence_quality
from .modelfile import CodecModel
from .classic import CLASSICS
from .video import Frame, VideoWriter, probe, read_frames


@dataclass
class Point:
    input: str
    codec: str
    setting: int
    bpp: float
    kbps: float
    psnr_y: float
    psnr_yuv: float
    ms_ssim: float
    encode_fps: float
    decode_fps: float

    def to_dict(self) -> dict:
        return asdict(self)


# -- metrics -----------------------------------------------------------------------------------
def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two 8-bit planes (metrics.ms_ssim in float64)."""
    x = torch.from_numpy(a.astype(np.float64))[None, None]
    y = torch.from_numpy(b.astype(np.float64))[None, None]
    return float(ms_ssim_tensor(x, y, 255.0))


def measure(name: str, codec: str, setting: int, ref: list[Frame], dec: list[Frame], nbytes: int,
            fps: Fraction, t_enc: float, t_dec: float) -> Point:
    if len(dec) != len(ref):
        raise VqvError(f"{codec} {setting}: {len(dec)} frames back of {len(ref)}")
    q = sequence_quality(ref, dec)
    ssim = float(np.mean([ms_ssim(r.y, d.y) for r, d in zip(ref, dec)]))
    w, h, n = ref[0].width, ref[0].height, len(ref)
    return Point(name, codec, setting, 8 * nbytes / (w * h * n), 8 * nbytes / (n / float(fps)) / 1000,
                 q.psnr_y, q.psnr_yuv, ssim, n / max(t_enc, 1e-9), n / max(t_dec, 1e-9))


# -- codecs --------------------------------------------------------------------------------------
def run_classic(codec: str, y4m: Path, fps: Fraction, setting: int, workdir: Path):
    """(payload bytes, decoded frames, encode seconds, decode seconds) of a classic codec."""
    path = workdir / f"{codec}.mkv"
    nbytes, t_enc = CLASSICS[codec].encode(y4m, fps, setting, path)
    t0 = time.perf_counter()
    dec = list(read_frames(path))
    return nbytes, dec, t_enc, time.perf_counter() - t0


def run_vqcodec(frames: list[Frame], fps: Fraction, quality: int, model: CodecModel, device: str, workdir: Path):
    path = workdir / "v.vqv"
    t0 = time.perf_counter()
    encode_frames(frames, fps, path, quality=quality, model=model, device=device, overwrite=True)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = path.read_bytes()
    dec = list(frames_from_bytes(data, model, device=device, conceal=False, concealed=[]))
    return len(data), dec, t_enc, time.perf_counter() - t0


# -- BD-rate ---------------------------------------------------------------------------------------
def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr) -> float | None:
    """Average rate difference (%) of `test` against `anchor` at equal PSNR (Bjøntegaard).
    Negative: test needs fewer bits.  None when the PSNR ranges do not overlap."""
    def curve(rate, psnr):
        order = np.argsort(psnr)
        p, r = np.asarray(psnr, float)[order], np.log(np.asarray(rate, float)[order])
        return p, r

    pa, ra = curve(anchor_rate, anchor_psnr)
    pt, rt = curve(test_rate, test_psnr)
    lo, hi = max(pa[0], pt[0]), min(pa[-1], pt[-1])
    if len(pa) < 2 or len(pt) < 2 or hi <= lo:
        return None

    def mean_log_rate(p, r):
        if len(p) >= 4:
            poly = np.polyint(np.polyfit(p, r, 3))
            return (np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo)
        grid = np.linspace(lo, hi, 101)  # too few points for a cubic: piecewise linear
        return float(np.mean(np.interp(grid, p, r)))

    return float((math.exp(mean_log_rate(pt, rt) - mean_log_rate(pa, ra)) - 1) * 100)


def bd_rates(points: list[Point], reference_prefix: str = "vqcodec") -> dict:
    """BD-rate of vqcodec against each classic codec, per input and averaged over inputs."""
    out: dict = {}
    inputs = sorted({p.input for p in points})
    codecs = sorted({p.codec for p in points if not p.codec.startswith(reference_prefix)})
    for c in codecs:
        per = {}
        for name in inputs:
            anchor = [p for p in points if p.input == name and p.codec == c]
            test = [p for p in points if p.input == name and p.codec.startswith(reference_prefix)]
            if anchor and test:
                per[name] = bd_rate([p.bpp for p in anchor], [p.psnr_yuv for p in anchor],
                                    [p.bpp for p in test], [p.psnr_yuv for p in test])
        vals = [v for v in per.values() if v is not None]
        out[c] = {"per_input": per, "average": float(np.mean(vals)) if vals else None}
    return out


# -- the run -----------------------------------------------------------------------------------------
def run(inputs: list[Path], *, qualities: list[int], codecs: list[str], frames: int | None, model: CodecModel,
        device: str, progress=None, others: dict[str, CodecModel] | None = None) -> tuple[list[Point], dict]:
    """Every codec on the same decoded frames.  `others`: more vqcodec models, measured as anchors
    named "model:NAME" (for instance the previous default model)."""
    unknown = [c for c in codecs if c not in CLASSICS]
    if unknown:
        raise VqvError(f"--codecs: unknown {', '.join(unknown)} (choose from {', '.join(CLASSICS)})")
    points: list[Point] = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in inputs:
            fps = probe(src).fps
            ref = list(read_frames(src, limit=frames))
            if not ref:
                raise VqvError(f"{src}: no frames")
            y4m = Path(tmp) / "ref.y4m"  # the classic encoders' input (classic.py: a process each)
            if codecs:
                writer = VideoWriter(y4m, y4m, ref[0].width, ref[0].height, fps)
                for f in ref:
                    writer.write(f)
                writer.close()
            for name, m in [("vqcodec", model)] + [(f"model:{k}", v) for k, v in (others or {}).items()]:
                for q in qualities:
                    nbytes, dec, te, td = run_vqcodec(ref, fps, q, m, device, Path(tmp))
                    points.append(measure(src.name, name, q, ref, dec, nbytes, fps, te, td))
                    if progress:
                        progress(points[-1])
            for c in codecs:
                for crf in CLASSICS[c].settings:
                    nbytes, dec, te, td = run_classic(c, y4m, fps, crf, Path(tmp))
                    points.append(measure(src.name, c, crf, ref, dec, nbytes, fps, te, td))
                    if progress:
                        progress(points[-1])
    return points, bd_rates(points)


def plot(points: list[Point], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VqvError("--plot needs matplotlib: pip install 'vqcodec[bench]'") from None
    inputs = sorted({p.input for p in points})
    fig, axes = plt.subplots(1, len(inputs), figsize=(5.5 * len(inputs), 4.2), squeeze=False)
    for ax, name in zip(axes[0], inputs):
        for codec in sorted({p.codec for p in points}):
            pts = sorted((p for p in points if p.input == name and p.codec == codec), key=lambda p: p.bpp)
            ax.plot([p.bpp for p in pts], [p.psnr_yuv for p in pts], "o-", label=codec, markersize=3)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (log)")
        ax.set_ylabel("PSNR-YUV (dB)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_qualities(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b or a) + 1))
    except ValueError:
        raise VqvError(f"--qualities: expected a list like 1-8 or 2,4,8, got {text!r}") from None
    if not out or min(out) < 1 or max(out) > 8:
        raise VqvError(f"--qualities must lie in 1..8, got {text!r}")
    return sorted(set(out))


def report(inputs: list[Path], *, qualities: str, codecs: str, frames: int | None, json_out: Path | None,
           csv_out: Path | None, plot_out: Path | None, model: Path | None, device: str,
           compare: list[Path] | None = None) -> dict:
    """The `vqcodec bench` command: run, print a table and BD-rates, write the files asked for."""
    import csv
    import json

    from rich.console import Console
    from rich.table import Table

    from .files import resolve_device
    from .console import stderr
    from .modelfile import load_model

    device = resolve_device(device)
    cm = load_model(model, device)
    others = {Path(p).stem: load_model(p, device) for p in compare or []}
    for p in inputs:
        probe(p)  # fail early, with one line, on a bad input
    codec_list = [c.strip() for c in codecs.split(",") if c.strip()]
    points, bd = run(inputs, qualities=parse_qualities(qualities), codecs=codec_list, frames=frames, model=cm,
                     device=device, others=others, progress=lambda p: stderr.log(f"{p.input} {p.codec} {p.setting}: "
                                                                  f"{p.bpp:.4f} bpp {p.psnr_yuv:.2f} dB"))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # files and pipes get whole rows
    table = Table(title="rate-distortion and speed")
    for col in ("input", "codec", "setting", "bpp", "kbit/s", "PSNR-Y", "PSNR-YUV", "MS-SSIM", "enc fps", "dec fps"):
        table.add_column(col, justify="right" if col not in ("input", "codec") else "left")
    for p in points:
        table.add_row(p.input, p.codec, str(p.setting), f"{p.bpp:.4f}", f"{p.kbps:.0f}", f"{p.psnr_y:.2f}",
                      f"{p.psnr_yuv:.2f}", f"{p.ms_ssim:.4f}", f"{p.encode_fps:.1f}", f"{p.decode_fps:.1f}")
    console.print(table)
    fmt = lambda v: "no overlap" if v is None else f"{v:+.1f}%"
    for c, d in bd.items():
        per = ", ".join(f"{k} {fmt(v)}" for k, v in d["per_input"].items())
        console.print(f"BD-rate of vqcodec against {c} (PSNR-YUV): average {fmt(d['average'])} ({per})")
    result = {"results": [p.to_dict() for p in points], "bd_rate": bd}
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    if csv_out:
        with open(csv_out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(points[0].to_dict()))
            w.writeheader()
            w.writerows(p.to_dict() for p in points)
    if plot_out:
        plot(points, plot_out)
    return result
