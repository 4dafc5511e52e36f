"""Command line: parse arguments, call one library function, map errors to one line + exit status."""
from __future__ import annotations

import json
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typer.exceptions import TyperException

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="vqcodec: a learned spatiotemporal VQ-VAE video codec.")
# what `decode` writes; `encode -o` names a .vqv, so one of these there is a mistake
CONTAINERS = {".mkv", ".mp4", ".y4m", ".avi", ".mov", ".webm", ".png"}
_state = {"debug": False}


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _version(show: bool) -> None:
    if show:
        from . import __version__
        from .bitstream import VERSION
        print(f"vqcodec {__version__} (.vqv format {VERSION})")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", metavar="", help="show Python tracebacks on errors"),
          version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                       help="print the version and the .vqv format it reads")) -> None:
    _state["debug"] = debug


ModelOpt = typer.Option(None, "--model", "-m", help="model file (default: the shipped models/default.pt)")
DeviceOpt = typer.Option(Device.auto, "--device", help="where the network runs")
YesOpt = typer.Option(False, "-y", "--yes", metavar="", help="overwrite an existing output")


ThreadsOpt = typer.Option(0, "--threads", help="CPU threads (0: share the cores with other vqcodec processes)")


def _report(report, output: Path) -> None:
    """An encode's or a decode's warnings on stderr, then its summary: on stdout, or on stderr
    when stdout carries the data."""
    from .console import warn

    for note in report.notes:
        warn(note)
    typer.echo(report.summary(), err=str(output) == "-")


@app.command()
def encode(input: Path = typer.Argument(..., help="any video PyAV can open; - reads standard input (y4m, mkv, nut, ts)"),
           output: Path = typer.Option(..., "-o", "--output", help="the .vqv file to write; - writes standard output"),
           quality: Optional[int] = typer.Option(None, "--quality", "-q", help="1 (smallest) .. 8 (best picture); default 4"),
           bitrate: Optional[float] = typer.Option(None, "--bitrate", "-b", help="target kbit/s instead of a quality (chosen per segment)"),
           frames: Optional[int] = typer.Option(None, "--frames", help="encode at most this many frames"),
           seek: float = typer.Option(0.0, "--seek", help="start this many seconds into the input"),
           segment: int = typer.Option(32, "--segment", help="frames per independently decodable segment"),
           no_audio: bool = typer.Option(False, "--no-audio", metavar="", help="drop the source's audio (kept by default)"),
           fec: int = typer.Option(0, "--fec", help="Reed-Solomon parity, % of the data (0 off, 1-50): corrects damage"),
           model: Optional[Path] = ModelOpt, device: Device = DeviceOpt, threads: int = ThreadsOpt,
           yes: bool = YesOpt) -> None:
    """Compress a video into a .vqv file."""
    from .encoder import DEFAULT_QUALITY, encode_file
    from .console import progress_bar
    from .errors import VqvError

    if quality is not None and bitrate is not None:
        raise VqvError("give --quality or --bitrate, not both")
    if str(output) != "-" and output.suffix.lower() in CONTAINERS:
        raise VqvError(f"{output}: encode writes a .vqv stream, not a {output.suffix} video "
                       f"(name it .vqv; vqcodec decode X.vqv -o {output.name} makes the video)")
    with progress_bar("encode") as bar:
        report = encode_file(input, output, quality=DEFAULT_QUALITY if quality is None else quality, bitrate=bitrate,
                             model=model, device=device.value, overwrite=yes, segment_frames=segment,
                             progress=bar.advance, total=bar.total, seek=seek, frames=frames, threads=threads,
                             audio=not no_audio, fec_pct=fec)
    _report(report, output)


@app.command()
def decode(input: Path = typer.Argument(..., help="a .vqv file; - reads standard input"),
           output: Path = typer.Option(..., "-o", "--output", help=".y4m, .mkv, .avi (FFV1), .mp4, .mov (x264 lossless), .png (one frame), a folder, or - (standard output, y4m)"),
           fmt: Optional[str] = typer.Option(None, "--format", "-f", help="container instead of the extension's: y4m, mkv, avi, mp4, mov"),
           conceal: bool = typer.Option(False, "--conceal", metavar="", help="conceal damaged segments instead of failing"),
           model: Optional[Path] = ModelOpt, device: Device = DeviceOpt, threads: int = ThreadsOpt,
           yes: bool = YesOpt) -> None:
    """Decompress a .vqv file into a video (container chosen by the extension or --format)."""
    from .decoder import decode_file
    from .console import progress_bar

    with progress_bar("decode") as bar:
        report = decode_file(input, output, model=model, device=device.value, overwrite=yes, conceal=conceal,
                             progress=bar.advance, total=bar.total, fmt=fmt, threads=threads)
    _report(report, output)


