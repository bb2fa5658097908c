"""Memory length L*: the evaluation ladder, normalised scores with 95% intervals, and L*.

docs/design.md, "Dependency distance, reach, L* and censoring": acc(l) is measured on sequences whose lag is exactly l, at the scored
positions whose dependency distance is `task.distance(l)` (the only ones a task marks when it
evaluates); the score is (acc - chance) / (1 - chance) (regression: 1 - MSE/MSE_baseline). L* is
the dependency distance of the largest ladder lag whose score's 95% lower bound is >= tau there
and at every smaller ladder lag, 0 if the first ladder lag fails: decided on the interval, so a
point estimate that scrapes past tau on a few probes does not count. Tasks with
`memory_rule = "gain"` (text) measure how much context lowers the loss instead: L* is the largest
ladder length at which the extra context still lowers the loss by at least `task.min_gain`
nats/char, judged on the gain's 95% lower bound (and every shorter ladder step did too), so more
evaluation data narrows the interval instead of moving L*.

Intervals: a percentile bootstrap over sequences for every task (the scored steps of one sequence
are correlated, so treating them as independent draws, as a Wilson interval does, is too narrow).

Probes: evaluation draws its sequences from a random stream of its own (`probe_seed`), never the
training stream; a trial's final evaluation uses a second, fresh stream that no intermediate
evaluation (the ones Optuna and ASHA see) used.

Censoring: the final evaluation extends the ladder by doubling past its top while the curve holds
and evaluation stays feasible, up to EXTEND doublings; L* is censored (only a lower bound) when no
feasible evaluated lag above it failed.

Cost: recurrent models stream each sequence through their state in chunks of EVAL_CHUNK steps,
so the activations held are O(batch x chunk) whatever the lag (the input ids are the only thing
that grows with the lag). Other models see whole sequences, split into sub-batches of at most
EVAL_TOKENS steps; a lag that runs out of memory, or past `max_eval_s`, is recorded as infeasible
with the reason ("oom" or "time"), as is every longer lag, and the trial goes on.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from study.models.base import SequenceModel
from study.tasks.base import Task

EVAL_CHUNK = 1024        # steps per streamed chunk when a recurrent model is evaluated
EVAL_TOKENS = 1 << 15    # steps per sub-batch for models that see the whole sequence at once
N_BOOT = 1000            # bootstrap resamples
EXTEND = 4               # doublings past the ladder top a final evaluation may add (up to x16)


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


def bootstrap_ratio(num: torch.Tensor, den: torch.Tensor, seed: int, n_boot: int = N_BOOT) -> tuple[float, float]:
    """95% percentile interval of sum(num) / sum(den), resampling whole sequences: num and den
    (N,) hold one sequence's total (correct steps, squared error) and its number of scored steps."""
    num, den = num.double().cpu(), den.double().cpu()
    idx = torch.randint(0, len(num), (n_boot, len(num)), generator=torch.Generator().manual_seed(seed))
    ratios = num[idx].sum(1) / den[idx].sum(1)
    return float(ratios.quantile(0.025)), float(ratios.quantile(0.975))


def bootstrap(x: torch.Tensor, seed: int, n_boot: int = N_BOOT) -> tuple[float, float]:
    """95% percentile interval of the mean of x (N,), one entry per sequence."""
    return bootstrap_ratio(x, torch.ones(len(x), dtype=torch.float64), seed, n_boot)


def probe_seed(seed: int, final: bool = False) -> int:
    """The probe stream of a trial: a SeedSequence branch of its seed (the trainer's stream is the
    seed itself), so probes never replay training batches, and the final evaluation's branch
    differs from the one every intermediate evaluation (seen by Optuna and ASHA) reuses."""
    return int(np.random.SeedSequence([seed, 2 if final else 1]).generate_state(1, np.uint64)[0] >> 1)


def normalise(metric: float, chance: float) -> float:
    return (metric - chance) / (1 - chance)


def read_curve(curve: list[dict], tau: float, rule: str = "threshold", min_gain: float = 0.0) -> tuple[int, bool]:
    """(L*, censored) from lag_curves rows. L* is the dependency distance (`distance`, else `lag`)
    of the last ladder step that passes, every smaller one passing too; infeasible steps count as
    failures. `rule` is the task's `memory_rule`: "threshold" (the score's 95% lower bound >= tau)
    or "gain" (the paired gain's 95% lower bound `gain_lo` > min_gain nats/char; rows read back
    without it fall back to the score's lower bound beating the previous length's score by
    min_gain). Censored: no feasible step above L* failed (the ladder ran out, or evaluation
    became infeasible while the curve held), so L* is only a lower bound."""
    best, prev = 0, 0.0
    for row in sorted(curve, key=lambda r: r["lag"]):
        if not row["feasible"] or row["score"] is None:
            return best, True
        if rule == "gain":
            ok = (row["gain_lo"] > min_gain if row.get("gain_lo") is not None
                  else row["score_lo"] > prev + min_gain)
            prev = row["score"]
        else:
            ok = (row["score_lo"] if row.get("score_lo") is not None else row["score"]) >= tau
        if not ok:
            return best, False
        best = row.get("distance") or row["lag"]
    return best, True


