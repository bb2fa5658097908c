"""Peak tensor memory of one call, from PyTorch's own allocator accounting.

On CPU the process's resident high-water mark is dominated by the allocator's and the heap's
behaviour (pages kept, pages never touched, the interpreter and libraries), so it says little
about an architecture: a step's activations of a few MiB vanish in it. The profiler with
`profile_memory=True` records every allocation and free the CPU allocator makes, with its size;
the running sum of those events is the live tensor bytes the call added, and its maximum is the
call's peak. Tensors alive before the call (parameters, the batch, optimiser state from earlier
steps) are not counted; the gradients and optimiser state the call creates are.

CUDA: `torch.cuda.max_memory_allocated` is the same accounting without a profiler, so the
profiler is used on CPU only.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch


def peak_tensor_bytes(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, int]:
    """(fn(), the peak of the bytes of tensors fn allocated and had not yet freed)."""
    if device is not None and device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        return out, max(0, int(torch.cuda.max_memory_allocated(device)) - base)
    # torch.autograd.profiler directly, not torch.profiler.profile: the latter's start checks
    # hasattr(torch, "_inductor"), which imports the whole compiler stack on first use (8-12 s
    # on a loaded 2-core machine, once per worker process); this one starts in milliseconds and
    # parses its events into Python objects only when asked (we read the raw kineto events).
    with warnings.catch_warnings():      # kineto's "no CUDA" notices are not the user's business
        warnings.simplefilter("ignore")
        with torch.autograd.profiler.profile(use_cpu=True, profile_memory=True) as prof:
            out = fn()
    # kineto's "[memory]" events: +bytes at an allocation, -bytes at a free, in time order
    events = sorted(((e.start_ns(), e.nbytes()) for e in prof.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda t: t[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return out, peak
