"""Causal softmax Transformer (Vaswani et al. 2017), pre-norm, rotary positions (Su et al. 2021).

Legend: B batch, T time steps, D d_model, H heads, Dh = D/H head width.

Rotary positions, not learned ones: evaluation runs at lags up to 4x the trained one, so positions
beyond the training length must still mean something. `window` is the sliding attention span:
each query sees itself and the `window - 1` tokens before it. State size: the KV cache an
autoregressive pass would hold, L x 2 x min(window, seq_len) x D.

`Block` is shared with `tova` (the same layer run as a multi-state RNN) and, without rotary
positions, with `universal_transformer`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class TransformerConfig(ModelConfig):
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    ff_mult: int = Field(4, ge=1)        # feed-forward width = ff_mult x d_model


def rotary(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Rotate pairs of channels by position-dependent angles. x: (B, H, T, Dh), first position `offset`."""
    T, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    freqs = 10000.0 ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)   # (Dh/2,)
    ang = (torch.arange(offset, offset + T, device=x.device, dtype=x.dtype)[:, None] * freqs)  # (T, Dh/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half:]], dim=-1) if dh % 2 else out


def sinusoid(pos: torch.Tensor, d: int) -> torch.Tensor:
    """Vaswani et al. 2017 sec. 3.5 timing signal: sin/cos at geometric frequencies. pos: (T,) -> (T, d)."""
    half = d // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=pos.dtype, device=pos.device) / max(half, 1))
    ang = pos[:, None] * freqs                                          # (T, d/2)
    out = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return F.pad(out, (0, d - 2 * half))                                # odd d: one zero channel


BLOCK = 64     # smallest query block of the blockwise sliding-window attention


def causal_mask(T: int, window: int | None, device) -> torch.Tensor | None:
    """None for full causal attention (SDPA's is_causal), else a (T, T) banded boolean mask."""
    if window is None or window >= T:
        return None
    i = torch.arange(T, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d < window)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None) -> torch.Tensor:
    """Causal softmax attention where each query sees itself and the window - 1 keys before it.
    q, k, v (B, H, T, Dh) -> (B, H, T, Dh).

    Full windows use SDPA's is_causal (its CPU/GPU flash kernels never build the T x T scores).
    A window much shorter than T is computed blockwise, as Longformer/BigBird-style local attention
    is (Beltagy et al. 2020 sec. 3.1; Zaheer et al. 2020): queries in blocks of C >= window steps
    attend to the keys of their own block and the previous one, so scores and mask take
    O(T x 2C) memory and time instead of O(T^2); a query's window never reaches further back.
    """
    T = q.shape[2]
    if window is None or window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    C = max(window, BLOCK)
    if T <= 2 * C:      # short: one banded mask is cheaper than blocks
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, window, q.device))
    B, H, _, Dh = q.shape
    n = -(-T // C)
    pad = n * C - T     # padded keys come after every real query, so no real query sees them
    q, k, v = (F.pad(t, (0, 0, 0, pad)).reshape(B * H, n, C, Dh) for t in (q, k, v))   # (BH, n, C, Dh)
    prev = lambda t: F.pad(t, (0, 0, 0, 0, 1, 0))[:, :-1]                          # block i-1 at i
    k, v = torch.cat([prev(k), k], 2), torch.cat([prev(v), v], 2)                 # (BH, n, 2C, Dh)
    i = torch.arange(C, device=q.device)[:, None]
    j = torch.arange(2 * C, device=q.device)[None, :]
    dist = C + i - j                                          # query step minus key step
    mask = ((dist >= 0) & (dist < window)).expand(n, C, 2 * C).clone()
    mask[0, :, :C] = False                                    # block 0 has no previous block
    # a 4-d mask: with a 3-d one PyTorch's CPU SDPA falls back to its math path, which keeps the
    # (BH, n, C, 2C) probabilities for backward (its softmax backward took 3.7 s of a 16k step);
    # with (1, n, C, 2C) it runs the fused flash kernel, 3.5x faster at T = 4,096 (BENCHMARKS.md)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])             # (BH, n, C, Dh)
    return a.reshape(B, H, n * C, Dh)[:, :, :T]


class Block(nn.Module):
    """Pre-norm layer: x + Attn(LN(x)), then x + FF(LN(x)); FF = Linear-GELU-Linear."""

    def __init__(self, cfg: TransformerConfig, rotary_positions: bool = True):
        super().__init__()
        d = cfg.d_model
        if d % cfg.n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {cfg.n_heads}")
        self.h, self.rope = cfg.n_heads, rotary_positions
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def project(self, x: torch.Tensor, offset: int = 0):
        """Queries, keys, values of x (B, T, D), rotated for absolute positions offset.. -> 3 x (B, H, T, Dh)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = rotary(q, offset), rotary(k, offset)
        return q, k, v

    def finish(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Residual attention output a (B, H, T, Dh), then the feed-forward half."""
        B, T, D = x.shape
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, T, D)))   # (B, H, T, Dh) -> (B, T, D)
        return x + self.drop(self.ff(self.ln2(x)))

    def forward(self, x: torch.Tensor, window: int | None) -> torch.Tensor:
        q, k, v = self.project(x)
        return self.finish(x, attention(q, k, v, window))       # attention: (B, H, T, Dh)


def block_flops(cfg: TransformerConfig, ctx: float) -> float:
    """Forward FLOPs per token of one Block attending over ctx keys (a multiply-add = 2)."""
    d = cfg.d_model
    proj = 2 * 4 * d * d + 2 * 2 * cfg.ff_mult * d * d      # qkv + out, feed-forward
    attn = 2 * 2 * ctx * d                                    # q.k and a.v
    return proj + attn


@MODELS.register("transformer", TransformerConfig,
                 "causal softmax attention, pre-norm, rotary positions, sliding window", "Vaswani et al. 2017")
class Transformer(SequenceModel):
    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def mix(self, h, state):
        for b in self.blocks:
            h = b(h, self.window)
        return self.ln(h), None

    def reach(self, seq_len, window):
        # each layer looks window - 1 steps back and layers compose, at any evaluation length
        return None if window is None else self.cfg.n_layers * (window - 1)

    def state_size(self, seq_len, window):
        # the KV cache an autoregressive pass would hold: L x 2 x context x D
        ctx = seq_len if window is None else min(window, seq_len)
        return self.cfg.n_layers * 2 * ctx * self.cfg.d_model

    def core_flops(self, seq_len, window):
        # SDPA computes the full (T, T) score matrix even when causal, so ctx is seq_len, not seq_len/2
        ctx = seq_len if window is None else min(window, seq_len)
        return self.cfg.n_layers * block_flops(self.cfg, ctx)
