"""Keep freed heap memory in the process, so a training step does not page-fault its activations
in again on every step (glibc only; a no-op elsewhere).

Why: glibc serves an allocation above its mmap threshold (128 KiB, adaptive up to 32 MiB) with
fresh pages from mmap and returns them to the kernel at free, and trims the heap's free top past
M_TRIM_THRESHOLD. A training step at long T allocates its saved activations (~T) and frees them
at the end of backward; the next step gets new zero-filled pages, faulted in one 4 KiB page at a
time in kernel time. Measured on the 2-core machine (BENCHMARKS.md, "Cost per token"): an LSTM
step at T = 16,384, batch 8, d_model 128 took ~3.3 minor faults per token and 0.9 s of kernel
time (45% of its CPU time), and no faults at T = 256, where everything fits below the thresholds:
that, not the recurrence, made its cost per token grow with T. With mmap off and trimming at
1 GiB, freed activations stay in the heap and the next step reuses them: 0 faults at any T.

Cost: the process keeps its high-water mark of heap memory (up to 1 GiB of free top is kept,
anything below stays mapped), which a trial's worker would need again at its next step anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4          # glibc's mallopt parameters (malloc.h)
_done = False


def keep_freed_memory(trim_bytes: int = 1 << 30) -> bool:
    """Once per process: no mmap'd allocations, heap trimmed only past `trim_bytes` of free top.
    True when glibc accepted both settings."""
    global _done
    if _done or platform.system() != "Linux":
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_bytes))
    except (OSError, AttributeError):       # not glibc (musl has no mallopt)
        _done = False
    return _done
