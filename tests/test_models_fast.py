"""Fast paths against slow, obviously correct references (values and gradients, float64).

Covers what tests/test_models_families.py does not: blockwise sliding-window attention, TOVA's
batched eviction, the hand-written backward of the elementwise recurrences, and gradients of the
chunked linear attention.
"""
from __future__ import annotations

import math

import pytest
import torch

from study.models import linear_attention, transformer
from test_models import FEATURES, make, tokens   # shared helpers (tests/ is on sys.path)

torch.set_num_threads(1)


def rand(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def grads(out, inputs):
    return torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).pow(2).sum(), inputs)


def close(a, b, tol=1e-10):
    return torch.allclose(a, b, atol=tol, rtol=0)


# ---- sliding-window attention ------------------------------------------------------------------

def naive_window_attention(q, k, v, window):
    """One query at a time: softmax over the keys t - window + 1 .. t."""
    T, out = q.shape[2], []
    for t in range(T):
        lo = max(0, t - window + 1)
        s = (q[:, :, t:t + 1] @ k[:, :, lo:t + 1].transpose(-1, -2)) / math.sqrt(q.shape[-1])
        out.append(torch.softmax(s, -1) @ v[:, :, lo:t + 1])
    return torch.cat(out, 2)


@pytest.mark.parametrize("T,window", [(300, 5), (300, 64), (257, 100), (200, 1), (130, 64), (90, 200)])
def test_blockwise_window_attention_equals_per_query_loop(T, window):
    q, k, v = rand(2, 3, T, 4, seed=1), rand(2, 3, T, 4, seed=2), rand(2, 3, T, 4, seed=3)
    fast, ref = transformer.attention(q, k, v, window), naive_window_attention(q, k, v, window)
    assert close(fast, ref)
    for a, b in zip(grads(fast, (q, k, v)), grads(ref, (q, k, v))):
        assert close(a, b)


def test_blockwise_attention_on_strided_inputs_that_need_no_padding():
    """T a multiple of the block (no padding) and q, k, v permuted views, as the model passes them
    (a regression: .view on such inputs failed in a real sweep at seq_len 1024, window 64)."""
    qkv = rand(2, 256, 3, 3, 4, seed=4).permute(2, 0, 3, 1, 4)       # 3 x (B, H, T, Dh), strided
    q, k, v = qkv
    assert not v.is_contiguous()
    fast, ref = transformer.attention(q, k, v, 64), naive_window_attention(q, k, v, 64)
    assert close(fast, ref)


