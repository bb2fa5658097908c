"""Benchmark 4: orchestration overhead of `study run` against bare Ray Tune and the parallel minimum.

The same N one-second trials (lstm on copy, one cell, Optuna over lr, 1 CPU each), timed side by
side in one run, repeated `--runs` times, every other round with (b) first, so a drift in the machine's load does
not always favour the same variant:

(a) `study run SPEC --results TMP`, the real command in a fresh process (Ray started from nothing);
(b) bare Ray Tune, in a fresh process: `ray.init()`, a `Tuner` over a function trainable that
    calls `study.train.train` and `tune.report` with the learning rates (a) chose; no memscale
    searcher, callback, checkpoints or Parquet; actors reused and Tune's auto loggers off, as in (a);
(c) the parallel minimum: the sum of (b)'s trials' seconds inside `train` (training and
    evaluation, measured under the same concurrency) / the trials Ray runs at once, plus (b)'s
    `ray.init` seconds.

Also: seconds from the command to the first trial running (its `started_at`, stamped inside
`train`), for (a) and (b); and the fraction of each trial's wall time outside training steps.

    .venv/bin/python bench/bench_orchestration.py --trials 16 256 --runs 3
    .venv/bin/python bench/bench_orchestration.py --quick          # 4 trials, once
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

# (b): what a user of Ray Tune writes by hand around the same training function
BARE = """
import json, os, sys, time
t_start = float(sys.argv[1])
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
sys.path.insert(0, {root!r})
import ray, torch
from ray import tune
from study.config import Budget
from study.train import train

values = json.loads({values!r})
budget = {budget!r}

def trainable(config):
    torch.set_num_threads(1)
    train(values[config["i"]], Budget(**budget), lambda m, c, k: tune.report(m))

t0 = time.perf_counter()
ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
init_s = time.perf_counter() - t0
tuner = tune.Tuner(tune.with_resources(trainable, {{"cpu": 1}}),
                   param_space={{"i": tune.grid_search(list(range(len(values))))}},
                   tune_config=tune.TuneConfig(reuse_actors=True),
                   run_config=tune.RunConfig(storage_path={storage!r}, verbose=0))
grid = tuner.fit()
rows = [{{k: r.metrics[k] for k in ("wall_s", "started_at", "ended_at")}} for r in grid]
print(json.dumps({{"init_s": init_s, "rows": rows, "cpus": ray.cluster_resources().get("CPU", 1)}}))
"""


def seconds(d) -> float:       # Parquet timestamps come back as datetimes, JSON ones as floats
    return d.total_seconds() if hasattr(d, "total_seconds") else d


def stamp(d) -> float:
    return d.timestamp() if hasattr(d, "timestamp") else d


def run_study(tmp: Path, name: str, n: int, steps: int, every: int) -> dict:
    spec = tmp / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, n=n, steps=steps, every=every))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    t_cmd = time.time()
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "study.cli", "run", str(spec), "--results", str(tmp / "results")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    rows = pq.read_table(tmp / "results" / name / "parquet" / "trials").to_pylist()
    return {"wall_s": wall, "rows": rows, "first_trial_s": min(stamp(x["started_at"]) for x in rows) - t_cmd}


def run_bare(tmp: Path, values: list[dict], budget: dict) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    storage = str(tmp / "bare")
    code = BARE.format(root=str(ROOT), values=json.dumps(values), budget=budget, storage=storage)
    t_cmd = time.time()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, str(t_cmd)], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out.update(wall_s=wall, first_trial_s=min(x["started_at"] for x in out["rows"]) - t_cmd)
    return out


def outside(rows: list[dict]) -> list[float]:
    return [1 - r["wall_s"] / seconds(r["ended_at"] - r["started_at"]) for r in rows]


def one_round(n: int, steps: int, every: int, lrs: list[float] | None = None) -> dict:
    """(a) then (b) on the learning rates (a) chose; given `lrs` (an earlier round's), (b) first,
    so that a machine whose load drifts does not always favour the same variant; (c) from (b)."""
    from study.config import cells, given_values
    from study.validate import parse_spec
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "s.yaml").write_text(SPEC.format(name="s", n=n, steps=steps, every=every))
        spec = parse_spec((tmp / "s.yaml").read_text())
        cell = cells(spec)[0]
        bare = lambda xs: run_bare(tmp, [{**given_values(spec, cell, {"lr": x}), "seed": 0} for x in xs],
                                   spec.budget.model_dump())
        b = bare(lrs) if lrs else None
        a = run_study(tmp, "orch", n, steps, every)
        rows = sorted(a["rows"], key=lambda r: r["trial_id"])
        b = b or bare([r["lr"] for r in rows])
    in_train = [seconds(r["ended_at"] - r["started_at"]) for r in b["rows"]]
    c = sum(in_train) / b["cpus"] + b["init_s"]
    return {"b_first": bool(lrs), "lrs": [r["lr"] for r in rows], "a_s": a["wall_s"], "b_s": b["wall_s"], "c_s": c, "ray_init_s": b["init_s"],
            "a_first_trial_s": a["first_trial_s"], "b_first_trial_s": b["first_trial_s"],
            "a_train_s": sum(r["wall_s"] for r in rows), "b_train_s": sum(r["wall_s"] for r in b["rows"]),
            "b_in_train_s": sum(in_train), "concurrent": b["cpus"],
            "a_outside": outside(rows), "b_outside": outside(b["rows"])}


def main() -> None:
    from bench.common import loadavg, median, table, write
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 trials of 40 steps, once")
    ap.add_argument("--trials", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150, help="training steps per trial (~1 s on this machine)")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.runs, args.steps = [4], 1, 40
    every = max(1, args.steps // 3)
    res: dict = {"load_before": loadavg(), "steps": args.steps, "eval_every": every, "rounds": {}}
    rows = []
    for n in args.trials:
        rounds = []
        for i in range(args.runs):
            r = one_round(n, args.steps, every, rounds[-1]["lrs"] if i % 2 else None)
            r["load"] = loadavg()
            rounds.append(r)
            print(f"{n} trials, run {i + 1}: a {r['a_s']:.1f} s, b {r['b_s']:.1f} s, c {r['c_s']:.1f} s, "
                  f"a/b {r['a_s'] / r['b_s']:.2f}, a/c {r['a_s'] / r['c_s']:.2f}, first trial a "
                  f"{r['a_first_trial_s']:.1f} s b {r['b_first_trial_s']:.1f} s (load {r['load']})", flush=True)
        res["rounds"][n] = rounds
        m = lambda k: median([r[k] for r in rounds])
        rows.append([n, f"{m('b_in_train_s') / n:.2f}", f"{m('a_s'):.1f}", f"{m('b_s'):.1f}", f"{m('c_s'):.1f}",
                     f"{median([r['a_s'] / r['b_s'] for r in rounds]):.2f}",
                     f"{median([r['a_s'] / r['c_s'] for r in rounds]):.2f}",
                     f"{m('a_first_trial_s'):.1f}", f"{m('b_first_trial_s'):.1f}",
                     f"{100 * median([median(r['a_outside']) for r in rounds]):.1f}%"])
    print(table(["trials", "s in train / trial", "(a) study run s", "(b) bare Tune s", "(c) minimum s",
                 "a/b", "a/c", "first trial (a) s", "first trial (b) s", "outside training (a)"], rows))
    print("load:", res["load_before"], "->", loadavg())
    write("orchestration", res)


if __name__ == "__main__":
    main()
