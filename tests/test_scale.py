"""Large studies: compaction into segment files keeps every row exactly once, for our views, for
plain Parquet readers and for resume; an interrupted compaction is repaired; synthetic ids match."""
from __future__ import annotations

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from analysis.db import connect, create_views
from study.results import Store
from tests.test_results import curve, metrics_row


def fill(s: Store, finished: int, running: int, evals: int = 3) -> None:
    for i in range(finished + running):
        tid = f"c000-t{i:03d}-s0"
        for it in range(1, evals + 1):
            s.write_report("st", tid, metrics_row(it, loss=1.0 / (i + it)), curve(it))
        if i < finished:
            s.write_trial({"study": "st", "trial_id": tid, "cell": "c", "arch": "lstm", "status": "completed",
                           "memory_length": i, "lag": 8})


def everything(con) -> dict:
    """The reference: every row of every table, sorted (obviously correct, no dedup)."""
    return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in ("trials", "metrics", "lag_curves")}


def raw(path: str) -> dict:
    """What a plain Parquet reader sees: DuckDB globs, as the README tells users to write them."""
    con = duckdb.connect()
    return {t: con.execute(f"SELECT count(*) FROM read_parquet('{path}/parquet/{g}')").fetchone()[0]
            for t, g in (("trials", "trials/*.parquet"), ("metrics", "metrics/*/*.parquet"),
                         ("lag_curves", "lag_curves/*/*.parquet"))}


def test_compaction_moves_finished_trials_and_keeps_each_row_once(tmp_path):
    s = Store(str(tmp_path / "st"))
    fill(s, finished=5, running=2)
    before = everything(connect(s.path))
    assert s.compact(batch=10) == {"trials": 0, "metrics": 0, "lag_curves": 0}     # below a batch: nothing
    assert s.compact() == {"metrics": 5, "lag_curves": 5, "trials": 5}
    assert len(s.segment_files("trials")) == 1 and len(s.segment_files("metrics")) == 1
    assert sorted(s.loose_files("metrics")) == ["c000-t005-s0", "c000-t006-s0"]     # running: untouched
    assert s.loose_files("trials") == {}
    assert everything(connect(s.path)) == before
    assert raw(s.path) == {"trials": 5, "metrics": 21, "lag_curves": 63}
    # pyarrow's dataset discovery (pandas.read_parquet on the folder) sees the same rows
    assert ds.dataset(f"{s.path}/parquet/metrics", format="parquet").count_rows() == 21
    assert sorted(r["trial_id"] for r in s.trial_rows()) == [f"c000-t{i:03d}-s0" for i in range(5)]

    # the running trials finish later; a second compaction adds a segment, nothing moves twice
    for i in (5, 6):
        s.write_trial({"study": "st", "trial_id": f"c000-t{i:03d}-s0", "status": "completed"})
    s.write_report("st", "c000-t005-s0", metrics_row(4), curve(4))
    assert s.compact() == {"metrics": 2, "lag_curves": 2, "trials": 2}
    assert raw(s.path) == {"trials": 7, "metrics": 22, "lag_curves": 66}
    assert s.compact() == {"trials": 0, "metrics": 0, "lag_curves": 0}
    assert not (tmp_path / "st" / "parquet" / "metrics" / "c000-t005-s0").exists()


def test_an_interrupted_compaction_is_invisible_and_repaired(tmp_path, monkeypatch):
    s = Store(str(tmp_path / "st"))
    fill(s, finished=4, running=1)
    before = everything(connect(s.path))
    rows_before = sorted(r["trial_id"] for r in s.trial_rows())

    def killed(self, files):               # the driver died after the first segment, before its deletes
        if list(files):
            raise KeyboardInterrupt
    monkeypatch.setattr(Store, "_delete_files", killed)
    with pytest.raises(KeyboardInterrupt):
        s.compact()
    monkeypatch.undo()
    assert len(s.segment_files("metrics")) == 1 and len(s.loose_files("metrics")) == 5   # rows twice on disk
    assert everything(connect(s.path)) == before                      # but once in every view
    assert sorted(r["trial_id"] for r in s.trial_rows()) == rows_before
    # the next compaction deletes the leftovers and writes no second segment for those trials
    s.compact(batch=100)
    assert len(s.segment_files("metrics")) == 1 and sorted(s.loose_files("metrics")) == ["c000-t004-s0"]
    assert raw(s.path) == {"trials": 4, "metrics": 15, "lag_curves": 45}
    assert everything(connect(s.path)) == before


