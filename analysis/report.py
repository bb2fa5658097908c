"""`study report DIR`: figures (PNG and SVG), one CSV per table and a self-contained report.html
(figures embedded as data URIs, so the one file can be mailed or attached to a paper)."""
from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import shutil
import tempfile
import time
from pathlib import Path

from analysis import fit, scaling
from analysis.db import fmt_value, query_names, question, snapshot
from analysis.figures import (cost_vs_seq_len, lag_curves, lstar_vs_state, memory_vs_compute, pareto, prediction,
                              score_heatmap, success_vs_lag)
from study.results import Store

HTML_ROWS = 50          # rows of each table shown inline; the CSV has all of them
TRIAL_COLUMNS = ["trial_id", "cell", "arch", "task", "lag", "window", "seq_len", "seed", "d_model", "lr", "params",
                 "train_flops", "wall_s", "peak_mem_bytes", "status", "memory_length", "solved", "final_loss"]
FIT_COLUMNS = ["task", "arch", "fit", "trials", "n", "n_x", "alpha", "alpha_lo", "alpha_hi", "a", "a_lo", "a_hi",
               "r2", "note", *scaling.DIAGNOSTICS]      # the diagnostics are empty on the cost fits
PROVENANCE = ["code_version", "torch_version", "host", "device", "dtype"]
CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:1em;overflow-x:auto}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555;margin-bottom:2em}.note{color:#777;font-size:12px}"""




def _table(cols: list[str], rows: list, ident: str, total: int | None = None, csv_name: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(fmt_value(v))}</td>" for v in r) + "</tr>" for r in rows)
    note = ""
    if total is not None and total > len(rows):
        note = f'<p class="note">first {len(rows)} of {total} rows; all in {html.escape(csv_name)}</p>'
    elif not rows:
        note = '<p class="note">no rows</p>'
    return f'<table id="{ident}"><tr>{head}</tr>\n{body}\n</table>{note}'


def _interval(v, lo, hi, digits: str = ".3g") -> str:
    if v is None:
        return ""
    return f"{v:{digits}} [{lo:{digits}}, {hi:{digits}}]"


def _form(r: dict) -> str:
    if not r.get("form"):
        return ""
    if r["form"] == "saturating":
        return f'saturating, L_max {r["l_max"]:.3g}'
    return r["form"]


def _copy_csv(con, sql: str, path: Path) -> None:
    """DuckDB writes the CSV itself: 100k-row tables never pass through Python."""
    con.execute(f"COPY ({sql}) TO '{str(path).replace(chr(39), chr(39) * 2)}' (HEADER, DELIMITER ',')")


def _figure(paths: list[Path], name: str, caption: str) -> str:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return ""
    data = base64.b64encode(png.read_bytes()).decode()
    return (f'<figure><img id="{name}" alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(caption)} (also {name}.svg)</figcaption></figure>')


def spec_versions(store: Store, con, has_column: bool) -> list[tuple]:
    """(spec version, trials, time recorded, note) for every version of the study's spec
    (specs/index.json, written by study/grow.py) and the trials each contributed."""
    counts = dict(con.execute("SELECT spec_version, count(*) FROM trials GROUP BY 1").fetchall()) if has_column \
        else {None: con.execute("SELECT count(*) FROM trials").fetchone()[0]}
    try:
        versions = json.loads(store.read_bytes("specs", "index.json") or b"{}").get("versions", [])
    except ValueError:
        versions = []
    if versions and versions[0].get("migrated"):      # a study from before spec history: its rows are version 1's
        counts[1] = counts.get(1, 0) + counts.pop(None, 0)
    rows = [(f"spec version {v['version']}", counts.pop(v["version"], 0), v.get("time"), v.get("note"))
            for v in versions]
    rows += [("before spec history" if k is None else f"spec version {k}", n, None, None)
             for k, n in sorted(counts.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)) if n]
    return rows


def write_report(study_dir: str, spec, n_boot: int = fit.N_BOOT, seed: int = 0,
                 timings: dict | None = None) -> Path:
    """Write report/ under the study folder and return the path of report.html.

    timings, when given, receives the seconds spent in each stage (for bench/bench_report.py).
    """
    store = Store(study_dir)
    # Written into a hidden folder beside the final one and renamed into place when complete, so
    # a report killed midway never leaves a half-written report/. A remote study (s3://, gs://)
    # is reported in a local folder, then uploaded beside its tables.
    if store.local:
        final = Path(store.path) / "report"
        out = Path(tempfile.mkdtemp(prefix=".report-", dir=store.path))
        out.chmod(0o755)             # mkdtemp's 0700 would carry over to report/
    else:
        final, out = None, Path(tempfile.mkdtemp(prefix="memscale-report-"))
    try:
        html_path = _write(store, study_dir, spec, out, n_boot, seed, timings)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final is None:
        return html_path
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".report-old-", dir=store.path))
        final.rename(old / "report")
    out.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final / "report.html"


