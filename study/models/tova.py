"""TOVA: a Transformer run as a multi-state RNN with a bounded KV state (Oren, Hassid, Yarden, Adi &
Schwartz 2024, "Transformers are Multi-State RNNs").

Legend: B batch, T time steps, D d_model, H heads, Dh = D/H, S tokens held in a layer's cache.

The KV cache is the state of an unbounded multi-state RNN; capping it at `window` tokens per layer
makes it a finite one. Token-Omission Via Attention (TOVA, schwartz-lab-NLP/TOVA tova_cache.py):
at each step the new token's key and value join the layer's cache, the current query attends over
all of them, and if the cache now holds more than the budget, the token with the lowest attention
weight from that query, averaged over heads, is dropped: per layer, possibly the new token itself.

Why `recurrent = True`: the cache is a genuine carried state, so evaluation streams arbitrarily long
sequences in O(budget) memory, and the trainer runs it in chunks of `window` (= the budget) carrying
the cache with the gradient cut at chunk boundaries, as Transformer-XL does with its cached segment
(Dai et al. 2019): cached keys and values are constants for later chunks. Weights and layers are
`transformer`'s (same Block, same parameter names), so a budget >= seq_len (or `full`) computes
exactly `transformer`. Tokens while the cache is below the budget are processed in parallel; once
it is full, each token is a step (its eviction depends on the previous ones).
State: L x 2 x min(window, T) x D floats (plus the position counter).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from study.models.transformer import Transformer, TransformerConfig
from study.registry import MODELS


class TOVAConfig(TransformerConfig):
    pass


def evict(K: torch.Tensor, V: torch.Tensor, weights: torch.Tensor):
    """Drop, per sequence, the cached token with the lowest head-averaged weight.
    K, V (B, H, S, Dh); weights (B, H, S) -> K, V (B, H, S - 1, Dh)."""
    B, H, S, Dh = K.shape
    drop = weights.mean(1).argmin(-1)                                       # (B,)
    keep = torch.arange(S, device=K.device)[None, :] != drop[:, None]       # (B, S), order kept
    idx = torch.arange(S, device=K.device).expand(B, S)[keep].view(B, S - 1)
    idx = idx[:, None, :, None].expand(B, H, S - 1, Dh)
    return K.gather(2, idx), V.gather(2, idx)


@MODELS.register("tova", TOVAConfig, "transformer as a multi-state RNN, KV budget = window, TOVA eviction",
                 "Oren et al. 2024")
class TOVA(Transformer):
    recurrent = True

    def reach(self, seq_len, window):
        # the KV budget: tokens a layer holds. Not a distance bound (a kept token can be arbitrarily
        # old), but what the state can see at once; None = the whole sequence
        return window

    def init_state(self, batch_size):
        d, H, L = self.cfg.d_model, self.cfg.n_heads, self.cfg.n_layers
        empty = self.embed.weight.new_zeros(batch_size, H, 0, d // H)
        return {"k": [empty] * L, "v": [empty] * L, "pos": 0}

    def mix(self, h, state):
        B, T, _ = h.shape
        if state is None:
            state = self.init_state(B)
        budget, pos, ks, vs = self.window, state["pos"], [], []
        for layer, b in enumerate(self.blocks):
            K, V = state["k"][layer], state["v"][layer]                     # (B, H, S, Dh)
            q, k, v = b.project(h, offset=pos)                              # 3 x (B, H, T, Dh)
            S = K.shape[2]
            fit = T if budget is None else max(0, min(T, budget - S))      # steps with no eviction
            outs = []
            if fit:
                if S == 0:    # exactly transformer's computation
                    a = F.scaled_dot_product_attention(q[:, :, :fit], k[:, :, :fit], v[:, :, :fit], is_causal=True)
                else:         # queries see the whole cache and the chunk causally
                    i = torch.arange(fit, device=h.device)[:, None]
                    j = torch.arange(S + fit, device=h.device)[None, :]
                    a = F.scaled_dot_product_attention(q[:, :, :fit], torch.cat([K, k[:, :, :fit]], 2),
                                                       torch.cat([V, v[:, :, :fit]], 2), attn_mask=j - S <= i)
                K, V = torch.cat([K, k[:, :, :fit]], 2), torch.cat([V, v[:, :, :fit]], 2)
                outs.append(a)
            scale = 1.0 / math.sqrt(q.shape[-1])
            for t in range(fit, T):
                K, V = torch.cat([K, k[:, :, t:t + 1]], 2), torch.cat([V, v[:, :, t:t + 1]], 2)
                w = torch.softmax((q[:, :, t:t + 1] @ K.transpose(-1, -2)) * scale, dim=-1)   # (B, H, 1, S+1)
                outs.append(w @ V)                                          # (B, H, 1, Dh)
                if K.shape[2] > budget:
                    K, V = evict(K, V, w[:, :, 0])
            ks.append(K)
            vs.append(V)
            h = b.finish(h, torch.cat(outs, 2))
        return self.ln(h), {"k": ks, "v": vs, "pos": pos + T}
