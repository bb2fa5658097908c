"""FINDINGS.md from the six quick claim studies: verdicts, intervals and figures, all read from the
studies' own tables (scripts/reproduce_findings.sh runs the studies, then this).

    python -m analysis.findings --results results --out FINDINGS.md --figures docs/findings

Each claim's verdict rule is the "VERDICT RULE" block of its spec's first comment, written before
the run; the functions below apply that rule to the measured counts and nothing else. Success
over seeds is k of n with a Wilson 95% interval (analysis/success.py, counted as the success_rate
view counts); L* over seeds is given as its median and range, never as the best trial.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis import scaling
from analysis.db import connect
from analysis.success import wilson
from study.results import Store

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "search_spaces"


def k_of_n(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def rule_text(study: str) -> str:
    """The spec's verdict rule: its comment lines from 'VERDICT RULE' to the 'Quick size' line."""
    lines = (SPECS / f"{study}.yaml").read_text().splitlines()
    out, on = [], False
    for line in lines:
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if body.startswith("VERDICT RULE"):
            on = True
        elif body.startswith("Quick size"):
            on = False
        if on:
            out.append(body)
    return " ".join(out)


def claim_text(study: str) -> str:
    """The spec's comment before its verdict rule: the claim and the setup."""
    out = []
    for line in (SPECS / f"{study}.yaml").read_text().splitlines():
        if not line.startswith("#") or "VERDICT RULE" in line:
            break
        out.append(line[1:].strip())
    return " ".join(out)


@dataclass
class Group:
    """One (condition) group of trials across seeds."""
    key: tuple
    n: int
    solved: int
    lstar: list[int]
    censored: int
    final_loss: list[float]
    eval_loss: list[float]

    @property
    def rate(self) -> float:
        return self.solved / self.n if self.n else 0.0

    def lstar_cell(self) -> str:
        xs = sorted(x for x in self.lstar if x is not None)
        if not xs:
            return "—"
        med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
        cens = f", {self.censored} censored" if self.censored else ""
        return f"{med:g} [{xs[0]}, {xs[-1]}]{cens}"


def groups(con, by: list[str], where: str = "TRUE") -> dict[tuple, Group]:
    """Trials grouped over seeds, counted as the success_rate view counts them: a completed or
    timed-out seed counts (it had a final evaluation), a diverged one counts as a failure; pruned,
    out-of-memory and errored trials are left out (they say nothing about the architecture)."""
    cols = ", ".join(f'"{c}"' for c in by)
    rows = con.execute(f"""
        SELECT {cols}, count(*), count(*) FILTER (WHERE solved AND status != 'diverged'),
               list(memory_length ORDER BY seed), count(*) FILTER (WHERE censored),
               list(final_loss ORDER BY seed), list(eval_loss ORDER BY seed)
        FROM trials WHERE status IN ('completed', 'timeout', 'diverged') AND ({where})
        GROUP BY ALL ORDER BY ALL""").fetchall()
    out = {}
    for r in rows:
        key = tuple(r[:len(by)])
        n, k, ls, c, fl, el = r[len(by):]
        out[key] = Group(key, n, k, list(ls), c, list(fl), list(el))
    return out


def trajectory(con, by: list[str], where: str = "TRUE") -> dict[tuple, str]:
    """Median over seeds of the score at the trained lag, at each evaluation: whether a group that
    failed was still climbing when its budget ran out (undertrained) or never left the memoryless
    baseline, measured rather than guessed."""
    cols = ", ".join(f't."{c}"' for c in by)
    rows = con.execute(f"""
        SELECT {cols}, c.step, median(c.score)
        FROM trials t JOIN lag_curves c ON c.trial_id = t.trial_id AND c.lag = t.lag
        WHERE t.status IN ('completed', 'timeout') AND ({where})
        GROUP BY ALL ORDER BY ALL""").fetchall()
    out: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        out.setdefault(tuple(r[:len(by)]), []).append((r[len(by)], r[len(by) + 1]))
    return {k: ", ".join(f"{step}: {score:.2f}" for step, score in v) + diagnosis([x for _, x in v])
            for k, v in out.items()}


