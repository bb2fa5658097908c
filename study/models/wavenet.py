"""WaveNet (van den Oord, Dieleman, Zen, Simonyan, Vinyals, Graves, Kalchbrenner, Senior &
Kavukcuoglu 2016), the feed-forward autoregressive model, on tokens or features instead of audio
samples. Reference code read, not copied: ibab/tensorflow-wavenet (model.py).

Legend: B batch, T time steps, D d_model (residual and skip channels alike), L dilation layers per
stack, S stacks.

A causal convolution of width 2 lifts the input; then S stacks of L residual layers with dilations
1, 2, ..., 2^(L-1) (paper sec. 2.1: the dilations are repeated, "1, 2, ..., 512, 1, 2, ..., 512").
Each layer (paper sec. 2.3-2.4, fig. 4):
    z = tanh(W_f * x) ⊙ σ(W_g * x)            gated activation, * a dilated causal conv of width 2
    x <- x + 1x1_res(z),  skip += 1x1_skip(z)   residual and skip connections
and the output is ReLU -> 1x1 -> ReLU on the summed skips (the read-out does the last 1x1).
Receptive field: 2 + S (2^L - 1) steps (the first conv's extra step, then (k - 1) x the dilations).

`window` is the receptive field, as for `tcn`: L is the smallest number of layers (at least
`n_layers`) whose field covers `window`, or seq_len when the window is full. Powers of two
overshoot, so `reach` (the true field) is often larger than `window`. Not recurrent; state = a
streaming pass's input buffers, one dilation's worth per layer (the fast-generation queues of
Paine et al. 2016), plus one step for the first conv.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class WaveNetConfig(ModelConfig):
    stacks: int = Field(2, ge=1)      # S: how often the dilation cycle repeats


def receptive_field(stacks: int, levels: int) -> int:
    return 2 + stacks * (2 ** levels - 1)


def levels_for(stacks: int, span: int, at_least: int = 1) -> int:
    """Smallest L >= at_least with receptive_field(stacks, L) >= span."""
    need = math.ceil(math.log2(max(span - 2, 0) / stacks + 1)) if span > 2 else 1
    return max(at_least, need, 1)


class ResidualLayer(nn.Module):
    def __init__(self, d: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = dilation
        self.conv = nn.Conv1d(d, 2 * d, 2, dilation=dilation)     # filter and gate together
        self.res, self.skip = nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):                                          # (B, D, T) -> 2 x (B, D, T)
        f, g = self.conv(F.pad(x, (self.pad, 0))).chunk(2, dim=1)   # left padding only: causal
        z = self.drop(torch.tanh(f) * torch.sigmoid(g))
        return x + self.res(z), self.skip(z)


@MODELS.register("wavenet", WaveNetConfig,
                 "dilated causal conv stacks, gated tanh-sigmoid units, residual + skip; receptive field >= window",
                 "van den Oord et al. 2016")
class WaveNet(SequenceModel):
    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        d = cfg.d_model
        self.levels = levels_for(cfg.stacks, window or seq_len, cfg.n_layers)
        self.first = nn.Conv1d(d, d, 2)
        self.layers = nn.ModuleList(ResidualLayer(d, 2 ** i, cfg.dropout)
                                    for _ in range(cfg.stacks) for i in range(self.levels))
        self.post = nn.Conv1d(d, d, 1)

    def mix(self, h, state):
        x = self.first(F.pad(h.transpose(1, 2), (1, 0)))             # (B, T, D) -> (B, D, T)
        skips = 0
        for layer in self.layers:
            x, s = layer(x)
            skips = skips + s
        return F.relu(self.post(F.relu(skips))).transpose(1, 2), None

    def reach(self, seq_len: int, window: int | None) -> int | None:
        # the longest distance a step sees: the receptive field minus the step itself
        return receptive_field(self.cfg.stacks, levels_for(self.cfg.stacks, window or seq_len, self.cfg.n_layers)) - 1

    def state_size(self, seq_len, window):
        levels = levels_for(self.cfg.stacks, window or seq_len, self.cfg.n_layers)
        return (1 + self.cfg.stacks * (2 ** levels - 1)) * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d, S = self.cfg.d_model, self.cfg.stacks
        L = levels_for(S, window or seq_len, self.cfg.n_layers)
        first, post = 2 * 2 * d * d, 2 * d * d
        layer = 2 * 2 * d * 2 * d + 2 * (2 * d * d)      # width-2 conv to 2D, then two 1x1 convs
        return first + S * L * layer + post
