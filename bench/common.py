"""Shared helpers of the benchmarks: machine description, load average, timing, JSON output."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return {"cores": os.cpu_count(), "mem_gib": round(mem, 1), "system": f"{platform.system()} {platform.machine()}",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timeit(fn, runs: int, warmup: int = 3) -> list[float]:
    """Wall seconds of `runs` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):   # TorchScript profiles and re-optimises on its first calls
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def maxrss_bytes() -> int:
    """This process's resident high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    p = RESULTS / f"{name}.json"
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
               "load_before": payload.pop("load_before", None), "load_after": loadavg(), **payload}
    p.write_text(json.dumps(payload, indent=1, default=str))
    return p


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (also readable in a terminal)."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def interleaved(fns: dict, runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """Time several variants round-robin, so a change in the machine's load hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out
