"""Every query file runs on a synthetic study; frontier, power law and crossovers match answers
worked out by hand on small fixtures written through study.results.Store (the real schema)."""
from __future__ import annotations

import math

import pytest

from analysis import db
from analysis.synthetic import write_study
from study.results import Store


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    write_study(d, n_trials=96, iterations=2)
    return db.connect(str(d))


def rows_of(study_dir: str, query: str) -> list[dict]:
    cols, rows = db.run_query(study_dir, query)
    return [dict(zip(cols, r)) for r in rows]


@pytest.mark.parametrize("name", db.query_names())
def test_every_query_runs_and_states_its_question(synthetic, name):
    assert db.question(name).endswith("?"), f"{name}.sql: first line must be the question"
    rows = synthetic.execute(f"SELECT * FROM {name}").fetchall()
    assert rows, f"{name} returned no rows on the synthetic study"


def test_queries_run_on_an_empty_study(tmp_path):
    Store(str(tmp_path)).write_bytes(b"study: empty\n", "spec.yaml")
    con = db.connect(str(tmp_path))
    for name in db.query_names():
        assert con.execute(f"SELECT * FROM {name}").fetchall() == []


def trial(tid, arch, flops, ml, status="completed", lag=8, window=None, seq_len=28, wall_s=1.0, **kw):
    return {"study": "hand", "trial_id": tid, "cell": f"arch={arch},lag={lag}", "arch": arch, "task": "copy",
            "seed": 0, "lag": lag, "window": window, "seq_len": seq_len, "train_flops": flops, "memory_length": ml,
            "status": status, "tokens": 1000 * seq_len, "steps": 100, "wall_s": wall_s, "peak_mem_bytes": 10 ** 6,
            "tau": 0.9, "solved": ml is not None and ml >= lag, **kw}


def test_frontier_matches_hand_computed(tmp_path):
    store = Store(str(tmp_path))
    for row in [
        trial("a1", "a", 1e9, 2),
        trial("a2", "a", 2e9, 2),               # same L*, more compute: dominated by a1
        trial("a3", "a", 3e9, 5),
        trial("a4", "a", 3e9, 4),               # same compute, shorter memory: dominated by a3
        trial("a5", "a", 4e9, 3),               # dominated by a3
        trial("a6", "a", 5e9, 8),
        trial("a7", "a", 5e9, 8),               # exact tie with a6: neither dominates, both stay
        trial("a8", "a", 6e9, 9, status="pruned"),
        trial("a9", "a", 5e8, None, status="oom"),      # no result: not part of the frontier
        trial("a10", "a", 7e9, 50, status="diverged"),  # failed trials do not set the frontier
        trial("b1", "b", 1e9, 1),               # another arch: its own frontier
        trial("b2", "b", 1e10, 100),
    ]:
        store.write_trial(row)
    got = [(r["arch"], r["trial_id"]) for r in rows_of(str(tmp_path), "frontier")]
    assert got == [("a", "a1"), ("a", "a3"), ("a", "a6"), ("a", "a7"), ("a", "a8"), ("b", "b1"), ("b", "b2")]


def test_power_law_and_compute_crossover_exact(tmp_path):
    """a: L* = 2 C^0.5, b: L* = 20 C^0.25 (exact integers); they meet where 2 C^0.5 = 20 C^0.25,
    i.e. C^0.25 = 10, C = 1e4, below every measured compute (inside_data false)."""
    store = Store(str(tmp_path))
    for i, c in enumerate([1e8, 1e12, 1e16]):
        store.write_trial(trial(f"a{i}", "a", c, round(2 * c ** 0.5)))
        store.write_trial(trial(f"b{i}", "b", c, round(20 * c ** 0.25)))
    store.write_trial(trial("c0", "c", 1e8, 10))
    store.write_trial(trial("c1", "c", 1e9, 20))
    fits = {r["arch"]: r for r in rows_of(str(tmp_path), "power_law")}
    assert fits["a"]["alpha"] == pytest.approx(0.5) and fits["a"]["a"] == pytest.approx(2)
    assert fits["b"]["alpha"] == pytest.approx(0.25) and fits["b"]["a"] == pytest.approx(20)
    assert fits["a"]["r2"] == pytest.approx(1)
    assert fits["c"]["alpha"] is None and fits["c"]["note"] == "too few points"
    (x,) = rows_of(str(tmp_path), "compute_crossover")
    assert (x["arch"], x["other"]) == ("a", "b")
    assert x["crossover_flops"] == pytest.approx(1e4)
    assert x["memory_length_at_crossover"] == pytest.approx(200)
    assert x["inside_data"] is False


def curve(tid, lag, score, iteration=1):
    return {"study": "hand", "trial_id": tid, "step": 100 * iteration, "lag": lag, "score": score,
            "score_lo": None if score is None else score - 0.05, "score_hi": None if score is None else score + 0.05,
            "metric": "accuracy", "n": 100, "feasible": score is not None}


