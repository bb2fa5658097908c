"""Transformer-XL (Dai, Yang, Yang, Carbonell, Le & Salakhutdinov, ACL 2019) and its gated variant
GTrXL (Parisotto, Song, Rae, Pascanu, Gulcehre, Jayakumar, Jaderberg, Kaufman, Clark, Noury,
Botvinick, Heess & Hadsell 2019, "Stabilizing Transformers for Reinforcement Learning").
Reference code read, not copied: kimiyoung/transformer-xl (pytorch/mem_transformer.py).

Legend: B batch, T time steps in the current segment, D d_model, H heads, Dh = D/H, L layers,
S steps cached per layer, M = window - 1 the memory length.

Segment-level recurrence (Dai et al. sec. 3.2): each layer caches its own input hidden states of
the last M steps; the next segment's keys and values are computed from [cache ∘ segment], its
queries from the segment alone:
    h~ = [SG(m^{n-1}) ∘ h^{n-1}],  q = W_q h^{n-1},  k, v = W_k h~, W_v h~,
so information climbs one memory length per layer: the reach is L x M (+1, the query itself).
The cache is the carried state; SG, the stop-gradient on it, is the trainer's `detach_state` at
every TBPTT segment boundary (training runs segments of `window` steps, as Dai et al. train
segments of tgt_len with mem_len memory), and evaluation streams any length in O(L M D) memory.

Every query sees itself and the M = window - 1 steps before it, whatever the segment boundaries:
Dai et al.'s `same_length` attention mask (mem_transformer.py, used at evaluation). This makes a
pass over segments with the cache exactly equal to one pass over the whole sequence with a banded
mask of width `window` (the tests check it): the segments change the gradient, not the values.
With `full` (no window) the cache keeps every earlier step and the model is a causal transformer.

Choices that differ from the paper, so that `transformer_xl` differs from `transformer` only by
the recurrence: the zoo's pre-norm Block and rotary positions (Su et al. 2021), which are relative
too (a score depends on i - j only), in place of Dai et al.'s post-norm layers and sinusoidal
relative encoding with the u, v biases (sec. 3.3).

GTrXL (Parisotto et al. sec. 3): identity-map reordering (pre-norm, a ReLU on each sub-layer's
output) and a GRU-type gate in place of each residual connection,
    r = σ(W_r y + U_r x),  z = σ(W_z y + U_z x - b_g),  ĥ = tanh(W_g y + U_g (r ⊙ x)),
    g(x, y) = (1 - z) ⊙ x + z ⊙ ĥ,
b_g = 2 initially, so each layer starts close to the identity (Parisotto et al. found a positive b_g
to speed up learning markedly). State: L x min(M, T) x D floats (hidden states, half a KV cache).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from study.models.transformer import BLOCK, Block, Transformer, TransformerConfig, attention, block_flops
from study.registry import MODELS


class TransformerXLConfig(TransformerConfig):
    pass


class GTrXLConfig(TransformerConfig):
    gate_bias: float = Field(2.0)           # b_g > 0: start near the identity map


class GRUGate(nn.Module):
    """g(x, y) of Parisotto et al. sec. 3: x the residual stream, y the sub-layer's output."""

    def __init__(self, d: int, bias: float):
        super().__init__()
        self.w = nn.Linear(d, 3 * d, bias=False)     # W_r, W_z, W_g on y
        self.u = nn.Linear(d, 2 * d, bias=False)     # U_r, U_z on x
        self.ug = nn.Linear(d, d, bias=False)        # U_g on r ⊙ x
        self.bg = nn.Parameter(torch.full((d,), bias))

    def forward(self, x, y):
        wr, wz, wg = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u(x).chunk(2, dim=-1)
        r, z = torch.sigmoid(wr + ur), torch.sigmoid(wz + uz - self.bg)
        return (1 - z) * x + z * torch.tanh(wg + self.ug(r * x))


class GatedBlock(Block):
    def __init__(self, cfg: GTrXLConfig):
        super().__init__(cfg)
        self.gate1, self.gate2 = GRUGate(cfg.d_model, cfg.gate_bias), GRUGate(cfg.d_model, cfg.gate_bias)

    def finish(self, x, a):
        B, T, D = x.shape
        x = self.gate1(x, F.relu(self.drop(self.out(a.transpose(1, 2).reshape(B, T, D)))))
        return self.gate2(x, F.relu(self.drop(self.ff(self.ln2(x)))))


@MODELS.register("transformer_xl", TransformerXLConfig,
                 "segment recurrence: attention over a cache of the last window - 1 hidden states per layer",
                 "Dai et al. 2019")
class TransformerXL(Transformer):
    recurrent = True
    gates = 0        # GRU gates per layer (GTrXL: 2)

    def init_state(self, batch_size):
        empty = self.embed.weight.new_zeros(batch_size, 0, self.cfg.d_model)
        return {"mem": [empty] * self.cfg.n_layers, "pos": 0}

    def attend(self, q, k, v, S: int) -> torch.Tensor:
        """q, k, v (B, H, S + T, Dh) over the S cached and T new steps -> (B, H, T, Dh) for the new."""
        T, w = q.shape[2] - S, self.window
        if S == 0 or (w is not None and T > 2 * max(w, BLOCK)):    # long: transformer's blockwise path
            return attention(q, k, v, w)[:, :, S:]
        d = (torch.arange(T, device=q.device)[:, None] + S) - torch.arange(S + T, device=q.device)[None, :]
        mask = (d >= 0) if w is None else (d >= 0) & (d < w)       # same_length: itself + w - 1 back
        return F.scaled_dot_product_attention(q[:, :, S:], k, v, attn_mask=mask)

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        T, keep, pos, mems = h.shape[1], None if self.window is None else self.window - 1, state["pos"], []
        for layer, b in enumerate(self.blocks):
            mem = state["mem"][layer]                                  # (B, S, D): this layer's inputs
            S = mem.shape[1]
            x = torch.cat([mem, h], 1) if S else h                     # (B, S + T, D)
            mems.append(x if keep is None else x[:, max(0, S + T - keep):])
            q, k, v = b.project(x, offset=pos - S)                     # rotary at the true positions
            h = b.finish(h, self.attend(q, k, v, S))
        return self.ln(h), {"mem": mems, "pos": pos + T}

    def reach(self, seq_len: int, window: int | None) -> int | None:
        # n_layers x memory length (window - 1 cached steps a layer); unbounded when the cache keeps everything
        return None if window is None else self.cfg.n_layers * (window - 1)

    def state_size(self, seq_len, window):
        mem = seq_len if window is None else min(window - 1, seq_len)
        return self.cfg.n_layers * mem * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        if window is None or window >= seq_len:      # one segment: transformer's work
            layer = block_flops(self.cfg, seq_len)
        else:   # segments of `window` queries over window - 1 cached + window new keys (masked
            S = window - 1   # scores computed too), plus q, k, v recomputed for the cached steps
            layer = block_flops(self.cfg, window + S) + 2 * 3 * d * d * S / window
        return self.cfg.n_layers * (layer + self.gates * 6 * 2 * d * d)


@MODELS.register("gtrxl", GTrXLConfig,
                 "Transformer-XL with GRU-type gates in place of the residual connections",
                 "Parisotto et al. 2019")
class GTrXL(TransformerXL):
    gates = 2

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.blocks = nn.ModuleList(GatedBlock(cfg) for _ in range(cfg.n_layers))
