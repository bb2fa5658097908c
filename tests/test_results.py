"""The Parquet writer: schema, atomic writes, and rows that are written exactly once."""
from __future__ import annotations

import duckdb
import pyarrow.parquet as pq
import pytest

from study.results import Store, schema


def metrics_row(it: int, loss: float = 1.0) -> dict:
    return {"iteration": it, "step": 10 * it, "tokens": 80 * it, "train_flops": 1e6 * it, "wall_s": 0.1 * it,
            "train_loss": loss, "eval_loss": loss, "memory_length": it, "lr": 1e-3, "extra_key": "ignored"}


def curve(it: int) -> list[dict]:
    return [{"lag": lag, "score": 0.5, "score_lo": 0.4, "score_hi": 0.6, "metric": "accuracy", "n": 10,
             "feasible": True, "reason": None, "loss": 1.0} for lag in (1, 2, 4)]


def count(store: Store, table: str, glob: str) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{store.path}/parquet/{table}/{glob}')").fetchall()[0][0]


def test_schema_has_the_design_columns():
    trials = schema("trials").names
    for col in ("study", "trial_id", "cell", "arch", "task", "lag", "lag_dist", "seq_len", "window", "seed",
                "d_model", "lr", "batch_size", "params", "state_size", "flops_per_token", "train_flops",
                "tokens", "steps", "wall_s", "peak_mem_bytes", "device", "dtype", "status", "error",
                "memory_length", "tau", "solved", "final_loss", "started_at", "ended_at", "host",
                "code_version", "torch_version"):
        assert col in trials, col
    assert schema("metrics").names == ["study", "trial_id", "iteration", "step", "tokens", "train_flops",
                                       "wall_s", "train_loss", "eval_loss", "memory_length", "lr", "node"]
    assert {"study", "trial_id", "step", "lag", "score", "score_lo", "score_hi", "metric", "n",
            "feasible"} <= set(schema("lag_curves").names)
    assert str(schema("trials").field("window").type) == "int64"


def test_rewriting_a_report_replaces_it(tmp_path):
    s = Store(str(tmp_path / "st"))
    for _ in range(3):                                   # a replay after a crash writes the same rows
        s.write_report("st", "c000-t000-s0", metrics_row(1), curve(1))
    s.write_report("st", "c000-t000-s0", metrics_row(2, loss=0.5), curve(2))
    assert count(s, "metrics", "*/*.parquet") == 2
    assert count(s, "lag_curves", "*/*.parquet") == 6
    t = pq.read_table(f"{s.path}/parquet/metrics/c000-t000-s0/000002.parquet")
    assert t.schema == schema("metrics") and t.column("train_loss").to_pylist() == [0.5]


def test_drop_after_removes_rows_of_a_longer_earlier_run(tmp_path):
    s = Store(str(tmp_path / "st"))
    for it in (1, 2, 3, 4):
        s.write_report("st", "a", metrics_row(it), curve(it))
    s.write_report("st", "b", metrics_row(3), curve(3))
    s.drop_after("a", 2)
    assert count(s, "metrics", "a/*.parquet") == 2 and count(s, "lag_curves", "a/*.parquet") == 6
    assert count(s, "metrics", "b/*.parquet") == 1


def test_a_crash_mid_write_leaves_no_visible_file(tmp_path, monkeypatch):
    s = Store(str(tmp_path / "st"))
    s.write_trial({"trial_id": "ok", "status": "completed", "memory_length": 3})

    def crash(src, dst):
        raise OSError("killed mid-write")
    monkeypatch.setattr(Store, "_commit", lambda self, tmp, final: crash(tmp, final))
    with pytest.raises(OSError):
        s.write_trial({"trial_id": "half", "status": "completed"})
    files = sorted(p.name for p in (tmp_path / "st" / "parquet" / "trials").iterdir())
    assert "half.parquet" not in files and "ok.parquet" in files
    assert all(f == "ok.parquet" or (f.startswith(".") and f.endswith(".tmp")) for f in files)
    assert count(s, "trials", "*.parquet") == 1         # readers' globs never see the temp file


def test_trial_rows_roundtrip_and_unknown_keys_are_ignored(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.write_trial({"trial_id": "x", "arch": "lstm", "window": None, "lag": 8, "memory_length": 4,
                   "started_at": 1_700_000_000.5, "not_a_column": 1})
    (row,) = s.trial_rows()
    assert row["arch"] == "lstm" and row["window"] is None and row["lag"] == 8
    assert row["started_at"].timestamp() == pytest.approx(1_700_000_000.5)
    assert "not_a_column" not in row


def test_to_table_equals_a_column_by_column_build():
    """to_table's row-wise Arrow conversion (the driver's fast path) against the obvious one: each
    column built from its values, timestamps from epoch seconds to ms; keys outside the schema
    dropped, missing ones null, numpy scalars and ints in float columns accepted."""
    import numpy as np
    import pyarrow as pa
    from study.results import to_table

    def reference(table: str, rows: list[dict]) -> pa.Table:
        cols = {}
        for f in schema(table):
            vals = [r.get(f.name) for r in rows]
            if pa.types.is_timestamp(f.type):
                vals = [None if v is None else int(v * 1000) for v in vals]
            cols[f.name] = pa.array(vals, type=f.type)
        return pa.Table.from_pydict(cols, schema=schema(table))
    cases = {
        "trials": [{"study": "s", "trial_id": "a", "seed": np.int64(1), "wall_s": 2, "started_at": 1.7e9 + 0.123,
                    "ended_at": None, "censored": True, "lr": np.float32(0.5), "extra": [1]}, {"trial_id": "b"}],
        "metrics": [{**metrics_row(it), "study": "s", "trial_id": "a", "node": None} for it in (1, 2)],
        "lag_curves": [{**c, "study": "s", "trial_id": "a", "iteration": 1, "step": 10} for c in curve(1)],
    }
    for table, rows in cases.items():
        got = to_table(table, rows)
        assert got.schema == schema(table) and got.equals(reference(table, rows)), table
        assert got.num_rows == len(rows)
