"""The adding problem (Hochreiter & Schmidhuber 1997; IndRNN: Li et al. 2018; TCN: Bai et al. 2018).

Two input channels: a value ~ U(0, 1) at every step and a 0/1 marker. Two values are marked; the
target, read out (scored) at the last step only, is their sum; loss is MSE.

Variant: memscale plants the dependency at an exact distance, as docs/design.md's `lag` requires.
The first marker is exactly `lag` steps before the read-out; the second is uniform over the
`lag` steps after it (so its own distance is 0..lag-1). This is IndRNN's layout (one marker in
the older half, one in the recent half; Li et al. 2018) with the old marker's distance
fixed instead of uniform over [T/2, T); the TCN variant (both markers anywhere) leaves the
distance random. Sequences are `lag + 1` steps long; shorter lags in a uniform batch simply
start their markers later (the earlier steps are unmarked values).

Baseline: a model ignoring the input predicts the mean, E[v1 + v2] = 1, and scores
Var(v1 + v2) = 2 / 12 = 1/6 ~ 0.167 (the 0.1767 quoted by papers is a misquote).

Example (lag=3, T=4):  value  = .7 .2 .9 .4      marker = 1 0 1 0
                       y (scored at the last step) = .7 + .9 = 1.6
"""
from __future__ import annotations

import torch

from study.registry import TASKS
from study.tasks.base import ReadOutRegression, TaskConfig


class AddingConfig(TaskConfig):
    pass


@TASKS.register("adding", AddingConfig, "adding problem: sum two marked values, the first lag steps back (MSE)",
                "Hochreiter & Schmidhuber 1997; Li et al. 2018")
class Adding(ReadOutRegression):
    def sample(self, n, gen, lag=None, seq_len=None):
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        values = torch.rand(n, T, generator=gen)
        first = T - 1 - lags                                                    # (B,)
        # second marker: uniform over the lag steps after the first, i.e. first+1 .. T-1
        second = first + 1 + (torch.rand(n, generator=gen) * lags).long().clamp(max=lags - 1)
        rows = torch.arange(n)
        marker = torch.zeros(n, T)
        marker[rows, first] = 1.0
        marker[rows, second] = 1.0
        x = torch.stack([values, marker], dim=-1)                               # (B, T, 2)
        return self.read_out(x, values[rows, first] + values[rows, second], lags)

    def baseline_loss(self):
        return 1.0 / 6.0
