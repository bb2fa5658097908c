"""Success probability over seeds: k of n seeds solved, with Wilson's 95% score interval (Wilson
1927, "Probable inference, the law of succession, and statistical inference"; Brown, Cai &
DasGupta 2001, "Interval estimation for a binomial proportion", recommend it for small n). The
study-wide tables are the SQL views success_rate (per task, arch, lag, window) and
success_by_config (per configuration, with L* over seeds); this module is the same arithmetic for
callers holding counts, and reads the views into dicts."""
from __future__ import annotations

import math

Z95 = 1.959963984540054      # standard normal 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rows(con, view: str = "success_rate") -> list[dict]:
    """The success_rate or success_by_config view as a list of dicts (column name -> value)."""
    if view not in ("success_rate", "success_by_config"):
        raise ValueError(f"view must be success_rate or success_by_config, not {view!r}")
    cur = con.execute(f"SELECT * FROM {view}")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
