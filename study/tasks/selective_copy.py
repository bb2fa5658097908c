"""Selective copying (Gu & Dao 2023, Mamba; state-spaces/s4 `copying.py` with variable=True,
the task as its authors generate it).

Tokens: 0 noise/blank, 1..alphabet symbols, alphabet+1 the marker. n_symbols symbols are
scattered among `lag` noise tokens (a region of lag + n_symbols steps), then n_symbols markers;
at each marker the model must output the next symbol, in order (only those steps are scored).
Unlike copy, the symbols' positions are random, so a fixed delay line cannot solve it.

To make `lag` an exact distance, the first symbol always opens the region: it is recalled
exactly lag + n_symbols steps later (copy: lag + n_symbols + 1); the other n_symbols - 1 sit at
sorted random positions in the rest of the region, closer. Training scores every recall;
evaluation (`lag` given) scores only the first symbol's, so the score at a ladder lag measures
the dependency at distance(lag) = lag + n_symbols and nothing closer. Shorter lags in a uniform
batch are left-padded with blanks, which are the noise token, as in the reference.

Baseline (same convention as copy): loss over scored steps only; symbols are uniform, so a
memoryless model scores ln(alphabet). Chance accuracy 1/alphabet.

Example (n_symbols=2, alphabet=3, lag=2, marker 4):
    x = 3 0 1 0 4 4          y (scored) = . . . . 3 1
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig


class SelectiveCopyConfig(TaskConfig):
    n_symbols: int = Field(16, ge=1)     # Mamba: 16 tokens
    alphabet: int = Field(14, ge=2)      # Mamba: vocabulary 16 = 14 symbols + noise + marker


@TASKS.register("selective_copy", SelectiveCopyConfig,
                "selective copying: recall symbols scattered at random among lag noise tokens",
                "Gu & Dao 2023")
class SelectiveCopy(Task):
    kind = "classification"

    def __init__(self, cfg: SelectiveCopyConfig):
        super().__init__(cfg)
        self.io = IO(d_out=cfg.alphabet + 2, vocab_size=cfg.alphabet + 2)
        self.chance = 1.0 / cfg.alphabet
        self.marker = cfg.alphabet + 1

    def default_seq_len(self, lag=None):
        return (lag or self.cfg.lag) + 2 * self.cfg.n_symbols

    def distance(self, lag):
        return lag + self.cfg.n_symbols           # the first symbol: the only one at a fixed distance

    def sample(self, n, gen, lag=None, seq_len=None):
        c, m = self.cfg, self.cfg.n_symbols
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        symbols = torch.randint(1, c.alphabet + 1, (n, m), generator=gen)
        start = T - 2 * m - lags                                                 # region start (B,)
        # choose m - 1 of the lag + m - 1 slots after the first symbol: random keys, invalid
        # slots (past this row's region) pushed below every valid one, keep the top m - 1
        slots = int(lags.max()) + m - 1
        keys = torch.rand(n, slots, generator=gen)
        keys[torch.arange(slots)[None, :] >= (lags + m - 1)[:, None]] = -1.0
        picked = keys.topk(m - 1, dim=1).indices.sort(dim=1).values             # (B, m-1)
        cols = torch.cat([start[:, None], start[:, None] + 1 + picked], dim=1)   # (B, m) sorted
        x = torch.zeros(n, T, dtype=torch.long)
        x.scatter_(1, cols, symbols)
        x[:, T - m:] = self.marker
        y = torch.zeros(n, T, dtype=torch.long)
        y[:, T - m:] = symbols
        mask = torch.zeros(n, T, dtype=torch.bool)
        # training scores every recall; evaluation only the first symbol's, the one whose
        # distance is exactly distance(lag) (the others sit closer, at random distances)
        mask[:, T - m:] = True if lag is None else torch.arange(m) == 0
        return Batch(x, y, mask, lags)

    def baseline_loss(self):
        return math.log(self.cfg.alphabet)
