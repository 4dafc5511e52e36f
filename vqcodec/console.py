"""Terminal presentation: a rich progress bar on stderr, fed by the codec's progress callback."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True, log_path=False)  # log lines without our source references


class _Bar:
    """The codec's two progress callbacks: `total(n)` once the count is known, `advance(n)` as
    frames finish."""

    def __init__(self, bar: Progress, task):
        self.bar, self.task = bar, task

    def total(self, n: int | None) -> None:
        self.bar.update(self.task, total=n or None)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


@contextmanager
def progress_bar(label: str) -> Iterator[_Bar]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("frames"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        yield _Bar(bar, bar.add_task(label, total=None))


def warn(message: str) -> None:
    """One warning line on stderr, as the error lines are written."""
    print(f"vqcodec: warning: {message}", file=sys.stderr)


@contextmanager
def train_display(total: int) -> Iterator:
    """A live line per training record: step, loss, PSNR, codebook use, speed, ETA; validation
    results and phases as lines of their own.  Off a terminal: one plain line per record."""
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as bar:
        task = None

        def show(r: dict) -> None:
            nonlocal task
            if "phase" in r:
                stderr.print(f"fitting entropy tables on {r['clips']} clips")
                return
            stats = (f"loss {r['loss']:.5f}  PSNR {r['psnr']:.2f} dB  perplexity {r['perplexity']:.0f}  "
                     f"dead {r['dead']}  {r['steps_s']:.2f} steps/s")
            if task is None:
                task = bar.add_task("train", total=r["steps"], completed=r["step"], stats=stats)
            bar.update(task, completed=r["step"], stats=stats)
            if not stderr.is_terminal:
                stderr.print(f"step {r['step']}/{r['steps']}  {stats}", highlight=False, soft_wrap=True)
            if "val" in r:
                stderr.print(f"validation at step {r['step']}: " + ", ".join(
                    f"q{q} {v['psnr_yuv']:.2f} dB ~{v['bpp']:.3f} bpp" for q, v in r["val"].items()), highlight=False, soft_wrap=True)
        yield show
