"""Benchmark (not a test): the results layer at N trials x 10 evaluations (issue 17).

Writes a study through the driver's own writer path, call by call as the results callback makes
them (ReportWriter.report per evaluation; at a trial's end ReportWriter.finish, which writes the
trial's batch, Store.write_trial and the Compactor), with the rows of analysis/synthetic.py, then times the real commands in fresh
processes. Leaves the study in DIR, prints one JSON line.

    .venv/bin/python bench/bench_scale.py --trials 1000 [--dir DIR]

resume_start_s: a fresh process reads the trials table and builds the searcher (one Optuna study
per cell, every slot reconciled) until its first trial is suggested; Ray's own start-up, the same
at any N, is not included.
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

import numpy as np

HERE = Path(__file__).resolve().parent
STUDY = Path(sys.executable).parent / "study"
EVALS = 10


def rows_of(n: int):
    """Per trial: (trials row, [(metrics row, curve rows)] * EVALS), from the synthetic columns."""
    from analysis.synthetic import curves_columns, metrics_columns, trials_columns
    t = trials_columns(n)
    m, c = metrics_columns(t, EVALS), curves_columns(t, EVALS)
    py = lambda v: v.item() if isinstance(v, np.generic) else v                 # noqa: E731
    by_trial: dict[str, dict[int, list]] = {}
    for j, (tid, it) in enumerate(zip(c["trial_id"], c["iteration"])):
        by_trial.setdefault(tid, {}).setdefault(int(it), []).append(j)
    mk = {(tid, int(it)): j for j, (tid, it) in enumerate(zip(m["trial_id"], m["iteration"]))}
    for i, tid in enumerate(t["trial_id"]):
        trial = {k: py(v[i]) for k, v in t.items()}
        evals = []
        for it in range(1, EVALS + 1):
            j = mk.get((tid, it))
            metrics = {k: py(v[j]) for k, v in m.items()} if j is not None else {"iteration": it, "step": it * 100}
            curve = [{k: py(v[q]) for k, v in c.items() if k not in ("trial_id", "iteration", "study")}
                     for q in by_trial.get(tid, {}).get(it, [])]
            evals.append((metrics, curve))
        yield trial, evals


def write(study_dir: Path, n: int) -> tuple[int, float]:
    from analysis.synthetic import ONE_OBJECTIVE, SPEC, trials_per_cell
    from study.config import MAX_TRIALS
    from study.results import Compactor, ReportWriter, Store
    store = Store(str(study_dir))
    writer = ReportWriter(store, "synthetic")
    # slots left over for a resume to schedule: one more per cell, unless the rounding up already
    # leaves some (100,000 trials fill 2,084 slots x 48 but for 32; 2,085 would pass the spec's cap)
    per_cell = trials_per_cell(n) + (1 if trials_per_cell(n) * 48 == n else 0)
    if per_cell * 48 > MAX_TRIALS:
        raise SystemExit(f"--trials {n}: a spec holds at most {MAX_TRIALS} trials (48 per slot); "
                         f"the largest with slots left is {(MAX_TRIALS // 48 - 1) * 48}")
    store.write_bytes((SPEC % (per_cell, ONE_OBJECTIVE)).encode(), "spec.yaml")
    compactor = Compactor(store)
    reports, busy, cpu = 0, 0.0, 0.0
    for trial, evals in rows_of(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        for metrics, curve in evals:             # ResultsCallback.on_trial_result
            writer.report(trial["trial_id"], metrics, curve)
            writer.flush_due()
            reports += 1
        writer.finish(trial["trial_id"])         # ResultsCallback._finish
        store.write_trial(trial)
        compactor.trial_finished()
        busy += time.perf_counter() - t0
        cpu += time.thread_time() - c0
    t0 = time.perf_counter()
    writer.close()
    compactor.close()                             # the end of the run
    busy += time.perf_counter() - t0
    write.cpu = cpu       # the writer's own CPU seconds (this thread; not the compactor's)
    return reports, busy


def write_bulk(study_dir: Path, n: int) -> None:
    """The same study in the layout the writer path leaves once compacted (segments of
    COMPACT_BATCH trials each, sorted by trial), written directly: for timing the commands at N
    where the writer path would take hours on a loaded machine. Not a write-rate measurement."""
    import io
    import pyarrow.parquet as pq
    from analysis.synthetic import ONE_OBJECTIVE, SPEC, _take, curves_columns, metrics_columns, table, trials_columns, trials_per_cell
    from study.config import MAX_TRIALS
    from study.results import COMPACT_BATCH, SEGMENT, Store
    store = Store(str(study_dir))
    per_cell = trials_per_cell(n) + (1 if trials_per_cell(n) * 48 == n else 0)
    if per_cell * 48 > MAX_TRIALS:
        raise SystemExit(f"--trials {n}: a spec holds at most {MAX_TRIALS} trials")
    store.write_bytes((SPEC % (per_cell, ONE_OBJECTIVE)).encode(), "spec.yaml")
    t = trials_columns(n)
    for name, cols in (("trials", t), ("metrics", metrics_columns(t, EVALS)), ("lag_curves", curves_columns(t, EVALS))):
        cols = _take(cols, np.argsort(cols["trial_id"], kind="stable"))
        tid = cols["trial_id"]
        uniq = np.unique(tid)
        for k in range(0, len(uniq), COMPACT_BATCH):
            lo = np.searchsorted(tid, uniq[k])
            hi = np.searchsorted(tid, uniq[min(k + COMPACT_BATCH, len(uniq)) - 1], side="right")
            buf = io.BytesIO()
            pq.write_table(table(name, _take(cols, slice(lo, hi))), buf, row_group_size=128_000)
            seg = store.segment_dir(name)[len(store.path.rstrip("/")) + 1:].split("/")
            store.write_bytes(buf.getvalue(), *seg, f"{SEGMENT}{time.time_ns():020d}-{k:08d}.parquet")


def timed(*args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one fresh process; its CPU seconds (user + system, which
    a loaded machine inflates far less than wall time) go to timed.cpu."""
    t0 = time.perf_counter()
    p = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {p.stderr.read().decode()[-2000:]}")
    timed.cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss * 1024 / 1e9


