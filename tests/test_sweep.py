"""A tiny real sweep on local Ray, read back through DuckDB, queried and reported."""
from __future__ import annotations

import duckdb
import pytest

from study.config import cells
from study.validate import load_spec
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def test_tiny_sweep_end_to_end(tmp_path, write_spec):
    spec = write_spec(TINY.format(name="tiny"))
    results = tmp_path / "results"
    r = run_cli("run", str(spec), "--results", "results", cwd=tmp_path)   # a relative path, as users type
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trials finished 2/2" in r.stdout                       # progress was printed
    d = results / "tiny"
    assert (d / "spec.yaml").read_text() == spec.read_text()
    cell = cells(load_spec(spec))[0].id                            # content-addressed (study/identity.py)
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == [f"{cell}-t000-s0.pt", f"{cell}-t001-s0.pt"]

    con = duckdb.connect()
    trials = con.execute(f"""SELECT trial_id, cell, arch, task, lag, "window", status, memory_length, lr,
                             d_model, params, train_flops, wall_s, peak_mem_bytes, code_version, host
                             FROM read_parquet('{d}/parquet/trials/*.parquet') ORDER BY 1""").fetchall()
    assert [t[0] for t in trials] == [f"{cell}-t000-s0", f"{cell}-t001-s0"]
    for t in trials:
        assert t[2:7] == ("lstm", "copy", 4, None, "completed")
        assert t[7] is not None and 1e-3 <= t[8] <= 1e-2 and t[9] == 16
        assert t[10] > 0 and t[11] > 0 and t[12] > 0 and t[13] > 0 and t[14] and t[15]
    assert trials[0][8] != trials[1][8]                            # Optuna chose two learning rates
    its = con.execute(f"""SELECT trial_id, list(iteration ORDER BY iteration), list(step ORDER BY iteration)
                          FROM read_parquet('{d}/parquet/metrics/*/*.parquet') GROUP BY 1 ORDER BY 1""").fetchall()
    assert [i[1] for i in its] == [[1, 2], [1, 2]] and its[0][2] == [10, 20]
    lags = con.execute(f"""SELECT DISTINCT lag FROM read_parquet('{d}/parquet/lag_curves/*/*.parquet')
                           ORDER BY 1""").fetchall()
    assert [x[0] for x in lags] == [1, 2, 4, 8, 16]                # ladder to 4 x lag

    r = run_cli("sql", str(d), "SELECT arch, lag, max(memory_length) AS best FROM trials GROUP BY ALL")
    assert r.returncode == 0 and "arch" in r.stdout and "lstm" in r.stdout and "(1 rows)" in r.stdout
    r = run_cli("sql", str(d))
    assert r.returncode == 0 and "trials" in r.stdout and "memory_length" in r.stdout
    r = run_cli("sql", str(d), "SELECT nonsense FROM trials")
    assert r.returncode == 2 and "Traceback" not in r.stderr

    r = run_cli("status", str(d))
    assert r.returncode == 0 and "cells done 1/1" in r.stdout and "completed 2" in r.stdout

    r = run_cli("report", str(d))
    assert r.returncode == 0, r.stderr
    png = d / "report" / "memory_vs_compute.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (d / "report" / "report.html").read_text()

    r = run_cli("run", str(spec), "--results", str(results))
    assert r.returncode == 2 and "study resume" in r.stderr
    r = run_cli("resume", str(d))
    assert r.returncode == 0 and "0 to run" in r.stdout
