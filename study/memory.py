"""Memory length L*: the evaluation ladder, normalised scores with 95% intervals, and L*.

DESIGN.md, "Memory length": acc(l) is measured on sequences whose lag is exactly l; the score is
(acc - chance) / (1 - chance) (regression: 1 - MSE/MSE_baseline); L* is the largest ladder lag
whose score is >= tau there and at every smaller ladder lag, 0 if the first ladder lag fails.
Tasks with `memory_rule = "gain"` (text) measure how much context lowers the loss instead: L* is
the largest ladder length at which the extra context still lowers the loss by more than its 95%
interval (and every shorter ladder step did too).

Intervals: Wilson (1927) for accuracy over all scored steps; a percentile bootstrap over
sequences for regression (steps of one sequence are correlated) and for text.

Cost: recurrent models stream each sequence through their state in chunks of EVAL_CHUNK steps,
so the activations held are O(batch x chunk) whatever the lag (the input ids are the only thing
that grows with the lag). Other models see whole sequences, split into sub-batches of at most
EVAL_TOKENS steps; a lag that runs out of memory, or past `max_eval_s`, is recorded as infeasible
with the reason ("oom" or "time"), as is every longer lag, and the trial goes on.
"""
from __future__ import annotations

import math
import time

import torch

from study.models.base import SequenceModel
from study.tasks.base import Task

EVAL_CHUNK = 1024        # steps per streamed chunk when a recurrent model is evaluated
EVAL_TOKENS = 1 << 15    # steps per sub-batch for models that see the whole sequence at once
N_BOOT = 1000            # bootstrap resamples


class EvalTimeout(Exception):
    """Evaluation passed its max_eval_s deadline (raised between chunks and sub-batches)."""


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


def bootstrap(x: torch.Tensor, seed: int, n_boot: int = N_BOOT) -> tuple[float, float]:
    """95% percentile interval of the mean of x (N,) by resampling its entries."""
    x = x.double().cpu()
    idx = torch.randint(0, len(x), (n_boot, len(x)), generator=torch.Generator().manual_seed(seed))
    means = x[idx].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def normalise(metric: float, chance: float) -> float:
    return (metric - chance) / (1 - chance)


def memory_length(curve: list[dict], tau: float, rule: str = "threshold") -> int:
    """L* from lag_curves rows; infeasible lags count as failures. `rule` is the task's
    `memory_rule`: "threshold" (score >= tau) or "gain" (more context still helps: the paired
    gain's 95% lower bound `gain_lo` > 0; rows read back without it fall back to the score's
    lower bound beating the previous length's score)."""
    best, prev = 0, 0.0
    for row in sorted(curve, key=lambda r: r["lag"]):
        if not row["feasible"] or row["score"] is None:
            break
        if rule == "gain":
            ok = row["gain_lo"] > 0 if row.get("gain_lo") is not None else row["score_lo"] > prev
            prev = row["score"]
        else:
            ok = row["score"] >= tau
        if not ok:
            break
        best = row["lag"]
    return best


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    # CUDA says "out of memory"; torch's CPU allocator says "can't allocate memory"
    return (isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in msg
            or "can't allocate memory" in msg or "cannot allocate memory" in msg)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise EvalTimeout


