"""Power-law fits y = a * x^alpha with bootstrap intervals: memory length over training compute
(on each arch's frontier) and cost over seq_len.

The point estimate is ordinary least squares on (ln x, ln y), the same numbers as the SQL views
(`regr_slope`/`regr_intercept`/`regr_r2`). The interval is the percentile bootstrap (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13): resample the trials with
replacement, recompute the frontier of the resample when the fit is on a frontier, refit, and take
the 2.5% and 97.5% quantiles.

Censored trials (L* only a lower bound: the ladder ran out while the score held) still set the
frontier, since their lower bound already beats any cheaper trial it beats, but are left out of
the regression, which would otherwise read a cap as a measurement; the fit's note counts them.
A thousand resamples run as a few vectorised numpy passes: sums of
gathered draws for plain fits, per-candidate counts and weighted least squares for frontier fits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

N_BOOT = 1000
MIN_POINTS = 3           # distinct x values below which a fit says "too few points"
CHUNK = 4_000_000        # resample-by-trial cells per numpy batch: bounds memory at ~100 MB


@dataclass
class Fit:
    """One fit; alpha, a and the intervals are None when there were too few points."""
    n: int                         # points fitted (frontier points when frontier=True)
    n_x: int                       # distinct x values among them
    alpha: float | None = None
    a: float | None = None
    r2: float | None = None
    alpha_lo: float | None = None
    alpha_hi: float | None = None
    a_lo: float | None = None
    a_hi: float | None = None
    note: str = ""
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)  # (B, 2): alpha, ln a

    def band(self, x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval of the fitted curve at x."""
        lx = np.log(np.asarray(x, dtype=float))
        ly = self.boot[:, :1] * lx[None, :] + self.boot[:, 1:]          # (B, len(x))
        q = (1 - level) / 2
        lo, hi = np.quantile(ly, [q, 1 - q], axis=0)
        return np.exp(lo), np.exp(hi)

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("n", "n_x", "alpha", "alpha_lo", "alpha_hi", "a", "a_lo", "a_hi",
                                               "r2", "note")}


def frontier_mask(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Which trials are on the (x lower, y higher) frontier of each resample.

    x must be sorted ascending with ties sorted by y descending; counts is (B, n), how often each
    trial is in each resample. Same rule as analysis/queries/frontier.sql: a trial is on the
    frontier when its y beats every included trial with smaller x and is the best at its own x.
    """
    inc = counts > 0
    run = np.maximum.accumulate(np.where(inc, y, -np.inf), axis=1)      # best y so far, this trial included
    start = np.searchsorted(x, x, side="left")                          # first trial with the same x
    prev = run[:, np.maximum(start - 1, 0)]
    prev[:, start == 0] = -np.inf                                       # nothing is cheaper than the first x
    return inc & (y > prev) & (y >= run)


def _wls(lx: np.ndarray, ly: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ly on lx for each row of weights w (B, n) -> slopes, intercepts."""
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w @ lx) / sw, (w @ ly) / sw
        sxx = (w @ (lx * lx)) / sw - mx * mx
        sxy = (w @ (lx * ly)) / sw - mx * my
        slope = np.where(sxx > 1e-12, sxy / sxx, np.nan)    # one distinct x in a resample: no slope
    return slope, my - slope * mx


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float]:
    slope, icpt = _wls(lx, ly, np.ones((1, len(lx))))
    resid = ly - (slope[0] * lx + icpt[0])
    ss = ((ly - ly.mean()) ** 2).sum()
    r2 = 1 - (resid ** 2).sum() / ss if ss > 0 else 1.0
    return float(slope[0]), float(icpt[0]), float(r2)


