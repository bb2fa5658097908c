"""Diagonal linear state-space layer in the style of the Linear Recurrent Unit (Orvieto, Smith, Gu,
Fernando, Gulcehre, Pascanu & De, ICML 2023), itself a simplification of S4D (Gu et al. 2022).

Legend: B batch, T time steps, D d_model, N d_state (complex), L layers.

Per layer (LRU paper eq. 3-7), complex diagonal recurrence with a stable exponential parametrisation:
    lambda = exp(-exp(nu_log) + i exp(theta_log))          (|lambda| < 1 for any parameter value)
    x_t = lambda ⊙ x_{t-1} + gamma ⊙ (B u_t),   gamma = sqrt(1 - |lambda|^2) (the normalisation)
    y_t = Re(C x_t) + D ⊙ u_t
Init (LRU sec. 3.3): |lambda| uniform on the ring [r_min, r_max] (by its squared radius), phase
uniform in [0, max_phase]; B, C complex Gaussian with variance 1/(2D) and 1/N per part; D Gaussian.
Block (LRU Fig. 1): u = LN(x), then x + GLU(GELU(y)) with GLU(y) = W1 y ⊙ sigmoid(W2 y).
The recurrence is linear and time-invariant, so a whole chunk is computed by a Hillis-Steele parallel
scan: log2(T) vectorised steps h_t <- h_t + lambda^s h_{t-s}, s = 1, 2, 4, ..., with the carried
state added to the first input as lambda x_0. `step_loop` is the one-step-at-a-time reference. State: L x N complex = 2LN floats.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS

# Ring init used by the LRU paper for its long-range runs: slow modes from the start, since the
# studies here are about long memory. [R: check against LRU Table/Appendix before relying on it]
R_MIN, R_MAX, MAX_PHASE = 0.9, 0.999, math.pi / 10


class SSMConfig(ModelConfig):
    n_layers: int = Field(2, ge=1)
    d_state: int = Field(64, ge=1)       # N complex modes per layer


class LRU(nn.Module):
    def __init__(self, d: int, n: int):
        super().__init__()
        u1, u2 = torch.rand(n), torch.rand(n)
        nu = -0.5 * torch.log(u1 * (R_MAX ** 2 - R_MIN ** 2) + R_MIN ** 2)   # -log|lambda|
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(MAX_PHASE * u2))
        self.gamma_log = nn.Parameter(0.5 * torch.log(1 - torch.exp(-2 * nu)))   # log sqrt(1 - |lambda|^2)
        self.B_re, self.B_im = (nn.Parameter(torch.randn(n, d) / math.sqrt(2 * d)) for _ in range(2))
        self.C_re, self.C_im = (nn.Parameter(torch.randn(d, n) / math.sqrt(n)) for _ in range(2))
        self.D = nn.Parameter(torch.randn(d))

    def log_lambda(self) -> torch.Tensor:
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))    # (N,)

    def inputs(self, u: torch.Tensor) -> torch.Tensor:
        """gamma ⊙ B u: (B, T, D) -> (B, T, N) complex, as two real matmuls."""
        return torch.complex(u @ self.B_re.T, u @ self.B_im.T) * torch.exp(self.gamma_log)

    def readout(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return h.real @ self.C_re.T - h.imag @ self.C_im.T + self.D * u    # Re(C h) + D u, (B, T, D)

    def forward(self, u: torch.Tensor, x0: torch.Tensor | None):
        # Scan SCAN_CHUNK steps at a time, the state carried from chunk to chunk: the scan's work is
        # T log2(chunk), linear in T, where one scan over T is T log2(T) (BENCHMARKS.md, "Cost per
        # token at long T": with the split below, 1.17x of T = 256's cost per token at 16k, from 1.89x).
        log_lam, b = self.log_lambda(), self.inputs(u)
        hs = []
        # split, not b[:, c:c + SCAN_CHUNK]: a slice's backward builds a zero gradient the size of
        # all of b and adds into it, once per chunk, which made the step O(T^2 / chunk) (at 16k,
        # fill_ and add_ took 10x the time they took at 4k); split's backward is one concatenation
        for chunk in b.split(SCAN_CHUNK, dim=1):
            h = self.scan(chunk, x0, log_lam)
            hs.append(h)
            x0 = h[:, -1]
        h = hs[0] if len(hs) == 1 else torch.cat(hs, dim=1)
        return self.readout(h, u), h[:, -1]

    @staticmethod
    def scan(h: torch.Tensor, x0: torch.Tensor | None, log_lam: torch.Tensor) -> torch.Tensor:
        if x0 is not None:
            # the carried state enters as part of the first input, lambda x_0 + b_0, so the scan
            # carries it on as lambda^(t+1) x_0 at no extra cost (adding lambda^(t+1) x_0 at every
            # step took a complex exp over the whole chunk, ~1/8 of the scan's own work)
            h = torch.cat([h[:, :1] + torch.exp(log_lam) * x0[:, None], h[:, 1:]], dim=1)
        T, s = h.shape[1], 1
        while s < T:   # Hillis-Steele: after the step with offset s, h_t sums b over a window of 2s steps
            h = torch.cat([h[:, :s], h[:, s:] + torch.exp(s * log_lam) * h[:, :-s]], dim=1)
            s *= 2
        return h

    def step_loop(self, u: torch.Tensor, x0: torch.Tensor | None):
        lam, b = torch.exp(self.log_lambda()), self.inputs(u)
        x = b.new_zeros(b.shape[0], b.shape[2]) if x0 is None else x0
        hs = []
        for t in range(u.shape[1]):
            x = lam * x + b[:, t]
            hs.append(x)
        h = torch.stack(hs, dim=1)
        return self.readout(h, u), x


SCAN_CHUNK = 256    # steps per parallel scan (LRU.forward); a module attribute so tests can vary it


class SSMBlock(nn.Module):
    def __init__(self, cfg: SSMConfig):
        super().__init__()
        d = cfg.d_model
        self.ln = nn.LayerNorm(d)
        self.lru = LRU(d, cfg.d_state)
        self.glu = nn.Linear(d, 2 * d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, x0, parallel: bool = True):
        y, xT = (self.lru if parallel else self.lru.step_loop)(self.ln(x), x0)
        a, g = self.glu(F.gelu(y)).chunk(2, dim=-1)
        return x + self.drop(a * torch.sigmoid(g)), xT


@MODELS.register("ssm", SSMConfig, "diagonal complex linear recurrence (LRU/S4D style), parallel scan",
                 "Orvieto et al. 2023")
class SSM(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.blocks = nn.ModuleList(SSMBlock(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.parallel = True     # False: the step loop (tests compare the two)

    def mix(self, h, state):
        last = []
        for k, b in enumerate(self.blocks):
            h, xT = b(h, None if state is None else state[k], self.parallel)
            last.append(xT)
        return self.ln(h), torch.stack(last)              # state (L, B, N) complex

    def state_size(self, seq_len, window):
        return self.cfg.n_layers * 2 * self.cfg.d_state

    def core_flops(self, seq_len, window):
        d, n = self.cfg.d_model, self.cfg.d_state
        T = window or seq_len
        # a complex multiply-add per scan step, log2 of the scanned chunk's length steps
        scan = 8 * n * math.ceil(math.log2(max(min(T, SCAN_CHUNK), 2)))
        return self.cfg.n_layers * (2 * 2 * d * n + scan + 2 * 2 * n * d + 2 * d * 2 * d)
