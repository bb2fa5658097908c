"""Multi-query associative recall, MQAR (Arora et al. 2023, Zoology; HazyResearch/zoology
`data/multiquery_ar.py`).

Tokens: 0 blank, keys 1..alphabet, values alphabet+1..2*alphabet (disjoint ranges, as Zoology
splits its vocabulary in halves). A sequence is n_pairs key-value pairs (distinct keys, values
drawn with replacement), `lag` blanks, then every key once more, in random order, as a query; at
each query the model must output that key's value (only query steps are scored).

Departure: Zoology scatters queries at power-law offsets; here `lag` is the blank stretch between
the pairs and the queries (as in copy), so every answer lies between lag + 1 and
lag + 3 * n_pairs - 2 steps before its query. The query order is random, so the model must look
values up by key: a delay line does not solve it. Training scores every query; evaluation (`lag`
given) makes the last query ask the first pair and scores only it, so the score at a ladder lag
measures the dependency at distance(lag) = lag + 3 n_pairs - 2, the longest one planted. Shorter
lags in a uniform batch are left-padded.

Baseline (same convention as copy): loss over scored steps; values are uniform over the
alphabet, so a memoryless model scores ln(alphabet). Chance accuracy 1/alphabet.

Example (n_pairs=2, alphabet=3: keys 1-3, values 4-6; lag=1):
    x = 2 6 3 4 0 3 2          y (scored) = . . . . . 4 6
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig


class AssocRecallConfig(TaskConfig):
    n_pairs: int = Field(8, ge=1)        # key-value pairs (Zoology's num_kv_pairs)
    alphabet: int = Field(64, ge=2)      # distinct keys, and distinct values

    @model_validator(mode="after")
    def _enough_keys(self):
        if self.alphabet < self.n_pairs:
            raise ValueError(f"alphabet {self.alphabet} is smaller than n_pairs {self.n_pairs} (keys are distinct)")
        return self


@TASKS.register("assoc_recall", AssocRecallConfig,
                "multi-query associative recall: look up n_pairs values by key after lag blanks",
                "Arora et al. 2023")
class AssocRecall(Task):
    kind = "classification"

    def __init__(self, cfg: AssocRecallConfig):
        super().__init__(cfg)
        self.io = IO(d_out=2 * cfg.alphabet + 1, vocab_size=2 * cfg.alphabet + 1)
        self.chance = 1.0 / cfg.alphabet

    def default_seq_len(self, lag=None):
        return (lag or self.cfg.lag) + 3 * self.cfg.n_pairs

    def distance(self, lag):
        return lag + 3 * self.cfg.n_pairs - 2      # the first pair's value, asked by the last query

    def sample(self, n, gen, lag=None, seq_len=None):
        A, K = self.cfg.alphabet, self.cfg.n_pairs
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        keys = torch.rand(n, A, generator=gen).argsort(dim=1)[:, :K] + 1         # distinct (B, K)
        values = torch.randint(A + 1, 2 * A + 1, (n, K), generator=gen)
        order = torch.rand(n, K, generator=gen).argsort(dim=1)                   # query j asks pair order[j]
        if lag is not None:
            # evaluation: the last query asks the first pair (an event of probability 1/K in
            # training), the one answer exactly distance(lag) back; swap it into place
            j = (order == 0).long().argmax(1)
            order[torch.arange(n), j] = order[:, -1]
            order[:, -1] = 0
        start = T - 3 * K - lags                                                 # (B,)
        x = torch.zeros(n, T, dtype=torch.long)
        pos = start[:, None] + 2 * torch.arange(K)                               # key positions (B, K)
        x.scatter_(1, pos, keys)
        x.scatter_(1, pos + 1, values)
        x[:, T - K:] = keys.gather(1, order)
        y = torch.zeros(n, T, dtype=torch.long)
        y[:, T - K:] = values.gather(1, order)
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, T - K:] = True
        if lag is not None:       # evaluation scores only the answer at distance(lag)
            mask[:, T - K:-1] = False
        return Batch(x, y, mask, lags)

    def baseline_loss(self):
        return math.log(self.cfg.alphabet)
