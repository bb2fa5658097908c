"""Issue 13, "trustworthy memory length": one test (or a few) per defect, each failing on the code
before the fix. Models here are tiny or are answer-reading stand-ins, so the file runs in seconds."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.config import Budget, SpecError
from study.memory import evaluate, ladder, memory_length, read_curve, score_at
from study.models import IO, MODELS, build_model
from study.models import recurrences
from study.results import schema
from study.train import train
from study.validate import parse_spec
from test_tasks import SMALL, make
from test_memory import Peek   # a task proxy that remembers its last batch

torch.set_num_threads(1)


class Answer(nn.Module):
    """Reads the answer off the batch and gives it where `right(batch)` (B, T) is true, a wrong
    class elsewhere: a model with exactly the memory the test says."""
    recurrent = False

    def __init__(self, peek: Peek, right=None):
        super().__init__()
        self.peek, self.right = peek, right

    def forward(self, x, state=None):
        b = self.peek.last
        ok = torch.ones_like(b.mask) if self.right is None else self.right(b)
        guess = torch.where(ok, b.y, (b.y + 1) % self.peek.io.d_out)
        return F.one_hot(guess, self.peek.io.d_out).float() * 20, None


# ---- item 1: stable_lstm contracts for every input ------------------------------------------------

@pytest.mark.parametrize("lam", [0.9, 0.99])
def test_stable_lstm_contracts_for_every_input_after_projection(lam):
    torch.manual_seed(0)
    cfg = MODELS.get("stable_lstm").config(d_model=16, contraction=lam)
    m = build_model("stable_lstm", cfg, IO(d_out=2, d_in=3), 32, None).double()
    layer = m.layers[0]
    with torch.no_grad():      # adversarial: forget bias +20, large weights everywhere
        layer.bias[16:32] = 20.0
        layer.weight_hh.mul_(50.0)
        layer.weight_ih.mul_(50.0)
    m.after_step()
    assert m.bound(0) <= lam + 1e-9
    g = torch.Generator().manual_seed(1)
    x = 20 * torch.randn(8, 2000, 16, generator=g, dtype=torch.float64)         # large random inputs
    c_inf = 1 / (1 - lam ** 2)
    h = torch.rand(8, 16, generator=g, dtype=torch.float64) * 2 - 1             # a reachable state
    c = (torch.rand(8, 16, generator=g, dtype=torch.float64) * 2 - 1) * c_inf
    delta = 1e-3
    h2, c2 = (h + delta).clamp(-1, 1), (c + delta).clamp(-c_inf, c_inf)
    d0 = max(float((h - h2).abs().max()), float((c - c2).abs().max()))
    with torch.no_grad():
        for t in range(1, 2001):
            _, (h, c) = layer(x[:, t - 1:t], (h, c))
            _, (h2, c2) = layer(x[:, t - 1:t], (h2, c2))
            if t in (1, 10, 100, 500, 1000, 2000):
                d = max(float((h - h2).abs().max()), float((c - c2).abs().max()))
                assert d <= lam ** t * d0 * (1 + 1e-6) + 1e-15, (t, d, lam ** t * d0)
    assert float(c.abs().max()) <= c_inf                                         # the cell stays bounded


def test_stable_rnn_uses_the_contraction_parameter():
    cfg = MODELS.get("stable_rnn").config(d_model=8, contraction=0.5)
    m = build_model("stable_rnn", cfg, IO(d_out=2, d_in=3), 16, None)
    assert torch.linalg.matrix_norm(m.rnn.weight_hh_l0, 2) <= 0.5 + 1e-5


# ---- item 3: delay needs fixed lags ---------------------------------------------------------------

def test_delay_rejects_uniform_lags_and_defaults_to_fixed():
    spec = "study: d\ntask: {name: delay, lag: 8}\ngrid: {arch: [lstm]}\nfixed: {d_model: 8}\n"
    parse_spec(spec, "s.yaml")                                    # the default is fixed: valid
    with pytest.raises(SpecError) as e:
        parse_spec(spec.replace("lag: 8}", "lag: 8, lag_dist: uniform}"), "s.yaml")
    msg = str(e.value)
    assert msg.startswith("s.yaml: ") and "lag_dist" in msg and "fixed" in msg and "\n" not in msg
    assert make("delay").cfg.lag_dist == "fixed"


# ---- item 4: L* on the interval, intervals by sequence ----------------------------------------------

def test_lstar_needs_the_lower_bound_to_clear_tau():
    rows = [{"lag": 1, "score": 0.99, "score_lo": 0.97, "feasible": True},
            {"lag": 2, "score": 0.93, "score_lo": 0.85, "feasible": True},     # point passes, interval does not
            {"lag": 4, "score": 0.95, "score_lo": 0.92, "feasible": True}]
    assert memory_length(rows, 0.9) == 1


def test_classification_interval_resamples_sequences():
    # half the sequences fully right, half fully wrong: 64 independent outcomes, not 640
    task = Peek(make("copy", n_symbols=10, alphabet=8))
    right = lambda b: (torch.arange(len(b.y)) % 2 == 0)[:, None].expand_as(b.mask)
    row = score_at(Answer(task, right), task, 8, 64, seed=0, device="cpu")
    width = (row["score_hi"] - row["score_lo"]) * (1 - task.chance)    # in accuracy units
    assert row["n"] == 64
    assert 0.18 < width < 0.32           # ~ 2 x 1.96 x sqrt(0.25 / 64) = 0.245 (Wilson on 640 steps: 0.077)


# ---- item 5: the ladder extends while the score holds, and says when L* is a lower bound ----------

def test_ladder_extends_and_marks_censoring():
    task = Peek(make("copy", lag=8))
    lags = ladder(8, "uniform")                                   # 1 .. 32
    rows = evaluate(Answer(task), task, lags, 8, seed=0, device="cpu", extend=2)
    assert [r["lag"] for r in rows][-3:] == [32, 64, 128]         # two doublings past the top
    assert read_curve(rows, 0.9) == (task.distance(128), True)    # still holding: a lower bound
    forgets = Answer(task, lambda b: (b.lag <= 40)[:, None].expand_as(b.mask))
    rows = evaluate(forgets, task, lags, 8, seed=0, device="cpu", extend=4)
    assert [r["lag"] for r in rows][-2:] == [32, 64]              # stops at the first failure
    assert read_curve(rows, 0.9) == (task.distance(32), False)
    assert read_curve(rows[:-1], 0.9)[1] and not read_curve(rows, 0.9)[1]


def test_infeasible_top_is_censored():
    rows = [{"lag": 1, "score": 1.0, "score_lo": 1.0, "feasible": True},
            {"lag": 2, "score": None, "score_lo": None, "feasible": False}]
    assert read_curve(rows, 0.9) == (1, True)


def test_trials_schema_and_a_trial_report_censored_and_reach():
    names = schema("trials").names
    assert "censored" in names and "reach" in names and "distance" in schema("lag_curves").names
    out = train({"arch": "lstm", "task": "copy", "lag": 4, "n_symbols": 2, "alphabet": 4, "d_model": 8,
                 "batch_size": 4, "eval_batch": 4, "window": 3}, Budget(steps=2, eval_every=10), lambda *a: None)
    assert out["reach"] == 2 and isinstance(out["censored"], bool)


# ---- item 6: probes are held out --------------------------------------------------------------------

def test_probes_never_replay_training_batches_and_the_final_set_is_fresh():
    task = Peek(make("copy", lag=8, lag_dist="fixed"))
    model = Answer(task)
    for seed in (0, 1):
        first = task.task.sample(16, torch.Generator().manual_seed(seed), seq_len=task.default_seq_len())
        score_at(model, task, 8, 16, seed=seed, device="cpu")
        probe = task.last
        score_at(model, task, 8, 16, seed=seed, device="cpu", final=True)
        final = task.last
        assert not torch.equal(probe.x, first.x)              # seed 0 used to give the same batch
        assert not torch.equal(final.x, probe.x)
        score_at(model, task, 8, 16, seed=seed, device="cpu")
        assert torch.equal(task.last.x, probe.x)              # the intermediate probe set is reused


# ---- item 7: only the dependency being measured is scored --------------------------------------------

def test_selective_copy_scores_only_the_symbol_at_the_measured_distance():
    task = Peek(make("selective_copy", lag=8, n_symbols=16, alphabet=14))
    m = 16

    def all_but_first(b):
        ok = torch.ones_like(b.mask)
        ok[:, b.mask.shape[1] - m] = False                     # forgets the first (oldest) symbol
        return ok
    rows = evaluate(Answer(task, all_but_first), task, ladder(8, "uniform"), 16, seed=0, device="cpu")
    assert memory_length(rows, 0.9) == 0                        # used to score 0.94 and pass


def test_assoc_recall_scores_only_the_answer_at_the_measured_distance():
    K = 16
    task = Peek(make("assoc_recall", lag=8, n_pairs=K, alphabet=32))

    def all_but_first_pair(b):
        T = b.x.shape[1]
        start = T - 3 * K - b.lag                               # the first pair's key
        first_key = b.x[torch.arange(len(b.x)), start]
        ok = torch.ones_like(b.mask)
        ok[:, T - K:] = b.x[:, T - K:] != first_key[:, None]
        return ok
    rows = evaluate(Answer(task, all_but_first_pair), task, ladder(8, "uniform"), 16, seed=0, device="cpu")
    assert memory_length(rows, 0.9) == 0


# ---- item 8: one unit for lag, and reach --------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_scored_position_depends_on_exactly_distance_steps_back(name):
    task = make(name)
    lag = 5
    b = task.sample(16, torch.Generator().manual_seed(0), lag=lag, seq_len=task.default_seq_len(lag) + 3)
    d = task.distance(lag)
    rows, cols = b.mask.nonzero(as_tuple=True)
    T = b.mask.shape[1]
    if name in ("copy", "selective_copy", "assoc_recall"):       # the target token itself, d steps back
        assert torch.equal(b.x[rows, cols - d], b.y[rows, cols])
    elif name == "delay":
        assert torch.allclose(b.x[rows, cols - d, 0], b.y[rows, cols, 0])
    elif name in ("adding", "recall_first"):                      # the first marked value
        assert (cols == T - 1).all()
        first = b.x[..., 1].argmax(1)
        assert (T - 1 - first == d).all()
    elif name == "digits":                                        # the last pixel shown
        last = T - 1 - b.x[..., 1].flip(1).argmax(1)
        assert (T - 1 - last == d).all()
    elif name == "text":                                          # d characters of context
        assert T == d and (cols == T - 1).all()
    else:
        pytest.fail(f"{name}: add its dependency check")


FEATURES = IO(d_out=2, d_in=3)


def farthest_seen(model, T: int) -> int:
    """How far back the last output's gradient reaches into the input (exact zeros beyond)."""
    x = torch.randn(4, T, 3, dtype=torch.float64, requires_grad=True)
    out, _ = model(x)
    out[:, -1].sum().backward()
    seen = (x.grad.abs().sum((0, 2)) > 0).nonzero()[:, 0]
    return T - 1 - int(seen.min())


