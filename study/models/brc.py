"""Bistable recurrent cells BRC and nBRC (Vecoven, Ernst & Drion, PLoS ONE 2021).

Legend: B batch, T time steps, D d_model, L layers.

BRC (paper eq. 8, nvecoven/BRC cells.py), with per-neuron recurrent weights w_a, w_c:
    a_t = 1 + tanh(U_a x_t + w_a ⊙ h_{t-1} + b_a)
    c_t = sigmoid(U_c x_t + w_c ⊙ h_{t-1} + b_c)
    h_t = c_t ⊙ h_{t-1} + (1 - c_t) ⊙ tanh(U x_t + a_t ⊙ h_{t-1})      (no candidate bias)
nBRC (eq. 9) replaces w_a ⊙ h and w_c ⊙ h by full matrices W_a h and W_c h. a_t > 1 makes a
neuron bistable, so it can hold a bit indefinitely. Init: U glorot-uniform, biases 0, BRC
w_a = w_c = 1, nBRC W_a, W_c glorot-uniform (the reference code's Keras defaults). The per-step
loop runs in recurrences.py (scripted forward, hand-written backward); `fast = False` runs the plain
autograd loop, the reference the tests compare it with. State: L x D.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from study.models import recurrences
from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class BRCConfig(ModelConfig):
    n_layers: int = Field(2, ge=1)       # the paper's copy-first-input setup: 2 x 128 cells


class _Bistable(SequenceModel):
    recurrent = True
    neuromodulated = False

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d, L = cfg.d_model, cfg.n_layers
        self.inp = nn.ModuleList(nn.Linear(d, 3 * d, bias=False) for _ in range(L))   # U_a, U_c, U stacked
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(2 * d)) for _ in range(L))  # b_a, b_c; no candidate bias
        if self.neuromodulated:
            self.rec = nn.ModuleList(nn.Linear(d, 2 * d, bias=False) for _ in range(L))   # W_a, W_c
        else:
            self.rec = nn.ParameterList(nn.Parameter(torch.ones(2, d)) for _ in range(L))  # w_a, w_c
        self.drop = nn.Dropout(cfg.dropout)
        self.fast = True     # False: the autograd step loop (tests compare the two)
        with torch.no_grad():
            for k in range(L):
                for w in self.inp[k].weight.chunk(3, dim=0):
                    nn.init.xavier_uniform_(w)
                if self.neuromodulated:
                    for w in self.rec[k].weight.chunk(2, dim=0):
                        nn.init.xavier_uniform_(w)

    def init_state(self, batch_size):
        return self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        last = []
        for k in range(self.cfg.n_layers):
            xa, xc, xz = self.inp[k](h).chunk(3, dim=-1)     # 3 x (B, T, D), parallel over time
            ba, bc = self.bias[k].chunk(2)
            xa, xc = xa + ba, xc + bc
            if self.fast:
                w = self.rec[k].weight if self.neuromodulated else self.rec[k]   # (2D, D) or (2, D)
                h = recurrences.brc(xa, xc, xz, w, state[k], self.neuromodulated)
            else:
                hk, outs = state[k], []
                for t in range(h.shape[1]):
                    if self.neuromodulated:
                        ra, rc = self.rec[k](hk).chunk(2, dim=-1)    # W_a h, W_c h
                    else:
                        ra, rc = self.rec[k][0] * hk, self.rec[k][1] * hk
                    a = 1 + torch.tanh(xa[:, t] + ra)
                    c = torch.sigmoid(xc[:, t] + rc)
                    hk = c * hk + (1 - c) * torch.tanh(xz[:, t] + a * hk)
                    outs.append(hk)
                h = torch.stack(outs, dim=1)                  # T x (B, D) -> (B, T, D)
            last.append(h[:, -1])
            if k < self.cfg.n_layers - 1:
                h = self.drop(h)
        return h, torch.stack(last)

    def state_size(self, seq_len, window):
        return self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        rec = 2 * 2 * d * d if self.neuromodulated else 2 * 2 * d
        return self.cfg.n_layers * (2 * d * 3 * d + rec + 8 * d)   # input matmul, recurrence, gating


@MODELS.register("brc", BRCConfig, "bistable recurrent cell (per-neuron feedback)", "Vecoven et al. 2021")
class BRC(_Bistable):
    pass


@MODELS.register("nbrc", BRCConfig, "neuromodulated bistable recurrent cell (full feedback)",
                 "Vecoven et al. 2021")
class NBRC(_Bistable):
    neuromodulated = True