def test_lag_crossover_matches_hand_computed(tmp_path):
    """Scores at the trained lag (8, 32, 128, 512):
    a: 1.0 0.9  0.8 0.7    b: 1.0 0.95 0.6 0.3    c: 0.5 0.5 0.7 (oom at 512)
    a overtakes b at 128 (behind at 32); b is not ahead at the longest lag; a is ahead of c
    everywhere; c is not ahead of b at 512 (no score loses), so b overtakes c there (behind at 128)."""
    store = Store(str(tmp_path))
    scores = {"a": [1.0, 0.9, 0.8, 0.7], "b": [1.0, 0.95, 0.6, 0.3], "c": [0.5, 0.5, 0.7, None]}
    for arch, ss in scores.items():
        for lag, s in zip([8, 32, 128, 512], ss):
            tid = f"{arch}{lag}"
            store.write_trial(trial(tid, arch, 1e9, lag, status="oom" if s is None else "completed", lag=lag))
            if s is not None:
                # An earlier, worse evaluation must be ignored: only the final one counts.
                store.write_rows("lag_curves", [{**curve(tid, lag, 0.0), "iteration": 1}], tid, "000001.parquet")
                store.write_rows("lag_curves", [{**curve(tid, lag, s, 2), "iteration": 2},
                                                {**curve(tid, 2 * lag, s / 2, 2), "iteration": 2}],
                                 tid, "000002.parquet")
    got = {(r["arch"], r["other"]): r for r in rows_of(str(tmp_path), "crossover")}
    assert len(got) == 6
    ab = got[("a", "b")]
    assert (ab["verdict"], ab["crossover_lag"], ab["behind_at_lag"]) == ("overtakes", 128, 32)
    assert got[("b", "a")]["verdict"] == "not ahead at the longest lag" and got[("b", "a")]["crossover_lag"] is None
    assert got[("a", "c")]["verdict"] == "ahead at every lag"
    assert got[("c", "b")]["verdict"] == "not ahead at the longest lag"
    assert (got[("b", "c")]["verdict"], got[("b", "c")]["crossover_lag"], got[("b", "c")]["behind_at_lag"]) == \
        ("overtakes", 512, 128)
    cells = {(r["arch"], r["lag"]): r for r in rows_of(str(tmp_path), "cell_scores")}
    assert cells[("c", 512)]["best_score"] is None and cells[("c", 512)]["infeasible"] == 1
    assert cells[("a", 32)]["best_score"] == pytest.approx(0.9)


def test_cost_growth_exponents(tmp_path):
    store = Store(str(tmp_path))
    for arch, k in (("lstm", 1), ("transformer", 2)):
        for i, L in enumerate([16, 64, 256, 1024]):
            # wall per sequence = wall_s * seq_len / tokens = wall_s / 1000 with trial()'s tokens
            store.write_trial(trial(f"{arch}{i}", arch, 1e9, 1, seq_len=L, wall_s=1e-3 * L ** k))
    store.write_trial(trial("t-oom", "transformer", 1e9, None, status="oom", seq_len=4096))
    got = {r["arch"]: r for r in rows_of(str(tmp_path), "cost_growth")}
    assert got["lstm"]["time_exponent"] == pytest.approx(1)
    assert got["transformer"]["time_exponent"] == pytest.approx(2)
    assert got["transformer"]["mem_exponent"] == pytest.approx(0, abs=1e-9)   # same peak and batch at every seq_len
    by_len = {(r["arch"], r["seq_len"]): r for r in rows_of(str(tmp_path), "cost_by_seq_len")}
    assert by_len[("transformer", 4096)]["oom"] == 1 and by_len[("transformer", 4096)]["trials"] == 0


def test_lag_vs_window_and_seed_spread(tmp_path):
    store = Store(str(tmp_path))
    rows = [trial("c0-t000-s0", "lstm", 1e9, 40, lag=32, window=None),
            trial("c0-t000-s1", "lstm", 1e9, 20, lag=32, window=None),
            trial("c1-t000-s0", "lstm", 1e9, 10, lag=128, window=None),
            trial("c2-t000-s0", "lstm", 1e9, 9, lag=8, window=4),
            trial("c3-t000-s0", "lstm", 1e9, 3, lag=32, window=4)]
    for r in rows:
        store.write_trial({**r, "cell": r["trial_id"][:2]})
    got = {r["window_label"]: r for r in rows_of(str(tmp_path), "lag_vs_window")}
    assert got["full"]["largest_lag_solved"] == 32 and got["full"]["largest_lag_tried"] == 128
    assert got["4"]["largest_lag_solved"] == 8
    spread = {r["cell"]: r for r in rows_of(str(tmp_path), "seed_spread")}
    assert spread["c0"]["configs"] == 1 and spread["c0"]["max_seeds"] == 2
    assert spread["c0"]["max_range_memory_length"] == 20
    assert spread["c0"]["mean_sd_memory_length"] == pytest.approx(math.sqrt(200))
