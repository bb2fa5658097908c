"""Scaling-law fits as the literature now does them (docs/design.md, "Fitting method"): summed
Huber loss on log residuals from a grid of L-BFGS starts, a cluster bootstrap over configurations,
censored points as one-sided terms, a power law against a saturating form, and a backtest.
analysis/fit.py holds the plain least-squares power law these build on."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.fit import CHUNK, DEPTH, MIN_POINTS, N_BOOT, Fit, _candidates, _groups, frontier_mask

# ---------------------------------------------------------------------------------------------
# Scaling-law fits as the literature now does them (docs/design.md, "Fitting method").
#
# Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", approach 3) fit their
# law by minimising a Huber loss (delta = 1e-3) of the residuals in log space with L-BFGS from a
# grid of initialisations; Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt",
# Epoch AI) showed the loss must be *summed* over points (a mean with a default optimiser tolerance
# stops early) and put intervals on it by bootstrap; OLMo-core's ladder fitter and Apple's
# scalefit do the same (log-Huber objective, many starts, a converged flag per start). Here:
#   * points are trials; seeds of one configuration (cell + slot: same hyperparameters) form a
#     cluster, and the bootstrap resamples whole clusters, since seeds share everything but noise;
#   * the fitted set is the frontier of configurations (median L* over seeds beats every cheaper
#     configuration's), recomputed in every resample, with every seed of a frontier configuration
#     a point, so seed spread is in the residuals rather than hidden by a lucky seed;
#   * a censored L* (a lower bound) adds a one-sided term: it costs only when the fit predicts
#     below it (Tobit-style), instead of being dropped (biased low) or read as a value;
#   * two forms are compared by leave-one-configuration-out error: the power law and a power law
#     that saturates at a ceiling L_max (the task's longest lag, or an arch's capacity);
#   * a backtest fits the lower two thirds of the log-compute range and scores the top third.
# ---------------------------------------------------------------------------------------------

# delta: with L* residuals of ~0.1-0.5 in ln units (seed noise, integer L*), delta = 1e-3 (Hoffmann
# et al.'s value) makes the loss |r| everywhere but a 1e-3 quadratic core: median regression,
# which one diverged seed or one lucky seed cannot drag (least squares lets one outlier pull the
# exponent by its squared residual), yet differentiable, so L-BFGS applies. The loss is divided
# by delta (same minimiser) so its gradients are O(1) and L-BFGS's tolerances mean something.
HUBER_DELTA = 1e-3
FORMS = ("power", "saturating")
IRLS_ITERS = 5000         # cap on vectorised refit steps per row (see _irls_power)
BACKTEST_SPLIT = 2 / 3    # fit below this fraction of the log-compute range, score above it


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber's rho divided by delta: r^2/(2 delta) inside [-delta, delta], |r| - delta/2 outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r / delta, a - 0.5 * delta)


def _psi(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """d huber / d r."""
    return np.clip(r / delta, -1.0, 1.0)


def predict(form: str, p: np.ndarray, lx: np.ndarray) -> np.ndarray:
    """ln y of a form at (centred) ln x. power: c + alpha lx. saturating: the power law u = c +
    alpha lx bent onto a ceiling m = ln L_max, ln y = u - ln(1 + e^(u - m)) (a smooth minimum of
    u and m: the power law below the ceiling, L_max above it)."""
    u = p[0] + p[1] * lx
    if form == "power":
        return u
    return u - np.logaddexp(0.0, u - p[2])


def _grad_pred(form: str, p: np.ndarray, lx: np.ndarray) -> np.ndarray:
    """(len(p), n): d predict / d p."""
    if form == "power":
        return np.stack([np.ones_like(lx), lx])
    u = p[0] + p[1] * lx
    s = 1.0 / (1.0 + np.exp(-(u - p[2])))          # d softplus(u - m) / du
    return np.stack([1 - s, (1 - s) * lx, s])


def objective(p: np.ndarray, form: str, lx, ly, cens, w) -> tuple[float, np.ndarray]:
    """Summed (weighted) Huber loss of log residuals, and its gradient. Censored points: one-sided,
    r = max(ly - prediction, 0), i.e. only a prediction below the lower bound costs."""
    r = ly - predict(form, p, lx)
    r = np.where(cens, np.maximum(r, 0.0), r)
    loss = float((w * huber(r)).sum())
    g = -(_grad_pred(form, p, lx) * (w * _psi(r))).sum(axis=1)
    return loss, g


GRID = 8                  # starts per parameter axis of the power law (8 x 8 = 64 starts)


def _starts(form: str, lx, ly, grid: int = GRID) -> np.ndarray:
    """Grid of initialisations, as Hoffmann et al. and Besiroglu et al. do: exponents from
    decreasing to steep, intercepts around the data, ceilings from the largest L* up."""
    alphas = np.linspace(-1.0, 2.0, grid)
    cs = ly.mean() + np.linspace(-3.0, 3.0, grid)
    if form == "power":
        return np.array([(c, a) for a in alphas for c in cs])                       # 64 starts
    ms = ly.max() + np.array([-0.5, 0.5, 2.0, 5.0])
    return np.array([(c, a, m) for a in alphas[::2] for c in cs[::2] for m in ms])   # 64 starts


@dataclass
class FormFit:
    form: str
    params: np.ndarray                 # centred-log parameters (c, alpha[, m])
    loss: float
    restarts: int
    converged: int                     # starts whose L-BFGS run reported success
    best_converged: bool


def fit_form(form: str, lx, ly, cens, w=None, starts: np.ndarray | None = None, grid: int = GRID) -> FormFit:
    """Minimise the summed Huber loss with L-BFGS (scipy) from every start; keep the best."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits     # comes with scikit-learn
    w = np.ones(len(lx)) if w is None else w
    starts = _starts(form, lx, ly, grid) if starts is None else starts
    best, n_conv = None, 0
    for s in starts:
        # One BLAS thread: L-BFGS-B's vectors have 2-3 entries, and OpenBLAS waking its thread
        # pool on every call made each start 30x slower on a loaded 2-core machine.
        with np.errstate(over="ignore"), threadpool_limits(1):
            res = minimize(objective, s, args=(form, lx, ly, cens, w), jac=True, method="L-BFGS-B",
                           options={"maxiter": 300, "gtol": 1e-8, "ftol": 1e-12})
        n_conv += bool(res.success)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun - 1e-12):
            best = res
    return FormFit(form, np.asarray(best.x), float(best.fun), len(starts), n_conv, bool(best.success))


