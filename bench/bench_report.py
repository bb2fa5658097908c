"""Benchmark (not a test): how long `study report` takes on a large study.

Writes a synthetic study (analysis/synthetic.py) with N trials rows and M metrics rows into a
temporary folder, then times the real command `study report DIR` end to end (a fresh process per
run, so imports count) and, in-process, each stage of analysis.report.write_report. The synthetic
Parquet is written as a few large files ("bulk"); a real sweep writes one file per trial and per
iteration, whose cost `--real-layout N` measures separately on N trials.

    .venv/bin/python bench/bench_report.py                      # 100k trials, 1M metrics rows, 3 runs
    .venv/bin/python bench/bench_report.py --trials 10000 --metrics-per-trial 10 --runs 1
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from analysis.report import write_report
from analysis.synthetic import write_study
from study.validate import parse_spec


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}"


def time_cli(study: Path, runs: int) -> list[float]:
    exe = Path(sys.executable).parent / "study"
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "report", str(study)], check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def bench(n_trials: int, per_trial: int, runs: int, layout: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        study = tmp / "synthetic"
        t0 = time.perf_counter()
        write_study(study, n_trials=n_trials, iterations=per_trial, layout=layout)
        gen = time.perf_counter() - t0
        con = duckdb.connect()
        count = lambda t, g: con.execute(f"SELECT count(*) FROM read_parquet('{study}/parquet/{t}/{g}')").fetchone()[0]
        rows = {"trials": count("trials", "*.parquet"), "metrics": count("metrics", "*/*.parquet"),
                "lag_curves": count("lag_curves", "*/*.parquet")}
        files = sum(1 for _ in (study / "parquet").rglob("*.parquet"))
        cli = time_cli(study, runs)
        stages: dict[str, float] = {}
        write_report(str(study), parse_spec((study / "spec.yaml").read_text()), timings=stages)
        return {"layout": layout, "rows": rows, "files": files, "generate_s": round(gen, 2),
                "cli_runs_s": [round(x, 2) for x in cli], "cli_median_s": round(statistics.median(cli), 2),
                "stages_s": {k: round(v, 2) for k, v in stages.items()}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100_000)
    ap.add_argument("--metrics-per-trial", type=int, default=10, help="metrics rows = trials x this")
    ap.add_argument("--runs", type=int, default=3, help="timed `study report` runs (median reported)")
    ap.add_argument("--real-layout", type=int, default=0, metavar="N",
                    help="also time a study of N trials in the sweep's one-file-per-trial layout")
    ap.add_argument("--json", default=str(Path(tempfile.gettempdir()) / "bench_report.json"))
    a = ap.parse_args()
    results = [bench(a.trials, a.metrics_per_trial, a.runs, "bulk")]
    if a.real_layout:
        results.append(bench(a.real_layout, 2, a.runs, "per_trial"))
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "date": dt.date.today().isoformat(), "results": results}
    print(f"{'layout':<10} {'trials':>8} {'metrics':>9} {'lag_curves':>10} {'files':>7} {'median s':>9}  runs")
    for r in results:
        print(f"{r['layout']:<10} {r['rows']['trials']:>8} {r['rows']['metrics']:>9} {r['rows']['lag_curves']:>10} "
              f"{r['files']:>7} {r['cli_median_s']:>9}  {r['cli_runs_s']}")
        print("  stages (s): " + ", ".join(f"{k} {v}" for k, v in r["stages_s"].items()))
    Path(a.json).write_text(json.dumps(record, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
