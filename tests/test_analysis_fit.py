"""analysis/fit.py: recovers known exponents with calibrated intervals, agrees with the SQL, and
says "too few points" instead of inventing a number."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import db
from analysis.figures.pareto import pareto_mask
from analysis.fit import _candidates, frontier_mask, memory_fits, power_law
from analysis.synthetic import write_study

ALPHA, A = 0.4, 3e-3


def noisy_power_law(n: int, seed: int, sigma: float = 0.3):
    rng = np.random.default_rng(seed)
    x = np.exp(rng.uniform(np.log(1e9), np.log(1e13), n))
    return x, A * x ** ALPHA * np.exp(rng.normal(0, sigma, n))


def test_recovers_exponent_and_prefactor():
    x, y = noisy_power_law(200, seed=0)
    f = power_law(x, y, n_boot=1000, seed=0)
    assert abs(f.alpha - ALPHA) <= 0.03
    assert f.alpha_lo < f.alpha < f.alpha_hi and f.a_lo < f.a < f.a_hi
    assert f.a_lo <= A <= f.a_hi
    assert f.n == 200 and f.n_x == 200 and 0.9 < f.r2 <= 1
    assert len(f.boot) == 1000


def test_interval_covers_truth_in_at_least_90_of_100_repetitions():
    hits = 0
    for rep in range(100):
        x, y = noisy_power_law(50, seed=1000 + rep)
        f = power_law(x, y, n_boot=1000, seed=rep)
        hits += f.alpha_lo <= ALPHA <= f.alpha_hi
    assert hits >= 90, f"95% interval covered the true exponent in only {hits}/100 repetitions"


def test_seeded_bootstrap_is_reproducible():
    x, y = noisy_power_law(40, seed=3)
    assert power_law(x, y, seed=7).row() == power_law(x, y, seed=7).row()


def test_too_few_points():
    f = power_law([1e9, 1e9, 1e10, 1e10], [5, 6, 9, 10])
    assert f.alpha is None and f.note == "too few points" and f.n_x == 2
    # Three trials but only two on the frontier (the third is dominated).
    f = power_law([1e9, 1e10, 1e11], [5, 9, 8], frontier=True)
    assert f.alpha is None and f.note == "too few points"


def brute_frontier(x, y):
    return np.array([not any((x[j] <= x[i] and y[j] >= y[i]) and (x[j] < x[i] or y[j] > y[i])
                             for j in range(len(x))) for i in range(len(x))])


def test_frontier_mask_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(1, 6, 12).astype(float)
        y = rng.integers(1, 6, 12).astype(float)
        o = np.lexsort((-y, x))
        x, y = x[o], y[o]
        got = frontier_mask(x, y, np.ones((1, len(x)), dtype=np.int64))[0]
        assert (got == brute_frontier(x, y)).all()


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(50):
        v1, v2 = rng.integers(0, 5, 15).astype(float), rng.integers(0, 5, 15).astype(float)
        # pareto_mask minimises both; brute_frontier minimises x and maximises y
        assert (pareto_mask(v1, v2) == brute_frontier(v1, -v2)).all()


def test_frontier_fit_agrees_with_sql(tmp_path):
    write_study(tmp_path, n_trials=96, iterations=1)
    con = db.connect(str(tmp_path))
    sql = {r[1]: r for r in con.execute("SELECT task, arch, n, alpha, a, r2 FROM power_law").fetchall()}
    fits = memory_fits(con, n_boot=200)
    assert {r["arch"] for r in fits} == set(sql)
    for r in fits:
        _, _, n, alpha, a, r2 = sql[r["arch"]]
        assert r["n"] == n
        assert r["alpha"] == pytest.approx(alpha, rel=1e-9)
        assert r["a"] == pytest.approx(a, rel=1e-6)
        assert r["r2"] == pytest.approx(r2, rel=1e-9)


def test_pruned_frontier_bootstrap_keeps_every_trial_a_resample_frontier_uses():
    """The frontier bootstrap draws only from the first frontier layers; check with full
    per-trial resampling that no other trial ever reaches a resample's frontier."""
    rng = np.random.default_rng(5)
    n = 10_000
    x = np.exp(rng.uniform(20, 30, n))
    y = np.exp(0.5 * np.log(x) + rng.normal(0, 1, n))
    o = np.lexsort((-y, x))
    x, y = x[o], y[o]
    cand = np.zeros(n, bool)
    cand[_candidates(x, y)] = True
    assert cand.sum() < n * 0.8                   # the pruning does prune
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(200)])
    used = frontier_mask(x, y, counts).any(0)
    assert not (used & ~cand).any()
