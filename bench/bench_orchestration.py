"""Benchmark 4: orchestration overhead of `study run` (Ray Tune + Optuna + Parquet) against the
same trainings in a plain Python loop calling `study.train.train`.

1. A spec with 16 short trials (lstm on copy, one cell, Optuna over lr, 1 CPU each) is written to
   a temporary folder and run with the real command `study run SPEC --results TMP` in a subprocess;
   its wall time includes starting Ray. Then the same 16 configurations (the lr values Optuna chose,
   read back from the trials table) are trained one after another in a plain loop, also in a fresh
   subprocess with 1 torch thread. Ray runs 2 trials at a time on this 2-core machine, the loop one.
2. From the trials table: the fraction of each trial's wall time (ended_at - started_at, both
   stamped inside `train`) not spent in training steps (`wall_s`): evaluation, reporting,
   checkpointing. Parquet is written by the driver, outside the trial, and shows up in (1).
   Full runs add 2 trials of ~30 s of training (`--long-s`) for the fraction at that length.

    .venv/bin/python bench/bench_orchestration.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = """\
study: {name}
task: {{name: copy, n_symbols: 3, alphabet: 4}}
grid: {{arch: [lstm], lag: [16]}}
search: {{lr: {{float: [1.0e-3, 1.0e-2], log: true}}}}
fixed: {{d_model: 64, batch_size: 32, eval_batch: 32}}
trials_per_cell: {n}
budget: {{steps: {steps}, eval_every: {every}}}
resources: {{cpu: 1, gpu: 0}}
seeds: [0]
"""

LOOP = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from study.config import Budget
from study.train import train
torch.set_num_threads(1)
t0 = time.perf_counter()
rows = [train(v, Budget(**{budget!r}), lambda m, c, k: None) for v in json.loads({values!r})]
print(json.dumps({{"wall": time.perf_counter() - t0, "rows": [{{k: r[k] for k in ("wall_s", "started_at", "ended_at")}} for r in rows]}}))
"""


def run_study(tmp: Path, name: str, n: int, steps: int, every: int) -> tuple[float, list[dict]]:
    spec = tmp / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, n=n, steps=steps, every=every))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "study.cli", "run", str(spec), "--results", str(tmp / "results")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    rows = pq.read_table(tmp / "results" / name / "parquet" / "trials").to_pylist()
    return wall, rows


def outside(rows: list[dict]) -> list[float]:
    def seconds(d):     # Parquet timestamps come back as datetimes, the plain loop's as floats
        return d.total_seconds() if hasattr(d, "total_seconds") else d
    return [1 - r["wall_s"] / seconds(r["ended_at"] - r["started_at"]) for r in rows]


def main() -> None:
    from bench.common import loadavg, median, table, write
    from study.config import cells, given_values, parse_spec
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 trials of a few seconds, no long trials")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--long-s", type=float, default=30.0)
    args = ap.parse_args()
    load0 = loadavg()
    n, steps = (4, 40) if args.quick else (16, args.steps)
    every = max(1, steps // 3)
    res: dict = {"load_before": load0}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ray_wall, rows = run_study(tmp, "orch", n, steps, every)
        rows.sort(key=lambda r: r["trial_id"])
        spec = parse_spec((tmp / "orch.yaml").read_text())
        cell = cells(spec)[0]
        values = [{**given_values(spec, cell, {"lr": r["lr"]}), "seed": 0} for r in rows]
        budget = spec.budget.model_dump()
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", LOOP.format(root=str(ROOT), budget=budget, values=json.dumps(values))],
                           capture_output=True, text=True, cwd=ROOT)
        loop_proc = time.perf_counter() - t0
        if p.returncode:
            raise SystemExit(p.stderr[-3000:])
        loop = json.loads(p.stdout.strip().splitlines()[-1])
        train_s = [r["wall_s"] for r in rows]
        res.update(n_trials=n, steps=steps, eval_every=every, ray_wall_s=ray_wall, loop_wall_s=loop_proc,
                   loop_in_process_s=loop["wall"], ray_trial_train_s=train_s,
                   ray_outside=outside(rows), loop_outside=outside(loop["rows"]))
        table_rows = [["16 short trials" if n == 16 else f"{n} short trials", f"{median(train_s):.1f}",
                       f"{ray_wall:.1f}", f"{loop_proc:.1f}", f"{ray_wall / loop_proc:.2f}",
                       f"{100 * median(outside(rows)):.1f}%", f"{100 * median(outside(loop['rows'])):.1f}%"]]
        if not args.quick:
            per_step = median(train_s) / steps
            long_steps = int(args.long_s / per_step)
            wall2, rows2 = run_study(tmp, "orch_long", 2, long_steps, max(1, long_steps // 3))
            res.update(long_steps=long_steps, long_ray_wall_s=wall2, long_train_s=[r["wall_s"] for r in rows2],
                       long_outside=outside(rows2))
            table_rows.append(["2 long trials", f"{median([r['wall_s'] for r in rows2]):.1f}", f"{wall2:.1f}", "—",
                               "—", f"{100 * median(outside(rows2)):.1f}%", "—"])
    print(table(["run", "median train s / trial", "study run wall s", "plain loop wall s", "ratio",
                 "outside training (Ray trial)", "outside training (loop)"], table_rows))
    print("load:", load0, "->", loadavg())
    write("orchestration", res)


if __name__ == "__main__":
    main()
