"""Memory length L* against state size (the memory a model carries from step to step: zoology's
headline axis, Arora et al. 2023, "Zoology: measuring and improving recall in efficient language
models") and against parameters, log-log. One point per configuration: the median L* over its
seeds, with a bar from the smallest to the largest seed; an upward triangle when a seed's L* is
only a lower bound (censored). One row of panels per task. Not drawn when no trial has a state
size (studies written before the column existed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from analysis.style import color, save  # noqa: E402

NAME = "lstar_vs_state_size"
CAPTION = ("L* against state size and against parameters: median over seeds per configuration, "
           "bar from the worst to the best seed; triangles: some seed's L* is a lower bound")
AXES = {"state_size": "state size (floats carried per sequence step)", "params": "parameters"}
MAX_TASKS = 6


def plot(con, out_dir: Path) -> list[Path]:
    has = con.execute("SELECT count(*) FROM trials WHERE state_size > 0 AND memory_length IS NOT NULL").fetchone()[0]
    if not has:
        return []
    rows = con.execute("""SELECT task, arch, regexp_replace(trial_id, '-s[0-9]+$', '') AS config,
                                 median(state_size), median(params),
                                 median(memory_length), min(memory_length), max(memory_length),
                                 bool_or(coalesce(censored, false))
                          FROM trials
                          WHERE status IN ('completed', 'pruned') AND memory_length > 0
                          GROUP BY ALL ORDER BY task, arch, config""").fetchall()
    tasks = sorted({str(r[0]) for r in rows})[:MAX_TASKS] or ["(no trials)"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 4.2 * len(tasks)), squeeze=False)
    for row_axes, task in zip(axes, tasks):
        sub = [r for r in rows if str(r[0]) == task]
        for ax, (col, (what, label)) in zip(row_axes, enumerate(AXES.items())):
            for arch in sorted({r[1] for r in sub}):
                pts = np.array([(r[3 + col], r[5], r[6], r[7], r[8]) for r in sub
                                if r[1] == arch and r[3 + col] is not None and r[3 + col] > 0], dtype=float)
                if not len(pts):
                    continue
                c = color(arch)
                x, med, lo, hi, cens = pts.T
                ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt="none", ecolor=c, alpha=0.5, lw=1)
                ax.scatter(x[cens == 0], med[cens == 0], color=c, s=26, label=arch, zorder=3)
                ax.scatter(x[cens == 1], med[cens == 1], color=c, s=40, marker="^", zorder=3,
                           label=None if (cens == 0).any() else arch)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
                if lim[1] > 10 * lim[0]:          # minor labels overlap on long ranges; short ones need them
                    axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(label)
            ax.set_ylabel("memory length L* (steps)")
            ax.set_title(f"task {task}: L* vs {what.replace('_', ' ')}", fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7.5, loc="best")
    fig.tight_layout()
    return save(fig, out_dir, NAME)
