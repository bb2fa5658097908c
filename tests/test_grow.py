"""Growing a study (study/identity.py, study/grow.py): content-addressed ids, the plan of an
extension, spec history; then real sweeps grown with `study run --extend`."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import duckdb
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from study import grow
from study.config import Budget, UsageError, cells
from study.identity import Wanted, optuna_name, parse_trial_id, study_cells, trial_id
from study.results import Store
from study.validate import parse_spec
from tests.conftest import ROOT, run_cli
from tests.test_resume import crash, start, wait_until

BASE = """\
study: grown
task: {name: copy, n_symbols: 2, alphabet: 4}
grid:
  arch: [lstm]
  lag: [4, 8]
search:
  lr: {float: [1.0e-3, 1.0e-2], log: true}
fixed: {d_model: 8, batch_size: 8, eval_batch: 8}
trials_per_cell: 1
budget: {steps: 20, eval_every: 10}
"""


def spec(text: str = BASE, **subs: str):
    for old, new in subs.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_spec(text, "grown.yaml")


def ids(s) -> dict[str, str]:
    return {c.label: c.id for c in cells(s)}


# ---- identity (no Ray) -----------------------------------------------------------------------

def test_ids_follow_content_not_position():
    base = ids(spec())
    assert all(re.fullmatch(r"c[0-9a-f]{12}", i) for i in base.values()) and len(set(base.values())) == 2
    # reordering a grid list, more seeds, trials, steps, another sampler or checkpoint period: same cells
    assert ids(spec(**{"lag: [4, 8]": "lag: [8, 4]"})) == base
    assert ids(spec(**{"trials_per_cell: 1": "trials_per_cell: 5\nseeds: [0, 1, 2]\nsampler: random"})) == base
    assert ids(spec(**{"steps: 20": "steps: 500, checkpoint_every: 3"})) == base
    # a key moved from fixed to a one-value grid axis, or a default stated, means the same trials
    assert set(ids(spec(**{"d_model: 8, ": "", "arch: [lstm]": "arch: [lstm]\n  d_model: [8]"})).values()) == set(base.values())
    assert set(ids(spec(**{"lag: [4, 8]": "lag: [4, 8]\n  window: [full, 4]"})).values()) > set(base.values())
    # a parameter no lstm takes (a new arch's own) leaves the lstm cells alone
    assert ids(spec(**{"d_model: 8,": "d_model: 8, n_heads: 2,"})) == base
    # a change in meaning makes new cells
    for change in ({"d_model: 8": "d_model: 12"}, {"alphabet: 4": "alphabet: 5"},
                   {"1.0e-2], log": "2.0e-2], log"}, {"eval_every: 10": "eval_every: 5"},
                   {"trials_per_cell: 1": "trials_per_cell: 1\nobjective: {metric: final_loss, mode: min}"}):
        assert not set(ids(spec(**change)).values()) & set(base.values()), change


def test_grid_points_that_mean_the_same_stay_apart():
    """A grid axis one arch does not take: its cells would be equal by content; the grid values
    tell them apart, whatever the order."""
    s = spec(**{"arch: [lstm]": "arch: [lstm, transformer]\n  n_heads: [1, 2]", "lag: [4, 8]": "lag: [4]"})
    got = ids(s)
    assert len(set(got.values())) == 4
    again = spec(**{"arch: [lstm]": "arch: [transformer, lstm]\n  n_heads: [2, 1]", "lag: [4, 8]": "lag: [4]"})
    assert {tuple(sorted(k.split(","))): v for k, v in ids(again).items()} == \
        {tuple(sorted(k.split(","))): v for k, v in got.items()}


def test_trial_ids_and_what_each_slot_needs():
    c = cells(spec())[0].id
    assert trial_id(c, 2, 7) == f"{c}-t002-s7" and parse_trial_id(f"{c}-t002-s7") == (c, 2, 7, None)
    assert parse_trial_id(f"{c}-t002-b400-s7") == (c, 2, 7, 400) and parse_trial_id("segment-1") is None
    rows = {f"{c}-t000-s0": {"trial_id": f"{c}-t000-s0", "status": "completed", "steps": 20},
            f"{c}-t000-s1": {"trial_id": f"{c}-t000-s1", "status": "diverged", "steps": 7},
            f"{c}-t001-s0": {"trial_id": f"{c}-t001-s0", "status": "completed", "steps": 20},
            f"{c}-t001-b40-s0": {"trial_id": f"{c}-t001-b40-s0", "status": "completed", "steps": 40},
            f"{c}-t002-s0": {"trial_id": f"{c}-t002-s0", "status": "completed", "steps": 12, "train_flops": 5e6}}
    same = Wanted(Budget(steps=20), rows)
    assert same.want(c, 0, 0) == (f"{c}-t000-s0", None)                     # finished
    assert same.want(c, 3, 0) == (f"{c}-t003-s0", None)                     # never run
    longer = Wanted(Budget(steps=40, max_flops=5e6), rows)
    assert longer.want(c, 0, 0) == (f"{c}-t000-b40-s0", f"{c}-t000-s0")     # continued from its checkpoint
    assert longer.want(c, 0, 1) == (f"{c}-t000-s1", None)                   # a failure is a result
    assert longer.want(c, 1, 0) == (f"{c}-t001-b40-s0", None)               # already continued
    assert longer.want(c, 2, 0) == (f"{c}-t002-s0", None)                   # stopped by its FLOP cap
    assert Wanted(Budget(steps=80), rows).want(c, 1, 0) == (f"{c}-t001-b80-s0", f"{c}-t001-b40-s0")


def test_plan_counts_kept_added_dropped_and_trials():
    old = spec()
    new = spec(**{"arch: [lstm]": "arch: [lstm, gru]", "lag: [4, 8]": "lag: [4]",
                  "trials_per_cell: 1": "trials_per_cell: 2\nseeds: [0, 1]", "steps: 20": "steps: 30"})
    c4, c8 = ids(old)["arch=lstm,lag=4"], ids(old)["arch=lstm,lag=8"]
    finished = {t: {"trial_id": t, "status": s, "steps": 20} for t, s in
                ((f"{c4}-t000-s0", "completed"), (f"{c4}-t000-s1", "pruned"), (f"{c8}-t000-s0", "completed"))}
    p = grow.make_plan(old, new, {}, finished)
    assert [c.label for c in p.kept] == ["arch=lstm,lag=4"] and [c.label for c in p.added] == ["arch=gru,lag=4"]
    assert [c.label for c in p.dropped] == ["arch=lstm,lag=8"]
    # 2 cells x 2 slots x 2 seeds: the pruned seed is finished, the completed one continues to 30 steps
    assert (p.done, p.continued, p.new) == (1, 1, 6)
    text = "\n".join(p.lines("grown", 1, 2))
    assert "1 kept, 1 added, 1 dropped" in text and "6 to run, 1 to continue to 30 steps" in text


def test_a_study_from_before_keeps_its_positional_ids():
    s = spec(**{"lag: [4, 8]": "lag: [8, 4, 16]"})
    legacy = grow.legacy_map(spec())                 # the spec that study ran: lag 4 was c000
    got = {c.label: c.id for c in study_cells(s, legacy)}
    assert got["arch=lstm,lag=4"] == "c000" and got["arch=lstm,lag=8"] == "c001"
    assert re.fullmatch(r"c[0-9a-f]{12}", got["arch=lstm,lag=16"])
    by_id = {c.id: c for c in study_cells(s, legacy)}
    assert optuna_name(by_id["c001"], legacy) == "arch=lstm,lag=8"
    assert optuna_name(by_id[got["arch=lstm,lag=16"]], legacy) == f"arch=lstm,lag=16 {got['arch=lstm,lag=16']}"


def test_spec_history_and_a_hand_edited_spec(tmp_path):
    store = Store(str(tmp_path / "grown"))
    grow.record(store, grow.History(), BASE)
    h = grow.load_history(store)
    assert h.recorded and h.version == 1 and grow.check_spec(store, BASE, h) == BASE
    assert (tmp_path / "grown" / "specs" / "0001.yaml").read_text() == BASE
    v2 = BASE.replace("trials_per_cell: 1", "trials_per_cell: 2")
    assert grow.record(store, h, v2, note="study run --extend") == 2
    assert (tmp_path / "grown" / "spec.yaml").read_text() == v2
    assert [v["version"] for v in grow.load_history(store).versions] == [1, 2]
    # an extension cut short between its index and spec.yaml is put right, not refused
    (tmp_path / "grown" / "spec.yaml").write_text(BASE)
    assert grow.check_spec(store, BASE, grow.load_history(store)) == v2
    assert (tmp_path / "grown" / "spec.yaml").read_text() == v2
    # a hand edit (a reordered grid list would credit lag 4's trials to lag 8) is refused
    edited = v2.replace("lag: [4, 8]", "lag: [8, 4]")
    with pytest.raises(UsageError, match="edited by hand"):
        grow.check_spec(store, edited, grow.load_history(store))


def test_a_changed_spec_without_extend_prints_the_plan(tmp_path):
    d = tmp_path / "grown"
    grow.record(Store(str(d)), grow.History(), BASE)       # what `study run` writes before Ray starts
    before = snapshot(d, everything=True)
    grown = tmp_path / "v2.yaml"
    grown.write_text(BASE.replace("arch: [lstm]", "arch: [lstm, gru]").replace("lag: [4, 8]", "lag: [8]"))
    r = run_cli("run", str(grown), "--results", str(tmp_path))
    assert r.returncode == 2 and "--extend" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "grow from spec version 1 to 2" in r.stdout and "1 kept, 1 added, 1 dropped" in r.stdout
    assert "+ c" in r.stdout and "arch=gru,lag=8" in r.stdout and "2 to run" in r.stdout
    assert snapshot(d, everything=True) == before         # nothing written


def test_the_command_refuses_a_hand_edited_spec(tmp_path):
    d = tmp_path / "grown"
    grow.record(Store(str(d)), grow.History(), BASE)       # what `study run` writes before Ray starts
    (d / "spec.yaml").write_text(BASE.replace("lag: [4, 8]", "lag: [8, 4]"))
    before = snapshot(d, everything=True)
    for args in (("resume", str(d)), ("status", str(d)), ("run", str(d / "spec.yaml"), "--results", str(tmp_path), "--extend")):
        r = run_cli(*args)
        assert r.returncode == 2 and "edited by hand" in r.stderr and "Traceback" not in r.stderr, args
        assert len(r.stderr.strip().splitlines()) == 1
    assert snapshot(d, everything=True) == before          # nothing written


# ---- real sweeps -----------------------------------------------------------------------------

def snapshot(d: Path, everything: bool = False) -> dict[str, bytes]:
    """The bytes of every result file (Parquet rows, checkpoints, earlier spec versions), or of
    every file in the folder."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and (
        everything or p.parts[len(d.parts)] in ("parquet", "checkpoints") or p.suffix == ".yaml" and p.parent.name == "specs")}


