"""Large studies: compaction into segment files keeps every row exactly once, for our views, for
plain Parquet readers and for resume; an interrupted compaction is repaired; synthetic ids match."""
from __future__ import annotations

from pathlib import Path

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
    from study.config import cells
    from study.validate import parse_spec
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
    from study.validate import parse_spec
    from study.journal import Journal
    from study.sweep import CellSearcher
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
    from study.journal import Journal
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    s = Store("remote", fs=fs)
    data = b'{"a":1}\n{"b":2}\n{"c":3}\n'          # journal records: one JSON object a line
    for a, b in ((0, 8), (8, 16), (0, 16), (16, 24)):
        s.write_bytes(data[a:b], Journal.DIR, f"{a:016d}-{b:016d}")
    j = Journal(s)
    assert open(j.path, "rb").read() == data and j.pushed == 24
    assert sorted(p.name for p in (tmp_path / "remote" / Journal.DIR).iterdir()) == [
        f"{0:016d}-{16:016d}", f"{16:016d}-{24:016d}"]


def rows_of(path: str, table: str) -> list[tuple]:
    """The reference: every row of a table as a plain Parquet glob reads it, sorted."""
    glob = "trials/*.parquet" if table == "trials" else f"{table}/*/*.parquet"
    cols = "trial_id, iteration, step, train_loss" if table == "metrics" else "trial_id, iteration, step, lag, score"
    return sorted(duckdb.connect().execute(f"SELECT {cols} FROM read_parquet('{path}/parquet/{glob}')").fetchall())


def test_batched_reports_equal_one_file_per_report(tmp_path):
    """The driver's ReportWriter (a file per trial and batch) writes the same rows as a file per
    evaluation, fewer files, and holds nothing back once its pacing allows or the trial ends."""
    from study.results import ReportWriter
    slow, fast = Store(str(tmp_path / "slow")), Store(str(tmp_path / "fast"))
    w = ReportWriter(fast, "st")
    w.next_flush = float("inf")                        # a busy writer: everything waits
    for i in range(3):
        tid = f"c000-t{i:03d}-s0"
        for it in range(1, 6):
            slow.write_report("st", tid, metrics_row(it, loss=1.0 / (i + it)), curve(it))
            w.report(tid, metrics_row(it, loss=1.0 / (i + it)), curve(it))
            w.flush_due()
        if i < 2:
            w.finish(tid)
    assert not (tmp_path / "fast" / "parquet" / "metrics" / "c000-t002-s0").exists()   # pending
    w.next_flush = 0
    w.flush_due()
    for t in ("metrics", "lag_curves"):
        assert rows_of(slow.path, t) == rows_of(fast.path, t) and len(rows_of(fast.path, t)) == 15 * (1 if t == "metrics" else 3)
    assert sorted(p.name for p in (tmp_path / "fast" / "parquet" / "metrics" / "c000-t000-s0").iterdir()) == [
        "000001-000005.parquet"]


def test_the_writer_batches_only_when_writing_would_take_more_than_its_share(monkeypatch):
    """Pacing: a write that took w makes the next batch wait w * (1/SHARE - 1); reports arriving
    slower than that are written one by one, as they come. On a clock of the test's own."""
    import study.results as results
    clock = [0.0]
    monkeypatch.setattr(results.time, "monotonic", lambda: clock[0])
    files = []

    class SlowStore:                                     # our Store's two calls, each write taking 20 ms
        def drop_trial_rows(self, tid):
            pass

        def write_reports(self, study, tid, reports):
            clock[0] += 0.02
            files.append(len(reports))
    w = results.ReportWriter(SlowStore(), "st", share=0.5)   # the next write waits as long as the last took
    for it in range(1, 4):
        w.report("a", metrics_row(it), curve(it))
        w.flush_due()
        clock[0] += 0.05                                 # slower than the writer: written as they come
    assert files == [1, 1, 1]
    clock[0] += 0.05
    for it in range(4, 10):
        w.report("a", metrics_row(it), curve(it))       # a burst: held until 20 ms after the last write
        w.flush_due()
        clock[0] += 0.001
    assert files == [1, 1, 1, 1] and len(w.pending["a"]) == 5
    clock[0] += 0.02
    w.flush_due()
    assert files == [1, 1, 1, 1, 5]