def power_law(x, y, *, frontier: bool = False, censored=None, n_boot: int = N_BOOT, seed: int = 0,
              level: float = 0.95) -> Fit:
    """Fit y = a * x^alpha on points with x > 0 and y > 0.

    Args:
        x, y: one value per trial.
        frontier: fit only the trials on the (x lower, y higher) frontier, recomputed in every
            resample (the frontier is a statistic of the trials, so its uncertainty is part of the fit's).
        censored: per trial, y is only a lower bound: such trials take part in the frontier but
            not in the regression (module docstring).
        n_boot: bootstrap resamples; seed makes them reproducible.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    cens = np.zeros(len(x), bool) if censored is None else np.asarray(censored, dtype=bool)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y, cens = x[keep], y[keep], cens[keep]
    order = np.lexsort((-y, x))                                          # x ascending, ties y descending
    x, y, cens = x[order], y[order], cens[order]
    lx, ly = np.log(x), np.log(y)
    # Centre the logs: the one-pass moments in _wls lose digits on ln(FLOPs) ~ 25 otherwise.
    cx, cy = (lx.mean(), ly.mean()) if len(x) else (0.0, 0.0)
    lx, ly = lx - cx, ly - cy
    on = frontier_mask(x, y, np.ones((1, len(x)), dtype=np.int64))[0] if frontier else np.ones(len(x), bool)
    left_out = int((on & cens).sum())
    on &= ~cens
    n, n_x = int(on.sum()), len(np.unique(x[on]))
    cnote = f"{left_out} censored point{'s' * (left_out != 1)} (lower bounds) left out" if left_out else ""
    if n_x < MIN_POINTS:
        return Fit(n=n, n_x=n_x, note="; ".join(filter(None, ["too few points", cnote])))
    slope, icpt, r2 = _ols(lx[on], ly[on])
    boot = _bootstrap(x, y, lx, ly, frontier, n_boot, seed, cens)
    boot[:, 1] += cy - boot[:, 0] * cx                                  # undo the centring: ln a
    ok = np.isfinite(boot[:, 0])
    boot = boot[ok]
    q = (1 - level) / 2
    (alo, ahi), (llo, lhi) = np.quantile(boot, [q, 1 - q], axis=0).T
    return Fit(n=n, n_x=n_x, alpha=slope, a=math.exp(icpt + cy - slope * cx), r2=r2,
               alpha_lo=float(alo), alpha_hi=float(ahi), a_lo=math.exp(llo), a_hi=math.exp(lhi),
               note="; ".join(filter(None, [cnote, "" if ok.mean() > 0.99 else f"{(~ok).sum()} degenerate resamples dropped"])),
               boot=boot)


def _bootstrap(x, y, lx, ly, frontier: bool, n_boot: int, seed: int, cens: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if frontier:
        return _boot_frontier(x, y, lx, ly, n_boot, rng, cens)
    return _boot_all(lx[~cens], ly[~cens], n_boot, rng)


def _boot_all(lx, ly, n_boot, rng) -> np.ndarray:
    """Every trial is fitted, so a resample's fit needs only five sums over the drawn trials
    (count, Σx, Σy, Σx², Σxy): gathered straight from the draws, no per-trial count matrix."""
    n = len(lx)
    lxy = lx * ly
    out = np.empty((n_boot, 2))
    step = max(1, CHUNK // n)
    for b0 in range(0, n_boot, step):
        b = min(step, n_boot - b0)
        idx = rng.integers(0, n, size=(b, n), dtype=np.int32 if n < 2 ** 31 else np.int64)
        gx = lx[idx]
        sx, sxx = gx.sum(1) / n, (gx * gx).sum(1) / n
        sy, sxy = ly[idx].sum(1) / n, lxy[idx].sum(1) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            vxx = sxx - sx * sx
            slope = np.where(vxx > 1e-12, (sxy - sx * sy) / vxx, np.nan)
        out[b0:b0 + b, 0], out[b0:b0 + b, 1] = slope, sy - slope * sx
    return out


DEPTH = 30   # frontier layers a resample's frontier can draw from (see _candidates)


def _candidates(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the trials in the first DEPTH frontier layers (peel the frontier, repeat).

    A trial in layer L is dominated by at least L-1 others (each peeled layer holds one of its
    dominators), so it reaches a resample's frontier only if all of them are left out: probability
    at most e^-(L-1), ~3e-13 at L = 30: about 1e-5 such events expected over 1e5 trials x 1e3
    resamples. Bootstrapping only these trials turns an O(resamples x trials) job into
    O(resamples x frontier layers).
    """
    left = np.ones((1, len(x)), dtype=np.int64)
    keep = np.zeros(len(x), bool)
    for _ in range(DEPTH):
        on = frontier_mask(x, y, left)[0]
        if not on.any():
            break
        keep |= on
        left[0, on] = 0
    return np.flatnonzero(keep)


