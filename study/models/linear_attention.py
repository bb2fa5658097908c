"""Linear Transformer (Katharopoulos, Vyas, Pappas & Fleuret, ICML 2020, "Transformers are RNNs").

Legend: B batch, T time steps, D d_model, H heads, Dh = D/H, n chunks of C steps.

Softmax similarity is replaced by a kernel phi(q)^T phi(k) with phi(x) = elu(x) + 1 (paper eq. 7), so
causal attention is an RNN with a matrix state (eq. 16-20, idiap/fast-transformers):
    S_i = S_{i-1} + phi(k_i) v_i^T,   z_i = z_{i-1} + phi(k_i),
    out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + 1e-6)
The parallel form used for training and evaluation is chunked: inside a chunk of C steps a masked
(C, C) kernel matrix, across chunks the prefix sums of the chunk summaries k^T v (a cumulative sum
over chunks); it equals the step-by-step recurrence (`recurrent_attention`) up to rounding.
Layers are pre-norm like `transformer` (the paper's code is post-norm: pre-norm here so the two
attention kinds differ only in the attention) and positions are the sinusoidal signal of Vaswani et
al. added to the input (rotary positions would break phi's positivity), with the absolute position
carried in the state. `recurrent = True`: the trainer truncates BPTT at `window`.
State: L x H x (Dh x Dh + Dh) = L (D Dh + D).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.models.base import SequenceModel
from study.models.transformer import Block, TransformerConfig, sinusoid
from study.registry import MODELS

EPS = 1e-6      # the paper's denominator guard
CHUNK = 64      # C: intra-chunk work is C per token, inter-chunk Dh per token


class LinearTransformerConfig(TransformerConfig):
    pass


def phi(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def chunked_attention(q, k, v, S0, z0, chunk: int = CHUNK):
    """Causal linear attention, parallel. q, k already mapped by phi: (B, H, T, Dh); v (B, H, T, Dv);
    S0 (B, H, Dh, Dv), z0 (B, H, Dh). Returns out (B, H, T, Dv) and the final S, z."""
    B, H, T, Dh = q.shape
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T                                            # zero keys after phi add nothing
    q, k, v = (F.pad(t, (0, 0, 0, pad)).view(B, H, n, C, -1) for t in (q, k, v))   # (B, H, n, C, .)
    kv = k.transpose(-1, -2) @ v                               # (B, H, n, Dh, Dv): chunk summaries
    ks = k.sum(-2)                                             # (B, H, n, Dh)
    S = S0[:, :, None] + torch.cumsum(kv, 2) - kv              # exclusive prefix: state before each chunk
    z = z0[:, :, None] + torch.cumsum(ks, 2) - ks
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)     # (B, H, n, C, C)
    num = q @ S + A @ v                                        # (B, H, n, C, Dv)
    den = (q * z[..., None, :]).sum(-1) + A.sum(-1)            # (B, H, n, C)
    out = (num / (den[..., None] + EPS)).reshape(B, H, n * C, -1)[:, :, :T]
    return out, S[:, :, -1] + kv[:, :, -1], z[:, :, -1] + ks[:, :, -1]


def recurrent_attention(q, k, v, S0, z0):
    """The same map one step at a time (paper eq. 18-20): the reference for `chunked_attention`."""
    S, z, outs = S0, z0, []
    for t in range(q.shape[2]):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]      # (B, H, Dh, Dv)
        z = z + k[:, :, t]
        qt = q[:, :, t]                                        # (B, H, Dh)
        outs.append((qt[..., None, :] @ S)[..., 0, :] / ((qt * z).sum(-1, keepdim=True) + EPS))
    return torch.stack(outs, dim=2), S, z


class LinearBlock(Block):
    """`transformer`'s pre-norm Block with phi-kernel attention and no rotary positions."""

    def __init__(self, cfg):
        super().__init__(cfg, rotary_positions=False)

    def forward(self, x, S0, z0, parallel: bool = True):
        q, k, v = self.project(x)                              # 3 x (B, H, T, Dh)
        attend = chunked_attention if parallel else recurrent_attention
        a, S, z = attend(phi(q), phi(k), v, S0, z0)
        return self.finish(x, a), S, z


@MODELS.register("linear_transformer", LinearTransformerConfig,
                 "causal linear attention, elu+1 feature map, RNN state (S, z)", "Katharopoulos et al. 2020")
class LinearTransformer(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.blocks = nn.ModuleList(LinearBlock(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.parallel = True     # False: the step-by-step recurrent form (tests compare the two)

    def init_state(self, batch_size):
        L, H, d = self.cfg.n_layers, self.cfg.n_heads, self.cfg.d_model
        w = self.embed.weight
        return {"S": w.new_zeros(L, batch_size, H, d // H, d // H), "z": w.new_zeros(L, batch_size, H, d // H),
                "pos": 0}

    def mix(self, h, state):
        if state is None:
            state = self.init_state(h.shape[0])
        T, pos = h.shape[1], state["pos"]
        h = h + sinusoid(torch.arange(pos, pos + T, device=h.device, dtype=h.dtype), h.shape[-1])
        Ss, zs = [], []
        for k, b in enumerate(self.blocks):
            h, S, z = b(h, state["S"][k], state["z"][k], self.parallel)
            Ss.append(S)
            zs.append(z)
        return self.ln(h), {"S": torch.stack(Ss), "z": torch.stack(zs), "pos": pos + T}

    def state_size(self, seq_len, window):
        d, dh = self.cfg.d_model, self.cfg.d_model // self.cfg.n_heads
        return self.cfg.n_layers * (d * dh + d)

    def core_flops(self, seq_len, window):
        d, dh = self.cfg.d_model, self.cfg.d_model // self.cfg.n_heads
        C = min(CHUNK, window or seq_len)
        proj = 2 * 4 * d * d + 2 * 2 * self.cfg.ff_mult * d * d
        # per token, as implemented: q k^T and A v inside the chunk (2 x 2Cd), q S and k^T v (2 x 2 d Dh)
        return self.cfg.n_layers * (proj + 4 * C * d + 4 * d * dh)