@pytest.mark.parametrize("arch, over, window", [
    ("transformer", {"n_layers": 2, "n_heads": 2}, 4),
    ("universal_transformer", {"n_layers": 1, "n_heads": 2, "max_hops": 2}, 5),
    ("tcn", {"kernel_size": 3}, 9),
    ("tcn", {"kernel_size": 7}, 20),                              # levels cover more than asked
])
def test_reach_is_how_far_the_output_actually_sees(arch, over, window):
    torch.manual_seed(0)
    T = 80
    m = build_model(arch, MODELS.get(arch).config(d_model=8, **over), FEATURES, T, window).double()
    assert farthest_seen(m, T) == m.reach(T, window)


def test_reach_of_the_other_families():
    mk = lambda arch, **kw: build_model(arch, MODELS.get(arch).config(d_model=8, **kw), FEATURES, 64, None)
    for arch in ("lstm", "gru", "rnn", "stable_lstm", "indrnn", "lmu", "ssm", "linear_transformer", "brc"):
        assert mk(arch).reach(64, 16) == 15 and mk(arch).reach(64, None) is None, arch
    assert mk("tova", n_heads=2).reach(64, 16) == 16 and mk("tova", n_heads=2).reach(64, None) is None
    assert mk("transformer", n_heads=2).reach(64, None) is None
    for arch in MODELS.names():                                   # every family answers
        kw = {"n_heads": 2} if "n_heads" in MODELS.fields(arch) else {}
        r = mk(arch, **kw).reach(64, 8)
        assert r is None or r >= 1, arch


