"""Causal softmax Transformer (Vaswani et al. 2017), pre-norm, rotary positions (Su et al. 2021).

Rotary positions, not learned ones: evaluation runs at lags up to 4x the trained one, so positions
beyond the training length must still mean something. `window` is the sliding attention span:
each query sees itself and the `window - 1` tokens before it.
"""
from __future__ import annotations

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
    """Rotate pairs of channels by position-dependent angles. x: (B, H, T, Dh)."""
    T, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    freqs = 10000.0 ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)   # (Dh/2,)
    ang = (torch.arange(offset, offset + T, device=x.device, dtype=x.dtype)[:, None] * freqs)  # (T, Dh/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half:]], dim=-1) if dh % 2 else out


def causal_mask(T: int, window: int | None, device) -> torch.Tensor | None:
    """None for full causal attention (SDPA's is_causal), else a (T, T) banded boolean mask."""
    if window is None or window >= T:
        return None
    i = torch.arange(T, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d < window)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        if d % cfg.n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {cfg.n_heads}")
        self.h = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, window: int | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        q, k = rotary(q), rotary(k)
        mask = causal_mask(T, window, x.device)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)   # (B, H, T, Dh)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff(self.ln2(x)))


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

    def state_size(self, seq_len, window):
        # the KV cache an autoregressive pass would hold: L x 2 x context x D
        ctx = seq_len if window is None else min(window, seq_len)
        return self.cfg.n_layers * 2 * ctx * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d, L = self.cfg.d_model, self.cfg.n_layers
        ctx = seq_len if window is None else min(window, seq_len)
        proj = 2 * 4 * d * d + 2 * 2 * self.cfg.ff_mult * d * d      # qkv + out, feed-forward
        attn = 2 * 2 * ctx * d                                         # q.k and a.v per token
        return L * (proj + attn)
