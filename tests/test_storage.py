"""Results on any pyarrow filesystem: a file:// URI study, killed and resumed from the URI, gives
the same tables as a plain path; object-store code paths run on a non-local pyarrow filesystem."""
from __future__ import annotations

import duckdb
import pyarrow.fs as pafs
import pytest
import torch

from analysis.db import create_views
from study.results import Store
from study.train import precision
from tests.test_resume import crash, n_files, start, wait_until

SPEC = """\
study: uri
task: {name: copy, n_symbols: 2, alphabet: 4, lag: 4}
grid: {lr: [3.0e-3, 6.0e-3]}          # no sampling: both runs must train the same trials
fixed: {arch: lstm, d_model: 16, batch_size: 8, eval_batch: 8}
seeds: [0, 1]
budget: {steps: 120, eval_every: 20}
"""


def tables(d) -> tuple[list, list]:
    con = duckdb.connect()
    trials = con.execute(f"""SELECT trial_id, lr, seed, status, steps, memory_length, final_loss, train_flops
        FROM read_parquet('{d}/parquet/trials/*.parquet') ORDER BY 1""").fetchall()
    metrics = con.execute(f"""SELECT trial_id, iteration, step, train_loss, eval_loss, memory_length
        FROM read_parquet('{d}/parquet/metrics/*/*.parquet') ORDER BY 1, 2""").fetchall()
    return trials, metrics


@pytest.mark.slow
def test_file_uri_study_killed_and_resumed_equals_plain_path(tmp_path):
    spec = tmp_path / "uri.yaml"
    spec.write_text(SPEC)
    plain = tmp_path / "plain"
    p = start("run", str(spec), "--results", str(plain))
    assert p.wait(timeout=600) == 0

    uri = f"file://{tmp_path}/viauri"
    d = tmp_path / "viauri" / "uri"
    p = start("run", str(spec), "--results", uri)
    wait_until(lambda: n_files(d, "trials") >= 1, p)
    crash(p)
    p = start("resume", f"{uri}/uri")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]

    assert tables(d) == tables(plain / "uri")
    assert len(tables(d)[0]) == 4


def test_non_local_filesystem_paths(tmp_path):
    """Writes without rename, and DuckDB reading through pyarrow datasets (how s3:// and gs:// work)."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = Store("remote-study", fs=fs)
    assert not store.local
    store.write_trial({"trial_id": "a", "arch": "lstm", "status": "completed", "memory_length": 5, "lag": 4})
    store.write_report("remote-study", "a", {"iteration": 1, "step": 10, "memory_length": 5}, [
        {"lag": 4, "score": 1.0, "feasible": True}])
    assert [r["memory_length"] for r in store.trial_rows()] == [5]
    assert sorted(p.name for p in (tmp_path / "remote-study" / "parquet" / "trials").iterdir()) == ["a.parquet"]
    con = duckdb.connect()
    create_views(con, store)
    assert con.execute("SELECT arch, memory_length FROM trials").fetchall() == [("lstm", 5)]
    assert con.execute("SELECT count(*) FROM metrics").fetchall() == [(1,)]
    assert con.execute("SELECT lag, score FROM lag_curves").fetchall() == [(4, 1.0)]


def test_precision_is_fp32_on_cpu_and_bf16_autocast_for_attention_on_cuda():
    name, amp = precision(torch.device("cpu"), recurrent=False)
    assert name == "float32"
    with amp():
        assert not torch.is_autocast_enabled()
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert precision(torch.device("cuda"), recurrent=False)[0] == "bfloat16"
        assert precision(torch.device("cuda"), recurrent=True)[0] == "float32"