def _irls_power(lx, ly, cens, W, iters: int = IRLS_ITERS) -> np.ndarray:
    """The power-law Huber fit for every row of weights W (B, n) at once: iteratively reweighted
    least squares (weights psi(r)/r, Huber 1981 ch. 7), vectorised over resamples, so a thousand
    bootstrap refits cost a few numpy passes instead of a thousand L-BFGS runs. Each step
    minimises a quadratic that lies above the loss and touches it at the current fit (a
    majorise-minimise step, so the loss never goes up). A censored point whose prediction is above
    its bound (r0 < 0) costs nothing now, and |r| - delta/2 at most once the prediction falls
    below it; the quadratic centred on the current prediction with weight delta/(2|r0|) lies above
    that, so it is its step. lx, ly, cens: (n,) shared by every row, or (B, n) per row.
    Returns (B, 2): alpha, c (centred intercept)."""
    lx, ly, cens = (np.broadcast_to(v, W.shape) for v in (lx, ly, cens))
    slope, icpt = _wls_rows(lx, ly, W)                    # start: weighted least squares
    # Most rows settle in tens of steps, but near-L1 IRLS creeps along flat directions in a few
    # (0.0025 in alpha after 200 steps in one resample of 200, 2,000 steps to settle): iterate only
    # the rows still moving.
    live = np.isfinite(slope)
    for _ in range(iters):
        if not live.any():
            break
        i = np.flatnonzero(live)
        Wl, xl, yl, cl = W[i], lx[i], ly[i], cens[i]
        pred = icpt[i, None] + slope[i, None] * xl
        r = yl - pred
        above = cl & (r < 0)
        target = np.where(above, pred, yl)
        a = np.maximum(np.abs(r), 1e-300)
        wi = Wl * np.where(above, np.minimum(1.0, HUBER_DELTA / (2 * a)), np.minimum(1.0, HUBER_DELTA / a))
        s1, c1 = _wls_rows(xl, target, wi)
        moved = np.maximum(np.abs(s1 - slope[i]), np.abs(c1 - icpt[i]))
        slope[i], icpt[i] = s1, c1
        live[i] = ~(moved < 1e-10)                       # NaN (degenerate resample) stops too
    return np.stack([slope, icpt], axis=1)


