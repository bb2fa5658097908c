"""Pareto front of a multi-objective study: every trial on the first two objectives of the spec,
one colour per arch, the trials no other trial beats on both as a black step line. Drawn only
when the spec has more than one objective."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.style import FAILED, MAX_POINTS, color, save  # noqa: E402

NAME = "pareto"
UNITS = {"memory_length": "memory length L* (steps)", "train_flops": "training compute (FLOPs)",
         "final_loss": "final training loss", "wall_s": "wall time (s)", "params": "parameters",
         "state_size": "state size (floats)"}


def pareto_mask(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Non-dominated points when both values are minimised: sort by v1 (ties: v2), then a point is
    on the front when its v2 beats everything before it, in O(n log n)."""
    order = np.lexsort((v2, v1))
    best = np.minimum.accumulate(v2[order])
    prev = np.concatenate([[np.inf], best[:-1]])
    on = np.zeros(len(v1), bool)
    # Equal (v1, v2) pairs do not dominate each other: keep every copy of a front point.
    s1, s2 = v1[order], v2[order]
    same = np.concatenate([[False], (s1[1:] == s1[:-1]) & (s2[1:] == s2[:-1])])
    keep = v2[order] < prev
    for i in np.flatnonzero(same):
        keep[i] = keep[i] or keep[i - 1]
    on[order] = keep
    return on


def _scale(ax_set, values: np.ndarray) -> None:
    pos = values[values > 0]
    if len(pos) == len(values) and len(pos) and pos.max() / pos.min() > 100:
        ax_set("log")


def plot(con, out_dir: Path, objectives) -> list[Path]:
    """objectives: spec.objectives (objects with .metric and .mode); nothing is drawn for fewer than 2."""
    if len(objectives) < 2:
        return []
    (m1, d1), (m2, d2) = [(o.metric, o.mode) for o in objectives[:2]]
    rows = con.execute(f"""SELECT arch, "{m1}", "{m2}", status FROM trials
                           WHERE "{m1}" IS NOT NULL AND "{m2}" IS NOT NULL""").fetchall()
    arch = np.array([r[0] for r in rows], dtype=object)
    x = np.array([r[1] for r in rows], dtype=float)
    y = np.array([r[2] for r in rows], dtype=float)
    status = np.array([r[3] for r in rows], dtype=object)
    ok = ~np.isin(status, list(FAILED))
    sign = {"min": 1.0, "max": -1.0}
    front = np.zeros(len(x), bool)
    front[ok] = pareto_mask(sign[d1] * x[ok], sign[d2] * y[ok])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    rng = np.random.default_rng(0)
    for a in sorted(set(arch)):
        c = color(a)
        sel = np.flatnonzero((arch == a) & ok)
        if len(sel) > MAX_POINTS:
            sel = rng.choice(sel, MAX_POINTS, replace=False)
        ax.scatter(x[sel], y[sel], color=c, s=14, alpha=0.45, lw=0, label=a)
        f = np.flatnonzero((arch == a) & front)
        ax.scatter(x[f], y[f], color=c, s=40, edgecolors="black", lw=0.8, zorder=3)
        for st, (marker, _) in FAILED.items():
            b = (arch == a) & (status == st)
            ax.scatter(x[b], y[b], marker=marker, color=c, s=40)
    if front.any():
        o = np.argsort(x[front])
        ax.step(x[front][o], y[front][o], where="post" if d1 == "min" else "pre", color="black", lw=1, zorder=2,
                label="Pareto front")
    for st, (marker, what) in FAILED.items():
        if (status == st).any():
            ax.scatter([], [], marker=marker, color="0.3", s=40, label=what)
    _scale(ax.set_xscale, x)
    _scale(ax.set_yscale, y)
    ax.set_xlabel(f"{UNITS.get(m1, m1)} ({d1})")
    ax.set_ylabel(f"{UNITS.get(m2, m2)} ({d2})")
    extra = f"; {len(objectives) - 2} more objective(s) not drawn" if len(objectives) > 2 else ""
    ax.set_title(f"Pareto front: {m1} ({d1}) vs {m2} ({d2}){extra}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save(fig, out_dir, NAME)
