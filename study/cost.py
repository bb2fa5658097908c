"""What a study will cost before it runs (`study run SPEC --dry-run`), and the prediction a run
stores (`prediction.json`) for `study report` to check against what it measured.

FLOPs are the models' own analytic counts, exactly as a trial records them: training is
3 x flops_per_token x batch_size x seq_len x steps (train.py's `train_flops`), evaluation is one
forward pass over every ladder sequence at each evaluation. Searched parameters that change the
cost (d_model, n_layers, ...) are evaluated at every corner of their ranges (min and max) and at
their log-midpoint; parameters that cannot change it (lr, weight_decay, ...) are left at one value.

Seconds come from a calibration (study.calibrate: measured FLOP/s per arch on this machine,
interpolated) or, for an arch not calibrated on the device a cell asks for, from
FLOPs / (MFU x the device's peak), both stated in the output. A cell asking for a fraction of
a GPU is assumed to run as fast as on a whole one (small trials do not fill a GPU): its
GPU-hours are its hours times the fraction.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from study.calibrate import Calibration
from study.config import Cell, Dist, Resolved, Spec, cells, given_values, resolve, searched, seq_len_of
from study.memory import ladder
from study.meta import on_meta
from study.models import build_model
from study.tasks import build_task

# Searched parameters that do not change FLOPs, parameters or state: left at the low end.
NO_COST = {"lr", "weight_decay", "grad_clip", "tau", "max_eval_s", "dropout"}
# Fallback when an arch was not calibrated on the device a cell asks for. Stated in the output.
MFU = 0.1
PEAK_FLOPS = {"cuda": 31.2e12,    # per GPU: NVIDIA A10G (the cluster.yaml default) fp32, datasheet
              "cpu": 5.0e10}      # per core: ~3 GHz x 8-wide fp32 FMA x 2, halved for what torch reaches


# ---- one trial ----------------------------------------------------------------------------------

@dataclass
class TrialCost:
    values: dict                # the cost-relevant searched values of this configuration
    train_flops: float
    eval_flops: float
    params: int
    state_size: int
    device: str                 # "cpu" or "cuda": what the spec's resources give this arch
    cpu: float
    gpu: float
    flops_per_s: float          # achieved training FLOP/s assumed for this trial
    source: str                 # "calibrated" or "fallback"
    points: list[str] = field(default_factory=list)   # calibration points used
    max_wall_s: float | None = None    # the budget's cap: training stops there, one evaluation follows
    n_evals: int = 1

    @property
    def train_s(self) -> float:
        return self.train_flops / self.flops_per_s

    @property
    def eval_s(self) -> float:
        return self.eval_flops / self.flops_per_s

    @property
    def capped(self) -> bool:
        return self.max_wall_s is not None and self.train_s + self.eval_s > self.max_wall_s

    @property
    def seconds(self) -> float:
        if self.capped:
            return self.max_wall_s + self.eval_s / self.n_evals
        return self.train_s + self.eval_s


SMALL_MODEL = 1024      # d_model x n_layers up to which a model is cheaper to build for real


@functools.lru_cache(maxsize=4096)
def _model_counts(arch: str, model_cfg, io, seq_len: int, window: int | None,
                  eval_lens: tuple[int, ...]) -> tuple[float, tuple[float, ...], int, int]:
    """(train flops/token, flops/token at each evaluation length, params, state size). A large
    model is built on the meta device (no memory, no init); a small one, or a family that cannot
    be built there, for real (the meta device's first use costs seconds of imports)."""
    m = None
    if model_cfg.d_model * model_cfg.n_layers > SMALL_MODEL:
        try:
            with on_meta():
                m = build_model(arch, model_cfg, io, seq_len, window)
        except Exception:                       # noqa: BLE001 - e.g. an init that reads values
            m = None
    if m is None:
        m = build_model(arch, model_cfg, io, seq_len, window)
    return (float(m.flops_per_token(seq_len, window)),
            tuple(float(m.flops_per_token(t, window)) for t in eval_lens),
            int(m.num_params()), int(m.state_size(seq_len, window)))


@functools.lru_cache(maxsize=64)
def _task(name: str, cfg):
    return build_task(name, cfg)


@functools.lru_cache(maxsize=4096)
def _eval_shape(name: str, cfg, lag: int, seq_len: int, eval_batch: int) -> tuple[int, int]:
    """(sequences, length) scored at one ladder lag, read off one real sample so every task's own
    rule (text windows of exactly `lag`, copy padded to the training length) is followed."""
    task = _task(name, cfg)
    b = task.sample(1, torch.Generator().manual_seed(0), lag=lag, seq_len=max(seq_len, task.default_seq_len(lag)))
    return task.eval_size(eval_batch, lag), int(b.x.shape[1])


def train_steps(budget, flops_per_step: float, fpt: float, tokens_per_step: int) -> int:
    """Steps a trial runs: the budget, or fewer where max_flops stops it (train.py's own test)."""
    if budget.max_flops is None or 3.0 * fpt * (budget.steps - 1) * tokens_per_step < budget.max_flops:
        return budget.steps
    k = min(budget.steps - 1, max(1, math.ceil(budget.max_flops / flops_per_step)))
    while k > 1 and 3.0 * fpt * (k - 1) * tokens_per_step >= budget.max_flops:
        k -= 1
    while 3.0 * fpt * k * tokens_per_step < budget.max_flops:
        k += 1
    return min(budget.steps, k)


def trial_cost(spec: Spec, values: dict[str, Any], rates: "Rates") -> TrialCost:
    r: Resolved = resolve(values)
    task = _task(r.task, r.task_cfg)
    seq_len, window = seq_len_of(r), r.train.window
    lags = ladder(r.task_cfg.lag, r.task_cfg.lag_dist, r.train.max_lag)
    shapes = [_eval_shape(r.task, r.task_cfg, lag, seq_len, r.train.eval_batch) for lag in lags]
    fpt, eval_fpt, params, state = _model_counts(r.arch, r.model, task.io, seq_len, window,
                                                 tuple(t for _, t in shapes))
    tokens_per_step = r.train.batch_size * seq_len
    steps = train_steps(spec.budget, 3.0 * fpt * tokens_per_step, fpt, tokens_per_step)
    # evaluations: every eval_every steps before the last, and one at the end
    n_evals = (steps - 1) // spec.budget.eval_every + 1
    eval_flops = n_evals * sum(n * t * f for (n, t), f in zip(shapes, eval_fpt))
    need = spec.resources.for_arch(r.arch)
    device = "cuda" if need.gpu > 0 else "cpu"
    rate, source, points = rates.rate(r.arch, device, r.model.d_model, seq_len, need.cpu)
    return TrialCost(values={}, train_flops=3.0 * fpt * (steps * tokens_per_step), eval_flops=float(eval_flops),
                     params=params, state_size=state, device=device, cpu=need.cpu, gpu=need.gpu,
                     flops_per_s=rate, source=source, points=points, max_wall_s=spec.budget.max_wall_s,
                     n_evals=n_evals)


class Rates:
    """Achieved training FLOP/s for (arch, device, d_model, seq_len): calibrated, else MFU x peak."""

    def __init__(self, calibration: Calibration | None, mfu: float = MFU, peak: dict | None = None):
        self.calibration, self.mfu, self.peak = calibration, mfu, {**PEAK_FLOPS, **(peak or {})}
        self.thread_notes: set[str] = set()

    def rate(self, arch: str, device: str, d_model: int, seq_len: int, cpus: float) -> tuple[float, str, list[str]]:
        got = self.calibration.rate(device, arch, d_model, seq_len) if self.calibration else None
        if got is None:
            per = self.peak[device] * (max(1.0, cpus) if device == "cpu" else 1.0)
            return self.mfu * per, "fallback", []
        point, rate, used = got
        if device == "cpu" and point.threads != max(1, int(cpus)):
            # measured with other thread counts than the trial gets: scale linearly (optimistic)
            self.thread_notes.add(f"{arch}: calibrated with {point.threads} thread(s), spec gives {cpus:g} CPU(s)")
            rate *= max(1, int(cpus)) / point.threads
        return rate, "calibrated", [p.short() for p in used]

    def to_json(self) -> dict:
        cal = self.calibration
        return {"mfu": self.mfu, "peak_flops": self.peak,
                "calibration": None if cal is None else {"path": cal.path, "points": [asdict(p) for p in cal.points]}}


# ---- one cell, the whole study ------------------------------------------------------------------

def _midpoint(d: Dist) -> Any:
    """The log-midpoint of a range (the arithmetic one when it starts at 0 or below); for a
    choice, the choice nearest to the log-midpoint of its numeric extremes, else the middle one."""
    if d.kind == "choice":
        nums = [c for c in d.choices if isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0]
        if len(nums) == len(d.choices):
            mid = math.sqrt(min(nums) * max(nums))
            return min(nums, key=lambda c: abs(math.log(c / mid)))
        return d.choices[len(d.choices) // 2]
    mid = math.sqrt(d.low * d.high) if d.low > 0 else (d.low + d.high) / 2
    return int(round(mid)) if d.kind == "int" else mid


def _corners(d: Dist) -> list[Any]:
    if d.kind == "choice":
        return list(d.choices)
    return [int(d.low), int(d.high)] if d.kind == "int" else [d.low, d.high]


@dataclass
class CellCost:
    cell: Cell
    arch: str
    trials: int                 # trials_per_cell x seeds
    low: TrialCost              # the cheapest configuration (by training FLOPs)
    mid: TrialCost              # the log-midpoint configuration
    high: TrialCost             # the most expensive one
    varies: list[str]           # searched parameters that change the cost

    def total(self, what: str, which: str = "mid") -> float:
        return self.trials * getattr(getattr(self, which), what)


def cell_cost(spec: Spec, cell: Cell, rates: Rates) -> CellCost:
    dists = searched(spec)
    varies = [k for k in dists if k not in NO_COST]
    fixed_search = {k: _corners(d)[0] for k, d in dists.items() if k in NO_COST}
    costs = []
    for combo in itertools.product(*(_corners(dists[k]) for k in varies)):
        sample = {**fixed_search, **dict(zip(varies, combo))}
        c = trial_cost(spec, given_values(spec, cell, sample), rates)
        c.values = dict(zip(varies, combo))
        costs.append(c)
    mid_sample = {**fixed_search, **{k: _midpoint(dists[k]) for k in varies}}
    mid = trial_cost(spec, given_values(spec, cell, mid_sample), rates)
    mid.values = {k: mid_sample[k] for k in varies}
    arch = resolve(given_values(spec, cell, mid_sample)).arch
    low = min(costs, key=lambda c: (c.train_flops, c.seconds))
    high = max(costs, key=lambda c: (c.train_flops, c.seconds))
    return CellCost(cell, arch, spec.trials_per_cell * len(spec.seeds), low, mid, high, varies)


def preview(spec: Spec, rates: Rates) -> list[CellCost]:
    return [cell_cost(spec, c, rates) for c in cells(spec)]


# ---- printing -----------------------------------------------------------------------------------

def eng(x: float) -> str:
    return f"{x:.3g}" if x < 1e3 else f"{x:.2e}".replace("e+0", "e").replace("e+", "e")


def duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _span(c: CellCost, what: str, fmt=eng, per_trial: bool = False) -> str:
    k = 1 if per_trial else c.trials
    lo, mid, hi = (k * getattr(x, what) for x in (c.low, c.mid, c.high))
    if fmt(lo) == fmt(hi):
        return fmt(mid)
    return f"{fmt(lo)}..{fmt(hi)} [{fmt(mid)}]"


def machine() -> tuple[int, int]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return os.cpu_count() or 1, gpus


def report_lines(spec: Spec, costs: list[CellCost], rates: Rates, price_gpu: float | None = None,
                 price_cpu: float | None = None) -> list[str]:
    """The dry run's cost section: one line per cell, the totals, where the seconds came from,
    and the bill when prices are given."""
    out = []
    varies = costs[0].varies if costs else []
    how = (f"; searched {', '.join(varies)}: min..max [log-midpoint]" if varies else "")
    out.append(f"cost per cell ({costs[0].trials if costs else 0} trials each{how}):")
    w = max([len(c.cell.label) for c in costs] + [4])
    wi = max([len(c.cell.id) for c in costs] + [4])         # content-addressed ids (study/identity.py)
    out.append(f"  {'cell':<{wi}} {'':<{w}}  {'train FLOPs':<27} {'eval FLOPs':<27} {'params':<24} "
               f"{'state':<24} trial time")
    for c in costs:
        out.append(f"  {c.cell.id:<{wi}} {c.cell.label:<{w}}  {_span(c, 'train_flops'):<27} {_span(c, 'eval_flops'):<27} "
                   f"{_span(c, 'params', per_trial=True):<24} {_span(c, 'state_size', per_trial=True):<24} "
                   f"{_span(c, 'seconds', duration)}")
    tot = {w_: {k: sum(c.total(k, w_) for c in costs) for k in ("train_flops", "eval_flops", "seconds")}
           for w_ in ("low", "mid", "high")}

    def span(k, f=eng):
        lo, mid, hi = tot["low"][k], tot["mid"][k], tot["high"][k]
        return f(mid) if f(lo) == f(hi) else f"{f(lo)}..{f(hi)} [{f(mid)}]"

    n = sum(c.trials for c in costs)
    out.append(f"total: {n} trials; training {span('train_flops')} FLOPs; evaluation {span('eval_flops')} FLOPs; "
               f"{span('seconds', duration)} of trial time")
    if spec.scheduler and spec.scheduler.asha:
        out.append("  (FLOPs and time are upper bounds: ASHA stops weak trials early)")
    capped = {w_: sum(c.trials for c in costs if getattr(c, w_).capped) for w_ in ("low", "mid", "high")}
    if capped["high"]:
        n = (str(capped["mid"]) if capped["low"] == capped["high"]
             else f"{capped['low']}..{capped['high']} [{capped['mid']}]")
        out.append(f"  (max_wall_s={spec.budget.max_wall_s:g} stops {n} trials early: their time is the cap plus "
                   f"one evaluation, their FLOPs what the budget asks, more than they will reach)")
    # GPU trials' CPUs come with their GPU node: CPU-hours count trials without a GPU
    hours = {w_: {"gpu": sum(c.trials * getattr(c, w_).seconds * getattr(c, w_).gpu for c in costs) / 3600,
                  "cpu": sum(c.trials * getattr(c, w_).seconds * getattr(c, w_).cpu for c in costs
                             if getattr(c, w_).gpu == 0) / 3600}
             for w_ in ("low", "mid", "high")}

    def h(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

    def hspan(k):
        lo, mid, hi = (hours[w_][k] for w_ in ("low", "mid", "high"))
        return h(mid) if h(lo) == h(hi) else f"{h(lo)}..{h(hi)} [{h(mid)}]"

    out.append(f"resources: {hspan('gpu')} GPU-hours, {hspan('cpu')} CPU-hours "
               "(trial time x the GPUs each trial asks for; x the CPUs of trials without a GPU)")
    # where the seconds came from
    cal = rates.calibration
    by_source: dict[str, set[str]] = {}
    for c in costs:
        for t in (c.low, c.mid, c.high):
            key = f"{c.arch} on {t.device}"
            if t.source == "calibrated":
                by_source.setdefault(key, set()).update(t.points)
            else:
                by_source.setdefault(key, set())
    calibrated = {k: v for k, v in by_source.items() if v}
    if calibrated:
        out.append(f"time from calibration {cal.path}, interpolated between the points:")
        for k, pts in sorted(calibrated.items()):
            out.append(f"  {k}: {'; '.join(sorted(pts, key=_point_order))}")
        for note in sorted(rates.thread_notes):
            out.append(f"  note: {note}; the rate is scaled linearly (optimistic)")
    missing = sorted(k for k, v in by_source.items() if not v)
    if missing:
        where = f"{cal.path} has no points for them" if cal else "no calibration file; run `study calibrate`"
        out.append(f"not calibrated: {', '.join(missing)} ({where}); their time is FLOPs / "
                   f"({rates.mfu:g} MFU x peak {eng(rates.peak['cuda'])} FLOP/s per GPU, "
                   f"{eng(rates.peak['cpu'])} FLOP/s per CPU core)")
    gpu_cells = [c for c in costs if c.mid.gpu > 0]
    out.append("  (evaluation is assumed to run at the training rate"
               + ("; a trial sharing a GPU as fast as alone)" if gpu_cells else ")"))
    cpus, gpus = machine()
    if not gpu_cells:
        slots = max(1, int(cpus // max(c.mid.cpu for c in costs))) if costs else 1
        if spec.max_concurrent:
            slots = min(slots, spec.max_concurrent)
        out.append(f"elapsed on this machine ({cpus} CPUs, {slots} trials at a time): "
                   f"{span('seconds', lambda s: duration(s / slots))}")
    elif gpus:
        out.append(f"elapsed on this machine ({gpus} GPUs): about "
                   f"{duration(hours['mid']['gpu'] * 3600 / gpus)} if the GPUs are the limit")
    if price_gpu is not None or price_cpu is not None:
        lo = hours["low"]["gpu"] * (price_gpu or 0) + hours["low"]["cpu"] * (price_cpu or 0)
        mid = hours["mid"]["gpu"] * (price_gpu or 0) + hours["mid"]["cpu"] * (price_cpu or 0)
        hi = hours["high"]["gpu"] * (price_gpu or 0) + hours["high"]["cpu"] * (price_cpu or 0)
        rates_s = ", ".join(s for s in (f"${price_gpu:g} per GPU-hour" if price_gpu is not None else "",
                                        f"${price_cpu:g} per CPU-hour" if price_cpu is not None else "") if s)
        bill = money(mid) if money(lo) == money(hi) else f"{money(lo)}..{money(hi)} [{money(mid)}]"
        out.append(f"bill at {rates_s}: {bill}")
    return out


def money(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else (f"${x:.2f}" if x >= 1 else f"${x:.2g}")


def _point_order(s: str) -> tuple:
    return tuple(int(p.split("=")[1]) for p in s.split(","))


def prediction_json(spec: Spec, costs: list[CellCost], rates: Rates) -> bytes:
    """What the run predicted, stored in the study folder for `study report`."""
    cells_out = []
    for c in costs:
        one = {}
        for w in ("low", "mid", "high"):
            t = getattr(c, w)
            one[w] = {"values": t.values, "train_flops": t.train_flops, "eval_flops": t.eval_flops,
                      "train_s": t.train_s, "eval_s": t.eval_s, "seconds": t.seconds, "params": t.params,
                      "state_size": t.state_size, "device": t.device, "source": t.source, "points": t.points,
                      "flops_per_s": t.flops_per_s}
        cells_out.append({"cell": c.cell.label, "id": c.cell.id, "arch": c.arch, "trials": c.trials, **one})
    return json.dumps({"study": spec.study, "rates": rates.to_json(), "cells": cells_out}, indent=1).encode()


# ---- the command line ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    """`study run` options of the cost preview."""
    p.add_argument("--calibration", default=None,
                   help="calibration file (default: $XDG_CACHE_HOME/memscale/calibration.json, if present)")
    p.add_argument("--mfu", type=float, default=None,
                   help=f"model-FLOPs utilisation assumed for archs not calibrated (default {MFU})")
    p.add_argument("--price-per-gpu-hour", type=float, default=None, metavar="USD", help="with --dry-run: print the bill")
    p.add_argument("--price-per-cpu-hour", type=float, default=None, metavar="USD", help="with --dry-run: print the bill")


def rates_from_args(a) -> Rates:
    from study.calibrate import load
    from study.config import UsageError
    for flag, v in (("--mfu", a.mfu), ("--price-per-gpu-hour", a.price_per_gpu_hour),
                    ("--price-per-cpu-hour", a.price_per_cpu_hour)):
        if v is not None and not (v > 0 and math.isfinite(v) and (flag != "--mfu" or v <= 1)):
            raise UsageError(f"study run: {flag}: expected a positive number{' <= 1' if flag == '--mfu' else ''}")
    return Rates(load(a.calibration), a.mfu or MFU)


def print_preview(spec: Spec, rates: Rates, a) -> None:
    print("\n".join(report_lines(spec, preview(spec, rates), rates, a.price_per_gpu_hour, a.price_per_cpu_hour)))


def store_prediction(spec: Spec, store, rates: Rates) -> None:
    """Write prediction.json into the study folder; a failure here never stops the run."""
    import sys
    try:
        store.write_bytes(prediction_json(spec, preview(spec, rates), rates), "prediction.json")
    except Exception as e:                      # noqa: BLE001 - the prediction is a nicety
        print(f"study run: no time prediction stored ({type(e).__name__}: {e})", file=sys.stderr)


def rates_from_json(doc: dict) -> Rates:
    """The Rates a run used, rebuilt from its prediction.json (for the report)."""
    from study.calibrate import Calibration, Point
    cal = doc.get("calibration")
    calibration = None if cal is None else Calibration(cal["path"], [Point(**p) for p in cal["points"]])
    return Rates(calibration, doc.get("mfu", MFU), doc.get("peak_flops"))
