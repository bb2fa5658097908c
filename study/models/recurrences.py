"""Elementwise recurrences (IndRNN, BRC, nBRC) with a hand-written backward pass.

Legend: T time steps, B batch, D d_model; tensors are time-major (T, B, D) inside this module so
each step reads and writes one contiguous (B, D) slab.

Why: a ReLU or gated recurrence cannot be computed in parallel over time, so each step is a few
tiny (B, D) ops and, under autograd, each op also records a graph node and replays it backward.
Here the forward loop runs without autograd (only the ops of the cell, written with fused
`addcmul`), keeps only the hidden states, and the backward pass recomputes every gate for all
steps at once from those states (the pre-activations depend on h_{t-1}, which is known). The
gradient flowing back through h is *linear* in dL/dh_t, so what remains sequential backward is a
single multiply-add per step (IndRNN, BRC) or one (B, 2D) x (2D, D) matmul (nBRC), by the chain
rule written out below. The formulas are those of indrnn.py and brc.py; tests/test_models_fast.py
compares outputs and every gradient with the autograd step loop at float64.

TorchScript: the four loops are `torch.jit.script`ed (the `_py` originals stay importable so the
benchmark can time both). Measured on the 2-core CPU of BENCHMARKS.md (bench/bench_recurrence_jit.py,
d_model 128, batch 16, one training step): scripting takes the Python interpreter out of each step,
1.2-1.4x over the same loops in Python; the hand-written backward itself gives 3-15x over the
autograd loop. `torch.compile` was not tried: it unrolls a Python loop over T and would recompile
for every new chunk length.
"""
from __future__ import annotations

import warnings

import torch