def unchanged(before: dict[str, bytes], d: Path) -> bool:
    now = snapshot(d)
    return all(now.get(k) == v for k, v in before.items())


def tune_trials(d: Path) -> set[str]:
    """The trials Ray Tune ran in the latest invocation: its trial folders are named by trial id."""
    runs = sorted((d / "ray").glob("run-*"))
    return {p.name for p in runs[-1].iterdir() if p.is_dir() and parse_trial_id(p.name)} if runs else set()


def sql(d: Path, query: str) -> list[tuple]:
    con = duckdb.connect()
    for t, glob in (("trials", "trials/*.parquet"), ("metrics", "metrics/*/*.parquet")):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{d}/parquet/{glob}', union_by_name=true)")
    return con.execute(query).fetchall()


def journal(d: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(d / "optuna.journal")))


@pytest.mark.slow
def test_extend_runs_exactly_the_new_trials(tmp_path, write_spec):
    v1 = BASE.replace("lag: [4, 8]", "lag: [4]").replace("steps: 20, eval_every: 10", "steps: 10, eval_every: 10")
    first = write_spec(v1, "v1.yaml")
    r = run_cli("run", str(first), "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "grown"
    before = snapshot(d)
    (old,) = [t for (t,) in sql(d, "SELECT trial_id FROM trials")]

    # one more seed, one more arch, one more trial per cell
    v2 = v1.replace("arch: [lstm]", "arch: [lstm, gru]").replace("trials_per_cell: 1", "trials_per_cell: 2\nseeds: [0, 1]")
    second = write_spec(v2, "v2.yaml")
    r = run_cli("run", str(second), "--results", str(tmp_path), "--extend")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "7 to run" in r.stdout and "2 cells, 8 trials, 7 to run" in r.stdout

    rows = sql(d, "SELECT trial_id, arch, seed, lr, spec_version FROM trials ORDER BY trial_id")
    new = {t for t, *_ in rows} - {old}
    assert len(rows) == 8 and tune_trials(d) == new                  # exactly the new trials ran
    assert unchanged(before, d)                                      # the old rows, byte for byte
    assert {(t == old, v) for t, *_, v in rows} == {(True, 1), (False, 2)}
    lr = {}
    for t, arch, seed, rate, _ in rows:                              # a slot's seeds share its configuration
        lr.setdefault(t.rsplit("-s", 1)[0], set()).add(rate)
    assert len(lr) == 4 and all(len(v) == 1 for v in lr.values())
    lstm = next(c for c in cells(parse_spec(v2)) if c.label == "arch=lstm,lag=4")
    st = optuna.load_study(study_name=optuna_name(lstm), storage=journal(d))
    assert sorted((t.user_attrs["slot"], t.state) for t in st.trials) == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]

    r = run_cli("status", str(d))
    assert r.returncode == 0 and "cells done 2/2, trials finished 8/8 (spec version 2 of 2)" in r.stdout
    from analysis.db import connect
    from analysis.report import spec_versions                       # the report's "Spec versions" table
    got = spec_versions(Store(str(d)), connect(str(d), write=False, queries=False), True)
    assert [(v, n, note) for v, n, _, note in got] == [("spec version 1", 1, None),
                                                       ("spec version 2", 7, "study run --extend")]