# ---- item 9: text L* has an effect-size threshold ---------------------------------------------------

class SlowGain(nn.Module):
    """Confidence in the right character grows with context up to 8, then by a hair per doubling."""
    recurrent = False

    def __init__(self, peek):
        super().__init__()
        self.peek = peek

    def forward(self, x, state=None):
        b = self.peek.last
        seen = torch.arange(1, x.shape[1] + 1, dtype=torch.float64)
        a = 4.0 + 0.5 * seen.clamp(max=8).log2() + 0.003 * seen.log2()    # (T,)
        out = F.one_hot(b.y, self.peek.io.d_out).double() * a[None, :, None]
        return out.float(), None


def test_text_lstar_does_not_grow_with_eval_chars():
    got = []
    for chars in (64, 512):          # (512 x 64 steps: one sub-batch, which SlowGain assumes)
        task = Peek(make("text", lag=16, eval_chars=chars))
        rows = evaluate(SlowGain(task), task, ladder(16, "uniform"), chars, seed=0, device="cpu")
        got.append(memory_length(rows, 0.9, "gain", task.min_gain))
        assert all(r["gain_lo"] > 0 for r in rows)              # every gain is significant...
    assert got == [8, 8]                                         # ...but past 8 it is too small to count


# ---- item 10: baselines as the papers trained them ---------------------------------------------------