def memory_length(curve: list[dict], tau: float, rule: str = "threshold", min_gain: float = 0.0) -> int:
    """L* alone (read_curve)."""
    return read_curve(curve, tau, rule, min_gain)[0]


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
             deadline: float | None = None, final: bool = False) -> dict:
    """One lag_curves row for sequences whose lag is exactly `lag`; `seed` is the trial's."""
    # Common random numbers: the probe set depends on the seed only, not on the lag or the
    # evaluation, so curves over lags and over training compare like with like (text needs it:
    # its ladder lengths score the same characters).
    gen = torch.Generator().manual_seed(probe_seed(seed, final))
    n = task.eval_size(n, lag)
    # lags inside the trained range keep the training length, as in training; longer ones grow it
    b = task.sample(n, gen, lag=lag, seq_len=max(seq_len, task.default_seq_len(lag))).to(device)
    pred = predict(model, b.x, b.mask, deadline=deadline).float()
    target = b.y[b.mask]
    seq = b.mask.nonzero()[:, 0].cpu()                                  # sequence of each scored step
    count = torch.bincount(seq, minlength=n).double()                   # scored steps per sequence

    def per_seq(v: torch.Tensor) -> torch.Tensor:                       # (N_scored,) -> (n,) sums
        return torch.zeros(n, dtype=torch.float64).index_add_(0, seq, v.double().cpu())

    ident = {"lag": lag, "distance": task.distance(lag), "feasible": True}
    if task.memory_rule == "gain":
        nll = torch.nn.functional.cross_entropy(pred, target, reduction="none").cpu()   # (n,)
        base = task.baseline_loss()
        lo, hi = bootstrap(nll, seed=lag)                               # one scored step per sequence
        return {**ident, "metric": "1-xent/unigram", "n": len(nll), "loss": float(nll.mean()),
                "score": 1 - float(nll.mean()) / base, "score_lo": 1 - hi / base, "score_hi": 1 - lo / base,
                "_nll": nll, "_base_nll": task.unigram_nll[target.cpu()]}
    if task.kind == "classification":
        correct = per_seq((pred.argmax(-1) == target).float())
        lo, hi = bootstrap_ratio(correct, count, seed=lag)              # resample whole sequences
        loss = torch.nn.functional.cross_entropy(pred, target).item()
        return {**ident, "metric": "accuracy", "n": n, "loss": loss,
                "score": normalise(float(correct.sum() / count.sum()), task.chance),
                "score_lo": normalise(lo, task.chance), "score_hi": normalise(hi, task.chance)}
    base = task.baseline_loss()
    sq = per_seq(((pred - target) ** 2).reshape(len(target), -1).mean(1))     # squared error per sequence
    err = float(sq.sum() / count.sum())
    lo, hi = bootstrap_ratio(sq, count, seed=lag)                       # resample whole sequences
    return {**ident, "metric": "1-mse/baseline", "n": n, "loss": err,
            "score": 1 - err / base, "score_lo": 1 - hi / base, "score_hi": 1 - lo / base}


def add_gain(row: dict, prev: dict | None) -> None:
    """A text row: the loss drop from the previous ladder length (the unigram model before the
    first), on the same characters, with a paired bootstrap 95% interval."""
    before = row["_base_nll"] if prev is None else prev["_nll"]
    k = min(len(before), len(row["_nll"]))                              # the shared targets
    d = before[:k] - row["_nll"][:k]
    row["gain"] = float(d.mean())
    row["gain_lo"], row["gain_hi"] = bootstrap(d, seed=row["lag"])


def evaluate(model: SequenceModel, task: Task, lags: list[int], n: int, seed: int, device,
             max_eval_s: float | None = None, seq_len: int = 0, final: bool = False, extend: int = 0,
             tau: float = 0.9) -> list[dict]:
    """One lag_curves row per ladder lag; lags from an out-of-memory or the time cap on are
    recorded as infeasible (with the reason), never dropped. `final` draws the fresh probe set.
    `extend`: doublings past the last lag to add while the curve still holds (read_curve at
    `tau`), so an L* at the top of the ladder is followed up instead of silently capped."""
    rows, reason, lags, left = [], None, list(lags), extend
    deadline = None if max_eval_s is None else time.perf_counter() + max_eval_s
    was_training = model.training
    model.eval()
    i = 0
    while i < len(lags):
        lag = lags[i]
        i += 1
        if reason is None:
            try:
                _check(deadline)
                row = {**score_at(model, task, lag, n, seed, device, seq_len, deadline, final), "reason": None}
                if task.memory_rule == "gain":
                    add_gain(row, rows[-1] if rows else None)
                rows.append(row)
                if (i == len(lags) and left > 0 and 2 * lag <= (task.max_eval_lag or 2 * lag)
                        and read_curve(rows, tau, task.memory_rule, task.min_gain)[1]):
                    lags.append(2 * lag)        # the curve still holds at the top: one more doubling
                    left -= 1
                continue
            except EvalTimeout:
                reason = "time"
            except (RuntimeError, MemoryError) as e:
                if not is_oom(e):
                    raise
                reason = "oom"
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.empty_cache()       # leave the trial usable for training after an OOM
        rows.append({"lag": lag, "distance": task.distance(lag), "metric": None, "n": 0, "feasible": False,
                     "score": None, "loss": None, "score_lo": None, "score_hi": None, "reason": reason})
    for r in rows:
        r.pop("_nll", None)
        r.pop("_base_nll", None)
    model.train(was_training)
    return rows
