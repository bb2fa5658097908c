"""The findings generator: its interval, its verdict rules, and the rules' text in the specs."""
from __future__ import annotations

import pytest
from scipy.stats import binomtest

from analysis import findings
from analysis.findings import Group, contrast, wilson
from tests.conftest import ROOT

QUICK = sorted((ROOT / "search_spaces").glob("*_quick.yaml"))


@pytest.mark.parametrize("k,n", [(0, 3), (1, 3), (2, 3), (3, 3), (7, 20), (0, 1), (50, 100)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-6) and hi == pytest.approx(ci.high, abs=1e-6)


def group(solved: int, n: int = 3) -> Group:
    return Group(("x",), n, solved, [0] * n, 0, [1.0] * n, [1.0] * n)


@pytest.mark.parametrize("win,lose,verdict", [
    (3, 0, "reproduced"), (2, 1, "reproduced"),      # >= 2/3 against <= 1/3
    (1, 1, "refuted"), (0, 0, "refuted"), (2, 3, "refuted"),   # the loser does at least as well
    (3, 2, "inconclusive"), (1, 0, "inconclusive"),
])
def test_contrast_rule(win, lose, verdict):
    assert contrast(group(win), group(lose)) == verdict


def test_contrast_without_trials_is_inconclusive():
    assert contrast(None, group(0)).startswith("inconclusive")


@pytest.mark.parametrize("path", QUICK, ids=lambda p: p.stem)
def test_every_quick_spec_states_its_rule_before_the_run(path):
    rule = findings.rule_text(path.stem)
    assert rule.startswith("VERDICT RULE"), path.name
    for word in ("reproduced", "refuted", "inconclusive"):
        assert word in rule.lower(), f"{path.name}: the rule says when the claim is {word}"
    assert "seeds: [0, 1, 2]" in path.read_text(), f"{path.name}: three seeds per configuration"
    assert findings.claim_text(path.stem).startswith("Claim ")


def test_every_quick_study_has_a_verdict_function():
    assert sorted(s for s, _, _ in findings.CLAIMS) == sorted(p.stem for p in QUICK)


def test_findings_numbers_are_the_tables(tmp_path):
    """build() on synthetic studies: each k/n it prints is the count SQL gives, a missing study
    says so, and the cost exponents come from the fitter."""
    from analysis.db import connect
    from analysis.synthetic import write_study
    write_study(tmp_path / "memory_per_compute_quick", n_trials=96)
    write_study(tmp_path / "cost_vs_seq_len_quick", n_trials=96, seed=1)
    text = findings.build(tmp_path, tmp_path / "FINDINGS.md", tmp_path / "figs")
    con = connect(str(tmp_path / "memory_per_compute_quick"), write=False)
    expect = con.execute("""SELECT task, arch, lag, count(*), count(*) FILTER (WHERE solved) FROM trials
                            WHERE status IN ('completed', 'timeout') GROUP BY ALL""").fetchall()
    assert expect
    for task, arch, lag, n, k in expect:
        assert f"| {task} | {arch} | {lag} | {findings.k_of_n(k, n)} |" in text
    assert text.count("*Not run* (no study folder).") == 4
    section = text.split("## 2. ")[1].split("## 3. ")[0]
    rows = [r for r in section.splitlines() if "wall_s_per_seq" in r]
    assert rows and all("[" in r for r in rows)
