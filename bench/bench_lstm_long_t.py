"""memscale's LSTM model, forward + backward seconds per step at several T, with glibc's default
malloc or with study.heap.keep_freed_memory() (one process each, since mallopt is per process).

    python bench/bench_lstm_long_t.py [default|keep] [T ...]     (d_model 64, batch 8, 1 thread)

Prints one line per T: the median of 3 timed steps after 1 untimed one."""
from __future__ import annotations

import statistics
import sys
import time

import torch

from study.heap import keep_freed_memory
from study.models import MODELS, build_model
from study.tasks import TASKS, build_task

torch.set_num_threads(1)
mode = sys.argv[1] if len(sys.argv) > 1 else "default"
if mode == "keep":
    keep_freed_memory()
task = build_task("copy", TASKS.get("copy").config(lag=16, n_symbols=3, alphabet=4, lag_dist="fixed"))
for T in [int(x) for x in sys.argv[2:]] or [256, 1024, 4096]:
    model = build_model("lstm", MODELS.get("lstm").config(d_model=64), task.io, T, None)
    batch = task.sample(8, torch.Generator().manual_seed(0), seq_len=T)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        out, _ = model(batch.x)
        task.loss(out.float(), batch).backward()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times[1:])
    print(f"{mode} T={T} {s:.4f} s/step {s / T * 1e6:.1f} us/token", flush=True)
