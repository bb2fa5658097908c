"""Temporal convolutional network (Bai, Kolter & Koltun 2018, locuslab/TCN tcn.py).

Residual blocks of two weight-normalised dilated causal convolutions (dilation 2^i), ReLU, dropout;
a 1x1 convolution on the residual when widths differ. Receptive field 1 + 2(k-1)(2^L - 1), so
reach (how far back an output sees) is 2(k-1)(2^L - 1) steps.
`window` is the receptive field: the number of blocks L is the smallest that covers `window`
(or seq_len when the window is full), and at least `n_layers`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class TCNConfig(ModelConfig):
    kernel_size: int = Field(7, ge=2)


def receptive_field(kernel_size: int, levels: int) -> int:
    return 1 + 2 * (kernel_size - 1) * (2 ** levels - 1)


def levels_for(kernel_size: int, span: int) -> int:
    return max(1, math.ceil(math.log2((span - 1) / (2 * (kernel_size - 1)) + 1)))


class CausalConv(nn.Module):
    def __init__(self, c_in, c_out, k, dilation):
        super().__init__()
        self.pad = (k - 1) * dilation
        # Init as locuslab/TCN effectively runs: its init_weights draws conv.weight ~ N(0, 0.01)
        # after weight_norm was applied, and the (hook) weight norm recomputes weight from g and v
        # before every forward, so that draw is discarded and PyTorch's default Conv1d init
        # (kaiming-uniform, a = sqrt(5)) is what trains (std ~0.05 at their widths, not 0.01).
        self.conv = weight_norm(nn.Conv1d(c_in, c_out, k, dilation=dilation))

    def forward(self, x):                            # (B, C, T) -> (B, C, T)
        return self.conv(F.pad(x, (self.pad, 0)))    # left padding only: causal


class TemporalBlock(nn.Module):
    def __init__(self, d, k, dilation, dropout):
        super().__init__()
        self.c1, self.c2 = CausalConv(d, d, k, dilation), CausalConv(d, d, k, dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        y = self.drop(F.relu(self.c1(x)))
        y = self.drop(F.relu(self.c2(y)))
        return F.relu(x + y)


@MODELS.register("tcn", TCNConfig, "dilated causal convolutions, receptive field = window",
                 "Bai, Kolter & Koltun 2018")
class TCN(SequenceModel):
    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.levels = max(cfg.n_layers, levels_for(cfg.kernel_size, window or seq_len))
        self.blocks = nn.Sequential(*(TemporalBlock(cfg.d_model, cfg.kernel_size, 2 ** i, cfg.dropout)
                                      for i in range(self.levels)))

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.cfg.kernel_size, self.levels)

    def reach(self, seq_len, window):
        # the actual receptive field (the levels cover window or seq_len, so often more than asked)
        return self.receptive_field - 1

    def mix(self, h, state):
        return self.blocks(h.transpose(1, 2)).transpose(1, 2), None   # (B, T, D) <-> (B, D, T)

    def state_size(self, seq_len, window):
        # a streaming TCN keeps each block's input history over its dilated kernel span
        return sum(2 * (self.cfg.kernel_size - 1) * 2 ** i * self.cfg.d_model for i in range(self.levels))

    def core_flops(self, seq_len, window):
        d, k = self.cfg.d_model, self.cfg.kernel_size
        return self.levels * 2 * (2 * k * d * d)
