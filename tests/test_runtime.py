import subprocess
import sys

import pytest
import torch

from vqcodec.errors import VqvError
from vqcodec.runtime import Threads, running_vqcodec, usable_cores


def test_the_automatic_threads_share_the_cores_with_other_vqcodec_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = running_vqcodec()
    # another vqcodec process, waiting for its input on a pipe
    other = subprocess.Popen([sys.executable, "-m", "vqcodec", "encode", "-", "-o", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time
        for _ in range(50):  # until it has started
            if running_vqcodec() > before:
                break
            time.sleep(0.1)
        assert running_vqcodec() == before + 1
        threads = Threads(0)
        assert threads.count() == max(1, usable_cores() // (before + 1))
        assert torch.get_num_threads() == threads.count()
    finally:
        other.kill()
        other.wait()
    assert Threads(0).update() == max(1, usable_cores() // before)  # it takes them back


def test_a_thread_count_given_is_kept(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Threads(1).count() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert Threads(0).count() == 1
    with pytest.raises(VqvError, match="--threads"):
        Threads(-1)
    torch.set_num_threads(usable_cores())