def test_compacted_study_on_a_non_local_filesystem(tmp_path):
    """The object-store path: no renames, pyarrow datasets for DuckDB, same rows once."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    s = Store("remote-study", fs=fs)
    fill(s, finished=3, running=1, evals=2)
    con = duckdb.connect()
    create_views(con, s)
    before = everything(con)
    s.compact()
    con = duckdb.connect()
    create_views(con, s)
    assert everything(con) == before
    assert len(s.trial_rows()) == 3


def test_study_compact_command(tmp_path, capsys):
    from study.cli import main
    d = tmp_path / "st"
    Store(str(d)).write_bytes(b"study: st\ntask: {name: copy}\nfixed: {arch: lstm}\n", "spec.yaml")
    fill(Store(str(d)), finished=2, running=0)
    assert main(["compact", str(d)]) == 0
    assert "trials 2 trials" in capsys.readouterr().out
    assert raw(str(d)) == {"trials": 2, "metrics": 6, "lag_curves": 18}


def test_synthetic_ids_are_the_projects_and_status_adds_up(tmp_path, capsys):
    from analysis.synthetic import write_study
    from study.cli import main
    from study.config import cells, parse_spec
    from study.results import make_trial_id
    d = tmp_path / "synthetic"
    t = write_study(d, n_trials=100, iterations=1)
    spec = parse_spec((d / "spec.yaml").read_text())
    ids = {make_trial_id(c, k, s) for c in cells(spec) for k in range(spec.trials_per_cell) for s in spec.seeds}
    assert set(t["trial_id"]) <= ids and len(set(t["trial_id"])) == 100
    assert main(["status", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"trials finished 100/{len(ids)}" in out and len(ids) >= 100


SPEC = """\
study: journal
task: {name: copy, n_symbols: 2, alphabet: 4}
grid: {lag: [4, 8, 16]}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
fixed: {arch: lstm, d_model: 8}
trials_per_cell: 4
seeds: [0]
"""


def test_remote_journal_is_pushed_in_parts_and_resumes_on_another_machine(tmp_path, monkeypatch):
    """Each push uploads only the new bytes; a driver on another machine (a fresh local copy)
    continues every cell's Optuna study where the first one left it."""
    from study.config import parse_spec
    from study.sweep import CellSearcher, Journal
    monkeypatch.setattr(Journal, "CHUNK", 3)
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store, spec = Store("remote", fs=fs), parse_spec(SPEC)
    parts = tmp_path / "remote" / Journal.DIR

    first = CellSearcher(spec, store, {})
    uploaded, finished = 0, {}                          # finished: the trials table's rows
    for k in range(7):                                  # 7 slots told, over the 3 cells
        cfg = first.suggest(f"ray{k}")
        before = {p.name: p.stat().st_size for p in parts.iterdir()} if parts.exists() else {}
        finished[cfg["trial_id"]] = {"status": "completed", "memory_length": k}
        first.on_trial_complete(f"ray{k}", finished[cfg["trial_id"]])
        uploaded += sum(p.stat().st_size for p in parts.iterdir() if p.name not in before)
    first.journal.push(final=True)
    size = (tmp_path / "remote").joinpath(Journal.DIR)
    local = len(open(first.journal.path, "rb").read())
    assert uploaded <= 2 * local                         # O(n) bytes: each byte once, plus one merge
    assert len(list(size.iterdir())) <= 3                # merged: a start-up reads few objects

    def told(searcher):
        return {c: sorted((t.user_attrs["slot"], t.params["lr"], t.values[0]) for t in st.trials
                          if t.state.name == "COMPLETE") for c, st in searcher.studies.items()}
    second = CellSearcher(spec, Store("remote", fs=fs), finished)   # another machine: fresh local copy
    assert second.journal.path != first.journal.path
    assert told(second) == told(first) and sum(map(len, told(first).values())) == 7
    # it continues: the slots told before are not asked again, the next ones are
    cfg = second.suggest("ray-next")
    assert cfg["trial_id"] not in finished
    finished[cfg["trial_id"]] = {"status": "completed", "memory_length": 99}
    second.on_trial_complete("ray-next", finished[cfg["trial_id"]])
    third = CellSearcher(spec, Store("remote", fs=fs), finished)
    assert sum(map(len, told(third).values())) == 8 and told(third) == told(second)


def test_the_drivers_compactor_compacts_batches_then_everything_at_the_end(tmp_path):
    from study.results import Compactor
    s = Store(str(tmp_path / "st"))
    c = Compactor(s, batch=2)
    for i in range(5):
        fill_one(s, i)
        c.trial_finished()
        if c.thread is not None:
            c.thread.join()                  # here in step; in the driver it overlaps the next results
    assert len(s.segment_files("trials")) == 2 and len(s.loose_files("trials")) == 1
    c.close()
    assert s.loose_files("trials") == {} and s.loose_files("metrics") == {}
    assert raw(s.path) == {"trials": 5, "metrics": 10, "lag_curves": 30}


def fill_one(s: Store, i: int) -> None:
    tid = f"c001-t{i:03d}-s0"
    for it in (1, 2):
        s.write_report("st", tid, metrics_row(it), curve(it))
    s.write_trial({"study": "st", "trial_id": tid, "status": "completed"})


def test_journal_pull_after_a_crash_in_the_middle_of_a_merge(tmp_path):
    """The merged chunk was written, the parts it covers were not deleted yet: the pull takes the
    chunk, skips and deletes the parts, and continues with what follows."""
    from study.sweep import Journal
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    s = Store("remote", fs=fs)
    data = b'{"a":1}\n{"b":2}\n{"c":3}\n'          # journal records: one JSON object a line
    for a, b in ((0, 8), (8, 16), (0, 16), (16, 24)):
        s.write_bytes(data[a:b], Journal.DIR, f"{a:016d}-{b:016d}")
    j = Journal(s)
    assert open(j.path, "rb").read() == data and j.pushed == 24
    assert sorted(p.name for p in (tmp_path / "remote" / Journal.DIR).iterdir()) == [
        f"{0:016d}-{16:016d}", f"{16:016d}-{24:016d}"]