def _boot_frontier(x, y, lx, ly, n_boot, rng, cens) -> np.ndarray:
    n = len(x)
    cand = _candidates(x, y)
    m = len(cand)
    xc, yc = x[cand], y[cand]                            # still sorted: x ascending, ties y descending
    # How many of a resample's n draws hit a candidate is Binomial(n, m/n); given that number, the
    # hits are uniform over the candidates. So counts cost O(m) per resample, not O(n), and the
    # other trials (which never reach a frontier) are never drawn one by one.
    out = np.empty((n_boot, 2))
    step = max(1, CHUNK // max(m, 1))
    for b0 in range(0, n_boot, step):
        b = min(step, n_boot - b0)
        hits = rng.binomial(n, m / n, size=b)
        draws = rng.integers(0, m, size=hits.sum()) + m * np.repeat(np.arange(b), hits)
        counts = np.bincount(draws, minlength=b * m).reshape(b, m)
        w = counts * frontier_mask(xc, yc, counts) * ~cens[cand]        # censored: frontier, not fit
        s, i = _wls(lx[cand], ly[cand], w.astype(float))
        out[b0:b0 + b, 0], out[b0:b0 + b, 1] = s, i
    return out


def memory_fits(con, n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """memory_length = a * train_flops^alpha on each (task, arch) frontier."""
    data = con.execute("""SELECT task, arch, train_flops, memory_length,
                                 coalesce(censored, false) AS censored FROM trials
                          WHERE status IN ('completed', 'pruned') AND train_flops > 0
                                AND memory_length IS NOT NULL
                          ORDER BY task, arch""").fetchnumpy()
    rows = []
    for (task, arch), sel in _groups(data, ("task", "arch")):
        f = power_law(data["train_flops"][sel], data["memory_length"][sel], frontier=True,
                      censored=data["censored"][sel], n_boot=n_boot, seed=seed)
        rows.append({"task": task, "arch": arch, "fit": "memory_length ~ train_flops", "trials": int(sel.sum()),
                     **f.row(), "_fit": f})
    return rows


# Memory: the training step's peak tensor bytes (study/peak.py); a study from before that column
# has only the process's resident peak, noise on CPU, and falls back to it (as cost_growth.sql).
PEAK = "coalesce(peak_tensor_bytes, peak_mem_bytes)"
COST = {"wall_s_per_seq": "wall_s * seq_len / tokens",
        "peak_mem_bytes_per_seq": f"{PEAK} * steps * seq_len / tokens"}


# a windowed run is its own cost series, as in cost_growth.sql
SERIES = """arch || CASE WHEN "window" IS NULL THEN '' ELSE ' @window ' || "window" END"""


def cost_fits(con, n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """Wall seconds and peak memory per sequence = a * seq_len^alpha, per arch (as cost_growth.sql)."""
    data = con.execute(f"""SELECT {SERIES} AS arch, seq_len, {COST['wall_s_per_seq']} AS wall_s_per_seq,
                                  {COST['peak_mem_bytes_per_seq']} AS peak_mem_bytes_per_seq
                           FROM trials
                           WHERE status IN ('completed', 'pruned') AND tokens > 0 AND steps > 0
                                 AND seq_len > 0 AND wall_s > 0 AND {PEAK} > 0
                           ORDER BY arch""").fetchnumpy()
    rows = []
    for (arch,), sel in _groups(data, ("arch",)):
        for what in COST:
            f = power_law(data["seq_len"][sel], data[what][sel], n_boot=n_boot, seed=seed)
            rows.append({"task": None, "arch": arch, "fit": f"{what} ~ seq_len", "trials": int(sel.sum()),
                         **f.row(), "_fit": f})
    return rows


def _groups(data: dict, keys: tuple[str, ...]):
    """(key values, boolean mask) for each distinct key combination of fetched columns."""
    cols = [np.asarray(data[k]).astype(str) for k in keys]
    if not len(cols[0]):
        return
    combos = np.stack(cols, axis=1)
    uniq, inv = np.unique(combos, axis=0, return_inverse=True)
    for j, key in enumerate(uniq):
        yield tuple(key), inv.ravel() == j