def diagnosis(scores: list[float], tau: float = 0.9) -> str:
    """What the score trajectory says about a group that is not solved at its trained lag (a
    median score at or above tau can still leave seeds unsolved: solved asks for the score's 95%
    lower bound)."""
    if not scores or scores[-1] is None:
        return ""
    if scores[-1] >= tau:
        return " (median score at tau or above at the end)" if len(scores) > 1 and scores[-2] < tau else ""
    if max(scores) <= 0.1:
        return " (never left the memoryless baseline)"
    if len(scores) > 1 and scores[-1] - scores[-2] > 0.1:
        return " (still climbing when the budget ran out)"
    return " (learnt part of it, then stalled below tau)"


def median(xs) -> float | None:
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def status_line(con) -> str:
    rows = con.execute("SELECT status, count(*) FROM trials GROUP BY ALL ORDER BY ALL").fetchall()
    return ", ".join(f"{n} {s}" for s, n in rows)


def span_s(con) -> float | None:
    """First trial's start to last trial's end: the study's measured run time (Ray's start-up,
    a few seconds before the first trial, is not in it)."""
    v = con.execute("SELECT epoch(max(ended_at)) - epoch(min(started_at)) FROM trials").fetchone()[0]
    return float(v) if v is not None else None


def run_log(results: Path) -> dict[str, tuple[float, float, float]]:
    """study -> (wall seconds summed over its `study run`s, lowest and highest 1-minute load
    around them), from the log scripts/reproduce_findings.sh keeps in the results root."""
    p = results / "reproduce_findings.tsv"
    out: dict[str, tuple[float, float, float]] = {}
    if not p.exists():
        return out
    for line in p.read_text().splitlines()[1:]:
        f = line.split("\t")
        if len(f) != 5:
            continue
        study, _, before, wall, after = f
        w, lo, hi = out.get(study, (0.0, math.inf, -math.inf))
        loads = [float(before), float(after)]
        out[study] = (w + float(wall), min(lo, *loads), max(hi, *loads))
    return out


def fmt(v, digits: str = ".3g") -> str:
    return "—" if v is None else format(v, digits)


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def solved_table(gs: dict[tuple, Group], names: list[str], traj: dict[tuple, str] | None = None) -> str:
    head = names + ["solved k/n [95% CI]", "L* median [min, max]", "final train loss (median)"]
    if traj is not None:
        head.append("score at the trained lag by step (median over seeds)")
    rows = []
    for key, g in gs.items():
        row = [("full" if v is None and names[i] == "window" else v) for i, v in enumerate(key)]
        row += [k_of_n(g.solved, g.n), g.lstar_cell(), fmt(median(g.final_loss))]
        if traj is not None:
            row.append(traj.get(key, "—"))
        rows.append(row)
    return table(head, rows)


def fits_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        out.append([r["task"], r["arch"], r.get("form") or "—", fmt(r.get("alpha")),
                    f"[{fmt(r.get('alpha_lo'))}, {fmt(r.get('alpha_hi'))}]", r.get("clusters", "—"),
                    f"{r.get('converged', 0)}/{r.get('restarts', 0)}", fmt(r.get("backtest_rmse")), r.get("note") or ""])
    return table(["task", "arch", "form chosen", "α", "95% interval", "configurations", "starts converged",
                  "backtest RMSE (ln)", "note"], out)


def pick(gs, **want) -> Group | None:
    """The group whose key matches (want is in `by` order)."""
    want_t = tuple(want.values())
    return gs.get(want_t)


def contrast(winner: Group | None, loser: Group | None) -> str:
    """Rule shared by claims 1 and 4: winner >= 2/3 and loser <= 1/3 reproduces; loser solving at
    least as many seeds as the winner refutes."""
    if winner is None or loser is None:
        return "inconclusive (a group has no finished trials)"
    if winner.rate >= 2 / 3 and loser.rate <= 1 / 3:
        return "reproduced"
    if loser.solved >= winner.solved:
        return "refuted" + TIE_AT_ZERO * (winner.solved == 0)
    return "inconclusive"


