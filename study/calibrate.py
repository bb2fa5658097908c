"""Measured training throughput of each arch on this machine: `study calibrate` writes it, the
dry run (study.cost) reads it to turn FLOPs into seconds.

A calibration point is one (device, arch, d_model, seq_len): a few timed training steps of the copy
task at full window (the same `train_step` a trial runs, timed the way a trial's `wall_s` is),
stored as tokens/s together with the model's analytic forward FLOPs per token. Their product
times 3 (forward + backward) is the FLOP rate the arch achieved there. A prediction interpolates
log(achieved FLOP/s) bilinearly over (log d_model, log seq_len) between the four surrounding
points and divides the trial's own FLOPs by it; outside the measured range it keeps the rate of
the nearest edge (constant efficiency) rather than extrapolating a slope from two points.

File: JSON, by default `$XDG_CACHE_HOME/memscale/calibration.json` (`~/.cache/memscale/...`).
"""
from __future__ import annotations

import bisect
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from study.config import UsageError

VERSION = 1
POINT_KEYS = {"device": str, "arch": str, "d_model": int, "seq_len": int, "threads": int,
              "batch_size": int, "tokens_per_s": float, "flops_per_token": float}


class CalibrationError(UsageError):
    """A calibration file that cannot be used: one line, exit 2."""


def default_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memscale" / "calibration.json"


@dataclass(frozen=True)
class Point:
    device: str          # "cpu" or "cuda"
    device_name: str
    arch: str
    d_model: int
    seq_len: int
    threads: int         # torch CPU threads while measuring
    batch_size: int
    tokens_per_s: float
    flops_per_token: float

    @property
    def flops_per_s(self) -> float:
        """Training FLOP/s achieved here (backward ~ 2x forward, as train_flops counts it)."""
        return 3.0 * self.flops_per_token * self.tokens_per_s

    def short(self) -> str:
        return f"d_model={self.d_model},seq_len={self.seq_len}"


class Calibration:
    def __init__(self, path: str | Path, points: list[Point]):
        self.path, self.points = str(path), points

    def devices(self, arch: str) -> set[str]:
        return {p.device for p in self.points if p.arch == arch}

    def rate(self, device: str, arch: str, d_model: int, seq_len: int) -> tuple[Point, float, list[Point]] | None:
        """(a representative point, achieved training FLOP/s at (d_model, seq_len), the points used),
        or None when this arch was not calibrated on this device."""
        pts = [p for p in self.points if p.device == device and p.arch == arch]
        if not pts:
            return None
        grid = {(p.d_model, p.seq_len): p for p in pts}
        ds = sorted({p.d_model for p in pts})
        ts = sorted({p.seq_len for p in pts})
        d0, d1, wd = _bracket(ds, d_model)
        t0, t1, wt = _bracket(ts, seq_len)
        corners = [(d0, t0), (d1, t0), (d0, t1), (d1, t1)]
        if all(c in grid for c in corners):
            lr = [math.log(grid[c].flops_per_s) for c in corners]
            low = lr[0] * (1 - wd) + lr[1] * wd
            high = lr[2] * (1 - wd) + lr[3] * wd
            used = list(dict.fromkeys(grid[c] for c in corners))      # distinct, in order
            return used[0], math.exp(low * (1 - wt) + high * wt), used
        # a ragged grid (hand-edited file, skipped points): the nearest point in log space
        near = min(pts, key=lambda p: (math.log(p.d_model / d_model) ** 2 + math.log(p.seq_len / seq_len) ** 2))
        return near, near.flops_per_s, [near]


def _bracket(xs: list[int], x: float) -> tuple[int, int, float]:
    """Neighbours of x in sorted xs and x's log-position between them; clamped at the ends."""
    if x <= xs[0]:
        return xs[0], xs[0], 0.0
    if x >= xs[-1]:
        return xs[-1], xs[-1], 0.0
    i = bisect.bisect_right(xs, x)
    lo, hi = xs[i - 1], xs[i]
    if lo == x:
        return lo, lo, 0.0
    return lo, hi, math.log(x / lo) / math.log(hi / lo)


def load(path: str | Path | None = None) -> Calibration | None:
    """The calibration at `path` (default: the user cache); None when that file does not exist
    and no path was given. A given path that is missing, or any malformed file, is an error."""
    given = path is not None
    path = Path(path) if given else default_path()
    if not path.exists():
        if given:
            raise CalibrationError(f"{path}: no such calibration file; write one with `study calibrate --out {path}`")
        return None
    where = str(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{where}: cannot read the calibration file ({e})") from None
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{where}: line {e.lineno}: malformed JSON ({e.msg}); "
                               f"rewrite it with `study calibrate`") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list):
        raise CalibrationError(f"{where}: points: expected an object with a list 'points'; "
                               f"rewrite it with `study calibrate`")
    if raw.get("version") != VERSION:
        raise CalibrationError(f"{where}: version: expected {VERSION}, found {raw.get('version')!r}; "
                               f"rewrite it with `study calibrate`")
    return Calibration(path, [_point(where, i, p) for i, p in enumerate(raw["points"])])


