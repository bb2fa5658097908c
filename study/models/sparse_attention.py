"""Block-sparse causal attention in the style of BigBird (Zaheer, Guruganesh, Dubey, Ainslie, Alberti,
Ontanon, Pham, Ravula, Wang, Yang & Ahmed, NeurIPS 2020): sliding window + global tokens + random
blocks, so each query sees O(1) keys and the cost is linear in T. Reference code read, not copied:
google-research/bigbird (bigbird/core/attention.py) and its port in huggingface/transformers.

Legend: B batch, T time steps, D d_model, H heads, Dh = D/H, b the block size, n = ceil(T/b) query
blocks, g global tokens, r random blocks per query block, nw previous blocks the window needs.

The layer is `transformer`'s (pre-norm, rotary positions, same parameters); only the attention
pattern differs. Causal, a query at t sees key j <= t when
  * window: t - j < span (itself and the span - 1 keys before it, as `transformer`'s window);
  * global: j < g, the first g = global_blocks x b tokens (BigBird's ITC globals, sec. 2: here the
    first tokens, the only ones every causal query can see);
  * random: j lies in one of the r blocks drawn for t's block (BigBird sec. 2, "random attention"),
    among the blocks entirely before its window and after the globals: one drawn uniformly in each
    of r equal strata of those candidates, so they are distinct and the draw costs O(r) per block.
The three parts are disjoint, so no key is counted twice. The random blocks depend only on (layer,
query block): a fixed hash, so the pattern is the same at any T and in every call (BigBird fixes
its random pattern too; here all heads share it).

`span` is `window`; with `full` (no window) it is BigBird's own w = 3 blocks (sec. 2 and App. D:
window 3b, 2 global blocks, 3 random blocks, as the defaults here): sparse attention never becomes
dense. Blocked computation (BigBird sec. 2 / App. D "blockify"): queries in blocks of b gather the
globals, their r random blocks and the nw + 1 blocks of their window, so a query computes
g + r b + (nw + 1) b scores whatever T is. When T is no more than that, a dense (T, T) mask of the
same pattern is cheaper and is used instead (as the huggingface port falls back to full attention
on short inputs). Not recurrent. State: the KV cache an autoregressive pass needs, keys/values of
the globals, of the window and of every earlier block a random draw may pick: all T of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from study.models.transformer import Transformer, TransformerConfig, block_flops
from study.registry import MODELS


class SparseAttentionConfig(TransformerConfig):
    block: int = Field(16, ge=1)            # b (BigBird: 64; the study's sequences are shorter)
    global_blocks: int = Field(2, ge=0)     # BigBird ITC: 2 global blocks
    random_blocks: int = Field(3, ge=0)     # BigBird: 3 random blocks


def span_of(window: int | None, block: int) -> int:
    return 3 * block if window is None else window


def _hash01(layer: int, i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random number in [0, 1) per (layer, query block i, key block k)."""
    m = 0x7FFFFFFF
    h = (i * 0x2545F491 + k * 0x6C8E9CF5 + (layer + 1) * 0x1B873593) & m
    for mul in (0x5BD1E995, 0x27D4EB2F):       # two xor-shift-multiply rounds (products < 2^62)
        h = ((h ^ (h >> 15)) * mul) & m
    return (h ^ (h >> 13)).double() / (m + 1)