def _script(fn):
    """`torch.jit.script(fn)`, quietly. torch 2.13 deprecates TorchScript (a DeprecationWarning);
    2.14 says so with a FutureWarning on every import of this module, which put a second line under
    every one-line CLI error. Where TorchScript is gone, the Python loop runs (same values, slower)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* deprecated")
        try:
            return torch.jit.script(fn)
        except AttributeError:
            return fn


def _indrnn_forward_py(wx: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(wx)
    for t in range(wx.shape[0]):
        h = torch.relu(torch.addcmul(wx[t], u, h))     # relu(W x_t + b + u ⊙ h_{t-1})
        out[t] = h
    return out


_indrnn_forward = _script(_indrnn_forward_py)   # bench/bench_recurrence_jit.py times both


def _linear_backward_py(gout: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """G_t = gout_t + K_{t+1} ⊙ G_{t+1}, G_{T-1} = gout_{T-1}: the total dL/dh_t, backwards."""
    G = torch.empty_like(gout)
    g = gout[-1]
    G[-1] = g
    for t in range(gout.shape[0] - 2, -1, -1):
        g = torch.addcmul(gout[t], K[t + 1], g)
        G[t] = g
    return G


_linear_backward = _script(_linear_backward_py)


def _clipped_backward_py(gout: torch.Tensor, M: torch.Tensor, u: torch.Tensor, clip: float) -> torch.Tensor:
    """dL/dp_t with each step's clipped to [-clip, clip] before it flows on (Lasagne's
    grad_clipping on the pre-activation): gp_t = clip(M_t ⊙ G_t), G_{t-1} = gout_{t-1} + u ⊙ gp_t."""
    gp = torch.empty_like(gout)
    g = gout[-1]
    for t in range(gout.shape[0] - 1, -1, -1):
        p = (M[t] * g).clamp(-clip, clip)
        gp[t] = p
        if t > 0:
            g = torch.addcmul(gout[t - 1], u, p)
    return gp


_clipped_backward = _script(_clipped_backward_py)


class IndRNNScan(torch.autograd.Function):
    """h_t = relu(wx_t + u ⊙ h_{t-1}); wx (T, B, D), u (D,), h0 (B, D) -> h (T, B, D). `clip`
    (None: off) clips dL/dp_t, p_t = wx_t + u ⊙ h_{t-1}, to [-clip, clip] at every step."""

    @staticmethod
    def forward(ctx, wx, u, h0, clip=None):
        out = _indrnn_forward(wx, u, h0)
        ctx.save_for_backward(u, h0, out)
        ctx.clip = clip
        return out

    @staticmethod
    def backward(ctx, gout):
        u, h0, out = ctx.saved_tensors
        M = (out > 0).to(out.dtype)                          # relu'(p_t), as torch's relu backward
        if ctx.clip is None:
            # dL/dh_{t-1} through step t is u ⊙ M_t ⊙ G_t, so G obeys a linear recurrence in K = u M
            G = _linear_backward(gout.contiguous(), u * M)
            gp = G * M                                        # dL/dp_t = dL/dwx_t
        else:
            gp = _clipped_backward(gout.contiguous(), M, u, float(ctx.clip))
        h_prev = torch.cat([h0[None], out[:-1]])              # (T, B, D)
        return gp, (gp * h_prev).sum((0, 1)), u * gp[0], None


def _brc_forward_py(xa: torch.Tensor, xc: torch.Tensor, xz: torch.Tensor, w: torch.Tensor,
                 h: torch.Tensor, full: bool) -> torch.Tensor:
    """w is (2, D) [w_a, w_c] for BRC, the (2D, D) matrix [W_a; W_c] for nBRC (full=True)."""
    out = torch.empty_like(xz)
    D = h.shape[-1]
    for t in range(xz.shape[0]):
        if full:
            r = h @ w.t()                                     # (B, 2D): W_a h, W_c h
            pa, pc = xa[t] + r[:, :D], xc[t] + r[:, D:]
        else:
            pa, pc = torch.addcmul(xa[t], w[0], h), torch.addcmul(xc[t], w[1], h)
        a = 1 + torch.tanh(pa)
        c = torch.sigmoid(pc)
        h = c * h + (1 - c) * torch.tanh(xz[t] + a * h)
        out[t] = h
    return out


_brc_forward = _script(_brc_forward_py)


def _nbrc_backward_py(gout: torch.Tensor, Kd: torch.Tensor, kac: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """G_t = gout_t + G_{t+1} ⊙ Kd_{t+1} + [G ⊙ kA, G ⊙ kC]_{t+1} @ [W_a; W_c]. kac (T, B, 2, D)."""
    G = torch.empty_like(gout)
    g = gout[-1]
    G[-1] = g
    B, D = g.shape
    for t in range(gout.shape[0] - 2, -1, -1):
        carry = torch.addmm(g * Kd[t + 1], (g[:, None] * kac[t + 1]).reshape(B, 2 * D), w)
        g = gout[t] + carry
        G[t] = g
    return G


_nbrc_backward = _script(_nbrc_backward_py)


class BRCScan(torch.autograd.Function):
    """BRC / nBRC cells over a chunk (brc.py's equations). xa, xc include the biases b_a, b_c.

    Backward, per step, with G = dL/dh_t, h = h_{t-1}, Ta = tanh(p_a) (a = 1 + Ta), c, z:
        dp_z = G (1 - c)(1 - z^2) = G kZ;  dp_c = G (h - z) c (1 - c) = G kC;
        dp_a = dp_z h (1 - Ta^2) = G kA;
        dL/dh_{t-1} = G (c + kZ a) + dp_a w_a + dp_c w_c        (BRC, elementwise)
                    = G (c + kZ a) + [dp_a, dp_c] @ [W_a; W_c]   (nBRC)
    """

    @staticmethod
    def forward(ctx, xa, xc, xz, w, h0, full: bool):
        out = _brc_forward(xa, xc, xz, w, h0, full)
        ctx.save_for_backward(xa, xc, xz, w, h0, out)
        ctx.full = full
        return out

    @staticmethod
    def backward(ctx, gout):
        xa, xc, xz, w, h0, out = ctx.saved_tensors
        T, B, D = out.shape
        h = torch.cat([h0[None], out[:-1]])                   # h_{t-1} for every t, (T, B, D)
        if ctx.full:
            r = h @ w.t()                                      # (T, B, 2D), all steps in one matmul
            pa, pc = xa + r[..., :D], xc + r[..., D:]
        else:
            pa, pc = torch.addcmul(xa, w[0], h), torch.addcmul(xc, w[1], h)
        ta, c = torch.tanh(pa), torch.sigmoid(pc)
        a = 1 + ta
        z = torch.tanh(xz + a * h)
        kZ = (1 - c) * (1 - z * z)
        kC = (h - z) * c * (1 - c)
        kA = kZ * h * (1 - ta * ta)
        Kd = c + kZ * a
        if ctx.full:
            G = _nbrc_backward(gout.contiguous(), Kd, torch.stack([kA, kC], 2), w)
            dpa, dpc = G * kA, G * kC
            dac = torch.cat([dpa, dpc], -1)                    # (T, B, 2D)
            gw = dac.reshape(-1, 2 * D).t() @ h.reshape(-1, D)  # (2D, D)
            gh0 = G[0] * Kd[0] + dac[0] @ w
        else:
            K = Kd + kA * w[0] + kC * w[1]
            G = _linear_backward(gout.contiguous(), K)
            dpa, dpc = G * kA, G * kC
            gw = torch.stack([(dpa * h).sum((0, 1)), (dpc * h).sum((0, 1))])   # (2, D)
            gh0 = G[0] * K[0]
        return dpa, dpc, G * kZ, gw, gh0, None


def indrnn(wx: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """Batch-major wrapper: wx (B, T, D) -> h (B, T, D)."""
    return IndRNNScan.apply(wx.transpose(0, 1).contiguous(), u, h0, clip).transpose(0, 1)


def brc(xa, xc, xz, w, h0, full: bool) -> torch.Tensor:
    """Batch-major wrapper: xa, xc, xz (B, T, D) -> h (B, T, D)."""
    tm = [x.transpose(0, 1).contiguous() for x in (xa, xc, xz)]
    return BRCScan.apply(*tm, w, h0, full).transpose(0, 1)