def resume_probe(study_dir: str) -> None:
    """The driver's start-up up to its first suggested trial (study.sweep._run, before Tuner.fit)."""
    from study.cli import open_study
    from study.sweep import CellSearcher
    store, spec = open_study(study_dir)
    finished = {r["trial_id"]: r for r in store.trial_rows()}
    searcher = CellSearcher(spec, store, finished)
    assert searcher.suggest("probe") not in (None, "FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, required=True)
    ap.add_argument("--dir", default=None, help="where the study is left (default: a new temporary folder)")
    ap.add_argument("--reuse", action="store_true",
                    help="time the commands again on the study already in --dir (results_per_s: null)")
    ap.add_argument("--bulk", action="store_true",
                    help="write the compacted layout directly, not through the writer path (results_per_s: null)")
    ap.add_argument("--resume-probe", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.resume_probe:
        resume_probe(a.resume_probe)
        return
    d = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_scale_")) / "synthetic"
    if d.exists() and any(d.iterdir()) and not a.reuse:
        raise SystemExit(f"{d}: exists and is not empty")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if a.bulk and not a.reuse:
        write_bulk(d, a.trials)
    reports, busy = write(d, a.trials) if not (a.reuse or a.bulk) else (0, 0.0)
    files = sum(1 for _ in (d / "parquet").rglob("*.parquet"))
    out = {"trials": a.trials, "files": files, "results_per_s": round(reports / busy, 1) if busy else None,
           "results_per_cpu_s": round(reports / write.cpu, 1) if busy else None}
    st = str(STUDY)
    cpu = {}
    out["sql_count_s"], _ = timed(st, "sql", str(d), "SELECT count(*) FROM metrics")
    cpu["sql_count"] = timed.cpu
    out["sql_group_s"], _ = timed(st, "sql", str(d), "SELECT arch, status, count(*), avg(memory_length) "
                                  "FROM trials GROUP BY ALL")
    cpu["sql_group"] = timed.cpu
    out["report_s"], out["report_rss_gb"] = timed(st, "report", str(d))
    cpu["report"] = timed.cpu
    out["status_s"], _ = timed(st, "status", str(d))
    cpu["status"] = timed.cpu
    out["resume_start_s"], _ = timed(sys.executable, __file__, "--trials", "0", "--resume-probe", str(d))
    cpu["resume_start"] = timed.cpu
    out["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    out.update({"dir": str(d), "load_before": load_before,
                "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
