"""Faults injected into a study's files and processes, each of which memscale must survive: a torn
Optuna journal, a truncated trials file and checkpoint, a corrupt study.duckdb, a report killed
midway, two drivers starting at once, two embedded Rays on one machine, a request no node can
meet, a trial too big for memory, and Ctrl-C."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import optuna
import pytest
import ray
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study import locks, sweep
from study.cli import main
from study.config import Budget, UsageError
from study.journal import Journal
from study.locks import acquire_driver_lock
from study.results import Store
from study.sweep import run_study
from study.train import train
from study.validate import parse_spec
from tests.conftest import ROOT

SPEC = """\
study: rec
task: {name: copy, n_symbols: 2, alphabet: 4, lag: 4}
grid: {arch: [lstm]}
search:
  lr: {float: [1.0e-3, 1.0e-2], log: true}
fixed: {d_model: 8, batch_size: 4, eval_batch: 4}
trials_per_cell: 2
budget: {steps: 6, eval_every: 3}
"""


# ---- the driver lock -------------------------------------------------------------------------

def _race(path: str, barrier, wins) -> None:
    store = Store(path)
    barrier.wait()
    try:
        acquire_driver_lock(store)
        wins.put(os.getpid())
    except UsageError:
        wins.put(None)
    barrier.wait()          # the winner stays alive until every racer has tried


def test_two_drivers_starting_at_once_get_one_lock(tmp_path):
    ctx = mp.get_context("fork")
    n = 6
    barrier, wins = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, wins)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [wins.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(60)
    assert sum(g is not None for g in got) == 1, got


def test_a_dead_or_torn_lock_is_taken_over(tmp_path):
    store = Store(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "driver.json").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    acquire_driver_lock(store)
    assert json.loads((tmp_path / "driver.json").read_text())["pid"] == os.getpid()
    (tmp_path / "driver.json").write_text('{"pid": 12')          # torn mid-write
    acquire_driver_lock(store)
    with pytest.raises(UsageError, match="already running"):      # and now we hold it
        acquire_driver_lock(store)


# ---- the Optuna journal ----------------------------------------------------------------------

def _journal_with_trials(path: Path, n: int) -> optuna.Study:
    st = optuna.create_study(study_name="all", storage=JournalStorage(JournalFileBackend(str(path))),
                             load_if_exists=True)
    for _ in range(n):
        t = st.ask()
        t.suggest_float("x", 0, 1)
        st.tell(t, 1.0)
    return st


TORN = b'{"op_code": 4, "worker_id": "x", "study_id": 0, "datetime_st'      # a kill mid-write


def test_a_torn_journal_breaks_the_next_resume_unless_mended(tmp_path):
    """Optuna skips a partial last line when reading, but the next driver appends its records to
    it, and from then on that line (torn + new record) fails every load."""
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path, 2)
    path.write_bytes(path.read_bytes() + TORN)
    with pytest.raises(ValueError):       # json.JSONDecodeError
        _journal_with_trials(path, 1)
        optuna.load_study(study_name="all", storage=JournalStorage(JournalFileBackend(str(path)))).trials


def test_torn_journal_is_cut_back_and_resume_continues(tmp_path, capsys):
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path, 3)
    whole = path.read_bytes()
    path.write_bytes(whole + TORN)
    Journal(Store(str(tmp_path)))                                 # what a resume does first
    assert path.read_bytes() == whole
    assert "torn record" in capsys.readouterr().err
    _journal_with_trials(path, 1)                                 # the resumed driver's records
    again = optuna.load_study(study_name="all", storage=JournalStorage(JournalFileBackend(str(path))))
    assert len(again.trials) == 4


# ---- a real study: truncated Parquet and checkpoint, corrupt study.duckdb, resources ---------

@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _store(tmp_path: Path, text: str = SPEC):
    spec = parse_spec(text, "rec.yaml")
    store = Store(str(tmp_path / spec.study))
    store.write_bytes(text.encode(), "spec.yaml")
    return spec, store


@pytest.mark.slow
def test_truncated_files_are_quarantined_and_rerun(tmp_path, local_ray, capsys):
    spec, store = _store(tmp_path)
    assert run_study(spec, store) == 0
    d = Path(store.path)
    victim = sorted((d / "parquet" / "trials").glob("*.parquet"))[0]
    tid = victim.stem
    victim.write_bytes(victim.read_bytes()[:40])                           # truncated trials row
    ckpt = d / "checkpoints" / f"{tid}.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])                              # and its checkpoint
    (d / "study.duckdb").write_bytes(b"this is not a database" * 100)     # and the view cache

    assert main(["status", str(d)]) == 0                                   # status still answers
    err = capsys.readouterr().err
    assert "unreadable" in err and "quarantine" in err
    assert (d / "quarantine" / "parquet" / "trials" / victim.name).exists()

    assert run_study(spec, store) == 0                                     # resume reruns that trial
    rows = {r["trial_id"]: r for r in store.trial_rows()}
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"completed"}
    assert rows[tid]["resumed_from_step"] is None                          # from scratch, not the bad checkpoint

    capsys.readouterr()
    assert main(["sql", str(d), "SELECT count(*) AS n FROM trials"]) == 0
    assert capsys.readouterr().out.split()[2] == "2"
    con = duckdb.connect(str(d / "study.duckdb"), read_only=True)          # rebuilt for other clients
    assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 2


@pytest.mark.slow
def test_a_request_no_node_can_meet_is_refused(tmp_path, local_ray):
    spec, store = _store(tmp_path, SPEC + "resources: {cpu: 1, gpu: 1}\n")
    with pytest.raises(UsageError, match=r"lstm trials ask for 1 CPU and 1 GPU; the largest node .* 0 GPU"):
        run_study(spec, store)
    spec, store = _store(tmp_path, SPEC.replace("study: rec", "study: rec2") + "resources: {cpu: 64}\n")
    with pytest.raises(UsageError, match=r"64 CPU"):
        run_study(spec, store)


def test_the_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from analysis import report
    from analysis.synthetic import write_study
    write_study(tmp_path, n_trials=8, iterations=1)
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = parse_spec(SPEC)
    report.write_report(str(tmp_path), spec, n_boot=20)
    before = (tmp_path / "report" / "report.html").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(report.score_heatmap, "plot", killed)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(str(tmp_path), spec, n_boot=20)
    assert (tmp_path / "report" / "report.html").read_bytes() == before    # the old one, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


# ---- machine-wide: one embedded Ray per machine ----------------------------------------------

def test_a_second_embedded_ray_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(locks.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(locks, "_MACHINE_LOCK", None)
    locks.claim_machine(Store(str(tmp_path / "a")))
    first = locks._MACHINE_LOCK
    try:
        with pytest.raises(UsageError, match=r"another memscale driver \(pid \d+, study .*/a\).*--address auto"):
            locks.claim_machine(Store(str(tmp_path / "b")))
    finally:
        first.close()
    locks.claim_machine(Store(str(tmp_path / "b")))                      # free again once it exits
    locks._MACHINE_LOCK.close()


# ---- memory ----------------------------------------------------------------------------------

def test_a_trial_too_big_for_memory_is_oom_without_allocating():
    reports = []
    values = {"arch": "lstm", "task": "copy", "d_model": 1_000_000_000, "lag": 4, "batch_size": 4, "seed": 0}
    t0 = time.perf_counter()
    out = train(values, Budget(steps=2, eval_every=1), lambda m, c, k: reports.append(m))
    assert out["status"] == "oom" and "not built" in out["error"] and len(reports) == 1
    assert time.perf_counter() - t0 < 30


def test_memory_killed_worker_counts_as_oom():
    class T:
        def get_pickled_error(self):
            return RuntimeError("ray.exceptions.OutOfMemoryError: Task was killed due to the node running "
                                "low on memory. Memory on the node (IP: 10.0.0.1) ...")
    assert sweep.killed_for_memory(T(), "")
    assert not sweep.killed_for_memory(type("E", (), {"get_pickled_error": lambda self: ValueError("x")})(), "x")


@pytest.mark.slow
def test_a_worker_killed_by_rays_memory_monitor_is_an_oom_row(tmp_path):
    """A real Ray memory monitor with its threshold below what the machine already uses: it kills
    the trial's worker, and the sweep records `oom` and exits 0."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("trials_per_cell: 2", "trials_per_cell: 1").replace(
        "steps: 6, eval_every: 3", "steps: 3000, eval_every: 1000") + "max_failures: 0\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}
    r = subprocess.run([sys.executable, "-m", "study.cli", "run", str(spec), "--results", str(tmp_path / "r")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = Store(str(tmp_path / "r" / "rec")).trial_rows()
    assert row["status"] == "oom", row["error"]


# ---- Ctrl-C ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_says_why_and_how_to_resume(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("steps: 6, eval_every: 3", "steps: 4000, eval_every: 1000")
                    .replace("trials_per_cell: 2", "trials_per_cell: 4"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(spec), "--results", str(tmp_path / "r")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / "r" / "rec" / "checkpoints").exists():
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert f"study resume {tmp_path / 'r' / 'rec'}" in err, err