def test_a_restarted_trial_replaces_its_rows_exactly_once(tmp_path):
    """A driver killed with rows on disk and rows held unwritten; the next driver sees the trial
    continue from its checkpoint (history re-sent as `replay`): every iteration once, none past
    where the trial now is. Also a trial retried from scratch in the same driver."""
    from study.results import ReportWriter
    s = Store(str(tmp_path / "st"))
    first = ReportWriter(s, "st", share=1.0)          # no pacing: every report written at once
    for it in (1, 2, 3):
        first.report("a", metrics_row(it, loss=9.0), curve(it))
        first.flush_due()                     # on disk: 000001, 000002, 000003
    first.report("b", metrics_row(1), curve(1))
    first.flush_due()
    first.next_flush = float("inf")
    first.report("a", metrics_row(4, loss=9.0), curve(4))     # held when the driver dies
    first.flush_due()
    assert len(rows_of(s.path, "metrics")) == 4
    del first

    second = ReportWriter(s, "st")
    second.next_flush = float("inf")
    replay = [(metrics_row(1), curve(1)), (metrics_row(2), curve(2))]     # the checkpoint was at 2
    second.report("a", metrics_row(3), curve(3), replay)
    second.report("a", metrics_row(4), curve(4))
    second.finish("a")
    second.report("b", metrics_row(1, loss=0.5), curve(1))              # retried from scratch
    second.report("b", metrics_row(2, loss=0.5), curve(2))
    second.report("b", metrics_row(1, loss=0.25), curve(1))             # and again, within this driver
    second.finish("b")
    got = rows_of(s.path, "metrics")
    assert [(t, i) for t, i, _, _ in got] == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)]
    assert {loss for t, _, _, loss in got if t == "a"} == {1.0} and got[-1][3] == 0.25   # the new run's rows
    assert len(rows_of(s.path, "lag_curves")) == 5 * 3


def test_write_rate_of_the_drivers_writer(tmp_path):
    """The writer path bench/bench_scale.py measures, small: a trial's 10 reports, arriving at
    once, cost about its three files (metrics, lag_curves, trials), and the rows land."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import bench_scale
    d = tmp_path / "synthetic"
    reports, busy = bench_scale.write(d, 48)
    assert reports == 480 and busy > 0
    from analysis.synthetic import curves_columns, trials_columns
    curves = len(curves_columns(trials_columns(48), 10)["trial_id"])
    assert raw(str(d)) == {"trials": 48, "metrics": 480, "lag_curves": curves}
    # unbatched: 21 files a trial; batched: 3, or a few more where a pause let one report go alone
    assert sum(1 for _ in (d / "parquet").rglob("*.parquet")) < 2 * 3 * 48


def test_a_torn_remote_journal_is_cut_remotely_too(tmp_path):
    """A pulled journal whose last record is torn is cut locally; the remote parts must be cut the
    same way, or the next push appends after bytes the local copy no longer has and every later
    pull reads a corrupt journal."""
    import json
    from study.journal import Journal
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    s = Store("remote", fs=fs)
    good = b'{"a":1}\n{"b":2}\n'
    s.write_bytes(good[:8], Journal.DIR, f"{0:016d}-{8:016d}")
    s.write_bytes(good[8:] + b'{"c":', Journal.DIR, f"{8:016d}-{21:016d}")     # killed mid-record
    j = Journal(s)
    assert open(j.path, "rb").read() == good and j.pushed == len(good)
    with open(j.path, "ab") as f:
        f.write(b'{"d":4}\n')
    j.push()
    again = Journal(Store("remote", fs=fs))           # another machine
    data = open(again.path, "rb").read()
    assert data == good + b'{"d":4}\n'
    assert [json.loads(line) for line in data.splitlines()] == [{"a": 1}, {"b": 2}, {"d": 4}]


def test_the_reports_snapshot_is_memory_capped_and_removed(tmp_path):
    """study report copies the tables into DuckDB with its memory capped and a scratch folder
    inside the study to spill to (a 100k-trial study's lag curves need not fit in RAM): the same
    rows as the uncapped copy, and nothing of it is left afterwards."""
    from analysis.db import SNAPSHOT_MEMORY, snapshot
    from analysis.report import write_report
    from analysis.synthetic import write_study
    from study.validate import parse_spec
    d = tmp_path / "synthetic"
    write_study(d, 96, 2)
    capped = snapshot(str(d), scratch=d / ".scratch")
    limit, temp = capped.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
    assert limit == "1.3 GiB" and SNAPSHOT_MEMORY == "1500MB" and temp == str(d / ".scratch" / "tmp")
    assert everything(capped) == everything(snapshot(str(d)))
    capped.close()
    before = {p.relative_to(d) for p in d.rglob("*") if "report" not in p.parts}
    write_report(str(d), parse_spec((d / "spec.yaml").read_text()), n_boot=20)
    after = {p.relative_to(d) for p in d.rglob("*") if "report" not in p.parts}
    assert after - before <= {Path("study.duckdb")} and not list(d.glob(".report-*"))
    assert not [p for p in (d / "report").rglob("*") if "snapshot" in p.name or p.name == "tmp"]
