"""Outputs: refused early when they could not be written, written under a temporary name beside
the target and renamed only when complete (nothing half-written is ever left).  Standard output
('-'), a FIFO or a device (/dev/stdout) is written in place, never replaced."""
from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import torch

from .errors import VqvError


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VqvError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise VqvError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


PNG_NAME = re.compile(r"\d{6}\.png")


def is_stream(path) -> bool:
    """'-' (standard output), or an existing FIFO, character device or socket: written in place."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def stdout_binary() -> BinaryIO:
    """Standard output for data; refused when it is a terminal, as ffmpeg and gzip do."""
    if sys.stdout is None or sys.stdout.isatty():
        raise VqvError("-o -: standard output is a terminal; pipe it into a program or redirect it to a file")
    sys.stdout.flush()
    return sys.stdout.buffer


@contextmanager
def open_output(path: Path, overwrite: bool) -> Iterator[tuple[BinaryIO, bool]]:
    """(binary file, seekable) for `path`: a temporary file renamed at the end, or standard output,
    a FIFO or a device written in place."""
    if str(path) == "-":
        out = stdout_binary()
        yield out, False
        out.flush()
    elif is_stream(path):
        with open(path, "wb") as out:
            yield out, out.seekable()
    else:
        with atomic_output(Path(path), overwrite) as tmp, open(tmp, "wb") as out:
            yield out, True
            out.flush()
            os.fsync(out.fileno())


def check_output(path: Path, overwrite: bool, folder: bool = False) -> None:
    """Refuse early what could not be written, or would destroy something not ours."""
    path = Path(path)
    if is_stream(path):
        return
    if path.exists():
        if not overwrite:
            raise VqvError(f"{path}: already exists (use -y to overwrite)")
        if path.is_dir() and not folder:
            raise VqvError(f"{path}: is a folder; give a file name")
        if folder and not path.is_dir():
            raise VqvError(f"{path}: is a file; give a folder name for PNG frames")
        if folder and any(not PNG_NAME.fullmatch(p.name) for p in path.iterdir()):
            raise VqvError(f"{path}: folder holds files other than numbered PNG frames; not replacing it")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise VqvError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise VqvError(f"{parent}: output folder is not writable")


@contextmanager
def atomic_output(path: Path, overwrite: bool, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else remove it."""
    path = Path(path)
    check_output(path, overwrite, folder)
    if is_stream(path):  # a FIFO or device: written in place
        yield path
        return
    tmp = path.with_name(f".{path.name}.part{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if folder and path.is_dir():  # only numbered PNGs, checked above
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):  # writing failed: name the output
            raise VqvError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
        raise
