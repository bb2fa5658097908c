"""Cost of one training sequence against seq_len, log-log: wall seconds (left) and peak memory
(right) per sequence, trials as points, the median per seq_len as a line, and the bootstrap cost
exponent of each arch in the legend. Trials that ran out of memory or time are marked along the
top edge at their seq_len: where an arch stops fitting is part of its cost."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.fit import COST  # noqa: E402
from analysis.style import FAILED, MAX_POINTS, color, label_ticks, save  # noqa: E402

NAME = "cost_vs_seq_len"
PANELS = [("wall_s_per_seq", "wall seconds per training sequence (s)", 1.0),
          ("peak_mem_bytes_per_seq", "peak memory per training sequence (MiB)", 2.0 ** -20)]


def _label(arch: str, f) -> str:
    if f is None:
        return arch
    if f.alpha is None:
        return f"{arch}: too few points"
    return f"{arch}: exponent {f.alpha:.2f} [{f.alpha_lo:.2f}, {f.alpha_hi:.2f}]"


def plot(con, out_dir: Path, fits: list[dict] | None = None) -> list[Path]:
    """fits: rows of analysis.fit.cost_fits."""
    by_key = {(r["arch"], r["fit"].split(" ")[0]): r["_fit"] for r in (fits or [])}
    pts = con.execute(f"""SELECT arch, seq_len, {COST['wall_s_per_seq']}, {COST['peak_mem_bytes_per_seq']}
                          FROM trials
                          WHERE status IN ('completed', 'pruned') AND tokens > 0 AND seq_len > 0
                          QUALIFY row_number() OVER (PARTITION BY arch ORDER BY hash(trial_id)) <= {MAX_POINTS}
                       """).fetchall()
    med = con.execute("SELECT arch, seq_len, wall_s_per_seq, peak_mem_bytes_per_seq FROM cost_by_seq_len "
                      "WHERE trials > 0 ORDER BY arch, seq_len").fetchall()
    failed = con.execute("""SELECT arch, seq_len, status, count(*) FROM trials
                            WHERE status IN ('oom', 'timeout') AND seq_len > 0 GROUP BY ALL""").fetchall()
    archs = sorted({r[0] for r in pts} | {r[0] for r in failed})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for k, (ax, (what, ylabel, scale)) in enumerate(zip(axes, PANELS)):
        for arch in archs:
            c = color(arch)
            p = [(r[1], r[2 + k] * scale) for r in pts if r[0] == arch and r[2 + k] is not None and r[2 + k] > 0]
            ax.scatter([q[0] for q in p], [q[1] for q in p], color=c, s=12, alpha=0.35, lw=0)
            m = [(r[1], r[2 + k] * scale) for r in med if r[0] == arch and r[2 + k] is not None]
            ax.plot([q[0] for q in m], [q[1] for q in m], color=c, lw=1.5, marker="o", ms=3,
                    label=_label(arch, by_key.get((arch, what))))
            for status, (marker, _) in FAILED.items():
                xs = [r[1] for r in failed if r[0] == arch and r[2] == status]
                ax.scatter(xs, [0.96] * len(xs), marker=marker, color=c, s=60,
                           transform=ax.get_xaxis_transform(), clip_on=False)
        for status, (marker, what) in FAILED.items():
            if any(r[2] == status for r in failed):
                ax.scatter([], [], marker=marker, color="0.3", s=60, label=f"{what} at this seq_len (top edge)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        label_ticks(ax.xaxis, [r[1] for r in med] + [r[1] for r in failed])
        ax.set_xlabel("sequence length seq_len (steps)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if archs:
            ax.legend(fontsize=7.5, loc="lower right", title="arch: fitted exponent [95% CI]", title_fontsize=7.5)
    axes[0].set_title("training time per sequence", fontsize=11)
    axes[1].set_title("peak memory per sequence", fontsize=11)
    fig.tight_layout()
    return save(fig, out_dir, NAME)
