"""Why a recurrence's cost per token grew with T on CPU, and the fix (study/heap.py).

For each arch and T: one training step (forward, cross-entropy, backward, Adam; batch 8, d_model
128, 1 thread), median of `--runs` after one warm-up, in a fresh process per malloc mode:
`default` (glibc as shipped) and `keep` (study.heap.keep_freed_memory, what a trial runs).
Reports CPU microseconds per token (user + system time of the process, which a shared machine's
load inflates far less than wall time), minor page faults per token, and wall microseconds per
token. The ratio column is each arch's CPU time per token at T over its own at the first T.

    .venv/bin/python bench/bench_heap.py [--archs lstm gru rnn] [--lens 256 16384] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from bench.common import median
from study.heap import keep_freed_memory
from study.models import IO, MODELS, build_model
if {mode!r} == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
io = IO(d_out=16, vocab_size=16)
for arch in {archs!r}:
    for T in {lens!r}:
        torch.manual_seed(0)
        m = build_model(arch, MODELS.get(arch).config(d_model=128), io, T, None).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        x = torch.randint(0, 16, ({batch}, T))
        res = []
        for i in range({runs} + 1):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out, _ = m(x)
            F.cross_entropy(out.reshape(-1, 16), x.reshape(-1)).backward()
            opt.step()
            t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            if i:
                res.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, r1.ru_stime - r0.ru_stime,
                            r1.ru_minflt - r0.ru_minflt, t))
        n = {batch} * T
        print(json.dumps({{"arch": arch, "T": T, "cpu_us": median([r[0] for r in res]) / n * 1e6,
                          "sys_us": median([r[1] for r in res]) / n * 1e6, "faults": median([r[2] for r in res]) / n,
                          "wall_us": median([r[3] for r in res]) / n * 1e6}}), flush=True)
"""


def main() -> None:
    from bench.common import loadavg, table, write
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="*", default=["lstm", "gru", "rnn"])
    ap.add_argument("--lens", nargs="*", type=int, default=[256, 16384])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    load0, rows, out = loadavg(), [], []
    for mode in ("default", "keep"):
        r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), mode=mode, archs=args.archs,
                                                                 lens=args.lens, runs=args.runs, batch=args.batch)],
                           capture_output=True, text=True, cwd=ROOT)
        res = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode:
            print(r.stderr[-2000:])
        base = {x["arch"]: x["cpu_us"] for x in res if x["T"] == args.lens[0]}
        for x in res:
            rows.append([mode, x["arch"], x["T"], f"{x['cpu_us']:.1f}", f"{x['cpu_us'] / base[x['arch']]:.2f}x",
                         f"{x['sys_us']:.1f}", f"{x['faults']:.2f}", f"{x['wall_us']:.1f}"])
            print(rows[-1], flush=True)
        out.append({"mode": mode, "points": res})
    print(table(["malloc", "arch", "T", "CPU µs/token", "vs first T", "of which kernel µs", "faults/token",
                 "wall µs/token"], rows))
    print("load:", load0, "->", loadavg())
    write("heap", {"load_before": load0, "batch": args.batch, "runs": args.runs, "rows": out})


if __name__ == "__main__":
    main()
