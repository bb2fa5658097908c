"""The one map from arch name to colour, so an arch looks the same in every figure."""
from __future__ import annotations

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
ORDER = ["rnn", "lstm", "gru", "stable_rnn", "stable_lstm", "indrnn", "lmu", "brc", "nbrc",
         "transformer", "linear_transformer", "universal_transformer", "tova", "tcn", "ssm"]


def color(arch: str) -> str:
    i = ORDER.index(arch) if arch in ORDER else len(ORDER) + sum(map(ord, arch))
    return PALETTE[i % len(PALETTE)]
