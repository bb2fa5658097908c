"""Contract tests for every registered architecture (parametrised over MODELS.names(), so a new
family is covered the moment it registers)."""
from __future__ import annotations

import pytest
import torch

from study.models import IO, MODELS, build_model, detach_state

torch.set_num_threads(1)

ARCHS = MODELS.names()
RECURRENT = [a for a in ARCHS if MODELS.get(a).cls.recurrent]
TOKENS = IO(d_out=5, vocab_size=7)
FEATURES = IO(d_out=2, d_in=3)


def small(arch: str, **over):
    """A tiny config of the family: d_model 8, two heads where the family has heads."""
    fields = MODELS.fields(arch)
    kw = {"d_model": 8}
    if "n_heads" in fields:
        kw["n_heads"] = 2
    if "memory_size" in fields:
        kw["memory_size"] = 6
    if "d_state" in fields:
        kw["d_state"] = 6
    if "ff_mult" in fields:
        kw["ff_mult"] = 2
    kw.update(over)
    return MODELS.get(arch).config(**kw)


def make(arch, io=TOKENS, seq_len=24, window=None, dtype=torch.float64, **over):
    torch.manual_seed(0)
    m = build_model(arch, small(arch, **over), io, seq_len, window).to(dtype)
    return m.eval()


def tokens(B, T, seed=1):
    return torch.randint(0, TOKENS.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def flat(state):
    """Every tensor in a (nested) state, for comparisons."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in flat(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in flat(v)]
    return []


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_from_defaults_with_output_shape(arch):
    cfg = MODELS.get(arch).config()
    for io, x in ((TOKENS, tokens(2, 10)), (FEATURES, torch.randn(2, 10, 3))):
        m = build_model(arch, cfg, io, 10, None)
        y, _ = m(x)
        assert y.shape == (2, 10, io.d_out)
    assert m.flops_per_token(10, None) > 0 and m.state_size(10, None) > 0
    assert m.aux_loss is None or arch == "universal_transformer"


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_causal(arch, window):
    m = make(arch, window=window)
    x = tokens(2, 16)
    y, _ = m(x)
    for t in (0, 7, 14):
        x2 = x.clone()
        x2[:, t + 1:] = (x2[:, t + 1:] + 1 + torch.arange(16 - t - 1)) % TOKENS.vocab_size
        y2, _ = m(x2)
        assert torch.allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-12, rtol=0), f"output <= {t} saw the future"
        assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:]), "the change had no effect at all"


@pytest.mark.parametrize("arch", ARCHS)
def test_num_params_counts_trainable_scalars(arch):
    m = build_model(arch, small(arch), TOKENS, 24, None)
    unique = {id(p): p for _, p in m.named_parameters(remove_duplicate=False)}
    assert m.num_params() == sum(p.numel() for p in unique.values() if p.requires_grad)
    assert m.num_params() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_one_step_lowers_loss(arch):
    torch.manual_seed(0)
    m = build_model(arch, small(arch, d_model=16), TOKENS, 12, None).train()
    x, y = tokens(4, 12, seed=2), tokens(4, 12, seed=3)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def loss():
        out, _ = m(x)
        ce = torch.nn.functional.cross_entropy(out.reshape(-1, TOKENS.d_out), y.reshape(-1) % TOKENS.d_out)
        return ce + (m.aux_loss if m.aux_loss is not None else 0.0)

    before = loss()
    before.backward()
    opt.step()
    m.after_step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


@pytest.mark.parametrize("arch", ARCHS)
def test_no_nan_at_seq_len_4096(arch):
    torch.manual_seed(0)
    m = build_model(arch, small(arch, d_model=4, **({"n_heads": 1} if "n_heads" in MODELS.fields(arch) else {})),
                    TOKENS, 4096, None)
    with torch.no_grad():
        y, _ = m(tokens(1, 4096))
    assert y.shape == (1, 4096, TOKENS.d_out) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", RECURRENT)
def test_chunks_with_carried_state_equal_one_pass(arch):
    window = 5 if arch == "tova" else 7          # tova: a KV budget below T, so eviction happens
    m = make(arch, window=window)
    x = tokens(2, 30)
    full, s_full = m(x)
    state, outs = m.init_state(2), []
    bounds = [0, 7, 8, 19, 30]                   # uneven chunks, one of length 1
    for a, b in zip(bounds, bounds[1:]):
        out, state = m(x[:, a:b], state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-10, rtol=0)
    for u, v in zip(flat(state), flat(s_full)):
        assert torch.allclose(u, v, atol=1e-10, rtol=0)


@pytest.mark.parametrize("arch", RECURRENT)
def test_gradient_is_cut_at_a_chunk_boundary(arch):
    m = make(arch, io=FEATURES, window=6)
    x = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)

    def grad_before_boundary(cut: bool):
        x.grad = None
        _, state = m(x[:, :6], m.init_state(2))
        out, _ = m(x[:, 6:], detach_state(state) if cut else state)
        out.pow(2).sum().backward()
        return x.grad[:, :6].abs().max().item(), x.grad[:, 6:].abs().max().item()

    carried, own = grad_before_boundary(cut=False)
    assert carried > 0 and own > 0, "the state does not carry the first chunk into the second"
    carried, own = grad_before_boundary(cut=True)
    assert carried == 0.0 and own > 0


@pytest.mark.parametrize("arch", ["transformer", "tcn", "universal_transformer"])
def test_window_bounds_what_an_output_sees(arch):
    """Non-recurrent families: `window` is the attention span / receptive field."""
    over = {"n_layers": 1, "max_hops": 1} if arch == "universal_transformer" else {"n_layers": 1}
    m = make(arch, window=5, **over)
    reach = m.receptive_field if arch == "tcn" else 5
    assert reach >= 5
    x = tokens(1, 40)
    x2 = x.clone()
    x2[:, 0] = (x2[:, 0] + 1) % TOKENS.vocab_size
    y, y2 = m(x)[0], m(x2)[0]
    assert not torch.allclose(y[:, :reach], y2[:, :reach])
    assert torch.allclose(y[:, reach:], y2[:, reach:], atol=1e-12, rtol=0)
