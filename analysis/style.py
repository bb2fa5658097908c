"""The one map from arch name to colour, so an arch looks the same in every figure."""
from __future__ import annotations

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
           "#e6550d", "#31a354", "#756bb1", "#636363", "#fd8d3c", "#9c9ede"]
ORDER = ["rnn", "lstm", "gru", "stable_rnn", "stable_lstm", "indrnn", "lmu", "lmu_cell", "brc", "nbrc",
         "transformer", "linear_transformer", "universal_transformer", "tova", "tcn", "ssm",
         "gated_conv", "wavenet", "sparse_attention", "transformer_xl", "gtrxl", "layernorm_lstm"]


def color(arch: str) -> str:
    arch = arch.split(" @")[0]          # a cost series "transformer @window 64" keeps its family's colour
    i = ORDER.index(arch) if arch in ORDER else len(ORDER) + sum(map(ord, arch))
    return PALETTE[i % len(PALETTE)]


# Trials that never produced a result are drawn, not dropped ("attention ran out of memory at
# 16k" is a finding): one marker per failure status, the same in every figure.
FAILED = {"oom": ("x", "out of memory"), "timeout": ("1", "timed out"), "diverged": ("+", "diverged")}
MAX_POINTS = 2000     # scatter points per arch: beyond this a figure shows a deterministic sample


def window_label(w) -> str:
    return "full" if w is None else str(int(w))


def save(fig, out_dir, name: str, tight: bool = False) -> list:
    """PNG (for the report and quick looks) and SVG (for papers) of one figure, then close it.
    tight: crop to the drawn artists (a second layout pass, so only where a colorbar needs it)."""
    import matplotlib.pyplot as plt
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=130, bbox_inches="tight" if tight else None)
        paths.append(p)
    plt.close(fig)
    return paths


def label_ticks(axis, values) -> None:
    """Label a log axis at the values actually run (seq_len, lag) instead of matplotlib's minor
    labels, which overlap and are slow to lay out; falls back to the default when there are many."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
    vals = sorted({v for v in values if v is not None and v > 0})
    if 0 < len(vals) <= 10:
        axis.set_major_locator(FixedLocator(vals))
        axis.set_major_formatter(lambda v, _: f"{v:g}")
        axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
