"""Stable recurrent models (Miller & Hardt, ICLR 2019): tanh RNN and LSTM kept lambda-contractive
by projecting the recurrent weights after every optimiser step.

Legend: B batch, T time steps, D d_model, L layers.

A recurrent model h_t = phi(h_{t-1}, x_t) is lambda-stable when phi is lambda-Lipschitz in h with
lambda < 1 (Miller & Hardt Def. 1); then it is approximated by a k-truncated feed-forward model with
k = O(log(1/eps) / (1 - lambda)) (their Thm. 1), for inference and training alike.

* `stable_rnn`: h_t = tanh(W h_{t-1} + U x_t + b) is lambda-contractive when ||W||_2 <= lambda,
  tanh being 1-Lipschitz (Miller & Hardt sec. 2.2); after every step the singular values of each
  layer's W are clipped to lambda (the projection onto the spectral-norm ball). State: L x D.
* `stable_lstm`: the LSTM is contractive in the infinity norm under a condition on the gate
  matrices (Miller & Hardt Prop. 2, an infinity-norm condition driven by the forget gate). PAPERS.md
  marks its constants as recalled, so the sufficient condition used here is re-derived: with
  f_inf = sup_t ||f_t||_inf, c_inf = sup_t ||c_t||_inf and sigma' <= 1/4,
      lambda_lstm = f_inf + c_inf ||W_f||/4 + ||W_i||/4 + ||W_z|| + ||W_o||/4 < 1     (inf-norms)
  bounds the Lipschitz constant of (c, h) -> (c', h') in max(||dc||, ||dh||). f_inf and
  c_inf <= max(|c_0|, i_inf / (1 - f_inf)) are measured on the latest training batch (the paper's
  sup over the data); after every step the four recurrent blocks are scaled by one factor so the
  bound is <= lambda. If the forget gate alone already reaches lambda the recurrent matrix is
  zeroed (the cell then keeps only its f-contractive cell memory). State: L x 2D.
"""
from __future__ import annotations

import torch
from torch import nn

from study.models.base import SequenceModel
from study.models.rnn import RNNConfig, _Fused
from study.registry import MODELS

LAMBDA = 0.999   # contraction target: strictly below 1 so the truncation bound of Thm. 1 is finite


def inf_norm(w: torch.Tensor) -> torch.Tensor:
    """Induced infinity norm: the largest absolute row sum."""
    return w.abs().sum(-1).max()


@MODELS.register("stable_rnn", RNNConfig, "tanh RNN with ||W_hh||_2 <= 0.999 projected after each step",
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
            w.copy_(u @ torch.diag(s.clamp(max=LAMBDA)) @ vh)


@MODELS.register("stable_lstm", RNNConfig, "LSTM projected to an infinity-norm contraction after each step",
                 "Miller & Hardt 2019")
class StableLSTM(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d = cfg.d_model
        # one module per layer: the constraint needs each layer's own input to measure its gates
        self.layers = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.stats: list[tuple[float, float] | None] = [None] * cfg.n_layers   # (f_inf, c_inf) per layer

    def init_state(self, batch_size):
        z = self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)
        return z, z.clone()

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        hs, cs = [], []
        for k, lstm in enumerate(self.layers):
            h0, c0 = state[0][k:k + 1], state[1][k:k + 1]              # (1, B, D)
            out, (hn, cn) = lstm(h, (h0, c0))
            if self.training:
                self.stats[k] = self.gate_stats(lstm, h, h0, c0, out)
            hs.append(hn)
            cs.append(cn)
            h = self.drop(out) if k < len(self.layers) - 1 else out
        return h, (torch.cat(hs), torch.cat(cs))

    @staticmethod
    @torch.no_grad()
    def gate_stats(lstm, x, h0, c0, out) -> tuple[float, float]:
        """f_inf and a bound on c_inf for this batch, recomputing the gates in parallel from the
        known h_{t-1} sequence (nn.LSTM's fused kernel does not return them)."""
        h_prev = torch.cat([h0.transpose(0, 1), out[:, :-1]], dim=1)    # (B, T, D)
        pre = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h_prev @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, _, _ = torch.sigmoid(pre).chunk(4, dim=-1)                 # PyTorch gate order i, f, g, o
        f_inf, i_inf = float(f.max()), float(i.max())
        c_inf = max(float(c0.abs().max()), i_inf / max(1.0 - f_inf, 1e-12))
        return f_inf, c_inf

    @torch.no_grad()
    def contraction(self, k: int) -> float | None:
        """The bound lambda_lstm of layer k (module docstring), or None before any training batch."""
        if self.stats[k] is None:
            return None
        f_inf, c_inf = self.stats[k]
        wi, wf, wz, wo = self.layers[k].weight_hh_l0.chunk(4, dim=0)     # 4 x (D, D)
        r = c_inf * inf_norm(wf) / 4 + inf_norm(wi) / 4 + inf_norm(wz) + inf_norm(wo) / 4
        return f_inf + float(r)

    @torch.no_grad()
    def after_step(self) -> None:
        for k, lstm in enumerate(self.layers):
            lam = self.contraction(k)
            if lam is None or lam <= LAMBDA:
                continue
            f_inf = self.stats[k][0]
            scale = max(0.0, (LAMBDA - f_inf) / (lam - f_inf))   # lambda is affine in the scale
            lstm.weight_hh_l0.mul_(scale)

    def state_size(self, seq_len, window):
        return 2 * self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        return self.cfg.n_layers * 4 * 2 * (2 * d * d)
