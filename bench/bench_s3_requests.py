"""Benchmark (not a test): S3 requests of a study of N trials, counted at a local moto server.

Writes N trials x 10 evaluations through bench_scale's writer path onto s3:// (moto's
ThreadedMotoServer on 127.0.0.1, reached through AWS_ENDPOINT_URL), compacts it, then counts the
requests of a resume start-up (trials table + Optuna journal), `study sql` and `study report`.

    .venv/bin/python bench/bench_s3_requests.py 250
"""
import os, subprocess, sys, time
from collections import Counter
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(0, str(ROOT))
from moto.server import ThreadedMotoServer
import pyarrow.fs as pafs
import logging; logging.getLogger("werkzeug").setLevel(logging.ERROR)
srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False); srv.start()
host, port = srv.get_host_and_port()
counts = Counter(); app = srv._server.app
def kind(e):
    q, m = e.get("QUERY_STRING", ""), e["REQUEST_METHOD"]
    return "LIST" if m == "GET" and ("list-type" in q or "prefix=" in q) else m
def counting(environ, sr):
    counts[kind(environ)] += 1
    return app(environ, sr)
srv._server.app = counting
os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t",
                  AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="t", secret_key="t",
                  region="us-east-1", allow_bucket_creation=True).create_dir("memscale")
import bench_scale
n = int(sys.argv[1])
uri = "s3://memscale/b/synthetic"
t0 = time.time()
reports, busy = bench_scale.write(uri, n)
print(f"wrote {n} trials ({reports} reports) in {time.time()-t0:.0f}s, {reports/busy:.0f}/s; requests {dict(counts)}", flush=True)
from study.results import Store
from study.journal import Journal
store = Store(uri)
counts.clear(); t0 = time.time()
print(f"study compact: {store.compact()} requests {dict(counts)}, {time.time()-t0:.1f}s", flush=True)
files = {t: len(store.segment_files(t)) + sum(len(v) for v in store.loose_files(t).values()) for t in ("trials", "metrics", "lag_curves")}
counts.clear(); t0 = time.time()
rows = store.trial_rows(); Journal(store)
print(f"files {files}; resume start-up (trials + journal): {len(rows)} rows, {dict(counts)}, {time.time()-t0:.1f}s", flush=True)
for args in (["sql", uri, "SELECT count(*) FROM metrics"], ["report", uri]):
    counts.clear(); t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "study.cli", *args], capture_output=True, text=True, cwd=ROOT)
    print(f"study {args[0]}: rc {r.returncode} {r.stdout.strip()[:200]!r} {r.stderr.strip()[-300:]!r} requests {dict(counts)}, {time.time()-t0:.1f}s", flush=True)
srv.stop()
