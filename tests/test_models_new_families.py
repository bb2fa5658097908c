"""Oracles for gated_conv, wavenet, sparse_attention, transformer_xl / gtrxl and layernorm_lstm:
each family's fast path against a slow, obviously correct reference, and `reach` (the receptive
field or attention reach each reports) against what an impulse at step 0 actually changes.

The registry-parametrised contract tests (tests/test_models.py) cover these families too.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from study.models import build_model, gated_conv, sparse_attention as sa, wavenet
from test_models import FEATURES, TOKENS, make, small, tokens   # shared helpers (tests/ is on sys.path)

torch.set_num_threads(1)
NEW = ["gated_conv", "wavenet", "sparse_attention", "transformer_xl", "gtrxl", "layernorm_lstm"]


def rand(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def measured_reach(m, T: int) -> int:
    """The last output step that a change of the input at step 0 alters (float64, exact zeros
    elsewhere): the longest dependency distance seen from step 0, reach's unit."""
    x = rand(1, T, FEATURES.d_in, seed=3, grad=False)
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        diff = (m(x)[0] - m(x2)[0]).abs().amax(-1)[0]          # (T,)
    changed = (diff > 0).nonzero().flatten()
    return int(changed.max())


def test_every_new_family_reports_reach_with_the_agreed_signature():
    for arch in NEW:
        cls = build_model(arch, small(arch), TOKENS, 24, None).__class__
        assert list(inspect.signature(cls.reach).parameters) == ["self", "seq_len", "window"], arch


# ---- gated convolutional LM --------------------------------------------------------------------

@pytest.mark.parametrize("n_layers,window", [(4, 1), (4, 3), (4, 7), (4, 25), (1, 9), (3, None)])
def test_gated_conv_context_is_exactly_the_window(n_layers, window):
    T = 40
    m = make("gated_conv", io=FEATURES, seq_len=T, window=window, n_layers=n_layers)
    want = (window or T) - 1
    assert m.reach(T, window) == want
    assert measured_reach(m, T) == want
    assert m.state_size(T, window) == want * 8
    assert gated_conv.kernel_widths(4, 25) == [7, 7, 7, 7]   # Dauphin et al.'s 25-token context


# ---- WaveNet -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stacks,window", [(1, 2), (1, 9), (2, 8), (2, 11), (3, 20), (2, None)])
def test_wavenet_receptive_field_formula_equals_the_impulse_response(stacks, window):
    T = 48
    m = make("wavenet", io=FEATURES, seq_len=T, window=window, stacks=stacks)
    span = window or T
    L = m.levels
    assert m.reach(T, window) + 1 == 2 + stacks * (2 ** L - 1) >= span           # the paper's field
    assert L == 1 or wavenet.receptive_field(stacks, L - 1) < span               # and the smallest
    assert measured_reach(m, 4 * T) == m.reach(T, window)


# ---- BigBird-style sparse attention ------------------------------------------------------------

def reference_mask(T, span, b, g, drawn):
    """The pattern written out per (query, key) from its definition; drawn[i] = set of blocks."""
    M = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        for j in range(t + 1):
            M[t, j] = t - j < span or j < g or (j // b) in drawn[t // b]
    return M


def drawn_blocks(p):
    return [{int(k) for k, ok in zip(p.idx[i], p.ok[i]) if ok} for i in range(p.n)]


@pytest.mark.parametrize("T,span,block,gb,rb", [
    (200, 5, 8, 2, 3), (203, 20, 8, 1, 2), (256, 16, 16, 2, 3), (190, 1, 10, 0, 4), (150, 9, 8, 0, 0)])
def test_block_sparse_attention_equals_dense_masked_reference(T, span, block, gb, rb):
    cfg = sa.SparseAttentionConfig(d_model=8, block=block, global_blocks=gb, random_blocks=rb)
    p = sa.Pattern(T, span, cfg, layer=1)
    assert p.blocked
    drawn = drawn_blocks(p)
    g, nw = gb * block, math.ceil((span - 1) / block)
    for i, blocks in enumerate(drawn):     # distinct, after the globals, before the window, r of them
        cands = [k for k in range(p.n) if k * block >= g and k < i - nw]
        assert blocks <= set(cands) and len(blocks) == min(rb, len(cands))
    q, k, v = rand(2, 3, T, 4, seed=1), rand(2, 3, T, 4, seed=2), rand(2, 3, T, 4, seed=3)
    fast = sa.sparse_attention(q, k, v, p)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask(T, span, block, g, drawn))
    assert torch.allclose(fast, ref, atol=1e-10, rtol=0)
    w = torch.linspace(-1, 1, 4, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((fast * w).pow(2).sum(), (q, k, v)),
                    torch.autograd.grad((ref * w).pow(2).sum(), (q, k, v))):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    assert torch.equal(p.dense_mask(), reference_mask(T, span, block, g, drawn))   # the short-T path


def test_sparse_pattern_is_the_same_at_every_length_and_differs_by_layer():
    cfg = sa.SparseAttentionConfig(d_model=8)
    short, long = (sa.Pattern(T, 48, cfg, layer=0) for T in (400, 1600))
    assert drawn_blocks(long)[:short.n] == drawn_blocks(short)
    assert drawn_blocks(sa.Pattern(1600, 48, cfg, layer=1)) != drawn_blocks(long)
    assert short.keys == long.keys          # O(1) keys per query: linear in T


def test_sparse_attention_model_blocked_equals_dense(monkeypatch):
    m = make("sparse_attention", seq_len=300, window=12, block=8)
    x = tokens(2, 300)
    fast, _ = m(x)
    monkeypatch.setattr(sa.Pattern, "blocked", property(lambda self: False))
    dense, _ = m(x)
    assert torch.allclose(fast, dense, atol=1e-10, rtol=0)


