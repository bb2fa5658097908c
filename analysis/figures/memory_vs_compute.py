"""Memory length L* against training FLOPs, log-log: trials as points, each arch's frontier as a
step line, and the bootstrap power-law fit L* = a * C^alpha with its 95% band. One panel per task
(memory lengths of different tasks are not comparable). Censored trials (L* only a lower bound)
are drawn as upward triangles and are not in the fit (analysis/fit.py)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from analysis.style import FAILED, MAX_POINTS, color, save  # noqa: E402

NAME = "memory_vs_compute"
ZERO_AT = 0.5     # L* = 0 cannot sit on a log axis: drawn hollow at this height
FAILED_AT = 0.3   # trials without a result (oom, timeout, diverged), at their compute when known


def _fmt_fit(f) -> str:
    if f is None or f.alpha is None:
        return "too few points" if f is not None else "no fit"
    return f"α={f.alpha:.2f} [{f.alpha_lo:.2f}, {f.alpha_hi:.2f}]"


def plot(con, out_dir: Path, fits: list[dict] | None = None) -> list[Path]:
    """fits: rows of analysis.fit.memory_fits (with their Fit objects under "_fit")."""
    by_key = {(r["task"], r["arch"]): r["_fit"] for r in (fits or [])}
    # A deterministic sample per arch keeps 100k-trial studies drawable; frontier points are never sampled away.
    pts = con.execute(f"""SELECT task, arch, train_flops, memory_length, status,
                                 coalesce(censored, false) AS censored FROM trials
                          WHERE train_flops > 0 AND (memory_length IS NOT NULL OR status IN ('oom', 'timeout', 'diverged'))
                          QUALIFY row_number() OVER (PARTITION BY task, arch, status IN ('completed', 'pruned')
                                                     ORDER BY hash(trial_id)) <= {MAX_POINTS}""").fetchall()
    front = con.execute("SELECT task, arch, train_flops, memory_length FROM frontier").fetchall()
    tasks = sorted({str(r[0]) for r in pts}) or ["(no trials)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(9.5 * len(tasks), 5), squeeze=False)
    # faint small dots when there are many trials, readable ones for a small study
    size, alpha = (16, 0.45) if len(pts) > 500 else (30, 0.85)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in pts if str(r[0]) == task]
        archs = sorted({r[1] for r in rows})
        for arch in archs:
            c = color(arch)
            ok = [r for r in rows if r[1] == arch and r[4] not in FAILED and r[3] is not None]
            pos = np.array([(r[2], r[3]) for r in ok if r[3] > 0 and not r[5]]).reshape(-1, 2)
            low = np.array([(r[2], r[3]) for r in ok if r[3] > 0 and r[5]]).reshape(-1, 2)
            zero = [r[2] for r in ok if r[3] == 0]
            f = by_key.get((task, arch))
            ax.scatter(pos[:, 0], pos[:, 1], color=c, s=size, alpha=alpha, lw=0, label=f"{arch}: {_fmt_fit(f)}")
            # a lower bound: the true L* lies somewhere above the triangle
            ax.scatter(low[:, 0], low[:, 1], color=c, s=size * 1.6, alpha=alpha, marker="^", lw=0)
            ax.scatter(zero, [ZERO_AT] * len(zero), facecolors="none", edgecolors=c, s=size, alpha=alpha)
            for status, (marker, _) in FAILED.items():
                bad = [r[2] for r in rows if r[1] == arch and r[4] == status]
                ax.scatter(bad, [FAILED_AT] * len(bad), marker=marker, color=c, s=40)
            fr = sorted((r[2], r[3]) for r in front if str(r[0]) == task and r[1] == arch)
            if fr:
                fx = [p[0] for p in fr]
                fy = [p[1] if p[1] > 0 else ZERO_AT for p in fr]
                ax.step(fx, fy, where="post", color=c, lw=1.6)
            if f is not None and f.alpha is not None:
                xs = np.geomspace(min(p[0] for p in fr if p[1] > 0), max(p[0] for p in fr), 60)
                lo, hi = f.band(xs)
                ax.plot(xs, f.a * xs ** f.alpha, color=c, lw=1.2, ls="--")
                ax.fill_between(xs, lo, hi, color=c, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Room for the L* = 0 and failed rows even when no trial remembered anything yet.
        ax.set_ylim(FAILED_AT * 0.6, max(ax.get_ylim()[1], 10))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())      # minor labels overlap on short ranges
        ax.set_xlabel("training compute (FLOPs, forward + backward)")
        ax.set_ylabel("memory length L* (steps)")
        ax.set_title(f"task {task}: memory length per unit of compute", fontsize=11)
        ax.axhline(ZERO_AT * 0.78, color="0.85", lw=0.8, ls=":")
        ax.grid(True, which="major", alpha=0.3)
        # Marker key in grey so it does not suggest an arch.
        ax.plot([], [], color="0.3", lw=1.6, label="frontier (step)")
        ax.plot([], [], color="0.3", lw=1.2, ls="--", label="power-law fit, 95% band")
        ax.scatter([], [], facecolors="none", edgecolors="0.3", s=16, label=f"L* = 0 (drawn at {ZERO_AT})")
        if any(r[5] for r in rows):
            ax.scatter([], [], color="0.3", marker="^", s=26, label="censored: L* ≥ this (not fitted)")
        for status, (marker, what) in FAILED.items():
            if any(r[4] == status for r in rows):
                ax.scatter([], [], marker=marker, color="0.3", s=40, label=f"{what} (drawn at {FAILED_AT})")
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)   # outside: no point hidden
    fig.tight_layout()
    return save(fig, out_dir, NAME, tight=True)     # the legends sit outside the axes
