"""Kill the driver (SIGKILL) at three moments, resume each time: nothing lost, nothing twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SPEC = """\
study: killme
task: {name: copy, n_symbols: 2, alphabet: 4}
grid: {arch: [lstm], lag: [4, 8]}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
fixed: {d_model: 16, batch_size: 8, eval_batch: 8}
trials_per_cell: 2
seeds: [0, 1]
budget: {steps: 200, eval_every: 20, checkpoint_every: 1}
"""
EVALS = 10          # steps / eval_every


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def crash(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and the local Ray it started, as a lost machine would."""
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_until(pred, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, "the study finished before the planned kill:\n" + proc.stdout.read()
        assert time.time() - t0 < timeout, "timed out waiting for the kill moment"
        time.sleep(0.2)


def n_files(d: Path, sub: str) -> int:
    p = d / "parquet" / sub
    return sum(1 for f in p.rglob("*.parquet")) if p.exists() else 0


def test_sigkill_three_times_then_resume(tmp_path):
    t0 = time.time()
    spec = tmp_path / "killme.yaml"
    spec.write_text(SPEC)
    d = tmp_path / "results" / "killme"

    p = start("run", str(spec), "--results", str(tmp_path / "results"))
    wait_until(lambda: n_files(d, "metrics") >= 3, p)                  # 1: mid-trial, nothing finished
    crash(p)
    assert n_files(d, "trials") == 0

    p = start("resume", str(d))
    wait_until(lambda: n_files(d, "trials") >= 2, p)                   # 2: some finished, others mid-way
    crash(p)

    p = start("resume", str(d))
    wait_until(lambda: n_files(d, "trials") >= 5, p)                   # 3: late in the study
    crash(p)

    p = start("resume", str(d))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    elapsed = time.time() - t0

    con = duckdb.connect()
    con.execute(f"CREATE VIEW trials AS SELECT * FROM read_parquet('{d}/parquet/trials/*.parquet')")
    con.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{d}/parquet/metrics/*/*.parquet')")
    con.execute(f"CREATE VIEW lag_curves AS SELECT * FROM read_parquet('{d}/parquet/lag_curves/*/*.parquet')")
    q = lambda sql: con.execute(sql).fetchall()                                      # noqa: E731
    assert q("SELECT count(*), count(DISTINCT trial_id) FROM trials") == [(8, 8)]     # 2 cells x 2 slots x 2 seeds
    assert q("SELECT DISTINCT status FROM trials") == [("completed",)]
    assert q("SELECT count(*) = count(DISTINCT (trial_id, iteration)) FROM metrics") == [(True,)]
    assert q("SELECT count(*) = count(DISTINCT (trial_id, step, lag)) FROM lag_curves") == [(True,)]
    per_trial = q("SELECT trial_id, count(*), min(iteration), max(iteration) FROM metrics GROUP BY 1")
    assert len(per_trial) == 8 and all(c == EVALS and lo == 1 and hi == EVALS for _, c, lo, hi in per_trial)
    assert q("SELECT count(*) FROM trials WHERE resumed_from_step > 0")[0][0] >= 1    # continued, not restarted
    # the seeds of a slot share one configuration
    assert q("SELECT count(*) FROM (SELECT cell, regexp_replace(trial_id, '-s[0-9]+$', '') AS slot, count(DISTINCT lr) AS n "
             "FROM trials GROUP BY ALL) WHERE n > 1") == [(0,)]

    storage = JournalStorage(JournalFileBackend(str(d / "optuna.journal")))
    names = optuna.get_all_study_names(storage)                 # "<label> <cell id>" (study/identity.py)
    assert sorted(n.split()[0] for n in names) == ["arch=lstm,lag=4", "arch=lstm,lag=8"]
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert sorted(t.user_attrs["slot"] for t in trials if t.state == TrialState.COMPLETE) == [0, 1]
    print(f"\nkill-and-resume test: 8 trials, 3 SIGKILLs, {elapsed:.0f} s wall")
