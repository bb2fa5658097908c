"""Gated convolutional language model (Dauphin, Fan, Auli & Grangier, ICML 2017, "Language Modeling
with Gated Convolutional Networks"; reference code: fairseq's fconv_lm, read, not copied).

Legend: B batch, T time steps, D d_model, L = n_layers, k_l the kernel width of layer l.

The feed-forward model with a fixed, finite context: every output sees only the last `window`
inputs, however long the sequence. Each layer is a causal convolution followed by the paper's gated
linear unit (GLU),
    h_l(X) = (X * W + b) ⊗ σ(X * V + c),
inside a residual block, x_{l+1} = x_l + h_l(x_l) (the paper's pre-activation residual block).
W and V are one convolution with 2D output channels, weight-normalised (the paper trains with
weight normalisation, Salimans & Kingma 2016, and gradient clipping), as fairseq's GLU convolutions.

`window` is the context (the receptive field): the L kernels are sized so that their stack covers
exactly `window` steps (or seq_len when the window is full), 1 + sum_l (k_l - 1) = window, the spare
width spread evenly over the layers (a kernel of width 1 is a position-wise GLU, which fairseq's
WikiText-103 configuration also has). The paper's models see a few tens of tokens; its context-size
experiment shows the gain from more context flattening past ~20 tokens on WikiText-103.
Not recurrent; state = what a streaming pass would buffer: each layer's last k_l - 1 inputs,
sum_l (k_l - 1) x D floats.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class GatedConvConfig(ModelConfig):
    n_layers: int = 4


def kernel_widths(n_layers: int, context: int) -> list[int]:
    """Kernel widths whose causal stack sees exactly `context` steps: sum (k_l - 1) = context - 1."""
    q, r = divmod(context - 1, n_layers)
    return [1 + q + (1 if l < r else 0) for l in range(n_layers)]


class GLUConv(nn.Module):
    """Causal convolution of width k to 2D channels, then the gated linear unit; residual."""

    def __init__(self, d: int, k: int, dropout: float):
        super().__init__()
        self.pad = k - 1
        self.conv = weight_norm(nn.Conv1d(d, 2 * d, k))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):                                  # (B, D, T) -> (B, D, T)
        a, g = self.conv(F.pad(x, (self.pad, 0))).chunk(2, dim=1)   # left padding only: causal
        return x + self.drop(a * g.sigmoid())


@MODELS.register("gated_conv", GatedConvConfig,
                 "gated linear units over causal convolutions, fixed context = window",
                 "Dauphin et al. 2017")
class GatedConv(SequenceModel):
    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.kernels = kernel_widths(cfg.n_layers, window or seq_len)
        self.layers = nn.Sequential(*(GLUConv(cfg.d_model, k, cfg.dropout) for k in self.kernels))

    def mix(self, h, state):
        return self.layers(h.transpose(1, 2)).transpose(1, 2), None   # (B, T, D) <-> (B, D, T)

    def reach(self, seq_len: int, window: int | None) -> int | None:
        # the longest distance a step sees: the context the kernels were sized for, minus the step itself
        return sum(k - 1 for k in kernel_widths(self.cfg.n_layers, window or seq_len))

    def state_size(self, seq_len, window):
        return self.reach(seq_len, window) * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        return sum(2 * k * d * 2 * d for k in kernel_widths(self.cfg.n_layers, window or seq_len))
