"""Outputs on disk: refused early when they could not be written, written under a temporary
name beside the target and renamed only when complete (nothing half-written is ever left)."""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def check_output(path: Path, overwrite: bool, folder: bool = False) -> None:
    """Refuse early what could not be written, or would destroy something not ours."""
    path = Path(path)
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
