"""Normalised score of each cell's best trial at the cell's lag, as a (window x lag) heatmap, one
panel per (task, arch). Cells where trials ran out of memory or time and nothing scored are hatched
and labelled, not left blank: an infeasible cell is a result."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.style import color, save, window_label  # noqa: E402

NAME = "score_heatmap"
MAX_ANNOTATED = 80     # beyond this many cells per panel the numbers would overlap


def plot(con, out_dir: Path) -> list[Path]:
    # Cells differing only in other grid axes (e.g. d_model) share a (lag, window) square: keep the best.
    rows = con.execute("""SELECT task, arch, lag, "window", max(best_score), sum(infeasible), sum(trials)
                          FROM cell_scores GROUP BY ALL""").fetchall()
    panels = sorted({(str(r[0]), r[1]) for r in rows}) or [("(no trials)", "")]
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 1, 3.4 * nrow + 0.6), squeeze=False)
    im = None
    for ax, (task, arch) in zip(axes.ravel(), panels):
        sub = [r for r in rows if str(r[0]) == task and r[1] == arch]
        lags = sorted({r[2] for r in sub if r[2] is not None})
        wins = sorted({r[3] for r in sub}, key=lambda w: (w is None, w or 0))
        grid = np.full((len(wins), len(lags)), np.nan)
        for r in sub:
            if r[2] is None:
                continue
            i, j = wins.index(r[3]), lags.index(r[2])
            if r[4] is not None:
                grid[i, j] = r[4]
            else:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="///",
                                           edgecolor="0.5", lw=0))
                ax.text(j, i, "infeasible" if r[5] else "no score", ha="center", va="center", fontsize=6.5)
        if not grid.size:
            ax.text(0.5, 0.5, "no cells yet", ha="center", va="center", transform=ax.transAxes)
            continue
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        if grid.size <= MAX_ANNOTATED:
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(lags)), [str(x) for x in lags], fontsize=8)
        ax.set_yticks(range(len(wins)), [window_label(w) for w in wins], fontsize=8)
        ax.set_xlabel("lag (steps)")
        ax.set_ylabel("window (steps)")
        ax.set_title(f"{arch}  (task {task})", fontsize=10, color=color(arch) if arch else "black")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85,
                     label="normalised score at the cell's lag (best trial)")
    fig.suptitle("Which lags each arch learns under each truncation window", fontsize=11)
    return save(fig, out_dir, NAME, tight=True)
