"""Legendre Memory Unit (Voelker, Kajić & Eliasmith, NeurIPS 2019) in its parallel form
(Chilkuri & Eliasmith, ICML 2021).

Legend: B batch, T time steps, D d_model, U memory_d (memory input channels), N memory_size (order).

The memory is the linear system theta m'(t) = A m(t) + B u(t) (Voelker eq. 1-2) whose N Legendre
coefficients approximate the window u(t - theta'), 0 <= theta' <= theta, by Padé:
    A_ij = (2i+1) * (-1 if i < j else (-1)^(i-j+1)),   B_i = (2i+1) (-1)^i
    u(t - theta') ~ sum_i P_i(2 theta'/theta - 1) m_i(t)              (the Legendre read-out)
discretised by zero-order hold with dt = 1 step on (A/theta, B/theta) (keras-lmu `_gen_AB`), giving
m_t = Abar m_{t-1} + Bbar u_t. A and B are frozen, as in both papers.

Layer (Chilkuri & Eliasmith eq. 5-6, keras-lmu LMUFeedforward): the h->u and m->u feedback of the
2019 cell is dropped, so the memory is a linear time-invariant filter of the input:
    u_t = e_x^T x_t,   m_t = sum_{j<=t} Abar^(t-j) Bbar u_j,   h_t = tanh(W_m m_t + W_x x_t + b)
computed for a whole chunk at once as a causal convolution with the impulse response
H_t = Abar^t Bbar, by FFT (padded to >= 2T so the circular convolution is linear). The state carried
between chunks is m (U x N per layer); its contribution to the next chunk is Abar^(t+1) m_0. Layers
are stacked. theta defaults to the cell's training seq_len. State: L x U x N.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class LMUConfig(ModelConfig):
    memory_size: int = Field(64, ge=1)           # N, the Legendre order
    theta: float | None = Field(None, gt=0)      # window of the delay in steps; None = seq_len
    memory_d: int = Field(1, ge=1)               # U, channels written to the memory (1 in both papers)


def legendre_AB(order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The continuous-time A (N, N) and B (N, 1) of Voelker eq. 2, float64."""
    i = torch.arange(order, dtype=torch.float64)[:, None]
    j = torch.arange(order, dtype=torch.float64)[None, :]
    A = (2 * i + 1) * torch.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    B = (2 * i + 1) * (-1.0) ** i
    return A, B


