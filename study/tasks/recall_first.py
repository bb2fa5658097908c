"""Copy-first-input (Vecoven, Ernst & Drion 2021, the bistable recurrent cell paper).

Inputs x_t ~ N(0, 1) i.i.d.; the target, scored at the last step only, is the first input, `lag`
steps back; loss is MSE (nvecoven/BRC `datasets/datasets.py`; Vecoven et al. 2021).

Departure: a second input channel flags the first input with a 1. With `lag_dist: fixed` it is
redundant (the first input is always step 0, as in the paper); with uniform lags, shorter
sequences are left-padded with zeros, and without the flag a padding zero and a Gaussian input
near zero could not be told apart.

Baseline: a model ignoring the input predicts E[x_1] = 0 and scores E[x_1^2] = 1.

Example (lag=2, T=3):  value = .5 -1.2 .3     flag = 1 0 0      y (scored at the last step) = .5
"""
from __future__ import annotations

import torch

from study.registry import TASKS
from study.tasks.base import ReadOutRegression, TaskConfig


class RecallFirstConfig(TaskConfig):
    pass


@TASKS.register("recall_first", RecallFirstConfig, "copy-first-input: regress the first of lag+1 Gaussian inputs",
                "Vecoven et al. 2021")
class RecallFirst(ReadOutRegression):
    def sample(self, n, gen, lag=None, seq_len=None):
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        first = T - 1 - lags                                                    # (B,)
        t = torch.arange(T)
        values = torch.randn(n, T, generator=gen) * (t[None, :] >= first[:, None])   # zero padding
        flag = (t[None, :] == first[:, None]).float()
        x = torch.stack([values, flag], dim=-1)                                 # (B, T, 2)
        return self.read_out(x, values[torch.arange(n), first], lags)

    def baseline_loss(self):
        return 1.0
