"""Copy memory (Arjovsky, Shah & Bengio 2016; Bai et al. 2018, locuslab/TCN copy_memory).

Tokens: 0 blank, 1..alphabet symbols, alphabet+1 the marker. A sequence of lag l is
`[pad blanks] [n_symbols symbols] [l blanks] [marker] [n_symbols blanks]`; the model must output
the symbols, in order, at the last n_symbols positions (the only scored positions). Every
sequence in a batch has the same length (the longest lag's), shorter lags are left-padded.

Example (n_symbols=2, alphabet=3, lag=2, marker 4):
    x = 3 1 0 0 4 0 0          y (scored) = . . . . . 3 1

Every symbol is recalled exactly lag + n_symbols + 1 steps after it was shown. The TCN setup
(Bai, Kolter & Koltun 2018, locuslab/TCN: `x = [10 digits, T-1 zeros, eleven 9s]`, length T + 20) is lag = T - 1.

Baseline convention: `loss` averages over the scored (recall) positions only, so the memoryless
baseline is ln(alphabet) per scored step. The TCN paper averages over every position of the
sequence; `tcn_baseline_loss(lag)` gives that number, n_symbols * ln(alphabet) / seq_len, which
is its 10 ln 8 / (T + 20) (their T + 20 is our lag + 2 n_symbols + 1).
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig


class CopyConfig(TaskConfig):
    n_symbols: int = Field(10, ge=1)
    alphabet: int = Field(8, ge=2)


@TASKS.register("copy", CopyConfig, "copy memory: recall n symbols after lag blanks and a marker",
                "Arjovsky et al. 2016; Bai et al. 2018")
class Copy(Task):
    kind = "classification"

    def __init__(self, cfg: CopyConfig):
        super().__init__(cfg)
        self.io = IO(d_out=cfg.alphabet + 2, vocab_size=cfg.alphabet + 2)
        self.chance = 1.0 / cfg.alphabet
        self.marker = cfg.alphabet + 1

    def default_seq_len(self, lag=None):
        return (lag or self.cfg.lag) + 2 * self.cfg.n_symbols + 1

    def distance(self, lag):
        return lag + self.cfg.n_symbols + 1       # every symbol, shown to recalled

    def sample(self, n, gen, lag=None, seq_len=None):
        c = self.cfg
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        symbols = torch.randint(1, c.alphabet + 1, (n, c.n_symbols), generator=gen)
        x = torch.zeros(n, T, dtype=torch.long)
        # the recall block is always the last n_symbols positions, the marker just before it
        start = T - 2 * c.n_symbols - 1 - lags                                  # (B,)
        cols = start[:, None] + torch.arange(c.n_symbols)                       # (B, n)
        x.scatter_(1, cols, symbols)
        x[:, T - c.n_symbols - 1] = self.marker
        y = torch.zeros(n, T, dtype=torch.long)
        y[:, T - c.n_symbols:] = symbols
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, T - c.n_symbols:] = True
        return Batch(x, y, mask, lags)

    def baseline_loss(self):
        # the recalled symbols are i.i.d. uniform over the alphabet, so without memory the best
        # prediction is uniform: ln(alphabet) nats per scored step
        return math.log(self.cfg.alphabet)

    def tcn_baseline_loss(self, lag: int | None = None) -> float:
        """The same baseline averaged over every position, as the TCN paper reports it (blanks
        and the marker are predictable without memory, so only the recall steps cost)."""
        return self.cfg.n_symbols * math.log(self.cfg.alphabet) / self.default_seq_len(lag)