@torch.no_grad()
def predict(model: SequenceModel, x: torch.Tensor, mask: torch.Tensor, chunk: int = EVAL_CHUNK,
            deadline: float | None = None) -> torch.Tensor:
    """Outputs at the scored positions, (N_scored, O), in row-major order of `mask`. Recurrent
    models stream in chunks, so memory stays O(state) whatever the lag; the others see the whole
    sequence, a sub-batch at a time."""
    B, T = mask.shape
    if not model.recurrent:
        outs, sub = [], max(1, EVAL_TOKENS // T)
        for s in range(0, B, sub):
            _check(deadline)
            out, _ = model(x[s:s + sub])
            outs.append(out[mask[s:s + sub]])
        return torch.cat(outs)
    state = model.init_state(B)
    per_chunk = []
    for s in range(0, T, chunk):
        _check(deadline)
        out, state = model(x[:, s:s + chunk], state)
        m = mask[:, s:s + chunk]
        per_chunk.append((out[m], m.nonzero()[:, 0]))                    # outputs, their rows
    # chunks give time-major order; restore row-major (the order of y[mask]) by a stable sort
    outs = torch.cat([o for o, _ in per_chunk])
    rows = torch.cat([r for _, r in per_chunk])
    return outs[torch.sort(rows, stable=True).indices]


def score_at(model: SequenceModel, task: Task, lag: int, n: int, seed: int, device, seq_len: int = 0,
             deadline: float | None = None) -> dict:
    """One lag_curves row for sequences whose lag is exactly `lag`."""
    # Common random numbers: the probe set depends on the seed only, not on the lag or the
    # evaluation, so curves over lags and over training compare like with like (text needs it:
    # its ladder lengths score the same characters).
    gen = torch.Generator().manual_seed(seed * 1_000_003)
    n = task.eval_size(n, lag)
    # lags inside the trained range keep the training length, as in training; longer ones grow it
    b = task.sample(n, gen, lag=lag, seq_len=max(seq_len, task.default_seq_len(lag))).to(device)
    pred = predict(model, b.x, b.mask, deadline=deadline).float()
    target = b.y[b.mask]
    seq = b.mask.nonzero()[:, 0].cpu()                                  # sequence of each scored step
    if task.memory_rule == "gain":
        nll = torch.nn.functional.cross_entropy(pred, target, reduction="none").cpu()   # (n,)
        base = task.baseline_loss()
        lo, hi = bootstrap(nll, seed=lag)
        return {"lag": lag, "metric": "1-xent/unigram", "n": len(nll), "feasible": True,
                "loss": float(nll.mean()), "score": 1 - float(nll.mean()) / base,
                "score_lo": 1 - hi / base, "score_hi": 1 - lo / base,
                "_nll": nll, "_base_nll": task.unigram_nll[target.cpu()]}
    if task.kind == "classification":
        correct = (pred.argmax(-1) == target)
        k, total = int(correct.sum()), int(correct.numel())
        lo, hi = wilson(k, total)
        loss = torch.nn.functional.cross_entropy(pred, target).item()
        return {"lag": lag, "metric": "accuracy", "n": total, "feasible": True, "loss": loss,
                "score": normalise(k / total, task.chance), "score_lo": normalise(lo, task.chance),
                "score_hi": normalise(hi, task.chance)}
    base = task.baseline_loss()
    sq = ((pred - target) ** 2).reshape(len(target), -1).mean(1).double().cpu()     # per scored step
    err = torch.zeros(n, dtype=torch.float64).index_add_(0, seq, sq) / torch.bincount(seq, minlength=n)
    lo, hi = bootstrap(err, seed=lag)                                   # resample whole sequences
    return {"lag": lag, "metric": "1-mse/baseline", "n": n, "feasible": True, "loss": float(err.mean()),
            "score": float(1 - err.mean() / base), "score_lo": 1 - hi / base, "score_hi": 1 - lo / base}


def add_gains(rows: list[dict]) -> None:
    """Text rows: the loss drop from the previous ladder length (the unigram model before the
    first), on the same characters, with a paired bootstrap 95% interval."""
    prev = None
    for r in rows:
        if "_nll" not in r:
            prev = None     # infeasible: no paired comparison across the gap
            continue
        before = r["_base_nll"] if prev is None else prev
        k = min(len(before), len(r["_nll"]))                            # the shared targets
        d = before[:k] - r["_nll"][:k]
        r["gain"] = float(d.mean())
        r["gain_lo"], r["gain_hi"] = bootstrap(d, seed=r["lag"])
        prev = r["_nll"]
    for r in rows:
        r.pop("_nll", None)
        r.pop("_base_nll", None)


def evaluate(model: SequenceModel, task: Task, lags: list[int], n: int, seed: int, device,
             max_eval_s: float | None = None, seq_len: int = 0) -> list[dict]:
    """One lag_curves row per ladder lag; lags from an out-of-memory or the time cap on are
    recorded as infeasible (with the reason), never dropped."""
    rows, reason = [], None
    deadline = None if max_eval_s is None else time.perf_counter() + max_eval_s
    was_training = model.training
    model.eval()
    for lag in lags:
        if reason is None:
            try:
                _check(deadline)
                rows.append({**score_at(model, task, lag, n, seed, device, seq_len, deadline), "reason": None})
                continue
            except EvalTimeout:
                reason = "time"
            except (RuntimeError, MemoryError) as e:
                if not is_oom(e):
                    raise
                reason = "oom"
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.empty_cache()       # leave the trial usable for training after an OOM
        rows.append({"lag": lag, "metric": None, "n": 0, "feasible": False, "score": None, "loss": None,
                     "score_lo": None, "score_hi": None, "reason": reason})
    if task.memory_rule == "gain":
        add_gains(rows)
    model.train(was_training)
    return rows
