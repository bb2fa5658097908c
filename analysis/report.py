"""`study report DIR`: figures (PNG and SVG), CSV tables and a self-contained report.html."""
from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from analysis.db import connect
from analysis.figures import memory_vs_compute
from study.results import Store

TRIAL_COLUMNS = ["trial_id", "cell", "arch", "task", "lag", "window", "seed", "d_model", "lr", "params",
                 "train_flops", "wall_s", "status", "memory_length", "solved", "final_loss"]


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_report(study_dir: str, spec) -> Path:
    store = Store(study_dir)
    if "://" in study_dir:
        raise NotImplementedError("study report writes to a local folder; copy the study locally first")
    out = Path(store.path) / "report"
    out.mkdir(parents=True, exist_ok=True)
    con = connect(study_dir)
    figures = memory_vs_compute.plot(con, out)
    cols = TRIAL_COLUMNS
    rows = con.execute(f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} "
                       "FROM trials ORDER BY cell, trial_id").fetchall()
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    counts = con.execute("SELECT status, count(*) FROM trials GROUP BY ALL ORDER BY 1").fetchall()
    png = next(p for p in figures if p.suffix == ".png")
    img = base64.b64encode(png.read_bytes()).decode()
    table = "\n".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    spec_text = html.escape((store.read_bytes("spec.yaml") or b"").decode())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>memscale: {html.escape(spec.study)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} th{{background:#f3f3f3}} pre{{background:#f7f7f7;padding:1em}}</style>
</head><body>
<h1>Study {html.escape(spec.study)}</h1>
<p>Trials by status: {html.escape(", ".join(f"{s} {n}" for s, n in counts) or "none")}</p>
<h2>Memory length against training compute</h2>
<img id="memory_vs_compute" alt="memory length vs training FLOPs" src="data:image/png;base64,{img}">
<h2>Trials</h2>
<table id="trials"><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr>
{table}
</table>
<h2>Spec</h2><pre>{spec_text}</pre>
</body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"
