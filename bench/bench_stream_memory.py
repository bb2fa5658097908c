"""Benchmark 5: peak memory of measuring memory length at long lags by streaming (study/memory.py).

Each (arch, lag) runs in a fresh process, so the resident high-water mark (ru_maxrss) belongs to
that measurement alone: the figure is the high-water mark after `score_at` at the lag minus the
one after building the model and scoring a short lag (imports, weights, allocator warm-up).
What must hold: the extra memory does not grow with the lag beyond the input ids themselves
(batch x seq_len int64, listed alongside).

The child runs with MALLOC_MMAP_THRESHOLD_=131072: otherwise glibc raises its mmap threshold after
the first large frees and serves the per-chunk buffers from a heap that fragments, so the RSS
high-water mark grows with the number of chunks while the live tensors do not (lmu at lag 1e5:
286 MiB extra without the setting, 53 MiB with it, same code). `--default-malloc` measures that.

    .venv/bin/python bench/bench_stream_memory.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from bench.common import maxrss_bytes
from study.memory import score_at
from study.models import build_model, MODELS
from study.tasks import build_task, TASKS
torch.set_num_threads(1)
arch, lag, n = {arch!r}, {lag}, {n}
task = build_task("copy", TASKS.get("copy").config(lag=lag))
torch.manual_seed(0)
m = build_model(arch, MODELS.get(arch).config(d_model=64), task.io, task.default_seq_len(64), 64).eval()
score_at(m, task, 64, n, 0, "cpu")
base = maxrss_bytes()
t0 = time.perf_counter()
row = score_at(m, task, lag, n, 0, "cpu")
print(json.dumps({{"extra_bytes": maxrss_bytes() - base, "base_bytes": base, "seconds": time.perf_counter() - t0,
                  "seq_len": task.default_seq_len(lag), "score": row["score"]}}))
"""


def main() -> None:
    from bench.common import loadavg, table, write
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=16, help="sequences per lag (eval_batch)")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's adaptive mmap threshold on")
    args = ap.parse_args()
    load0 = loadavg()
    lags = [1000, 10000] if args.quick else [1000, 10000, 100000]
    rows, out = [], []
    for arch in ["lstm", "lmu", "ssm"]:
        for lag in lags:
            t0 = time.time()
            r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), arch=arch, lag=lag, n=args.n)],
                               capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, **({} if args.default_malloc else {"MALLOC_MMAP_THRESHOLD_": "131072"})})
            if r.returncode:
                raise SystemExit(r.stderr[-2000:])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            ids = args.n * res["seq_len"] * 8
            rows.append([arch, lag, res["seq_len"], round(res["extra_bytes"] / 2 ** 20, 1), round(ids / 2 ** 20, 1),
                         round(res["base_bytes"] / 2 ** 20), round(res["seconds"], 1)])
            out.append({"arch": arch, "lag": lag, "n": args.n, "input_ids_bytes": ids, **res,
                        "wall_s": time.time() - t0})
            print(rows[-1], flush=True)
    print(table(["arch", "lag", "seq_len", "extra peak MiB", "of which input ids MiB", "baseline RSS MiB",
                 "score_at s"], rows))
    print("load:", load0, "->", loadavg())
    write("stream_memory", {"load_before": load0, "default_malloc": args.default_malloc, "rows": out})


if __name__ == "__main__":
    main()
