"""Normalised score against dependency distance (L*'s unit) for the best trial of each cell (its
final evaluation), with the 95% interval as a band: L* counts a distance only when the band's
lower edge clears tau. One panel per (task, trained lag, window), archs in their colours, so each
panel compares archs under the same conditions. Lags the model could not be evaluated at (out of
memory or time while streaming) are marked at the bottom edge; a censored L* (only a lower bound:
the curve still held where evaluation stopped) is marked "L* ≥" in the legend."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.style import color, label_ticks, save, window_label  # noqa: E402

NAME = "lag_curves"
MAX_PANELS = 24


def plot(con, out_dir: Path) -> list[Path]:
    rows = con.execute("""SELECT task, cell_lag, "window", arch, cell, distance, score, score_lo, score_hi,
                                 feasible, tau, lag, censored
                          FROM best_trial_curves""").fetchall()
    keys = sorted({(str(r[0]), r[1], r[2]) for r in rows}, key=lambda k: (k[0], k[1] or 0, k[2] is None, k[2] or 0))
    shown = keys[:MAX_PANELS] or [("(no curves)", None, None)]
    ncol = min(4, len(shown))
    nrow = -(-len(shown) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.1 * nrow + 0.5), squeeze=False, sharey=True)
    taus = {r[10] for r in rows if r[10] is not None}
    for ax, (task, lag, win) in zip(axes.ravel(), shown):
        sub = [r for r in rows if (str(r[0]), r[1], r[2]) == (task, lag, win)]
        for cell in sorted({r[4] for r in sub}):
            pts = sorted((r for r in sub if r[4] == cell), key=lambda r: r[5])
            arch = pts[0][3]
            c = color(arch)
            ok = [r for r in pts if r[9] is not False and r[6] is not None]
            label = f"{arch} (L* ≥, censored)" if pts[0][12] else arch
            ax.plot([r[5] for r in ok], [r[6] for r in ok], color=c, lw=1.4, marker="o", ms=2.5, label=label)
            ax.fill_between([r[5] for r in ok], [r[7] if r[7] is not None else r[6] for r in ok],
                            [r[8] if r[8] is not None else r[6] for r in ok], color=c, alpha=0.15, lw=0)
            bad = [r[5] for r in pts if r[9] is False]
            ax.scatter(bad, [0.03] * len(bad), marker="x", color=c, s=30,
                       transform=ax.get_xaxis_transform(), clip_on=False)
        for tau in taus:
            ax.axhline(tau, color="0.4", lw=0.8, ls="--")
        trained = next((r[5] for r in sub if r[11] == lag), None)    # the trained lag's distance
        if trained:
            ax.axvline(trained, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        label_ticks(ax.xaxis, [r[5] for r in sub] if len({r[5] for r in sub}) <= 6 else [])
        ax.set_ylim(-0.15, 1.05)
        ax.set_title(f"{task}: trained lag {lag}, window {window_label(win)}", fontsize=9)
        ax.set_xlabel("dependency distance (steps)", fontsize=8)
        ax.grid(True, alpha=0.3)
        if sub:
            ax.legend(fontsize=7, loc="lower left")
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised score", fontsize=8)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    more = f" (first {MAX_PANELS} of {len(keys)} panels)" if len(keys) > MAX_PANELS else ""
    fig.suptitle("Score vs lag, best trial per cell; dashed: τ, dotted: trained lag, x: infeasible lag" + more,
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, NAME)