def test_blockwise_attention_runs_the_fused_kernel_not_the_math_path():
    """At float32 (as trials train) the blockwise path must reach SDPA's fused kernel: with a 3-d
    mask PyTorch's CPU SDPA took its math path, which keeps every block's probabilities for
    backward and made the windowed transformer's step per token 2.9x dearer at 16k than at 256."""
    q, k, v = (torch.randn(2, 2, 512, 8, requires_grad=True) for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        transformer.attention(q, k, v, 64).sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_attention_math" not in ops, sorted(o for o in ops if "attention" in o)
    assert any("flash_attention" in o or "efficient_attention" in o for o in ops), sorted(ops)


def test_windowed_transformer_blockwise_equals_dense_mask(monkeypatch):
    m = make("transformer", seq_len=300, window=7)
    x = tokens(2, 300)
    fast, _ = m(x)
    monkeypatch.setattr(transformer, "BLOCK", 10 ** 6)          # forces the (T, T) banded mask
    dense, _ = m(x)
    assert close(fast, dense)


# ---- TOVA --------------------------------------------------------------------------------------

def naive_tova(m, x):
    """TOVA written out per layer, step, sequence and head (Oren et al. 2024 sec. 4): append the
    token, attend, then drop the cached token with the lowest head-averaged weight if over budget."""
    h = m.embed(x)
    B, T, _ = h.shape
    for b in m.blocks:
        q, k, v = b.project(h)                                  # (B, H, T, Dh), rotary at 0..T-1
        H, Dh = q.shape[1], q.shape[3]
        out = torch.zeros_like(q)
        for n in range(B):
            cache = []                                          # time indices held, in order
            for t in range(T):
                cache.append(t)
                w = [torch.softmax(q[n, hd, t] @ k[n, hd, cache].T / math.sqrt(Dh), -1) for hd in range(H)]
                for hd in range(H):
                    out[n, hd, t] = w[hd] @ v[n, hd, cache]
                if len(cache) > m.window:
                    mean = sum(w) / H
                    cache.pop(int(torch.argmin(mean)))
        h = b.finish(h, out)
    return m.head(m.ln(h))


def test_tova_equals_per_head_reference():
    m = make("tova", window=5)
    x = tokens(2, 30)
    y, state = m(x)
    assert close(y, naive_tova(m, x))
    chunks, s = [], m.init_state(2)                              # streamed, the cache carried
    for a, b in ((0, 3), (3, 11), (11, 30)):
        out, s = m(x[:, a:b], s)
        chunks.append(out)
    assert close(torch.cat(chunks, 1), y)


# ---- elementwise recurrences: hand-written backward = autograd through the step loop ----------

@pytest.mark.parametrize("arch", ["indrnn", "brc", "nbrc"])
def test_recurrence_fast_path_values_and_gradients(arch):
    m = make(arch, io=FEATURES, n_layers=2)
    x = rand(3, 41, 3, seed=4)
    s0 = (0.5 * rand(2, 3, 8, seed=5, grad=False)).abs().requires_grad_(True)   # a live carried state
    results = []
    for fast in (True, False):
        m.fast = fast
        y, s = m(x, s0)
        params = [p for p in m.parameters()]
        loss_out = torch.cat([y.flatten(), s.flatten() ** 3])
        results.append([y, s, *grads(loss_out[None], [x, s0, *params])])
    for a, b in zip(*results):
        assert close(a, b, tol=1e-10 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("arch", ["indrnn", "brc", "nbrc"])
def test_recurrence_fast_path_with_relu_zeros_and_one_step(arch):
    """Edge cases of the hand-written backward: T = 1, and IndRNN units at exactly 0 (dead ReLU)."""
    m = make(arch, io=FEATURES)
    for T in (1, 2):
        x = rand(2, T, 3, seed=6)
        res = []
        for fast in (True, False):
            m.fast = fast
            y, s = m(x, m.init_state(2))
            res.append([y, *grads(y, [x, *m.parameters()])])
        for a, b in zip(*res):
            assert close(a, b)


# ---- chunked linear attention: gradients too ---------------------------------------------------

def test_linear_attention_chunked_gradients_equal_recurrent():
    q, k = (linear_attention.phi(rand(1, 2, 70, 3, seed=s, grad=False)).requires_grad_(True) for s in (7, 8))
    v = rand(1, 2, 70, 4, seed=9)
    S0, z0 = rand(1, 2, 3, 4, seed=10).abs().detach(), rand(1, 2, 3, seed=11).abs().detach()
    a, *_ = linear_attention.chunked_attention(q, k, v, S0, z0, chunk=16)
    b, *_ = linear_attention.recurrent_attention(q, k, v, S0, z0)
    assert close(a, b)
    for u, w in zip(grads(a, (q, k, v)), grads(b, (q, k, v))):
        assert close(u, w)


def test_recurrences_import_quietly_when_torchscript_is_deprecated(monkeypatch):
    """torch 2.14 warns (FutureWarning) on every torch.jit.script: the CLI's one-line errors must
    stay one line, so the recurrences compile with that warning silenced."""
    import importlib
    import warnings

    import study.models.recurrences as rec
    real = torch.jit.script

    def deprecated(fn, *a, **k):
        warnings.warn("`torch.jit.script` is deprecated", FutureWarning, stacklevel=2)
        return real(fn, *a, **k)

    monkeypatch.setattr(torch.jit, "script", deprecated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(rec)
    x = torch.randn(5, 2, 3)
    assert torch.equal(rec._indrnn_forward(x, torch.ones(3), torch.zeros(2, 3)),
                       rec._indrnn_forward_py(x, torch.ones(3), torch.zeros(2, 3)))
    monkeypatch.undo()
    importlib.reload(rec)


# ---- fused recurrences over chunks: the same function as one fused call, full BPTT ------------

@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn", "stable_rnn"])
def test_fused_recurrence_chunked_equals_one_call(arch, monkeypatch):
    """rnn.CHUNK splits a long sequence into fused calls that carry the state without detaching;
    values, the final state and every gradient (inputs, initial state, parameters: the gradient
    crosses chunk boundaries) must equal one call over the whole sequence."""
    from study.models import rnn
    m = make(arch, io=FEATURES, n_layers=2)
    x = rand(2, 23, 3, seed=12)
    n = 2 if arch == "lstm" else 1
    s0 = tuple(0.5 * rand(2, 2, 8, seed=13 + i) for i in range(n))
    s0 = s0 if arch == "lstm" else s0[0]
    res = []
    for chunk in (10 ** 9, 5, 1):     # one call; chunks of 5 (the last one 3 steps); every step alone
        monkeypatch.setattr(rnn, "CHUNK", chunk)
        y, s = m(x, s0)
        st = list(s) if arch == "lstm" else [s]
        out = torch.cat([y.flatten(), *(t.flatten() ** 3 for t in st)])
        res.append([y, *st, *grads(out[None], [x, *(s0 if arch == "lstm" else [s0]), *m.parameters()])])
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert a.shape == b.shape and close(a, b)
    assert res[0][-1].abs().sum() > 0        # the last parameter's gradient is not trivially zero


def test_ssm_chunked_scan_equals_one_scan_and_the_step_loop(monkeypatch):
    """ssm.SCAN_CHUNK scans chunks carrying the state: values, final state and gradients equal
    one scan over T and the step loop (float64), with a live initial state."""
    from study.models import ssm
    m = make("ssm", io=FEATURES, n_layers=2)
    x = rand(2, 23, 3, seed=20)
    s0 = torch.complex(rand(2, 2, m.cfg.d_state, seed=21), rand(2, 2, m.cfg.d_state, seed=22))
    res = []
    for chunk, parallel in ((10 ** 9, True), (5, True), (1, True), (10 ** 9, False)):
        monkeypatch.setattr(ssm, "SCAN_CHUNK", chunk)
        m.parallel = parallel
        y, s = m(x, s0)
        out = torch.cat([y.flatten(), s.real.flatten() ** 3, s.imag.flatten()])
        res.append([y, s, *grads(out[None], [x, *m.parameters()])])
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert a.shape == b.shape and close(a, b, tol=1e-10 * max(1.0, b.abs().max().item()))