def _point(where: str, i: int, p) -> Point:
    if not isinstance(p, dict):
        raise CalibrationError(f"{where}: points[{i}]: expected an object")
    for k, kind in POINT_KEYS.items():
        v = p.get(k)
        ok = isinstance(v, str) and v if kind is str else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            and (kind is float or float(v).is_integer()))
        if not ok:
            want = "a name" if kind is str else ("a positive whole number" if kind is int else "a positive number")
            raise CalibrationError(f"{where}: points[{i}].{k}: expected {want}, found {v!r} "
                                   f"(keys: {', '.join(POINT_KEYS)})")
    if p["device"] not in ("cpu", "cuda"):
        raise CalibrationError(f"{where}: points[{i}].device: expected cpu or cuda, found {p['device']!r}")
    return Point(device=p["device"], device_name=str(p.get("device_name", "")), arch=p["arch"],
                 d_model=int(p["d_model"]), seq_len=int(p["seq_len"]), threads=int(p["threads"]),
                 batch_size=int(p["batch_size"]), tokens_per_s=float(p["tokens_per_s"]),
                 flops_per_token=float(p["flops_per_token"]))


# ---- measuring --------------------------------------------------------------------------------

MIN_SECONDS = 0.5       # a point keeps stepping until this much was timed (at most 20 x steps)


def measure(arch: str, d_model: int, seq_len: int, batch_size: int, steps: int, device,
            min_seconds: float = MIN_SECONDS) -> dict:
    """Time at least `steps` training steps (after one untimed warm-up step) of `arch` on the
    copy task, more while under `min_seconds`: a few milliseconds are too noisy to trust."""
    import torch

    from study.config import TrainConfig
    from study.models import build_model
    from study.registry import MODELS, TASKS
    from study.tasks import build_task
    from study.train import precision, train_step

    task_cfg = TASKS.get("copy").config(lag=max(1, seq_len - 7), n_symbols=3, lag_dist="fixed")
    task = build_task("copy", task_cfg)
    cfg = MODELS.get(arch).config(d_model=d_model)
    torch.manual_seed(0)
    model = build_model(arch, cfg, task.io, seq_len, None).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    _, amp = precision(device, model.recurrent)
    clip = TrainConfig().grad_clip
    elapsed, k = 0.0, 0
    while k <= steps or (elapsed < min_seconds and k <= 20 * steps):
        batch = task.sample(batch_size, gen, seq_len=seq_len).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(model, task, batch, None, opt, clip, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k:                                   # the first step pays for allocation and kernels
            elapsed += time.perf_counter() - t0
        k += 1
    timed = k - 1
    return {"arch": arch, "d_model": d_model, "seq_len": seq_len, "batch_size": batch_size, "steps": timed,
            "tokens_per_s": timed * batch_size * seq_len / elapsed,
            "flops_per_token": float(model.flops_per_token(seq_len, None))}


def calibrate(archs: list[str], d_models: list[int], seq_lens: list[int], batch_size: int, steps: int,
              threads: int, out: Path, log=print) -> Path:
    """Measure every (arch, d_model, seq_len) on this machine's device and write the file at `out`
    (points for other devices already in it are kept, so CPU and GPU calibrations can share it)."""
    import torch

    from study.train import pick_device
    device = pick_device()
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    keep = []
    if out.exists():
        try:
            keep = [p for p in json.loads(out.read_text()).get("points", []) if p.get("device") != device.type]
        except (OSError, ValueError, AttributeError):
            keep = []          # an unreadable old file is replaced
    points = []
    for arch in archs:
        for d in d_models:
            for T in seq_lens:
                try:
                    m = measure(arch, d, T, batch_size, steps, device)
                except Exception as e:          # noqa: BLE001 - one bad point must not lose the rest
                    log(f"  {arch:<22} d_model={d:<5} seq_len={T:<6} skipped: {type(e).__name__}: {str(e)[:120]}")
                    continue
                points.append({"device": device.type, "device_name": name, "threads": threads, **m})
                log(f"  {arch:<22} d_model={d:<5} seq_len={T:<6} {m['tokens_per_s']:12.4g} tokens/s  "
                    f"{3 * m['flops_per_token'] * m['tokens_per_s']:10.3g} FLOP/s")
    doc = {"version": VERSION, "host": platform.node(), "torch_version": torch.__version__,
           "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "points": keep + points}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    return out


# ---- the command line ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--archs", nargs="+", default=None, help="archs to measure (default: all)")
    p.add_argument("--d-models", nargs="+", type=int, default=[32, 128], metavar="D")
    p.add_argument("--seq-lens", nargs="+", type=int, default=[64, 512], metavar="T")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per point, after one warm-up step")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (match the spec's cpu per trial)")
    p.add_argument("--out", default=None, help="file to write (default: $XDG_CACHE_HOME/memscale/calibration.json)")


def cmd_calibrate(a) -> int:
    from study.registry import MODELS
    archs = a.archs or MODELS.names()
    for x in archs:
        if x not in MODELS:
            raise UsageError(f"study calibrate: --archs: unknown arch {x!r} (valid: {', '.join(MODELS.names())})")
    for flag, vals, low in (("--d-models", a.d_models, 1), ("--seq-lens", a.seq_lens, 8),
                            ("--batch-size", [a.batch_size], 1), ("--steps", [a.steps], 1),
                            ("--threads", [a.threads], 1)):
        if min(vals) < low:
            raise UsageError(f"study calibrate: {flag}: expected whole numbers >= {low}")
    out = Path(a.out) if a.out else default_path()
    print(f"calibrating {len(archs)} archs x {len(a.d_models)} d_model x {len(a.seq_lens)} seq_len "
          f"({a.steps} timed steps of batch {a.batch_size}, {a.threads} thread(s))", flush=True)
    calibrate(archs, a.d_models, a.seq_lens, a.batch_size, a.steps, a.threads, out,
              log=lambda line: print(line, flush=True))
    print(f"wrote {out}")
    return 0