def zoh(A: torch.Tensor, B: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold with dt = 1 on (A/theta, B/theta): exp([[A, B], [0, 0]] / theta)."""
    n = A.shape[0]
    M = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    M[:n, :n], M[:n, n:] = A / theta, B / theta
    E = torch.linalg.matrix_exp(M)
    return E[:n, :n], E[:n, n:]


def legendre_readout(order: int, r: float) -> torch.Tensor:
    """Weights (N,) with u(t - r theta) ~ weights . m(t): P_i(2r - 1) by Bonnet's recursion."""
    x, p = 2 * r - 1, [1.0, 2 * r - 1]
    for n in range(1, order - 1):
        p.append(((2 * n + 1) * x * p[n] - n * p[n - 1]) / (n + 1))
    return torch.tensor(p[:order], dtype=torch.float64)


def powers(Abar: torch.Tensor, v: torch.Tensor, T: int) -> torch.Tensor:
    """Abar^t v for t = 0..T-1, v (N, K) -> (T, N, K), by doubling: log2(T) batched matmuls, not T."""
    out, P = v[None], Abar
    while out.shape[0] < T:
        out = torch.cat([out, torch.einsum("ij,tjk->tik", P, out)])   # append Abar^len times the block
        P = P @ P
    return out[:T]


class LegendreMemory(nn.Module):
    """m_t = Abar m_{t-1} + Bbar u_t for U independent channels; u (B, T, U) -> m (B, T, U, N)."""

    def __init__(self, order: int, theta: float):
        super().__init__()
        Abar, Bbar = zoh(*legendre_AB(order), theta)          # (N, N), (N, 1)
        # frozen (both papers): buffers, not parameters; rebuilt from the config, not saved
        self.register_buffer("Abar", Abar.float(), persistent=False)
        self.register_buffer("Bbar", Bbar.float(), persistent=False)
        self._H: dict = {}

    def impulse(self, T: int) -> torch.Tensor:
        """H_t = Abar^t Bbar, (T, N); cached per length, device and dtype."""
        key = (T, self.Abar.device, self.Abar.dtype)
        if key not in self._H:
            self._H = {key: powers(self.Abar, self.Bbar, T)[..., 0]}
        return self._H[key]

    def forward(self, u: torch.Tensor, m0: torch.Tensor | None) -> torch.Tensor:
        B, T, U = u.shape
        H = self.impulse(T)                                   # (T, N)
        n = 1 << (2 * T - 1).bit_length()                     # >= 2T: linear, not circular, convolution
        Uf = torch.fft.rfft(u, n=n, dim=1)                    # (B, F, U)
        Hf = torch.fft.rfft(H, n=n, dim=0)                    # (F, N)
        m = torch.fft.irfft(Uf[..., None] * Hf[None, :, None, :], n=n, dim=1)[:, :T]   # (B, T, U, N)
        if m0 is not None:
            # the carried state decays through the chunk: Abar^(t+1) m0
            v = (m0.reshape(B * U, -1) @ self.Abar.T).T                     # (N, B*U)
            decay = powers(self.Abar, v, T)                                 # (T, N, B*U)
            m = m + decay.permute(2, 0, 1).reshape(B, U, T, -1).transpose(1, 2)  # -> (B, T, U, N)
        return m

    def step_loop(self, u: torch.Tensor, m0: torch.Tensor | None) -> torch.Tensor:
        """The recurrent form, one step at a time: the reference the FFT form is tested against."""
        B, T, U = u.shape
        m = u.new_zeros(B, U, self.Abar.shape[0]) if m0 is None else m0
        out = []
        for t in range(T):
            m = m @ self.Abar.T + u[:, t, :, None] * self.Bbar[:, 0]   # (B, U, N)
            out.append(m)
        return torch.stack(out, dim=1)


class LMULayer(nn.Module):
    def __init__(self, cfg: LMUConfig, theta: float):
        super().__init__()
        d, U, N = cfg.d_model, cfg.memory_d, cfg.memory_size
        self.enc = nn.Linear(d, U, bias=False)                # e_x
        self.memory = LegendreMemory(N, theta)
        self.hidden = nn.Linear(U * N + d, d)                 # [W_m, W_x] and b
        nn.init.xavier_uniform_(self.hidden.weight)
        nn.init.zeros_(self.hidden.bias)

    def forward(self, x, m0):
        m = self.memory(self.enc(x), m0)                      # (B, T, U, N)
        h = torch.tanh(self.hidden(torch.cat([m.flatten(2), x], dim=-1)))   # (B, T, U*N + D) -> (B, T, D)
        return h, m[:, -1]


@MODELS.register("lmu", LMUConfig, "Legendre memory (frozen ZOH A, B) + tanh hidden, parallel FFT form",
                 "Voelker et al. 2019; Chilkuri & Eliasmith 2021")
class LMU(SequenceModel):
    recurrent = True

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.theta = float(cfg.theta or seq_len)
        self.layers = nn.ModuleList(LMULayer(cfg, self.theta) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)

    def mix(self, h, state):
        last = []
        for k, layer in enumerate(self.layers):
            h, m = layer(h, None if state is None else state[k])
            last.append(m)
            if k < len(self.layers) - 1:
                h = self.drop(h)
        return h, torch.stack(last)                           # (L, B, U, N)

    def state_size(self, seq_len, window):
        return self.cfg.n_layers * self.cfg.memory_d * self.cfg.memory_size

    def core_flops(self, seq_len, window):
        d, U, N = self.cfg.d_model, self.cfg.memory_d, self.cfg.memory_size
        T = window or seq_len                                  # the FFT runs over one chunk
        n = 1 << (2 * T - 1).bit_length()
        # per token: encoder; FFT convolution (inverse real FFTs of U*N signals of length n,
        # ~2.5 n log2 n each, shared by T tokens, plus a complex product per frequency); hidden layer
        fft = U * N * (2.5 * n * math.log2(n) / T + 6 * (n // 2 + 1) / T)
        return self.cfg.n_layers * (2 * d * U + fft + 2 * (U * N + d) * d)