# stated beside a verdict the rule reached on a tie at zero: the data then cannot separate the archs
TIE_AT_ZERO = " (a tie at zero: neither arch solved a seed, which the rule counts as a refutation)"


# ----------------------------------------------------------------------------- the six claims

def claim_memory(con) -> tuple[str, list[tuple[str, str]]]:
    gs = groups(con, ["task", "arch", "lag"])
    md = solved_table(gs, ["task", "arch", "lag"], trajectory(con, ["task", "arch", "lag"]))
    md += "\n\n*L\* against training compute* (`analysis/scaling.py` `memory_scaling_fits`: frontier of " \
          "configurations, summed Huber loss on log residuals, seeds clustered in the bootstrap, censored " \
          "L\* as lower bounds):\n\n" + fits_table(scaling.memory_scaling_fits(con))
    a = contrast(pick(gs, task="adding", arch="indrnn", lag=200), pick(gs, task="adding", arch="lstm", lag=200))
    b = contrast(pick(gs, task="copy", arch="tcn", lag=200), pick(gs, task="copy", arch="lstm", lag=200))
    return md, [("(a) IndRNN learns adding where the LSTM does not", a),
                ("(b) a TCN learns copy where the LSTM does not", b)]


def claim_cost(con) -> tuple[str, list[tuple[str, str]]]:
    """Exponents of time and peak tensor memory per sequence in seq_len, per (arch, window), by the
    literature fitter (summed Huber on log residuals, grid of L-BFGS starts), with a cluster
    bootstrap whose clusters are the seq_len points (a point's seeds are resampled together)."""
    import numpy as np
    rows = con.execute("""
        SELECT arch, coalesce(CAST("window" AS VARCHAR), 'full') AS w, seq_len,
               wall_s * seq_len / tokens AS time_per_seq,
               peak_tensor_bytes / batch_size AS tensor_bytes_per_seq
        FROM trials WHERE status = 'completed' AND tokens > 0 AND wall_s > 0 AND seq_len > 0
        ORDER BY ALL""").fetchall()
    series: dict[tuple, list] = {}
    for arch, w, sl, t, m in rows:
        series.setdefault((arch, w), []).append((sl, t, m))
    out, alpha = [], {}
    for key, pts in series.items():
        x = np.array([p[0] for p in pts], float)
        for what, j in (("time", 1), ("peak tensor memory", 2)):
            y = np.array([np.nan if p[j] is None else p[j] for p in pts], float)
            f = scaling.scaling_law(x, y, cluster=x.astype(int).astype(str), compare=False)
            if what == "time":
                alpha[key] = f
            out.append([key[0], key[1], what, fmt(f.alpha), f"[{fmt(f.alpha_lo)}, {fmt(f.alpha_hi)}]",
                        f"{f.n} ({f.clusters} lengths)", f"{f.converged}/{f.restarts}", f.note])
    md = table(["arch", "window", "per sequence", "exponent α in seq_len", "95% interval (cluster bootstrap)",
                "trials", "starts converged", "note"], out)
    alpha = {k: {"alpha_lo": f.alpha_lo, "alpha_hi": f.alpha_hi} for k, f in alpha.items()}
    # the measured times behind each exponent: training seconds per sequence at each length
    lengths = sorted({p[0] for pts in series.values() for p in pts})
    raw = []
    for key, pts in sorted(series.items()):
        cells = [fmt(median([p[1] for p in pts if p[0] == sl]), ".3g") for sl in lengths]
        raw.append([key[0], key[1], *cells])
    md += ("\n\n*Training seconds per sequence (median over seeds), the points of the time fits:*\n\n"
           + table(["arch", "window", *[f"seq_len {sl}" for sl in lengths]], raw))
    att = alpha.get(("transformer", "full"))
    rec = [alpha.get((a, "full")) for a in ("lstm", "gru", "indrnn", "linear_transformer")]
    if att is None or att.get("alpha_lo") is None or any(r is None or r.get("alpha_hi") is None for r in rec):
        v = "inconclusive (a fit is missing)"
    elif att["alpha_lo"] > 1.3 and all(r["alpha_hi"] < 1.3 for r in rec):
        v = "reproduced"
    elif att["alpha_hi"] < 1.3 or any(r["alpha_lo"] > 1.3 for r in rec):
        v = "refuted"
    else:
        v = "inconclusive"
    return md, [("attention's cost superlinear, recurrences' linear", v)]


