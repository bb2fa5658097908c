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
* `stable_lstm`: the constants of Miller & Hardt's Prop. 2 were not checked against the paper, so the
  sufficient condition is re-derived here, and made to hold for every input, not only the data
  seen. The forget gate is bounded explicitly: f = f_max sigmoid(.), f_max = lambda^2 < 1, so
  f <= f_max whatever the input (the cell is the standard LSTM otherwise). Then from a zero start
  |c_t| <= f_max |c_{t-1}| + |i z| <= c_inf = 1 / (1 - f_max), and in the max-norm
  max(||dc||_inf, ||dh||_inf), with sigma' <= 1/4, tanh' <= 1 and |i|, |z|, |o|, |tanh c| <= 1:
      |dc'| <= f_max |dc| + (c_inf f_max ||W_f||/4 + ||W_i||/4 + ||W_z||) |dh|
      |dh'| <= |dc'| + ||W_o||/4 |dh|
  so one step is lambda_lstm-Lipschitz in the state with
      lambda_lstm = f_max + c_inf f_max ||W_f||/4 + ||W_i||/4 + ||W_z|| + ||W_o||/4   (inf-norms),
  every term independent of the input. After every step the four recurrent blocks are scaled by
  one factor so that lambda_lstm <= lambda, i.e. the recurrent sum <= lambda - f_max = lambda (1 -
  lambda). No data statistics enter, so no chunk's or batch's sup can be missed. Choice: f_max =
  lambda^2 gives the cell a memory horizon 1 / (1 - lambda^2) of the order of the truncation
  horizon 1 / (1 - lambda) and leaves lambda (1 - lambda) to the recurrent matrix. The bounded
  gate rules out PyTorch's fused kernel: the cell runs a step loop (input projections for the
  whole chunk at once). State: L x 2D.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from study.models.base import SequenceModel
from study.models.rnn import LSTMConfig, RNNConfig, _Fused
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


class ForgetBoundedLSTM(nn.Module):
    """One LSTM layer with f = f_max sigmoid(.): x (B, T, D_in), (h0, c0) (B, D) each ->
    out (B, T, D), (h, c). Gate order i, f, z, o as PyTorch's; init U(-1/sqrt(D), 1/sqrt(D)) as
    nn.LSTM, one bias vector (its forget part set to forget_bias when given)."""

    def __init__(self, d_in: int, d: int, f_max: float, forget_bias: float | None):
        super().__init__()
        self.d, self.f_max = d, f_max
        self.weight_ih = nn.Parameter(torch.empty(4 * d, d_in))
        self.weight_hh = nn.Parameter(torch.empty(4 * d, d))
        self.bias = nn.Parameter(torch.empty(4 * d))
        for w in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(w, -d ** -0.5, d ** -0.5)
        if forget_bias is not None:
            with torch.no_grad():
                self.bias[d:2 * d] = forget_bias

    def forward(self, x, state):
        h, c = state
        gx = x @ self.weight_ih.T + self.bias                       # (B, T, 4D): parallel over time
        outs = []
        # unbind once: indexing gx[:, t] per step makes backward add a full (B, T, 4D) zero
        # gradient per step, O(T^2) (one step at T = 4,096 took 600 s against 9 s at 1,024)
        for g in gx.unbind(1):
            i, f, z, o = (g + h @ self.weight_hh.T).chunk(4, dim=-1)
            c = self.f_max * torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)

    @torch.no_grad()
    def recurrent_sum(self, c_inf: float) -> float:
        """c_inf f_max ||W_f||/4 + ||W_i||/4 + ||W_z|| + ||W_o||/4 (module docstring)."""
        wi, wf, wz, wo = self.weight_hh.chunk(4, dim=0)                 # 4 x (D, D)
        return float(c_inf * self.f_max * inf_norm(wf) / 4 + inf_norm(wi) / 4 + inf_norm(wz) + inf_norm(wo) / 4)


@MODELS.register("stable_lstm", StableLSTMConfig,
                 "LSTM with a bounded forget gate, projected to a contraction for every input after each step",
                 "Miller & Hardt 2019")
class StableLSTM(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d = cfg.d_model
        self.f_max = cfg.contraction ** 2
        self.c_inf = 1.0 / (1.0 - self.f_max)
        self.layers = nn.ModuleList(ForgetBoundedLSTM(d, d, self.f_max, cfg.forget_bias)
                                    for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.after_step()    # start inside the stable set

    def init_state(self, batch_size):
        z = self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)
        return z, z.clone()

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            out, (hn, cn) = layer(h, (state[0][k], state[1][k]))
            hs.append(hn)
            cs.append(cn)
            h = self.drop(out) if k < len(self.layers) - 1 else out
        return h, (torch.stack(hs), torch.stack(cs))

    def bound(self, k: int) -> float:
        """lambda_lstm of layer k: the Lipschitz bound of one step, for every input."""
        return self.f_max + self.layers[k].recurrent_sum(self.c_inf)

    @torch.no_grad()
    def after_step(self) -> None:
        budget = self.cfg.contraction - self.f_max
        for layer in self.layers:
            r = layer.recurrent_sum(self.c_inf)
            if r > budget:
                layer.weight_hh.mul_(budget / r)      # the sum is linear in the blocks' common scale

    def state_size(self, seq_len, window):
        return 2 * self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        return self.cfg.n_layers * 4 * 2 * (2 * d * d)
