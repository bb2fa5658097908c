"""Memory length: ladder, intervals, L* rules, oracle / memoryless models, streaming, infeasible lags."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study import memory
from study.memory import bootstrap, evaluate, ladder, memory_length, predict
from study.models import MODELS, build_model
from study.tasks import TASKS, build_task
from test_tasks import SMALL, make


def test_ladder():
    assert ladder(16, "uniform") == [1, 2, 4, 8, 16, 32, 64]
    assert ladder(12, "uniform") == [1, 2, 4, 8, 12, 16, 32, 48]          # always holds lag and 4 x lag
    assert ladder(16, "fixed") == [16, 32, 64]
    assert ladder(16, "uniform", max_lag=100_000)[-1] == 100_000


def test_bootstrap():
    x = torch.randn(400, generator=torch.Generator().manual_seed(0)) + 3
    lo, hi = bootstrap(x, seed=0)
    assert lo < float(x.mean()) < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.2)   # ~ +-1.96 sd/sqrt(n)


def curve(scores, lags=(1, 2, 4, 8, 16), **extra):
    rows = [{"lag": l, "score": s, "score_lo": None if s is None else s - 0.01, "feasible": s is not None} for l, s in zip(lags, scores)]
    for k, vals in extra.items():
        for r, v in zip(rows, vals):
            r[k] = v
    return rows[::-1]                                   # order must not matter


@pytest.mark.parametrize("scores, expect", [
    ([1.0, 0.97, 0.92, 0.5, 0.1], 4),                    # monotone decay
    ([1.0, 0.5, 0.95, 0.95, 0.95], 1),                   # a dip ends it: every smaller lag must pass
    ([0.5, 0.4, 0.3, 0.2, 0.1], 0),                      # all failing
    ([1.0, 1.0, 1.0, 0.99, 0.95], 16),                   # all passing
    ([1.0, 1.0, None, 1.0, 1.0], 2),                     # infeasible counts as a failure
])
def test_memory_length_threshold(scores, expect):
    assert memory_length(curve(scores), 0.9) == expect


@pytest.mark.parametrize("gain_lo, expect", [
    ([0.5, 0.2, 0.01, -0.01, 0.02], 4),                  # gains stop being significant after 4
    ([-0.1, 0.2, 0.2, 0.2, 0.2], 0),                     # the first context length does not help
    ([0.5, 0.4, 0.3, 0.2, 0.1], 16),                     # more context helps all the way
])
def test_memory_length_gain(gain_lo, expect):
    assert memory_length(curve([0.1] * 5, gain_lo=gain_lo), 0.9, "gain") == expect


def test_memory_length_gain_without_paired_gains():
    # read back from Parquet: the score's lower bound must beat the previous length's score
    rows = curve([0.2, 0.3, 0.35, 0.351, 0.5])          # score_lo = score - 0.01
    assert memory_length(rows, 0.9, "gain") == 4


# ---- models that cheat, that forget, and that are slow or too big ---------------------------

class Peek:
    """A task proxy that remembers the last batch it handed out, so an oracle can read it."""

    def __init__(self, task):
        self.task, self.last = task, None

    def __getattr__(self, k):
        return getattr(self.task, k)

    def sample(self, *a, **kw):
        self.last = self.task.sample(*a, **kw)
        return self.last


class Oracle(nn.Module):
    """Outputs the answer (read from the batch), streamed: the state is the time offset. For a
    `gain` task its confidence grows with the context seen, up to `context` steps."""
    recurrent = True

    def __init__(self, peek: Peek, context: int | None = None):
        super().__init__()
        self.peek, self.context = peek, context

    def init_state(self, B):
        return 0

    def forward(self, x, t0=0):
        y = self.peek.last.y[:, t0:t0 + x.shape[1]]
        if self.peek.kind == "regression":
            return y.float(), t0 + x.shape[1]
        boost = 20.0
        if self.context is not None:            # seen t+1 tokens at step t; capped at `context`
            seen = torch.arange(t0, t0 + x.shape[1]) + 1
            boost = (5.0 + seen.clamp(max=self.context).float())[None, :, None]
        return F.one_hot(y, self.peek.io.d_out).float() * boost, t0 + x.shape[1]


class Forgetful(nn.Module):
    """Memoryless: the same output at every step (zeros; text: the smoothed unigram)."""
    recurrent = False

    def __init__(self, task):
        super().__init__()
        self.out = -task.unigram_nll if task.memory_rule == "gain" else torch.zeros(task.io.d_out)

    def forward(self, x, state=None):
        return self.out.expand(x.shape[0], x.shape[1], -1), None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_oracle_reaches_the_top_of_the_ladder_and_a_memoryless_model_gets_zero(name):
    task = Peek(make(name))
    lags = ladder(task.cfg.lag, "uniform")
    seq_len = task.default_seq_len()
    rule = task.memory_rule
    oracle = Oracle(task, context=8 if rule == "gain" else None)
    rows = evaluate(oracle, task, lags, 64, seed=0, device="cpu", seq_len=seq_len)
    # text: more context helps the oracle up to 8 characters, not beyond
    assert memory_length(rows, 0.9, rule) == (8 if rule == "gain" else task.distance(lags[-1]))
    rows = evaluate(Forgetful(task.task), task.task, lags, 64, seed=0, device="cpu", seq_len=seq_len)
    assert memory_length(rows, 0.9, rule) == 0


def small_lstm(task, d_model=16):
    torch.manual_seed(0)
    return build_model("lstm", MODELS.get("lstm").config(d_model=d_model), task.io, 64, None).eval()


@pytest.mark.parametrize("name", ["copy", "delay"])
def test_streaming_equals_a_full_pass(name):
    task = make(name, lag=40)
    model = small_lstm(task)
    b = task.sample(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(b.x)[0][b.mask]
    for chunk in (7, 16, 10_000):      # 7 and 16 split the scored steps across chunks
        assert torch.allclose(predict(model, b.x, b.mask, chunk=chunk), full, atol=1e-5)


def test_sub_batched_full_pass_equals_one_pass(monkeypatch):
    task = make("copy", lag=20)
    torch.manual_seed(0)
    model = build_model("transformer", MODELS.get("transformer").config(d_model=16, n_layers=1),
                        task.io, 64, None).eval()
    b = task.sample(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(b.x)[0][b.mask]
    monkeypatch.setattr(memory, "EVAL_TOKENS", 2 * b.x.shape[1])        # sub-batches of 2
    assert torch.allclose(predict(model, b.x, b.mask), full, atol=1e-5)


class Greedy(nn.Module):
    """Asks for more memory than any machine has once sequences are longer than `limit`."""
    recurrent = False

    def __init__(self, task, limit):
        super().__init__()
        self.d_out, self.limit = task.io.d_out, limit

    def forward(self, x, state=None):
        if x.shape[1] > self.limit:
            torch.empty(1 << 50)                                   # the real CPU allocator error
        return torch.zeros(x.shape[0], x.shape[1], self.d_out), None


class Slow(nn.Module):
    recurrent = True

    def __init__(self, task):
        super().__init__()
        self.d_out = task.io.d_out

    def init_state(self, B):
        return None

    def forward(self, x, state=None):
        time.sleep(0.02 * x.shape[1] / memory.EVAL_CHUNK)        # 20 ms per full chunk
        return torch.zeros(x.shape[0], x.shape[1], self.d_out), None


def test_out_of_memory_lags_are_recorded_not_fatal():
    task = make("copy", lag=16)
    lags = ladder(16, "uniform")                                   # 1 .. 64; seq_len = lag + 7
    rows = evaluate(Greedy(task, limit=30), task, lags, 8, seed=0, device="cpu")
    assert [r["lag"] for r in rows] == lags
    assert [r["reason"] for r in rows] == [None] * 5 + ["oom"] * 2     # 32 + 7 > 30: out of memory
    assert not any(r["feasible"] for r in rows[5:]) and all(r["score"] is None for r in rows[5:])


def test_other_errors_are_not_swallowed():
    class Broken(Greedy):
        def forward(self, x, state=None):
            raise ValueError("a bug, not a lack of memory")
    with pytest.raises(ValueError):
        evaluate(Broken(make("copy"), 0), make("copy"), [1, 2], 4, seed=0, device="cpu")


def test_max_eval_s_marks_the_unreached_lags():
    task = make("copy", lag=2048, n_symbols=1)
    lags = [1, 1024, 1 << 14, 1 << 16, 1 << 17]                      # 1, 1, 16, 64, 128 chunks
    t0 = time.perf_counter()
    rows = evaluate(Slow(task), task, lags, 2, seed=0, device="cpu", max_eval_s=0.5)
    assert time.perf_counter() - t0 < 1.5                            # stopped inside the long lag
    assert [r["lag"] for r in rows] == lags
    assert [r["reason"] for r in rows] == [None, None, None, "time", "time"]
    assert memory_length(rows, -1.0) == task.distance(1 << 14)       # the reached lags still count


# ---- streaming costs O(state): peak host memory at lag 1e3 vs 1e5 ---------------------------

PEAK = r"""
import json, sys, torch
torch.set_num_threads(1)
from study.memory import score_at, predict
from study.models import MODELS, build_model
from study.tasks import TASKS, build_task
arch, full = sys.argv[1], sys.argv[2] == "1"
task = build_task("copy", TASKS.get("copy").config(lag=1000, n_symbols=2, alphabet=4))
torch.manual_seed(0)
model = build_model(arch, MODELS.get(arch).config(d_model=64), task.io, 1005, None).eval()
def rss():
    # VmHWM, the resident high-water mark of this process image (ru_maxrss would also count the
    # parent's, as Linux carries it across fork + exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
