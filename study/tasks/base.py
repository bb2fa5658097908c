"""The interface every memory task implements (docs/design.md, "Tasks" and "Memory length").

A task plants a dependency `lag` steps back, generates batches deterministically from a
torch.Generator, marks which positions are scored, and knows its chance level and the loss of
the best model that ignores the planted information.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from study.registry import IO


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lag: int = Field(16, ge=1)
    lag_dist: Literal["uniform", "fixed"] = "uniform"   # training lags: U{1..lag} or always lag


@dataclass
class Batch:
    x: torch.Tensor        # (B, T) long token ids, or (B, T, D_in) float features
    y: torch.Tensor        # (B, T) long targets, or (B, T, O) float targets
    mask: torch.Tensor     # (B, T) bool: the scored positions
    lag: torch.Tensor      # (B,) the lag planted in each sequence

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device), self.y.to(device), self.mask.to(device), self.lag.to(device))


class Task:
    kind: Literal["classification", "regression"] = "classification"
    io: IO
    chance: float = 0.0
    # How L* is read off the lag curve (study.memory.memory_length): "threshold" is docs/design.md's
    # score >= tau rule; "gain" (text) is the longest context that still lowers the loss.
    memory_rule: Literal["threshold", "gain"] = "threshold"
    min_gain: float = 0.0     # "gain" tasks: the smallest loss drop (nats/char) that counts as memory
    max_eval_lag: int | None = None   # the longest lag the data allows evaluating (None: any)

    def distance(self, lag: int) -> int:
        """The dependency distance measured at ladder lag `lag`: the steps from the planted
        information to the scored position that needs it (docs/design.md, "Memory length"). When a
        task evaluates (`sample(..., lag=...)`) it scores only positions at exactly this distance,
        so L*, which is reported in these units, means the same thing for every task."""
        return lag

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def default_seq_len(self, lag: int | None = None) -> int:
        """The sequence length that holds a dependency of `lag` (default: the trained lag)."""
        raise NotImplementedError

    def lags(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.cfg.lag_dist == "fixed":
            return torch.full((n,), self.cfg.lag, dtype=torch.long)
        return torch.randint(1, self.cfg.lag + 1, (n,), generator=gen)

    def eval_size(self, n: int, lag: int) -> int:
        """Sequences to score at one ladder lag, given the trial's eval_batch n (text scores more)."""
        return n

    def lags_and_length(self, n: int, gen: torch.Generator, lag: int | None,
                        seq_len: int | None) -> tuple[torch.Tensor, int]:
        """Each sequence's lag (all equal to `lag` when evaluating) and the batch's length, which
        must hold the longest of them."""
        lags = torch.full((n,), lag, dtype=torch.long) if lag else self.lags(n, gen)
        T = seq_len or self.default_seq_len(lag)
        need = self.default_seq_len(int(lags.max()))
        if T < need:
            raise ValueError(f"seq_len {T} cannot hold lag {int(lags.max())} (it needs {need} steps)")
        return lags, T

    def sample(self, n: int, gen: torch.Generator, lag: int | None = None, seq_len: int | None = None) -> Batch:
        """n sequences; `lag` fixes every sequence's lag (evaluation), else the training distribution."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, b: Batch) -> torch.Tensor:
        """Mean loss over the scored positions. out: (B, T, O)."""
        if self.kind == "classification":
            return F.cross_entropy(out[b.mask], b.y[b.mask])
        return F.mse_loss(out[b.mask], b.y[b.mask])

    def baseline_loss(self) -> float:
        """Loss on scored positions of the best predictor that ignores the planted information."""
        raise NotImplementedError


class ReadOutRegression(Task):
    """A value from `lag` steps before the last step is regressed at the last step (adding,
    recall_first): two input channels (value, marker), one output, only the last step scored."""
    kind = "regression"

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.io = IO(d_out=1, d_in=2)
        self.chance = 0.0

    def default_seq_len(self, lag=None):
        return (lag or self.cfg.lag) + 1

    def read_out(self, x: torch.Tensor, target: torch.Tensor, lags: torch.Tensor) -> Batch:
        """x (B, T, 2) and the (B,) targets -> a Batch scored at the last step."""
        n, T = x.shape[:2]
        y = torch.zeros(n, T, 1)
        y[:, -1, 0] = target
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(x, y, mask, lags)
