"""The findings generator: its interval, its verdict rules, and the rules' text in the specs."""
from __future__ import annotations

import pytest
from scipy.stats import binomtest

from analysis import findings
from analysis.findings import Group, contrast
from analysis.success import wilson
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
    (1, 1, "refuted"), (2, 3, "refuted"),                        # the loser does at least as well
    (0, 0, "refuted" + findings.TIE_AT_ZERO),                    # said beside the verdict
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
    assert sorted(c[0] for c in findings.CLAIMS) == sorted(p.stem for p in QUICK)


def test_findings_numbers_are_the_tables(tmp_path):
    """build() on synthetic studies: each k/n it prints is the count SQL gives, a missing study
    says so, and the cost exponents come from the fitter."""
    from analysis.db import connect
    from analysis.synthetic import write_study
    write_study(tmp_path / "memory_per_compute_quick", n_trials=96)
    write_study(tmp_path / "cost_vs_seq_len_quick", n_trials=96, seed=1)
    text = findings.build(tmp_path, tmp_path / "FINDINGS.md", tmp_path / "figs")
    con = connect(str(tmp_path / "memory_per_compute_quick"), write=False)
    # the success_rate view's counting rule: a diverged seed is a failure, an oom one is not counted
    expect = con.execute("""SELECT task, arch, lag, count(*), count(*) FILTER (WHERE solved AND status != 'diverged')
                            FROM trials WHERE status IN ('completed', 'timeout', 'diverged') GROUP BY ALL""").fetchall()
    assert con.execute("SELECT count(*) FROM trials WHERE status = 'diverged'").fetchone()[0] > 0
    assert expect
    for task, arch, lag, n, k in expect:
        assert f"| {task} | {arch} | {lag} | {findings.k_of_n(k, n)} |" in text
    assert text.count("*Not run* (no study folder).") == 4
    section = text.split("## 2. ")[1].split("## 3. ")[0]
    rows = [r for r in section.splitlines() if "| time |" in r]
    assert rows and all("[" in r for r in rows)


def trials_con(rows: list[dict]):
    """An in-memory DuckDB holding `trials` rows (the columns the verdicts read) and no curves."""
    import duckdb
    con = duckdb.connect()
    con.execute("""CREATE TABLE trials (trial_id VARCHAR, arch VARCHAR, task VARCHAR, seed BIGINT, lag BIGINT,
                   contraction DOUBLE, "window" BIGINT, status VARCHAR, solved BOOLEAN, memory_length BIGINT,
                   censored BOOLEAN, final_loss DOUBLE, eval_loss DOUBLE, state_size BIGINT)""")
    con.execute("CREATE TABLE lag_curves (trial_id VARCHAR, lag BIGINT, step BIGINT, score DOUBLE)")
    for i, r in enumerate(rows):
        full = {"trial_id": f"t{i}", "arch": "lstm", "task": "copy", "seed": 0, "lag": 16, "contraction": None,
                "window": None, "status": "completed", "solved": False, "memory_length": 0, "censored": False,
                "final_loss": 1.0, "eval_loss": 1.0, "state_size": 1, **r}
        con.execute(f"INSERT INTO trials VALUES ({', '.join('?' * len(full))})", list(full.values()))
    return con


def seeds(n_solved: int, n: int = 3, **key) -> list[dict]:
    return [{**key, "seed": s, "solved": s < n_solved, "memory_length": 16 if s < n_solved else 0} for s in range(n)]


def test_truncation_rules():
    def verdicts(lstm_full, lstm_trunc, stable_full, stable_trunc):
        rows = (seeds(lstm_full, arch="lstm") + seeds(lstm_trunc, arch="lstm", window=4)
                + seeds(stable_full, arch="stable_lstm", contraction=0.9)
                + seeds(stable_trunc, arch="stable_lstm", contraction=0.9, window=4))
        return [v for _, v in findings.claim_truncation(trials_con(rows))[1]]
    assert verdicts(3, 0, 1, 0) == ["reproduced", "reproduced"]     # lstm drops 1, stable drops 1/3
    assert verdicts(3, 0, 0, 0)[1].startswith("reproduced (trivially")   # no stable model learnt at all
    assert verdicts(3, 3, 3, 3) == ["refuted", "inconclusive"]      # truncated lstm still solves
    assert verdicts(3, 0, 3, 0) == ["reproduced", "inconclusive"]   # stable drops as much as lstm (not more)
    assert verdicts(2, 1, 3, 0)[1] == "refuted"                     # stable drops more than lstm


def test_short_long_rules():
    def verdicts(long_, short, mse_gated=0.01, mse_bist=0.01):
        rows = []
        for arch in ("lstm", "gru", "brc", "nbrc"):
            k = long_[arch]
            rows += seeds(k, arch=arch, lag=200)
            rows += [{**r, "final_loss": mse_gated if arch in ("lstm", "gru") else mse_bist}
                     for r in seeds(short[arch], arch=arch, lag=5)]
        return [v for _, v in findings.claim_short_long(trials_con(rows))[1]]
    every = {"lstm": 3, "gru": 3, "brc": 3, "nbrc": 3}
    assert verdicts({"lstm": 0, "gru": 1, "brc": 1, "nbrc": 3}, every) == ["reproduced", "reproduced"]
    assert verdicts({"lstm": 3, "gru": 0, "brc": 2, "nbrc": 3}, every)[0] == "refuted"
    assert verdicts({"lstm": 0, "gru": 0, "brc": 1, "nbrc": 1}, every)[0] == "inconclusive"
    assert verdicts(every, every, mse_gated=0.1, mse_bist=0.01)[1] == "inconclusive"   # 10x the bistable MSE
    assert verdicts(every, {"lstm": 0, "gru": 1, "brc": 3, "nbrc": 3})[1] == "refuted"


def test_multi_state_rule_is_paired_by_seed():
    def verdict(losses8, full):
        rows = [{"arch": "tova", "seed": s, "eval_loss": f} for s, f in enumerate(full)]
        rows += [{"arch": "tova", "seed": s, "window": 8, "eval_loss": x} for s, x in enumerate(losses8)]
        return findings.claim_multi_state(trials_con(rows))[1][0][1]
    assert verdict([1.04, 2.08, 1.5], [1.0, 2.0, 1.0]).startswith("reproduced (trivially")   # ratios 1.04, 1.04, 1.5; full L* 0
    rows = [{"arch": "tova", "seed": 0, "eval_loss": 1.0, "memory_length": 32},
            {"arch": "tova", "seed": 0, "window": 8, "eval_loss": 1.01}]
    assert findings.claim_multi_state(trials_con(rows))[1][0][1] == "reproduced"   # the full model used 32
    assert verdict([1.2, 2.2, 1.1], [1.0, 2.0, 1.0]) == "refuted"
    assert verdict([1.2, 2.0, 1.0], [1.0, 2.0, 0.9]) == "inconclusive"       # 1.2, 1.0, 1.11: median 1.11


def test_text_context_rule():
    def verdict(lstars, censored):
        rows = [{"arch": "lstm", "lag": 256, "seed": s, "memory_length": m, "censored": c}
                for s, (m, c) in enumerate(zip(lstars, censored))]
        return findings.claim_text_context(trials_con(rows))[1][0][1]
    assert verdict([64, 128, 512], [False, False, True]) == "reproduced"
    assert verdict([512, 512, 64], [True, True, False]) == "refuted"
    assert verdict([256, 512, 256], [False, True, False]) == "inconclusive"   # median 256: not below
