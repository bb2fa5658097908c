"""Will a trial fit in memory? Decided before its model is built, so a trial that cannot fit is an
`oom` row at no cost instead of a worker that allocates until the operating system or Ray's
memory monitor kills it (and, on a shared machine, maybe another study's worker with it).

The estimate is deliberately a lower bound, so it never refuses a trial that would fit:
- parameters, counted on PyTorch's meta device (nothing allocated), times 16 bytes: fp32
  weights, gradients and Adam's two moments;
- activations kept for the backward pass: 4 float tensors of batch x steps x d_model per layer,
  where steps is the TBPTT window for recurrent families (one chunk is alive at a time);
- attention scores, batch x heads x steps x span per layer, for families with heads.
The sweep also asks Ray for this much `memory` per trial, so Ray packs trials by memory too and
two trials that cannot fit side by side do not run side by side.
"""
from __future__ import annotations

import torch

from study.meta import on_meta

def param_count(arch: str, cfg, io, seq_len: int, window: int | None) -> tuple[int, bool] | None:
    """(parameters, recurrent) of the model, built on the meta device; None if it cannot be built."""
    from study.models import build_model
    try:
        with on_meta():
            model = build_model(arch, cfg, io, seq_len, window)
    except RuntimeError as e:
        if "overflow" in str(e):       # a tensor with more than 2^63 bytes: beyond any machine
            return 2**62, True
        return None
    except Exception:                                  # noqa: BLE001 - the trial will report it
        return None
    return sum(p.numel() for p in model.parameters()), bool(model.recurrent)


def estimate_bytes(r, io, seq_len: int) -> int:
    """A lower bound on the bytes one training step of this trial needs (r: config.Resolved)."""
    window = r.train.window
    got = param_count(r.arch, r.model, io, seq_len, window)
    if got is None:
        return 0
    params, recurrent = got
    cfg, B = r.model, r.train.batch_size
    steps = min(window or seq_len, seq_len) if recurrent else seq_len
    act = 4 * 4 * B * steps * cfg.d_model * cfg.n_layers
    heads = getattr(cfg, "n_heads", None)
    if heads and not recurrent:
        act += 4 * B * heads * steps * min(steps, window or steps) * cfg.n_layers
    return 16 * params + act


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.split()}
        have = info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        have = None
    return have


def too_big(r, io, seq_len: int, device: torch.device) -> str | None:
    """The reason this trial cannot fit, or None."""
    need = estimate_bytes(r, io, seq_len)
    have = available_bytes(device)
    if have is None or need <= have:
        return None
    return (f"estimated {need / 2**30:.1f} GiB for parameters, optimiser state and activations, "
            f"{have / 2**30:.1f} GiB available on {device.type}: not built")
