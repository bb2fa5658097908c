"""Layer-normalised LSTM (Ba, Kiros & Hinton 2016, "Layer Normalization": the layer-normalised
LSTM of their experiments).

Legend: B batch, T time steps, D d_model, L layers.

Per layer and step, with LN(z; α, β) normalising z over its features (mean 0, variance 1), then
gain α and bias β:
    (f, i, o, g) = LN(W_h h_{t-1}; α1, β1) + LN(W_x x_t; α2, β2) + b       (one 4D vector each)
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
    h_t = σ(o) ⊙ tanh(LN(c_t; α3, β3))
The two pre-activation terms are normalised separately, over the whole 4D vector, as in the paper
(TensorFlow's LayerNormBasicLSTMCell normalises each gate instead); gains start at 1, biases at 0.
Recurrent: `window` is the TBPTT chunk, the state (h, c) per layer carries between chunks.
LN(W_x x_t) does not depend on the recurrence, so it is computed for the whole chunk at once; a
plain Python step loop under autograd does the rest (TorchScript was tried: its first calls spent
seconds compiling and it was no faster afterwards, d_model 32, T 200, on the 2-core CPU). State: L x 2D.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class LayerNormLSTMConfig(ModelConfig):
    pass


def cell_loop(xn: torch.Tensor, w_h: torch.Tensor, a1: torch.Tensor, b1: torch.Tensor,
              a3: torch.Tensor, b3: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """xn (T, B, 4D): LN(W_x x_t) + b, already computed. Returns h (T, B, D) and the last (h, c)."""
    out = []
    D = h.shape[-1]
    for x_t in xn.unbind(0):      # unbound once: indexing xn[t] per step makes the backward quadratic
        z = F.layer_norm(h @ w_h.t(), [4 * D], a1, b1) + x_t
        f, i, o, g = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, [D], a3, b3))
        out.append(h)
    return torch.stack(out), h, c


class LNLSTMLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        k = d ** -0.5                       # nn.LSTM's init range for the weights
        self.w_x = nn.Parameter(torch.empty(4 * d, d).uniform_(-k, k))
        self.w_h = nn.Parameter(torch.empty(4 * d, d).uniform_(-k, k))
        self.bias = nn.Parameter(torch.zeros(4 * d))
        self.ln_h, self.ln_x, self.ln_c = nn.LayerNorm(4 * d), nn.LayerNorm(4 * d), nn.LayerNorm(d)

    def forward(self, x, h, c):
        """x (B, T, D), h, c (B, D) -> (B, T, D), h, c."""
        xn = (self.ln_x(x @ self.w_x.t()) + self.bias).transpose(0, 1)      # (T, B, 4D)
        out, h, c = cell_loop(xn, self.w_h, self.ln_h.weight, self.ln_h.bias,
                              self.ln_c.weight, self.ln_c.bias, h, c)
        return out.transpose(0, 1), h, c


@MODELS.register("layernorm_lstm", LayerNormLSTMConfig, "LSTM with layer-normalised gates and cell",
                 "Ba, Kiros & Hinton 2016")
class LayerNormLSTM(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.layers = nn.ModuleList(LNLSTMLayer(cfg.d_model) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)

    def init_state(self, batch_size):
        z = self.embed.weight.new_zeros(self.cfg.n_layers, batch_size, self.cfg.d_model)
        return z, z.clone()

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            h, hk, ck = layer(h, state[0][k], state[1][k])
            hs.append(hk)
            cs.append(ck)
            if k < len(self.layers) - 1:
                h = self.drop(h)
        return h, (torch.stack(hs), torch.stack(cs))

    def reach(self, seq_len: int, window: int | None) -> int | None:
        # how far back the training signal reaches: the TBPTT chunk (None: the whole sequence)
        return None if window is None or window >= seq_len else window - 1

    def state_size(self, seq_len, window):
        return 2 * self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        # the input and recurrent matmuls, as `lstm` counts them; the three layer norms and the
        # gates are O(d) per step and left out, as the other recurrent families leave out theirs
        return self.cfg.n_layers * 4 * 2 * (2 * d * d)
