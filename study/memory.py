"""Memory length L*: the evaluation ladder, normalised scores with 95% intervals, and L*.

DESIGN.md, "Memory length": acc(l) is measured on sequences whose lag is exactly l; the score is
(acc - chance) / (1 - chance) (regression: 1 - MSE/MSE_baseline); L* is the largest ladder lag
whose score is >= tau there and at every smaller ladder lag, 0 if the first ladder lag fails.
"""
from __future__ import annotations

import math
import time

import torch

from study.models.base import SequenceModel
from study.tasks.base import Task

EVAL_CHUNK = 1024   # steps per streamed chunk when a recurrent model is evaluated


def ladder(lag: int, lag_dist: str, max_lag: int | None = None) -> list[int]:
    """Geometric (x2) lags from the smallest trained lag to max_lag (default 4 x lag), with lag."""
    lo = 1 if lag_dist == "uniform" else lag
    hi = max(max_lag or 4 * lag, lo)
    out, x = {lag, hi}, lo
    while x < hi:
        out.add(x)
        x *= 2
    return sorted(v for v in out if lo <= v <= hi)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (Wilson 1927)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def normalise(metric: float, chance: float) -> float:
    return (metric - chance) / (1 - chance)


def memory_length(curve: list[dict], tau: float) -> int:
    """L* from lag_curves rows (keys lag, score, feasible); infeasible lags count as failures."""
    best = 0
    for row in sorted(curve, key=lambda r: r["lag"]):
        if not row["feasible"] or row["score"] is None or row["score"] < tau:
            break
        best = row["lag"]
    return best


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    # CUDA: torch.OutOfMemoryError; host: MemoryError, or the CPU allocator's RuntimeError
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in msg \
        or "can't allocate memory" in msg


@torch.no_grad()
def predict(model: SequenceModel, x: torch.Tensor, mask: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Outputs at the scored positions, (N_scored, O). Recurrent models stream in chunks, so memory
    stays O(state) whatever the lag; the others see the whole sequence at once."""
    if not model.recurrent:
        out, _ = model(x)
        return out[mask]
    state, outs = model.init_state(x.shape[0]), []
    for s in range(0, x.shape[1], chunk):
        out, state = model(x[:, s:s + chunk], state)
        outs.append(out[mask[:, s:s + chunk]])
    return torch.cat(outs)


def score_at(model: SequenceModel, task: Task, lag: int, n: int, seed: int, device, seq_len: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + lag)   # the same probe set every evaluation
    # lags inside the trained range keep the training length, as in training; longer ones grow it
    b = task.sample(n, gen, lag=lag, seq_len=max(seq_len, task.default_seq_len(lag))).to(device)
    pred = predict(model, b.x, b.mask)
    target = b.y[b.mask]
    if task.kind == "classification":
        correct = (pred.argmax(-1) == target)
        k, total = int(correct.sum()), int(correct.numel())
        lo, hi = wilson(k, total)
        acc = k / total
        loss = torch.nn.functional.cross_entropy(pred, target).item()
        return {"lag": lag, "metric": "accuracy", "n": total, "feasible": True, "loss": loss,
                "score": normalise(acc, task.chance), "score_lo": normalise(lo, task.chance),
                "score_hi": normalise(hi, task.chance)}
    base = task.baseline_loss()
    err = ((pred - target) ** 2).reshape(n, -1).mean(1).double().cpu()             # per sequence
    boot = torch.Generator().manual_seed(lag)
    idx = torch.randint(0, n, (1000, n), generator=boot)
    samples = 1 - err[idx].mean(1) / base                                         # bootstrap over sequences
    return {"lag": lag, "metric": "1-mse/baseline", "n": n, "feasible": True, "loss": float(err.mean()),
            "score": float(1 - err.mean() / base), "score_lo": float(samples.quantile(0.025)),
            "score_hi": float(samples.quantile(0.975))}


def evaluate(model: SequenceModel, task: Task, lags: list[int], n: int, seed: int, device,
             max_eval_s: float | None = None, seq_len: int = 0) -> list[dict]:
    """One lag_curves row per ladder lag; lags past an out-of-memory or the time cap are recorded
    as infeasible (with the reason), never dropped."""
    rows, reason, t0 = [], None, time.perf_counter()
    was_training = model.training
    model.eval()
    for lag in lags:
        if reason is None and max_eval_s is not None and time.perf_counter() - t0 > max_eval_s:
            reason = "time"
        if reason is None:
            try:
                rows.append({**score_at(model, task, lag, n, seed, device, seq_len), "reason": None})
                continue
            except (RuntimeError, MemoryError) as e:
                if not is_oom(e):
                    raise
                reason = "oom"
        rows.append({"lag": lag, "metric": None, "n": 0, "feasible": False, "score": None, "loss": None,
                     "score_lo": None, "score_hi": None, "reason": reason})
    model.train(was_training)
    return rows