def claim_truncation(con) -> tuple[str, list[tuple[str, str]]]:
    gs = groups(con, ["arch", "contraction", "window"])
    md = solved_table(gs, ["arch", "contraction", "window"], trajectory(con, ["arch", "contraction", "window"]))
    trunc = [g for k, g in gs.items() if k[2] == 4]
    lstm_full = pick(gs, arch="lstm", contraction=None, window=None)
    lstm_trunc = pick(gs, arch="lstm", contraction=None, window=4)
    if not trunc or lstm_full is None:
        a = "inconclusive (groups missing)"
    elif any(g.rate >= 2 / 3 for g in trunc):
        a = "refuted"
    elif all(g.rate <= 1 / 3 for g in trunc) and lstm_full.rate >= 2 / 3:
        a = "reproduced"
    else:
        a = "inconclusive"
    if lstm_full is None or lstm_trunc is None:
        b = "inconclusive (groups missing)"
    else:
        lstm_drop = lstm_full.rate - lstm_trunc.rate
        drops = []
        for (arch, lam, w), g in gs.items():
            if arch.startswith("stable_") and w is None:
                t = gs.get((arch, lam, 4))
                if t is not None:
                    drops.append(g.rate - t.rate)
        if not drops:
            b = "inconclusive (groups missing)"
        elif any(d > lstm_drop for d in drops):
            b = "refuted"
        elif all(d <= 1 / 3 for d in drops) and lstm_drop > 1 / 3:
            b = "reproduced"
            if not any(g.solved for (arch, _, _), g in gs.items() if arch.startswith("stable_")):
                b += " (trivially: no stable model solved a seed at either window)"
        else:
            b = "inconclusive"
    return md, [("(a) truncation bounds what is learnt", a), ("(b) stable models lose little to truncation", b)]


def claim_short_long(con) -> tuple[str, list[tuple[str, str]]]:
    gs = groups(con, ["arch", "lag"])
    md = solved_table(gs, ["arch", "lag"], trajectory(con, ["arch", "lag"]))
    long_ = {a: pick(gs, arch=a, lag=200) for a in ("lstm", "gru", "brc", "nbrc")}
    bist = [g for a, g in long_.items() if a in ("brc", "nbrc") and g is not None]
    gated = [long_["lstm"], long_["gru"]]
    if not bist or any(g is None for g in gated):
        a = "inconclusive (groups missing)"
    else:
        best = max(bist, key=lambda g: g.solved)
        if best.rate >= 2 / 3 and all(g.rate <= 1 / 3 for g in gated):
            a = "reproduced"
        elif any(g.solved >= best.solved for g in gated):
            a = "refuted" + TIE_AT_ZERO * (best.solved == 0)
        else:
            a = "inconclusive"
    short = {a: pick(gs, arch=a, lag=5) for a in ("lstm", "gru", "brc", "nbrc")}
    if any(g is None for g in short.values()):
        b = "inconclusive (groups missing)"
    else:
        bist_mse = median([x for a in ("brc", "nbrc") for x in short[a].final_loss])
        ok = all(short[a].rate >= 2 / 3 and (median(short[a].final_loss) or 0) <= 1.5 * (bist_mse or 0)
                 for a in ("lstm", "gru"))
        if ok:
            b = "reproduced"
        elif all(short[a].rate <= 1 / 3 for a in ("lstm", "gru")):
            b = "refuted"
        else:
            b = "inconclusive"
    return md, [("long half: bistable cells learn lag 200 where LSTM/GRU do not", a),
                ("short half: LSTM/GRU as good as bistable cells at lag 5", b)]


