"""The interface every architecture implements (docs/design.md, "Architectures").

Legend: B batch, T time steps, D d_model, V vocabulary, O outputs.

A model maps (B, T) token ids or (B, T, D_in) features to (B, T, O). `forward(x, state)` returns
`(y, state)`: for recurrent families the state carries between TBPTT chunks and streamed
evaluation chunks; for the others it is None and the whole sequence is seen in one pass.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from study.registry import IO


class ModelConfig(BaseModel):
    """Hyperparameters every family shares; a family's config subclasses it."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    d_model: int = Field(64, ge=1)
    n_layers: int = Field(1, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class SequenceModel(nn.Module):
    """Embedding/input projection -> family core (`mix`) -> linear read-out."""

    recurrent = False   # True: carries state, so the trainer truncates BPTT at `window`
    # An auxiliary loss term set by the last forward pass (the universal transformer's ACT ponder
    # cost), already weighted: the trainer adds it to the task loss. None for every other family.
    aux_loss: torch.Tensor | None = None

    def __init__(self, cfg: ModelConfig, io: IO, seq_len: int, window: int | None):
        super().__init__()
        self.cfg, self.io, self.seq_len, self.window = cfg, io, seq_len, window
        d = cfg.d_model
        self.embed = nn.Embedding(io.vocab_size, d) if io.vocab_size else nn.Linear(io.d_in, d)
        self.head = nn.Linear(d, io.d_out)

    def forward(self, x: torch.Tensor, state=None):
        h, state = self.mix(self.embed(x), state)   # (B, T, D)
        return self.head(h), state                  # (B, T, O)

    def mix(self, h: torch.Tensor, state):
        raise NotImplementedError

    def init_state(self, batch_size: int):
        return None

    def after_step(self) -> None:
        """Called by the trainer after every optimiser step: constraint projections live here."""

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reach(self, seq_len: int, window: int | None) -> int | None:
        """How far back, in steps, the training signal or attention can see: the longest
        dependency distance this trial can learn or use (None: no bound short of the data).
        Recurrent families: truncated BPTT cuts the gradient every `window` steps, so a loss sees
        at most window - 1 steps back; untruncated (window None or >= seq_len), the state is
        unbounded. Other families override this."""
        if self.recurrent:
            return None if window is None or window >= seq_len else window - 1
        raise NotImplementedError

    def state_size(self, seq_len: int, window: int | None) -> int:
        """Floats carried between steps per sequence."""
        raise NotImplementedError

    def core_flops(self, seq_len: int, window: int | None) -> float:
        raise NotImplementedError

    def flops_per_token(self, seq_len: int, window: int | None) -> float:
        """Analytic forward FLOPs per token (a multiply-add counts 2), read-out included."""
        d, io = self.cfg.d_model, self.io
        inp = 0 if io.vocab_size else 2 * io.d_in * d   # an embedding lookup is free
        return inp + self.core_flops(seq_len, window) + 2 * d * io.d_out


def detach_state(state):
    """Cut the gradient at a TBPTT chunk boundary, keeping the values."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state
