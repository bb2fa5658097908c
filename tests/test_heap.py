"""study/heap.py: with freed memory kept, a repeated large allocation stops page-faulting."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

CHILD = """
import json, resource, sys, torch
from study.heap import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(4):              # what a training step does with its activations: allocate, touch, free
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(k * 2 ** 20) for k in (9, 10, 13)]     # 36, 40, 52 MiB, written: each over
    # glibc's largest adaptive mmap threshold (32 MiB), as the saved activations are at long T
    del xs
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"ok": ok, "faults": faults}))
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    out = {}
    for mode in ("default", "keep"):
        r = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        out[mode] = json.loads(r.stdout.splitlines()[-1])
    pages = 128 * 2 ** 20 // 4096
    assert out["keep"]["ok"] is True
    # glibc as shipped: the 128 MiB faulted in again at every repeat; kept: mostly reused (torch's
    # aligned allocations leave some freed blocks a little too small, so not always all of it)
    assert min(out["default"]["faults"][1:]) > 0.9 * pages, out
    assert sum(out["keep"]["faults"][1:]) < sum(out["default"]["faults"][1:]) / 2, out
