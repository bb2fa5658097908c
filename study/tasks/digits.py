"""Pixel-by-pixel digit classification on scikit-learn's bundled 8x8 handwritten digits
(`sklearn.datasets.load_digits`, 1797 images, no download): a small stand-in for sequential
and permuted MNIST (Le et al. 2015), which does not fit a 2-core CPU (hours of training).

Two input channels: the pixel intensity / 16, and a flag that is 1 while the image is shown. The
image is fed row by row, optionally upsampled (each pixel becomes an upsample x upsample block,
(8 upsample)^2 steps) and optionally permuted by one fixed permutation (seed 0, the same in every
trial, as psMNIST fixes one). Then `lag` blank steps, then the read-out step, the only scored
one: distance from the last pixel to the read-out is lag + 1. Shorter lags in a uniform batch are
left-padded with blanks (flag 0).

Split: a fixed shuffle (seed 0) holds out 20% of the images; training batches come from the rest
and evaluation (`sample(..., lag=...)`) from the held-out images.

Chance: 1/10, a random guess. The classes are balanced to within 1% in training (0.090-0.108),
so no class is a better memoryless answer; on the 359 held-out images a constant answer scores
0.075-0.131 depending on the class. Baseline: the training class entropy (2.301 vs ln 10 = 2.303).

Example (upsample=1, lag=2): steps 0-63 = the 64 pixels (flag 1), steps 64-65 blank, step 66
is the read-out, y = the digit's label there.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from pydantic import Field

from study.registry import IO, TASKS
from study.tasks.base import Batch, Task, TaskConfig

HELD_OUT = 0.2


@functools.lru_cache(maxsize=None)
def load(upsample: int, permute: bool) -> dict:
    """Pixels (N, P) in [0, 1] in feeding order, labels (N,), and the train / held-out indices."""
    from sklearn.datasets import load_digits    # local import: only this task needs sklearn
    d = load_digits()
    img = torch.tensor(d.images / 16.0, dtype=torch.float32)                    # (N, 8, 8)
    img = img.repeat_interleave(upsample, 1).repeat_interleave(upsample, 2)      # (N, 8u, 8u)
    pix = img.reshape(len(img), -1)                                              # (N, P) row-major
    if permute:
        pix = pix[:, torch.from_numpy(np.random.default_rng(0).permutation(pix.shape[1]))]
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(pix)))
    cut = int(round(len(pix) * (1 - HELD_OUT)))
    return {"pixels": pix, "labels": torch.tensor(d.target, dtype=torch.long),
            "train": order[:cut], "held_out": order[cut:]}


class DigitsConfig(TaskConfig):
    upsample: int = Field(1, ge=1)       # each pixel -> upsample x upsample steps
    permute: bool = False                # feed pixels in one fixed random order (pMNIST-style)


@TASKS.register("digits", DigitsConfig,
                "sklearn 8x8 digits pixel by pixel (optionally permuted), lag blanks before the read-out",
                "Le et al. 2015")
class Digits(Task):
    kind = "classification"

    def __init__(self, cfg: DigitsConfig):
        super().__init__(cfg)
        self.data = load(cfg.upsample, cfg.permute)
        self.n_pixels = self.data["pixels"].shape[1]
        self.io = IO(d_out=10, d_in=2)
        self.chance = 0.1
        train_counts = torch.bincount(self.data["labels"][self.data["train"]], minlength=10).double()
        p = train_counts / train_counts.sum()
        self._baseline = float(-(p[p > 0] * p[p > 0].log()).sum())

    def default_seq_len(self, lag=None):
        return self.n_pixels + (lag or self.cfg.lag) + 1

    def distance(self, lag):
        return lag + 1        # from the last pixel to the read-out: the image is gone lag + 1 steps

    def sample(self, n, gen, lag=None, seq_len=None):
        P = self.n_pixels
        lags, T = self.lags_and_length(n, gen, lag, seq_len)
        pool = self.data["held_out"] if lag else self.data["train"]
        idx = pool[torch.randint(0, len(pool), (n,), generator=gen)]
        start = T - 1 - lags - P                                                 # first pixel (B,)
        cols = start[:, None] + torch.arange(P)                                  # (B, P)
        x = torch.zeros(n, T, 2)
        x[..., 0].scatter_(1, cols, self.data["pixels"][idx])
        x[..., 1].scatter_(1, cols, torch.ones(n, P))
        y = torch.zeros(n, T, dtype=torch.long)
        y[:, -1] = self.data["labels"][idx]
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(x, y, mask, lags)

    def baseline_loss(self):
        return self._baseline
