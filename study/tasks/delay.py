"""Delay: reproduce a band-limited white-noise input `lag` steps later (the LMU capacity task,
Voelker, Kajic & Eliasmith 2019, `experiments/capacity.ipynb`).

One input channel u_t; the target at step t is u_{t-lag}; the last `n_scored` steps are scored
(MSE). The input says nothing about which delay to reproduce, so `lag_dist` can only be `fixed`
(as the LMU notebook trains each delay on its own); a spec asking for `uniform` is rejected. The LMU notebook scores five delays in linspace(0, theta, 5) over t >= theta; memscale
scores one delay, `lag`, so the ladder sweeps it.

The signal is a random sum of sinusoids below `cutoff` cycles per step:
u_t = sum_{k=1..K} a_k cos(2 pi k t / T) + b_k sin(2 pi k t / T), a_k, b_k ~ N(0, 1/K), K = cutoff*T,
so every u_t has variance exactly 1 (no per-sequence rescaling, which would make the baseline
depend on T). The bandwidth is per step, so evaluating at another lag does not change the input
statistics. The LMU notebook's 10 Hz with dt = 1/theta is `cutoff: 10/lag`.

Baseline: a model ignoring the input predicts E[u] = 0 and scores E[u^2] = 1.

Example (lag=2, n_scored=3, T=5):  u = .1 .8 -.3 .5 .2      y (scored) = . . .1 .8 -.3
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig


class DelayConfig(TaskConfig):
    # One input channel carries no cue of which delay to reproduce, so a sequence's delay must be
    # the same in every sequence: the LMU capacity setup trains one fixed delay (uniform: exit 2).
    lag_dist: Literal["fixed"] = "fixed"
    cutoff: float = Field(0.1, gt=0, le=0.5)     # band limit in cycles per step (Nyquist = 0.5)
    n_scored: int = Field(32, ge=1)              # steps at the end of each sequence that are scored


def white_noise(n: int, T: int, cutoff: float, gen: torch.Generator) -> torch.Tensor:
    """(n, T) band-limited Gaussian noise with unit variance at every step."""
    K = max(1, min(int(cutoff * T), (T - 1) // 2))       # frequencies 1..K, below Nyquist
    a = torch.randn(n, K, generator=gen) / K ** 0.5
    b = torch.randn(n, K, generator=gen) / K ** 0.5
    spec = torch.zeros(n, T // 2 + 1, dtype=torch.complex64)
    # irfft(X)_t = (1/T) [X_0 + 2 sum_k Re(X_k e^{2 pi i k t / T})], so X_k = (T/2)(a_k - i b_k)
    spec[:, 1:K + 1] = torch.complex(a, -b) * (T / 2)
    return torch.fft.irfft(spec, n=T)


@TASKS.register("delay", DelayConfig, "delay: output band-limited white noise lag steps later (MSE)",
                "Voelker et al. 2019")
class Delay(Task):
    kind = "regression"

    def __init__(self, cfg: DelayConfig):
        super().__init__(cfg)
        self.io = IO(d_out=1, d_in=1)
        self.chance = 0.0

    def default_seq_len(self, lag=None):
        return (lag or self.cfg.lag) + self.cfg.n_scored

    def sample(self, n, gen, lag=None, seq_len=None):
        c = self.cfg
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        u = white_noise(n, T, c.cutoff, gen)                                   # (B, T)
        t = torch.arange(T - c.n_scored, T)                                     # scored steps
        y = torch.zeros(n, T, 1)
        y[:, T - c.n_scored:, 0] = u.gather(1, t[None, :] - lags[:, None])     # u_{t - lag}
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, T - c.n_scored:] = True
        return Batch(u[..., None], y, mask, lags)

    def baseline_loss(self):
        return 1.0
