"""`study report`: every figure and table is written, report.html is self-contained and renders in
headless Chromium with every figure loaded, and study.duckdb opens in the DuckDB command-line
client read-only and sees Parquet files written after it."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.db import query_names
from analysis.report import write_report
from analysis.synthetic import TWO_OBJECTIVES, write_study
from study.validate import parse_spec
from study.results import Store

FIGURES = ["memory_vs_compute", "cost_vs_seq_len", "score_heatmap", "lag_curves", "pareto", "lstar_vs_state_size",
           "success_vs_lag"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DUCKDB_CLI = shutil.which("duckdb", path=str(Path(sys.executable).parent)) or shutil.which("duckdb")


def spec_of(d) -> object:
    return parse_spec((Path(d) / "spec.yaml").read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    write_study(d, n_trials=96, iterations=2, objectives=TWO_OBJECTIVES)
    return write_report(str(d), spec_of(d))


def test_report_writes_every_figure_and_table(report):
    out = report.parent
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
    for name in query_names() + ["fits", "trials", "status_counts", "provenance"]:
        assert (out / f"{name}.csv").exists(), name
    with open(out / "fits.csv") as f:
        fits = list(csv.DictReader(f))
    assert {r["arch"] for r in fits if r["fit"] == "memory_length ~ train_flops"} == {"lstm", "tcn", "transformer"}
    assert all(float(r["alpha_lo"]) < float(r["alpha"]) < float(r["alpha_hi"]) for r in fits)
    with open(out / "trials.csv") as f:
        assert sum(1 for _ in f) == 97


def test_report_html_is_self_contained(report):
    page = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    for ident in ("fits", "status", "provenance", "trials", "spec"):
        assert f'id="{ident}"' in page
    assert "α [95% CI]" in page and "oom" in page


# Counts the figures that decoded (naturalWidth > 0) into the DOM; a broken image is added as a
# control, so a probe that could never see a failure would fail the test.
PROBE = """<img id="control" src="data:image/png;base64,AAAA">
<script>window.addEventListener("load", function () {
  var ok = 0, all = 0;
  for (const im of document.images) { if (im.id === "control") continue; all++; if (im.complete && im.naturalWidth > 0) ok++; }
  document.body.setAttribute("data-figures", all);
  document.body.setAttribute("data-loaded", ok);
  document.body.setAttribute("data-control", document.getElementById("control").naturalWidth);
  document.body.setAttribute("data-fit-rows", document.querySelectorAll("#fits tr").length - 1);
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"chromium printed no DOM: {dom[:300]!r}"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs["figures"] == str(len(FIGURES))
    assert attrs["loaded"] == str(len(FIGURES)), f"only {attrs['loaded']} of {len(FIGURES)} figures loaded"
    assert attrs["control"] == "0"
    # memory fit per arch; time and memory cost per arch and window (the fixture has full and 16)
    assert int(attrs["fit-rows"]) == 3 + 2 * 3 * 2
    assert '<table id="fits">' in dom


def test_report_has_the_state_size_and_success_figures_and_fit_diagnostics(report):
    page = report.read_text()
    for name in ("lstar_vs_state_size", "success_vs_lag"):
        assert f'<img id="{name}"' in page, name
    with open(report.parent / "fits.csv") as f:
        fits = [r for r in csv.DictReader(f) if r["fit"] == "memory_length ~ train_flops"]
    for r in fits:
        assert r["form"] in ("power", "saturating") and int(r["restarts"]) >= 64
        assert int(r["converged"]) >= 1 and int(r["clusters"]) >= 3
        assert float(r["loco_power"]) >= 0 and r["backtest_points"] != ""
    with open(report.parent / "success_rate.csv") as f:
        rates = list(csv.DictReader(f))
    counted = [r for r in rates if int(r["n"]) > 0]
    assert counted and all(float(r["p_lo"]) <= float(r["p"]) <= float(r["p_hi"]) for r in counted)
    # the transformer ran out of memory at the longest lag: no seed counted, no rate invented
    assert any(r["n"] == "0" and r["p"] == "" and int(r["not_counted"]) > 0 for r in rates)


def test_report_skips_the_new_figures_without_state_size_or_solved(tmp_path):
    """A study written before state_size and solved existed still reports, without those figures."""
    store = Store(str(tmp_path))
    store.write_bytes(b"""study: old
task: {name: copy}
grid: {arch: [lstm], lag: [8]}
search: {d_model: {choice: [16]}}
trials_per_cell: 3
objective: {metric: memory_length, mode: max}
budget: {steps: 10, eval_every: 5}
""", "spec.yaml")
    for i, (flops, ml) in enumerate([(1e9, 4), (1e10, 9), (1e11, 20)]):
        store.write_trial({"study": "old", "trial_id": f"c000-t{i:03d}-s0", "cell": "arch=lstm,lag=8", "arch": "lstm",
                           "task": "copy", "seed": 0, "lag": 8, "train_flops": flops, "memory_length": ml,
                           "status": "completed"})
    page = write_report(str(tmp_path), spec_of(tmp_path)).read_text()
    assert 'id="memory_vs_compute"' in page
    for name in ("lstar_vs_state_size", "success_vs_lag"):
        assert f'id="{name}"' not in page and not (tmp_path / "report" / f"{name}.png").exists()


def test_report_on_a_study_without_trials(tmp_path):
    write_study(tmp_path, n_trials=0)
    page = write_report(str(tmp_path), spec_of(tmp_path)).read_text()
    assert 'id="fits"' in page and (tmp_path / "report" / "memory_vs_compute.png").exists()
    assert not (tmp_path / "report" / "pareto.png").exists()    # one objective: no Pareto front


@pytest.mark.skipif(DUCKDB_CLI is None, reason="needs the DuckDB CLI (pip install duckdb-cli)")
def test_duckdb_cli_opens_study_duckdb_read_only_and_sees_new_files(report):
    study = report.parent.parent
    db_file = study / "study.duckdb"

    def cli(sql: str) -> str:
        r = subprocess.run([DUCKDB_CLI, "-readonly", "-csv", "-noheader", str(db_file), "-c", sql],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert cli("SELECT count(*) FROM trials") == "96"
    assert len(cli("SELECT * FROM frontier").splitlines()) > 3
    assert cli("SELECT count(*) FROM power_law WHERE alpha IS NOT NULL") == "3"
    row = {"study": "synthetic", "trial_id": "late-trial", "cell": "late", "arch": "lstm", "task": "copy",
           "status": "completed", "train_flops": 1e8, "memory_length": 1000}
    Store(str(study)).write_trial(row)       # no report, no connect: the views read the glob
    assert cli("SELECT count(*) FROM trials") == "97"
    assert cli("SELECT trial_id FROM frontier WHERE arch = 'lstm' ORDER BY train_flops LIMIT 1") == "late-trial"


def test_study_sql_runs_a_named_query(report, capsys):
    from study.cli import main
    study = str(report.parent.parent)
    assert main(["sql", study, "crossover", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("task,window,arch,other") and len(out) == 1 + 12
