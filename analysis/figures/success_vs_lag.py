"""Success probability over seeds against the trained lag, one line per arch (a windowed run is
its own line), with Wilson's 95% interval as an error bar (the success_rate view); the series are
nudged sideways a little so their bars do not hide each other. One panel per task.
Not drawn when no trial carries a `solved` flag."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.style import color, label_ticks, save, window_label  # noqa: E402

NAME = "success_vs_lag"
CAPTION = ("Success probability over seeds (k of n solved) against trained lag, per arch, with "
           "Wilson 95% intervals; diverged seeds count as failures, out-of-memory ones not at all")
MAX_TASKS = 6


def plot(con, out_dir: Path) -> list[Path]:
    has = con.execute("SELECT count(*) FROM trials WHERE solved IS NOT NULL").fetchone()[0]
    if not has:
        return []
    rows = con.execute("""SELECT task, arch, "window", lag, k, n, p, p_lo, p_hi FROM success_rate
                          WHERE n > 0 AND lag IS NOT NULL ORDER BY task, arch, "window" NULLS FIRST, lag""").fetchall()
    if not rows:
        return []
    tasks = sorted({str(r[0]) for r in rows})[:MAX_TASKS]
    ncol = min(3, len(tasks))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.8 * nrow), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks):
        sub = [r for r in rows if str(r[0]) == task]
        series = sorted({(r[1], r[2]) for r in sub}, key=lambda s: (s[0], s[1] is not None, s[1] or 0))
        for j, (arch, win) in enumerate(series):
            pts = [r for r in sub if (r[1], r[2]) == (arch, win)]
            c = color(arch)
            ls = "-" if win is None else "--"
            label = arch if win is None else f"{arch} @window {window_label(win)}"
            nudge = 2 ** (0.08 * (j - (len(series) - 1) / 2))
            lags = [r[3] * nudge for r in pts]
            p = [r[6] for r in pts]
            ax.errorbar(lags, p, yerr=[[r[6] - r[7] for r in pts], [r[8] - r[6] for r in pts]], color=c, ls=ls,
                        marker="o", ms=3.5, lw=1.3, elinewidth=0.9, capsize=2, label=label)
            for x, r in zip(lags if len(series) <= 3 else [], pts):   # k/n: an interval alone hides how few seeds
                ax.annotate(f"{r[4]}/{r[5]}", (x, r[6]), fontsize=6, color=c, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("log", base=2)
        label_ticks(ax.xaxis, [r[3] for r in sub])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("trained lag (steps)")
        ax.set_ylabel("P(solved) over seeds")
        ax.set_title(f"task {task}: success probability vs lag", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, out_dir, NAME)
