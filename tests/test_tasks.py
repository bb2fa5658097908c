"""Every task: deterministic per seed, hand-checked targets, and its chance and baseline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from study.memory import evaluate
from study.tasks import TASKS, build_task

# Small settings per task, so the whole file runs in seconds; every registered task must be here.
SMALL = {
    "copy": dict(lag=6, n_symbols=3, alphabet=4),
    "adding": dict(lag=6),
    "selective_copy": dict(lag=6, n_symbols=3, alphabet=4),
    "assoc_recall": dict(lag=6, n_pairs=3, alphabet=8),
    "recall_first": dict(lag=6),
    "delay": dict(lag=6, n_scored=8),
    "text": dict(lag=16),
    "digits": dict(lag=3),
}


def make(name: str, **kw):
    return build_task(name, TASKS.get(name).config(**{**SMALL[name], **kw}))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_task_is_covered():
    assert set(SMALL) == set(TASKS.names())


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("lag", [None, 9])
def test_deterministic_per_seed_and_different_across_seeds(name, lag):
    t = make(name)
    a, b, c = (t.sample(16, gen(s), lag=lag) for s in (0, 0, 1))
    for f in ("x", "y", "mask", "lag"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_lags_and_io(name):
    t = make(name)
    b = t.sample(64, gen())
    B, T = b.mask.shape
    assert T == t.default_seq_len() and b.mask.any(1).all()
    if name != "text":        # text has no planted lag: every window holds every context
        varied = t.cfg.lag_dist == "uniform"    # delay allows fixed lags only
        assert 1 <= int(b.lag.min()) and int(b.lag.max()) == t.cfg.lag and (len(b.lag.unique()) > 1) == varied
        fixed = make(name, lag_dist="fixed").sample(8, gen())
        assert (fixed.lag == t.cfg.lag).all()
    e = t.sample(8, gen(), lag=11, seq_len=t.default_seq_len(11))
    assert (e.lag == 11).all()
    if t.io.vocab_size:
        assert b.x.dtype == torch.long and int(b.x.max()) < t.io.vocab_size
    else:
        assert b.x.shape[-1] == t.io.d_in
    if t.kind == "classification":
        assert int(b.y[b.mask].max()) < t.io.d_out and 0 < t.chance < 1
    else:
        assert b.y.shape[-1] == t.io.d_out


# ---- hand-checked targets --------------------------------------------------------------------

def test_copy_layout():
    t = make("copy")                                   # n=3, alphabet=4, marker 5
    b = t.sample(32, gen())
    T, n = b.x.shape[1], 3
    for x, y, lag in zip(b.x, b.y, b.lag):
        start = T - 2 * n - 1 - int(lag)
        expect = torch.zeros(T, dtype=torch.long)
        expect[start:start + n] = x[start:start + n]
        expect[T - n - 1] = 5
        assert torch.equal(x, expect) and (x[start:start + n] >= 1).all()
        assert torch.equal(y[T - n:], x[start:start + n])     # recalled lag + n + 1 steps later
    assert b.mask.sum(1).eq(n).all() and b.mask[:, T - n:].all()


def test_copy_baselines_match_the_tcn_paper():
    t = build_task("copy", TASKS.get("copy").config(lag=999))      # TCN's T = 1000
    assert t.baseline_loss() == pytest.approx(math.log(8))
    assert t.tcn_baseline_loss() == pytest.approx(10 * math.log(8) / (1000 + 20))
    assert round(t.tcn_baseline_loss(), 4) == 0.0204                 # TCN Table 1's LSTM copy loss


def test_adding_markers_and_sum():
    t = make("adding")
    b = t.sample(64, gen())
    T = b.x.shape[1]
    for x, y, lag in zip(b.x, b.y, b.lag):
        marked = x[:, 1].nonzero()[:, 0]
        assert len(marked) == 2 and int(marked[0]) == T - 1 - int(lag) and int(marked[1]) <= T - 1
        assert float(y[-1, 0]) == pytest.approx(float(x[marked, 0].sum()))
    big = t.sample(20000, gen(1)).y[:, -1, 0]
    assert float(big.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(big.var()) == pytest.approx(1 / 6, abs=0.005)   # predicting 1 gives MSE 1/6
    assert t.baseline_loss() == pytest.approx(1 / 6)


def test_selective_copy_targets_are_the_scattered_symbols_in_order():
    t = make("selective_copy")                         # n=3, alphabet=4, marker 5
    b = t.sample(64, gen())
    T, n = b.x.shape[1], 3
    for x, y, lag in zip(b.x, b.y, b.lag):
        body = x[:T - n]
        pos = body.nonzero()[:, 0]
        assert len(pos) == n and int(pos[0]) == T - 2 * n - int(lag)     # first symbol opens the region
        assert torch.equal(y[T - n:], body[pos]) and (x[T - n:] == 5).all()
    positions = torch.stack([x[:T - n].nonzero()[1:, 0] for x in b.x])
    assert len(positions.unique(dim=0)) > 10                           # positions really vary


def test_assoc_recall_answers_are_the_values_of_the_queried_keys():
    t = make("assoc_recall")                           # K=3 pairs, keys 1..8, values 9..16
    b = t.sample(64, gen())
    T, K = b.x.shape[1], 3
    for x, y, lag in zip(b.x, b.y, b.lag):
        s = T - 3 * K - int(lag)
        keys, values = x[s:s + 2 * K:2], x[s + 1:s + 2 * K:2]
        assert ((1 <= keys) & (keys <= 8)).all() and ((9 <= values) & (values <= 16)).all()
        assert len(keys.unique()) == K and (x[s + 2 * K:T - K] == 0).all()
        queries = x[T - K:]
        assert sorted(queries.tolist()) == sorted(keys.tolist())
        for j, q in enumerate(queries.tolist()):
            i = keys.tolist().index(q)
            assert int(y[T - K + j]) == int(values[i])
            assert int(lag) + 1 <= (T - K + j) - (s + 2 * i + 1) <= int(lag) + 3 * K - 2


def test_recall_first_target_is_the_flagged_first_input():
    t = make("recall_first")
    b = t.sample(64, gen())
    T = b.x.shape[1]
    for x, y, lag in zip(b.x, b.y, b.lag):
        first = T - 1 - int(lag)
        assert x[:, 1].nonzero()[:, 0].tolist() == [first]
        assert float(y[-1, 0]) == float(x[first, 0]) and (x[:first, 0] == 0).all()
    assert t.baseline_loss() == 1.0


def test_delay_target_is_the_input_lag_steps_back_and_the_signal_is_band_limited():
    t = make("delay", cutoff=0.1)
    b = t.sample(256, gen())
    T = b.x.shape[1]
    for x, y, lag, m in zip(b.x[..., 0], b.y[..., 0], b.lag, b.mask):
        steps = m.nonzero()[:, 0]
        assert torch.allclose(y[steps], x[steps - int(lag)])
    u = t.sample(512, gen(1), lag=100, seq_len=400).x[..., 0]
    assert float((u ** 2).mean()) == pytest.approx(1.0, abs=0.03)      # unit variance: baseline 1
    power = torch.fft.rfft(u).abs().pow(2).mean(0)
    assert float(power[41:].sum() / power.sum()) < 1e-6                 # nothing above 0.1 x 400


def test_text_windows_and_contexts(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("hello world, hello memscale. " * 50)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("abc")
    (tmp_path / "d" / "b.bin").write_bytes(b"\xff\xfe\x00bad")        # not UTF-8: skipped
    assert len(build_task("text", TASKS.get("text").config(path=str(tmp_path / "d"))).vocab) == 3
    t = build_task("text", TASKS.get("text").config(path=str(f), lag=8, eval_chars=64))
    text = f.read_text()
    decode = lambda ids: "".join(chr(int(t.vocab[i])) for i in ids)  # noqa: E731
    b = t.sample(16, gen())
    assert b.mask.all() and torch.equal(b.x[:, 1:], b.y[:, :-1])
    for x, y in zip(b.x, b.y):
        assert decode(x) + decode(y[-1:]) in text[:t.cut + 1]           # training part only
    e4, e2 = t.sample(32, gen(3), lag=4), t.sample(32, gen(3), lag=2)
    assert e4.x.shape == (32, 4) and e4.mask[:, -1].all() and e4.mask.sum() == 32
    assert torch.equal(e4.y[:, -1], e2.y[:, -1])                         # same targets: paired
    assert torch.equal(e4.x[:, 2:], e2.x)                                # the shorter context is a suffix
    for x, y in zip(e4.x, e4.y):
        assert decode(x) + decode(y[-1:]) in text


def test_text_default_corpus_is_pythons_stdlib():
    t = make("text")
    assert len(t.ids) > 500_000 and t.io.vocab_size == len(t.vocab)
    assert "import" in "".join(chr(int(t.vocab[i])) for i in t.ids[:20000])


def test_digits_pixels_split_upsample_and_permutation():
    from sklearn.datasets import load_digits
    d = load_digits()
    ref = {tuple((img / 16.0).ravel().round(4)): int(lab) for img, lab in zip(d.images, d.target)}
    t = make("digits")
    for lag in (None, 5):
        b = t.sample(32, gen(), lag=lag)
        T = b.x.shape[1]
        for x, y, lg in zip(b.x, b.y, b.lag):
            img = x[:, 1].nonzero()[:, 0]
            assert img.tolist() == list(range(T - 1 - int(lg) - 64, T - 1 - int(lg)))
            assert ref[tuple(x[img, 0].numpy().astype(np.float64).round(4))] == int(y[-1])
    from study.tasks.digits import load
    plain, up = load(1, False), load(2, False)
    assert up["pixels"].shape[1] == 256
    assert torch.equal(up["pixels"].view(-1, 16, 16)[:, ::2, ::2], plain["pixels"].view(-1, 8, 8))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(64))
    assert torch.equal(load(1, True)["pixels"], plain["pixels"][:, perm])
    assert set(plain["train"].tolist()).isdisjoint(plain["held_out"].tolist())
    held = {tuple(plain["pixels"][i].numpy().round(4)) for i in plain["held_out"].tolist()}
    e = t.sample(64, gen(), lag=2)
    assert all(tuple(x[x[:, 1] > 0, 0].numpy().round(4)) in held for x in e.x)   # evaluation: held out


# ---- chance and baseline: a model that ignores the input ------------------------------------

class Constant(nn.Module):
    """Ignores its input: one learned output vector for every step."""
    recurrent = False

    def __init__(self, d_out: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(d_out))

    def forward(self, x, state=None):
        return self.b.expand(x.shape[0], x.shape[1], -1), None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_model_ignoring_the_input_reaches_the_baseline_and_chance(name):
    torch.manual_seed(0)
    t, g = make(name), gen(0)
    model = Constant(t.io.d_out)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(300):
        b = t.sample(64, g)
        opt.zero_grad()
        t.loss(model(b.x)[0], b).backward()
        opt.step()
        if step == 200:
            opt.param_groups[0]["lr"] = 0.005      # settle: the noise floor, not the step size
    b = t.sample(2048, gen(1))
    out = model(b.x)[0][b.mask]
    with torch.no_grad():
        if t.kind == "classification":
            per = nn.functional.cross_entropy(out, b.y[b.mask], reduction="none")
        else:
            per = ((out - b.y[b.mask]) ** 2).mean(-1)
    se = float(per.std()) / math.sqrt(len(per))
    assert float(per.mean()) == pytest.approx(t.baseline_loss(), abs=4 * se + 0.02 * t.baseline_loss())
    rows = evaluate(model, t, [1, t.cfg.lag], 512, seed=0, device="cpu")
    for r in rows:      # normalised score 0 (chance accuracy, baseline MSE / loss) within its interval
        assert r["score_lo"] - 0.05 <= 0 <= r["score_hi"] + 0.05, r
