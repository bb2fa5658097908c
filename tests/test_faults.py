"""Faults are results: divergence, out-of-memory, early stopping, and multi-objective search."""
from __future__ import annotations

import duckdb
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

BASE = """\
study: {name}
task: {{name: copy, n_symbols: 2, alphabet: 4, lag: 4}}
fixed: {{arch: lstm, batch_size: 8, eval_batch: 8}}
budget: {{steps: {steps}, eval_every: {every}}}
max_failures: 0
"""


def journal(d) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(d / "optuna.journal")))


def only_study(d) -> tuple[optuna.Study, str]:
    """A one-cell study's Optuna study ("all <cell id>", study/identity.py) and its cell id."""
    (name,) = optuna.get_all_study_names(journal(d))
    assert name.startswith("all c")
    return optuna.load_study(study_name=name, storage=journal(d)), name.split()[-1]


def rows(d, sql: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW trials AS SELECT * FROM read_parquet('{d}/parquet/trials/*.parquet')")
    con.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{d}/parquet/metrics/*/*.parquet')")
    return con.execute(sql).fetchall()


def test_diverged_and_oom_trials_are_results(tmp_path, write_spec):
    spec = write_spec(BASE.format(name="faults", steps=30, every=10) + """\
grid:
  d_model: [16, 1000000]     # a million-wide LSTM cannot be allocated: a real host OOM
  lr: [3.0e-3, 1.0e+37]      # Adam moves every weight by ~10 x lr per step: inf, then NaN
""")
    r = run_cli("run", str(spec), "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    got = rows(tmp_path / "faults", "SELECT d_model, lr, status, error, steps, memory_length FROM trials ORDER BY 1, 2")
    assert [(g[0], g[2]) for g in got] == [(16, "completed"), (16, "diverged"), (1000000, "oom"), (1000000, "oom")]
    assert got[0][5] is not None and got[0][4] == 30
    assert "at step" in got[1][3] and got[1][4] < 30
    assert "not built" in got[2][3]       # refused by the memory estimate before allocating
    for st in optuna.get_all_study_summaries(journal(tmp_path / "faults")):
        (t,) = optuna.load_study(study_name=st.study_name, storage=journal(tmp_path / "faults")).trials
        assert t.state == (TrialState.COMPLETE if st.study_name.startswith("d_model=16,lr=0.003 ") else TrialState.FAIL)


def test_asha_stopped_trials_are_pruned_everywhere(tmp_path, write_spec):
    spec = write_spec(BASE.format(name="asha", steps=60, every=10) + """\
search:
  lr: {float: [1.0e-4, 3.0e-2], log: true}
  d_model: {int: [4, 32]}
trials_per_cell: 6
objective: {metric: final_loss, mode: min}
scheduler: {asha: {grace_period: 1, reduction_factor: 3}}
""")
    r = run_cli("run", str(spec), "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "asha"
    got = dict(rows(d, "SELECT trial_id, status FROM trials"))
    assert len(got) == 6 and "pruned" in got.values() and "completed" in got.values()
    st, cell = only_study(d)
    by_slot = {f"{cell}-t{t.user_attrs['slot']:03d}-s0": t.state for t in st.trials}
    for tid, status in got.items():
        assert by_slot[tid] == (TrialState.PRUNED if status == "pruned" else TrialState.COMPLETE), tid
    its = rows(d, "SELECT trial_id, max(iteration) FROM metrics GROUP BY 1")
    assert any(m < 6 for tid, m in its if got[tid] == "pruned")


def test_multi_objective_pareto_matches_sql(tmp_path, write_spec):
    spec = write_spec(BASE.format(name="pareto", steps=40, every=20) + """\
search:
  d_model: {int: [4, 48], log: true}
  lr: {float: [1.0e-3, 2.0e-2], log: true}
trials_per_cell: 6
objective: [{metric: memory_length, mode: max}, {metric: train_flops, mode: min}]
""")
    r = run_cli("run", str(spec), "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "pareto"
    sql_front = {x[0] for x in rows(d, """
        SELECT a.trial_id FROM trials a WHERE a.status = 'completed' AND NOT EXISTS (
          SELECT 1 FROM trials b WHERE b.status = 'completed' AND b.memory_length >= a.memory_length
            AND b.train_flops <= a.train_flops
            AND (b.memory_length > a.memory_length OR b.train_flops < a.train_flops))""")}
    st, cell = only_study(d)
    assert [s.name for s in st.directions] == ["MAXIMIZE", "MINIMIZE"]
    optuna_front = {f"{cell}-t{t.user_attrs['slot']:03d}-s0" for t in st.best_trials}
    assert sql_front and optuna_front == sql_front
