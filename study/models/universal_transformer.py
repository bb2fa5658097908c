"""Universal Transformer with adaptive computation time (Dehghani, Gouws, Vinyals, Uszkoreit &
Kaiser, ICLR 2019; ACT from Graves 2016).

Legend: B batch, T time steps, D d_model, K = max_hops.

One shared stack of `n_layers` pre-norm causal attention blocks (`transformer`'s Block, sliding
window `window`) is applied up to K times. Before every hop the coordinate signal P^t (sinusoidal
position plus sinusoidal hop index, UT paper eq. 4-5) is added to the state. ACT, per position,
following tensor2tensor's `universal_transformer_act`:
    p = sigmoid(w . s + b), b initialised to 1
    a position halts at the first hop where the running sum of p would exceed 1 - 0.01, or at hop K;
    that hop gets the remainder R = 1 - sum of earlier p, the others their p
    output = sum over hops of weight x transformed state;  ponder cost = mean(N + R)
(N the hops used). The ponder cost times `ponder_weight` (0.01 in t2t) is left in `self.aux_loss`
after every forward; the trainer adds it to the task loss. Not recurrent: the whole sequence is
seen at once. State: the KV cache of every hop, K x L x 2 x min(window, T) x D.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from study.models.base import SequenceModel
from study.models.transformer import Block, TransformerConfig, block_flops, sinusoid
from study.registry import MODELS

THRESHOLD = 1.0 - 0.01     # t2t act_epsilon = 0.01


class UTConfig(TransformerConfig):
    n_layers: int = Field(1, ge=1)           # distinct blocks in the shared stack (t2t: 1)
    max_hops: int = Field(4, ge=1)           # K: t2t sets act_max_steps = 2 x num_hidden_layers
    ponder_weight: float = Field(0.01, ge=0)  # t2t act_loss_weight


@MODELS.register("universal_transformer", UTConfig,
                 "one shared attention layer repeated, adaptive computation time", "Dehghani et al. 2019")
class UniversalTransformer(SequenceModel):
    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.blocks = nn.ModuleList(Block(cfg, rotary_positions=False) for _ in range(cfg.n_layers))
        self.halt = nn.Linear(cfg.d_model, 1)
        nn.init.constant_(self.halt.bias, 1.0)   # t2t act_halting_bias_init: start by pondering little
        self.ln = nn.LayerNorm(cfg.d_model)
        self.hops_used = 0                       # hops the last forward ran (ACT may stop early)

    def mix(self, s, state):
        B, T, D = s.shape
        pos = sinusoid(torch.arange(T, device=s.device, dtype=s.dtype), D)          # (T, D)
        hops = sinusoid(torch.arange(self.cfg.max_hops, device=s.device, dtype=s.dtype), D)   # (K, D)
        halt = s.new_zeros(B, T)          # running sum of p
        rem = s.new_zeros(B, T)           # remainders R
        n_upd = s.new_zeros(B, T)         # hops used N
        done = torch.zeros(B, T, dtype=torch.bool, device=s.device)
        out = torch.zeros_like(s)
        for t in range(self.cfg.max_hops):
            if done.all():                # the rest would have weight 0 everywhere
                break
            s = s + pos + hops[t]
            p = torch.sigmoid(self.halt(s))[..., 0]                                 # (B, T)
            run = (~done).to(s.dtype)
            cross = (halt + p * run > THRESHOLD) | (t == self.cfg.max_hops - 1)
            new_halted = cross.to(s.dtype) * run
            still = (~cross).to(s.dtype) * run
            halt = halt + p * still
            rem = rem + new_halted * (1 - halt)
            n_upd = n_upd + still + new_halted
            w = (p * still + new_halted * rem)[..., None]                           # (B, T, 1)
            for b in self.blocks:
                s = b(s, self.window)
            # t2t's update, not a plain sum over hops: new = transformed w + previous (1 - w)
            out = s * w + out * (1 - w)
            done = done | cross
            self.hops_used = t + 1
        self.aux_loss = self.cfg.ponder_weight * (n_upd + rem).mean()
        return self.ln(out), None

    def reach(self, seq_len, window):
        # the shared stack runs up to max_hops times: window - 1 steps per layer per hop
        return None if window is None else self.cfg.max_hops * self.cfg.n_layers * (window - 1)

    def state_size(self, seq_len, window):
        ctx = seq_len if window is None else min(window, seq_len)
        return self.cfg.max_hops * self.cfg.n_layers * 2 * ctx * self.cfg.d_model

    def core_flops(self, seq_len, window):
        # an upper bound: every hop runs (ACT may stop the whole batch earlier)
        ctx = seq_len if window is None else min(window, seq_len)
        return self.cfg.max_hops * (self.cfg.n_layers * block_flops(self.cfg, ctx) + 2 * self.cfg.d_model)
