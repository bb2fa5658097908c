"""Synthetic studies with known answers, for the analysis tests and bench/bench_report.py.

Each arch gets a known scaling law L* = a * C^alpha (log-normal noise) and a known cost exponent
(wall seconds per sequence ~ seq_len^k); the transformer runs out of memory at the longest lag and
one trial diverges, so every figure has infeasible points to draw. Files use the real schemas of
study/results.py, so the SQL sees exactly what a sweep writes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study.config import cells as grid_cells
from study.validate import parse_spec
from study.results import Store, make_trial_id, schema

# arch -> (alpha, a, cost exponent in seq_len)
TRUTH = {"lstm": (0.5, 2e-4, 1.0), "transformer": (0.3, 3e-2, 2.0), "tcn": (0.4, 2e-3, 1.0)}
LAGS = [8, 32, 128, 512]
WINDOWS = [None, 16]
TAU = 0.9
SPEC = """study: synthetic
task: {name: copy}
grid:
  arch: [lstm, transformer, tcn]
  lag: [8, 32, 128, 512]
  window: [full, 16]
search:
  d_model: {choice: [16, 32, 64, 128, 256]}
  lr: {float: [1.0e-4, 1.0e-2], log: true}
trials_per_cell: %d
objective: %s
budget: {steps: 1000, eval_every: 500}
seeds: [0, 1]
"""
ONE_OBJECTIVE = "{metric: memory_length, mode: max}"
TWO_OBJECTIVES = "[{metric: memory_length, mode: max}, {metric: train_flops, mode: min}]"


def trials_per_cell(n_trials: int) -> int:
    """Enough slots per cell (2 seeds each, 24 cells) to hold n_trials trials."""
    n_cells = len(TRUTH) * len(LAGS) * len(WINDOWS)
    return max(1, -(-n_trials // (2 * n_cells)))


def trials_columns(n_trials: int, seed: int = 0, objectives: str = ONE_OBJECTIVE) -> dict[str, np.ndarray]:
    """Column arrays of n_trials trials spread over the grid (arch x lag x window), 2 seeds per slot."""
    rng = np.random.default_rng(seed)
    archs = list(TRUTH)
    n_cells = len(archs) * len(LAGS) * len(WINDOWS)
    i = np.arange(n_trials)
    seed_col, slot = i % 2, i // 2
    cell = slot % n_cells
    arch_i = cell // (len(LAGS) * len(WINDOWS))
    lag = np.array(LAGS)[(cell // len(WINDOWS)) % len(LAGS)]
    win_i = cell % len(WINDOWS)
    alpha, a, k = (np.array([TRUTH[x][j] for x in archs])[arch_i] for j in range(3))
    seq_len = lag + 20
    d_model = 16 + (i % 8) * 8
    # floats carried from step to step: (h, c) for the LSTM, the K/V cache of the window (or the
    # whole sequence) for the transformer, a receptive field's worth of activations for the TCN
    keys = np.where(np.array([WINDOWS[w] or 0 for w in cell % len(WINDOWS)]) > 0,
                    np.array([WINDOWS[w] or 0 for w in cell % len(WINDOWS)]), seq_len)
    state_size = np.choose(arch_i, [2 * d_model, 2 * d_model * keys, 8 * d_model])
    flops = np.exp(rng.uniform(np.log(1e9), np.log(1e13), n_trials))
    mem = np.floor(a * flops ** alpha * np.exp(rng.normal(0, 0.25, n_trials))).astype(np.int64)
    steps = np.full(n_trials, 1000)
    batch = 32
    tokens = steps * batch * seq_len
    wall = 1e-6 * seq_len.astype(float) ** k * steps * batch * np.exp(rng.normal(0, 0.1, n_trials))
    peak = (2e5 * seq_len.astype(float) ** k * batch * np.exp(rng.normal(0, 0.05, n_trials))).astype(np.int64)
    status = np.full(n_trials, "completed", dtype=object)
    status[(arch_i == 1) & (lag == LAGS[-1])] = "oom"
    status[i == 5] = "diverged"
    failed = status != "completed"
    cells = np.array([f"arch={archs[ai]},lag={lg},window={'full' if WINDOWS[w] is None else WINDOWS[w]}"
                      for ai, lg, w in zip(arch_i, lag, win_i)], dtype=object)
    windows = np.array([WINDOWS[w] for w in win_i], dtype=object)
    # the project's own ids (cells in the spec's grid order: arch, lag, window; content-addressed)
    grid = grid_cells(parse_spec(SPEC % (1, objectives), check_values=False))
    trial_id = np.array([make_trial_id(grid[int(c)], int(s // n_cells), int(sd))
                         for c, s, sd in zip(cell, slot, seed_col)], dtype=object)
    return {
        "study": np.full(n_trials, "synthetic", dtype=object), "trial_id": trial_id, "cell": cells,
        "arch": np.array(archs, dtype=object)[arch_i], "task": np.full(n_trials, "copy", dtype=object),
        "seed": seed_col, "lag": lag, "lag_dist": np.full(n_trials, "uniform", dtype=object),
        "seq_len": seq_len, "window": windows, "batch_size": np.full(n_trials, batch), "d_model": d_model,
        "lr": np.full(n_trials, 1e-3), "params": 1000 + (i % 8) * 500, "state_size": state_size, "train_flops": flops, "tokens": tokens,
        "steps": steps, "wall_s": np.where(failed & (status == "oom"), np.nan, wall), "peak_mem_bytes": peak,
        "device": np.full(n_trials, "cpu", dtype=object), "dtype": np.full(n_trials, "float32", dtype=object),
        "status": status, "memory_length": np.where(failed, -1, mem), "tau": np.full(n_trials, TAU),
        "solved": mem >= lag, "final_loss": np.exp(-np.log(mem + 1) / 3), "host": np.full(n_trials, "synth", dtype=object),
        "started_at": 1.7e9 + 60.0 * i, "ended_at": 1.7e9 + 60.0 * i + np.nan_to_num(wall),
        "code_version": np.full(n_trials, "synthetic", dtype=object), "torch_version": np.full(n_trials, "-", dtype=object),
    }


def table(name: str, cols: dict[str, np.ndarray]) -> pa.Table:
    """Arrow table with the real schema: missing columns null, NaN and -1 sentinels null."""
    sch = schema(name)
    n = len(next(iter(cols.values())))
    arrays = []
    for f in sch:
        v = cols.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
            continue
        v = np.asarray(v)
        if pa.types.is_timestamp(f.type):
            v = (v * 1000).astype(np.int64)              # epoch seconds -> ms, as study/results.py stores them
        mask = None
        if v.dtype.kind == "f":
            mask = np.isnan(v)
        elif v.dtype == object:
            mask = np.array([x is None for x in v], dtype=bool)
        elif f.name == "memory_length":
            mask = v < 0
        arrays.append(pa.array(v, type=f.type, mask=mask) if v.dtype != object or f.type == pa.string()
                      else pa.array([None if x is None else x for x in v], type=f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def curves_columns(t: dict[str, np.ndarray], iterations: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A lag ladder 1, 2, 4, ..., 4*lag per trial and iteration; the score falls past L*."""
    rng = np.random.default_rng(seed + 1)
    rows: dict[str, list] = {k: [] for k in ("study", "trial_id", "iteration", "step", "lag", "score",
                                             "score_lo", "score_hi", "metric", "n", "feasible")}
    for j in range(len(t["trial_id"])):
        if t["status"][j] == "oom":
            continue                       # never got to an evaluation
        ladder = 2 ** np.arange(int(np.log2(t["lag"][j] * 4)) + 1)
        ml = max(int(t["memory_length"][j]), 0)
        for it in range(1, iterations + 1):
            grow = it / iterations
            score = 1 / (1 + (ladder / max(ml * grow, 0.5)) ** 2) + rng.normal(0, 0.02, len(ladder))
            score = np.clip(score, -0.1, 1)
            feas = ~((t["arch"][j] == "transformer") & (ladder > 256))   # streaming attention ran out of memory
            rows["lag"].extend(ladder)
            rows["score"].extend(np.where(feas, score, np.nan))
            rows["score_lo"].extend(np.where(feas, score - 0.05, np.nan))
            rows["score_hi"].extend(np.where(feas, np.minimum(score + 0.05, 1), np.nan))
            rows["feasible"].extend(feas)
            k = len(ladder)
            rows["study"].extend(["synthetic"] * k)
            rows["trial_id"].extend([t["trial_id"][j]] * k)
            rows["iteration"].extend([it] * k)
            rows["step"].extend([it * 500] * k)
            rows["metric"].extend(["accuracy"] * k)
            rows["n"].extend([256] * k)
    out = {k: np.array(v, dtype=object if k in ("study", "trial_id", "metric") else None) for k, v in rows.items()}
    return out