@pytest.mark.slow
def test_a_longer_budget_continues_from_checkpoints_through_a_kill(tmp_path, write_spec):
    """budget.steps 20 -> 200: each trial goes on from its final checkpoint as `-b200`, the old rows
    stay; the extended run is killed (SIGKILL) mid-way and resumed; nothing lost, nothing twice.
    Then a change of meaning (d_model) makes a new cell and leaves the old one's rows alone."""
    v1 = BASE.replace("lag: [4, 8]", "lag: [4]").replace("trials_per_cell: 1", "trials_per_cell: 2") \
        .replace("eval_every: 10", "eval_every: 20")
    r = run_cli("run", str(write_spec(v1, "v1.yaml")), "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "grown"
    before = snapshot(d)
    olds = sorted(t for (t,) in sql(d, "SELECT trial_id FROM trials"))

    v2 = v1.replace("steps: 20", "steps: 200")
    p = start("run", str(write_spec(v2, "v2.yaml")), "--results", str(tmp_path), "--extend")
    metrics = d / "parquet" / "metrics"
    wait_until(lambda: sum(1 for f in metrics.glob("*-b200-*/*.parquet")) >= 3, p)
    crash(p)
    assert not list((d / "parquet" / "trials").glob("*-b200-*"))      # killed before any continuation finished
    p = start("resume", str(d))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]

    rows = sql(d, "SELECT trial_id, steps, continued_from_steps, resumed_from_step, spec_version "
                  "FROM trials ORDER BY trial_id")
    assert [r[0] for r in rows] == sorted(olds + [t.replace("-s0", "-b200-s0") for t in olds])
    for t, steps, cont, resumed, version in rows:
        assert (steps, cont, version) == ((200, 20, 2) if "-b200-" in t else (20, None, 1)), t
    assert any(r[3] for r in rows if "-b200-" in r[0])             # the killed continuation went on from its own checkpoint
    assert unchanged(before, d)
    its = sql(d, "SELECT trial_id, count(*), count(DISTINCT iteration), min(step), max(step) FROM metrics GROUP BY 1")
    for t, n, distinct, lo, hi in its:
        assert n == distinct, t                                        # exactly once
        assert (lo, hi, n) == ((40, 200, 9) if "-b200-" in t else (20, 20, 1)), t   # steps go on from 20

    # a change of meaning: a new cell; the old one is dropped, its rows kept
    v3 = v2.replace("d_model: 8", "d_model: 12").replace("trials_per_cell: 2", "trials_per_cell: 1")
    r = run_cli("run", str(write_spec(v3, "v3.yaml")), "--results", str(tmp_path), "--extend")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 kept, 1 added, 1 dropped" in r.stdout
    rows = sql(d, "SELECT trial_id, d_model, spec_version FROM trials WHERE d_model = 12")
    assert len(rows) == 1 and rows[0][2] == 3 and rows[0][0].split("-")[0] not in {t.split("-")[0] for t in olds}
    assert sql(d, "SELECT count(*) FROM trials WHERE d_model = 8") == [(4,)]
    r = run_cli("status", str(d))
    assert "dropped cells (results kept, queryable):" in r.stdout and "4 trials  last in spec version 2" in r.stdout