def _wls_rows(lx, ly, w):
    """Weighted least squares of ly on lx, row by row (all (B, n)) -> slopes, intercepts."""
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w * lx).sum(1) / sw, (w * ly).sum(1) / sw
        sxx = (w * lx * lx).sum(1) / sw - mx * mx
        sxy = (w * lx * ly).sum(1) / sw - mx * my
        slope = np.where(sxx > 1e-12, sxy / sxx, np.nan)
    return slope, my - slope * mx


@dataclass
class ScalingFit(Fit):
    """A Fit (alpha, a and their cluster-bootstrap intervals are the power law's) plus the
    literature diagnostics."""
    form: str = ""                     # chosen form: "power" or "saturating"
    restarts: int = 0                  # L-BFGS starts of the chosen form's full-data fit
    converged: int = 0                 # of which reported convergence
    best_converged: bool | None = None
    clusters: int = 0                  # configurations in the fitted set (bootstrap units)
    censored_points: int = 0
    loco_power: float | None = None    # leave-one-configuration-out |ln error| (mean over configurations), per form
    loco_saturating: float | None = None
    l_max: float | None = None         # the saturating form's ceiling, when fitted
    backtest_rmse: float | None = None # chosen form, ln units, top third of the compute range
    backtest_points: int = 0

    def row(self) -> dict:
        return {**super().row(), **{k: getattr(self, k) for k in DIAGNOSTICS}}


DIAGNOSTICS = ["form", "restarts", "converged", "best_converged", "clusters", "censored_points", "loco_power",
               "loco_saturating", "l_max", "backtest_rmse", "backtest_points"]


def _abs_err(form, p, lx, ly, cens) -> np.ndarray:
    r = ly - predict(form, p, lx)
    return np.abs(np.where(cens, np.maximum(r, 0.0), r))


def loco_errors(form: str, lx, ly, cens, cluster, full: FormFit) -> np.ndarray:
    """Leave-one-configuration-out: refit without each configuration (warm-started from the
    full-data optimum, as Besiroglu et al. start their bootstrap refits) and score its points;
    per configuration (sorted by name), the mean |ln error| of its points."""
    errs = []
    for c in np.unique(cluster):
        out = cluster == c
        f = fit_form(form, lx[~out], ly[~out], cens[~out], starts=full.params[None, :])
        errs.append(_abs_err(form, f.params, lx[out], ly[out], cens[out]).mean())
    return np.array(errs)


def prefer_saturating(err_power: np.ndarray, err_sat: np.ndarray) -> bool:
    """The one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL 7.10):
    the extra parameter must lower the held-out error by more than one standard error of the
    per-configuration differences, else the simpler power law stands (a ceiling far above the
    data fits as well as no ceiling, and must not win on rounding)."""
    d = err_power - err_sat
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.inf
    return bool(d.mean() > max(se, 1e-9))


def backtest(form: str, lx, ly, cens, split: float = BACKTEST_SPLIT) -> tuple[float | None, int]:
    """Fit on points in the lower `split` of the ln-compute range, predict the rest: RMSE of the
    ln residuals there (a censored point's residual is one-sided). None when either side has too
    few points (the fit side needs MIN_POINTS distinct x)."""
    cut = lx.min() + split * (lx.max() - lx.min())
    train, test = lx <= cut, lx > cut
    if len(np.unique(lx[train])) < MIN_POINTS + (form != "power") or not test.any():
        return None, int(test.sum())
    f = fit_form(form, lx[train], ly[train], cens[train], starts=_starts(form, lx[train], ly[train])[::4])
    r = ly[test] - predict(form, f.params, lx[test])
    r = np.where(cens[test], np.maximum(r, 0.0), r)
    return float(np.sqrt(np.mean(r * r))), int(test.sum())


