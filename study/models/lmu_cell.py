"""The Legendre Memory Unit cell in its original recurrent form (Voelker, Kajić & Eliasmith 2019).

Legend: B batch, T time steps, D d_model, N memory_size (order).

Unlike `lmu` (the parallel form of Chilkuri & Eliasmith 2021), the memory's input depends on the
previous hidden state and memory, so it runs one step at a time (Voelker et al. 2019, abr/neurips2019
lmu.py):
    u_t = e_x . x_t + e_h . h_{t-1} + e_m . m_{t-1}                 (scalar memory input)
    m_t = Abar m_{t-1} + Bbar u_t                                     (frozen ZOH A, B; lmu.py)
    h_t = tanh(W_x x_t + W_h h_{t-1} + W_m m_t)
Initialisation as the psMNIST setup: e_x = 1, e_h = e_m = 0, W_x = W_h = 0, W_m Xavier. State per
layer: h (D) and m (N).
"""
from __future__ import annotations

import torch
from torch import nn

from study.models.base import SequenceModel
from study.models.lmu import LegendreMemory, LMUConfig
from study.registry import MODELS


class LMUCellLayer(nn.Module):
    def __init__(self, cfg: LMUConfig, theta: float):
        super().__init__()
        d, N = cfg.d_model, cfg.memory_size
        self.memory = LegendreMemory(N, theta)                 # only its Abar, Bbar are used
        self.e_x = nn.Parameter(torch.ones(d))
        self.e_h = nn.Parameter(torch.zeros(d))
        self.e_m = nn.Parameter(torch.zeros(N))
        self.W_x = nn.Linear(d, d, bias=False)
        self.W_h = nn.Linear(d, d, bias=False)
        self.W_m = nn.Linear(N, d)
        for w in (self.W_x.weight, self.W_h.weight):
            nn.init.zeros_(w)
        nn.init.xavier_uniform_(self.W_m.weight)
        nn.init.zeros_(self.W_m.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor, m: torch.Tensor):
        """x (B, T, D); h (B, D), m (B, N) -> outputs (B, T, D) and the last h, m."""
        Abar, Bbar = self.memory.Abar, self.memory.Bbar[:, 0]
        # input parts, parallel over time; unbound once, since indexing a step at a time would make
        # the backward write T full-size gradient buffers (quadratic in T)
        ux = (x @ self.e_x).unbind(1)                           # T x (B,)
        wx = self.W_x(x).unbind(1)                              # T x (B, D)
        out = []
        for t in range(x.shape[1]):
            u = ux[t] + h @ self.e_h + m @ self.e_m             # (B,)
            m = m @ Abar.T + u[:, None] * Bbar                  # (B, N)
            h = torch.tanh(wx[t] + self.W_h(h) + self.W_m(m))
            out.append(h)
        return torch.stack(out, dim=1), h, m


@MODELS.register("lmu_cell", LMUConfig, "Legendre memory cell with h/m feedback, recurrent form",
                 "Voelker et al. 2019")
class LMUCell(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        if cfg.memory_d != 1:
            raise ValueError("lmu_cell writes one channel to its memory (memory_d = 1), as the paper")
        self.theta = float(cfg.theta or seq_len)
        self.layers = nn.ModuleList(LMUCellLayer(cfg, self.theta) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)

    def init_state(self, batch_size):
        w = self.embed.weight
        L, d, N = self.cfg.n_layers, self.cfg.d_model, self.cfg.memory_size
        return w.new_zeros(L, batch_size, d), w.new_zeros(L, batch_size, N)

    def mix(self, x, state):
        hs, ms = self.init_state(x.shape[0]) if state is None else state
        new_h, new_m = [], []
        for k, layer in enumerate(self.layers):
            x, h, m = layer(x, hs[k], ms[k])
            new_h.append(h)
            new_m.append(m)
            if k < len(self.layers) - 1:
                x = self.drop(x)
        return x, (torch.stack(new_h), torch.stack(new_m))

    def state_size(self, seq_len, window):
        return self.cfg.n_layers * (self.cfg.d_model + self.cfg.memory_size)

    def core_flops(self, seq_len, window):
        d, N = self.cfg.d_model, self.cfg.memory_size
        # per step: e_x, e_h (2d each), e_m (2N), Abar m (2N^2) + Bbar u (2N), W_x, W_h (2d^2 each), W_m (2dN)
        return self.cfg.n_layers * (4 * d + 4 * N + 2 * N * N + 4 * d * d + 2 * d * N)
