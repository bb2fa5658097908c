"""A study on S3: run, SIGKILL, resume and report against a local S3-compatible server (moto's
ThreadedMotoServer on 127.0.0.1, reached through pyarrow's S3FileSystem and the AWS_ENDPOINT_URL
every AWS SDK reads), counting the requests each step makes."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import duckdb
import pyarrow.fs as pafs
import pytest

from tests.conftest import ROOT
from tests.test_resume import crash, start, wait_until

pytestmark = pytest.mark.slow
moto_server = pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the local S3 server")

SPEC = """\
study: ons3
task: {name: copy, n_symbols: 2, alphabet: 4, lag: 4}
grid: {lr: [3.0e-3, 6.0e-3, 9.0e-3]}
fixed: {arch: lstm, d_model: 8, batch_size: 8, eval_batch: 8}
seeds: [0]
budget: {steps: 60, eval_every: 20, checkpoint_every: 1}
max_concurrent: 1
"""


def kind(environ) -> str:
    q, m = environ.get("QUERY_STRING", ""), environ["REQUEST_METHOD"]
    if m == "GET" and ("list-type" in q or "prefix=" in q or "delimiter" in q):
        return "LIST"
    return m


@pytest.fixture
def s3(monkeypatch):
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    class Counts(Counter):
        fs = None
    counts = Counts()
    app = srv._server.app

    def counting(environ, start_response):       # every request the server answers, by kind
        counts[kind(environ)] += 1
        return app(environ, start_response)
    srv._server.app = counting
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    direct = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="test",
                               secret_key="test", region="us-east-1", allow_bucket_creation=True)
    direct.create_dir("memscale")
    counts.fs = direct
    yield counts
    srv.stop()


def s3_files(fs, table: str) -> int:
    sel = pafs.FileSelector("memscale/res/ons3/parquet/" + table, allow_not_found=True, recursive=True)
    return sum(1 for i in fs.get_file_info(sel) if i.path.endswith(".parquet"))


def test_s3_study_killed_resumed_and_reported(tmp_path, s3):
    spec = tmp_path / "ons3.yaml"
    spec.write_text(SPEC)
    uri = "s3://memscale/res/ons3"
    p = start("run", str(spec), "--results", "s3://memscale/res")
    wait_until(lambda: s3_files(s3.fs, "trials") >= 1, p)
    crash(p)
    p = start("resume", uri)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]

    # resume start-up, in-process: the trials table and the Optuna journal, nothing per evaluation
    from study.results import Store
    from study.journal import Journal
    s3.clear()
    store = Store(uri)
    rows = store.trial_rows()
    Journal(store)
    startup = dict(s3)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    files = s3_files(s3.fs, "trials") + s3_files(s3.fs, "metrics") + s3_files(s3.fs, "lag_curves")
    # one LIST per folder level, one GET per trials file and per journal piece (2 here: the killed
    # driver's part and the resumed one's merged chunk)
    assert startup.get("LIST", 0) <= 8 and startup.get("GET", 0) <= s3_files(s3.fs, "trials") + 2, startup

    s3.clear()
    r = subprocess.run([sys.executable, "-m", "study.cli", "report", uri], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = dict(s3)
    assert report.get("LIST", 0) <= 20 and report.get("GET", 0) <= 4 * files + 20, report
    print(f"\nS3 requests: {files} Parquet files; resume start-up {startup}; report {report}")

    # exactly once, read back from S3
    con = duckdb.connect()
    from analysis.db import create_views
    create_views(con, store)
    assert con.execute("SELECT count(*), count(DISTINCT trial_id) FROM trials").fetchall() == [(3, 3)]
    assert con.execute("SELECT count(*) = count(DISTINCT (trial_id, iteration)), count(*) FROM metrics"
                       ).fetchall() == [(True, 9)]
