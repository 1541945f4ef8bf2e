"""Host memory: glibc's malloc keeps freed memory once asked, applied once per process."""

from __future__ import annotations

import threading

import pytest

from attnlab.runtime import host_memory

_FAULTS_SCRIPT = """
import resource, sys, torch
import attnlab.models  # as training has: the heap as it is when keep_freed_memory is called
from attnlab.runtime import host_memory
def faults():  # minor page faults of five 64 MiB tensors allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(16 * 2**20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
plain = faults()
kept = host_memory.keep_freed_memory()
faults()
print(plain, faults(), kept)
"""


@pytest.mark.skipif(host_memory.glibc_malloc() is None, reason="needs glibc")
def test_keep_freed_memory_stops_page_faults_on_reused_memory() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    plain, kept_faults, kept = int(out[0]), int(out[1]), out[2]
    assert kept == "True"
    # glibc maps blocks this large afresh on every allocation: one fault per 4 KiB page
    # (fewer with huge pages); once kept, the freed block is reused without faults
    assert plain > 5 * 500
    assert kept_faults < plain / 20


def test_threads_asking_at_once_apply_mallopt_once(monkeypatch) -> None:
    calls = []
    entered = threading.Barrier(4)

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(host_memory, "glibc_malloc", lambda: FakeLibc())
    memory = host_memory.HostMemory()
    assert not memory.kept
    results = []

    def ask() -> None:
        entered.wait()
        results.append(memory.keep_freed_memory())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4 and memory.kept
    assert calls == [(host_memory._M_MMAP_MAX, 0), (host_memory._M_TRIM_THRESHOLD, 2**31 - 1)]


def test_without_glibc_nothing_is_kept(monkeypatch) -> None:
    monkeypatch.setattr(host_memory, "glibc_malloc", lambda: None)
    memory = host_memory.HostMemory()
    assert memory.keep_freed_memory() is False and not memory.kept