def claim_multi_state(con) -> tuple[str, list[tuple[str, str]]]:
    rows = con.execute("""SELECT seed, "window", eval_loss, memory_length, state_size FROM trials
                          WHERE status IN ('completed', 'timeout') ORDER BY seed, "window" NULLS LAST""").fetchall()
    full = {s: e for s, w, e, _, _ in rows if w is None}
    by_w: dict = {}
    for s, w, e, lstar, state in rows:
        if s in full and e is not None and full[s]:
            by_w.setdefault(w, []).append((e / full[s], e, lstar, state))
    out = []
    for w, xs in sorted(by_w.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        rs = [x[0] for x in xs]
        out.append(["full" if w is None else w, len(xs), fmt(median([x[1] for x in xs]), ".4f"),
                    fmt(median(rs), ".4f"), f"[{fmt(min(rs), '.4f')}, {fmt(max(rs), '.4f')}]",
                    fmt(median([x[2] for x in xs])), fmt(median([x[3] for x in xs]), ",.0f")])
    md = table(["KV budget", "seeds", "eval loss, nats/char (median)", "r = loss / full loss (median)",
                "r, min–max over seeds", "L* (median)", "state floats"], out)
    r8 = [x[0] for x in by_w.get(8, [])]
    if not r8:
        v = "inconclusive (no budget-8 trials)"
    elif median(r8) <= 1.05:
        v = "reproduced"
        full_lstar = median([x[2] for x in by_w.get(None, [])])
        if full_lstar is not None and full_lstar <= 8:
            v += (f" (trivially: the full model's own effective context, L* = {full_lstar:g}, fits in the "
                  f"budget of 8, so eviction removed nothing it used)")
    elif all(r > 1.05 for r in r8):
        v = "refuted"
    else:
        v = "inconclusive"
    return md, [("TOVA within 5% of full attention at 1/8 of the cache", v)]


def claim_text_context(con) -> tuple[str, list[tuple[str, str]]]:
    gs = groups(con, ["arch", "lag"])
    rows = []
    for key, g in gs.items():
        rows.append([key[0], key[1], g.n, g.lstar_cell(), f"{g.censored}/{g.n}", fmt(median(g.eval_loss), ".4f")])
    md = table(["arch", "trained context", "seeds", "effective context L* median [min, max]", "censored",
                "eval loss, nats/char (median)"], rows)
    g = pick(gs, arch="lstm", lag=256)
    if g is None:
        v = "inconclusive (no lstm trials at context 256)"
    else:
        unc = g.n - g.censored
        med = median([x for x in g.lstar if x is not None])
        if unc >= 2 / 3 * g.n and med is not None and med < 256:
            v = "reproduced"
        elif g.censored >= 2 / 3 * g.n:
            v = "refuted"
        else:
            v = "inconclusive"
    return md, [("an LSTM uses a bounded context, less than it is given", v)]


CLAIMS = [   # (study, title, verdicts, the report's figures that show the claim)
    ("memory_per_compute_quick", "Memory length per compute", claim_memory,
     ("success_vs_lag", "lstar_vs_state_size", "memory_vs_compute")),
    ("cost_vs_seq_len_quick", "Cost versus sequence length", claim_cost, ("cost_vs_seq_len",)),
    ("truncation_quick", "Truncated backpropagation and stable models", claim_truncation,
     ("success_vs_lag", "score_heatmap")),
    ("short_vs_long_quick", "Short versus long: bistable cells", claim_short_long, ("success_vs_lag", "lag_curves")),
    ("multi_state_quick", "A Transformer is a multi-state RNN (TOVA)", claim_multi_state,
     ("lag_curves", "lstar_vs_state_size")),
    ("text_context_quick", "Effective context on real text", claim_text_context, ("lag_curves",)),
]


def figures_of(study_dir: Path, dest: Path, names: tuple[str, ...]) -> list[Path]:
    """The report's figures of these names (PNG), copied next to FINDINGS.md's other figures."""
    src = study_dir / "report"
    out = []
    if not src.is_dir():
        return out
    shutil.rmtree(dest, ignore_errors=True)      # figures of an earlier run are not this run's
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.rglob("*.png"), key=lambda p: names.index(p.stem) if p.stem in names else len(names)):
        if p.stem not in names:
            continue
        q = dest / p.name
        shutil.copyfile(p, q)
        out.append(q)
    return out


