"""Independently recurrent neural network (Li, Li, Cook, Zhu & Gao, CVPR 2018).

Legend: B batch, T time steps, D d_model, L layers.

Each neuron has a single scalar recurrent weight (paper eq. 2):
    h_t = relu(W x_t + u ⊙ h_{t-1} + b)
so the gradient through n steps of neuron j is u_j^n times the relu gates: memory is set per neuron
by |u_j|, kept in [-2^(1/T), 2^(1/T)] (a neuron may at most double over T steps, paper sec. 3.1).
Setup from the paper's adding code (IndRNN_Theano_Lasagne/adding/adding.py): stacked layers,
W ~ N(0, 0.001), u ~ U(0, 2^(1/T)) for the lower layers and U(0.5^(1/T), 2^(1/T)) for the last, and
u clipped to its range after every update (here: `after_step`). T is the cell's training seq_len.
Gradient clipping as that code does it: Lasagne's grad_clipping=10 clips the gradient with respect
to each step's pre-activation p_t = W x_t + b + u ⊙ h_{t-1}, elementwise, to [-10, 10] as it flows
back through time (`step_grad_clip`; the script's clip of the parameter gradients is commented
out). A global-norm clip (TrainConfig's `grad_clip`) instead rescales the whole parameter gradient
once per step: it bounds the update's size but not one step's share of the backpropagated signal,
and a spec can set either, both, or neither (`grad_clip: null`, `step_grad_clip: null`).
The per-step loop runs in recurrences.py (scripted forward, hand-written backward); `fast = False`
runs the plain autograd loop, the reference the tests compare it with. State: L x D.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from study.models import recurrences
from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class IndRNNConfig(ModelConfig):
    n_layers: int = Field(2, ge=1)       # the paper's adding setup: 2 layers
    # the paper's gradient clipping: dL/d(pre-activation) clipped to [-10, 10] at every step
    # (Lasagne grad_clipping=10); None: off. TrainConfig's grad_clip (global norm) acts on top.
    step_grad_clip: float | None = Field(10.0, gt=0)


@MODELS.register("indrnn", IndRNNConfig, "independently recurrent ReLU RNN, |u| <= 2^(1/T) clipped",
                 "Li et al. 2018")
class IndRNN(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d, L = cfg.d_model, cfg.n_layers
        self.u_max = 2.0 ** (1.0 / seq_len)
        self.inp = nn.ModuleList(nn.Linear(d, d) for _ in range(L))    # W and b of each layer
        self.u = nn.ParameterList(nn.Parameter(torch.empty(d)) for _ in range(L))
        self.drop = nn.Dropout(cfg.dropout)
        self.fast = True     # False: the autograd step loop (tests compare the two)
        with torch.no_grad():
            for k in range(L):
                nn.init.normal_(self.inp[k].weight, 0.0, 0.001)
                nn.init.zeros_(self.inp[k].bias)
                lo = 0.5 ** (1.0 / seq_len) if k == L - 1 else 0.0
                nn.init.uniform_(self.u[k], lo, self.u_max)

    def init_state(self, batch_size):
        return self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        last = []
        for k in range(self.cfg.n_layers):
            wx = self.inp[k](h)                     # (B, T, D): the input part is parallel over time
            clip = self.cfg.step_grad_clip
            if self.fast:
                h = recurrences.indrnn(wx, self.u[k], state[k], clip)
            else:
                hk, u, outs = state[k], self.u[k], []
                for t in range(wx.shape[1]):        # the ReLU makes the recurrence sequential
                    p = wx[:, t] + u * hk
                    if clip is not None and p.requires_grad:
                        p.register_hook(lambda g, c=clip: g.clamp(-c, c))
                    hk = torch.relu(p)
                    outs.append(hk)
                h = torch.stack(outs, dim=1)        # T x (B, D) -> (B, T, D)
            last.append(h[:, -1])
            if k < self.cfg.n_layers - 1:
                h = self.drop(h)
        return h, torch.stack(last)

    @torch.no_grad()
    def after_step(self) -> None:
        for u in self.u:
            u.clamp_(-self.u_max, self.u_max)

    def state_size(self, seq_len, window):
        return self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        return self.cfg.n_layers * (2 * d * d + 2 * d)   # input matmul, then u ⊙ h plus the add