def metrics_columns(t: dict[str, np.ndarray], iterations: int) -> dict[str, np.ndarray]:
    n = len(t["trial_id"])
    it = np.tile(np.arange(1, iterations + 1), n)
    rep = np.repeat(np.arange(n), iterations)
    frac = it / iterations
    return {"study": t["study"][rep], "trial_id": t["trial_id"][rep], "iteration": it,
            "step": (t["steps"][rep] * frac).astype(np.int64), "tokens": (t["tokens"][rep] * frac).astype(np.int64),
            "train_flops": t["train_flops"][rep] * frac, "wall_s": t["wall_s"][rep] * frac,
            "train_loss": 1 / (1 + it), "eval_loss": 1.1 / (1 + it),
            "memory_length": np.maximum((t["memory_length"][rep] * frac).astype(np.int64), -1),
            "lr": t["lr"][rep]}


def _take(cols: dict[str, np.ndarray], sel) -> dict[str, np.ndarray]:
    return {k: v[sel] for k, v in cols.items()}


def write_study(study_dir: str | Path, n_trials: int = 96, iterations: int = 2, *, seed: int = 0,
                objectives: str = ONE_OBJECTIVE, layout: str = "per_trial", rows_per_file: int = 200_000) -> dict:
    """Write a synthetic study. layout "per_trial" is the sweep's (one file per trial and per
    iteration, through Store); "bulk" writes a few large files, for benchmarks at 100k trials."""
    store = Store(str(study_dir))
    from study import grow
    grow.record(store, grow.History(), SPEC % (trials_per_cell(n_trials), objectives))   # as `study run` does
    t = trials_columns(n_trials, seed, objectives)
    m = metrics_columns(t, iterations)
    if layout == "per_trial":
        c = curves_columns(t, iterations, seed)
        for j, tid in enumerate(t["trial_id"]):
            _write(store, "trials", table("trials", _take(t, [j])), f"{tid}.parquet")
            for it in range(1, iterations + 1):
                for name, cols in (("metrics", m), ("lag_curves", c)):
                    sel = (cols["trial_id"] == tid) & (cols["iteration"] == it)
                    if not sel.any():
                        continue
                    _write(store, name, table(name, _take(cols, sel)), tid, f"{it:06d}.parquet")
    else:
        # The globs want one directory level under metrics/ and lag_curves/: bulk files go in "bulk/".
        for name, cols, sub in (("trials", t, ()), ("metrics", m, ("bulk",))):
            n = len(cols["trial_id"])
            for k, s in enumerate(range(0, n, rows_per_file)):
                _write(store, name, table(name, _take(cols, slice(s, s + rows_per_file))), *sub, f"part{k:04d}.parquet")
        # Curves only for the final evaluation of a subset of trials: enough rows to exercise the joins.
        c = curves_columns(_take(t, slice(0, min(n_trials, 20_000))), 1, seed)
        _write(store, "lag_curves", table("lag_curves", c), "bulk", "part0000.parquet")
    return t


def _write(store: Store, name: str, tbl: pa.Table, *path: str) -> None:
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    store.write_bytes(buf.getvalue(), "parquet", name, *path)