def provenance() -> str:
    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    import os
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return (f"{os.cpu_count()} CPU cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}, no GPU; "
            f"Python {platform.python_version()}, torch {torch.__version__}; commit {commit}; "
            f"generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")


def build(results: Path, out: Path, figures: Path) -> str:
    parts = ["# Findings: the claims, measured (quick runs)", "",
             "Generated by `scripts/reproduce_findings.sh` (which runs the six quick studies in "
             "`search_spaces/*_quick.yaml`, reports them, and calls `python -m analysis.findings`); "
             "do not edit by hand. Every number below is read from the studies' tables. Each verdict "
             "applies the rule written in its spec's first comment before the run: **reproduced**, "
             "**refuted** or **inconclusive at this scale**. Success over seeds is k of n seeds solved "
             "(L* reached the trained lag on its 95% lower bound) with a Wilson 95% interval; L* over "
             "seeds is its median and range. These are laptop-scale runs (short lags, 600–1,500 steps, "
             "three seeds): a verdict says what this scale shows, and the full-size specs are what "
             "would settle a claim.", "", f"Machine and code: {provenance()}.", "",
             "| claim | study | verdict | trials | run time |", "| --- | --- | --- | --- | --- |"]
    summary_at = len(parts)
    runs = run_log(results)
    sections = []
    for i, (study, title, fn, shown) in enumerate(CLAIMS, 1):
        d = results / study
        if not Store(str(d)).exists("spec.yaml"):
            sections += [f"## {i}. {title} (`{study}`)", "", "*Not run* (no study folder).", ""]
            parts.append(f"| {i}. {title} | `{study}` | not run | — | — |")
            continue
        con = connect(str(d), write=False)
        md, verdicts = fn(con)
        span = span_s(con)
        n = con.execute("SELECT count(*) FROM trials").fetchone()[0]
        code = ", ".join(r[0] or "unknown" for r in
                         con.execute("SELECT DISTINCT code_version FROM trials ORDER BY 1").fetchall())
        wall = runs.get(study)
        wall_s = (f"; `study run` took {wall[0]:,.0f} s of wall time at a load average of "
                  f"{wall[1]:.1f}–{wall[2]:.1f} on {os.cpu_count()} cores" if wall else "")
        figs = figures_of(d, figures / study, shown)
        vtxt = "; ".join(f"{name}: **{v}**" for name, v in verdicts)
        parts.append(f"| {i}. {title} | `{study}` | {vtxt} | {n} | "
                     f"{fmt(wall[0] / 60 if wall else (span / 60 if span else None), '.1f')} min |")
        sections += [f"## {i}. {title} (`{study}`)", "", f"*Claim and setup.* {claim_text(study)}", "",
                     f"*Rule.* {rule_text(study)}", "",
                     f"*Run.* {n} trials ({status_line(con)}); first trial start to last trial end "
                     f"{fmt(span, ',.0f')} s{wall_s}; code {code}.", "", md, "", "*Verdicts.*", ""]
        sections += [f"- {name}: **{v}**" for name, v in verdicts] + [""]
        for f in figs:
            rel = f.relative_to(out.parent) if f.is_relative_to(out.parent) else f
            sections.append(f"![{f.stem}]({rel})")
        sections += ["", f"Reproduce: `study run search_spaces/{study}.yaml && study report results/{study}`.", ""]
        con.close()
    return "\n".join(parts[:summary_at] + parts[summary_at:] + [""] + sections)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.findings", description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="results root holding the six quick studies")
    ap.add_argument("--out", default="FINDINGS.md")
    ap.add_argument("--figures", default="docs/findings", help="where the reports' figures are copied")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    text = build(Path(a.results), out, Path(a.figures).resolve())
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
