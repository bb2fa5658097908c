"""Predicted against measured time, per trial and per arch: how far to trust the next dry run.

The prediction is the one `study run` stored at launch (prediction.json: the calibration points
or the MFU fallback it used), applied to each finished trial's own configuration (its searched
values), so a searched d_model is compared at the value the trial actually ran. Measured: the
training steps' time (`wall_s`) and the whole trial, training and evaluation
(`ended_at - started_at`). Only completed trials are compared: a pruned or timed-out trial ran
fewer steps than the prediction assumed.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.style import color, save  # noqa: E402

NAME = "predicted_vs_measured"
CAPTION = ("Predicted vs measured seconds per completed trial: training steps (left), whole trial with "
           "evaluation (right); the line is equality, the band a factor of 2")
NOTE = ("Prediction: what `study run` stored at launch (prediction.json), at each trial's own configuration. "
        "Measured: the training steps (wall_s) and the whole trial (ended_at - started_at). "
        "Completed trials only. Ratio = measured / predicted.")
COLUMNS = ["arch", "trials", "source", "predicted train s", "measured train s", "ratio", "predicted trial s",
           "measured trial s", "ratio "]


@dataclass
class Comparison:
    table: list[list]
    trials: list[dict]
    paths: list[Path]


def per_trial(con, store, spec) -> list[dict] | None:
    """One dict per completed trial with its predicted and measured seconds; None when the study
    has no prediction.json (started before predictions were stored)."""
    raw = store.read_bytes("prediction.json")
    if raw is None:
        return None
    from study.config import cells, given_values, searched
    from study.cost import rates_from_json, trial_cost
    rates = rates_from_json(json.loads(raw)["rates"])
    by_label = {c.label: c for c in cells(spec)}
    keys = list(searched(spec))
    have = {d[0] for d in con.execute("DESCRIBE trials").fetchall()}
    extra = "".join(f', "{k}"' for k in keys if k in have)
    rows = con.execute(f"""SELECT trial_id, cell, arch, wall_s, epoch(ended_at) - epoch(started_at) {extra}
                           FROM trials WHERE status = 'completed' AND ended_at IS NOT NULL ORDER BY trial_id""").fetchall()
    out = []
    for r in rows:
        cell = by_label.get(r[1])
        if cell is None:
            continue
        sampled = dict(zip([k for k in keys if k in have], r[5:]))
        c = trial_cost(spec, given_values(spec, cell, sampled), rates)
        out.append({"trial_id": r[0], "cell": r[1], "arch": r[2], "source": c.source,
                    "predicted_train_s": c.train_s, "measured_train_s": r[3],
                    "predicted_s": c.seconds, "measured_s": r[4]})
    return out


def compare(con, store, spec, out_dir: Path) -> Comparison | None:
    trials = per_trial(con, store, spec)
    if trials is None:
        return None
    table = []
    for arch in sorted({t["arch"] for t in trials}):
        ts = [t for t in trials if t["arch"] == arch]
        pt, mt = sum(t["predicted_train_s"] for t in ts), sum(t["measured_train_s"] for t in ts)
        ps, ms = sum(t["predicted_s"] for t in ts), sum(t["measured_s"] for t in ts)
        table.append([arch, len(ts), "/".join(sorted({t["source"] for t in ts})), round(pt, 2), round(mt, 2),
                      round(mt / pt, 2) if pt else None, round(ps, 2), round(ms, 2), round(ms / ps, 2) if ps else None])
    with open(out_dir / "prediction.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(trials[0]) if trials else ["trial_id"])
        w.writeheader()
        w.writerows(trials)
    return Comparison(table, trials, plot(trials, out_dir) if trials else [])


def plot(trials: list[dict], out_dir: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, (p, m, title) in zip(axes, (("predicted_train_s", "measured_train_s", "training steps"),
                                        ("predicted_s", "measured_s", "whole trial (with evaluation)"))):
        for arch in sorted({t["arch"] for t in trials}):
            ts = [t for t in trials if t["arch"] == arch and t[p] > 0 and t[m] and t[m] > 0]
            ax.scatter([t[p] for t in ts], [t[m] for t in ts], color=color(arch), s=18, alpha=0.7, label=arch)
        vals = [t[k] for t in trials for k in (p, m) if t[k] and t[k] > 0]
        if vals:
            lo, hi = min(vals) / 1.5, max(vals) * 1.5
            ax.plot([lo, hi], [lo, hi], color="0.3", lw=1)
            ax.fill_between([lo, hi], [lo / 2, hi / 2], [lo * 2, hi * 2], color="0.5", alpha=0.12, lw=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("predicted seconds")
        ax.set_ylabel("measured seconds")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save(fig, out_dir, NAME)
