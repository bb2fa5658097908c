"""The cost analysis fits memory on the training step's peak tensor bytes (peak_tensor_bytes,
study/peak.py), not the process's resident peak; a study written before that column existed falls
back to the resident peak (issue 19, part 4)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from analysis import db
from analysis.fit import cost_fits
from study.results import Store

SEQ = [64, 128, 256, 512]


def trial(tid: str, seq_len: int, tensor: int | None, resident: int) -> dict:
    # batch 8 (tokens = steps * batch * seq_len): memory per sequence = peak / 8
    return {"study": "mem", "trial_id": tid, "cell": "arch=lstm", "arch": "lstm", "task": "copy", "seed": 0,
            "lag": 8, "window": None, "seq_len": seq_len, "train_flops": 1e9, "memory_length": 4,
            "status": "completed", "tokens": 100 * 8 * seq_len, "steps": 100, "wall_s": 1e-3 * seq_len,
            "peak_mem_bytes": resident, "peak_tensor_bytes": tensor, "tau": 0.9}


def write(store: Store, legacy: bool = False) -> None:
    """Tensor peak exactly linear in seq_len; the resident peak falls with it (exponent -1)."""
    for i, T in enumerate(SEQ):
        for k in range(2):
            row = trial(f"t{i}{k}", T, 1000 * T * (1 + k), 10 ** 9 // T)
            store.write_trial(row)
            if legacy:                  # as an older memscale wrote it: no peak_tensor_bytes column
                p = store.join("parquet", "trials", f"{row['trial_id']}.parquet")
                t = pq.read_table(p)
                pq.write_table(t.drop_columns(["peak_tensor_bytes"]), p)


def mem_exponents(d: str) -> tuple[float, float]:
    cols, rows = db.run_query(d, "cost_growth")
    (sql,) = [dict(zip(cols, r)) for r in rows]
    fit = next(r for r in cost_fits(db.connect(d), n_boot=50) if r["fit"].startswith("peak_mem"))
    return sql["mem_exponent"], fit["alpha"]


@pytest.mark.parametrize("legacy, exponent", [(False, 1.0), (True, -1.0)])
def test_memory_exponent_reads_the_tensor_peak_or_falls_back(tmp_path, legacy, exponent):
    store = Store(str(tmp_path))
    write(store, legacy)
    assert ("peak_tensor_bytes" in pq.read_schema(store.join("parquet", "trials", "t00.parquet")).names) != legacy
    sql, fit = mem_exponents(str(tmp_path))
    assert sql == pytest.approx(exponent, abs=1e-6) and fit == pytest.approx(exponent, abs=1e-6)
    cols, rows = db.run_query(str(tmp_path), "cost_by_seq_len")
    per_seq = [dict(zip(cols, r))["peak_mem_bytes_per_seq"] for r in rows]
    want = [1000 * T * 1.5 / 8 for T in SEQ] if not legacy else [10 ** 9 // T / 8 for T in SEQ]
    assert per_seq == pytest.approx(want)