@app.command()
def repair(input: Path = typer.Argument(..., help="a .vqv file written with --fec"),
           output: Path = typer.Option(..., "-o", "--output", help="the repaired .vqv to write"),
           yes: bool = YesOpt) -> None:
    """Correct a damaged .vqv with its parity (as par2 repair) and write it back whole."""
    from .decoder import repair_file

    typer.echo(repair_file(input, output, overwrite=yes))


@app.command()
def train(clips: Path = typer.Argument(..., help="folder of clips (searched recursively)"),
          output: Path = typer.Option(..., "-o", "--output", help="the model file to write"),
          steps: int = typer.Option(20000, "--steps", help="optimiser steps in all (a resumed run continues to this)"),
          batch: int = typer.Option(16, "--batch", help="clips per step (per GPU under torchrun)"),
          crop: str = typer.Option("128x128", "--crop", help="luma crop HxW"),
          frames: int = typer.Option(2, "--frames", help="frames per sample (a multiple of the model's group)"),
          lr: float = typer.Option(1e-3, "--lr", help="peak learning rate (cosine decay)"),
          ms_ssim: float = typer.Option(0.0, "--ms-ssim", help="weight of an MS-SSIM term (0: pure MSE, serves PSNR)"),
          seed: int = typer.Option(0, "--seed"),
          stages: Optional[int] = typer.Option(None, "--stages", help="residual-VQ stages (default 10; more than --init has grows it)"),
          hidden: Optional[int] = typer.Option(None, "--hidden", help="channels inside the residual blocks"),
          init: Optional[Path] = typer.Option(None, "--init", help="start from this model's weights"),
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue from this checkpoint exactly"),
          checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint file (default: OUTPUT with .ckpt)"),
          val: Optional[Path] = typer.Option(None, "--val", help="folder of held-out clips for validation"),
          val_every: int = typer.Option(500, "--val-every", help="steps between validations"),
          minutes: Optional[float] = typer.Option(None, "--minutes", help="stop after this long (checkpoint, resume later)"),
          workers: int = typer.Option(-1, "--workers", help="data-loading processes (-1: none on CPU, up to 8 on CUDA)"),
          compile_: bool = typer.Option(False, "--compile", metavar="", help="torch.compile the conv stacks (experimental)"),
          device: Device = DeviceOpt, threads: int = ThreadsOpt, yes: bool = YesOpt) -> None:
    """Fit a model on a folder of clips: network, codebooks, then the entropy tables."""
    from .console import train_display
    from .runtime import Threads
    from .train import train_model, parse_training

    Threads(threads)
    options, config = parse_training(crop=crop, steps=steps, batch=batch, frames=frames, lr=lr, ms_ssim=ms_ssim,
                                     seed=seed, val_every=val_every, minutes=minutes, workers=workers, compile=compile_,
                                     stages=stages, hidden=hidden, init=init)
    with train_display(steps) as show:
        result = train_model(clips, output, options=options, config=config, init=init, resume=resume,
                             checkpoint=checkpoint, val_dir=val, device=device.value, overwrite=yes, log=show)
    typer.echo(result.summary())


