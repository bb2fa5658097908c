"""Multi-node on one machine (ray.cluster_utils.Cluster): fractional logical GPUs, trials on both
workers, and a worker node removed mid-sweep whose trial resumes from its checkpoint elsewhere."""
from __future__ import annotations

import io

import duckdb
import pytest
import torch
from ray.cluster_utils import Cluster

from tests.test_resume import crash, start, wait_until

pytestmark = pytest.mark.slow

SPEC = """\
study: nodes
task: {name: copy, n_symbols: 2, alphabet: 4, lag: 4}
fixed: {arch: lstm, d_model: 16, batch_size: 8, eval_batch: 8}
search: {lr: {float: [1.0e-3, 1.0e-2], log: true}}
trials_per_cell: 6
budget: {steps: 240, eval_every: 20, checkpoint_every: 1}
resources: {cpu: 1, gpu: 0.5}      # two trials share each worker's (logical) GPU
"""


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    yield c, workers
    c.shutdown()


def running_checkpoint(d) -> tuple[str, dict] | None:
    """A trial that has a checkpoint but no trials row yet, i.e. one running now."""
    done = {p.stem for p in (d / "parquet" / "trials").glob("*.parquet")}
    for p in sorted((d / "checkpoints").glob("*.pt")) if (d / "checkpoints").exists() else []:
        if p.stem not in done:
            try:
                ck = torch.load(io.BytesIO(p.read_bytes()), weights_only=False)
            except Exception:       # noqa: BLE001 - being replaced right now; look again
                continue
            if not ck["final"] and ck["progress"]["step"] >= 40:
                return p.stem, ck
    return None


def test_node_removed_mid_sweep(tmp_path, cluster):
    c, workers = cluster
    spec = tmp_path / "nodes.yaml"
    spec.write_text(SPEC)
    d = tmp_path / "results" / "nodes"
    p = start("run", str(spec), "--results", str(tmp_path / "results"), "--address", c.address)
    try:
        wait_until(lambda: running_checkpoint(d) is not None, p)
        victim_trial, ck = running_checkpoint(d)
        (victim,) = [w for w in workers if w.node_id == ck["node"]]
        c.remove_node(victim, allow_graceful=False)
        out, _ = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            crash(p)
    assert p.returncode == 0, out[-3000:]
    con = duckdb.connect()
    rows = con.execute(f"""SELECT trial_id, status, node, resumed_from_step, steps
                           FROM read_parquet('{d}/parquet/trials/*.parquet') ORDER BY 1""").fetchall()
    assert len(rows) == 6 and {r[1] for r in rows} == {"completed"} and {r[4] for r in rows} == {240}
    placed = con.execute(f"SELECT DISTINCT node FROM read_parquet('{d}/parquet/metrics/*/*.parquet')").fetchall()
    assert {n for (n,) in placed} == {w.node_id for w in workers}     # both workers ran trials
    (moved,) = [r for r in rows if r[0] == victim_trial]
    assert moved[2] != victim.node_id and moved[3] >= 40   # finished on the survivor, from its checkpoint
    its = con.execute(f"""SELECT list(iteration ORDER BY iteration) FROM
                          read_parquet('{d}/parquet/metrics/{victim_trial}/*.parquet')""").fetchall()[0][0]
    assert its == list(range(1, 13))
