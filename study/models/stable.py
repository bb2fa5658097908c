"""Stable recurrent models (Miller & Hardt, ICLR 2019): tanh RNN and LSTM kept lambda-contractive
for every input by a projection after every optimiser step. lambda is the `contraction` parameter.

Legend: B batch, T time steps, D d_model, L layers.

A recurrent model h_t = phi(h_{t-1}, x_t) is lambda-stable when phi is lambda-Lipschitz in h with
lambda < 1 for every input x (Miller & Hardt Def. 1); then it is approximated by a k-truncated
feed-forward model with k = O(log(1/eps) / (1 - lambda)) (their Thm. 1), for inference and
training alike: at lambda = 0.999, k runs to thousands of steps, so `contraction` is the knob a
study sweeps to move that horizon.

* `stable_rnn`: h_t = tanh(W h_{t-1} + U x_t + b) is lambda-contractive in the 2-norm when
  ||W||_2 <= lambda, tanh being 1-Lipschitz (Miller & Hardt sec. 2.2), whatever x; after every
  step the singular values of each layer's W are clipped to lambda (the projection onto the
  spectral-norm ball). State: L x D.
* `stable_lstm`: PAPERS.md marks the constants of Miller & Hardt's Prop. 2 as recalled, so the
  sufficient condition is re-derived here, and made to hold for every input, not only the data
  seen. In the max-norm max(||dc||_inf, ||dh||_inf), with the forget gate bounded by f_max, the
  cell bounded by c_inf and sigma' <= 1/4, tanh' <= 1, |i|, |z|, |o|, |tanh c| <= 1:
      |dc'| <= f_max |dc| + (c_inf ||W_f||/4 + ||W_i||/4 + ||W_z||) |dh|
      |dh'| <= |dc'| + ||W_o||/4 |dh|
  so the step is lambda_lstm-Lipschitz with
      lambda_lstm = f_max + c_inf ||W_f||/4 + ||W_i||/4 + ||W_z|| + ||W_o||/4      (inf-norms).
  Every term is made input-independent:
    - the forget gate is bounded explicitly: f <= f_max = lambda^2 for every input, because the
      projection lowers each forget unit's bias until its largest possible pre-activation
      b_f + ||U_f row||_1 x_max + ||W_f row||_1 (|h| <= 1) is <= logit(f_max). The layer's input
      is bounded for that: tanh of the embedding for the first layer (x_max = 1), the previous
      layer's h for the others (x_max = 1, 1 / (1 - dropout) while dropout scales it);
    - then |c_t| <= f_max |c_{t-1}| + 1, so c_inf = 1 / (1 - f_max) from a zero start;
    - the four recurrent blocks are scaled by one factor so that the rest of the sum is
      <= lambda - f_max = lambda (1 - lambda).
  Choice: f_max = lambda^2 gives the cell a memory horizon 1 / (1 - lambda^2) of the same order
  as the truncation horizon 1 / (1 - lambda), and leaves lambda (1 - lambda) to the recurrent
  matrix. State: L x 2D.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from study.models.base import SequenceModel
from study.models.rnn import LSTMConfig, RNNConfig, _Fused, set_forget_bias
from study.registry import MODELS


class StableConfig(RNNConfig):
    # lambda: strictly below 1 so the truncation bound of Miller & Hardt's Thm. 1 is finite
    contraction: float = Field(0.99, gt=0, lt=1)


class StableLSTMConfig(StableConfig, LSTMConfig):
    pass


def inf_norm(w: torch.Tensor) -> torch.Tensor:
    """Induced infinity norm: the largest absolute row sum."""
    return w.abs().sum(-1).max()


@MODELS.register("stable_rnn", StableConfig, "tanh RNN with ||W_hh||_2 <= contraction projected after each step",
                 "Miller & Hardt 2019")
class StableRNN(_Fused):
    module = nn.RNN

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.after_step()    # start inside the stable set

    @torch.no_grad()
    def after_step(self) -> None:
        for k in range(self.cfg.n_layers):
            w = getattr(self.rnn, f"weight_hh_l{k}")
            u, s, vh = torch.linalg.svd(w)
            w.copy_(u @ torch.diag(s.clamp(max=self.cfg.contraction)) @ vh)


@MODELS.register("stable_lstm", StableLSTMConfig,
                 "LSTM projected to an infinity-norm contraction for every input after each step",
                 "Miller & Hardt 2019")
class StableLSTM(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d = cfg.d_model
        # one module per layer: each layer's projection needs its own input bound
        self.layers = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(cfg.n_layers))
        for lstm in self.layers:
            set_forget_bias(lstm, cfg.forget_bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.f_max = cfg.contraction ** 2
        self.c_inf = 1.0 / (1.0 - self.f_max)
        self.after_step()    # start inside the stable set

    def init_state(self, batch_size):
        z = self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)
        return z, z.clone()

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        h = torch.tanh(h)     # a bounded input, so the forget gate's bound holds for every input
        hs, cs = [], []
        for k, lstm in enumerate(self.layers):
            out, (hn, cn) = lstm(h, (state[0][k:k + 1], state[1][k:k + 1]))     # (1, B, D) states
            hs.append(hn)
            cs.append(cn)
            h = self.drop(out) if k < len(self.layers) - 1 else out
        return h, (torch.cat(hs), torch.cat(cs))

    def x_max(self, k: int) -> float:
        """Bound on |x| entering layer k: tanh'd input, or the previous h (scaled by dropout)."""
        return 1.0 if k == 0 or self.cfg.dropout == 0 else 1.0 / (1.0 - self.cfg.dropout)

    @torch.no_grad()
    def bound(self, k: int) -> float:
        """lambda_lstm of layer k (module docstring), with f_max the forget gate's largest value
        over every input and |h| <= 1."""
        lstm = self.layers[k]
        wi, wf, wz, wo = lstm.weight_hh_l0.chunk(4, dim=0)                  # 4 x (D, D)
        uf = lstm.weight_ih_l0.chunk(4, dim=0)[1]
        bf = lstm.bias_ih_l0.chunk(4)[1] + lstm.bias_hh_l0.chunk(4)[1]
        f_sup = torch.sigmoid((bf + uf.abs().sum(1) * self.x_max(k) + wf.abs().sum(1)).max())
        r = max(self.c_inf, 1.0 / (1.0 - float(f_sup))) * inf_norm(wf) / 4 + inf_norm(wi) / 4 \
            + inf_norm(wz) + inf_norm(wo) / 4
        return float(f_sup) + float(r)

    @torch.no_grad()
    def after_step(self) -> None:
        lam, logit = self.cfg.contraction, math.log(self.f_max / (1.0 - self.f_max))
        for k, lstm in enumerate(self.layers):
            w = lstm.weight_hh_l0
            wi, wf, wz, wo = w.chunk(4, dim=0)
            r = self.c_inf * inf_norm(wf) / 4 + inf_norm(wi) / 4 + inf_norm(wz) + inf_norm(wo) / 4
            budget = lam - self.f_max
            if r > budget:
                w.mul_(budget / float(r))          # the sum is linear in the scale of the blocks
            # then the forget gate: lower each unit's bias by what its largest pre-activation exceeds
            uf = lstm.weight_ih_l0.chunk(4, dim=0)[1]
            bf_ih, bf_hh = lstm.bias_ih_l0.chunk(4)[1], lstm.bias_hh_l0.chunk(4)[1]
            sup = bf_ih + bf_hh + uf.abs().sum(1) * self.x_max(k) + w.chunk(4, dim=0)[1].abs().sum(1)
            bf_ih.sub_((sup - logit).clamp(min=0))

    def state_size(self, seq_len, window):
        return 2 * self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        return self.cfg.n_layers * 4 * 2 * (2 * d * d)