@pytest.mark.slow
def test_a_study_written_before_content_ids_resumes_and_grows(tmp_path):
    """tests/data/legacy_study was written by memscale before this change (positional ids c000,
    c001, no spec history) from tests/data/legacy_study.yaml; see tests/data/README.md."""
    d = tmp_path / "legacy"
    shutil.copytree(ROOT / "tests" / "data" / "legacy_study", d)
    before, old_spec = snapshot(d), (d / "spec.yaml").read_bytes()
    r = run_cli("status", str(d))
    assert r.returncode == 0 and "c000 arch=lstm,lag=4" in r.stdout and "trials finished 2/2" in r.stdout
    r = run_cli("resume", str(d))
    assert r.returncode == 0 and "0 to run" in r.stdout, r.stderr[-3000:]
    assert (d / "specs" / "0001.yaml").read_bytes() == old_spec              # recorded as version 1

    # the grid list reordered and a seed added: the old cells keep their ids and Optuna studies
    text = (ROOT / "tests" / "data" / "legacy_study.yaml").read_text()
    grown = tmp_path / "grown.yaml"
    grown.write_text(text.replace("lag: [4, 8]", "lag: [8, 4]").replace("trials_per_cell: 1", "trials_per_cell: 1\nseeds: [0, 1]"))
    r = run_cli("run", str(grown), "--results", str(tmp_path), "--extend")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 kept, 0 added, 0 dropped" in r.stdout and "2 to run" in r.stdout
    assert tune_trials(d) == {"c000-t000-s1", "c001-t000-s1"}
    rows = sql(d, "SELECT trial_id, lag, lr, spec_version FROM trials ORDER BY 1")
    assert [(t, lag, v) for t, lag, _, v in rows] == [("c000-t000-s0", 4, None), ("c000-t000-s1", 4, 2),
                                                      ("c001-t000-s0", 8, None), ("c001-t000-s1", 8, 2)]
    assert rows[0][2] == rows[1][2] and rows[2][2] == rows[3][2]          # the new seeds share their slot's lr
    assert unchanged(before, d)
    assert sorted(optuna.get_all_study_names(journal(d))) == ["arch=lstm,lag=4", "arch=lstm,lag=8"]