@app.command()
def info(input: Optional[Path] = typer.Argument(None, help="a .vqv file"),
         model: Optional[Path] = typer.Option(None, "--model", "-m", help="describe this model file instead"),
         as_json: bool = typer.Option(False, "--json", metavar="", help="machine-readable output")) -> None:
    """Show what is inside a .vqv file (header, segments, damage) or a model file (--model)."""
    from .decoder import inspect
    from .modelfile import inspect_model

    if (input is None) == (model is None):
        raise typer.BadParameter("give a .vqv file or --model MODEL.pt (one of them)")
    if model is not None:
        d = inspect_model(model)
        if as_json:
            typer.echo(json.dumps(d, indent=2))
        else:
            for key, value in d.items():
                typer.echo(f"{key:>15}: {value}")
        return
    d = inspect(input)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    for key in ("version", "model", "width", "height", "fps", "frames", "pix_fmt", "colour", "quality", "target_kbps",
                "stages", "group_frames", "segment_frames", "segments", "bytes", "kbps", "bpp", "streamed"):
        if key in ("target_kbps", "streamed") and not d[key]:
            continue
        value = d[key]
        if key == "colour":
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        if key == "streamed":
            value = "yes (written to a pipe: counts and rate in the trailer)"
        if key == "quality" and value == 0:
            value = "rate-controlled: " + ", ".join(f"{q}" for q in d["segment_qualities"]) + " per segment"
        typer.echo(f"{key:>15}: {value}")
    if d["fec"]:
        typer.echo(f"{'fec':>15}: Reed-Solomon, {d['fec']['parity_bytes_per_codeword']} parity bytes per codeword "
                   f"({d['fec']['percent']} %)")
    for r in d["repairs"]:
        typer.echo(f"{'repairable':>15}: {r}")
    for a in d["audio"]:
        typer.echo(f"{'audio':>15}: stream {a['number']}: {a['codec']}, {a['packets']} packets, {a['bytes']} bytes")
    for s in d["damaged"]:
        typer.echo(f"{'damaged':>15}: segment {s['index']} (frames {s['first_frame']}-"
                   f"{s['first_frame'] + s['frames'] - 1}): {s['reason']}")


@app.command()
def bench(inputs: list[Path] = typer.Argument(..., help="videos to measure on"),
          qualities: str = typer.Option("1-8", "--qualities", help="vqcodec qualities, e.g. 1-8 or 2,4,8"),
          codecs: str = typer.Option("x264,x265,svtav1", "--codecs", help="classic codecs: x264,x265,svtav1,vp9"),
          frames: Optional[int] = typer.Option(32, "--frames", help="frames per input (0 = all)"),
          json_out: Optional[Path] = typer.Option(None, "--json", help="write all results as JSON"),
          csv_out: Optional[Path] = typer.Option(None, "--csv", help="write all results as CSV"),
          plot_out: Optional[Path] = typer.Option(None, "--plot", help="rate-distortion curves (PNG, needs matplotlib)"),
          compare: Optional[list[Path]] = typer.Option(None, "--compare-model", help="another model to measure as an anchor (repeatable)"),
          model: Optional[Path] = ModelOpt, device: Device = DeviceOpt, threads: int = ThreadsOpt) -> None:
    """Rate-distortion and speed beside x264, x265, SVT-AV1 and VP9, with BD-rate."""
    from .bench import report
    from .runtime import Threads

    Threads(threads)
    report(inputs, qualities=qualities, codecs=codecs, frames=frames or None, json_out=json_out,
           csv_out=csv_out, plot_out=plot_out, model=model, device=device.value, compare=compare)


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse the memory of freed tensors instead of mapping fresh pages for each
    large one (and faulting them in): the codec's many full-frame temporaries then cost their
    arithmetic only (an exact 720p residual block 77 -> 55 ms).  Peak memory is unchanged; the
    process keeps it until it exits.  Elsewhere than glibc, nothing."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: freed heap memory stays for reuse
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (tests call this directly)."""
    from .errors import VqvError

    keep_freed_memory()
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        rv = app(args=args, prog_name="vqcodec", standalone_mode=False)
        if rv == 130:  # typer turns Ctrl-C into an exit status of 130 and returns it
            print("vqcodec: interrupted", file=sys.stderr)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("vqcodec: interrupted", file=sys.stderr)
        return 130
    except TyperException as exc:  # usage errors (typer's own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # (no command at all: the help was printed, nothing more to say)
            print(f"vqcodec: error: {message} (see vqcodec --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vqcodec: interrupted", file=sys.stderr)
        return 130
    except VqvError as exc:
        _trace()
        print(f"vqcodec: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        _trace()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vqcodec: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        _trace()
        print(f"vqcodec: internal error: {exc.__class__.__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 3


def _trace() -> None:
    if _state["debug"]:
        traceback.print_exc()


def run() -> None:
    sys.exit(main())