def random_blocks(n: int, r: int, first: int, nw: int, layer: int, device=None):
    """The r key blocks drawn for each of n query blocks, distinct, among the candidates
    first .. i - nw - 1 of query block i: one block uniformly in each of r equal strata of the
    candidates (O(n r), where BigBird samples r without replacement; distinct either way).
    Returns idx and ok, both (n, r); ok is False where block i has fewer than r candidates
    (it then takes all of them) and those entries are masked out."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(r, device=device)[None, :]
    c = (i - nw - first).clamp(min=0)                                  # candidates per query block
    lo, hi = j * c // r, (j + 1) * c // r                              # stratum j: [lo, hi)
    pick = first + lo + (_hash01(layer, i, j) * (hi - lo)).long()      # u < 1: inside the stratum
    few = c < r
    ok = torch.where(few, j < c, torch.ones_like(few))
    idx = torch.where(few, first + j, pick)
    return torch.where(ok, idx, 0), ok


class Pattern:
    """The attention pattern of one layer at one sequence length."""

    def __init__(self, T: int, span: int, cfg: SparseAttentionConfig, layer: int, device=None):
        b = cfg.block
        self.T, self.span, self.b = T, span, b
        self.n = -(-T // b)
        self.g = min(cfg.global_blocks * b, self.n * b)
        self.nw = min(math.ceil((span - 1) / b), self.n - 1)
        self.idx, self.ok = random_blocks(self.n, cfg.random_blocks, -(-self.g // b), self.nw, layer, device)
        self.keys = self.g + cfg.random_blocks * b + (self.nw + 1) * b   # gathered per query

    @property
    def blocked(self) -> bool:
        return self.T > self.keys

    def dense_mask(self, device=None) -> torch.Tensor:
        """(T, T) boolean: the whole pattern written out."""
        t = torch.arange(self.T, device=device)[:, None]
        j = torch.arange(self.T, device=device)[None, :]
        chosen = torch.zeros(self.n, self.n, dtype=torch.bool, device=device)
        rows = torch.arange(self.n, device=device)[:, None].expand_as(self.idx)
        chosen[rows[self.ok], self.idx[self.ok]] = True
        return (j <= t) & ((t - j < self.span) | (j < self.g) | chosen[t // self.b, j // self.b])


def sparse_attention(q, k, v, p: Pattern) -> torch.Tensor:
    """q, k, v (B, H, T, Dh) -> (B, H, T, Dh) under pattern p."""
    if not p.blocked:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=p.dense_mask(q.device))
    B, H, T, Dh = q.shape
    b, n, nw, dev = p.b, p.n, p.nw, q.device
    q, k, v = (F.pad(x, (0, 0, 0, n * b - T)).reshape(B * H, n * b, Dh) for x in (q, k, v))
    t = (torch.arange(n, device=dev)[:, None] * b + torch.arange(b, device=dev)[None, :])[:, :, None]  # (n, b, 1)

    def window(x):   # blocks i - nw .. i for every query block i: (BH, n, (nw + 1) b, Dh)
        return F.pad(x, (0, 0, nw * b, 0)).unfold(1, (nw + 1) * b, b).transpose(-1, -2)

    def rand(x):     # the r drawn blocks of every query block: (BH, n, r b, Dh)
        return x.view(B * H, n, b, Dh)[:, p.idx].reshape(B * H, n, -1, Dh)

    def glob(x):     # the first g tokens, for every query block: (BH, n, g, Dh)
        return x[:, None, :p.g].expand(B * H, n, p.g, Dh)

    jl = (torch.arange(n, device=dev)[:, None] - nw) * b + torch.arange((nw + 1) * b, device=dev)[None, :]
    jg = torch.arange(p.g, device=dev)
    mask = torch.cat([
        (jg <= t) & (t - jg >= p.span),                                   # globals outside the window
        p.ok.repeat_interleave(b, dim=1)[:, None, :].expand(n, b, -1),    # random blocks (all earlier)
        (jl[:, None, :] >= 0) & (t - jl[:, None, :] >= 0) & (t - jl[:, None, :] < p.span),   # the window
    ], dim=-1)                                                             # (n, b, keys)
    K = torch.cat([glob(k), rand(k), window(k)], 2)
    V = torch.cat([glob(v), rand(v), window(v)], 2)
    # mask[None]: 4-d, so CPU SDPA takes its flash kernel rather than the math path (transformer.attention)
    a = F.scaled_dot_product_attention(q.view(B * H, n, b, Dh), K, V, attn_mask=mask[None])   # (BH, n, b, Dh)
    return a.reshape(B, H, n * b, Dh)[:, :, :T]


@MODELS.register("sparse_attention", SparseAttentionConfig,
                 "BigBird-style block-sparse causal attention: window + global tokens + random blocks",
                 "Zaheer et al. 2020")
class SparseAttention(Transformer):
    def mix(self, h, state):
        span = span_of(self.window, self.cfg.block)
        for layer, b in enumerate(self.blocks):
            q, k, v = b.project(h)
            h = b.finish(h, sparse_attention(q, k, v, Pattern(h.shape[1], span, self.cfg, layer, h.device)))
        return self.ln(h), None

    def reach(self, seq_len: int, window: int | None) -> int | None:
        # Unbounded (None) with global tokens (every query sees step 0) or random blocks (any
        # earlier block may be drawn); with neither, L stacked windows see L (span - 1) steps back.
        if self.cfg.global_blocks or self.cfg.random_blocks:
            return None
        return self.cfg.n_layers * (span_of(window, self.cfg.block) - 1)

    def state_size(self, seq_len, window):
        # keys and values of every earlier token a query may attend: all of them once random blocks
        # can be drawn anywhere in the past; the globals and the window otherwise
        span = span_of(window, self.cfg.block)
        ctx = seq_len if self.cfg.random_blocks else min(seq_len, self.cfg.global_blocks * self.cfg.block + span)
        return self.cfg.n_layers * 2 * ctx * self.cfg.d_model

    def core_flops(self, seq_len, window):
        p = Pattern(seq_len, span_of(window, self.cfg.block), self.cfg, 0)
        ctx = p.keys * p.n * p.b / seq_len if p.blocked else seq_len    # padded queries included
        return self.cfg.n_layers * block_flops(self.cfg, ctx)
