"""Memory length L* against training FLOPs, log-log, one colour per arch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.style import color  # noqa: E402

ZERO_AT = 0.5   # L* = 0 cannot sit on a log axis: drawn hollow at this height


def plot(con, out_dir: Path) -> list[Path]:
    rows = con.execute("""SELECT arch, train_flops, memory_length, status FROM trials
                          WHERE train_flops > 0 ORDER BY arch""").fetchall()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    archs = sorted({r[0] for r in rows})
    for arch in archs:
        pts = [r for r in rows if r[0] == arch and r[2] is not None]
        pos = [(r[1], r[2]) for r in pts if r[2] > 0]
        zero = [(r[1], ZERO_AT) for r in pts if r[2] == 0]
        c = color(arch)
        ax.scatter([p[0] for p in pos], [p[1] for p in pos], color=c, label=arch, s=36, alpha=0.85)
        ax.scatter([p[0] for p in zero], [p[1] for p in zero], facecolors="none", edgecolors=c, s=36)
        bad = [r for r in rows if r[0] == arch and r[3] in ("oom", "timeout", "diverged")]
        ax.scatter([r[1] for r in bad], [ZERO_AT] * len(bad), marker="x", color=c, s=40)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute (FLOPs, forward + backward)")
    ax.set_ylabel("memory length L* (steps)")
    ax.set_title("Memory length per unit of compute")
    ax.axhline(ZERO_AT, color="0.8", lw=0.8, ls=":")
    ax.text(1.0, ZERO_AT, " L*=0 (hollow), failed (x)", transform=ax.get_yaxis_transform(),
            fontsize=7, va="center", ha="left", color="0.4")
    ax.grid(True, which="major", alpha=0.3)
    if archs:
        ax.legend(title="arch", fontsize=8, loc="upper left")
    fig.tight_layout()
    out = []
    for ext in ("png", "svg"):
        p = out_dir / f"memory_vs_compute.{ext}"
        fig.savefig(p, dpi=130)
        out.append(p)
    plt.close(fig)
    return out
