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

`--per-token` (issue 19): training seconds per token of every recurrent family (and the TCN and
attention beside them) at T = 256 ... 16,384, batch 8, d_model 128, 1 thread, each relative to
the family's own value at T = 256 (target: <= 1.3x). All models live in one process and are timed
round-robin, (run, T, arch) innermost arch, so a change in the machine's load hits every family
and length alike; the time is the process's CPU time (user + kernel, `time.process_time`; one
torch thread), which a shared machine's load inflates far less than wall time; medians of `--runs` timed steps after one untimed warm-up step per (arch, T),
which is profiled for its peak tensor bytes (study/peak.py): memory per sequence and its
exponent come from that, up to `--profile-to` (1,024: profiling a 16k-step loop costs minutes);
longer lengths get no warm-up (their first timed step is one of the runs). A length is skipped when the warm-up projects a step past `--cap` s or a
peak past `--mem-cap` GiB (the machine is shared).

    .venv/bin/python bench/bench_cost_growth.py --per-token [--runs 3] [--isolate]

`--isolate` runs each family in a fresh process of its own, one after another (a trial's worker
runs one model; in one shared process the families' allocations share one heap).
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


def per_token(args) -> None:
    """The --per-token table (module docstring)."""
    import time

    import torch
    import torch.nn.functional as F

    from bench.common import loadavg, median, table, write
    from study.models import IO, MODELS, build_model
    from study.peak import peak_tensor_bytes
    torch.set_num_threads(1)
    if not args.default_malloc:
        from study.heap import keep_freed_memory
        keep_freed_memory()         # as a trial does (study/train.py)
    load0, B, D = loadavg(), args.batch, args.d_model
    lens = [256, 1024, 4096, 16384]
    io = IO(d_out=16, vocab_size=16)
    cases = [(a, None) for a in MODELS.names() if MODELS.get(a).cls.recurrent and a != "tova"]
    cases += [("tcn", None), ("transformer", 256), ("transformer", None)]
    if args.archs:
        cases = [(a, w) for a, w in cases if (a if w is None else f"{a}@{w}") in args.archs]
    name = lambda a, w: a if w is None else f"{a} (window {w})"
    if args.isolate:
        return per_token_isolated(args, cases, name, lens, load0)

    def stepper(arch, window, T):
        torch.manual_seed(0)
        m = build_model(arch, MODELS.get(arch).config(d_model=D), io, T, window).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        x = torch.randint(0, 16, (B, T), generator=torch.Generator().manual_seed(0))

        def step():
            opt.zero_grad(set_to_none=True)
            out, _ = m(x)
            loss = F.cross_entropy(out.reshape(-1, 16), x.reshape(-1))
            (loss + (m.aux_loss if m.aux_loss is not None else 0)).backward()
            opt.step()
        return step

    steps, info = {}, {}
    for arch, window in cases:              # warm-up (profiled) in increasing T, deciding the skips
        prev = None
        for T in lens:
            key = (arch, window, T)
            if prev is not None:
                (T0, t0, m0) = prev
                k_t = 2.0 if (arch == "transformer" and window is None) else 1.0
                if t0 * (T / T0) ** k_t > args.cap or m0 * (T / T0) > args.mem_cap * 2 ** 30:
                    info[key] = {"status": "skipped", "why": f"projected > {args.cap:g} s or {args.mem_cap:g} GiB"}
                    continue
            try:
                fn = stepper(arch, window, T)
                if T <= args.profile_to:
                    t = time.perf_counter()
                    _, peak = peak_tensor_bytes(fn)
                    t = time.perf_counter() - t
                else:       # no warm-up past profile_to (time); memory projected linearly from the last profiled T
                    peak = None
                    t = time.process_time()
                    fn()
                    t = time.process_time() - t
            except (RuntimeError, MemoryError) as e:
                info[key] = {"status": "error", "why": str(e).splitlines()[0][:120]}
                continue
            steps[key], info[key] = fn, {"status": "ok", "peak_bytes": peak, "warmup_s": t, "times": []}
            if peak is None:
                info[key]["times"].append(t)        # the first timed run
                peak = prev[2] * T / prev[0]
            prev = (T, t, peak)
            print(name(arch, window), T, f"first step {t:.2f} s, peak {peak / 2 ** 20:.0f} MiB", flush=True)
    def report(final: bool) -> None:
        rows, out = [], []
        for arch, window in cases:
            us = {T: median(info[(arch, window, T)]["times"]) / (B * T) * 1e6
                  for T in lens if info.get((arch, window, T), {}).get("status") == "ok"}
            mem = {T: info[(arch, window, T)]["peak_bytes"] / B for T in us if info[(arch, window, T)]["peak_bytes"]}
            base = us.get(lens[0])
            cell = lambda T: (f"{us[T] / base:.2f}x" if T in us and base else info.get((arch, window, T), {}).get("status", "—"))
            a_m = slope(list(mem.items()))
            worst = max((us[T] / base for T in us), default=float("nan")) if base else float("nan")
            rows.append([name(arch, window), f"{base:.1f}" if base else "—", *(cell(T) for T in lens[1:]),
                         f"{worst:.2f}x", f"{mem[max(mem)] / 2 ** 20:.1f} @ {max(mem)}" if mem else "—",
                         f"{a_m:.2f}" if a_m is not None else "—"])
            out.append({"arch": arch, "window": window, "us_per_token": us, "mem_per_seq_bytes": mem,
                        "points": {T: info.get((arch, window, T)) for T in lens}, "mem_exponent": a_m})
        print(table(HEAD(lens), rows))
        print("load:", load0, "->", loadavg())
        if final and args.rows_out:     # a child of --isolate: its rows go to the parent
            Path(args.rows_out).write_text(json.dumps({"rows": out, "table": rows}, default=str))
        elif final:
            write("cost_per_token", {"load_before": load0, "keep_freed_memory": not args.default_malloc, "lens": lens, "batch": B, "d_model": D, "runs": args.runs,
                                     "cap_s": args.cap, "mem_cap_gib": args.mem_cap, "rows": out})

    for r in range(args.runs):
        for T in lens:
            for arch, window in cases:
                key = (arch, window, T)
                if key in steps and len(info[key]["times"]) < args.runs:
                    t = time.process_time()
                    steps[key]()
                    info[key]["times"].append(time.process_time() - t)
        print(f"run {r + 1}/{args.runs} done, load {loadavg()}", flush=True)
        report(r == args.runs - 1)      # a table after every run: medians so far


HEAD = lambda lens: ["arch", "T=256 µs/token", *(f"T={T} / T=256" for T in lens[1:]), "worst",
                     "MiB per sequence @ T", "mem. exp."]


def per_token_isolated(args, cases, name, lens, load0) -> None:
    """--isolate: each family in a process of its own, as a trial's worker runs one model at a time
    (in one process the families' allocations share one heap: a long step of one can leave it
    fragmented for the next). The families run one after another, so the machine must be quiet."""
    import tempfile

    from bench.common import loadavg, table, write
    rows, out = [], []
    for arch, window in cases:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--per-token", "--archs", arch if window is None else f"{arch}@{window}",
                   "--runs", str(args.runs), "--cap", str(args.cap), "--mem-cap", str(args.mem_cap),
                   "--batch", str(args.batch), "--d-model", str(args.d_model), "--profile-to", str(args.profile_to),
                   "--rows-out", f.name] + (["--default-malloc"] if args.default_malloc else [])
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            got = json.loads(Path(f.name).read_text() or "{}") if r.returncode == 0 else {}
        if not got:
            print(f"{name(arch, window)}: failed: {r.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        rows += got["table"]
        out += got["rows"]
        print(table(HEAD(lens), got["table"]).splitlines()[-1], f"(load {loadavg()})", flush=True)
    print(table(HEAD(lens), rows))
    print("load:", load0, "->", loadavg())
    write("cost_per_token_isolated", {"load_before": load0, "keep_freed_memory": not args.default_malloc,
                                      "lens": lens, "batch": args.batch, "d_model": args.d_model, "runs": args.runs,
                                      "cap_s": args.cap, "mem_cap_gib": args.mem_cap, "rows": out})


def main() -> None:
    from bench.common import loadavg, table, write
    from study.models import MODELS
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cap", type=float, default=30.0, help="seconds per step beyond which a length is skipped")
    ap.add_argument("--per-token", action="store_true", help="the per-token ratio table (module docstring)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--mem-cap", type=float, default=3.0, help="GiB of peak tensor memory beyond which a length is skipped")
    ap.add_argument("--archs", nargs="*", help="only these (windowed transformer: transformer@256)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="--per-token: glibc as shipped, not study.heap.keep_freed_memory as a trial runs")
    ap.add_argument("--profile-to", type=int, default=1024,
                    help="--per-token: profile (and warm up) lengths up to this; longer ones are timed cold, 3 runs")
    ap.add_argument("--isolate", action="store_true",
                    help="--per-token: each family in a fresh process, one after another (per_token_isolated)")
    ap.add_argument("--rows-out", help=argparse.SUPPRESS)     # --isolate's children write their rows here
    args = ap.parse_args()
    if args.per_token:
        return per_token(args)
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
