"""Elman RNN, LSTM and GRU on PyTorch's fused modules (cuDNN on GPU, one call per chunk on CPU).

LSTM: Hochreiter & Schmidhuber 1997; GRU: Cho et al. 2014; tanh RNN: Elman 1990.

LSTM forget-gate bias: `forget_bias` (default 1.0), as the LSTM baselines of the IndRNN paper
(IndRNN_Theano_Lasagne adding.py: forget gate b = Constant(1.)) and of the BRC paper (Keras,
unit_forget_bias=True) train it, and as Jozefowicz, Zaremba & Sutskever 2015 recommend. PyTorch's
two bias vectors sum: the input one holds the value, the recurrent one is 0. `forget_bias: null`
keeps PyTorch's own init (both U(-1/sqrt(D), 1/sqrt(D)), mean 0).
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from study.models.base import ModelConfig, SequenceModel
from study.registry import MODELS


class RNNConfig(ModelConfig):
    pass


class LSTMConfig(RNNConfig):
    forget_bias: float | None = Field(1.0)     # None: PyTorch's default init


@torch.no_grad()
def set_forget_bias(lstm: nn.LSTM, value: float | None) -> None:
    """Every layer's forget-gate bias to `value` (PyTorch's gate order is i, f, g, o)."""
    if value is None:
        return
    D = lstm.hidden_size
    for k in range(lstm.num_layers):
        getattr(lstm, f"bias_ih_l{k}")[D:2 * D] = value
        getattr(lstm, f"bias_hh_l{k}")[D:2 * D] = 0.0


CHUNK = 1024     # steps per fused call (mix); a module attribute so benchmarks can vary it


class _Fused(SequenceModel):
    recurrent = True
    module: type[nn.RNNBase]
    gates = 1           # weight blocks per layer: 1 (rnn), 3 (gru), 4 (lstm)
    states = 1          # tensors carried: h, or (h, c)

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        self.rnn = self.module(cfg.d_model, cfg.d_model, num_layers=cfg.n_layers, batch_first=True,
                               dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)

    def mix(self, h, state):
        # One fused call per CHUNK steps, the state carried between calls without detaching:
        # full BPTT, the same function as one call over T (tests/test_models_fast.py checks
        # values and gradients at float64). Why: one call over a long T asks the allocator for
        # the whole sequence's gate workspace at once (hundreds of MiB at T = 16k); chunks keep
        # each block ~16 MiB, which the heap kept by study/heap.py can reuse from step to step
        # (that setting, not the chunking, is what removed the page faults that made the cost
        # per token grow with T: BENCHMARKS.md, "Cost per token at long T").
        T = h.shape[1]
        if T <= CHUNK:
            return self.rnn(h, state)           # (B, T, D), state (n_layers, B, D) each
        outs = []
        for part in h.split(CHUNK, dim=1):     # split: a slice per chunk would make the backward
            out, state = self.rnn(part, state)  # add a zero gradient the size of all of h per chunk
            outs.append(out)
        return torch.cat(outs, 1), state

    def state_size(self, seq_len, window):
        return self.states * self.cfg.n_layers * self.cfg.d_model

    def core_flops(self, seq_len, window):
        d = self.cfg.d_model
        # per layer: input and recurrent matmuls (2 x d x gates*d each, a multiply-add = 2 FLOPs)
        return self.cfg.n_layers * self.gates * 2 * (2 * d * d)


@MODELS.register("rnn", RNNConfig, "tanh Elman RNN (fused nn.RNN)", "Elman 1990")
class RNN(_Fused):
    module = nn.RNN


@MODELS.register("lstm", LSTMConfig, "LSTM (fused nn.LSTM), forget-gate bias forget_bias",
                 "Hochreiter & Schmidhuber 1997")
class LSTM(_Fused):
    module, gates, states = nn.LSTM, 4, 2

    def __init__(self, cfg, io, seq_len, window):
        super().__init__(cfg, io, seq_len, window)
        set_forget_bias(self.rnn, cfg.forget_bias)


@MODELS.register("gru", RNNConfig, "GRU (fused nn.GRU)", "Cho et al. 2014")
class GRU(_Fused):
    module, gates = nn.GRU, 3
