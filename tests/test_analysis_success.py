"""Success probability over seeds: success_rate and success_by_config count k of n by the rule
(diverged seeds are failures, timed-out ones are evaluated outcomes, out-of-memory and
pruned ones are not outcomes), and their Wilson
intervals equal analysis/success.py's, which equal published values."""
from __future__ import annotations

import pytest

from analysis import db
from analysis.success import rows, wilson
from study.results import Store


def test_wilson_matches_published_values():
    # Brown, Cai & DasGupta 2001 / any table of Wilson intervals, z = 1.96
    assert wilson(0, 3) == pytest.approx((0.0, 0.5615), abs=1e-4)
    assert wilson(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson(0, 0)
    assert lo != lo and hi != hi                     # nan: no seed counted


def run(tid, arch, lag, status, solved, ml, censored=False):
    return {"study": "hand", "trial_id": tid, "cell": f"arch={arch},lag={lag}", "arch": arch, "task": "adding",
            "seed": int(tid[-1]), "lag": lag, "train_flops": 1e9, "memory_length": ml, "status": status,
            "solved": solved, "censored": censored}


def test_success_queries_count_by_the_rule(tmp_path):
    store = Store(str(tmp_path))
    for r in [
        run("c000-t000-s0", "indrnn", 200, "completed", True, 250),
        run("c000-t000-s1", "indrnn", 200, "completed", True, 400, censored=True),
        run("c000-t000-s2", "indrnn", 200, "diverged", None, None),       # a failure, counted
        run("c000-t001-s0", "indrnn", 200, "completed", False, 20),
        run("c000-t001-s1", "indrnn", 200, "oom", None, None),            # not an outcome
        run("c000-t001-s2", "indrnn", 200, "timeout", True, 210),         # evaluated at its wall budget: counted
        run("c001-t000-s0", "lstm", 200, "completed", False, 30),
        run("c001-t000-s1", "lstm", 200, "completed", False, 10),
    ]:
        store.write_trial(r)
    con = db.connect(str(tmp_path))
    by_arch = {r["arch"]: r for r in rows(con, "success_rate")}
    assert (by_arch["indrnn"]["k"], by_arch["indrnn"]["n"], by_arch["indrnn"]["not_counted"]) == (3, 5, 1)
    assert by_arch["indrnn"]["configs"] == 2
    assert (by_arch["lstm"]["k"], by_arch["lstm"]["n"]) == (0, 2)
    for r in by_arch.values():
        assert (r["p_lo"], r["p_hi"]) == pytest.approx(wilson(r["k"], r["n"]), abs=1e-12)
    cfg = {r["config"]: r for r in rows(con, "success_by_config")}
    a = cfg["c000-t000"]
    assert (a["k"], a["n"], a["p"]) == (2, 3, pytest.approx(2 / 3))
    assert (a["p_lo"], a["p_hi"]) == pytest.approx(wilson(2, 3), abs=1e-12)
    assert (a["lstar_median"], a["lstar_min"], a["lstar_max"], a["lstar_censored"]) == (325, 250, 400, 1)
    assert a["seeds"] == [0, 1, 2]
    b = cfg["c000-t001"]
    assert (b["k"], b["n"], b["not_counted"], b["lstar_median"]) == (1, 2, 1, 115)
    with pytest.raises(ValueError):
        rows(con, "trials")
