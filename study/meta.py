"""Building a model on PyTorch's meta device (shapes only, nothing allocated), fast.

Parameter initialisers have no values to fill on the meta device, and there PyTorch runs their
Python reference implementations, whose first call imports torch._dynamo: 1-3 s in every process
that builds a model on meta (the spec check, the memory estimate of each trial, the cost preview)
before anything trains. `on_meta()` makes the initialisers return their tensor unchanged.
"""
from __future__ import annotations

import contextlib

import torch


class _SkipInit(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.normal_, torch.Tensor.uniform_) or getattr(func, "__module__", "") == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def on_meta():
    """`with on_meta(): build_model(...)`: the model's parameters on the meta device, uninitialised."""
    with _SkipInit(), torch.device("meta"):
        yield
