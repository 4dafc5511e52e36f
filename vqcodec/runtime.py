"""Where the work runs: CPU threads that share the cores with other vqcodec processes.

PyTorch's default is one thread per core for every process.  Run several vqcodec processes at
once (`parallel`, `xargs -P`), as shell users do, and their threads outnumber the cores: on 2
cores two encodes took 16.2 s each with the default against 7.8 s each with one thread apiece.
The automatic setting therefore gives each running vqcodec process an equal share of the cores
the process may use, and looks again before every segment, so a process started alone gives
threads back when others start, and takes them back when they finish.  `--threads N` fixes the
count; so does OMP_NUM_THREADS when it is set and --threads is not given.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def running_vqcodec() -> int:
    """This process and the other vqcodec processes running on this machine (1 where /proc cannot
    tell): the others are those whose command line names vqcodec as its program or module."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 1
    count, me = 1, str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"/vqcodec") or a == b"vqcodec" for a in argv[:2]) or b"vqcodec" in argv[2:3] and b"-m" in argv[1:2]:
            count += 1
    return count


class Threads:
    """The thread policy of one process: `requested` > 0 fixes it, 0 shares the cores (above)."""

    def __init__(self, requested: int = 0):
        if requested < 0:
            from .errors import VqvError
            raise VqvError(f"--threads must be 0 (automatic) or more, got {requested}")
        self.requested = requested
        self.fixed = requested or (int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit()
                                   and int(os.environ["OMP_NUM_THREADS"]) > 0 else 0)
        self.update()

    def count(self) -> int:
        return self.fixed or max(1, usable_cores() // running_vqcodec())

    def update(self) -> int:
        """Set PyTorch's threads to the policy's count now; returns it."""
        n = self.count()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n