def _write(store: Store, study_dir: str, spec, out: Path, n_boot: int, seed: int, timings: dict | None) -> Path:
    clock = {"t": time.perf_counter()}
    timings = timings if timings is not None else {}

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock["t"]
        clock["t"] = now

    # the tables' copy lives in out/ (in the study folder for a local study) and goes before the rename
    scratch = out / ".snapshot"
    con = snapshot(study_dir, scratch=scratch)
    lap("read")
    sections, csvs = [], []
    for name in query_names():
        _copy_csv(con, f"SELECT * FROM {name}", out / f"{name}.csv")
        cur = con.execute(f"SELECT * FROM {name} LIMIT {HTML_ROWS}")   # drained: a half-read result locks the connection
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
        total = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        sections.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(question(name))}</p>"
                        + _table(cols, rows, f"q-{name}", total, f"{name}.csv"))
        csvs.append(f"{name}.csv")
    lap("queries")

    fits = scaling.memory_scaling_fits(con, n_boot, seed)
    costs = fit.cost_fits(con, n_boot, seed)
    fit_rows = [[r.get(c) for c in FIT_COLUMNS] for r in fits + costs]
    with open(out / "fits.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIT_COLUMNS)
        w.writerows(fit_rows)
    fit_table = _table(["task", "arch", "fit", "trials", "points", "α [95% CI]", "a [95% CI]", "r²", "form",
                        "starts (converged)", "configurations", "backtest RMSE (ln)", "note"],
                       [[r["task"], r["arch"], r["fit"], r["trials"], f'{r["n"]} ({r["n_x"]} distinct x)',
                         _interval(r["alpha"], r["alpha_lo"], r["alpha_hi"], ".3f"),
                         _interval(r["a"], r["a_lo"], r["a_hi"]), r["r2"], _form(r),
                         f'{r["restarts"]} ({r["converged"]})' if r.get("restarts") else "",
                         r.get("clusters") or "", r.get("backtest_rmse"), r["note"]] for r in fits + costs],
                       "fits")
    lap("fits")

    figures = []
    for paths, name, caption in (
        (lambda: memory_vs_compute.plot(con, out, fits), memory_vs_compute.NAME,
         "Memory length L* vs training FLOPs: trials (points), frontier (steps), power-law fit with 95% band"),
        (lambda: cost_vs_seq_len.plot(con, out, costs), cost_vs_seq_len.NAME,
         "Wall seconds and peak memory per training sequence vs seq_len, with fitted exponents"),
        (lambda: score_heatmap.plot(con, out), score_heatmap.NAME,
         "Normalised score of each cell's best trial at its lag, over (lag x window), per arch"),
        (lambda: lag_curves.plot(con, out), lag_curves.NAME, "Normalised score vs evaluation lag, best trial per cell"),
        (lambda: pareto.plot(con, out, spec.objectives), pareto.NAME,
         "Pareto front over the study's first two objectives"),
        (lambda: lstar_vs_state.plot(con, out), lstar_vs_state.NAME, lstar_vs_state.CAPTION),
        (lambda: success_vs_lag.plot(con, out), success_vs_lag.NAME, success_vs_lag.CAPTION),
    ):
        figures.append((paths(), name, caption))
        lap(f"figure {name}")
    figure_html = "\n".join(_figure(p, name, cap) for p, name, cap in figures if p)
    pred = prediction.compare(con, store, spec, out)        # None: no prediction.json in the folder
    pred_html = "" if pred is None else (
        f"<h2>Predicted vs measured time</h2><p>{html.escape(prediction.NOTE)}</p>"
        + _table(prediction.COLUMNS, pred.table, "prediction") + _figure(pred.paths, prediction.NAME, prediction.CAPTION))
    lap("prediction")

    described = {d[0] for d in con.execute("DESCRIBE trials").fetchall()}
    cols = [c for c in TRIAL_COLUMNS if c in described]
    col_sql = ", ".join(f'"{c}"' for c in cols)
    _copy_csv(con, "SELECT * FROM trials ORDER BY cell, trial_id", out / "trials.csv")
    top = con.execute(f"SELECT {col_sql} FROM trials ORDER BY memory_length DESC NULLS LAST, trial_id "
                      f"LIMIT {HTML_ROWS}").fetchall()
    counts = con.execute("SELECT status, count(*) AS trials FROM trials GROUP BY ALL ORDER BY 1").fetchall()
    sizes = [(t, con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in ("trials", "metrics", "lag_curves")]
    n_trials = sizes[0][1]
    prov = con.execute(" UNION ALL ".join(
        f"SELECT '{c}' AS field, CAST(\"{c}\" AS VARCHAR) AS value, count(*) AS trials FROM trials GROUP BY ALL"
        for c in PROVENANCE) + " ORDER BY field, trials DESC").fetchall()
    # Timestamps as text: fetching TIMESTAMPTZ into Python needs pytz, which nothing else requires.
    span = con.execute("SELECT CAST(min(started_at) AS VARCHAR), CAST(max(ended_at) AS VARCHAR), sum(wall_s), "
                       "sum(train_flops) FROM trials").fetchone()
    with open(out / "status_counts.csv", "w", newline="") as f:
        csv.writer(f).writerows([("status", "trials"), *counts])
    with open(out / "provenance.csv", "w", newline="") as f:
        csv.writer(f).writerows([("field", "value", "trials"), *prov])
    versions_rows = spec_versions(store, con, "spec_version" in described)
    con.close()
    shutil.rmtree(scratch, ignore_errors=True)
    lap("tables")

    import duckdb
    import matplotlib
    import numpy
    import pyarrow
    versions = (f"duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, "
                f"matplotlib {matplotlib.__version__}")
    spec_text = (store.read_bytes("spec.yaml") or b"").decode()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>memscale: {html.escape(spec.study)}</title>
<style>{CSS}</style></head><body>
<h1>Study {html.escape(spec.study)}</h1>
<p>Report written {now}. Rows: {", ".join(f"{t} {n}" for t, n in sizes)}.</p>
<h2>Trials by status</h2>
{_table(["status", "trials"], counts, "status")}
<h2>Scaling-law and cost fits</h2>
<p>Memory fits: summed Huber loss (δ = {scaling.HUBER_DELTA:g}) of log residuals, minimised by L-BFGS from a
grid of starts, on each arch's frontier of configurations (every seed a point); censored L* enter as
lower bounds (a one-sided term). Intervals are 95% percentile cluster bootstrap ({n_boot} resamples,
seed {seed}): whole configurations with all their seeds are resampled and the frontier recomputed.
"form" is the one chosen by leave-one-configuration-out error between the power law and a power
law saturating at a ceiling (l_max in fits.csv); the backtest fits the lower two thirds of the
log-compute range and scores the rest. Cost fits: log-log least squares, bootstrap over trials.
Fewer than {fit.MIN_POINTS} distinct x values or configurations: "too few points". All in fits.csv;
docs/design.md, "Fitting method".</p>
{fit_table}
<h2>Figures</h2>
{figure_html}
{pred_html}
<h2>Questions</h2>
<p class="note">One SQL file per question in analysis/queries; each is also a view in study.duckdb.</p>
{"".join(sections)}
<h2>Trials with the longest memory</h2>
{_table(cols, top, "trials", n_trials, "trials.csv")}
<h2>Spec versions</h2>
<p>The spec versions whose trials are in this report (a study grown with <code>study run --extend</code>
has several; each is kept in specs/; "before spec history": trials of a study written before
memscale recorded versions).</p>
{_table(["spec version", "trials", "recorded", "note"], versions_rows, "spec_versions")}
<h2>Spec</h2><pre id="spec">{html.escape(spec_text)}</pre>
<h2>Provenance</h2>
<p>First trial started {fmt_value(span[0])}, last ended {fmt_value(span[1])}; {fmt_value(span[2])} training seconds and
{fmt_value(span[3])} training FLOPs in total. Analysis: {html.escape(versions)}.</p>
{_table(["field", "value", "trials"], prov, "provenance")}
<p class="note">Files: {", ".join(html.escape(c) for c in csvs + ["fits.csv", "trials.csv", "status_counts.csv", "provenance.csv"])}</p>
</body></html>
"""
    (out / "report.html").write_text(page)
    lap("html")
    if not store.local:
        for f in sorted(out.iterdir()):
            store.write_bytes(f.read_bytes(), "report", f.name)
        print(f"uploaded the report to {study_dir.rstrip('/')}/report/")
    return out / "report.html"
