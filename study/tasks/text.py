"""Character-level language modelling on any UTF-8 file or folder (`path`), the real-data probe
of how much context a model uses (the effective-context measurement of Khandelwal et al. 2018,
"Sharp Nearby, Fuzzy Far Away", done by truncating the context).

Corpus: `path` (a file, or a folder whose files are read recursively in sorted order, skipping
files that are not UTF-8). The default, `path: null`, is the top-level `*.py` sources of the
running Python's standard library (`sysconfig.get_paths()["stdlib"]`, ~4.7 MB for CPython 3.11):
present on every machine without a download. Its exact bytes depend on the Python version, so
results on the default corpus compare within one Python version. The vocabulary is every
character of the corpus. The first 1 - val_frac of the characters train, the rest validate.

Training: windows of seq_len characters from the training part, next-character cross-entropy at
every step (`lag` is the trained context: seq_len defaults to it; `lag_dist` has no effect, every
window already holds every context length 1..lag).

Memory: `sample(n, gen, lag=l)` gives n windows of exactly l characters from the validation part,
scored at the last step only (the character after them), so the curve is the loss as a function
of how much context precedes the predicted character. Target positions are drawn independently
of l, so every ladder length scores the same characters and two lengths compare pairwise.
L* (`memory_rule = "gain"`, study.memory) is the largest ladder length at which doubling the
context still lowers the loss by at least `min_gain` nats/char, on the gain's 95% lower bound.

Baseline: the unigram entropy of the training part (a model that ignores all context).

Example (corpus "hello world", lag=3): training x = "llo", y = "lo " (all scored);
evaluation at l=3 for the target "w": x = "lo ", y scored at the last step = "w".
"""
from __future__ import annotations

import functools
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig

MAX_EVAL_TOKENS = 1 << 24     # cap on eval windows x length at one ladder length (~128 MB of ids)


def default_corpus() -> list[Path]:
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def corpus_files(path: str | None) -> list[Path]:
    if path is None:
        return default_corpus()
    p = Path(os.path.expanduser(path))
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    raise FileNotFoundError(f"text corpus {path!r} does not exist")


@functools.lru_cache(maxsize=4)
def load_corpus(path: str | None) -> tuple[torch.Tensor, np.ndarray]:
    """(ids (N,) int64, vocabulary (V,) of Unicode code points), ids indexing the vocabulary."""
    parts = []
    for f in corpus_files(path):
        try:
            parts.append(f.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, OSError):
            continue    # a folder may hold binaries: "any UTF-8 file" means skip the rest
    text = "".join(parts)
    if len(text) < 2:
        raise ValueError(f"text corpus {path!r} holds fewer than 2 UTF-8 characters")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab, ids = np.unique(codes, return_inverse=True)
    return torch.from_numpy(ids.astype(np.int64)), vocab


class TextConfig(TaskConfig):
    lag: int = Field(128, ge=1)                  # trained context: seq_len defaults to it
    path: str | None = None                      # UTF-8 file or folder; None: Python's stdlib sources
    val_frac: float = Field(0.1, gt=0, lt=1)     # the last val_frac of the corpus validates
    eval_chars: int = Field(1024, ge=1)          # characters scored per ladder length
    # effect size: a doubling of the context counts as memory only if it lowers the loss by at
    # least this many nats/char (its 95% lower bound does), so more eval_chars narrow the
    # interval instead of stretching L* to the longest context whose gain is merely nonzero
    min_gain: float = Field(0.01, ge=0)


@TASKS.register("text", TextConfig, "character-level language model; memory = loss vs preceding context",
                "Khandelwal et al. 2018")
class Text(Task):
    kind = "classification"
    memory_rule = "gain"

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.ids, self.vocab = load_corpus(cfg.path)
        self.min_gain = cfg.min_gain
        self.max_eval_lag = len(self.ids) - 1     # a context and its target must fit in the corpus
        self.cut = int(len(self.ids) * (1 - cfg.val_frac))
        if self.cut < 2 or len(self.ids) - self.cut < 1:
            raise ValueError(f"text corpus too short to split at val_frac={cfg.val_frac}")
        V = len(self.vocab)
        self.io = IO(d_out=V, vocab_size=V)
        counts = torch.bincount(self.ids[:self.cut], minlength=V).double()
        p = counts / counts.sum()
        self._baseline = float(-(p[p > 0] * p[p > 0].log()).sum())
        self.chance = float(p.max())
        # add-one smoothing: a validation character unseen in training gets a finite cost
        self.unigram_nll = -((counts + 1) / (counts.sum() + V)).log().float()   # (V,)

    def default_seq_len(self, lag=None):
        return lag or self.cfg.lag

    def eval_size(self, n, lag):
        return max(1, min(self.cfg.eval_chars, MAX_EVAL_TOKENS // lag))

    def sample(self, n, gen, lag=None, seq_len=None):
        if lag:
            return self._contexts(n, gen, lag)
        T = seq_len or self.default_seq_len()
        if self.cut < T + 1:
            raise ValueError(f"training part ({self.cut} characters) is shorter than seq_len {T} + 1")
        starts = torch.randint(0, self.cut - T, (n,), generator=gen)
        idx = starts[:, None] + torch.arange(T + 1)                             # (B, T+1)
        w = self.ids[idx]
        return Batch(w[:, :-1], w[:, 1:], torch.ones(n, T, dtype=torch.bool), torch.full((n,), T))

    def _contexts(self, n: int, gen: torch.Generator, lag: int) -> Batch:
        # Targets come from one draw of eval_chars positions whose first n are used, so every
        # ladder length sees the same targets (a paired comparison). The context may reach back
        # into the training part: only the predicted characters must be held out.
        lo = max(self.cut, lag)
        p = torch.randint(lo, len(self.ids), (max(n, self.cfg.eval_chars),), generator=gen)[:n]
        x = self.ids[(p - lag)[:, None] + torch.arange(lag)]                    # (B, lag)
        y = torch.zeros(n, lag, dtype=torch.long)
        y[:, -1] = self.ids[p]
        mask = torch.zeros(n, lag, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(x, y, mask, torch.full((n,), lag))

    def baseline_loss(self):
        return self._baseline
