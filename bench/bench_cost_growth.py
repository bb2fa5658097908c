"""Benchmark 3: cost growth. Wall time and peak memory of one training step per sequence against
seq_len (64 ... 16k), per arch, with the fitted exponents.

Each arch runs in a fresh process (batch 1, d_model 64, the family's default layers, window
`full` unless named), through lengths in increasing order. Time: median of up to 3 steps (1 when a
step takes over 5 s). Memory: the resident high-water mark (ru_maxrss) after the step minus the one
after a warm-up at T = 64; since the lengths increase, each length's peak is the new high-water mark.
A length is skipped once the step would take over `--cap` seconds, projected from the previous
length with a quadratic law (the worst case here), and an out-of-memory error is recorded as such.
Exponents: least-squares slope of log(cost) on log(seq_len) over the lengths >= 1024 (below that
per-call overheads, not the sequence, dominate).

    .venv/bin/python bench/bench_cost_growth.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from bench.common import maxrss_bytes, median
from study.memory import is_oom
from study.models import IO, MODELS, build_model
torch.set_num_threads(1)
arch, window, lens, cap = {arch!r}, {window!r}, {lens!r}, {cap}
io = IO(d_out=16, vocab_size=16)

def one(T, runs):
    torch.manual_seed(0)
    m = build_model(arch, MODELS.get(arch).config(d_model=64), io, T, window).train()
    x = torch.randint(0, 16, (1, T))
    ts = []
    for _ in range(runs):
        m.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out, _ = m(x)
        loss = F.cross_entropy(out.reshape(-1, 16), x.reshape(-1))
        (loss + (m.aux_loss if m.aux_loss is not None else 0)).backward()
        ts.append(time.perf_counter() - t0)
        if ts[-1] > 5:
            break
    return median(ts)

one(64, 2)
base, prev = maxrss_bytes(), None
for T in lens:
    if prev is not None and prev[1] * (T / prev[0]) ** 2 > cap:
        print(json.dumps({{"seq_len": T, "status": "skipped", "why": f"projected > {{cap}} s"}}), flush=True)
        continue
    try:
        t = one(T, 3)
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        print(json.dumps({{"seq_len": T, "status": "oom"}}), flush=True)
        break
    prev = (T, t)
    print(json.dumps({{"seq_len": T, "status": "ok", "seconds": t, "peak_bytes": maxrss_bytes() - base}}), flush=True)
"""


def slope(points: list[tuple[float, float]]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in points if y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def main() -> None:
    from bench.common import loadavg, table, write
    from study.models import MODELS
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cap", type=float, default=30.0, help="seconds per step beyond which a length is skipped")
    args = ap.parse_args()
    load0 = loadavg()
    lens = [64, 256, 1024, 4096] if args.quick else [64, 256, 1024, 4096, 16384]
    cases = [(a, None) for a in MODELS.names()] + [("transformer", 256), ("tova", 256)]
    rows, out = [], []
    for arch, window in cases:
        r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), arch=arch, window=window, lens=lens,
                                                                 cap=args.cap)], capture_output=True, text=True, cwd=ROOT)
        res = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode and not res:
            res = [{"seq_len": lens[0], "status": "error", "why": r.stderr.strip().splitlines()[-1][:200]}]
        ok = [x for x in res if x["status"] == "ok"]
        long = [x for x in ok if x["seq_len"] >= 1024]
        a_t = slope([(x["seq_len"], x["seconds"]) for x in long])
        a_m = slope([(x["seq_len"], x["peak_bytes"]) for x in long if x["peak_bytes"] > 2 ** 20])
        name = arch if window is None else f"{arch} (window {window})"
        cell = {x["seq_len"]: (f"{x['seconds']:.3g} s / {x['peak_bytes'] / 2 ** 20:.0f} MiB" if x["status"] == "ok"
                               else x["status"] + (f" ({x['why']})" if "why" in x else "")) for x in res}
        rows.append([name, *(cell.get(T, "—") for T in lens), f"{a_t:.2f}" if a_t is not None else "—",
                     f"{a_m:.2f}" if a_m is not None else "—"])
        out.append({"arch": arch, "window": window, "points": res, "time_exponent": a_t, "mem_exponent": a_m})
        print(rows[-1], flush=True)
    print(table(["arch", *(f"T={T}" for T in lens), "time exp.", "mem exp."], rows))
    print("load:", load0, "->", loadavg())
    write("cost_growth", {"load_before": load0, "lens": lens, "cap_s": args.cap, "rows": out})


if __name__ == "__main__":
    main()