out = {}
for lag in (1000, 100_000):
    score_at(model, task, lag, 4, seed=0, device="cpu")
    out[lag] = rss()
if full:    # sensitivity check: the same lag without streaming must show up in the measure
    b = task.sample(4, torch.Generator().manual_seed(0), lag=100_000)
    predict(model, b.x, b.mask, chunk=b.x.shape[1])
    out["full"] = rss()
print(json.dumps(out))
"""


@pytest.mark.parametrize("arch", ["lstm", "lmu", "ssm"])
def test_streaming_memory_does_not_grow_with_the_lag(arch):
    if arch not in MODELS:
        pytest.skip(f"{arch} is not registered yet")
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from Linux's /proc/self/status")
    # One fresh process per arch: the high-water mark only ever rises, so each lag's peak is read in order.
    # A fixed mmap threshold makes glibc return every freed block over 64 KB to the OS at once;
    # with its default (adaptive) threshold, heap fragmentation alone added 30-170 MB at random.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, "-c", PEAK, arch, "1" if arch == "lstm" else "0"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    peak = json.loads(r.stdout.splitlines()[-1])
    grow = peak["100000"] - peak["1000"]
    # measured: +10 MB (the ids, targets and mask of 4 x 1e5 steps are 7 MB); the activations of
    # a full pass would be 4 x 1e5 x 64 floats = 102 MB per layer (lstm measured: +400 MB)
    assert grow < 40e6, f"{arch}: peak memory grew {grow / 1e6:.0f} MB from lag 1e3 to 1e5 ({peak})"
    if "full" in peak:      # the measure does see torch's allocations
        assert peak["full"] - peak["100000"] > 150e6, peak
