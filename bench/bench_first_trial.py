"""Where the seconds before the first trial go: `study run` of a 2-trial study (lstm on copy, one
cell), in a fresh process per run, with time stamps from the process's start to: study.cli
imported, ray.init called and returned, Tuner.fit called, the first trial's `started_at`
(stamped inside study.train.train once its model and optimiser are built) and the command's end.

    .venv/bin/python bench/bench_first_trial.py [--runs 3]

Prints each run's stamps and their medians; run it on a quiet machine (the figures are seconds of
start-up, which any other load stretches).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
study: first_trial
task: {name: copy, n_symbols: 3, alphabet: 4}
grid: {arch: [lstm], lag: [16]}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
fixed: {d_model: 64, batch_size: 32, eval_batch: 32}
trials_per_cell: 2
budget: {steps: 20, eval_every: 10}
resources: {cpu: 1, gpu: 0}
seeds: [0]
"""

# the measured process: `study run` in-process, ray.init and Tuner.fit wrapped to stamp the time
CHILD = """
import json, sys, time
T0 = time.time()
stamps = {}
import study.cli as cli
stamps["imported study.cli"] = time.time() - T0
import ray
import study.sweep as sweep
_init, _fit = ray.init, sweep.Tuner.fit
def init(*a, **k):
    stamps["ray.init called"] = time.time() - T0
    r = _init(*a, **k)
    stamps["ray.init returned"] = time.time() - T0
    return r
def fit(self):
    stamps["Tuner.fit called"] = time.time() - T0
    return _fit(self)
ray.init, sweep.Tuner.fit = init, fit
spec, res = sys.argv[1], sys.argv[2]
sys.argv = ["study", "run", spec, "--results", res]
try:
    cli.main()
except SystemExit:
    pass
import pyarrow.parquet as pq
rows = pq.read_table(res + "/first_trial/parquet/trials").to_pylist()
stamps["first trial started"] = min(r["started_at"].timestamp() for r in rows) - T0
stamps["study run done"] = time.time() - T0
print("STAMPS" + json.dumps(stamps))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.common import loadavg, table, write
    load0, runs = loadavg(), []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "spec.yaml"
            spec.write_text(SPEC)
            env = {**os.environ, "TMPDIR": tmp}      # a machine lock of its own (study/sweep.py claim_machine)
            r = subprocess.run([sys.executable, "-c", CHILD, str(spec), str(Path(tmp) / "results")],
                               capture_output=True, text=True, cwd=ROOT, env=env)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("STAMPS")]
        if not line:
            sys.exit(f"run {i + 1} failed: {r.stderr.strip().splitlines()[-3:]}")
        runs.append(json.loads(line[0][len("STAMPS"):]))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), f"(load {loadavg()})", flush=True)
    keys = list(runs[0])
    rows = [[k, f"{statistics.median(r[k] for r in runs):.2f}", " / ".join(f"{r[k]:.2f}" for r in runs)] for k in keys]
    print(table(["seconds from the command's start to", "median", "runs"], rows))
    print("load:", load0, "->", loadavg())
    write("first_trial", {"load_before": load0, "runs": runs})


if __name__ == "__main__":
    main()