def _group_median(v: np.ndarray, inv: np.ndarray, m: int) -> np.ndarray:
    """Median of v within each of m groups (inv: group of each value), in one sort."""
    o = np.lexsort((v, inv))
    vs = v[o]
    cnt = np.bincount(inv, minlength=m)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    return (vs[start + (cnt - 1) // 2] + vs[start + cnt // 2]) / 2


def config_frontier(x, y, cluster) -> np.ndarray:
    """Per point: is its configuration on the frontier of configurations? Each configuration sits
    at the median compute and median L* of its seeds; same rule as frontier_mask."""
    keys, inv = np.unique(cluster, return_inverse=True)
    cx, cy = _group_median(x, inv, len(keys)), _group_median(y, inv, len(keys))
    o = np.lexsort((-cy, cx))
    on_sorted = frontier_mask(cx[o], cy[o], np.ones((1, len(keys)), dtype=np.int64))[0]
    on = np.empty(len(keys), bool)
    on[o] = on_sorted
    return on[inv]


def scaling_law(x, y, cluster=None, *, censored=None, frontier: bool = False, n_boot: int = N_BOOT,
                seed: int = 0, level: float = 0.95, compare: bool = True, grid: int = GRID) -> ScalingFit:
    """y = a * x^alpha by summed Huber loss on ln residuals, L-BFGS from a grid of starts, with a
    cluster bootstrap interval, and (compare=True) the saturating form, LOCO choice and backtest.

    Args:
        x, y: one value per trial (x > 0, y > 0 kept; y = 0 has no logarithm).
        cluster: per trial, its configuration (seeds of one configuration share it); default:
            every trial its own cluster (the ordinary bootstrap).
        censored: per trial, y is only a lower bound (one-sided loss term).
        frontier: fit only the frontier configurations, recomputed in every resample.
        compare: also fit the saturating form, choose by leave-one-configuration-out error, backtest.
        grid: starts per axis of the start grid (the power law's loss is convex in its two
            parameters, so tests that refit hundreds of times use a small grid).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n0 = len(x)
    cens = np.zeros(n0, bool) if censored is None else np.asarray(censored, dtype=bool)
    cluster = np.arange(n0).astype(str) if cluster is None else np.asarray(cluster).astype(str)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y, cens, cluster = x[keep], y[keep], cens[keep], cluster[keep]
    on = config_frontier(x, y, cluster) if frontier and len(x) else np.ones(len(x), bool)
    lx_all, ly_all = np.log(x), np.log(y)
    cx, cy = (lx_all[on].mean(), ly_all[on].mean()) if on.any() else (0.0, 0.0)
    lx, ly = lx_all - cx, ly_all - cy                    # centred: ln(FLOPs) ~ 25 would scale alpha's gradient
    n, n_x = int(on.sum()), len(np.unique(x[on]))
    n_cl = len(np.unique(cluster[on]))
    n_cens = int((on & cens).sum())
    cnote = f"{n_cens} censored point{'s' * (n_cens != 1)} fitted as lower bounds" if n_cens else ""
    if n_x < MIN_POINTS or n_cl < MIN_POINTS:
        return ScalingFit(n=n, n_x=n_x, clusters=n_cl, censored_points=n_cens,
                          note="; ".join(filter(None, ["too few points", cnote])))
    fl, fy, fc, fk = lx[on], ly[on], cens[on], cluster[on]
    pw = fit_form("power", fl, fy, fc, grid=grid)
    chosen, sat = pw, None
    loco = {"power": None, "saturating": None}
    if compare:
        e_pw = loco_errors("power", fl, fy, fc, fk, pw)
        loco["power"] = float(e_pw.mean())
        if n_cl > MIN_POINTS:                              # three parameters need a fourth configuration to test
            sat = fit_form("saturating", fl, fy, fc, grid=grid)
            e_sat = loco_errors("saturating", fl, fy, fc, fk, sat)
            loco["saturating"] = float(e_sat.mean())
            # The knee (where the power law meets the ceiling) must lie inside the measured compute
            # range: a knee beyond the data is curvature extrapolated past it, not a plateau the
            # data show (on pure power laws the LOCO rule alone picked such a ceiling 3 times in 20).
            c, a, m = sat.params
            if prefer_saturating(e_pw, e_sat) and a > 0 and (m - c) / a < fl.max():
                chosen = sat
    bt, bt_n = backtest(chosen.form, fl, fy, fc) if compare else (None, 0)

    boot = _cluster_boot(x, y, lx, ly, cens, cluster, frontier, n_boot, seed)
    boot[:, 1] += cy - boot[:, 0] * cx                  # undo the centring: ln a
    ok = np.isfinite(boot).all(1)
    boot = boot[ok]
    q = (1 - level) / 2
    (alo, ahi), (llo, lhi) = np.quantile(boot, [q, 1 - q], axis=0).T
    alpha, c = float(pw.params[1]), float(pw.params[0])
    resid = fy - predict("power", pw.params, fl)
    ss = ((fy - fy.mean()) ** 2).sum()
    r2 = 1 - (resid ** 2).sum() / ss if ss > 0 else 1.0
    notes = [cnote, "" if ok.mean() > 0.99 else f"{(~ok).sum()} degenerate resamples dropped"]
    if chosen.form == "saturating":
        notes.append("saturates: alpha is the power law's, the ceiling is l_max")
    return ScalingFit(n=n, n_x=n_x, alpha=alpha, a=math.exp(c + cy - alpha * cx), r2=float(r2),
                      alpha_lo=float(alo), alpha_hi=float(ahi), a_lo=math.exp(llo), a_hi=math.exp(lhi),
                      note="; ".join(filter(None, notes)), boot=boot, form=chosen.form,
                      restarts=chosen.restarts, converged=chosen.converged, best_converged=chosen.best_converged,
                      clusters=n_cl, censored_points=n_cens, loco_power=loco["power"],
                      loco_saturating=loco["saturating"],
                      l_max=None if sat is None else float(math.exp(sat.params[2] + cy)),
                      backtest_rmse=bt, backtest_points=bt_n)


def _cluster_boot(x, y, lx, ly, cens, cluster, frontier, n_boot, seed) -> np.ndarray:
    """(B, 2) alpha, c of the power-law Huber fit on resamples of whole configurations: a
    configuration drawn k times enters with all its seeds at weight k; with frontier=True the
    configuration frontier is recomputed on each resample. As in _boot_frontier, only the
    configurations of the first DEPTH frontier layers can reach a resample's frontier, so only
    they are drawn one by one (a Binomial number of the m draws hit them, uniformly)."""
    rng = np.random.default_rng(seed)
    keys, inv = np.unique(cluster, return_inverse=True)
    m = len(keys)
    if frontier:
        cxm, cym = _group_median(x, inv, m), _group_median(y, inv, m)
        o = np.lexsort((-cym, cxm))
        cand = o[_candidates(cxm[o], cym[o])]            # still x ascending, ties y descending
    else:
        cand = np.arange(m)
    mc = len(cand)
    pos = np.full(m, -1)
    pos[cand] = np.arange(mc)
    pt = pos[inv] >= 0                                   # points of candidate configurations
    pinv, lxp, lyp, cp = pos[inv][pt], lx[pt], ly[pt], cens[pt]
    out = np.full((n_boot, 2), np.nan)
    step = max(1, CHUNK // 8 // max(mc + len(lxp), 1))
    for b0 in range(0, n_boot, step):
        b = min(step, n_boot - b0)
        hits = rng.binomial(m, mc / m, size=b)
        draws = rng.integers(0, mc, size=hits.sum()) + mc * np.repeat(np.arange(b), hits)
        counts = np.bincount(draws, minlength=b * mc).reshape(b, mc)
        if frontier:
            counts = counts * frontier_mask(cxm[cand], cym[cand], counts)
        W = counts[:, pinv].astype(float)
        # Most candidates are off a given resample's frontier: pack each row's weighted points to
        # the left and cut the zero tail, so the refit costs O(frontier), not O(candidates).
        k = max(int((W > 0).sum(1).max()), 1)
        idx = np.argsort(W <= 0, axis=1, kind="stable")[:, :k]
        res = _irls_power(lxp[idx], lyp[idx], cp[idx], np.take_along_axis(W, idx, axis=1))
        res[(counts > 0).sum(1) < 2] = np.nan           # one configuration: no slope to speak of
        out[b0:b0 + b] = res
    return out


def memory_scaling_fits(con, n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """memory_length = a * train_flops^alpha per (task, arch), fitted the literature's way
    (scaling_law): frontier of configurations, seeds clustered, censored L* as lower bounds."""
    data = con.execute("""SELECT task, arch, train_flops, memory_length, coalesce(censored, false) AS censored,
                                 regexp_replace(trial_id, '-s[0-9]+$', '') AS config
                          FROM trials
                          WHERE status IN ('completed', 'pruned') AND train_flops > 0
                                AND memory_length IS NOT NULL
                          ORDER BY task, arch, trial_id""").fetchnumpy()
    rows = []
    for (task, arch), sel in _groups(data, ("task", "arch")):
        f = scaling_law(data["train_flops"][sel], data["memory_length"][sel], data["config"][sel],
                        censored=data["censored"][sel], frontier=True, n_boot=n_boot, seed=seed)
        rows.append({"task": task, "arch": arch, "fit": "memory_length ~ train_flops", "trials": int(sel.sum()),
                     **f.row(), "_fit": f})
    return rows