def test_sparse_attention_blocked_flops_match_the_counter():
    T = 256
    m = build_model("sparse_attention", small("sparse_attention", d_model=32, n_heads=4), TOKENS, T, 16).eval()
    x = tokens(2, T)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        m(x)
    c, a = fc.get_total_flops() / x.numel(), m.flops_per_token(T, 16)
    assert abs(c - a) <= 0.05 * c
    assert m.flops_per_token(4 * T, 16) == a       # per-token cost independent of T


def test_sparse_attention_reach():
    T = 60
    bounded = make("sparse_attention", io=FEATURES, seq_len=T, window=4, n_layers=2, global_blocks=0, random_blocks=0)
    assert bounded.reach(T, 4) == 2 * 3 == measured_reach(bounded, T)
    globs = make("sparse_attention", io=FEATURES, seq_len=T, window=4, n_layers=2, block=4, random_blocks=0)
    assert globs.reach(T, 4) is None and measured_reach(globs, T) == T - 1   # step 0 is a global token
    assert make("sparse_attention", window=4, global_blocks=0).reach(T, 4) is None   # random blocks


# ---- Transformer-XL / GTrXL --------------------------------------------------------------------

def banded_reference(m, x, window):
    """One pass over the whole sequence, each query seeing itself and window - 1 earlier steps."""
    h = m.embed(x)
    T = h.shape[1]
    i = torch.arange(T)
    band = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < (window or T))
    for b in m.blocks:
        q, k, v = b.project(h)
        h = b.finish(h, F.scaled_dot_product_attention(q, k, v, attn_mask=band))
    return m.head(m.ln(h))


@pytest.mark.parametrize("arch", ["transformer_xl", "gtrxl"])
@pytest.mark.parametrize("window,bounds", [(6, range(0, 301, 6)), (5, [0, 140, 300]), (None, [0, 7, 8, 150, 300])])
def test_segment_recurrence_equals_one_long_pass_with_the_band_mask(arch, window, bounds):
    """Segments of `window` as the trainer runs them (cache cut with detach), and uneven streamed
    chunks (one of 160 steps takes the long path) against one pass with the equivalent mask."""
    m = make(arch, seq_len=300, window=window, n_layers=2)
    x = tokens(2, 300)
    ref = banded_reference(m, x, window)
    state, outs = m.init_state(2), []
    bounds = list(bounds)
    for a, b in zip(bounds, bounds[1:]):
        out, state = m(x[:, a:b], state)
        state = {"mem": [s.detach() for s in state["mem"]], "pos": state["pos"]}
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), ref, atol=1e-10, rtol=0)
    kept = 300 if window is None else window - 1
    assert all(s.shape == (2, kept, 8) for s in state["mem"]) and state["pos"] == 300
    assert m.state_size(300, window) == 2 * kept * 8


@pytest.mark.parametrize("arch", ["transformer_xl", "gtrxl"])
def test_transformer_xl_reach_is_layers_times_memory(arch):
    m = make(arch, io=FEATURES, seq_len=40, window=4, n_layers=3)
    assert m.reach(40, 4) == 3 * 3 == measured_reach(m, 40)
    assert m.reach(40, None) is None


def test_gtrxl_gates_start_near_the_identity():
    m = make("gtrxl")
    x, y = rand(2, 5, 8, seed=1, grad=False), rand(2, 5, 8, seed=2, grad=False)
    gate = m.blocks[0].gate1
    with torch.no_grad():
        z = torch.sigmoid(gate.w(y).chunk(3, -1)[1] + gate.u(x).chunk(2, -1)[1] - gate.bg)   # update gate
    assert z.mean() < 0.25                                   # b_g = 2: mostly the residual stream


# ---- LayerNorm LSTM ----------------------------------------------------------------------------

def ln(z, gain, bias):
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return (z - mu) / torch.sqrt(var + 1e-5) * gain + bias


def step_loop(m, x, state):
    """Ba et al.'s equations, one step and one layer at a time."""
    h_in = m.embed(x)
    hs, cs = [], []
    for k, L in enumerate(m.layers):
        h, c = state[0][k], state[1][k]
        out = []
        for t in range(h_in.shape[1]):
            z = (ln(h @ L.w_h.T, L.ln_h.weight, L.ln_h.bias)
                 + ln(h_in[:, t] @ L.w_x.T, L.ln_x.weight, L.ln_x.bias) + L.bias)
            f, i, o, g = z.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(ln(c, L.ln_c.weight, L.ln_c.bias))
            out.append(h)
        h_in = torch.stack(out, 1)
        hs.append(h)
        cs.append(c)
    return m.head(h_in), (torch.stack(hs), torch.stack(cs))


def test_layernorm_lstm_equals_the_step_loop_values_and_gradients():
    m = make("layernorm_lstm", io=FEATURES, n_layers=2)
    with torch.no_grad():            # non-trivial gains and biases
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = rand(3, 17, 3, seed=4)
    s0 = tuple(0.5 * rand(2, 3, 8, seed=s, grad=False) for s in (5, 6))
    (y, (h, c)), (y2, (h2, c2)) = m(x, s0), step_loop(m, x, s0)
    for a, b in ((y, y2), (h, h2), (c, c2)):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    params = [x, *m.parameters()]
    loss = lambda out, hc: out.pow(2).sum() + hc[1].pow(3).sum()
    for a, b in zip(torch.autograd.grad(loss(y, (h, c)), params), torch.autograd.grad(loss(y2, (h2, c2)), params)):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_layernorm_lstm_reach_is_the_tbptt_window():
    m = make("layernorm_lstm")
    assert m.reach(100, 8) == 7 and m.reach(100, None) is None and m.reach(100, 100) is None