def test_lstm_forget_bias():
    D = 8
    m = build_model("lstm", MODELS.get("lstm").config(d_model=D, n_layers=2), FEATURES, 16, None)
    for k in range(2):
        bi, bh = getattr(m.rnn, f"bias_ih_l{k}"), getattr(m.rnn, f"bias_hh_l{k}")
        assert torch.all(bi[D:2 * D] + bh[D:2 * D] == 1.0)
    torch.manual_seed(0)
    d = build_model("lstm", MODELS.get("lstm").config(d_model=D, forget_bias=None), FEATURES, 16, None)
    assert d.rnn.bias_ih_l0[D:2 * D].abs().max() <= 1 / math.sqrt(D) and d.rnn.bias_ih_l0[D:2 * D].std() > 0


def test_tcn_init_is_what_locuslab_effectively_trains():
    # PyTorch's default Conv1d init (kaiming-uniform, a = sqrt 5): std = 1 / sqrt(3 fan_in)
    d, k = 64, 7
    m = build_model("tcn", MODELS.get("tcn").config(d_model=d, kernel_size=k), FEATURES, 64, None)
    w = m.blocks[0].c1.conv.weight
    assert float(w.detach().std()) == pytest.approx(1 / math.sqrt(3 * d * k), rel=0.1)      # 0.027; was 0.01


def test_indrnn_step_gradient_clip_fast_equals_loop_and_bites():
    g = torch.Generator().manual_seed(0)
    B, T, D = 3, 40, 5
    wx = torch.randn(B, T, D, generator=g, dtype=torch.float64).abs()
    u = torch.rand(D, generator=g, dtype=torch.float64) + 0.5
    h0 = torch.rand(B, D, generator=g, dtype=torch.float64)
    w_out = 30 * torch.randn(T, D, generator=g, dtype=torch.float64)          # large: clipping bites

    def grads(clip, fast):
        a, b, c = (t.clone().requires_grad_() for t in (wx, u, h0))
        if fast:
            h = recurrences.indrnn(a, b, c, clip)
        else:
            hk, outs = c, []
            for t in range(T):
                p = a[:, t] + b * hk
                if clip is not None:
                    p.register_hook(lambda gr: gr.clamp(-clip, clip))
                hk = torch.relu(p)
                outs.append(hk)
            h = torch.stack(outs, 1)
        (h * w_out).sum().backward()
        return [t.grad for t in (a, b, c)]

    for clip in (None, 10.0):
        for f, s in zip(grads(clip, True), grads(clip, False)):
            assert torch.allclose(f, s, atol=1e-9)
    clipped = grads(10.0, True)
    assert clipped[0].abs().max() <= 10.0 + 1e-12
    assert not torch.allclose(clipped[1], grads(None, True)[1])
    m = build_model("indrnn", MODELS.get("indrnn").config(d_model=8), FEATURES, 16, None)
    assert m.cfg.step_grad_clip == 10.0                              # the paper's default


# ---- item 5, analysis side: censored points are lower bounds, not fitted ---------------------------

def test_fits_leave_censored_points_out_and_say_so(tmp_path):
    from analysis import db
    from analysis.fit import memory_fits, power_law
    from study.results import Store
    flops = [1e8, 1e10, 1e12, 1e14]
    mem = [round(2 * c ** 0.25) for c in flops[:3]] + [2500]      # the last one hit the ladder's cap
    cens = [False, False, False, True]
    f = power_law(flops, mem, frontier=True, censored=cens, n_boot=200)
    assert f.alpha == pytest.approx(0.25, abs=1e-3) and "1 censored point" in f.note and f.n == 3
    assert power_law(flops, mem, frontier=True, n_boot=200).alpha < 0.24          # the cap drags it down
    store = Store(str(tmp_path))
    for i, (c, m, z) in enumerate(zip(flops, mem, cens)):
        store.write_trial({"study": "hand", "trial_id": f"a{i}", "cell": "c", "arch": "a", "task": "copy",
                           "seed": 0, "lag": 8, "train_flops": c, "memory_length": m, "censored": z,
                           "status": "completed", "tau": 0.9})
    cols, rows = db.run_query(str(tmp_path), "power_law")
    (row,) = [dict(zip(cols, r)) for r in rows]
    assert row["alpha"] == pytest.approx(0.25, abs=1e-3) and row["n_censored"] == 1
    cols, rows = db.run_query(str(tmp_path), "frontier")
    assert [dict(zip(cols, r))["censored"] for r in rows] == cens       # still on the frontier
    (fit,) = memory_fits(db.connect(str(tmp_path)), n_boot=200)
    assert fit["alpha"] == pytest.approx(0.25, abs=1e-3) and "censored" in fit["note"]
